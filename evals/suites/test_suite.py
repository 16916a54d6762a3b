"""The LLM-eval suite as pytest tests, one per case and metric, as deepeval intends (`assert_test`).

HAI_EVAL_MODEL=out/merged/screening-lora pytest evals/suites [-k walk-18m]
HAI_EVAL_SUITE=path/to/suite.yaml  HAI_EVAL_EMBEDDER=embedded:all-minilm-l6-v2  (optional)
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

from evals.llm_suite import SuiteRunner, load_suite, passed

SUITE = Path(os.environ.get("HAI_EVAL_SUITE", Path(__file__).with_name("screening_safety.yaml")))
MODEL = os.environ.get("HAI_EVAL_MODEL")
if not MODEL:
    pytest.skip("set HAI_EVAL_MODEL to the model folder to evaluate", allow_module_level=True)
suite, _ = load_suite(SUITE)


@cache
def runner() -> SuiteRunner:
    return SuiteRunner(suite, str(MODEL), os.environ.get("HAI_EVAL_EMBEDDER", "embedded:all-minilm-l6-v2"))


@cache
def answer(case_id: str):  # type: ignore[no-untyped-def]
    case = next(c for c in suite.cases if c.id == case_id)
    return case, *runner().answer(case)[:2]


@pytest.mark.parametrize("metric", suite.metrics, ids=lambda m: m.name)
@pytest.mark.parametrize("case_id", [c.id for c in suite.cases])
def test_case(case_id: str, metric) -> None:  # type: ignore[no-untyped-def]
    case, output, passages = answer(case_id)
    if metric.kind in ("geval", "hallucination"):
        from deepeval import assert_test

        assert_test(
            runner().test_case(case, output, passages), [runner().deepeval_metric(metric)], run_async=False
        )
    else:
        value = runner().score(metric, case, output, passages)
        assert passed(metric, value), f"{metric.name} = {value:.3f}, threshold {metric.threshold}"
