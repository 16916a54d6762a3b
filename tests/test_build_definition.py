"""One definition of the build: the model-build workflow runs only Makefile targets that exist (so it and
`make demo` cannot drift), and a refused release fails the workflow's build while `make demo` reports it."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_every_workflow_command_is_a_makefile_target() -> None:
    targets = _targets()
    runs = []
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            runs += [step["run"] for step in job["steps"] if "run" in step]
    assert runs
    for run in runs:
        for line in filter(None, (x.strip() for x in run.splitlines())):
            words = shlex.split(line)
            assert words[0] == "make", f"workflow runs {line!r}: only make targets may run there"
            named = [w for w in words[1:] if "=" not in w]
            assert named and set(named) <= targets, f"{line!r}: unknown target(s) {set(named) - targets}"
    demo = re.search(r"^demo:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert demo is not None
    workflow_build = {w for run in runs for w in shlex.split(run) if w.startswith("demo-")}
    assert workflow_build == set(demo.group(1).split()), "the workflow must build what make demo builds"
    # a release build runs the whole suite, the checks marked `full` included, not CI's quick mode
    assert "make test-full" in runs and "make test" not in runs


def test_a_refused_release_fails_the_workflow_build_but_not_the_demo(tmp_path: Path) -> None:
    """demo-release on a report the lenient gate refuses: `make` exits 0 and says so; with
    REQUIRE_RELEASE=1 (the workflow) it exits 2, make's code for a failed recipe. Dry-run on the shell recipe, with the gate stubbed
    by `false` through PY (mock: the gate's own exits are tested in tests/evals/test_gate_evidence.py)."""
    stub = tmp_path / "py"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    common = ["make", "-s", "--no-print-directory", "-o", "install", f"PY={stub}", f"OUT={tmp_path / 'out'}"]
    demo = subprocess.run([*common, "demo-release"], cwd=ROOT, capture_output=True, text=True)
    assert demo.returncode == 0 and "the demo adapter is not released" in demo.stdout
    build = subprocess.run(
        [*common, "demo-release", "REQUIRE_RELEASE=1"], cwd=ROOT, capture_output=True, text=True
    )
    assert build.returncode == 2 and "the demo adapter is not released" in build.stdout
    assert not (tmp_path / "out" / "releases").exists()


def test_a_failed_guard_gate_stops_the_demo(tmp_path: Path) -> None:
    """demo-eval with `evals guard` refusing (its gate failed): make stops with exit 2 and says so, for the demo and
    the workflow alike; every other step succeeds. PY is a stub that fails only the guard's gate (mock: the gate's
    own exits are tested in tests/test_guard.py)."""
    stub = tmp_path / "py"
    stub.write_text(
        '#!/bin/sh\ncase "$*" in *"evals guard"*) echo "guard gate: refused"; exit 1;; esac\nexit 0\n'
    )
    stub.chmod(0o755)
    common = ["make", "-s", "--no-print-directory", "-o", "install", f"PY={stub}", f"OUT={tmp_path / 'out'}"]
    done = subprocess.run([*common, "demo-eval"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "guard gate: FAILED: make demo stops here" in done.stdout
