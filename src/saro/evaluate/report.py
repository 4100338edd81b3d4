"""The ``report`` stage: ``report.json`` (stable schema), ``report.md`` and the summary table.

Examples of completions are redacted by default: a harmful prompt's completion is only shown with
``report.show_unsafe: true`` (or ``saro report --show-unsafe``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saro.pipeline import StageContext
from saro.records import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def run(ctx: StageContext) -> dict[str, Any]:
    report = build_report(ctx.run.root, show_unsafe=ctx.config.show_unsafe, examples=ctx.config.examples)
    paths = write_report(ctx.run.root, report, ctx.config.formats)
    return {"paths": {k: str(v) for k, v in paths.items()}, "summary": report["summary"]}


def headline(model_metrics: dict[str, Any]) -> dict[str, Any]:
    """One row per model: ASR on plain and jailbreak harmful suites, over-refusal, accuracy, tokens."""
    suites = model_metrics["suites"]

    def pooled(kind_filter, key: str) -> dict[str, Any] | None:
        parts = [s[key] for name, s in suites.items() if key in s and kind_filter(name, s) and s[key]["n"]]
        if not parts:
            return None
        n = sum(p["n"] for p in parts)
        c = sum(p["count"] for p in parts)
        if len(parts) == 1:
            return parts[0]
        return {"rate": round(c / n, 4), "n": n, "count": c, "ci95": [None, None]}

    def is_jb(name: str, s: dict[str, Any]) -> bool:
        return "asr_by_attack" in s and any(k != "none" for k in s["asr_by_attack"])

    return {
        "asr_harmful": pooled(lambda n, s: s["type"] == "harmful" and not is_jb(n, s), "asr"),
        "asr_jailbreak": pooled(lambda n, s: s["type"] == "harmful" and is_jb(n, s), "asr"),
        "over_refusal": pooled(lambda n, s: s["type"] == "overrefusal", "refusal"),
        "accuracy": pooled(lambda n, s: s["type"] == "capability", "accuracy"),
        "reasoning_tokens": model_metrics["tokens"]["reasoning_mean"],
        "answer_tokens": model_metrics["tokens"]["answer_mean"],
        "unfinished": None,
    }


def build_report(run_dir: Path, show_unsafe: bool = False, examples: int = 3) -> dict[str, Any]:
    metrics = read_json(run_dir / "eval" / "metrics.json")
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    summary = {name: headline(m) for name, m in metrics["models"].items()}
    report = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "recipe": manifest.get("recipe"),
            "git_commit": manifest.get("git_commit"),
            "versions": manifest.get("versions"),
            "seed": manifest.get("seed"),
            "stage_seconds": {k: v.get("seconds") for k, v in manifest.get("stages", {}).items()},
        },
        "primary_judge": metrics["primary_judge"],
        "judges": metrics["judges"],
        "models": metrics["sources"],
        "summary": summary,
        "metrics": metrics["models"],
        "data": _data_stats(run_dir),
        "redacted": not show_unsafe,
    }
    return report


def _data_stats(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage, fname in (("prompts", "stats.json"), ("synth_rw", "stats.json"), ("synth_srpo", "stats.json")):
        p = run_dir / stage / fname
        if p.exists():
            out[stage] = read_json(p)
    return out


def _fmt_rate(r: dict[str, Any] | None) -> str:
    if not r or r.get("rate") is None:
        return "–"
    s = f"{100 * r['rate']:.1f}%"
    lo, hi = r.get("ci95") or [None, None]
    if lo is not None and hi is not None:
        s += f" [{100 * lo:.0f}–{100 * hi:.0f}]"
    return s + f" (n={r['n']})"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, h in report["summary"].items():
        rows.append(
            [
                name,
                _fmt_rate(h["asr_harmful"]),
                _fmt_rate(h["asr_jailbreak"]),
                _fmt_rate(h["over_refusal"]),
                _fmt_rate(h["accuracy"]),
                f"{h['reasoning_tokens']:.0f}",
                f"{h['answer_tokens']:.0f}",
            ]
        )
    return rows


SUMMARY_HEADER = [
    "model",
    "ASR harmful",
    "ASR jailbreak",
    "over-refusal",
    "accuracy",
    "reasoning tok",
    "answer tok",
]


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# saro report: {report['run'].get('recipe')}", ""]
    lines.append(
        f"Judge: `{report['primary_judge']}` on the final answer. Rates with bootstrap 95% intervals and n. "
        "ASR = share of harmful prompts not refused (lower is better); over-refusal = share of benign/borderline "
        "prompts refused (lower is better)."
    )
    lines += ["", "| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    for row in summary_rows(report):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Per suite", ""]
    for model, m in report["metrics"].items():
        lines.append(f"### {model}")
        lines.append("")
        lines.append(
            "| suite | type | n | ASR | refusal | accuracy | unfinished | reasoning tok (mean/p95) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for sname, s in m["suites"].items():
            t = s["tokens"]
            lines.append(
                f"| {sname} | {s['type']} | {s['n']} | {_fmt_rate(s.get('asr'))} | {_fmt_rate(s.get('refusal'))} | "
                f"{_fmt_rate(s.get('accuracy'))} | {_fmt_rate(s.get('unfinished'))} | "
                f"{t['reasoning_mean']:.0f}/{t['reasoning_p95']:.0f} |"
            )
        jb = {
            k: v for s in m["suites"].values() for k, v in s.get("asr_by_attack", {}).items() if k != "none"
        }
        if jb:
            lines += ["", "ASR by attack: " + ", ".join(f"{k} {_fmt_rate(v)}" for k, v in sorted(jb.items()))]
        lines.append("")
    rw = report["data"].get("synth_rw")
    if rw:
        srs = rw.get("shortest_rejection_sampling", {})
        lines += [
            "## Data",
            "",
            f"- RIT-D: {rw.get('accepted')} of {rw.get('prompts')} prompts accepted; rejection reasons "
            f"{rw.get('rejection_reasons')}; Shortest Rejection Sampling (k={srs.get('k')}) token reduction "
            f"{100 * srs.get('token_reduction', 0):.1f}% vs a random passing candidate.",
        ]
    srpo = report["data"].get("synth_srpo")
    if srpo:
        lines.append(
            f"- SRPO pairs: {srpo.get('by_type')} (dropped: {srpo.get('dropped') or 'none'}; "
            f"length check: {srpo.get('length')})"
        )
    lines += ["", f"Stage wall times (s): {report['run'].get('stage_seconds')}", ""]
    return "\n".join(lines)


def write_report(run_dir: Path, report: dict[str, Any], formats: list[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if "json" in formats:
        paths["json"] = run_dir / "report.json"
        atomic_write_json(paths["json"], report)
    if "md" in formats:
        paths["md"] = run_dir / "report.md"
        atomic_write_text(paths["md"], render_markdown(report))
    if "html" in formats:
        try:
            from saro.evaluate.html import render_html
        except ImportError:
            log.info("HTML report not available in this version; wrote json/md")
        else:
            paths["html"] = run_dir / "report.html"
            atomic_write_text(paths["html"], render_html(report, run_dir))
    return paths
