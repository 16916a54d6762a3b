"""Runs inside `.venv-agents` (langchain-mcp-adapters, LangGraph, mcp<2 and the client-only install; no torch),
started by tests/skills/test_foreign_clients.py against a real server on loopback. Prints one JSON object.

The agent is an ordinary LangGraph ReAct agent (`create_react_agent`) over the tools that langchain-mcp-adapters
loads from the server. Its chat model is scripted (a tool-calling LLM cannot run here): it asks for the tool
calls a model would ask for and answers with what the tools returned; everything between it and the server
is the real adapter, the real SDK and the real HTTP transport.

    python agent_check.py URL   (tokens in HAI_CLINICIAN_TOKEN and HAI_PIPELINE_TOKEN)
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

from hai_tools_client import AccessDenied, HaiClient, ToolFailed
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_mcp_adapters.client import MultiServerMCPClient
from langgraph.prebuilt import create_react_agent


class ScriptedChatModel(BaseChatModel):
    """Asks for `calls` (one tool call per turn), then answers with the last tool result."""

    calls: list[dict[str, Any]]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **_: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < len(self.calls):
            call = self.calls[done]
            message = AIMessage(content="", tool_calls=[{**call, "id": f"call-{done}", "type": "tool_call"}])
        else:
            message = AIMessage(content=f"tool said: {messages[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=message)])


async def agent(url: str, token: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    client = MultiServerMCPClient(
        {"hai": {"url": url, "transport": "streamable_http", "headers": {"Authorization": f"Bearer {token}"}}}
    )
    tools = await client.get_tools()
    graph = create_react_agent(ScriptedChatModel(calls=calls), tools)
    state = await graph.ainvoke({"messages": [("user", "screen case a1, 30 months: says about 50 words")]})
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    return {
        "tools": sorted(t.name for t in tools),
        "tool_results": [{"name": m.name, "status": m.status, "content": _content(m)} for m in results],
        "answer": str(state["messages"][-1].content)[:2000],
    }


def _content(message: ToolMessage) -> Any:
    artifact = getattr(message, "artifact", None)
    if isinstance(artifact, dict) and artifact.get("structured_content") is not None:
        return artifact["structured_content"]
    return message.content if isinstance(message.content, str) else json.dumps(message.content)[:2000]


async def client_only(url: str, pipeline: str, clinician: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with HaiClient(url, pipeline) as hai:
        out["pipeline_tools"] = sorted(await hai.tools())
        handle = await hai.submit_for_review(
            case_id="c-agent", age_months=24, observations="Walks; few words."
        )
        out["handle"] = handle
        out["pending"] = await hai.reviewed_result(handle["review_id"])
        try:
            await hai.screen(case_id="c-agent", age_months=24, observations="Walks; few words.")
            out["screen_as_pipeline"] = "answered"
        except AccessDenied as exc:
            out["screen_as_pipeline"] = f"AccessDenied {exc.code}: {exc}"
    async with HaiClient(url, clinician) as hai:
        try:
            await hai.screen(case_id="c-agent", age_months=999, observations="x")
            out["bad_age"] = "answered"
        except ToolFailed as exc:
            out["bad_age"] = f"ToolFailed {exc.kind}: {exc.detail}"
    try:
        async with HaiClient(url, "not-a-token") as hai:
            out["wrong_token"] = "connected"
    except AccessDenied as exc:
        out["wrong_token"] = f"AccessDenied {exc.code}"
    return out


async def main(url: str) -> None:
    clinician, pipeline = os.environ["HAI_CLINICIAN_TOKEN"], os.environ["HAI_PIPELINE_TOKEN"]
    screen = {
        "name": "screen",
        "args": {"case_id": "a1", "age_months": 30, "observations": "Says about 50 words."},
    }
    embed = {"name": "embed", "args": {"texts": ["speech delay", "walks at 12 months"]}}
    report = {
        "torch_installed": importlib.util.find_spec("torch") is not None,
        "transformers_installed": importlib.util.find_spec("transformers") is not None,
        "clinician_agent": await agent(url, clinician, [embed, screen]),
        "pipeline_agent": await agent(url, pipeline, [{"name": "submit_for_review", "args": screen["args"]}]),
        "client": await client_only(url, pipeline, clinician),
    }
    cli = subprocess.run(  # the console script, token from the environment
        [sys.executable, "-m", "hai_tools_client", "--url", url, "tools"],
        capture_output=True,
        text=True,
        env={**os.environ, "HAI_MCP_TOKEN": pipeline},
    )
    refused = subprocess.run(
        [sys.executable, "-m", "hai_tools_client", "--url", url, "call", "screen", "--arg", "case_id=x"],
        capture_output=True,
        text=True,
        env={**os.environ, "HAI_MCP_TOKEN": pipeline},
    )
    report["cli"] = {
        "tools": json.loads(cli.stdout) if cli.returncode == 0 else cli.stderr,
        "refused": [refused.returncode, refused.stderr.strip()],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
