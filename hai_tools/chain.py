"""Chains of custody: an artifact and, recursively, every input its manifest names (release -> merged model ->
adapter -> dataset and base model; export -> merged model -> ...).

Two ways to check one:
- `verify_chain(folder)` on the machine that built it: re-hashes every artifact folder, the registered
  dataset files and the base model folders where the manifests say they are;
- `verify_bundled_chain(...)` anywhere: a release carries the manifest of every link (`ChainWalk.documents`), and
  each consumer's recorded hash must equal the hash recomputed from the link's document, down to the leaves.

    python -m export verify out/merged/screening-lora
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hai_tools.errors import DatasetError, ManifestError
from hai_tools.manifest import (
    MANIFEST_NAME,
    Manifest,
    artifact_identity,
    check_sealed,
    content_hash,
    verify_artifact,
)
from hai_tools.models import weight_files
from hai_tools.registry import open_registry
from hai_tools.registry.base import ArtifactStore, DatasetRecord, parse_ref
from hai_tools.registry.datasets import verify_dataset

SUITE_KINDS = frozenset({"llm_eval_suite", "red_team_suite"})
LEAF_KINDS = frozenset({"gguf", *SUITE_KINDS})  # recorded by hash; their bytes are not part of a bundle


class ChainLink(BaseModel):
    kind: str
    name: str
    hash: str
    where: str
    depth: int


def suite_digest(path: Path) -> str:
    """sha256 of an evaluation suite file (LLM-eval or red-team) and the data files it names (what a report
    records)."""
    digest = hashlib.sha256(path.read_bytes())
    data = yaml.safe_load(path.read_text()) or {}
    for key in ("cases_file", "calibration_file", "requests", "grader_set"):
        if isinstance(data, dict) and data.get(key):
            digest.update((path.parent / str(data[key])).read_bytes())
    return digest.hexdigest()


def identity(manifest: Manifest) -> str:
    """The hash a consumer records for an artifact with a manifest (hai_tools.manifest.artifact_identity)."""
    return artifact_identity(manifest)


class ChainWalk:
    """Verifies chains where they lie, and keeps the document of every link (`documents`, keyed by the hash its
    consumer recorded: what a release bundles). Each artifact folder, dataset and base model is hashed once per
    walk, however many roots reach it (a release's merged model, its eval report and its exports share links)."""

    def __init__(self, store: ArtifactStore | None = None) -> None:
        self._store = store
        self.documents: dict[str, dict[str, Any]] = {}
        self._verified: dict[str, str] = {}  # folder or dataset ref -> the identity it verified to

    def walk(self, folder: Path) -> list[ChainLink]:
        """Every link from `folder` down to its datasets; raise ManifestError at the first that fails."""
        links: list[ChainLink] = []
        self._visit(Path(folder), None, 0, links)
        return links

    def _registry(self) -> ArtifactStore:
        if self._store is None:
            self._store = open_registry()
        return self._store

    def _manifest(self, path: Path) -> Manifest:
        key = str(path.resolve())
        if key in self._verified:
            return Manifest.model_validate(self.documents[self._verified[key]]["document"])
        manifest = verify_artifact(path)
        self._verified[key] = identity(manifest)
        self.documents[identity(manifest)] = {
            "type": "manifest",
            "document": manifest.model_dump(mode="json"),
        }
        return manifest

    def _visit(self, path: Path, expected: str | None, depth: int, links: list[ChainLink]) -> None:
        manifest = self._manifest(path)
        own = identity(manifest)
        if expected is not None and own != expected:
            raise ManifestError(f"{path} has hash {own[:19]}, but its consumer recorded {expected[:19]}")
        links.append(
            ChainLink(kind=manifest.kind, name=manifest.name, hash=own, where=str(path), depth=depth)
        )

        def leaf(item: Any, where: str) -> None:
            links.append(
                ChainLink(kind=item.kind, name=item.name, hash=item.hash, where=where, depth=depth + 1)
            )

        for item in manifest.inputs:
            where = f"{item.kind} '{item.name}' of {path}"
            if item.uri and not Path(item.uri).is_absolute():  # a release names its bundled models relatively
                item = item.model_copy(update={"uri": str(path / item.uri)})
            if item.kind == "dataset":
                parse_ref(item.name)
                if self._verified.get(f"dataset:{item.name}") is None:
                    try:
                        record = verify_dataset(self._registry(), item.name)
                    except DatasetError as exc:
                        raise ManifestError(f"{where}: {exc}") from None
                    self._verified[f"dataset:{item.name}"] = record.content_hash
                    self.documents[record.content_hash] = {
                        "type": "dataset",
                        "document": record.model_dump(mode="json"),
                    }
                if self._verified[f"dataset:{item.name}"] != item.hash:
                    raise ManifestError(
                        f"dataset {item.name} in the registry is not the one {path} was made from"
                    )
                leaf(item, "registry")
            elif item.uri and (Path(item.uri) / MANIFEST_NAME).exists():
                self._visit(Path(item.uri), item.hash, depth + 1, links)
            elif item.kind == "base_model" and item.uri and Path(item.uri).is_dir():
                key = str(Path(item.uri).resolve())
                if key not in self._verified:
                    files = weight_files(Path(item.uri))
                    self._verified[key] = content_hash(files)
                    self.documents[self._verified[key]] = {"type": "files", "document": files}
                if self._verified[key] != item.hash:
                    raise ManifestError(f"base model at {item.uri} changed since {path} was made from it")
                leaf(item, item.uri)
            elif item.kind in SUITE_KINDS and item.uri and Path(item.uri).is_file():
                if "sha256:" + suite_digest(Path(item.uri)) != item.hash:
                    raise ManifestError(f"{item.kind} {item.uri} changed since {path} was scored with it")
                leaf(item, item.uri)
            elif item.kind not in LEAF_KINDS:
                raise ManifestError(f"input {where} is not at {item.uri}")


def verify_chain(folder: Path, store: ArtifactStore | None = None) -> list[ChainLink]:
    """Every link from `folder` down to its datasets, re-hashed where it lies; raise ManifestError at the first
    that fails."""
    return ChainWalk(store).walk(folder)


def verify_bundled_chain(
    root: str, documents: dict[str, dict[str, Any]], kind: str = "artifact", name: str = ""
) -> list[ChainLink]:
    """Check a chain from its bundled documents alone: each document hashes to the key its consumer recorded,
    and every input it names is itself in the bundle (or is a recorded leaf: a GGUF, an eval suite)."""
    links: list[ChainLink] = []

    def visit(key: str, kind: str, name: str, depth: int, consumer: str) -> None:
        entry = documents.get(key)
        if entry is None:
            raise ManifestError(
                f"{kind} '{name}' ({key[:19]}) recorded by {consumer} is not in the bundled chain"
            )
        doc = entry.get("document")
        if entry.get("type") == "dataset":
            try:
                record = DatasetRecord.model_validate(doc)
            except ValidationError:
                raise ManifestError(f"bundled record of dataset '{name}' is malformed") from None
            if record.content_hash != key:
                raise ManifestError(f"bundled record of dataset '{name}' was edited (hash differs)")
            links.append(ChainLink(kind="dataset", name=name, hash=key, where="bundle", depth=depth))
            return
        if entry.get("type") == "files":
            if not isinstance(doc, dict) or content_hash({str(k): str(v) for k, v in doc.items()}) != key:
                raise ManifestError(f"bundled file list of {kind} '{name}' was edited (hash differs)")
            links.append(ChainLink(kind=kind, name=name, hash=key, where="bundle", depth=depth))
            return
        try:
            manifest = Manifest.model_validate(doc)
        except ValidationError:
            raise ManifestError(f"bundled manifest of {kind} '{name}' is malformed") from None
        check_sealed(manifest, f"bundled manifest of {manifest.kind} '{manifest.name}'")
        if identity(manifest) != key:
            raise ManifestError(
                f"bundled manifest of {manifest.kind} '{manifest.name}' is not the one {consumer} recorded"
            )
        links.append(ChainLink(kind=manifest.kind, name=manifest.name, hash=key, where="bundle", depth=depth))
        for item in manifest.inputs:
            if item.kind in LEAF_KINDS:
                links.append(
                    ChainLink(
                        kind=item.kind, name=item.name, hash=item.hash, where="recorded", depth=depth + 1
                    )
                )
            else:
                visit(item.hash, item.kind, item.name, depth + 1, f"{manifest.kind} '{manifest.name}'")

    visit(root, kind, name or root[:19], 0, "the release")
    return links
