"""Registry records and the storage interface. Nothing here assumes SQLite."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hai_tools.errors import RegistryError
from hai_tools.manifest import content_hash

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_ref(ref: str) -> tuple[str, str]:
    """Split `name@version`; both parts are required and must be plain identifiers."""
    name, sep, version = ref.partition("@")
    if not sep or not _NAME.match(name) or not _NAME.match(version):
        raise RegistryError(f"'{ref}' is not a dataset reference of the form name@version")
    return name, version


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise RegistryError(f"{kind} '{value}' must be letters, digits, '.', '_' or '-' (at most 128)")
    return value


class DatasetFile(BaseModel):
    """One file (or a file of a `datasets` folder) of a registered dataset."""

    model_config = ConfigDict(extra="forbid")

    split: str
    path: str
    sha256: str
    rows: int | None = None
    format: str


class DatasetRecord(BaseModel):
    """A registered dataset: what it is, where its files are, their hashes, and its de-id status."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    files: list[DatasetFile]
    splits: dict[str, int] = Field(description="rows per split")
    columns: dict[str, str] = Field(description="column name -> type, the union over splits")
    license: str
    deid_attestation: str | None = None
    deid_waiver: str | None = None
    patient_id_column: str | None = None
    description: str = ""
    source_format: str
    root: str | None = Field(default=None, description="the `datasets` folder, for that format")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def file_key(self, entry: DatasetFile) -> str:
        """A file's name in the dataset's identity: its split and its path inside the dataset (the file name for
        split files, the path below the folder for a `datasets` folder), never where the data sits on disk."""
        path = Path(entry.path)
        inside = path.relative_to(self.root).as_posix() if self.root else path.name
        return f"{entry.split}/{inside}"

    @property
    def content_hash(self) -> str:
        """The dataset's identity: the same bytes under the same names hash the same on every machine."""
        return content_hash({self.file_key(f): f.sha256 for f in self.files})


class ArtifactStore(ABC):
    """Key-value store of registry records: (kind, name, version) -> JSON document."""

    @abstractmethod
    def put(self, kind: str, name: str, version: str, document: str) -> None:
        """Insert a record; raise RegistryError if (kind, name, version) exists."""

    @abstractmethod
    def get(self, kind: str, name: str, version: str) -> str | None: ...

    @abstractmethod
    def records(self, kind: str) -> list[tuple[str, str, str]]:
        """(name, version, document) of every record of a kind, oldest first."""

    def put_dataset(self, record: DatasetRecord) -> DatasetRecord:
        """Register a dataset; the same name@version with the same content is a no-op, other content
        under an existing name@version is refused (versions are immutable)."""
        existing = self.get_dataset(record.name, record.version, missing_ok=True)
        if existing is not None:
            if existing.content_hash != record.content_hash:
                raise RegistryError(
                    f"{record.ref} is already registered with other content; register a new version"
                )
            return existing
        self.put("dataset", record.name, record.version, record.model_dump_json())
        return record

    def get_dataset(self, name: str, version: str, missing_ok: bool = False) -> DatasetRecord | None:
        document = self.get("dataset", name, version)
        if document is None:
            if missing_ok:
                return None
            known = sorted({f"{n}@{v}" for n, v, _ in self.records("dataset") if n == name})
            hint = f" (known versions: {', '.join(known)})" if known else ""
            raise RegistryError(f"dataset {name}@{version} is not registered{hint}")
        return DatasetRecord.model_validate_json(document)

    def list_datasets(self) -> list[DatasetRecord]:
        return [DatasetRecord.model_validate_json(doc) for _, _, doc in self.records("dataset")]
