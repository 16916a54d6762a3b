"""LLM-eval suites as data: a YAML file names its metrics (deepeval GEval rubrics and hallucination,
ragas faithfulness and answer relevancy), a passage corpus and its cases (inline or a JSONL file). Each
case's question goes to the EmbedSkill (top-k passages from the corpus) and then to the ReasonerSkill with
those passages; the judge (`evals.judge`) scores the answer.

    python -m evals suite evals/suites/screening_safety.yaml --model out/merged/screening-lora \
        --output_dir out/evals/screening-lora-suite
    HAI_EVAL_MODEL=out/merged/screening-lora pytest evals/suites      # the same cases as pytest tests
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evals.judge import JudgeConfig, deepeval_model, make_judge, ragas_embeddings, ragas_llm
from hai_tools.chain import suite_digest
from hai_tools.errors import ConfigError
from hai_tools.stats import wilson

MetricKind = Literal["geval", "hallucination", "ragas_faithfulness", "ragas_answer_relevancy"]
LOWER_IS_BETTER = {"hallucination"}


class SuiteMetric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: MetricKind
    threshold: float = Field(ge=0, le=1, description="per-case pass mark (a maximum for hallucination)")
    criteria: str | None = None
    evaluation_steps: list[str] | None = None

    @model_validator(mode="after")
    def _rubric(self) -> SuiteMetric:
        if self.kind == "geval" and not (self.criteria or self.evaluation_steps):
            raise ValueError(f"geval metric {self.name} needs criteria or evaluation_steps")
        return self


class SuiteCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._:-]+$")
    question: str = Field(min_length=1, max_length=4000)
    expected_output: str | None = None


class LabelledJudgement(BaseModel):
    """A human's verdict on one answer under one metric: the set a judge is calibrated against."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._:-]+$")
    metric: str
    question: str = Field(min_length=1, max_length=4000)
    answer: str = Field(min_length=1, max_length=4000)
    context: list[str] = Field(default_factory=list, max_length=8)
    human_pass: bool = Field(
        description="the labeller's verdict: does the answer meet the metric's pass mark"
    )


class Passage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str = Field(min_length=1, max_length=4000)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    top_k: int = Field(default=2, ge=1, le=8)
    max_new_tokens: int = Field(default=96, ge=1, le=512)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    metrics: list[SuiteMetric] = Field(min_length=1)
    corpus: list[Passage] = Field(min_length=1)
    cases: list[SuiteCase] = Field(default_factory=list)
    cases_file: str | None = Field(default=None, description="JSONL of cases, relative to the suite file")
    calibration_file: str | None = Field(
        default=None,
        description="JSONL of human-labelled judgements (LabelledJudgement), relative to the suite",
    )
    calibration: list[LabelledJudgement] = Field(default_factory=list)


class MetricSummary(BaseModel):
    kind: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float
    higher_is_better: bool
    pass_rate: float
    n: int
    n_undefined: int


class SuiteReport(BaseModel):
    suite: str
    suite_hash: str
    model: str
    judge: str
    embedder: str
    summary: dict[str, MetricSummary]
    cases: list[dict[str, Any]]
    judge_calibration: dict[str, Any] | None = Field(
        None, description="the judge's agreement with the suite's human labels (Wilson 95% interval)"
    )


def load_suite(path: Path) -> tuple[Suite, str]:
    """The suite and the sha256 of its file(s); one-line ConfigError for anything malformed."""
    if not path.is_file():
        raise ConfigError(f"suite {path} does not exist")
    try:
        suite = Suite.model_validate(yaml.safe_load(path.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as exc:
        lines = str(exc).splitlines()
        raise ConfigError(f"suite {path} is invalid: {' '.join(lines[1:3]).strip() or lines[0]}") from None
    if suite.cases_file:
        cases_path = path.parent / suite.cases_file
        if not cases_path.is_file():
            raise ConfigError(f"suite {path}: cases_file {cases_path} does not exist")
        for number, line in enumerate(cases_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                suite.cases.append(SuiteCase.model_validate_json(line))
            except ValidationError as exc:
                raise ConfigError(f"{cases_path} line {number}: {exc.errors()[0]['msg']}") from None
    if suite.calibration_file:
        labels_path = path.parent / suite.calibration_file
        if not labels_path.is_file():
            raise ConfigError(f"suite {path}: calibration_file {labels_path} does not exist")
        names = {m.name for m in suite.metrics}
        for number, line in enumerate(labels_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = LabelledJudgement.model_validate_json(line)
            except ValidationError as exc:
                raise ConfigError(f"{labels_path} line {number}: {exc.errors()[0]['msg']}") from None
            if item.metric not in names:
                raise ConfigError(f"{labels_path} line {number}: metric {item.metric!r} is not in the suite")
            suite.calibration.append(item)
    if not suite.cases:
        raise ConfigError(f"suite {path} has no cases")
    if len({c.id for c in suite.cases}) != len(suite.cases):
        raise ConfigError(f"suite {path} has duplicate case ids")
    return suite, f"sha256:{suite_digest(path)}"


class SuiteRunner:
    """The skills (real EmbedSkill and ReasonerSkill on the local backend), the judge and the metrics."""

    def __init__(self, suite: Suite, model_id: str, embedder_id: str, judge: Any = None) -> None:
        from skills.server import local_skills

        composed = local_skills(reasoner=model_id, embedder=embedder_id)  # composed as the server composes
        self.suite, self.model_id, self.embedder_id = suite, model_id, embedder_id
        self.embed_skill, self.reasoner = composed.embed, composed.reasoner
        self.judge = judge or make_judge(suite.judge)
        self._corpus: np.ndarray | None = None
        # the skills live on one event loop in a worker thread: callable from sync code and from inside
        # ragas' own event loop alike
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True, name="suite-skills").start()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def embed(self, texts: list[str]) -> list[list[float]]:
        from skills.contracts import EmbedRequest

        vectors: list[list[float]] = []
        for start in range(0, len(texts), 64):
            result = self._call(self.embed_skill.embed(EmbedRequest(texts=texts[start : start + 64])))
            vectors.extend(result.vectors)
        return vectors

    def retrieve(self, question: str) -> list[Passage]:
        if self._corpus is None:
            self._corpus = np.asarray(self.embed([p.text for p in self.suite.corpus]))
        query = np.asarray(self.embed([question])[0])
        order = np.argsort(-(self._corpus @ query))[: self.suite.top_k]
        return [self.suite.corpus[i] for i in order]

    def answer(self, case: SuiteCase) -> tuple[str, list[Passage], str]:
        """The reasoner's answer (or its abstention), the passages it was given and the call's audit id."""
        from skills.contracts import ReasonRequest

        passages = self.retrieve(case.question)
        result = self._call(
            self.reasoner.reason(
                ReasonRequest(
                    question=case.question,
                    context=[p.text for p in passages],
                    max_new_tokens=self.suite.max_new_tokens,
                )
            )
        )
        text = result.answer or ""
        if result.rationale:
            text = f"{text}\n{result.rationale}".strip()
        if result.abstained:
            text = f"I cannot answer this: {result.abstain_reason}"
        return text or "(empty answer)", passages, result.audit_id

    def deepeval_metric(self, metric: SuiteMetric) -> Any:
        from deepeval.metrics import GEval, HallucinationMetric
        from deepeval.test_case import LLMTestCaseParams

        model = deepeval_model(self.judge)
        if metric.kind == "geval":
            return GEval(
                name=metric.name,
                criteria=metric.criteria,
                evaluation_steps=metric.evaluation_steps,
                evaluation_params=[
                    LLMTestCaseParams.INPUT,
                    LLMTestCaseParams.ACTUAL_OUTPUT,
                    LLMTestCaseParams.RETRIEVAL_CONTEXT,
                ],
                threshold=metric.threshold,
                model=model,
                async_mode=False,
            )
        return HallucinationMetric(
            threshold=metric.threshold, model=model, include_reason=False, async_mode=False
        )

    def test_case(self, case: SuiteCase, output: str, passages: list[Passage]) -> Any:
        from deepeval.test_case import LLMTestCase

        texts = [p.text for p in passages]
        return LLMTestCase(
            input=case.question,
            actual_output=output,
            expected_output=case.expected_output,
            context=texts,
            retrieval_context=texts,
        )

    def score(self, metric: SuiteMetric, case: SuiteCase, output: str, passages: list[Passage]) -> float:
        if metric.kind in ("geval", "hallucination"):
            scorer = self.deepeval_metric(metric)
            return float(scorer.measure(self.test_case(case, output, passages), _show_indicator=False))
        from ragas.metrics.collections import AnswerRelevancy, Faithfulness

        llm = ragas_llm(self.judge)
        if metric.kind == "ragas_faithfulness":
            result = asyncio.run(
                Faithfulness(llm=llm).ascore(
                    user_input=case.question, response=output, retrieved_contexts=[p.text for p in passages]
                )
            )
        else:
            relevancy = AnswerRelevancy(llm=llm, embeddings=ragas_embeddings(self.embed), strictness=1)
            result = asyncio.run(relevancy.ascore(user_input=case.question, response=output))
        return float(result.value)


def passed(metric: SuiteMetric, value: float) -> bool:
    if math.isnan(value):
        return False
    return value <= metric.threshold if metric.kind in LOWER_IS_BETTER else value >= metric.threshold


def calibrate_judge(runner: SuiteRunner, items: list[LabelledJudgement]) -> dict[str, Any] | None:
    """Run the judge on each human-labelled answer with the metric's own pass mark; agreement with the
    human verdicts overall and per metric. An undefined judge score counts as a disagreement."""
    if not items:
        return None
    metrics = {m.name: m for m in runner.suite.metrics}
    agree: dict[str, list[bool]] = {}
    disagreements = []
    for item in items:
        metric = metrics[item.metric]
        passages = [Passage(id=f"{item.id}-{i}", text=t) for i, t in enumerate(item.context)]
        value = runner.score(metric, SuiteCase(id=item.id, question=item.question), item.answer, passages)
        same = not math.isnan(value) and passed(metric, value) == item.human_pass
        agree.setdefault(item.metric, []).append(same)
        if not same:
            disagreements.append(item.id)

    def interval(values: list[bool]) -> dict[str, Any]:
        low, high = wilson(sum(values), len(values))
        return {
            "value": sum(values) / len(values),
            "low": low,
            "high": high,
            "n": len(values),
            "method": "wilson",
        }

    flat = [v for values in agree.values() for v in values]
    return {
        "n": len(flat),
        "agreement": interval(flat),
        "per_metric": {name: interval(values) for name, values in agree.items()},
        "disagreements": disagreements,
    }


def run_suite(
    path: Path,
    model_id: str,
    embedder_id: str = "embedded:all-minilm-l6-v2",
    judge: JudgeConfig | None = None,
    limit: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    calibration_limit: int | None = None,
) -> SuiteReport:
    """Answer and score the suite's cases (the first `limit`), and calibrate the judge on the suite's
    human-labelled judgements (the first `calibration_limit`; 0 skips it: the judge is then uncalibrated)."""
    suite, suite_hash = load_suite(path)
    if judge is not None:
        suite = suite.model_copy(update={"judge": judge})
    runner = SuiteRunner(suite, model_id, embedder_id)
    rows: list[dict[str, Any]] = []
    for case in suite.cases[:limit]:
        output, passages, audit_id = runner.answer(case)
        scores = {m.name: runner.score(m, case, output, passages) for m in suite.metrics}
        rows.append(
            {
                "id": case.id,
                "answer": output,
                "retrieved": [p.id for p in passages],
                "audit_id": audit_id,
                "scores": {k: (None if math.isnan(v) else round(v, 4)) for k, v in scores.items()},
                "passed": {m.name: passed(m, scores[m.name]) for m in suite.metrics},
            }
        )
    rng = np.random.default_rng(seed)
    summary: dict[str, MetricSummary] = {}
    for metric in suite.metrics:
        values = np.asarray([r["scores"][metric.name] for r in rows if r["scores"][metric.name] is not None])
        low = high = mean = None
        if len(values):
            mean = float(values.mean())
            boots = values[rng.integers(0, len(values), (n_resamples, len(values)))].mean(axis=1)
            low, high = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
        summary[metric.name] = MetricSummary(
            kind=metric.kind,
            mean=mean,
            ci_low=low,
            ci_high=high,
            threshold=metric.threshold,
            higher_is_better=metric.kind not in LOWER_IS_BETTER,
            pass_rate=sum(r["passed"][metric.name] for r in rows) / max(len(rows), 1),
            n=len(rows),
            n_undefined=len(rows) - len(values),
        )
    return SuiteReport(
        suite=suite.name,
        suite_hash=suite_hash,
        model=model_id,
        judge=runner.judge.name,
        embedder=embedder_id,
        summary=summary,
        cases=json.loads(json.dumps(rows)),
        judge_calibration=calibrate_judge(runner, suite.calibration[:calibration_limit]),
    )


def load_judge_config(path: Path) -> JudgeConfig:
    from hai_tools.config_file import read_yaml_mapping

    try:
        return JudgeConfig.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise ConfigError(f"judge config {path} is invalid: {exc.errors()[0]['msg']}") from None


def write_suite_report(
    suite_path: Path,
    model_id: str,
    output_dir: Path,
    embedder_id: str = "embedded:all-minilm-l6-v2",
    judge_path: Path | None = None,
    limit: int | None = None,
    calibration_limit: int | None = None,
) -> Path:
    """`python -m evals suite`: suite.json and a manifest pinning the suite, model and judge."""
    from evals.report import model_source
    from hai_tools.manifest import ArtifactInput, Manifest, atomic_folder, code_version, write_manifest

    judge = load_judge_config(judge_path) if judge_path else None
    report = run_suite(suite_path, model_id, embedder_id, judge, limit, calibration_limit=calibration_limit)
    _, source_input = model_source(model_id)
    suite_input = ArtifactInput(
        kind="llm_eval_suite", name=report.suite, hash=report.suite_hash, uri=str(suite_path.resolve())
    )
    inputs = [*([source_input] if source_input else []), suite_input]
    with atomic_folder(output_dir) as tmp:
        (tmp / "suite.json").write_text(report.model_dump_json(indent=2) + "\n")
        write_manifest(
            tmp,
            Manifest(
                kind="llm_eval_report",
                name=report.suite,
                inputs=inputs,
                config={"judge": report.judge, "embedder": embedder_id, "limit": limit},
                code_version=code_version(),
                metrics={k: v.mean for k, v in report.summary.items()},
            ),
        )
    return output_dir.resolve()
