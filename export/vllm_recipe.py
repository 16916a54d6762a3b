"""The vLLM deployment recipe of a merged model (or of adapters the trainer's lint allows unmerged): the exact
`vllm serve` command, its config file, and the health/readiness contract the skills' vLLM backend checks.

    python -m export vllm-recipe out/merged/screening-lora --output_dir out/releases/screening-lora/serving
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from hai_tools.errors import ConfigError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    verify_artifact,
    write_manifest,
)
from hai_tools.models import resolve_base_model


class ServingContract(BaseModel):
    """What a client checks before sending traffic to the vLLM server."""

    served_model_name: str
    base_url: str
    health: str = "GET /health -> 200 when the engine is alive"
    ready: str = "GET /v1/models lists served_model_name (and each LoRA module name)"
    chat: str = "POST /v1/chat/completions with model=served_model_name"
    completions: str = "POST /v1/completions with model=served_model_name"
    lora_modules: list[str] = []
    api_key_env: str = "VLLM_API_KEY"
    max_model_len: int
    dtype: str


def _max_len(model_dir: Path, requested: int | None) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    limit = int(text.get("max_position_embeddings", 8192))
    return min(requested or 8192, limit)


def write_vllm_recipe(
    artifact: Path,
    output_dir: Path,
    release_id: str | None = None,
    adapters: list[Path] | None = None,
    dtype: str = "bfloat16",
    max_model_len: int | None = None,
    port: int = 8000,
) -> Path:
    """`artifact` is a merged model folder, or (with `adapters`) ignored in favour of the adapters' base."""
    inputs: list[ArtifactInput] = []
    lora_modules: list[str] = []
    max_rank = 16
    if adapters:
        base_ids = set()
        for adapter_dir in adapters:
            adapter = verify_artifact(adapter_dir, kind="adapter")
            if not adapter.extra.get("vllm_servable_unmerged", False):
                raise ConfigError(
                    f"adapter '{adapter.name}' must be merged before vLLM serves it (see its card)"
                )
            base_ids.add(adapter.input("base_model").name)
            lora_modules.append(f"{adapter.name}={Path(adapter_dir).resolve()}")
            max_rank = max(max_rank, int(adapter.config.get("lora_r", 16)))
            inputs.append(
                ArtifactInput(
                    kind="adapter",
                    name=adapter.name,
                    hash=adapter.content_hash,
                    uri=str(Path(adapter_dir).resolve()),
                )
            )
        if len(base_ids) != 1:
            raise ConfigError(f"adapters served together must share one base model, got {sorted(base_ids)}")
        base = resolve_base_model(base_ids.pop())
        model_path, name = Path(base.path), release_id or f"{Path(adapters[0]).name}-lora"
        inputs.append(base.as_input())
    else:
        merged = verify_artifact(artifact, kind="merged_model")
        model_path = Path(artifact).resolve()
        name = release_id or f"{merged.name}-{merged.content_hash.removeprefix('sha256:')[:12]}"
        inputs.append(
            ArtifactInput(
                kind="merged_model", name=merged.name, hash=merged.content_hash, uri=str(model_path)
            )
        )
    length = _max_len(model_path, max_model_len)
    config: dict[str, Any] = {
        "model": str(model_path),
        "served-model-name": name,
        "dtype": dtype,
        "max-model-len": length,
        "host": "0.0.0.0",
        "port": port,
        "generation-config": "vllm",
    }
    if lora_modules:
        ranks = [r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= max_rank]
        config.update({"enable-lora": True, "lora-modules": lora_modules, "max-lora-rank": ranks[0]})
    command = ["vllm", "serve", str(model_path), "--config", "vllm_config.yaml"]
    contract = ServingContract(
        served_model_name=name,
        base_url=f"http://127.0.0.1:{port}/v1",
        lora_modules=[m.split("=")[0] for m in lora_modules],
        max_model_len=length,
        dtype=dtype,
    )
    with atomic_folder(Path(output_dir)) as tmp:
        (tmp / "vllm_config.yaml").write_text(
            yaml.safe_dump({k: v for k, v in config.items() if k != "model"}, sort_keys=False)
        )
        (tmp / "vllm_serve.sh").write_text(
            "#!/usr/bin/env bash\n# Serve this release with vLLM's OpenAI-compatible server (GPU host).\n"
            "# The API key is read from $VLLM_API_KEY; never put it in this file.\n"
            f'cd "$(dirname "$0")"\nexec {shlex.join(command)} --api-key "${{VLLM_API_KEY:?set VLLM_API_KEY}}"\n'
        )
        (tmp / "vllm_serve.sh").chmod(0o755)
        (tmp / "serving.json").write_text(contract.model_dump_json(indent=2) + "\n")
        write_manifest(
            tmp,
            Manifest(
                kind="vllm_recipe", name=name, inputs=inputs, config=config, code_version=code_version()
            ),
        )
    return Path(output_dir).resolve()
