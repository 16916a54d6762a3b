"""`python -m hai_tools.workflow`: run cases through the clinical workflow and review them.

    python -m hai_tools.workflow reviewer-add --id dr-lee --role pediatrician    # prints the token once
    python -m hai_tools.workflow start --case_id c-001 --age_months 18 --observations "No words; does not point."
    python -m hai_tools.workflow list
    python -m hai_tools.workflow show c-001-1a2b3c4d
    HAI_REVIEWER_TOKEN=... python -m hai_tools.workflow approve c-001-1a2b3c4d --reviewer dr-lee
    HAI_REVIEWER_TOKEN=... python -m hai_tools.workflow edit c-001-1a2b3c4d --reviewer dr-lee --text "Refer ..."
    HAI_REVIEWER_TOKEN=... python -m hai_tools.workflow reject c-001-1a2b3c4d --reviewer dr-lee --reason "..."
    python -m hai_tools.workflow record c-001-1a2b3c4d

Config: --config FILE (or $HAI_WORKFLOW_CONFIG), see configs/workflow.yaml. Tokens come from the environment
(HAI_REVIEWER_TOKEN), never from flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from hai_tools.cli import run_cli


def _print_payload(payload: dict[str, Any]) -> None:
    proposal = payload["proposal"]
    model = proposal.get("model") or {}
    print(f"case {payload['case']['case_id']}  thread {payload['thread_id']}  [awaiting clinician review]")
    print(f"  age {payload['case']['age_months']} months; observations: {payload['case']['observations']}")
    print(
        f"  model: {model.get('release') or model.get('base')} (adapter {model.get('adapter')}), "
        f"backend {proposal.get('backend')}, audit id {proposal.get('audit_id')}"
    )
    if proposal.get("abstained"):
        print(f"  proposal: ABSTAINED ({proposal.get('abstain_reason')})")
    else:
        print("  proposal: " + (proposal.get("answer_text") or "").replace("\n", "\n            "))
    for item in payload["evidence"]:
        print(f"  evidence [{item['id']}] ({item['score']}): {item['text']}")
    for flag in payload["safety_flags"] or ["none"]:
        print(f"  safety flag: {flag}")
    print(f"  proposal hash: {payload['proposal_hash']}")


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hai_tools.workflow", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, help="workflow YAML; default $HAI_WORKFLOW_CONFIG or built-ins"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser(
        "reviewer-add", help="register a reviewer (or re-issue a token); prints the token once"
    )
    add.add_argument("--id", required=True)
    add.add_argument("--role", required=True)
    start = sub.add_parser("start", help="run a case up to clinician review")
    start.add_argument("--case", type=Path, help="JSON file {case_id, age_months, observations[, question]}")
    start.add_argument("--case_id")
    start.add_argument("--age_months", type=int)
    start.add_argument("--observations")
    start.add_argument("--question")
    listing = sub.add_parser("list", help="cases waiting for review (--all: every case)")
    listing.add_argument("--all", action="store_true")
    for name in ("show", "record"):
        sub.add_parser(name, help=f"{name} one case").add_argument("thread_id")
    for name in ("approve", "edit", "reject"):
        decide = sub.add_parser(name, help=f"{name} a pending case (token from $HAI_REVIEWER_TOKEN)")
        decide.add_argument("thread_id")
        decide.add_argument("--reviewer", required=True)
        if name == "edit":
            decide.add_argument("--text", required=True, help="the clinician's text that is released")
        if name == "reject":
            decide.add_argument("--reason", required=True)
    args = parser.parse_args(argv)

    from hai_tools.workflow.review import ReviewerRegistry
    from hai_tools.workflow.service import ReviewService, load_workflow_config

    config = load_workflow_config(args.config)
    if args.action == "reviewer-add":
        token = ReviewerRegistry(config.path(config.reviewers, "reviewers.yaml")).add(args.id, args.role)
        print(f"reviewer {args.id} ({args.role}) registered. Token (shown once, keep it secret):\n{token}")
        return 0
    service = ReviewService(config)
    if args.action == "start":
        case = (
            json.loads(args.case.read_text())
            if args.case
            else {
                k: v
                for k, v in {
                    "case_id": args.case_id,
                    "age_months": args.age_months,
                    "observations": args.observations,
                    "question": args.question,
                }.items()
                if v is not None
            }
        )
        _print_payload(asyncio.run(service.start(case)))
    elif args.action == "list":
        rows = service.store.cases() if args.all else service.pending()
        for row in rows:
            print(f"{row['thread_id']}\t{row['case_id']}\t{row['status']}\t{row['updated_at']}")
        if not rows:
            print("no cases" if args.all else "no cases waiting for review")
    elif args.action == "show":
        _print_payload(asyncio.run(service.show(args.thread_id)))
    elif args.action == "record":
        record = service.record(args.thread_id)
        print(json.dumps(record, indent=2) if record else f"case {args.thread_id} has not been reviewed")
        return 0 if record else 1
    else:
        decision: dict[str, Any] = {"action": args.action, "reviewer_id": args.reviewer}
        if args.action == "edit":
            decision["text"] = args.text
        if args.action == "reject":
            decision["reason"] = args.reason
        record = asyncio.run(service.decide(args.thread_id, decision, os.environ.get("HAI_REVIEWER_TOKEN")))
        released = record["released_text"]
        print(
            f"case {record['case_id']}: {record['decision']} by {record['reviewer_id']} at {record['decided_at']}; "
            + (f"released: {released}" if released is not None else "nothing released")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
