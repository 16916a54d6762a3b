"""The eval walkthrough notebook (notebooks/eval_walkthrough.ipynb) executes top to bottom with nbclient on an
evaluation folder written by `python -m evals run` (the tiny merged model on the demo dataset: the same folder
layout `make demo` writes to out/evals/screening-lora), and shows the CIs, the calibration plot and the verdict."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]


def _run(eval_dir: Path, policy: Path) -> list[str]:
    notebook = nbformat.read(REPO / "notebooks" / "eval_walkthrough.ipynb", as_version=4)
    env = {"HAI_EVAL_DIR": str(eval_dir), "HAI_GATE_POLICY": str(policy)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
            if "image/png" in output.get("data", {}):
                texts.append("<figure>")
    return texts


def test_the_notebook_explains_a_refusal_with_its_evidence(report_dir: Path) -> None:
    texts = _run(report_dir, REPO / "configs" / "gate_strict.yaml")
    joined = "\n".join(texts)
    assert "refer_auc" in joined and "resamples used" in joined  # the CI table
    assert joined.count("<figure>") == 2  # subgroup CIs and the calibration plot
    assert "gate REFUSED under" in joined and "refused by refer_auc" in joined
    assert "No release is written from this evaluation" in joined


def test_the_notebook_refuses_an_edited_report(report_dir: Path, tmp_path: Path) -> None:
    import shutil

    from nbclient.exceptions import CellExecutionError

    edited = tmp_path / "edited"
    shutil.copytree(report_dir, edited)
    report = edited / "report.json"
    report.write_text(report.read_text().replace('"refer_auc"', '"refer_auc" ', 1))
    with pytest.raises(CellExecutionError, match="ManifestError"):
        _run(edited, REPO / "configs" / "gate_lenient.yaml")
