"""`python -m evals radiology`: score a (merged) Gemma-3 image-text model on a prepared radiology dataset.

bone age: greedy answer `Bone age: <months>` parsed -> MAE in months (unparsed answers are reported as a rate);
ROP plus disease and fracture: P(yes) from the likelihood of `yes` vs `no` after the answer prefix -> ROP AUC,
fracture F1 at 0.5 (and sensitivity/specificity); every metric with a bootstrap CI, overall and per subgroup
(sex, age band, site; small or one-class subgroups are reported as such). Gate with
`python -m evals gate REPORT --policy configs/gate_radiology.yaml` (the seed's targets).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.metrics import CIMethod, MetricCI, Sampling, binary_metrics, mae
from evals.report import EvalReport, model_source, write_eval_report
from hai_tools.manifest import (
    ArtifactInput,
    library_versions,
)
from hai_tools.radiology import bone_age_band
from hai_tools.radiology_reading import load_reader, read_image

SUBGROUPS = ("sex", "age_band", "site")


def score_row(processor: Any, model: Any, row: dict[str, Any], max_new_tokens: int = 8) -> dict[str, Any]:
    out: dict[str, Any] = {"task": row["task"], "label": float(row["label"])}
    return out | read_image(processor, model, row["task"], row["image"], row["prompt"], max_new_tokens)


def _task_metrics(
    rows: list[dict[str, Any]], task: str, n_resamples: int, ci: CIMethod = "bca"
) -> dict[str, MetricCI]:
    picked = [r for r in rows if r["task"] == task]
    if not picked:
        return {}
    patients = [r.get("patient") for r in picked]
    clusters = np.asarray(patients, dtype=str) if all(p is not None for p in patients) else None
    sampling = Sampling(n_resamples=n_resamples, method=ci, clusters=clusters)
    if task == "bone_age":
        parsed = [r for r in picked if r["prediction"] is not None]
        result = {
            "bone_age_unparsed_rate": MetricCI(value=1 - len(parsed) / len(picked), n=len(picked)),
        }
        result["bone_age_mae"] = (
            mae(
                np.asarray([r["label"] for r in parsed]),
                np.asarray([r["prediction"] for r in parsed]),
                sampling.subset(np.asarray([r["prediction"] is not None for r in picked])),
            )
            if parsed
            else MetricCI(value=None, n=len(picked), note="no parsable answer")
        )
        return result
    y = np.asarray([int(r["label"]) for r in picked])
    score = np.asarray([r["p_yes"] for r in picked])
    metrics = binary_metrics(y, score, 0.5, sampling)
    return {f"{task}_{k}": v for k, v in metrics.items() if k in ("auc", "f1", "sensitivity", "specificity")}


def run_radiology_eval(
    model_dir: str,
    dataset_ref: str,
    output_dir: Path,
    split: str = "test",
    limit: int | None = None,
    n_resamples: int = 1000,
    min_group_size: int = 10,
    ci: CIMethod = "bca",
) -> Path:
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_split

    started = time.monotonic()
    # an unknown split is a DatasetError, before the model loads
    record, source_rows = load_split(open_registry(), dataset_ref, split, limit)
    processor, model = load_reader(model_dir)
    rows = []
    for source in source_rows:
        scored = score_row(processor, model, source)
        scored |= {
            "sex": source["sex"],
            "age_band": bone_age_band(int(source["age_months"])),
            "site": source["site"],
            "patient": source.get(record.patient_id_column) if record.patient_id_column else None,
        }
        rows.append(scored)
    metrics: dict[str, MetricCI] = {}
    for task in ("bone_age", "rop", "fracture"):
        metrics |= _task_metrics(rows, task, n_resamples, ci)
        for attribute in SUBGROUPS:
            for group in sorted({str(r[attribute]) for r in rows if r["task"] == task}):
                members = [r for r in rows if r["task"] == task and str(r[attribute]) == group]
                if len(members) < min_group_size:
                    for name in _task_metrics(rows, task, 0):
                        metrics[f"{name}[{attribute}={group}]"] = MetricCI(
                            value=None, n=len(members), note=f"too small to report (< {min_group_size})"
                        )
                    continue
                for name, value in _task_metrics(members, task, n_resamples, ci).items():
                    metrics[f"{name}[{attribute}={group}]"] = value
    model_entry, source_input = model_source(model_dir)
    rop = [r for r in rows if r["task"] == "rop"]
    report = EvalReport(
        model=model_entry,
        dataset={"ref": record.ref, "hash": record.content_hash, "split": split, "n": len(rows)},
        protocol={
            "prompts": "per task, from the dataset (trainer data prepare-radiology)",
            "decoding": "bone age: greedy, 8 new tokens, first number parsed; rop/fracture: likelihood of yes vs no",
            "threshold": 0.5,
            "n_resamples": n_resamples,
            "min_group_size": min_group_size,
            "library_versions": library_versions(("torch", "transformers", "scikit-learn", "hai-tools")),
        },
        metrics=metrics,
        bias_audit=[],
        predictions=rows,
    )
    y = np.asarray([int(r["label"]) for r in rop])
    score = np.asarray([r["p_yes"] for r in rop])
    dataset_input = ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash)
    return write_eval_report(
        output_dir,
        report,
        y,
        score,
        [*([source_input] if source_input else []), dataset_input],
        {k: v.value for k, v in metrics.items() if "[" not in k},
        time.monotonic() - started,
    )
