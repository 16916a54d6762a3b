"""What a signed release is, as a server or a board checks it: from the release folder and the trusted public key
alone, the manifest is sealed and signed, every file hashes as listed, each served model is the artifact the
manifest names, and the bundled chain of every input closes down to the datasets. Creating releases is
governance's (governance/release.py); verifying one is needed below it too (the server, skills/server.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from pydantic import BaseModel

from hai_tools.chain import ChainLink, verify_bundled_chain
from hai_tools.errors import ManifestError
from hai_tools.keys import load_public
from hai_tools.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    check_sealed,
    content_hash,
    load_manifest,
    verify_artifact,
)
from hai_tools.models import is_weight_file

SERVING_KEY = "serving"


class VerifiedRelease(BaseModel):
    """A release that verified: its id, its manifest's hash, and where each served model is in the folder."""

    folder: str
    name: str
    manifest_hash: str
    serving: dict[str, dict[str, str]]
    links: list[ChainLink]

    def model_path(self, role: str) -> Path | None:
        entry = self.serving.get(role)
        return Path(self.folder) / entry["path"] if entry else None

    def served_hashes(self) -> set[str]:
        return {entry["hash"] for entry in self.serving.values()}


def bundled_links(folder: Path, manifest: Manifest) -> list[ChainLink]:
    """The release (depth 0) and the chain of each of its inputs, checked from the documents under `chain/`."""
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / "chain").glob("*.json")):
        try:
            documents["sha256:" + path.stem] = json.loads(path.read_text())
        except ValueError:
            raise ManifestError(f"{folder}: chain/{path.name} is not JSON") from None
    links = [ChainLink(kind="release", name=manifest.name, hash=manifest.content_hash, where=".", depth=0)]
    for item in manifest.inputs:
        for link in verify_bundled_chain(item.hash, documents, item.kind, item.name):
            links.append(link.model_copy(update={"depth": link.depth + 1}))
    return links


def _served_identity(folder: Path, release: Manifest, entry: dict[str, str]) -> str:
    """The identity of a served model inside a release whose files just verified, from the release's file list
    (the weights are not hashed a second time): an embedder's weight files, or the model's own manifest, which must
    be sealed and list exactly the files the release holds under its folder."""
    prefix = entry["path"].rstrip("/") + "/"
    held = {rel[len(prefix) :]: h for rel, h in release.files.items() if rel.startswith(prefix)}
    if entry["kind"] == "embedder":
        return content_hash({rel: h for rel, h in held.items() if is_weight_file(rel)})
    own = load_manifest(folder / entry["path"])
    check_sealed(own, f"{folder}/{prefix}{MANIFEST_NAME}")
    if own.kind != entry["kind"]:
        raise ManifestError(
            f"{folder}/{entry['path']} is a '{own.kind}' artifact, expected '{entry['kind']}'"
        )
    held.pop(MANIFEST_NAME, None)
    if own.files != held:
        raise ManifestError(
            f"{folder}/{entry['path']}: its manifest does not list the files the release holds"
        )
    return own.content_hash


def verify_signed_manifest(folder: Path, public_key: Path) -> Manifest:
    """The release manifest in `folder`, sealed and signed by the trusted key (its files are not checked here)."""
    signature_path = folder / SIGNATURE_NAME
    manifest = load_manifest(folder)
    check_sealed(manifest, f"{folder}/{MANIFEST_NAME}")
    if not signature_path.exists():
        raise ManifestError(f"{folder} is not signed (no {SIGNATURE_NAME})")
    try:
        load_public(public_key).verify(
            base64.b64decode(signature_path.read_text().strip()), (folder / MANIFEST_NAME).read_bytes()
        )
    except (InvalidSignature, ValueError):
        raise ManifestError(f"{folder}: release signature does not verify with {public_key.name}") from None
    return manifest


def verify_release(folder: Path, public_key: Path) -> VerifiedRelease:
    """From the release folder and the public key alone, on any machine: the manifest is sealed and signed by the
    trusted key; every file hashes as listed (the served models included); each served model is the artifact
    the manifest names; and the bundled chain of every input closes, link by link, down to the datasets."""
    folder = Path(folder)
    verify_signed_manifest(folder, public_key)
    manifest = verify_artifact(folder, kind="release")
    serving = manifest.extra.get(SERVING_KEY)
    if not isinstance(serving, dict) or not ({"reasoner", "radiology"} & set(serving)):
        raise ManifestError(f"{folder}: the release lists no served models (made by an older hai-tools?)")
    for role, entry in serving.items():
        own = _served_identity(folder, manifest, entry)
        if own != entry["hash"]:
            raise ManifestError(f"{folder}: the {role} in {entry['path']} is not the one the release lists")
    links = bundled_links(folder, manifest)
    return VerifiedRelease(
        folder=str(folder.resolve()),
        name=manifest.name,
        manifest_hash=manifest.content_hash,
        serving={role: {k: str(v) for k, v in entry.items()} for role, entry in serving.items()},
        links=links,
    )
