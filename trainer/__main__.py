"""`python -m trainer`: train a LoRA/QLoRA adapter (the default action), manage datasets, verify adapters.

    python -m trainer --config configs/demo_lora.yaml --max_steps 5
    python -m trainer data generate-demo --output_dir out/demo-data
    python -m trainer data register demo-screening@2 --train out/demo-data/train.jsonl ... --license CC0-1.0 \
        --deid-attestation "synthetic data, no real patients" --patient-id-column patient_id
    python -m trainer data list | show REF | verify REF
    python -m trainer verify out/adapters/screening-lora
    python -m trainer data generate-guard --output_dir out/guard-data --register guard@2
    python -m trainer guard --dataset guard@2 --output_dir out/guard      # the safety guard's classifiers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hai_tools.cli import run_cli
from hai_tools.demo_data import SPLIT_FRACTIONS


def _train_parser() -> argparse.ArgumentParser:
    from trainer.config import add_config_flags

    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train a LoRA/QLoRA adapter on a registered dataset. Other actions: `data ...` "
        "(dataset registry) and `verify PATH` (recheck an adapter's manifest).",
        epilog="Flags override the --config file, which overrides the defaults shown.",
    )
    add_config_flags(parser)
    return parser


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer data", description="The dataset registry.")
    sub = parser.add_subparsers(dest="action", required=True)
    reg = sub.add_parser("register", help="register split files or a `datasets` folder as name@version")
    reg.add_argument("ref", help="name@version")
    for split in ("train", "validation", "test"):
        reg.add_argument(f"--{split}", type=Path, help=f"{split} split file (JSONL, CSV or Parquet)")
    reg.add_argument("--folder", type=Path, help="a `datasets` save_to_disk folder instead of split files")
    reg.add_argument("--license", required=True)
    reg.add_argument("--deid-attestation", help="who attests the data is de-identified, and how")
    reg.add_argument("--deid-waiver", help="reason no de-identification is needed (recorded in the registry)")
    reg.add_argument("--patient-id-column", help="refuse splits that share a value of this column")
    reg.add_argument("--description", default="")
    sub.add_parser("list", help="registered datasets")
    show = sub.add_parser("show", help="one dataset's record as JSON")
    show.add_argument("ref")
    ver = sub.add_parser("verify", help="re-hash a dataset's files")
    ver.add_argument("ref")
    rad = sub.add_parser(
        "prepare-radiology", help="PNG/JPEG/DICOM + labels.csv -> de-identified image dataset, registered"
    )
    rad.add_argument("--raw_dir", type=Path, required=True)
    rad.add_argument("--output_dir", type=Path, required=True)
    rad.add_argument("--labels", type=Path, help="labels CSV; default RAW_DIR/labels.csv")
    rad.add_argument("--image_size", type=int, default=448, help="longest side after resizing")
    rad.add_argument("--register", metavar="NAME@VERSION", help="register the prepared dataset as this ref")
    rad.add_argument("--license", default="internal-use-only")
    rad.add_argument("--deid-attestation", help="who attests the data is de-identified, and how")
    rad.add_argument("--deid-waiver", help="reason no de-identification is needed (recorded)")
    rad.add_argument(
        "--keep_patient_age",
        action="store_true",
        help="keep PatientAge (PS3.15 retain patient characteristics)",
    )
    rad.add_argument(
        "--allow_burned_in",
        metavar="REASON",
        help="accept DICOMs with (suspected) burned-in text, for this recorded reason (refused by default)",
    )
    gen = sub.add_parser("generate-demo", help="write the synthetic developmental-screening dataset")
    gen.add_argument("--output_dir", type=Path, required=True)
    gen.add_argument("--n_patients", type=int, default=300)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--train_fraction", type=float, default=SPLIT_FRACTIONS[0], help="share of patients in train"
    )
    gen.add_argument(
        "--validation_fraction",
        type=float,
        default=SPLIT_FRACTIONS[1],
        help="share in validation; test: the rest",
    )
    gen.add_argument(
        "--safety_examples",
        type=int,
        default=0,
        help="add this many harmful requests with safe answers to the train split (hai_tools.demo_safety)",
    )
    guard = sub.add_parser("generate-guard", help="write (and register) the labelled guard dataset")
    guard.add_argument("--output_dir", type=Path, required=True)
    guard.add_argument("--register", metavar="NAME@VERSION", help="register it as this ref")
    guard.add_argument("--seed", type=int, default=7)
    return parser


def _data(argv: list[str]) -> int:
    from hai_tools.errors import RegistryError
    from hai_tools.registry import open_registry
    from hai_tools.registry.base import parse_ref
    from hai_tools.registry.datasets import register_dataset, verify_dataset

    args = _data_parser().parse_args(argv)
    if args.action == "generate-demo":
        from hai_tools.demo_data import write_demo_dataset

        fractions = (args.train_fraction, args.validation_fraction)
        if min(fractions) <= 0 or sum(fractions) >= 1:
            print(
                "error: train and validation fractions must be > 0 and leave patients for test",
                file=sys.stderr,
            )
            return 2
        if args.safety_examples < 0:
            print("error: --safety_examples must be >= 0", file=sys.stderr)
            return 2
        files = write_demo_dataset(
            args.output_dir, args.n_patients, args.seed, fractions, args.safety_examples
        )
        for split, path in files.items():
            print(f"{split}\t{path}")
        return 0
    if args.action == "generate-guard":
        from hai_tools.guard_data import generate

        counts = generate(args.output_dir, args.seed)
        print(" ".join(f"{k}={v}" for k, v in counts.items()))
        if args.register:
            record = register_dataset(
                open_registry(),
                args.register,
                files={name.removesuffix(".jsonl"): args.output_dir / name for name in counts},
                license="CC0-1.0",
                deid_waiver="synthetic: generated from templates by hai_tools.guard_data, no patient data",
                description="labelled guard requests and answers, split by template family "
                "(see hai_tools/data/datasheet_guard.md)",
            )
            print(f"registered {record.ref} {record.content_hash}")
        return 0
    if args.action == "prepare-radiology":
        import os

        from hai_tools.deid import DeidPolicy
        from hai_tools.radiology import prepare_radiology

        if args.register and not (args.deid_attestation or args.deid_waiver):
            raise RegistryError("--register needs --deid-attestation (or --deid-waiver)")
        policy = DeidPolicy(
            keep_patient_age=args.keep_patient_age,
            allow_burned_in=bool(args.allow_burned_in),
            burned_in_reason=args.allow_burned_in,
        )
        counts = prepare_radiology(
            args.raw_dir,
            args.output_dir,
            args.labels,
            os.environ.get("HAI_PSEUDONYM_SALT"),  # required and secret: refused otherwise
            args.image_size,
            policy=policy,
        )
        print("prepared " + " ".join(f"{k}={v}" for k, v in counts.items()) + f" in {args.output_dir}")
        if args.register:
            applied = json.loads((args.output_dir / "prep.json").read_text())["deidentification"]
            record = register_dataset(
                open_registry(),
                args.register,
                folder=args.output_dir / "data",
                license=args.license,
                deid_attestation=args.deid_attestation,
                deid_waiver=args.deid_waiver,
                patient_id_column="patient_id",
                description="pediatric radiology (bone age, ROP plus disease, fracture) from prepare-radiology; "
                "de-identification applied: " + json.dumps(applied, sort_keys=True),
            )
            print(f"registered {record.ref} {record.content_hash}")
        return 0
    store = open_registry()
    if args.action == "register":
        files = {s: getattr(args, s) for s in ("train", "validation", "test") if getattr(args, s)}
        record = register_dataset(
            store,
            args.ref,
            files=files or None,
            folder=args.folder,
            license=args.license,
            deid_attestation=args.deid_attestation,
            deid_waiver=args.deid_waiver,
            patient_id_column=args.patient_id_column,
            description=args.description,
        )
        print(
            f"registered {record.ref} {record.content_hash} "
            + " ".join(f"{k}={v}" for k, v in record.splits.items())
        )
    elif args.action == "list":
        table = Table("dataset", "splits", "license", "de-id", "content hash")
        for rec in store.list_datasets():
            deid = "attested" if rec.deid_attestation else "WAIVED"
            table.add_row(
                rec.ref,
                " ".join(f"{k}={v}" for k, v in rec.splits.items()),
                rec.license,
                deid,
                rec.content_hash[:19],
            )
        Console().print(table)
    elif args.action == "show":
        shown = store.get_dataset(*parse_ref(args.ref))
        assert shown is not None
        print(shown.model_dump_json(indent=2))
    elif args.action == "verify":
        record = verify_dataset(store, args.ref)
        print(f"ok {record.ref}: {len(record.files)} file(s) match their registered sha256")
    return 0


def _verify(argv: list[str]) -> int:
    from hai_tools.manifest import verify_artifact

    parser = argparse.ArgumentParser(
        prog="python -m trainer verify", description="Recheck an artifact's hashes."
    )
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    manifest = verify_artifact(args.path)
    print(
        f"ok {manifest.kind} '{manifest.name}' {manifest.content_hash}: {len(manifest.files)} files verified"
    )
    return 0


def _train(argv: list[str]) -> int:
    from trainer.config import load_config
    from trainer.train import train

    config = load_config(_train_parser().parse_args(argv))
    out = train(config)
    print(f"adapter:  {out}")
    print(f"manifest: {out / 'manifest.json'}")
    print(f"card:     {out / 'README.md'}")
    return 0


def _guard(argv: list[str]) -> int:
    from trainer.guard import train_guard

    parser = argparse.ArgumentParser(
        prog="python -m trainer guard", description="Train the safety guard's request and answer classifiers."
    )
    parser.add_argument("--dataset", required=True, help="registered guard dataset (name@version)")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = train_guard(args.dataset, args.output_dir, args.seed)
    print(f"guard: {out}\ncard:  {out / 'README.md'}")
    return 0


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "guard":
        return _guard(argv[1:])
    if argv and argv[0] == "data":
        return _data(argv[1:])
    if argv and argv[0] == "verify":
        return _verify(argv[1:])
    return _train(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        _dispatch,
        list(sys.argv[1:] if argv is None else argv),
        interrupted="interrupted: no adapter written; rerun with --resume to continue from the last checkpoint",
    )


if __name__ == "__main__":
    sys.exit(main())
