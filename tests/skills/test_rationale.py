"""The screening rationale a clinician reads: one sentence, without the label line a trained model repeats."""

from __future__ import annotations

import pytest

from skills.reasoner_skill import first_sentence


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        (
            "Label: refer\nRationale: Milestones expected by 30 months are not yet met. Evidence 3: By 18",
            "Milestones expected by 30 months are not yet met.",
        ),
        ("The child says no words at 24 months. Refer now.", "The child says no words at 24 months."),
        ("Label: monitor\nSome words, no phrases yet", "Some words, no phrases yet"),
        ("   ", None),
        (
            "Label: on-track\nRationale: Milestones expected by 36 months are reported as met.matchCondition\n",
            "Milestones expected by 36 months are reported as met.",
        ),
        ("Walks at 2.5 years, later than expected. More text.", "Walks at 2.5 years, later than expected."),
    ],
)
def test_first_sentence_of_the_rationale(generated: str, expected: str | None) -> None:
    assert first_sentence(generated) == expected
