"""Verify an artifact and, recursively, every input its manifest names: adapter -> dataset and base model,
merged model -> adapter -> ..., export -> merged model -> ...

    python -m export verify out/merged/screening-lora
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from hai_tools.errors import ManifestError
from hai_tools.manifest import MANIFEST_NAME, Manifest, verify_artifact
from hai_tools.models import folder_identity
from hai_tools.registry import open_registry
from hai_tools.registry.base import ArtifactStore, parse_ref
from hai_tools.registry.datasets import verify_dataset


class ChainLink(BaseModel):
    kind: str
    name: str
    hash: str
    where: str
    depth: int


def _base_identity(manifest: Manifest) -> str:
    return (
        manifest.inputs[0].hash
        if manifest.kind == "base_model" and manifest.inputs
        else manifest.content_hash
    )


def verify_chain(folder: Path, store: ArtifactStore | None = None) -> list[ChainLink]:
    """Every link from `folder` down to its datasets; raise ManifestError at the first that fails."""
    links: list[ChainLink] = []
    store_ref: list[ArtifactStore] = [store] if store else []

    def registry() -> ArtifactStore:
        if not store_ref:
            store_ref.append(open_registry())
        return store_ref[0]

    def visit(path: Path, expected: str | None, depth: int) -> None:
        manifest = verify_artifact(path)
        own = _base_identity(manifest) if manifest.kind == "base_model" else manifest.content_hash
        if expected is not None and own != expected:
            raise ManifestError(f"{path} has hash {own[:19]}, but its consumer recorded {expected[:19]}")
        links.append(
            ChainLink(kind=manifest.kind, name=manifest.name, hash=own, where=str(path), depth=depth)
        )
        for item in manifest.inputs:
            if item.kind == "dataset":
                record = verify_dataset(registry(), item.name)
                parse_ref(item.name)
                if record.content_hash != item.hash:
                    raise ManifestError(
                        f"dataset {item.name} in the registry is not the one {path} was made from"
                    )
                links.append(
                    ChainLink(
                        kind="dataset", name=item.name, hash=item.hash, where="registry", depth=depth + 1
                    )
                )
            elif item.uri and (Path(item.uri) / MANIFEST_NAME).exists():
                visit(Path(item.uri), item.hash, depth + 1)
            elif item.kind == "base_model" and item.uri and Path(item.uri).is_dir():
                if folder_identity(Path(item.uri)) != item.hash:
                    raise ManifestError(f"base model at {item.uri} changed since {path} was made from it")
                links.append(
                    ChainLink(kind=item.kind, name=item.name, hash=item.hash, where=item.uri, depth=depth + 1)
                )
            elif item.kind == "llm_eval_suite" and item.uri and Path(item.uri).is_file():
                from evals.llm_suite import load_suite

                if load_suite(Path(item.uri))[1] != item.hash:
                    raise ManifestError(f"LLM-eval suite {item.uri} changed since {path} was scored with it")
                links.append(
                    ChainLink(kind=item.kind, name=item.name, hash=item.hash, where=item.uri, depth=depth + 1)
                )
            elif item.kind not in ("gguf",):
                raise ManifestError(f"input {item.kind} '{item.name}' of {path} is not at {item.uri}")

    visit(Path(folder), None, 0)
    return links
