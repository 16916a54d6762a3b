"""Register dataset files as `name@version` with per-file hashes, and load them back with the hashes
re-checked. `python -m trainer data register --help` shows the command that drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hai_tools.errors import DatasetError, RegistryError
from hai_tools.manifest import sha256_file
from hai_tools.registry.base import ArtifactStore, DatasetFile, DatasetRecord, check_name, parse_ref

if TYPE_CHECKING:
    import datasets

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def _file_format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(f"{path}: unsupported file type '{path.suffix}' (JSONL, CSV or Parquet)")
    return fmt


def _read_split(path: Path, fmt: str) -> datasets.Dataset:
    import datasets
    import pandas as pd

    try:
        if fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path}: cannot be read as {fmt}: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise DatasetError(f"{path}: has no rows")
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def _read_folder(folder: Path) -> tuple[dict[str, datasets.Dataset], list[Path]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(f"{folder}: not a `datasets` save_to_disk folder: {exc}") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return splits, files


def _check_patients(splits: dict[str, datasets.Dataset], column: str) -> None:
    """Refuse datasets whose splits share a patient. Only counts are reported, never the ids."""
    seen: dict[str, set[str]] = {}
    for split, data in splits.items():
        if column not in data.column_names:
            raise DatasetError(f"patient id column '{column}' is missing from split '{split}'")
        ids = [str(v) for v in data[column]]
        if any(v in ("", "None", "nan") for v in ids):
            raise DatasetError(f"split '{split}' has rows without a value in patient id column '{column}'")
        seen[split] = set(ids)
    names = sorted(seen)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = seen[first] & seen[second]
            if shared:
                raise DatasetError(
                    f"{len(shared)} patient(s) appear in both '{first}' and '{second}': "
                    "split by patient before registering"
                )


def _columns(splits: dict[str, datasets.Dataset]) -> dict[str, str]:
    columns: dict[str, str] = {}
    for data in splits.values():
        for name, feature in data.features.items():
            columns.setdefault(name, str(getattr(feature, "dtype", type(feature).__name__)))
    return columns


def register_dataset(
    store: ArtifactStore,
    ref: str,
    *,
    files: dict[str, Path] | None = None,
    folder: Path | None = None,
    license: str,
    deid_attestation: str | None = None,
    deid_waiver: str | None = None,
    patient_id_column: str | None = None,
    description: str = "",
) -> DatasetRecord:
    """Hash, read and check a dataset, then record it as `ref` (= name@version) in the store.

    `files` maps split name -> JSONL/CSV/Parquet file; `folder` is a `datasets` save_to_disk folder.
    A de-identification attestation is required unless an explicit waiver reason is given (recorded).
    Nothing is written to the store unless every check passes.
    """
    name, version = parse_ref(ref)
    if not (deid_attestation and deid_attestation.strip()) and not (deid_waiver and deid_waiver.strip()):
        raise RegistryError(
            f"{ref}: a de-identification attestation is required (--deid-attestation 'who, how'); "
            "for data that needs none, give --deid-waiver 'reason' (recorded)"
        )
    if not license.strip():
        raise RegistryError(f"{ref}: a license is required (e.g. CC-BY-4.0, internal-use-only)")
    if (files is None) == (folder is None):
        raise DatasetError("give either split files or one `datasets` folder")

    entries: list[DatasetFile] = []
    if files is not None:
        if not files:
            raise DatasetError("no split files given")
        splits = {}
        for split, path in files.items():
            check_name("split", split)
            path = Path(path).resolve()
            if not path.is_file():
                raise DatasetError(f"{path}: no such file")
            fmt = _file_format(path)
            splits[split] = _read_split(path, fmt)
            entries.append(
                DatasetFile(
                    split=split, path=str(path), sha256=sha256_file(path), rows=len(splits[split]), format=fmt
                )
            )
        source_format = ",".join(sorted({e.format for e in entries}))
    else:
        assert folder is not None
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise DatasetError(f"{folder}: no such folder")
        splits, paths = _read_folder(folder)
        entries = [
            DatasetFile(split="*", path=str(p), sha256=sha256_file(p), rows=None, format="datasets")
            for p in paths
        ]
        source_format = "datasets"
    root = str(folder) if folder is not None else None

    if patient_id_column:
        _check_patients(splits, patient_id_column)
    record = DatasetRecord(
        name=name,
        version=version,
        files=entries,
        splits={split: len(data) for split, data in splits.items()},
        columns=_columns(splits),
        license=license,
        deid_attestation=deid_attestation or None,
        deid_waiver=None if deid_attestation else deid_waiver,
        patient_id_column=patient_id_column,
        description=description,
        source_format=source_format,
        root=root,
    )
    return store.put_dataset(record)


def verify_dataset(store: ArtifactStore, ref: str) -> DatasetRecord:
    """Re-hash every file of a registered dataset; raise DatasetError naming the first that differs."""
    record = store.get_dataset(*parse_ref(ref))
    assert record is not None
    for entry in record.files:
        path = Path(entry.path)
        if not path.is_file():
            raise DatasetError(f"{record.ref}: file {path} is missing")
        if sha256_file(path) != entry.sha256:
            raise DatasetError(f"{record.ref}: file {path} changed since registration (sha256 mismatch)")
    return record


def load_registered(store: ArtifactStore, ref: str) -> tuple[DatasetRecord, dict[str, datasets.Dataset]]:
    """Load a registered dataset by `name@version`, after re-checking every file hash."""
    record = verify_dataset(store, ref)
    if record.source_format == "datasets":
        assert record.root is not None
        splits, _ = _read_folder(Path(record.root))
    else:
        splits = {e.split: _read_split(Path(e.path), e.format) for e in record.files}
    return record, splits


def load_split(
    store: ArtifactStore, ref: str, split: str, limit: int | None = None
) -> tuple[DatasetRecord, list[dict[str, Any]]]:
    """The first `limit` records (all when None) of one split of a registered dataset, after `load_registered`'s
    hash checks; a split the dataset does not have is refused by name."""
    record, splits = load_registered(store, ref)
    if split not in splits:
        raise DatasetError(f"{record.ref} has no '{split}' split (has: {', '.join(splits)})")
    data = splits[split]
    return record, [dict(data[i]) for i in range(min(limit or len(data), len(data)))]


__all__ = ["RegistryError", "load_registered", "load_split", "register_dataset", "verify_dataset"]
