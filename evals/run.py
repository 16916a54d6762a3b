"""`python -m evals run`: score a reasoner on a registered dataset's split, audit it by subgroup, run the
red-team suite through the ReasonerSkill with the guard on and off, and write report.json, report.html and a manifest."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.bias import bias_audit
from evals.metrics import CIMethod, Sampling, binary_metrics, multiclass_f1
from evals.red_team import DEFAULT_SUITE, Size, run_red_team
from evals.report import EvalReport, model_source, write_eval_report
from evals.screening import load_reasoner, protocol, score_cases
from hai_tools.manifest import (
    ArtifactInput,
    library_versions,
)
from hai_tools.registry import open_registry
from hai_tools.registry.datasets import load_split

SUBGROUPS = ("sex", "age_band", "language", "site")
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "scikit-learn",
    "fairlearn",
    "numpy",
    "deepeval",
    "ragas",
    "sentence-transformers",
    "hai-tools",
)


def sampling_for(
    records: list[dict[str, Any]], patient_column: str | None, n_resamples: int, ci: CIMethod
) -> Sampling:
    """Resample whole patients when the registered dataset names its patient id column (rows otherwise)."""
    clusters = np.asarray([str(r[patient_column]) for r in records]) if patient_column else None
    return Sampling(n_resamples=n_resamples, method=ci, clusters=clusters)


def run_eval(
    model_id: str,
    dataset_ref: str,
    output_dir: Path,
    split: str = "test",
    limit: int | None = None,
    n_resamples: int = 1000,
    min_group_size: int = 10,
    threshold: float = 0.5,
    suites: list[Path] | None = None,
    suite_limit: int | None = None,
    ci: CIMethod = "bca",
    calibration_limit: int | None = None,
    guard_dir: Path | None = None,
    red_team_suite: Path | None = DEFAULT_SUITE,
    red_team_size: Size = "full",
) -> Path:
    started = time.monotonic()
    record, records = load_split(open_registry(), dataset_ref, split, limit)  # an unknown split: DatasetError
    tokenizer, model = load_reasoner(model_id)
    rows = score_cases(model, tokenizer, records)
    y = np.asarray([int(r["label"] == "refer") for r in rows])
    score = np.asarray([r["probabilities"]["refer"] for r in rows])
    sampling = sampling_for(records, record.patient_id_column, n_resamples, ci)
    metrics = {f"refer_{k}": v for k, v in binary_metrics(y, score, threshold, sampling).items()}
    metrics["macro_f1"] = multiclass_f1(
        np.asarray([r["label"] for r in rows]), np.asarray([r["predicted"] for r in rows]), sampling
    )
    audit = bias_audit(
        {k: np.asarray([str(r[k]) for r in rows]) for k in SUBGROUPS},
        y,
        score,
        threshold,
        min_group_size,
        sampling,
    )
    red_team = None
    if red_team_suite is not None:
        from hai_tools.guard import Guard
        from hai_tools.safety import default_policy

        guard = Guard(default_policy(), guard_dir)  # verified against its manifest before it is loaded
        red_team = run_red_team(model_id, guard, red_team_suite, red_team_size, n_resamples)
    llm_evals = []
    for suite_path in suites or []:
        from evals.llm_suite import run_suite

        llm_evals.append(
            run_suite(
                suite_path,
                model_id,
                limit=suite_limit,
                n_resamples=n_resamples,
                calibration_limit=calibration_limit,
            ).model_dump(mode="json")
        )
    model_entry, source_input = model_source(model_id)
    report = EvalReport(
        model=model_entry,
        dataset={"ref": record.ref, "hash": record.content_hash, "split": split, "n": len(rows)},
        protocol={
            **protocol(tokenizer, records),
            "threshold": threshold,
            "n_resamples": n_resamples,
            "ci_method": ci,
            "resampling": f"patient ({record.patient_id_column})" if record.patient_id_column else "row",
            "min_group_size": min_group_size,
            "library_versions": library_versions(LIBRARIES),
        },
        metrics=metrics,
        bias_audit=audit,
        red_team=red_team,
        llm_evals=llm_evals,
        predictions=rows,
    )
    dataset_input = ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash)
    suite_inputs = [
        ArtifactInput(kind="llm_eval_suite", name=s["suite"], hash=s["suite_hash"], uri=str(p.resolve()))
        for s, p in zip(llm_evals, suites or [], strict=True)
    ]
    if red_team is not None:
        suite_inputs.append(
            ArtifactInput(
                kind="red_team_suite", name=red_team.suite, hash=red_team.suite_hash, uri=str(red_team_suite)
            )
        )
        if guard_dir is not None and red_team.guard_manifest_hash:
            suite_inputs.append(
                ArtifactInput(
                    kind="guard",
                    name=red_team.guard.split("@")[0],
                    hash=red_team.guard_manifest_hash,
                    uri=str(Path(guard_dir).resolve()),
                )
            )
    return write_eval_report(
        output_dir,
        report,
        y,
        score,
        [*([source_input] if source_input else []), dataset_input, *suite_inputs],
        {k: v.value for k, v in metrics.items()},
        time.monotonic() - started,
    )
