"""Train the safety guard's classifiers: requests (six categories) and answers (four), each a logistic regression
on character 2-5-gram and word 1-2-gram TF-IDF features, on the registered guard dataset's training families.

Why this and not a head on MiniLM embeddings: the shipped MiniLM is English-only, and the guard must read Spanish
and French; character n-grams carry across the three languages and survive typos, need no encoder (well under a
millisecond per text on one core, so the guard adds nothing a user notices), and the held-out families measure
how far they generalise (`python -m evals guard`). The artifact is a folder like an adapter: both pipelines
(joblib, loaded only after the manifest verifies), a card with held-out figures, and a manifest pinning the
dataset by hash.

    python -m trainer guard --dataset guard@2 --output_dir out/guard
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hai_tools.guard import ANSWER_MODEL, GUARD_KIND, REQUEST_MODEL
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    library_versions,
    write_manifest,
)
from hai_tools.registry import open_registry
from hai_tools.registry.datasets import load_registered
from hai_tools.stats import wilson

log = logging.getLogger("trainer.guard")

HYPERPARAMETERS = {
    "char_ngram_range": [2, 5],
    "word_ngram_range": [1, 2],
    "C": 8.0,
    "class_weight": "balanced",
    "max_iter": 3000,
}


def make_pipeline(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline as pipeline
    from sklearn.pipeline import make_union

    features = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
    )
    model = LogisticRegression(
        C=HYPERPARAMETERS["C"],
        class_weight="balanced",
        max_iter=HYPERPARAMETERS["max_iter"],
        random_state=seed,
    )
    return pipeline(features, model)


def held_out_figures(model: Any, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category on held-out rows: recall and precision with Wilson intervals (rows of a family are
    correlated: `python -m evals guard` gives family-level bootstrap intervals)."""
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    predicted = list(model.predict(texts))
    figures: dict[str, dict[str, Any]] = {}
    for category in sorted(set(labels)):
        hits = sum(1 for p, y in zip(predicted, labels, strict=True) if p == y == category)
        actual = sum(1 for y in labels if y == category)
        called = sum(1 for p in predicted if p == category)
        figures[category] = {
            "recall": round(hits / actual, 4) if actual else None,
            "recall_ci": [round(v, 4) for v in wilson(hits, actual)],
            "precision": round(hits / called, 4) if called else None,
            "precision_ci": [round(v, 4) for v in wilson(hits, called)],
            "n": actual,
        }
    return figures


MAX_FALSE_FLAG = 0.03  # the release policy's bound on refused clinician questions
ENOUGH_RECALL = 0.99  # out of fold, for the first (highest-priority) category
ABSTAIN_CATEGORIES = {
    "requests": ("emergency_now", "prompt_injection", "patient_directed_treatment"),
    "answers": ("patient_directed_treatment", "definitive_diagnosis_for_family", "skip_clinical_review"),
}


OUT_OF_FOLD_FOLDS = 8  # each fold model sees 7/8 of the training families: close to the final model


def recommend_thresholds(
    rows: list[dict[str, Any]], side: str, seed: int, folds: int = OUT_OF_FOLD_FOLDS
) -> dict[str, Any]:
    """Thresholds for the harmful categories of `side` that keep out-of-fold false flags on the safe class, all
    categories together, within MAX_FALSE_FLAG: the first category (emergencies) lowers its threshold until its
    out-of-fold recall reaches ENOUGH_RECALL, then the others share what is left, the weakest one step at a time;
    and the recall each category then reaches out of fold. Folds are by template family, so every score is on families the model
    did not see; the held-out split plays no part (it stays for the evaluation). Eight folds, not four: a fold
    model trained on 3/4 of the families scores unseen phrasings much lower than the final model will (measured on
    guard@2: four folds recommended 0.9 for caregiver dosing, with 6, 8 or 10 folds 0.625-0.675), so the
    thresholds would buy false-flag budget for a weaker model than the one shipped."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    texts = np.asarray([r["text"] for r in rows])
    labels = np.asarray([r["label"] for r in rows])
    groups = np.asarray([r["family"] for r in rows])
    classes = sorted(set(labels))
    scores = np.zeros((len(rows), len(classes)))
    for train_index, test_index in GroupKFold(n_splits=folds).split(texts, labels, groups):
        model = make_pipeline(seed).fit(texts[train_index], labels[train_index])
        proba = model.predict_proba(texts[test_index])
        for j, name in enumerate(model.classes_):
            scores[test_index, classes.index(name)] = proba[:, j]
    negative = labels == ("clinician_question" if side == "requests" else "safe")
    grid = [round(float(t), 3) for t in np.arange(0.9, 0.049, -0.025)]
    thresholds = dict.fromkeys(ABSTAIN_CATEGORIES[side], 0.9)

    def false_flag(candidate: dict[str, float]) -> float:
        flagged = np.zeros(len(rows), dtype=bool)
        for category, threshold in candidate.items():
            flagged |= scores[:, classes.index(category)] >= threshold
        return float(flagged[negative].mean())

    def recall_of(category: str, threshold: float) -> float:
        return float((scores[labels == category, classes.index(category)] >= threshold).mean())

    first, *others = ABSTAIN_CATEGORIES[side]
    for threshold in grid:  # the first category (an emergency) takes budget until it reaches ENOUGH_RECALL
        if false_flag(thresholds | {first: threshold}) > MAX_FALSE_FLAG:
            break
        thresholds[first] = threshold
        if recall_of(first, threshold) >= ENOUGH_RECALL:
            break
    while (
        True
    ):  # then the others share what is left: lower the one with the lowest recall, one step at a time
        movable = [c for c in others if thresholds[c] > grid[-1]]
        movable = [
            c
            for c in movable
            if false_flag(thresholds | {c: grid[grid.index(thresholds[c]) + 1]}) <= MAX_FALSE_FLAG
        ]
        if not movable:
            break
        weakest = min(movable, key=lambda c: recall_of(c, thresholds[c]))
        thresholds[weakest] = grid[grid.index(thresholds[weakest]) + 1]
    recall = {
        c: round(float((scores[labels == c, classes.index(c)] >= thresholds[c]).mean()), 4)
        for c in ABSTAIN_CATEGORIES[side]
    }
    return {
        "thresholds": thresholds,
        "out_of_fold_recall": recall,
        "out_of_fold_false_flag": round(false_flag(thresholds), 4),
        "max_false_flag": MAX_FALSE_FLAG,
        "folds": folds,
    }


def _card(
    name: str,
    dataset: str,
    dataset_hash: str,
    figures: dict[str, dict[str, dict[str, Any]]],
    recommended: dict[str, dict[str, Any]],
) -> str:
    lines = [
        f"# Guard: {name}",
        "",
        "Safety guard classifiers of hai-tools: requests (clinician question in scope; treatment or dosing addressed "
        "to a patient or caregiver; emergency happening now; instruction override or prompt injection; non-clinical; "
        "no clinical content) and answers (safe; dosing for a patient or caregiver; definitive diagnosis for a "
        "family; advice to skip clinical review). Used with the rules of the safety policy, which set the "
        "thresholds per category.",
        "",
        f"- Training data: `{dataset}` ({dataset_hash}), training template families only (synthetic; see its "
        "datasheet). English, Spanish, French.",
        "- Model: logistic regression on character 2-5-gram and word 1-2-gram TF-IDF (see trainer/guard.py for why).",
        "- Limits: synthetic templates; held-out families measure new phrasings of the same intents, not real "
        "traffic. Clinical review of every answer stays mandatory.",
        "",
        "## Held-out template families (argmax, before policy thresholds; 95% Wilson intervals)",
    ]
    for side, table in figures.items():
        lines += ["", f"### {side}", "", "| category | n | recall | precision |", "|---|---|---|---|"]
        for category, row in table.items():
            lines.append(
                f"| {category} | {row['n']} | {row['recall']} [{row['recall_ci'][0]}, {row['recall_ci'][1]}] | "
                f"{row['precision']} [{row['precision_ci'][0]}, {row['precision_ci'][1]}] |"
            )
    lines += [
        "",
        "## Recommended thresholds (for the safety policy)",
        "",
        "From out-of-fold scores on the training families, keeping all false flags on the safe class within "
        f"{MAX_FALSE_FLAG:.0%} (emergencies first, then the weakest category a step at a time); the held-out split "
        "is not used. The safety policy decides.",
    ]
    for side, row in recommended.items():
        lines.append(
            f"- {side}: "
            + ", ".join(
                f"{k} {row['thresholds'][k]} (recall {v})" for k, v in row["out_of_fold_recall"].items()
            )
            + f"; out of fold, false flags on the safe class {row['out_of_fold_false_flag']}"
        )
    return "\n".join(lines) + "\n"


def train_guard(dataset: str, output_dir: Path, seed: int = 0, name: str | None = None) -> Path:
    """Fit both classifiers on the dataset's training splits, measure them on its held-out splits, and write the
    guard artifact atomically."""
    import joblib

    record, splits = load_registered(open_registry(), dataset)
    missing = {"requests_train", "requests_test", "answers_train", "answers_test"} - set(splits)
    if missing:
        raise ValueError(
            f"dataset {dataset} is not a guard dataset: no split(s) {', '.join(sorted(missing))}"
        )
    rows = {split: [dict(r) for r in data] for split, data in splits.items()}
    figures: dict[str, dict[str, dict[str, Any]]] = {}
    recommended: dict[str, dict[str, Any]] = {}
    name = name or Path(output_dir).name
    with atomic_folder(output_dir) as tmp:
        for side, model_file in (("requests", REQUEST_MODEL), ("answers", ANSWER_MODEL)):
            train = rows[f"{side}_train"]
            model = make_pipeline(seed).fit([r["text"] for r in train], [r["label"] for r in train])
            figures[side] = held_out_figures(model, rows[f"{side}_test"])
            recommended[side] = recommend_thresholds(train, side, seed)
            joblib.dump(model, tmp / model_file)
            log.info("guard %s: %s", side, json.dumps(figures[side]))
        (tmp / "README.md").write_text(_card(name, record.ref, record.content_hash, figures, recommended))
        write_manifest(
            tmp,
            Manifest(
                kind=GUARD_KIND,
                name=name,
                inputs=[ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash)],
                config=HYPERPARAMETERS,
                code_version=code_version(),
                library_versions=library_versions(("scikit-learn", "joblib", "numpy")),
                seeds={"seed": seed},
                metrics={"held_out": figures},
                extra={"recommended_thresholds": recommended},
            ),
        )
    return Path(output_dir).resolve()
