"""The evaluation report: metrics with CIs, the bias audit, the red-team safety evidence and the pinned protocol, as
`report.json` plus a self-contained `report.html` (inline SVG plots), with a manifest."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sklearn.metrics import roc_curve

from evals.bias import AttributeAudit
from evals.metrics import MetricCI
from evals.red_team import OUTCOMES, RedTeamResult
from hai_tools.manifest import (
    MANIFEST_NAME,
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    load_manifest,
    write_manifest,
)


class EvalReport(BaseModel):
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    model: dict[str, Any]
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, MetricCI]
    bias_audit: list[AttributeAudit]
    red_team: RedTeamResult | None = Field(None, description="the red-team suite, guard on and off")
    llm_evals: list[Any] = Field(default_factory=list, description="SuiteReport dicts (evals.llm_suite)")
    predictions: list[dict[str, Any]]


def _roc_svg(y: np.ndarray, score: np.ndarray) -> str:
    if len(np.unique(y)) < 2:
        return "<p>ROC undefined: one class only.</p>"
    fpr, tpr, _ = roc_curve(y, score)
    points = " ".join(f"{20 + 260 * x:.1f},{280 - 260 * t:.1f}" for x, t in zip(fpr, tpr, strict=True))
    return (
        '<svg width="300" height="300" role="img" aria-label="ROC curve">'
        '<rect x="20" y="20" width="260" height="260" fill="none" stroke="#999"/>'
        '<line x1="20" y1="280" x2="280" y2="20" stroke="#ccc" stroke-dasharray="4"/>'
        f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
        '<text x="150" y="298" text-anchor="middle" font-size="11">false positive rate</text>'
        '<text x="8" y="150" font-size="11" transform="rotate(-90 8 150)" text-anchor="middle">sensitivity</text>'
        "</svg>"
    )


def _calibration_svg(y: np.ndarray, score: np.ndarray, bins: int = 10) -> str:
    edges = np.linspace(0, 1, bins + 1)
    dots = []
    for b in range(bins):
        mask = (score >= edges[b]) & (score < edges[b + 1] if b < bins - 1 else score <= 1)
        if mask.any():
            x, t = float(score[mask].mean()), float(y[mask].mean())
            dots.append(
                f'<circle cx="{20 + 260 * x:.1f}" cy="{280 - 260 * t:.1f}" r="{2 + min(8, mask.sum() ** 0.5)}"'
                ' fill="#ff7f0e" opacity="0.7"/>'
            )
    return (
        '<svg width="300" height="300" role="img" aria-label="calibration">'
        '<rect x="20" y="20" width="260" height="260" fill="none" stroke="#999"/>'
        '<line x1="20" y1="280" x2="280" y2="20" stroke="#ccc" stroke-dasharray="4"/>'
        + "".join(dots)
        + '<text x="150" y="298" text-anchor="middle" font-size="11">predicted probability</text></svg>'
    )


def _bars_svg(audit: AttributeAudit, metric: str) -> str:
    groups = [
        g
        for g in audit.groups
        if g.sufficient and metric in g.metrics and g.metrics[metric].value is not None
    ]
    if not groups:
        return f"<p>{html.escape(audit.attribute)}: no subgroup large enough for {metric}.</p>"
    height = 30 * len(groups) + 30
    parts = [
        f'<svg width="420" height="{height}" role="img" aria-label="{html.escape(metric)} by {html.escape(audit.attribute)}">'
    ]
    for i, group in enumerate(groups):
        m = group.metrics[metric]
        y = 20 + 30 * i
        parts.append(
            f'<text x="0" y="{y + 12}" font-size="11">{html.escape(group.group)} (n={group.n})</text>'
        )
        parts.append(f'<rect x="130" y="{y}" width="{250 * (m.value or 0):.1f}" height="16" fill="#2ca02c"/>')
        if m.low is not None and m.high is not None:
            parts.append(
                f'<line x1="{130 + 250 * m.low:.1f}" y1="{y + 8}" x2="{130 + 250 * m.high:.1f}" y2="{y + 8}"'
                ' stroke="#000" stroke-width="2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _red_team_html(result: RedTeamResult | None, fmt: Any) -> str:
    if result is None:
        return "<p>not run</p>"
    figures = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td><td>{v.n}</td><td>{html.escape(v.method or '-')}</td></tr>"
        for k, v in result.figures.items()
    )
    outcomes = "".join(
        f"<tr><td>{html.escape(run)}</td>"
        + "".join(f"<td>{counts.get(k, 0)}</td>" for k in OUTCOMES)
        + "</tr>"
        for run, counts in result.outcomes.items()
    )
    heads = "".join(f"<th>{html.escape(k)}</th>" for k in OUTCOMES)
    examples = "".join(
        f"<li>{html.escape(run)}: {html.escape(f['id'])} ({html.escape(f['category'])}, {html.escape(f['language'])}, "
        f"graded {html.escape(str(f['grade']))}): <q>{html.escape(f['answer'])}</q></li>"
        for run, found in result.failures.items()
        for f in found
    )
    return (
        f"<p>Suite {html.escape(result.suite)} ({html.escape(result.suite_hash[:19])}), size <strong>"
        f"{html.escape(result.size)}</strong>, {result.n_requests} requests; guard {html.escape(result.guard)}; "
        f"grading threshold {result.grading_threshold}. Rates: share of the suite's requests answered with "
        "unsafe content (95% bootstrap CI over sources); grader: precision and recall on the suite's labelled "
        "answers (Wilson).</p>"
        f"<table><tr><th>figure</th><th>value [95% CI]</th><th>n</th><th>interval</th></tr>{figures}</table>"
        f"<table><tr><th>run</th>{heads}</tr>{outcomes}</table>"
        f"<h3>Unsafe answers returned (examples)</h3><ul>{examples or '<li>none</li>'}</ul>"
        f"<p>Grader missed: {html.escape(', '.join(result.grader_missed) or 'none')}; false flags: "
        f"{html.escape(', '.join(result.grader_false_flags) or 'none')}.</p>"
    )


def render_html(report: EvalReport, y: np.ndarray, score: np.ndarray) -> str:
    def fmt(m: MetricCI) -> str:
        if m.value is None:
            return f"undefined ({html.escape(m.note or '')})"
        ci = f" [{m.low:.3f}, {m.high:.3f}]" if m.low is not None and m.high is not None else ""
        return f"{m.value:.3f}{ci}"

    def how(m: MetricCI) -> str:
        undefined = f", {m.n_undefined} undefined" if m.n_undefined else ""
        return html.escape(f"{m.method or '-'}; {m.n_used}/{m.n_resamples} resamples{undefined}")

    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td><td>{v.n}</td>"
        f"<td>{v.n_patients if v.n_patients is not None else '-'}</td><td>{how(v)}</td></tr>"
        for k, v in report.metrics.items()
    )
    red_team = _red_team_html(report.red_team, fmt)
    audits = ""
    for audit in report.bias_audit:
        gaps = ", ".join(f"{k} difference {fmt(v)}" for k, v in audit.difference.items()) or "n/a"
        small = (
            f" Too small to report: {', '.join(audit.insufficient_groups)}."
            if audit.insufficient_groups
            else ""
        )
        small += "".join(f" {k} undefined in: {', '.join(g)}." for k, g in audit.undefined.items())
        audits += (
            f"<h3>{html.escape(audit.attribute)}</h3><p>{html.escape(gaps)}; equalized-odds difference "
            f"{audit.equalized_odds_difference if audit.equalized_odds_difference is not None else 'n/a'}.{html.escape(small)}</p>"
            + _bars_svg(audit, "sensitivity")
        )
    suites = ""
    for suite in report.llm_evals:
        lines = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(m['kind']))}</td><td>"
            + (
                f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                if m["mean"] is not None
                else "undefined"
            )
            + f"</td><td>{'<=' if not m['higher_is_better'] else '>='} {m['threshold']}</td>"
            f"<td>{m['pass_rate']:.2f}</td><td>{m['n']}</td></tr>"
            for name, m in suite["summary"].items()
        )
        suites += (
            f"<h3>{html.escape(suite['suite'])} (judge {html.escape(suite['judge'])})</h3><table><tr><th>metric</th>"
            f"<th>kind</th><th>mean [95% CI]</th><th>per-case pass mark</th><th>pass rate</th><th>n</th></tr>{lines}</table>"
        )
    protocol = "".join(
        f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in report.protocol.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>Evaluation report: {html.escape(str(report.model.get("name")))}</h1>
<p><strong>Clinical decision support only: every output requires clinician review.</strong></p>
<p>Dataset {html.escape(str(report.dataset.get("ref")))} ({html.escape(str(report.dataset.get("split")))}, n={len(report.predictions)}), created {report.created_at}.</p>
<h2>Metrics (95% bootstrap CI)</h2><p>Resampling: {html.escape(str(report.protocol.get("resampling", "row")))}.</p>
<table><tr><th>metric</th><th>value [95% CI]</th><th>n</th><th>patients</th><th>interval</th></tr>{rows}</table>
<h2>ROC and calibration (refer vs rest)</h2>{_roc_svg(y, score)}{_calibration_svg(y, score)}
<h2>Bias audit (sensitivity by subgroup, 95% CI)</h2>{audits}
<h2>Red-team suite (guard on and off)</h2>{red_team}
<h2>LLM-eval suites</h2>{suites or "<p>none run</p>"}
<h2>Protocol</h2><ul>{protocol}</ul></body></html>
"""


def model_source(model_id: str) -> tuple[dict[str, Any], ArtifactInput | None]:
    """The report's `model` entry and, when `model_id` is an artifact folder, its manifest as an input."""
    folder = Path(model_id)
    if not (folder / MANIFEST_NAME).exists():
        return {"id": model_id, "name": model_id, "hash": None, "kind": "base_model"}, None
    source = load_manifest(folder)
    entry = {"id": model_id, "name": source.name, "hash": source.content_hash, "kind": source.kind}
    return entry, ArtifactInput(
        kind=source.kind, name=source.name, hash=source.content_hash, uri=str(folder.resolve())
    )


def write_eval_report(
    output_dir: Path,
    report: EvalReport,
    y: np.ndarray,
    score: np.ndarray,
    inputs: list[ArtifactInput],
    metrics: dict[str, Any],
    seconds: float,
) -> Path:
    """report.json, report.html and the eval_report manifest, written atomically."""
    with atomic_folder(output_dir) as tmp:
        (tmp / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
        (tmp / "report.html").write_text(render_html(report, y, score))
        write_manifest(
            tmp,
            Manifest(
                kind="eval_report",
                name=f"{report.model['name']}-{report.dataset['split']}",
                inputs=inputs,
                config=json.loads(json.dumps(report.protocol)),
                code_version=code_version(),
                metrics=metrics,
                timings={"eval_seconds": round(seconds, 1)},
            ),
        )
    return output_dir.resolve()
