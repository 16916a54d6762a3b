"""The TypeScript client and the React hook `useMedGemmaRadiology` (clients/typescript), tested with node's own
test runner against the real server this test starts (`mcp_server.py --http`: the tiny merged reasoner for
screening, the tiny image-text model for radiology). The hook renders in react-dom on happy-dom's DOM.
`make node-env` installs and builds the package (make test does it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, http_server, make_callers, tiny_server_config
from tests.radiology.test_prepare import draw, write_dicom

PACKAGE = REPO / "clients" / "typescript"


@pytest.fixture(scope="module")
def server(
    merged_tiny: Path, tiny_vlm: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    import pydicom

    folder = tmp_path_factory.mktemp("ts-client")
    tokens = make_callers(folder / "callers.yaml", **{"ts-clinician": "clinician", "ts-bot": "pipeline"})
    draw(folder / "hand.png", 2)
    write_dicom(folder / "hand.dcm", 3)
    burned = pydicom.dcmread(folder / "hand.dcm")
    burned.BurnedInAnnotation = "YES"
    burned.save_as(folder / "burned.dcm")
    from tests.conftest import write_workflow_config

    config = tiny_server_config(
        folder / "server.yaml",
        merged_tiny,
        release=None,
        callers=str(folder / "callers.yaml"),
        workflow=str(write_workflow_config(folder)),
        radiology={"model": str(tiny_vlm)},
    )
    with http_server(config, folder / "server.log", server_env, tokens["ts-clinician"]) as base:
        yield {
            "HAI_URL": base,
            "HAI_CLINICIAN_TOKEN": tokens["ts-clinician"],
            "HAI_PIPELINE_TOKEN": tokens["ts-bot"],
            "HAI_PNG": str(folder / "hand.png"),
            "HAI_DICOM": str(folder / "hand.dcm"),
            "HAI_BURNED": str(folder / "burned.dcm"),
        }


def test_the_typescript_client_and_hook_pass_their_node_tests(server: dict[str, str]) -> None:
    built = PACKAGE / "dist" / "test"
    assert built.is_dir(), "clients/typescript is not built: `make node-env` (make test does it)"
    done = subprocess.run(
        ["node", "--test", "--test-reporter=spec", *sorted(str(p) for p in built.glob("*.test.js"))],
        cwd=PACKAGE,
        env={**os.environ, **server},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-2000:])
    assert "# fail 0" in done.stdout or "ℹ fail 0" in done.stdout, done.stdout[-2000:]
    assert "ℹ pass 8" in done.stdout or "# pass 8" in done.stdout, done.stdout[-2000:]
