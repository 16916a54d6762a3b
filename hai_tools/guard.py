"""The safety guard on every reasoner request, each context passage and every answer: the policy's rules, then
the guard classifier (an artifact trained by `python -m trainer guard`, verified against its manifest before it
is loaded). A category fires when a rule matches or its classifier score reaches the policy's threshold; of
several, the first in the policy's priority order wins, so an emergency always keeps its own reason.

Context passages are checked for instructions hidden in evidence (prompt injection) and emergencies only: a
passage of medical text is not a question, so "non clinical" and "no clinical content" do not apply to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hai_tools.manifest import verify_artifact
from hai_tools.safety import ANSWER_ORDER, REQUEST_ORDER, Abstention, SafetyPolicy

GUARD_KIND = "guard"
REQUEST_MODEL = "requests.joblib"
ANSWER_MODEL = "answers.joblib"
PASSAGE_CATEGORIES = frozenset({"emergency_now", "prompt_injection"})


class Guard:
    def __init__(self, policy: SafetyPolicy, folder: Path | None = None) -> None:
        self.policy = policy
        self.identity: dict[str, str] | None = None
        self._models: dict[str, Any] = {}
        if folder is not None:
            manifest = verify_artifact(Path(folder), kind=GUARD_KIND)  # before unpickling anything from it
            import joblib

            self._models = {
                "request": joblib.load(Path(folder) / REQUEST_MODEL),
                "answer": joblib.load(Path(folder) / ANSWER_MODEL),
            }
            self.identity = {"name": manifest.name, "manifest_hash": manifest.content_hash}

    @property
    def version(self) -> str:
        """What results and audit lines name: the guard artifact (name and hash), or rules only."""
        if self.identity is None:
            return "rules-only"
        return f"{self.identity['name']}@{self.identity['manifest_hash'][:19]}"

    def scores(self, texts: list[str], side: str = "request") -> list[dict[str, float]]:
        """Classifier probabilities per category for each text ([] per text without a classifier)."""
        model = self._models.get(side)
        if model is None or not texts:
            return [{} for _ in texts]
        rows = model.predict_proba(texts)
        return [dict(zip(model.classes_, map(float, row), strict=True)) for row in rows]

    def _verdicts(
        self, text: str, scores: dict[str, float], where: str, allowed: Iterable[str], answer: bool
    ) -> list[Abstention]:
        allowed = set(allowed)
        categories = self.policy.answer_categories if answer else self.policy.request_categories
        found = []
        rule = self.policy.rule_check(text, answer=answer)
        if rule is not None and rule.rule in allowed:
            found.append(rule.model_copy(update={"where": where}))
        for category in allowed:
            score = scores.get(category)
            if score is not None and score >= categories[category].threshold:
                found.append(
                    Abstention(
                        rule=category,
                        reason=categories[category].reason,
                        where=where,
                        source="classifier",
                        score=round(score, 4),
                    )
                )
        return found

    def request(
        self, question: str, context: list[str] | None = None, categories: Iterable[str] = REQUEST_ORDER
    ) -> Abstention | None:
        """The abstention a request earns (question and each context passage), or None to answer it."""
        passages = list(context or [])
        scores = self.scores([question, *passages], "request")
        found = self._verdicts(question, scores[0], "request", categories, answer=False)
        for i, (passage, passage_scores) in enumerate(zip(passages, scores[1:], strict=True), 1):
            found += self._verdicts(
                passage, passage_scores, f"context passage {i}", PASSAGE_CATEGORIES & set(categories), False
            )
        return min(found, key=lambda a: REQUEST_ORDER.index(a.rule)) if found else None

    def answer(self, text: str) -> Abstention | None:
        """Why an answer must be withheld, or None to return it."""
        found = self._verdicts(text, self.scores([text], "answer")[0], "answer", ANSWER_ORDER, answer=True)
        return min(found, key=lambda a: ANSWER_ORDER.index(a.rule)) if found else None


def load_guard(policy_path: Path | None = None, folder: Path | None = None) -> Guard:
    """The policy (a bad file is a one-line ConfigError) and the guard artifact (one that fails verification is a
    one-line ManifestError)."""
    from hai_tools.safety import default_policy, load_policy

    policy = load_policy(policy_path) if policy_path else default_policy()
    return Guard(policy, folder)
