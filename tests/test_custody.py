"""Chain of custody of a release: a board verifies it from the release folder and the public key alone, and
every byte that decides what is served is under the signature. The tamper matrix damages one thing at a time
and asserts that `governance verify` and the MCP server both refuse, naming what changed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from governance.__main__ import main
from hai_tools.manifest import Manifest
from tests.conftest import start_server_refused, write_server_config

ROOT = Path(__file__).resolve().parents[1]


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None], reseal: bool = False) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    if reseal:  # what an attacker who knows the format does: recompute content_hash after the edit
        manifest = Manifest.model_validate(data)
        data["content_hash"] = manifest.fields_hash()
    path.write_text(json.dumps(data, indent=2))


def _weight_byte(release: Path) -> None:
    _flip_last_byte(release / "models" / "reasoner" / "model.safetensors")


def _chain_document(release: Path) -> None:
    adapter = next(
        p
        for p in (release / "chain").glob("*.json")
        if json.loads(p.read_text())["document"].get("kind") == "adapter"
    )
    data = json.loads(adapter.read_text())
    data["document"]["extra"]["vllm_servable_unmerged"] = False
    adapter.write_text(json.dumps(data))


TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "weight byte": (_weight_byte, "models/reasoner/model.safetensors (hash mismatch)"),
    "release inputs": (
        lambda r: _edit_manifest(r, lambda m: m["inputs"][1].update(name="another-report")),
        "manifest.json was edited after it was written",
    ),
    "release config": (
        lambda r: _edit_manifest(r, lambda m: m["config"].update(policy="gate_lenient.yaml")),
        "manifest.json was edited after it was written",
    ),
    "release extra": (
        lambda r: _edit_manifest(r, lambda m: m["extra"].update(clinician_review_required=False)),
        "manifest.json was edited after it was written",
    ),
    "release kind": (
        lambda r: _edit_manifest(r, lambda m: m.update(kind="merged_model")),
        "manifest.json was edited after it was written",
    ),
    "release extra, resealed": (
        lambda r: _edit_manifest(r, lambda m: m["extra"].update(gate_passed=False), reseal=True),
        "release signature does not verify",
    ),
    "served model's manifest extra": (
        lambda r: _edit_manifest(
            r / "models" / "reasoner", lambda m: m["extra"].update(note="x"), reseal=True
        ),
        "models/reasoner/manifest.json (hash mismatch)",
    ),
    "card": (lambda r: _flip_last_byte(r / "README.md"), "README.md (hash mismatch)"),
    "eval report": (lambda r: _flip_last_byte(r / "eval_report.json"), "eval_report.json (hash mismatch)"),
    "gate result": (lambda r: _flip_last_byte(r / "gate.json"), "gate.json (hash mismatch)"),
    "lineage": (lambda r: _flip_last_byte(r / "lineage.json"), "lineage.json (hash mismatch)"),
    "chain manifest of the adapter": (_chain_document, "(hash mismatch)"),
    "embedder file": (
        lambda r: _flip_last_byte(r / "models" / "embedder" / "config.json"),
        "models/embedder/config.json (hash mismatch)",
    ),
}


@pytest.mark.parametrize("what", list(TAMPERS))
def test_tamper_matrix_release(
    what: str,
    signed: dict[str, Path],
    tmp_path: Path,
    server_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    damage, message = TAMPERS[what]
    release = tmp_path / "release"
    shutil.copytree(signed["release"], release)
    damage(release)
    capsys.readouterr()
    assert main(["verify", str(release), "--public_key", str(signed["pub"])]) == 2
    assert message in capsys.readouterr().err
    config = write_server_config(
        tmp_path / "server.yaml",
        release=str(release),
        release_public_key=str(signed["pub"]),
        backends=["local"],
    )
    assert message in start_server_refused(config, server_env)


def test_a_board_verifies_a_release_on_another_machine(signed: dict[str, Path], tmp_path: Path) -> None:
    """A copy of the release folder, verified by a process with an empty HAI_HOME (no registry, no cached
    models) in another folder: nothing outside the release and the public key is read. The release's manifest
    names no path of the build machine."""
    release = tmp_path / "elsewhere" / "release"
    shutil.copytree(signed["release"], release)
    shutil.copy(signed["pub"], tmp_path / "board.pub")
    env = {**os.environ, "HAI_HOME": str(tmp_path / "empty-home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "governance",
            "verify",
            str(release),
            "--public_key",
            str(tmp_path / "board.pub"),
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert (
        proc.stdout.startswith("ok release tiny-1 sha256:") and "embedder, reasoner included" in proc.stdout
    )
    assert not list((tmp_path / "empty-home").glob("registry*"))
    text = (release / "manifest.json").read_text()
    assert str(signed["base"]) not in text and "/tmp" not in text


def test_the_server_serves_exactly_the_release(
    signed: dict[str, Path], merged_tiny: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    """Release mode: the models come from the release folder, results name the release and its manifest hash;
    a config that names a second model, or a signed release without a trusted key, is refused at start."""
    from mcp import Client, StdioServerParameters

    from governance.release import verify_release

    verified = verify_release(signed["release"], signed["pub"])
    config = write_server_config(
        tmp_path / "server.yaml",
        release=str(signed["release"]),
        release_public_key=str(signed["pub"]),
        backends=["local"],
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "mcp_server.py"), "--config", str(config)],
        env=server_env,
        cwd=str(ROOT),
    )

    async def go() -> tuple[Any, Any]:
        async with Client(params, read_timeout_seconds=300) as client:
            embedded = await client.call_tool("embed", {"texts": ["speech delay"]})
            screened = await client.call_tool(
                "screen", {"case_id": "c-1", "age_months": 18, "observations": "No words; does not point."}
            )
            return embedded.structured_content, screened.structured_content

    embedded, screened = asyncio.run(go())
    assert screened is not None and embedded is not None
    assert screened["model"]["release"] == "tiny-1"
    assert screened["model"]["release_hash"] == verified.manifest_hash
    assert screened["model"]["manifest_hash"] == verified.serving["reasoner"]["hash"]
    assert (
        embedded["model"]["release"] == "tiny-1"
        and embedded["model"]["release_hash"] == verified.manifest_hash
    )

    second = write_server_config(
        tmp_path / "second.yaml",
        release=str(signed["release"]),
        release_public_key=str(signed["pub"]),
        reasoner=str(merged_tiny),
        backends=["local"],
    )
    assert "decides the models served; remove reasoner" in start_server_refused(second, server_env)
    keyless = write_server_config(
        tmp_path / "keyless.yaml", release=str(signed["release"]), backends=["local"]
    )
    assert "a signed release needs release_public_key" in start_server_refused(keyless, server_env)
    other = write_server_config(
        tmp_path / "other.yaml",
        release=str(signed["release"]),
        release_public_key=str(signed["pub"]),
        backends=["local", "vllm"],
        vllm={"served_model": "some-other-model"},
    )
    assert "serve the release under its id" in start_server_refused(other, server_env)


def test_release_mode_loads_the_edge_models_of_the_release(
    signed: dict[str, Path], merged_tiny: Path, tiny_lm_tflite: Path, tmp_path: Path
) -> None:
    """The TFLite backend in release mode loads the edge export copied into the release (not a folder of the
    config), and its results name the release."""
    from skills.config import load_server_config
    from skills.server import Skills

    policy = tmp_path / "policy.yaml"
    policy.write_text("min_group_size: 3\nundefined_subgroups_fail: false\n")
    args = ["release", str(merged_tiny), "--report", str(signed["report"]), "--policy", str(policy)]
    args += ["--key", str(signed["base"] / "keys" / "release.key"), "--release_id", "edge-1"]
    assert main([*args, "--output_dir", str(tmp_path / "r"), "--export", str(tiny_lm_tflite)]) == 0
    config = write_server_config(
        tmp_path / "server.yaml",
        release=str(tmp_path / "r"),
        release_public_key=str(signed["pub"]),
        backends=["tflite"],
        tflite={"variant": "fp32"},
    )
    skills = Skills(load_server_config(config))
    assert skills.models["edge_reasoner"] == str(tmp_path / "r" / "models" / "edge" / "tflite_causal_lm")
    identity = skills.backends[0].identity("generate")
    assert identity.release == "edge-1" and identity.release_hash == skills.release["hash"]  # type: ignore[index]
    with_dir = write_server_config(
        tmp_path / "dir.yaml",
        release=str(tmp_path / "r"),
        release_public_key=str(signed["pub"]),
        backends=["tflite"],
        tflite={"reasoner_dir": str(tiny_lm_tflite)},
    )
    with pytest.raises(Exception, match=r"remove tflite\.reasoner_dir"):
        Skills(load_server_config(with_dir))
