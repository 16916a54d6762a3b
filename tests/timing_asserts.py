"""Find asserts that compare an elapsed wall-clock time: the suite runs on shared 2-core machines, where such an
assert fails by the machine's load, not by the code. Tests assert ordering instead (events, counters, or a
deadline handed to the code).

An elapsed time is: a name assigned from a difference involving a clock (`time.monotonic()`,
`perf_counter()`, `time.time()`, ... or a name assigned from one), such a difference written in the assert, or a
name or attribute called like one (`took`, `elapsed`, `waited`, `duration`, `latency`, `wall`, `*_elapsed`, ...)
wherever its value came from (a helper's return, a tuple). A clock reading compared with a deadline
(`time.monotonic() < deadline`, a poll's liveness guard) is not an elapsed time.

    python -m tests.timing_asserts [FILE ...]   # default: every test file; exit 1 with one line per finding
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

CLOCKS = {
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "time",
    "time_ns",
    "process_time",
    "thread_time",
}
ELAPSED = re.compile(
    r"^(took|elapsed|waited|duration|latency|wall|spent)(_[a-z0-9]+)?$"
    r"|_(took|elapsed|waited|duration|latency|wall)(_[a-z0-9]+)?$"
)


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    why: str


def _is_clock_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in CLOCKS


def _mentions(node: ast.AST, clocks: set[str]) -> bool:
    """Whether `node` reads a clock: a clock call or a name assigned from one."""
    return any(
        _is_clock_call(sub) or (isinstance(sub, ast.Name) and sub.id in clocks) for sub in ast.walk(node)
    )


def _clock_difference(node: ast.AST, clocks: set[str]) -> bool:
    return any(
        isinstance(sub, ast.BinOp)
        and isinstance(sub.op, ast.Sub)
        and (_mentions(sub.left, clocks) or _mentions(sub.right, clocks))
        for sub in ast.walk(node)
    )


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return [name for element in node.elts for name in _targets(element)]
    return []


def _assignments(tree: ast.AST) -> list[tuple[list[str], ast.AST]]:
    found: list[tuple[list[str], ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            found.append(([n for t in node.targets for n in _targets(t)], node.value))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and node.value is not None:
            found.append((_targets(node.target), node.value))
    return found


def _clock_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names holding a clock reading or anything computed from one, names holding a clock difference)."""
    clocks: set[str] = set()
    elapsed: set[str] = set()
    assignments = _assignments(tree)
    grown = True
    while grown:  # until nothing new: `b = a + 1` after `a = monotonic()`, in any order in the file
        before = len(clocks) + len(elapsed)
        for names, value in assignments:
            if _mentions(value, clocks):
                clocks.update(names)
            if _clock_difference(value, clocks):
                elapsed.update(names)
        grown = len(clocks) + len(elapsed) > before
    return clocks, elapsed


def _elapsed_in(node: ast.AST, clocks: set[str], elapsed: set[str]) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in elapsed:
            return f"'{sub.id}', from a clock"
        if isinstance(sub, ast.Name) and ELAPSED.search(sub.id):
            return f"'{sub.id}', by its name"
        if isinstance(sub, ast.Attribute) and ELAPSED.search(sub.attr):
            return f"'.{sub.attr}', by its name"
    if _clock_difference(node, clocks):
        return f"{ast.unparse(node)}, a clock difference"
    return None


def check_source(path: Path, source: str) -> list[Finding]:
    tree = ast.parse(source, filename=str(path))
    clocks, elapsed = _clock_names(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert):
            continue
        for compare in (sub for sub in ast.walk(node.test) if isinstance(sub, ast.Compare)):
            operands = [compare.left, *compare.comparators]
            reason = next((r for op in operands if (r := _elapsed_in(op, clocks, elapsed))), None)
            if reason:
                shown = ast.unparse(ast.Assert(test=node.test, msg=None))
                findings.append(
                    Finding(path, node.lineno, f"assert compares an elapsed time ({reason}): {shown}")
                )
                break
    return findings


def timing_asserts(paths: list[Path]) -> list[Finding]:
    return [finding for path in paths for finding in check_source(path, path.read_text())]


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    paths = [Path(a) for a in argv] or sorted(here.rglob("*.py"))
    found = timing_asserts(paths)
    for finding in found:
        print(f"{finding.path}:{finding.line}: {finding.why}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
