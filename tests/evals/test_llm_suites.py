"""LLM-eval suites (deepeval + ragas) on the tiny merged model, judged by the tiny model through the local
schema-guided judge, with the packaged MiniLM as the EmbedSkill's embedder: the judge answers every schema
the two libraries ask for; `python -m evals suite` writes a report; the suite runs under pytest and fails
there when a case misses its pass mark; `evals run --suite` carries the scores to the gate; bad suites are
refused with one line. The tiny judge's scores are meaningless: the tests check how each is made from the judge's
probabilities and how the report is made from the scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from evals.__main__ import main
from evals.judge import JudgeConfig, LocalJudge, judge_prompt_text
from hai_tools.manifest import verify_artifact

ROOT = Path(__file__).resolve().parents[2]
CORPUS = [
    {"id": "m18", "text": "By 18 months most children walk without holding on and say three or more words."},
    {"id": "m24", "text": "By 24 months most children kick a ball and say two words together."},
    {"id": "refer", "text": "A child who misses milestones should be referred for developmental evaluation."},
]
CASES = [
    {
        "id": "walk-18m",
        "question": "An 18-month-old does not walk. What follow-up does the evidence suggest?",
    },
    {"id": "words-24m", "question": "A 24-month-old does not combine two words. Is this expected?"},
]


def write_suite(folder: Path, judge_model: Path, metrics: list[dict[str, object]], **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CASES))
    suite = {
        "name": "tiny-suite",
        "top_k": 2,
        "max_new_tokens": 12,
        "judge": {"kind": "local", "model": str(judge_model), "max_string_tokens": 6, "max_list_items": 2},
        "metrics": metrics,
        "corpus": CORPUS,
        "cases_file": "cases.jsonl",
        **extra,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


ALL_METRICS = [
    {"name": "appropriateness", "kind": "geval", "threshold": 0.5, "evaluation_steps": ["Is it clinical?"]},
    {"name": "hallucination", "kind": "hallucination", "threshold": 0.5},
    {"name": "faithfulness", "kind": "ragas_faithfulness", "threshold": 0.5},
    {"name": "answer_relevancy", "kind": "ragas_answer_relevancy", "threshold": 0.5},
]


def test_judge_answers_every_schema_of_both_libraries(merged_tiny: Path) -> None:
    from deepeval.metrics.faithfulness.schema import Claims, Truths
    from deepeval.metrics.faithfulness.schema import Verdicts as FaithfulnessVerdicts
    from deepeval.metrics.g_eval.schema import ReasonScore, Steps
    from deepeval.metrics.hallucination.schema import Verdicts
    from ragas.metrics.collections.answer_relevancy.util import AnswerRelevanceOutput
    from ragas.metrics.collections.faithfulness.util import NLIStatementOutput, StatementGeneratorOutput

    judge = LocalJudge(JudgeConfig(model=str(merged_tiny), max_string_tokens=5, max_list_items=3))
    for schema in (
        ReasonScore,
        Steps,
        Verdicts,
        FaithfulnessVerdicts,
        Truths,
        Claims,
        StatementGeneratorOutput,
        NLIStatementOutput,
        AnswerRelevanceOutput,
    ):
        answer = judge.structured("Judge the answer 'refer the child' against the context.", schema)
        assert isinstance(answer, schema)


class _Rating(BaseModel):
    score: float  # no bounds, no description: deepeval's 0-10 scale


class _Verdict(BaseModel):
    noncommittal: int = Field(description="1 if the answer is evasive, 0 if it is committal")


def _continuations(judge: LocalJudge, prompt: str, pieces: list[str], options: list[str]) -> list[float]:
    """Log-likelihood of each option after the judge's prompt and the JSON written so far, each from one full
    forward pass over the whole sequence (the decoder under test extends one KV cache piece by piece)."""
    import torch

    tokenizer = judge._tokenizer
    text = judge_prompt_text(tokenizer, prompt)

    def ids(piece: str) -> list[int]:
        return list(tokenizer(piece, add_special_tokens=False)["input_ids"])

    prefix = [i for piece in [text, *pieces] for i in ids(piece)]
    scores = []
    for option in options:
        tail = ids(option)
        with torch.no_grad():
            logits = judge._model(input_ids=torch.tensor([prefix + tail])).logits[0].float()
        logp = torch.log_softmax(logits[len(prefix) - 1 : -1], -1)
        scores.append(float(sum(logp[i, t] for i, t in enumerate(tail))))
    return scores


def test_a_score_is_the_probability_weighted_mean_and_a_verdict_the_likelier_value(merged_tiny: Path) -> None:
    """G-Eval's score is the mean of 0..10 weighted by the judge's probabilities of each (not its likeliest
    digit), and a 0-or-1 verdict is the likelier of the two; both recomputed here from full forward passes."""
    import torch

    judge = LocalJudge(JudgeConfig(model=str(merged_tiny)))
    assert judge._tokenizer.chat_template
    prompt = "Rate the answer 'refer the child' from 0 to 10."
    scores = _continuations(judge, prompt, ["{", '"score": '], [str(v) for v in range(11)])
    weights = torch.softmax(torch.tensor(scores), -1).tolist()
    expected = sum(w * v for w, v in zip(weights, range(11), strict=True))
    score = judge.structured(prompt, _Rating).score
    assert score == pytest.approx(expected, abs=1e-4)
    likeliest = max(range(11), key=lambda v: scores[v])
    assert abs(score - likeliest) > 1e-3  # the tiny judge is unsure: a weighted mean, not the argmax digit

    prompt = "Is the answer 'maybe' noncommittal?"
    verdicts = _continuations(judge, prompt, ["{", '"noncommittal": '], ["0", "1"])
    assert judge.structured(prompt, _Verdict).noncommittal == max((0, 1), key=lambda v: verdicts[v])


def test_suite_cli_writes_a_report_with_all_four_metrics(merged_tiny: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", merged_tiny, ALL_METRICS)
    out = tmp_path / "report"
    assert main(["suite", str(suite), "--model", str(merged_tiny), "--output_dir", str(out)]) == 0
    manifest = verify_artifact(out, kind="llm_eval_report")
    assert [i.kind for i in manifest.inputs] == ["merged_model", "llm_eval_suite"]
    report = json.loads((out / "suite.json").read_text())
    assert report["judge"] == f"local:{merged_tiny}"
    assert set(report["summary"]) == {"appropriateness", "hallucination", "faithfulness", "answer_relevancy"}
    assert len(report["cases"]) == 2
    for case in report["cases"]:
        assert len(case["retrieved"]) == 2 and case["audit_id"]
    # each metric's summary is made of its cases: the mean of the defined scores, the undefined counted, and
    # each case's pass mark read the metric's way (hallucination passes at or below its threshold)
    for name, summary in report["summary"].items():
        scores = [case["scores"][name] for case in report["cases"]]
        defined = [s for s in scores if s is not None]
        assert summary["n"] == 2 and summary["n_undefined"] == scores.count(None)
        assert summary["mean"] == (pytest.approx(sum(defined) / len(defined)) if defined else None)
        for case, value in zip(report["cases"], scores, strict=True):
            higher = name != "hallucination"
            mark = False if value is None else (value >= 0.5 if higher else value <= 0.5)
            assert case["passed"][name] is mark, (name, value)  # an undefined score never passes
        passes = [case["passed"][name] for case in report["cases"]]
        assert summary["pass_rate"] == sum(passes) / 2
    assert report["summary"]["hallucination"]["higher_is_better"] is False
    assert report["summary"]["appropriateness"]["higher_is_better"] is True


def _pytest_suite(suite: Path, model: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HAI_EVAL_SUITE": str(suite), "HAI_EVAL_MODEL": str(model)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "evals/suites/test_suite.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_suite_runs_under_pytest_and_fails_a_case_below_its_pass_mark(
    merged_tiny: Path, tmp_path: Path
) -> None:
    lenient = [
        {
            "name": "appropriateness",
            "kind": "geval",
            "threshold": 0.0,
            "evaluation_steps": ["Is it clinical?"],
        },
        {"name": "hallucination", "kind": "hallucination", "threshold": 1.0},
    ]
    ok = _pytest_suite(write_suite(tmp_path / "lenient", merged_tiny, lenient), merged_tiny)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "4 passed" in ok.stdout
    # a GEval mean of exactly 10/10 from a probability-weighted score is out of reach: every case fails
    strict = [
        {
            "name": "appropriateness",
            "kind": "geval",
            "threshold": 1.0,
            "evaluation_steps": ["Is it clinical?"],
        }
    ]
    failed = _pytest_suite(write_suite(tmp_path / "strict", merged_tiny, strict), merged_tiny)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "2 failed" in failed.stdout and "appropriateness" in failed.stdout


def test_eval_run_with_suite_feeds_the_gate(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The suite's scores and its judge's calibration (agreement with two labelled judgements) reach the
    report; they gate only when the judge clears the policy's agreement floor."""
    metrics = [
        {"name": "appropriateness", "kind": "geval", "threshold": 0.0, "evaluation_steps": ["Clinical?"]}
    ]
    labels = [
        {
            "id": f"l{i}",
            "metric": "appropriateness",
            "question": "Walks at 18 months?",
            "answer": answer,
            "context": [CORPUS[0]["text"]],
            "human_pass": True,
        }
        for i, answer in enumerate(["Yes, expected by 18 months.", "Refer if not walking."])
    ]
    suite = write_suite(tmp_path / "suite", merged_tiny, metrics, calibration_file="labels.jsonl")
    (tmp_path / "suite" / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    out = tmp_path / "report"
    args = ["run", str(merged_tiny), "--dataset", demo_dataset, "--output_dir", str(out), "--limit", "12"]
    args += ["--n_resamples", "50", "--min_group_size", "2", "--suite", str(suite), "--suite_limit", "1"]
    assert main([*args, "--no_red_team"]) == 0
    manifest = verify_artifact(out, kind="eval_report")
    assert "llm_eval_suite" in [i.kind for i in manifest.inputs]
    report = json.loads((out / "report.json").read_text())
    mean = report["llm_evals"][0]["summary"]["appropriateness"]["mean"]
    calibration = report["llm_evals"][0]["judge_calibration"]
    assert calibration["n"] == 2 and calibration["agreement"]["method"] == "wilson"
    assert "LLM-eval suites" in (out / "report.html").read_text()
    base = {"split": "test", "min_group_size": 2, "undefined_subgroups_fail": False}

    def gate(floor: float, minimum: dict[str, float]) -> int:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            yaml.safe_dump({**base, "llm_eval": {"judge_agreement_floor": floor, "min": minimum}})
        )
        return main(["gate", str(out), "--policy", str(policy)])

    assert gate(0.0, {"tiny-suite/appropriateness": mean - 1e-6}) == 0
    assert gate(0.0, {"tiny-suite/appropriateness": mean + 0.01, "tiny-suite/missing_metric": 0.1}) == 1
    capsys.readouterr()
    assert gate(0.99, {"tiny-suite/appropriateness": mean - 1e-6}) == 1  # two labels cannot earn 0.99
    assert "FAIL  llm-eval tiny-suite: judge agreement >= (CI lower bound) 0.99" in capsys.readouterr().out
    # the suite file is pinned: editing it breaks the report's chain
    suite.write_text(suite.read_text().replace("Clinical?", "Clinical!"))
    from hai_tools.chain import verify_chain
    from hai_tools.errors import ManifestError

    with pytest.raises(ManifestError, match="suite"):
        verify_chain(out)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unknown_key": 1}, "unknown_key"),
        (
            {"metrics": [{"name": "g", "kind": "geval", "threshold": 0.5}]},
            "needs criteria or evaluation_steps",
        ),
        ({"metrics": [{"name": "x", "kind": "bleu", "threshold": 0.5}]}, "geval"),
        ({"cases_file": "missing.jsonl"}, "does not exist"),
        ({"cases_file": None, "cases": [CASES[0], CASES[0]]}, "duplicate case ids"),
    ],
)
def test_bad_suites_are_refused_with_one_line(
    change: dict[str, object],
    message: str,
    merged_tiny: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    change = {"metrics": ALL_METRICS, **change}
    suite = write_suite(tmp_path / "suite", merged_tiny, **change)  # type: ignore[arg-type]
    out = tmp_path / "out"
    assert main(["suite", str(suite), "--model", str(merged_tiny), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_case_line_is_named(
    merged_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path / "suite", merged_tiny, ALL_METRICS)
    (suite.parent / "cases.jsonl").write_text(json.dumps(CASES[0]) + "\n" + json.dumps({"id": "x"}) + "\n")
    assert main(["suite", str(suite), "--model", str(merged_tiny), "--output_dir", str(tmp_path / "o")]) == 2
    assert "cases.jsonl line 2" in capsys.readouterr().err


def test_openai_judge_round_trips_through_the_loopback_openai_server(
    merged_tiny: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    """The OpenAI-compatible judge against `transformers serve` on loopback (vLLM cannot be installed here).
    That server does not enforce `response_format`, and the tiny model cannot write the schema's JSON, so in
    both modes the answer comes back and fails validation: a typed JudgeError, never a score made up from an
    answer outside the schema. A closed port is a typed error too."""
    import signal

    from evals.judge import JudgeError, OpenAIJudge
    from tests.conftest import serve_openai

    server, base = serve_openai(merged_tiny, tmp_path / "serve.log", server_env)
    try:

        class Verdict(BaseModel):
            verdict: Literal["yes", "no"]
            reason: str

        def judge(mode: str) -> OpenAIJudge:
            config = JudgeConfig(
                kind="openai",
                model=str(merged_tiny),
                base_url=f"{base}/v1",
                structured_output=mode,  # type: ignore[arg-type]
                timeout_s=120,
            )
            return OpenAIJudge(config)

        for mode in ("response_format", "prompt"):
            with pytest.raises(JudgeError, match="judge endpoint answered outside the Verdict schema"):
                judge(mode).structured("Is walking at 12 months expected?", Verdict)
        closed = JudgeConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", timeout_s=5)
        with pytest.raises(JudgeError, match=r"judge endpoint http://127.0.0.1:9/v1 failed"):
            OpenAIJudge(closed).structured("x", Verdict)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
