"""Artifact manifests: every artifact folder carries `manifest.json` with the sha256 of each of its files
and of each of its inputs; loaders call `verify_artifact` and refuse a mismatch.

A manifest's `content_hash` is the sha256 of the canonical JSON of every other field of the manifest (its file
hashes, inputs, config, metrics, extra...), so no field can be edited without changing the identity that
consumers and signatures pin.

`python -m trainer verify PATH` exercises it on an adapter folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools import __version__
from hai_tools.errors import ManifestError

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "release.sig"  # a release's signature over its manifest: outside the manifest by definition
UNHASHED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
_CHUNK = 1 << 20
SCHEMA_VERSION = 2  # 2: content_hash covers every field; 1 (before 2026-11-29) covered the file list only


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(folder: Path, exclude: frozenset[str] = UNHASHED) -> dict[str, str]:
    """sha256 of every file below `folder`, keyed by its POSIX path relative to the folder."""
    hashes: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in exclude:
            continue
        hashes[rel] = sha256_file(path)
    return hashes


def canonical_json(data: Any) -> bytes:
    """The canonical JSON bytes that hashes and signatures are computed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(files: dict[str, str]) -> str:
    """One hash over a set of file hashes: stable under file order, changes with any name or byte."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]}\n".encode())
    return "sha256:" + digest.hexdigest()


class ArtifactInput(BaseModel):
    """One input an artifact was made from, pinned by its hash."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str
    hash: str
    uri: str | None = None


class Manifest(BaseModel):
    """The `manifest.json` of an artifact folder."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    kind: str
    name: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    files: dict[str, str] = Field(default_factory=dict)
    content_hash: str = ""
    inputs: list[ArtifactInput] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: dict[str, Any] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    seeds: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    def input(self, kind: str) -> ArtifactInput:
        for item in self.inputs:
            if item.kind == kind:
                return item
        raise ManifestError(f"manifest of {self.kind} '{self.name}' records no input of kind '{kind}'")

    def fields_hash(self) -> str:
        """sha256 of the canonical JSON of every field but `content_hash`: what `content_hash` must equal."""
        data = self.model_dump(mode="json", exclude={"content_hash"})
        return "sha256:" + hashlib.sha256(canonical_json(data)).hexdigest()


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file of `folder`, fill `files` and `content_hash`, write `manifest.json` atomically."""
    manifest.files = hash_tree(folder)
    manifest.schema_version = SCHEMA_VERSION
    manifest.content_hash = manifest.fields_hash()
    atomic_write_text(folder / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder} has no {MANIFEST_NAME}: not a hai-tools artifact")
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path} is malformed: {where}: {first['msg']}") from None


def verify_artifact(folder: Path, kind: str | None = None) -> Manifest:
    """Recompute every file hash of an artifact folder against its manifest; raise on any difference."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    check_sealed(manifest, folder)
    if kind is not None and manifest.kind != kind:
        raise ManifestError(f"{folder} is a '{manifest.kind}' artifact, expected '{kind}'")
    actual = hash_tree(folder)
    changed = sorted(rel for rel in manifest.files if rel in actual and actual[rel] != manifest.files[rel])
    missing = sorted(set(manifest.files) - set(actual))
    extra = sorted(set(actual) - set(manifest.files))
    problems = [f"{rel} (hash mismatch)" for rel in changed] + [f"{rel} (missing)" for rel in missing]
    problems += [f"{rel} (not in manifest)" for rel in extra]
    if problems:
        raise ManifestError(f"{folder} fails verification: " + ", ".join(problems[:5]))
    return manifest


def artifact_identity(manifest: Manifest) -> str:
    """The hash a consumer records for an artifact. For most kinds, the manifest's content hash. A base model's
    identity leaves out when and by what it was written: the hash of its files and of the source it was made from
    (for the embedded base, the dequantised files and the GGUF), so every machine that materialises the same
    model from the same package with the locked libraries gets the same identity, and editing or resealing the
    files changes it."""
    if manifest.kind == "base_model":
        return content_hash(manifest.files | {f"input:{i.kind}:{i.name}": i.hash for i in manifest.inputs})
    return manifest.content_hash


def check_sealed(manifest: Manifest, where: object) -> None:
    """Refuse a manifest whose fields were edited after it was written (or one from the old schema, whose
    inputs, config and extra were outside its hash)."""
    if manifest.schema_version != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: manifest schema {manifest.schema_version} hashes only its file list; rebuild the artifact "
            f"with this hai-tools (schema {SCHEMA_VERSION})"
        )
    if manifest.fields_hash() != manifest.content_hash:
        raise ManifestError(
            f"{where}: manifest.json was edited after it was written (its fields no longer match its "
            "content_hash)"
        )


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final` in one rename, on error it is
    removed, so a reader never sees a half-written artifact."""
    final = Path(final).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    tmp.chmod(0o755)
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are skipped)."""
    versions: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def code_version() -> dict[str, Any]:
    """hai-tools' version and, when run from a git checkout, its commit and whether the tree is dirty."""
    here = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {"hai_tools": __version__}
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
