"""Synthetic pediatric developmental-screening cases for the demo and the tests.

Built from the public CDC "Learn the Signs. Act Early." milestone checklists (2022 revision, paraphrased):
each case is an age, free-text observations of which milestones are met, and a label (refer / monitor /
on-track) with a short rationale. Deterministic for a seed. Not clinical data and not a validated
instrument; see `hai_tools/data/datasheet_screening.md`.

    python -m trainer data generate-demo --output_dir out/demo-data
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hai_tools.manifest import Manifest, atomic_folder, code_version, write_manifest

LABELS = ("refer", "monitor", "on-track")
LABEL_CHOICES = tuple(f"Label: {label}" for label in LABELS)  # what a screening decision chooses among
SEXES = ("female", "male")
LANGUAGES = ("en", "es", "zh", "ar")
SITES = ("site-a", "site-b", "site-c", "site-d")

INSTRUCTION = (
    "You are assisting a clinician with developmental screening. Classify the case as refer, monitor "
    "or on-track and give a one-sentence rationale. Answer as:\nLabel: <label>\nRationale: <text>"
)

# age in months -> (domain, milestone in the third person); paraphrased from the CDC checklists.
MILESTONES: dict[int, list[tuple[str, str]]] = {
    2: [
        ("social", "calms down when spoken to or picked up"),
        ("language", "makes cooing sounds"),
        ("cognitive", "watches a caregiver as they move"),
        ("motor", "holds head up when on tummy"),
    ],
    4: [
        ("social", "smiles to get attention"),
        ("language", "makes sounds back when talked to"),
        ("cognitive", "looks at own hands with interest"),
        ("motor", "holds head steady without support"),
    ],
    6: [
        ("social", "laughs"),
        ("language", "takes turns making sounds with a caregiver"),
        ("cognitive", "reaches to grab a wanted toy"),
        ("motor", "rolls from tummy to back"),
    ],
    9: [
        ("social", "looks when their name is called"),
        ("language", "makes sounds like 'mamama' and 'bababa'"),
        ("cognitive", "looks for objects dropped out of sight"),
        ("motor", "sits without support"),
    ],
    12: [
        ("social", "plays games like pat-a-cake"),
        ("language", "waves bye-bye"),
        ("cognitive", "puts something in a container"),
        ("motor", "pulls up to stand"),
    ],
    15: [
        ("social", "points to ask for something"),
        ("language", "says one or two words besides mama or dada"),
        ("cognitive", "tries to use things the right way, like a phone or a cup"),
        ("motor", "takes a few steps alone"),
    ],
    18: [
        ("social", "points to show something interesting"),
        ("language", "says three or more words"),
        ("cognitive", "follows one-step directions without gestures"),
        ("motor", "walks without holding on"),
    ],
    24: [
        ("social", "notices when others are hurt or upset"),
        ("language", "says two words together"),
        ("cognitive", "plays with more than one toy at the same time"),
        ("motor", "kicks a ball"),
    ],
    30: [
        ("social", "plays next to other children"),
        ("language", "says about 50 words"),
        ("cognitive", "uses things to pretend"),
        ("motor", "jumps off the ground with both feet"),
    ],
    36: [
        ("social", "calms down within ten minutes after a caregiver leaves"),
        ("language", "talks in a conversation with at least two back-and-forth exchanges"),
        ("cognitive", "draws a circle when shown how"),
        ("motor", "puts on some clothes by themself"),
    ],
    48: [
        ("social", "comforts others who are hurt or sad"),
        ("language", "says sentences with four or more words"),
        ("cognitive", "names a few colours of items"),
        ("motor", "catches a large ball most of the time"),
    ],
    60: [
        ("social", "follows rules or takes turns in games"),
        ("language", "tells a story with at least two events"),
        ("cognitive", "counts to ten"),
        ("motor", "hops on one foot"),
    ],
}
CHECKPOINTS = sorted(MILESTONES)
SPLIT_FRACTIONS = (0.8, 0.1)  # train and validation shares of the patients by default; test gets the rest
REGRESSION = (
    "no longer says words the child used to say",
    "has stopped making eye contact the child used to make",
    "no longer walks steadily after having walked",
)
MET_TEMPLATES = ("Caregiver reports the child {m}.", "Observed in clinic: the child {m}.", "The child {m}.")
UNMET_TEMPLATES = (
    "Not yet observed: the child {m}.",
    "Caregiver is unsure whether the child {m}; not seen in clinic.",
)


@dataclass(frozen=True)
class ScreeningCase:
    case_id: str
    patient_id: str
    age_months: int
    sex: str
    language: str
    site: str
    observations: str
    label: str
    rationale: str

    def prompt_text(self) -> str:
        return f"{INSTRUCTION}\n\nAge: {self.age_months} months\nObservations: {self.observations}"

    def completion_text(self) -> str:
        return f"Label: {self.label}\nRationale: {self.rationale}"

    def to_record(self) -> dict[str, Any]:
        """An SFT record in TRL's conversational prompt/completion form, subgroup fields kept."""
        return {
            "case_id": self.case_id,
            "patient_id": self.patient_id,
            "age_months": self.age_months,
            "sex": self.sex,
            "language": self.language,
            "site": self.site,
            "observations": self.observations,
            "label": self.label,
            "rationale": self.rationale,
            "prompt": [{"role": "user", "content": self.prompt_text()}],
            "completion": [{"role": "assistant", "content": self.completion_text()}],
        }


def _checkpoint_for(age: int) -> int:
    return max(c for c in CHECKPOINTS if c <= age)


def _make_case(
    rng: random.Random, case_id: str, patient_id: str, age: int, sex: str, language: str, site: str
) -> ScreeningCase:
    checkpoint = _checkpoint_for(age)
    current = MILESTONES[checkpoint]
    # Prevalence differs a little by site (referral patterns), never by sex or language.
    refer_p = 0.18 + 0.04 * SITES.index(site) / 3
    draw = rng.random()
    label = "refer" if draw < refer_p else "monitor" if draw < refer_p + 0.3 else "on-track"
    met = rng.sample(current, 3)
    sentences: list[str]
    if label == "on-track":
        sentences = [rng.choice(MET_TEMPLATES).format(m=m) for _, m in met]
        rationale = f"Milestones expected by {checkpoint} months are reported as met."
    elif label == "monitor":
        missing_domain, missing = met[-1]
        sentences = [rng.choice(MET_TEMPLATES).format(m=m) for _, m in met[:2]]
        sentences.append(rng.choice(UNMET_TEMPLATES).format(m=missing))
        rationale = (
            f"One {missing_domain} milestone expected by {checkpoint} months is not yet observed; "
            "rescreen in one to three months."
        )
    else:
        earlier = CHECKPOINTS[max(0, CHECKPOINTS.index(checkpoint) - 1)]
        if rng.random() < 0.35:
            sentences = [
                rng.choice(MET_TEMPLATES).format(m=met[0][1]),
                f"Caregiver reports the child {rng.choice(REGRESSION)}.",
            ]
            rationale = (
                "Loss of previously acquired skills is a red flag; refer for developmental evaluation."
            )
        else:
            missed = rng.sample(MILESTONES[earlier], 2)
            sentences = [rng.choice(UNMET_TEMPLATES).format(m=m) for _, m in missed]
            domains = " and ".join(sorted({d for d, _ in missed}))
            rationale = (
                f"Milestones expected by {earlier} months ({domains}) are not met; "
                "refer for developmental evaluation."
            )
    rng.shuffle(sentences)
    return ScreeningCase(case_id, patient_id, age, sex, language, site, " ".join(sentences), label, rationale)


def generate_cases(n_patients: int = 300, seed: int = 0) -> list[ScreeningCase]:
    """`n_patients` synthetic children with one to three screening visits each, deterministic for `seed`."""
    rng = random.Random(seed)
    cases: list[ScreeningCase] = []
    for p in range(n_patients):
        patient_id = f"SYN-{seed:02d}-{p:05d}"
        sex = rng.choice(SEXES)
        language = rng.choices(LANGUAGES, weights=(0.55, 0.25, 0.1, 0.1))[0]
        site = rng.choice(SITES)
        ages = sorted(rng.sample(range(2, 66), rng.randint(1, 3)))
        for visit, age in enumerate(ages):
            cases.append(_make_case(rng, f"{patient_id}-v{visit}", patient_id, age, sex, language, site))
    return cases


def split_by_patient(
    cases: list[ScreeningCase], seed: int = 0, fractions: tuple[float, float] = SPLIT_FRACTIONS
) -> dict[str, list[ScreeningCase]]:
    """train / validation / test by patient, so no child appears in two splits."""
    patients = sorted({c.patient_id for c in cases})
    random.Random(seed + 1).shuffle(patients)
    n_train = int(len(patients) * fractions[0])
    n_val = int(len(patients) * fractions[1])
    split_of = {p: "train" for p in patients[:n_train]}
    split_of.update({p: "validation" for p in patients[n_train : n_train + n_val]})
    split_of.update({p: "test" for p in patients[n_train + n_val :]})
    splits: dict[str, list[ScreeningCase]] = {"train": [], "validation": [], "test": []}
    for case in cases:
        splits[split_of[case.patient_id]].append(case)
    return splits


def datasheet_text() -> str:
    return resources.files("hai_tools").joinpath("data/datasheet_screening.md").read_text()


def write_demo_dataset(
    output_dir: Path,
    n_patients: int = 300,
    seed: int = 0,
    fractions: tuple[float, float] = SPLIT_FRACTIONS,
    safety_examples: int = 0,
) -> dict[str, Path]:
    """Write train/validation/test JSONL and the datasheet to `output_dir` (atomically); return the files.
    `fractions`: the train and validation shares of the patients (test gets the rest). `safety_examples`: that
    many harmful requests with the answer the model should write instead, added to the train split only
    (`hai_tools.demo_safety`; label `safety`, the screening columns empty)."""
    from hai_tools.demo_safety import safety_records

    splits = split_by_patient(generate_cases(n_patients, seed), seed, fractions)
    records = {split: [case.to_record() for case in cases] for split, cases in splits.items()}
    columns = set(records["train"][0]) if records["train"] else set()
    records["train"] += [{k: r.get(k) for k in columns} | r for r in safety_records(safety_examples, seed)]
    output_dir = Path(output_dir)
    with atomic_folder(output_dir) as tmp:
        for split, rows in records.items():
            with open(tmp / f"{split}.jsonl", "w") as handle:
                for row in rows:
                    handle.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        (tmp / "DATASHEET.md").write_text(datasheet_text())
        write_manifest(
            tmp,
            Manifest(
                kind="dataset_files",
                name="demo-screening",
                config={
                    "generator": "hai_tools.demo_data.generate_cases",
                    "n_patients": n_patients,
                    "seed": seed,
                    "fractions": {"train": fractions[0], "validation": fractions[1]},
                    "safety_examples": safety_examples,
                },
                code_version=code_version(),
                metrics={f"{split}_rows": len(rows) for split, rows in records.items()},
            ),
        )
    return {split: output_dir / f"{split}.jsonl" for split in splits}
