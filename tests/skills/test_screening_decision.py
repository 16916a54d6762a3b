"""One decision procedure: the `screen` tool (over stdio, on the local backend) and the screening evaluation
choose the same label with the same probabilities for the same case, on demo test cases and on observations
far outside the training distribution; every answer carries one of the labels."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from tests.conftest import write_server_config

ROOT = Path(__file__).resolve().parents[2]
OUT_OF_DISTRIBUTION = [  # phrased unlike any generated case
    "Walks on tiptoes, lines up toy cars for hours, has never pointed at anything.",
    "Born at 30 weeks; rolls over both ways and sits when propped, babbles a lot.",
    "Family speaks two languages at home; child mixes words from both, understands simple requests.",
]


def test_screen_tool_and_evals_decide_alike(
    merged_tiny: Path, demo_files: dict[str, Path], tmp_path: Path, server_env: dict[str, str]
) -> None:
    from evals.screening import load_reasoner, score_cases
    from hai_tools.demo_data import INSTRUCTION

    records = [json.loads(line) for line in demo_files["test"].read_text().splitlines()[:8]]
    records += [
        {**records[0], "case_id": f"ood-{i}", "observations": text, "label": "monitor"}
        for i, text in enumerate(OUT_OF_DISTRIBUTION)
    ]
    for record in records:  # the evaluation's prompt is the one the tool builds
        record["prompt"] = [
            {
                "role": "user",
                "content": f"{INSTRUCTION}\n\nAge: {record['age_months']} months\n"
                f"Observations: {record['observations']}",
            }
        ]
    config = write_server_config(
        tmp_path / "server.yaml", reasoner=str(merged_tiny), embedder=None, backends=["local"]
    )
    params = StdioServerParameters(
        command=sys.executable, args=[str(ROOT / "mcp_server.py"), "--config", str(config)], env=server_env
    )

    async def screen_all() -> list[dict[str, Any]]:
        async with Client(params, read_timeout_seconds=300) as client:
            results = []
            for r in records:
                args = {
                    "case_id": r["case_id"],
                    "age_months": r["age_months"],
                    "observations": r["observations"],
                }
                results.append((await client.call_tool("screen", args)).structured_content)
            return results

    served = asyncio.run(screen_all())
    tokenizer, model = load_reasoner(str(merged_tiny))
    evaluated = score_cases(model, tokenizer, records)
    for tool, evals in zip(served, evaluated, strict=True):
        assert tool["label"] in ("refer", "monitor", "on-track") and not tool["abstained"]
        assert tool["label"] == evals["predicted"], tool["case_id"]
        for label, p in evals["probabilities"].items():
            assert abs(tool["probabilities"][label] - p) < 1e-4
