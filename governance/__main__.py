"""`python -m governance`: keys, signed releases with their model cards, and verification.

    python -m governance keygen --out keys/release
    python -m governance release out/merged/screening-lora --report out/evals/screening-lora \
        --policy configs/gate_lenient.yaml --key keys/release.key --output_dir out/releases/screening-lora
    python -m governance verify out/releases/screening-lora --public_key keys/release.pub
    (release ... --mlflow: also registered in the MLflow Model Registry, see governance/mlflow_registry.py)
    python -m governance lineage out/releases/screening-lora      # Mermaid graph of the verified chain
    python -m governance audit-verify $HAI_HOME/audit/audit.jsonl # the audit log's chain (key: $HAI_AUDIT_KEY)
    python -m governance card out/merged/screening-lora --report out/evals/screening-lora \
        --policy configs/gate_lenient.yaml --output MODEL_CARD.md  # the card alone, before a release
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hai_tools.cli import run_cli
from hai_tools.errors import ManifestError


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m governance", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    keygen = sub.add_parser("keygen", help="an ed25519 key pair for signing releases")
    keygen.add_argument(
        "--out", type=Path, required=True, help="path prefix: writes PREFIX.key and PREFIX.pub"
    )
    release = sub.add_parser("release", help="bundle a gate-passing merged model into a signed release")
    release.add_argument("merged", type=Path)
    release.add_argument("--report", type=Path, required=True, help="eval report folder of that merged model")
    release.add_argument("--policy", type=Path, required=True)
    release.add_argument("--key", type=Path, required=True, help="ed25519 private key (PEM)")
    release.add_argument("--output_dir", type=Path, required=True)
    release.add_argument("--release_id")
    release.add_argument(
        "--task", default="screening", help="task card: screening, radiology, or a YAML file"
    )
    release.add_argument(
        "--embedder",
        default="embedded:all-minilm-l6-v2",
        help="the embedder the server loads with this release ('none': a release without one)",
    )
    release.add_argument(
        "--guard", type=Path, help="the safety guard artifact the server runs with this release"
    )
    release.add_argument(
        "--privacy_audit",
        type=Path,
        help="the adapter's membership-inference audit (python -m evals privacy); required when the policy caps it",
    )
    release.add_argument(
        "--backend_parity",
        type=Path,
        help="the fallbacks' parity report (python -m evals parity) on the exports given with --export",
    )
    release.add_argument(
        "--export",
        type=Path,
        action="append",
        default=[],
        help="an edge/runtime export to release with it (repeatable)",
    )
    release.add_argument(
        "--mlflow",
        action="store_true",
        help="also register it in the MLflow Model Registry ($MLFLOW_TRACKING_URI, else $HAI_HOME/mlflow)",
    )
    card = sub.add_parser(
        "card", help="render the model card of a merged model from its manifests and report"
    )
    card.add_argument("merged", type=Path)
    card.add_argument("--report", type=Path, required=True, help="eval report folder of that merged model")
    card.add_argument("--policy", type=Path, required=True, help="gate policy whose result the card states")
    card.add_argument("--output", type=Path, help="write here (atomically) instead of printing")
    card.add_argument("--name", help="release name on the card; default: the merged model's name")
    card.add_argument("--task", default="screening", help="task card: screening, radiology, or a YAML file")
    lineage = sub.add_parser(
        "lineage", help="the chain dataset -> base -> adapter -> merged -> ... as Mermaid"
    )
    lineage.add_argument(
        "path", type=Path, help="any artifact folder (release, eval report, export, merged, adapter)"
    )
    verify = sub.add_parser("verify", help="check a release's signature and every hash down its chain")
    verify.add_argument("path", type=Path)
    verify.add_argument("--public_key", type=Path, required=True, help="the trusted ed25519 public key (PEM)")
    audit = sub.add_parser(
        "audit-verify", help="check the audit log's chain: no line removed, reordered or edited"
    )
    audit.add_argument("path", type=Path, help="the audit log (JSON lines)")
    audit.add_argument(
        "--expect_head", help="SEQ:MAC printed by an earlier run: also detects lines cut from the end"
    )
    args = parser.parse_args(argv)
    if args.action == "audit-verify":
        from hai_tools.audit import audit_key, verify_audit_log

        seq, mac = verify_audit_log(args.path, audit_key(args.path), args.expect_head)
        print(f"ok audit log {args.path}: {seq} entries chained; head {seq}:{mac}")
        return 0
    from governance.release import create_release, verify_release
    from governance.release import keygen as make_keys

    if args.action == "keygen":
        private, public = make_keys(args.out)
        print(f"private key: {private} (keep secret)\npublic key:  {public}")
    elif args.action == "release":
        out = create_release(
            args.merged,
            args.report,
            args.policy,
            args.key,
            args.output_dir,
            args.release_id,
            args.task,
            args.export,
            None if args.embedder == "none" else args.embedder,
            args.guard,
            args.privacy_audit,
            args.backend_parity,
        )
        print(f"release: {out}")
        if args.mlflow:
            from governance.mlflow_registry import register_release

            registered = register_release(out)
            print(
                f"registered in MLflow: model {registered['name']} version {registered['version']} "
                f"(run {registered['run_id']})"
            )
    elif args.action == "card":
        from evals.gate import apply_gate, load_policy
        from evals.report import EvalReport
        from governance.card import render_model_card
        from hai_tools.chain import verify_chain
        from hai_tools.manifest import atomic_write_text, verify_artifact

        merged = verify_artifact(args.merged, kind="merged_model")
        report_manifest = verify_artifact(args.report, kind="eval_report")
        if report_manifest.inputs[0].hash != merged.content_hash:
            raise ManifestError(
                f"the eval report in {args.report} is not of the merged model in {args.merged}"
            )
        report = EvalReport.model_validate_json((args.report / "report.json").read_text())
        gate = apply_gate(report, load_policy(args.policy))
        from governance.task import load_task

        text = render_model_card(
            args.name or merged.name,
            args.merged,
            report,
            gate,
            verify_chain(args.merged),
            load_task(args.task)[0],
        )
        if args.output:
            atomic_write_text(args.output, text)
            print(f"model card: {args.output} (gate {'passed' if gate.passed else 'FAILED'})")
        else:
            print(text)
    elif args.action == "lineage":
        from governance.release import bundled_links
        from hai_tools.chain import verify_chain
        from hai_tools.manifest import verify_artifact

        manifest = verify_artifact(args.path)
        links = bundled_links(args.path, manifest) if manifest.kind == "release" else verify_chain(args.path)
        print("graph BT")
        nodes: dict[str, str] = {}
        edges: set[tuple[str, str]] = set()
        parents: dict[int, str] = {}
        for link in links:
            key = f"{link.kind}:{link.hash}"
            if key not in nodes:
                nodes[key] = f"n{len(nodes)}"
                print(f'  {nodes[key]}["{link.kind}<br/>{link.name}<br/>{link.hash[:19]}"]')
            if link.depth > 0:
                edges.add((nodes[key], parents[link.depth - 1]))
            parents[link.depth] = nodes[key]
        for child, parent in sorted(edges):
            print(f"  {child} --> {parent}")
    else:
        verified = verify_release(args.path, args.public_key)
        print(
            f"ok release {verified.name} {verified.manifest_hash}: signature, every file "
            f"({', '.join(sorted(verified.serving))} included) and {len(verified.links)} chain link(s) verified"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
