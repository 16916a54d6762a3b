"""The dataset registry: name@version with per-file hashes, de-id attestation, patient-split checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hai_tools.errors import DatasetError, RegistryError
from hai_tools.registry import SQLiteArtifactStore
from hai_tools.registry.datasets import load_registered, register_dataset, verify_dataset


@pytest.fixture
def store(tmp_path: Path) -> SQLiteArtifactStore:
    return SQLiteArtifactStore(tmp_path / "registry.sqlite")


@pytest.fixture
def files(tmp_path: Path, demo_files: dict[str, Path]) -> dict[str, Path]:
    copied = {}
    for split, path in demo_files.items():
        copied[split] = tmp_path / path.name
        shutil.copy(path, copied[split])
    return copied


def _register(store: SQLiteArtifactStore, files: dict[str, Path], ref: str = "screen@1", **kw: object):
    options: dict[str, object] = {
        "license": "CC0-1.0",
        "deid_attestation": "synthetic",
        "patient_id_column": "patient_id",
    }
    options.update(kw)
    return register_dataset(store, ref, files=files, **options)  # type: ignore[arg-type]


def test_register_then_load_rechecks_hashes(store: SQLiteArtifactStore, files: dict[str, Path]) -> None:
    record = _register(store, files)
    assert record.splits["train"] == len(files["train"].read_text().splitlines())
    assert {"prompt", "completion", "sex", "site"} <= set(record.columns)
    loaded_record, splits = load_registered(store, "screen@1")
    assert loaded_record.content_hash == record.content_hash
    assert splits["validation"][0]["prompt"][0]["role"] == "user"


def test_changed_file_is_refused_on_load(store: SQLiteArtifactStore, files: dict[str, Path]) -> None:
    _register(store, files)
    with open(files["test"], "a") as handle:
        handle.write(files["test"].read_text().splitlines()[0] + "\n")
    with pytest.raises(DatasetError, match="changed since registration"):
        load_registered(store, "screen@1")


def test_attestation_required_unless_waived(store: SQLiteArtifactStore, files: dict[str, Path]) -> None:
    with pytest.raises(RegistryError, match="de-identification attestation is required"):
        _register(store, files, deid_attestation=None)
    assert store.list_datasets() == []
    record = _register(store, files, deid_attestation=None, deid_waiver="public benchmark, no PHI")
    assert record.deid_waiver == "public benchmark, no PHI"
    assert store.get_dataset("screen", "1").deid_attestation is None  # type: ignore[union-attr]


def test_patient_in_two_splits_is_refused(store: SQLiteArtifactStore, files: dict[str, Path]) -> None:
    leaked = json.loads(files["train"].read_text().splitlines()[0])
    with open(files["test"], "a") as handle:
        handle.write(json.dumps(leaked) + "\n")
    with pytest.raises(DatasetError, match=r"1 patient\(s\) appear in both 'test' and 'train'") as err:
        _register(store, files)
    assert leaked["patient_id"] not in str(err.value)  # counts only: no identifiers in messages
    assert store.list_datasets() == []


def test_versions_are_immutable_and_reregistering_is_idempotent(
    store: SQLiteArtifactStore, files: dict[str, Path], tmp_path: Path
) -> None:
    first = _register(store, files)
    assert _register(store, files).content_hash == first.content_hash
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(files["train"].read_text().splitlines()[:10]) + "\n")
    with pytest.raises(RegistryError, match="already registered with other content"):
        _register(store, {"train": other})
    assert _register(store, {"train": other}, ref="screen@2").splits == {"train": 10}


def test_csv_parquet_and_datasets_folder(store: SQLiteArtifactStore, tmp_path: Path) -> None:
    import datasets

    frame = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "text": ["a", "b", "c"], "label": [0, 1, 0]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    assert _register(store, {"train": tmp_path / "t.csv"}, ref="csv@1").splits == {"train": 3}
    assert _register(store, {"train": tmp_path / "t.parquet"}, ref="pq@1").columns["label"] == "int64"
    dsd = datasets.DatasetDict(
        train=datasets.Dataset.from_pandas(frame.iloc[:2]), test=datasets.Dataset.from_pandas(frame.iloc[2:])
    )
    dsd.save_to_disk(str(tmp_path / "hf"))
    record = register_dataset(
        store,
        "hf@1",
        folder=tmp_path / "hf",
        license="x",
        deid_attestation="y",
        patient_id_column="patient_id",
    )
    assert record.splits == {"train": 2, "test": 1}
    _, splits = load_registered(store, "hf@1")
    assert splits["test"]["text"] == ["c"]
    assert verify_dataset(store, "hf@1").ref == "hf@1"


@pytest.mark.parametrize(
    ("ref", "name", "error"),
    [
        ("no-version", "t.jsonl", "name@version"),
        ("x@1", "t.txt", "unsupported file type"),
        ("x@1", "missing.jsonl", "no such file"),
        ("x@1", "empty.jsonl", "has no rows"),
    ],
)
def test_bad_input_is_a_typed_error_and_stores_nothing(
    store: SQLiteArtifactStore, tmp_path: Path, ref: str, name: str, error: str
) -> None:
    (tmp_path / "t.txt").write_text("x")
    (tmp_path / "t.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises((RegistryError, DatasetError), match=error):
        _register(store, {"train": tmp_path / name}, ref=ref, patient_id_column=None)
    assert store.list_datasets() == []


def test_unknown_dataset_names_known_versions(store: SQLiteArtifactStore, files: dict[str, Path]) -> None:
    _register(store, files)
    with pytest.raises(RegistryError, match=r"screen@9 is not registered \(known versions: screen@1\)"):
        load_registered(store, "screen@9")
