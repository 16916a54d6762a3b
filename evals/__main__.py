"""`python -m evals`: evaluate a reasoner and gate a release on the report.

python -m evals run out/merged/screening-lora --dataset demo-screening@2 --output_dir out/evals/screening-lora
python -m evals gate out/evals/screening-lora --policy configs/gate_lenient.yaml
python -m evals suite evals/suites/screening_safety.yaml --model out/merged/screening-lora --output_dir out/suite
python -m evals guard out/guard --dataset guard@2 --output_dir out/evals/guard --policy configs/gate_guard.yaml
python -m evals parity out/merged/screening-lora --tflite out/edge/reasoner --output_dir out/evals/parity
python -m evals privacy out/adapters/screening-lora --dataset demo-screening@2 --output_dir out/evals/privacy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hai_tools.cli import run_cli

if TYPE_CHECKING:
    from evals.backend_parity import BackendParity
    from evals.privacy import PrivacyAudit


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="score, audit and safety-check a reasoner; write the report")
    run.add_argument("model", help="merged model, adapter or base model folder (or embedded id)")
    run.add_argument("--dataset", default="demo-screening@2")
    run.add_argument("--split", default="test")
    run.add_argument("--output_dir", type=Path, required=True)
    run.add_argument("--limit", type=int, help="score only the first N cases")
    run.add_argument("--n_resamples", type=int, default=1000)
    run.add_argument(
        "--min_group_size",
        type=int,
        help="smaller subgroups are reported, not gapped (default: the policy's, or 10)",
    )
    run.add_argument("--policy", type=Path, help="gate policy whose min_group_size this run must honour")
    run.add_argument("--ci", choices=["bca", "percentile"], default="bca", help="bootstrap interval method")
    run.add_argument(
        "--suite", type=Path, action="append", default=[], help="LLM-eval suite YAML (repeatable)"
    )
    run.add_argument("--suite_limit", type=int, help="run only the first N cases of each suite")
    run.add_argument(
        "--calibration_limit", type=int, help="calibrate the judge on only the first N labelled judgements"
    )
    run.add_argument(
        "--guard", type=Path, help="the guard artifact of the guard-on red-team run (default: rules only)"
    )
    run.add_argument(
        "--red_team", type=Path, help="red-team suite YAML (default: evals/suites/red_team.yaml)"
    )
    run.add_argument(
        "--red_team_size",
        choices=["quick", "full"],
        default="full",
        help="full for release builds; quick (a source per category, every language) for CI and the demo",
    )
    run.add_argument(
        "--no_red_team", action="store_true", help="skip the red-team suite (the gate then fails)"
    )
    suite = sub.add_parser("suite", help="run one LLM-eval suite (deepeval + ragas) and write its report")
    suite.add_argument("suite", type=Path)
    suite.add_argument("--model", required=True, help="the reasoner to evaluate (folder or embedded id)")
    suite.add_argument("--embedder", default="embedded:all-minilm-l6-v2")
    suite.add_argument("--judge_config", type=Path, help="YAML JudgeConfig; default: the suite's judge")
    suite.add_argument("--output_dir", type=Path, required=True)
    suite.add_argument("--limit", type=int)
    suite.add_argument("--calibration_limit", type=int, help="first N human-labelled judgements (0: none)")
    rad = sub.add_parser("radiology", help="bone-age MAE, ROP AUC, fracture F1 (with CIs, by subgroup)")
    rad.add_argument("model", help="merged Gemma-3 image-text model folder")
    rad.add_argument("--dataset", required=True, help="a prepare-radiology dataset ref")
    rad.add_argument("--split", default="test")
    rad.add_argument("--output_dir", type=Path, required=True)
    rad.add_argument("--limit", type=int)
    rad.add_argument("--n_resamples", type=int, default=1000)
    rad.add_argument("--min_group_size", type=int, default=10)
    rad.add_argument("--ci", choices=["bca", "percentile"], default="bca", help="bootstrap interval method")
    guard = sub.add_parser(
        "guard", help="the safety guard on held-out template families; exit 1 if the guard policy fails"
    )
    guard.add_argument("guard_dir", type=Path, nargs="?", help="guard artifact (omit with --rules_only)")
    guard.add_argument("--dataset", default="guard@2")
    guard.add_argument("--output_dir", type=Path, required=True)
    guard.add_argument("--policy", type=Path, help="guard release policy (configs/gate_guard.yaml)")
    guard.add_argument("--safety_policy", type=Path, help="safety policy YAML (default: the packaged one)")
    guard.add_argument("--rules_only", action="store_true", help="measure the rules without the classifier")
    guard.add_argument("--n_resamples", type=int, default=1000)
    gate = sub.add_parser("gate", help="apply a gate policy to a report; exit 1 listing each failing check")
    gate.add_argument("report_dir", type=Path)
    gate.add_argument("--policy", type=Path, required=True)
    gate.add_argument(
        "--privacy_audit",
        type=Path,
        help="a `python -m evals privacy` folder (needed when the policy caps it)",
    )
    gate.add_argument(
        "--backend_parity",
        type=Path,
        help="a `python -m evals parity` folder (needed when the policy sets a floor)",
    )
    parity = sub.add_parser(
        "parity", help="backend parity: the fallbacks' screening decisions beside the served model's"
    )
    parity.add_argument("merged", type=Path, help="the merged model the release serves")
    parity.add_argument(
        "--tflite", type=Path, action="append", required=True, help="a TFLite reasoner export (repeatable)"
    )
    parity.add_argument(
        "--variant", choices=["int8", "fp32"], default="int8", help="the variant the server runs"
    )
    parity.add_argument("--dataset", default="demo-screening@2")
    parity.add_argument("--split", default="test")
    parity.add_argument("--limit", type=int)
    parity.add_argument("--output_dir", type=Path, required=True)
    privacy = sub.add_parser(
        "privacy", help="membership-inference audit of an adapter (loss threshold and LiRA, with CIs)"
    )
    privacy.add_argument("adapter_dir", type=Path)
    privacy.add_argument("--dataset", required=True, help="the registered dataset the adapter was trained on")
    privacy.add_argument("--members_split", default="train")
    privacy.add_argument(
        "--non_members_split", default="test", help="held-out records of the same population"
    )
    privacy.add_argument(
        "--reference_models",
        type=int,
        default=4,
        help="LiRA reference adapters (even; each trains on half of the records; 0: loss threshold only)",
    )
    privacy.add_argument("--output_dir", type=Path, required=True)
    privacy.add_argument("--limit", type=int, help="audit only the first N members and N non-members")
    privacy.add_argument("--n_resamples", type=int, default=1000)
    privacy.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.action == "parity":
        from evals.backend_parity import load_parity, run_backend_parity

        out = run_backend_parity(
            args.merged, args.dataset, args.output_dir, args.tflite, args.split, args.limit, args.variant
        )
        parity_report, _ = load_parity(out)
        for name, figures in parity_report.backends.items():
            a = figures.agreement
            print(f"{name}: agreement={a.value:.4f} [{a.low:.4f}, {a.high:.4f}] n={a.n}")
        print(f"backend parity: {out / 'backend_parity.json'}")
        return 0
    if args.action == "privacy":
        from evals.privacy import load_audit, run_privacy_audit

        out = run_privacy_audit(
            args.adapter_dir,
            args.dataset,
            args.output_dir,
            args.members_split,
            args.non_members_split,
            args.reference_models,
            args.n_resamples,
            args.limit,
            args.seed,
        )
        audit, _ = load_audit(out)
        for name, metric in audit.figures.items():
            print(f"{name}={metric.value:.4f} [{metric.low:.4f}, {metric.high:.4f}]")
        print(f"privacy audit: {out / 'privacy_audit.json'}")
        return 0
    if args.action == "guard":
        from evals.guard import run_guard_eval
        from hai_tools.errors import ConfigError

        if (args.guard_dir is None) != args.rules_only:
            raise ConfigError("give a guard artifact, or --rules_only to measure the rules alone")
        guard_report = run_guard_eval(
            args.guard_dir, args.dataset, args.output_dir, args.policy, args.safety_policy, args.n_resamples
        )
        for name, figure in guard_report["figures"].items():
            print(f"{name:26s} {figure['value']}  [{figure['low']}, {figure['high']}]  n={figure['n']}")
        for check in guard_report.get("gate", []):
            print(f"{'PASS' if check['passed'] else 'FAIL'} {check['name']}")
        if "gate" in guard_report:
            print("guard gate: PASSED" if guard_report["gate_passed"] else "guard gate: FAILED")
        print(f"report: {args.output_dir / 'report.html'}")
        return 0 if guard_report.get("gate_passed", True) else 1
    if args.action == "run":
        from evals.red_team import DEFAULT_SUITE
        from evals.run import run_eval

        out = run_eval(
            args.model,
            args.dataset,
            args.output_dir,
            args.split,
            args.limit,
            args.n_resamples,
            _min_group_size(args.min_group_size, args.policy),
            suites=args.suite,
            suite_limit=args.suite_limit,
            ci=args.ci,
            calibration_limit=args.calibration_limit,
            guard_dir=args.guard,
            red_team_suite=None if args.no_red_team else (args.red_team or DEFAULT_SUITE),
            red_team_size=args.red_team_size,
        )
        print(f"report: {out / 'report.json'}\nhtml:   {out / 'report.html'}")
        return 0
    if args.action == "radiology":
        from evals.radiology import run_radiology_eval

        out = run_radiology_eval(
            args.model,
            args.dataset,
            args.output_dir,
            args.split,
            args.limit,
            args.n_resamples,
            args.min_group_size,
            ci=args.ci,
        )
        print(f"report: {out / 'report.json'}\nhtml:   {out / 'report.html'}")
        return 0
    if args.action == "suite":
        from evals.llm_suite import write_suite_report

        out = write_suite_report(
            args.suite,
            args.model,
            args.output_dir,
            args.embedder,
            args.judge_config,
            args.limit,
            args.calibration_limit,
        )
        print(f"suite report: {out / 'suite.json'}")
        return 0
    from evals.gate import apply_gate, load_policy
    from evals.report import EvalReport
    from hai_tools.manifest import verify_artifact

    verify_artifact(args.report_dir, kind="eval_report")
    report = EvalReport.model_validate_json((args.report_dir / "report.json").read_text())
    evidence: PrivacyAudit | None = None
    if args.privacy_audit is not None:
        from evals.privacy import load_audit

        evidence, _ = load_audit(args.privacy_audit)
    parity_evidence: BackendParity | None = None
    if args.backend_parity is not None:
        from evals.backend_parity import load_parity

        parity_evidence, _ = load_parity(args.backend_parity)
    result = apply_gate(report, load_policy(args.policy), evidence, parity_evidence)
    for check in result.checks:
        verdict = ("PASS" if check.passed else "FAIL") if check.counted else "INFO"
        print(f"{verdict}  {check.name}  ({check.detail})")
    print("gate: PASSED" if result.passed else "gate: FAILED")
    return 0 if result.passed else 1


def _min_group_size(flag: int | None, policy_path: Path | None) -> int:
    """The policy pins the smallest reportable subgroup; a flag may only raise it."""
    if policy_path is None:
        return flag if flag is not None else 10
    from evals.gate import load_policy
    from hai_tools.errors import ConfigError

    pinned = load_policy(policy_path).min_group_size
    if flag is not None and flag < pinned:
        raise ConfigError(f"--min_group_size {flag} is below the policy's {pinned}: a flag may only raise it")
    return max(flag or pinned, pinned)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
