"""Clinician review enforced where results leave the server, over stdio and in process: the stdio launch is a
pipeline caller unless its config says otherwise; a pipeline caller is refused every tool that returns model
text, a tool added later included, and MCP methods outside its list; it gets the approved text after review.
Unknown roles stop the server at start with one line. (HTTP and REST: tests/skills/test_mcp_http.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import (
    make_reviewer,
    reviewer_key,
    start_server_refused,
    write_server_config,
    write_workflow_config,
)

ROOT = Path(__file__).resolve().parents[2]
CASE = {"case_id": "s-1", "age_months": 18, "observations": "Not yet observed: says three words."}


def _config(folder: Path, merged: Path, **values: Any) -> Path:
    return write_server_config(
        folder / "server.yaml",
        reasoner=str(merged),
        embedder="embedded:all-minilm-l6-v2",
        backends=["local"],
        workflow=str(write_workflow_config(folder)),
        **values,
    )


def test_default_stdio_launch_is_a_pipeline_caller_and_gets_only_reviewed_text(
    merged_tiny: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    """Over stdio with no stdio_caller: pipeline. reason/screen refused, prompts/list refused; a submitted case
    is released to it once a clinician approves, as the text the clinician approved."""
    from hai_tools.workflow import ReviewService
    from hai_tools.workflow.service import load_workflow_config

    config = _config(tmp_path, merged_tiny, stdio_caller=None)
    params = StdioServerParameters(
        command=sys.executable, args=[str(ROOT / "mcp_server.py"), "--config", str(config)], env=server_env
    )

    async def scenario() -> dict[str, Any]:
        async with Client(params, read_timeout_seconds=300) as client:
            out: dict[str, Any] = {"names": sorted(t.name for t in (await client.list_tools()).tools)}
            for tool, args in (
                (
                    "reason",
                    {
                        "question": "Fever and rash at 3 years?",
                        "context": ["CDC: measles presents with fever and rash."],
                    },
                ),
                ("screen", CASE),
            ):
                with pytest.raises(Exception, match=r"ReviewRequired: caller stdio \(pipeline\)") as refused:
                    await client.call_tool(tool, args)
                out.setdefault("refused", []).append(str(refused.value))
            with pytest.raises(Exception, match="Forbidden: prompts/list is not open to pipeline callers"):
                await client.list_prompts()
            handle = (await client.call_tool("submit_for_review", CASE)).structured_content
            out["handle"] = handle
            workflow = load_workflow_config(tmp_path / "workflow.yaml")
            key = reviewer_key(make_reviewer(tmp_path, "dr-stdio", "pediatrician"))
            service = ReviewService(workflow)
            pending = await service.show(handle["review_id"])
            out["model_text"] = pending["proposal"]["answer_text"]
            await service.decide(handle["review_id"], {"action": "approve", "reviewer_id": "dr-stdio"}, key)
            out["result"] = await client.call_tool("get_reviewed_result", {"review_id": handle["review_id"]})
            return out

    out = asyncio.run(scenario())
    assert out["names"] == ["embed", "get_reviewed_result", "submit_for_review"]
    assert len(out["refused"]) == 2
    assert out["handle"]["submitted_by"] == {"id": "stdio", "role": "pipeline"}
    result = out["result"].structured_content
    assert result["status"] == "released" and result["text"] == out["model_text"] and out["model_text"]
    assert result["statement"]["decision"] == "approve" and result["statement"]["reviewer_id"] == "dr-stdio"


def test_a_tool_added_later_is_refused_to_pipeline_callers(merged_tiny: Path, tmp_path: Path) -> None:
    """The check lives at the boundary, not in each tool: a new tool returning model text, registered after
    the server was built, is refused to a pipeline caller and served to a clinician."""
    from skills.config import load_server_config
    from skills.server import Skills, build_server

    def server_as(role: str) -> Any:
        config = _config(tmp_path, merged_tiny, stdio_caller={"id": f"a-{role}", "role": role})
        server = build_server(Skills(load_server_config(config)))

        @server.tool(name="summarise_note")
        def summarise_note(note: str) -> str:
            return f"MODEL TEXT about {note}"

        return server

    async def call(role: str) -> Any:
        async with Client(server_as(role), read_timeout_seconds=120) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            try:
                return listed, await client.call_tool("summarise_note", {"note": "fever"})
            except Exception as exc:  # the boundary's JSON-RPC error
                return listed, exc

    listed, refused = asyncio.run(call("pipeline"))
    assert "summarise_note" not in listed
    assert "ReviewRequired: caller a-pipeline (pipeline)" in str(refused) and "MODEL TEXT" not in str(refused)
    listed, served = asyncio.run(call("clinician"))
    assert "summarise_note" in listed and served.content[0].text == "MODEL TEXT about fever"


@pytest.mark.parametrize(
    ("callers_yaml", "stdio_caller", "message"),
    [
        (
            "callers:\n- {id: bob, role: superuser, token_sha256: " + "a" * 64 + "}\n",
            None,
            "caller bob: role: Input should be 'clinician', 'pipeline' or 'admin'",
        ),
        ("", {"id": "local", "role": "doctor"}, "stdio_caller.role: Input should be 'clinician'"),
    ],
)
def test_an_unknown_role_stops_the_server_at_start(
    tmp_path: Path,
    server_env: dict[str, str],
    callers_yaml: str,
    stdio_caller: Any,
    message: str,
) -> None:
    (tmp_path / "callers.yaml").write_text(callers_yaml)
    config = write_server_config(
        tmp_path / "server.yaml",
        backends=["local"],
        callers=str(tmp_path / "callers.yaml"),
        stdio_caller=stdio_caller,
    )
    last = start_server_refused(config, server_env)
    assert message in last and last.startswith("error: ")


def test_callers_cli_adds_lists_and_revokes_without_printing_tokens_twice(tmp_path: Path) -> None:
    from hai_tools.callers import CallerRegistry

    registry = tmp_path / "callers.yaml"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hai_tools.callers", "--registry", str(registry), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = cli("add", "ward-agent", "--role", "clinician")
    token = added.stdout.strip().splitlines()[-1]
    assert added.returncode == 0 and CallerRegistry(registry).resolve(token) is not None
    assert token not in registry.read_text() and oct(registry.stat().st_mode)[-3:] == "600"
    listing = cli("list")
    assert "ward-agent\tclinician\tactive" in listing.stdout and token not in listing.stdout
    assert cli("revoke", "ward-agent").returncode == 0
    assert CallerRegistry(registry).resolve(token) is None
    refused = cli("add", "x", "--role", "root")
    assert refused.returncode == 2 and "invalid choice: 'root'" in refused.stderr
    missing = cli("revoke", "nobody")
    assert missing.returncode == 2 and "no caller 'nobody'" in missing.stderr.strip().splitlines()[-1]
