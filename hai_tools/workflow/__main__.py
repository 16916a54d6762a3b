"""`python -m hai_tools.workflow`: run cases through the clinical workflow and review them.

    python -m hai_tools.workflow admin-keygen --out keys/admin                   # the admin, once
    HAI_REVIEWER_PASSPHRASE=... python -m hai_tools.workflow reviewer-keygen --id dr-lee   # the reviewer
    python -m hai_tools.workflow reviewer-add --id dr-lee --role pediatrician \
        --public_key ~/.config/hai-tools/reviewers/dr-lee.pub --admin_key keys/admin.key
    python -m hai_tools.workflow start --case case.json          # or: ... --case - < case.json
    python -m hai_tools.workflow list
    python -m hai_tools.workflow show THREAD
    HAI_REVIEWER_PASSPHRASE=... python -m hai_tools.workflow approve THREAD --reviewer dr-lee
    HAI_REVIEWER_PASSPHRASE=... python -m hai_tools.workflow edit THREAD --reviewer dr-lee --text_file text.txt
    HAI_REVIEWER_PASSPHRASE=... python -m hai_tools.workflow reject THREAD --reviewer dr-lee --reason_file -
    python -m hai_tools.workflow record THREAD
    python -m hai_tools.workflow verify                          # the review chain
    python -m hai_tools.workflow export-history --out history.jsonl   # the chain, no patient data
    python -m hai_tools.workflow verify-history history.jsonl --reviewers reviewers.yaml \
        --admin_public_key admin.pub --service_public_key review.pub  # anywhere, from those files alone
    python -m hai_tools.workflow erase THREAD                    # forget one case's patient data
    python -m hai_tools.workflow serve [--host H --port P]      # the review web page (web: in the config)

Config: --config FILE (or $HAI_WORKFLOW_CONFIG), see configs/workflow.yaml. Patient data (a case, a clinician's
text or reason) is read from files or stdin, never from argv; passphrases come from the environment.
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
from hai_tools.errors import ConfigError


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


def _read(source: str) -> str:
    """A file's text, or stdin's for '-'."""
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{source}: no such file")
    return path.read_text()


def _passphrase(env: str) -> str | None:
    return os.environ.get(env) or None


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hai_tools.workflow", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, help="workflow YAML; default $HAI_WORKFLOW_CONFIG or built-ins"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    admin = sub.add_parser("admin-keygen", help="the admin key pair that signs the reviewer registry")
    admin.add_argument("--out", type=Path, required=True, help="PREFIX: writes PREFIX.key and PREFIX.pub")
    rkey = sub.add_parser(
        "reviewer-keygen", help="a reviewer's own key pair, wrapped by $HAI_REVIEWER_PASSPHRASE"
    )
    rkey.add_argument("--id", required=True)
    rkey.add_argument("--out", type=Path, help="PREFIX (default: the reviewer profile folder / ID)")
    add = sub.add_parser("reviewer-add", help="register a reviewer's public key (signed by the admin key)")
    add.add_argument("--id", required=True)
    add.add_argument("--role", required=True)
    add.add_argument("--public_key", type=Path, required=True, help="the reviewer's PREFIX.pub")
    add.add_argument(
        "--admin_key", type=Path, required=True, help="admin private key ($HAI_ADMIN_PASSPHRASE)"
    )
    off = sub.add_parser("reviewer-deactivate", help="deactivate a reviewer's key (signed by the admin key)")
    off.add_argument("--id", required=True)
    off.add_argument("--admin_key", type=Path, required=True)
    sub.add_parser("reviewers", help="registered reviewers and their keys (after checking the registry)")
    start = sub.add_parser("start", help="run a case up to clinician review")
    start.add_argument(
        "--case",
        required=True,
        help="JSON file {case_id, age_months, observations[, question]}, or - (stdin)",
    )
    listing = sub.add_parser("list", help="cases waiting for review (--all: every case)")
    listing.add_argument("--all", action="store_true")
    for name in ("show", "record", "erase"):
        sub.add_parser(name, help=f"{name} one case").add_argument("thread_id")
    for name in ("approve", "edit", "reject"):
        decide = sub.add_parser(name, help=f"{name} a pending case, signed with the reviewer's own key")
        decide.add_argument("thread_id")
        decide.add_argument("--reviewer", required=True)
        decide.add_argument("--key", type=Path, help="private key (default: the reviewer profile's ID.key)")
        if name == "edit":
            decide.add_argument("--text_file", required=True, help="the clinician's text, from a file or -")
        if name == "reject":
            decide.add_argument("--reason_file", required=True, help="why, from a file or -")
    serve = sub.add_parser("serve", help="the clinician review web page (see web: in the workflow config)")
    serve.add_argument("--host", help="listen address (default web.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default web.port, 8770)")
    verify = sub.add_parser("verify", help="walk the review chain (and the stored cases)")
    verify.add_argument("--expect_head", help="SEQ:HASH printed by an earlier run: detects a cut tail")
    export = sub.add_parser("export-history", help="the review chain as JSON lines (no patient data)")
    export.add_argument("--out", type=Path, required=True)
    history = sub.add_parser("verify-history", help="verify an exported review chain from public files alone")
    history.add_argument("path", type=Path)
    history.add_argument("--reviewers", type=Path, required=True)
    history.add_argument("--admin_public_key", type=Path, required=True)
    history.add_argument("--service_public_key", type=Path, required=True)
    history.add_argument("--expect_head")
    args = parser.parse_args(argv)

    from hai_tools.keys import keygen, load_private, load_public
    from hai_tools.workflow.reviewers import ReviewerRegistry, profile_dir

    if args.action == "admin-keygen":
        private, public = keygen(args.out, _passphrase("HAI_ADMIN_PASSPHRASE"))
        print(f"admin private key: {private} (keep it with the admin)\nadmin public key: {public} (pin it)")
        return 0
    if args.action == "reviewer-keygen":
        passphrase = _passphrase("HAI_REVIEWER_PASSPHRASE")
        if not passphrase:
            raise ConfigError("set HAI_REVIEWER_PASSPHRASE: a reviewer's key is kept wrapped by a passphrase")
        private, public = keygen(args.out or profile_dir() / args.id, passphrase)
        print(f"reviewer key: {private} (yours alone)\npublic key: {public} (give it to the admin)")
        return 0
    if args.action == "verify-history":
        from hai_tools.workflow.records import verify_review_chain

        entries = [json.loads(line) for line in args.path.read_text().splitlines() if line.strip()]
        seq, head, _ = verify_review_chain(
            entries,
            ReviewerRegistry(args.reviewers, args.admin_public_key),
            load_public(args.service_public_key),
            expect_head=args.expect_head,
        )
        print(f"ok review history {args.path}: {seq} decisions chained and signed; head {seq}:{head}")
        return 0

    from hai_tools.workflow.service import ReviewService, load_workflow_config

    config = load_workflow_config(args.config)
    registry = ReviewerRegistry(
        config.path(config.reviewers, "reviewers.yaml"), config.path(config.admin_public_key, "admin.pub")
    )
    if args.action == "reviewer-add":
        admin_key = load_private(args.admin_key, _passphrase("HAI_ADMIN_PASSPHRASE"))
        entry = registry.add(args.id, args.role, args.public_key.read_text(), admin_key)
        print(f"reviewer {entry.id} ({entry.role}) registered with key {entry.key_id}")
        return 0
    if args.action == "reviewer-deactivate":
        registry.deactivate(args.id, load_private(args.admin_key, _passphrase("HAI_ADMIN_PASSPHRASE")))
        print(f"reviewer {args.id} deactivated")
        return 0
    if args.action == "reviewers":
        for entry in registry.entries():
            state = "active" if entry.active else f"inactive since {entry.deactivated_at}"
            print(f"{entry.id}\t{entry.role}\t{entry.key_id}\t{state}")
        return 0
    if args.action == "serve":
        return _serve(config, args.host, args.port)
    service = ReviewService(config)
    if args.action == "start":
        try:
            case = json.loads(_read(args.case))
        except ValueError:
            raise ConfigError("the case is not valid JSON") from None
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
    elif args.action == "erase":
        asyncio.run(service.erase(args.thread_id))
        print(f"case {args.thread_id}: patient data erased; its review-chain entry remains (digests only)")
    elif args.action == "verify":
        seq, head, erased = service.verify(args.expect_head)
        print(
            f"ok review chain: {seq} decisions chained and signed ({erased} erased cases); head {seq}:{head}"
        )
    elif args.action == "export-history":
        from hai_tools.manifest import atomic_write_text

        atomic_write_text(
            args.out, "".join(json.dumps(e, sort_keys=True) + "\n" for e in service.store.chain())
        )
        print(f"review history: {args.out}")
    else:
        decision: dict[str, Any] = {"action": args.action, "reviewer_id": args.reviewer}
        if args.action == "edit":
            decision["text"] = _read(args.text_file).strip()
        if args.action == "reject":
            decision["reason"] = _read(args.reason_file).strip()
        key = load_private(
            args.key or profile_dir() / f"{args.reviewer}.key", _passphrase("HAI_REVIEWER_PASSPHRASE")
        )
        record = asyncio.run(service.decide(args.thread_id, decision, key))
        released = record["released_text"]
        print(
            f"case {record['case_id']}: {record['decision']} by {record['reviewer_id']} at {record['decided_at']}; "
            + (f"released: {released}" if released is not None else "nothing released")
        )
    return 0


def _serve(config: Any, host: str | None, port: int | None) -> int:
    import logging

    import uvicorn

    from hai_tools.workflow.service import ReviewService
    from hai_tools.workflow.web import create_app

    service = ReviewService(config)
    service.reviewers.entries()  # a registry that does not verify stops the start, not the first login
    host, port = host or config.web.host, port or config.web.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"review web page on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
