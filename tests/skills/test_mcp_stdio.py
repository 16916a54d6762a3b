"""The MCP server over stdio, driven by the SDK's own client: every tool end to end on real models (the tiny
merged reasoner, the packaged MiniLM embedder), resources, typed errors, a concurrent burst, and the audit log."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import start_server_refused, write_server_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stdio_params(
    merged_tiny: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> StdioServerParameters:
    config = write_server_config(
        tmp_path_factory.mktemp("mcp") / "server.yaml",
        release=str(merged_tiny),
        reasoner=str(merged_tiny),
        embedder="embedded:all-minilm-l6-v2",
        backends=["local"],
    )
    return StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "mcp_server.py"), "--config", str(config)],
        env=server_env,
        cwd=str(ROOT),
    )


def _run(params: StdioServerParameters, body: Any) -> Any:
    async def go() -> Any:
        async with Client(params, read_timeout_seconds=300) as client:
            return await body(client)

    return asyncio.run(go())


def test_every_tool_and_resource_end_to_end(
    stdio_params: StdioServerParameters, merged_tiny: Path, server_env: dict[str, str]
) -> None:
    progress: list[float] = []

    async def body(client: Client) -> dict[str, Any]:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"embed", "reason", "screen", "submit_for_review", "get_reviewed_result"}
        writes = {n for n, t in tools.items() if not (t.annotations and t.annotations.read_only_hint)}
        assert writes == {"submit_for_review"}
        assert all(t.output_schema for t in tools.values())

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        out = {
            "embed": await client.call_tool(
                "embed", {"texts": ["fever and rash", "walks alone at 12 months"]}
            ),
            "reason": await client.call_tool(
                "reason",
                {
                    "question": "A 24-month-old says no words and does not point. Which red flags apply?",
                    "context": ["CDC: by 24 months, says at least two words together."],
                    "max_new_tokens": 8,
                },
                progress_callback=on_progress,
            ),
            "screen": await client.call_tool(
                "screen",
                {
                    "case_id": "case-1",
                    "age_months": 18,
                    "observations": "Not yet observed: says three words.",
                },
            ),
            "abstain": await client.call_tool(
                "reason", {"question": "How much ibuprofen should I give my son?"}
            ),
            "card": await client.read_resource("hai://release/model-card"),
            "manifest": await client.read_resource("hai://release/manifest"),
        }
        return out

    out = _run(stdio_params, body)
    embed = out["embed"].structured_content
    assert not out["embed"].is_error and embed["backend"] == "local" and embed["dimension"] == 384
    assert len(embed["vectors"]) == 2 and embed["audit_id"]
    reason = out["reason"].structured_content
    assert reason["requires_clinician_review"] is True and "Clinical decision support" in reason["disclaimer"]
    assert reason["backend"] == "local" and reason["model"]["adapter"] == "tiny-lora"
    assert reason["model"]["manifest_hash"].startswith("sha256:") and reason["answer"]
    assert reason["model"]["release"] == "tiny-lora"
    assert progress and progress[-1] == 2
    screen = out["screen"].structured_content
    assert screen["case_id"] == "case-1" and screen["requires_clinician_review"] is True
    assert screen["label"] in ("refer", "monitor", "on-track") and "raw_answer" not in screen
    assert abs(sum(screen["probabilities"].values()) - 1) < 1e-4
    abstain = out["abstain"].structured_content
    assert abstain["abstained"] is True and abstain["answer"] is None and abstain["backend"] is None
    # the release's own card and manifest, as stored
    assert out["manifest"].contents[0].text == (merged_tiny / "manifest.json").read_text()
    assert out["card"].contents[0].text == (merged_tiny / "README.md").read_text()
    assert "The adapter `tiny-lora` (sha256:" in out["card"].contents[0].text

    audit = [json.loads(line) for line in Path(server_env["HAI_AUDIT_LOG"]).read_text().splitlines()]
    assert {"embed", "reason", "screen"} <= {entry["tool"] for entry in audit}
    raw = Path(server_env["HAI_AUDIT_LOG"]).read_text()
    assert "ibuprofen" not in raw and "walks alone" not in raw  # hashes only, never patient text
    assert all(entry["input_hash"].startswith("hmac-sha256:") for entry in audit)
    from hai_tools.audit import audit_key, verify_audit_log

    log = Path(server_env["HAI_AUDIT_LOG"])
    assert verify_audit_log(log, audit_key(log))[0] == len(audit)  # one chain across server processes


def test_bad_input_gets_typed_errors_and_the_server_keeps_serving(
    stdio_params: StdioServerParameters,
) -> None:
    bad_calls = [
        ("embed", {"texts": ["x"] * 65}),
        ("embed", {"texts": ["x" * 5000]}),
        ("embed", {"texts": "not a list"}),
        ("embed", {"texts": [""]}),
        ("screen", {"case_id": "c", "age_months": -3, "observations": "walks"}),
        ("screen", {"case_id": "c", "age_months": 9999, "observations": "walks"}),
        ("reason", {"question": ""}),
        ("reason", {"question": "A 2-year-old with fever?", "adapter": "no-such-adapter"}),
        ("no_such_tool", {}),
        ("screen", {"case_id": "c", "age_months": True, "observations": "walks"}),
        ("reason", {"question": "A 2-year-old with fever?", "max_new_tokens": True}),
        ("reason", {"question": "A 2-year-old with fever?", "adapter": "no-such-adapter"}),
        ("reason", {"question": "A 2-year-old with fever?", "adapter": "no-such-adapter"}),
    ]

    async def body(client: Client) -> tuple[list[Any], Any, list[Any]]:
        errors = [await client.call_tool(name, args) for name, args in bad_calls]
        burst = await asyncio.gather(
            *(client.call_tool("embed", {"texts": [f"case note {i}"]}) for i in range(16))
        )
        after = await client.call_tool("embed", {"texts": ["still serving"]})
        answered = await client.call_tool(
            "reason", {"question": "A 2-year-old with fever: what should be considered?", "max_new_tokens": 4}
        )
        assert not answered.is_error and answered.structured_content["backend"] == "local"
        return errors, after, list(burst)

    errors, after, burst = _run(stdio_params, body)
    for (name, _), result in zip(bad_calls, errors, strict=True):
        assert result.is_error, name
    assert "UnknownAdapter" in errors[7].content[0].text
    # JSON true is not a number of months (over MCP as over REST: the tool schema is the contract's)
    assert "must be a number, not a boolean" in errors[9].content[0].text
    assert "must be a number, not a boolean" in errors[10].content[0].text
    assert not after.is_error
    assert all(not r.is_error and r.structured_content["backend"] == "local" for r in burst)


def test_server_refuses_a_release_that_does_not_verify(
    merged_tiny: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    import shutil

    release = tmp_path / "release"
    shutil.copytree(merged_tiny, release)
    weights = bytearray((release / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01
    (release / "model.safetensors").write_bytes(bytes(weights))
    config = write_server_config(
        tmp_path / "server.yaml", release=str(release), reasoner=str(merged_tiny), backends=["local"]
    )
    assert "model.safetensors (hash mismatch)" in start_server_refused(config, server_env)
