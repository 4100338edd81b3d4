"""``report.md``: the report as Markdown (the same tables as the HTML, built by ``tables.py``; no plots)."""

from __future__ import annotations

import logging
from typing import Any

from saro.labels.render import label_markdown
from saro.report import tables as t
from saro.stats import fmt_rate

log = logging.getLogger(__name__)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub Markdown table (pipes escaped, cells on one line)."""

    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell(c) for c in row) + " |" for row in rows
    ]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the same content as the HTML, without plots."""
    lines = [f"# saro report: {report['title']}", "", t.judge_measures_text(report), "", t.INTRO]
    if report["redacted"]:
        lines.append("Harmful prompts and completions are redacted (`saro report --show-unsafe` shows them).")
    lines += ["", *_primary(report), *_generalization(report), *_recovery(report)]
    lines += ["## Summary", "", *md_table(t.SUMMARY_HEADER, t.summary_rows(report)), ""]
    if t.templates_text(report):
        lines += [t.templates_text(report), ""]
    lines += _paired(report) + _quality(report) + _judges(report) + _suites(report)
    lines += ["## Contamination", "", t.contamination_text(report["contamination"]), ""]
    ex = t.contamination_rows(report["contamination"])
    if ex:
        lines += [*md_table(t.CONTAMINATION_HEADER, ex), ""]
    ov = report["analysis"].get("overlap")
    if ov or report["analysis"].get("plots"):
        lines += ["## Embedding overlap", ""]
        lines += md_table(["measure", "value"], [[k, v] for k, v in t.flatten_scalars(ov or {})])
        # plot paths are relative to the run folder; report.md is in its report/ folder
        lines += [f"![{p}](../{p})" for p in report["analysis"]["plots"]] + [""]
    data = t.data_lines(report)
    if data:
        lines += ["## Data", "", *(f"- {x}" for x in data), ""]
    lines += label_markdown(report.get("labels"), md_table)
    lines += _examples(report)
    lines += ["", "## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in report["definitions"].items()]
    lines += ["", f"Stage wall times (s): {report['run'].get('stage_seconds')}", ""]
    return "\n".join(lines)


def _primary(report: dict[str, Any]) -> list[str]:
    rows = t.primary_rows(report)
    if not rows:
        return []
    return ["## Primary measures", "", t.PRIMARY_NOTE, "", *md_table(t.PRIMARY_HEADER, rows), ""]


def _generalization(report: dict[str, Any]) -> list[str]:
    rows = t.generalization_rows(report)
    if not rows:
        return []
    return ["## Generalization", "", t.GENERALIZATION_NOTE, "", *md_table(t.GENERALIZATION_HEADER, rows), ""]


def _recovery(report: dict[str, Any]) -> list[str]:
    rows = t.recovery_rows(report)
    if not rows:
        return []
    return [
        "## Recovery from a drifting start",
        "",
        t.RECOVERY_NOTE,
        "",
        *md_table(t.RECOVERY_HEADER, rows),
        "",
    ]


def _paired(report: dict[str, Any]) -> list[str]:
    rows = t.paired_rows(report)
    if not rows:
        return []
    return ["## Paired comparisons", "", t.PAIRED_NOTE, "", *md_table(t.PAIRED_HEADER, rows), ""]


def _quality(report: dict[str, Any]) -> list[str]:
    out = ["## Reasoning and output quality", "", *md_table(t.QUALITY_HEADER, t.quality_rows(report)), ""]
    out += [f"- n/a {r}" for r in t.na_reasons(report)]
    return [*out, ""] if t.na_reasons(report) else out


def _judges(report: dict[str, Any]) -> list[str]:
    lines = ["## Judges", "", *md_table(t.JUDGE_HEADER, t.judge_rows(report))]
    ag = t.agreement_rows(report["agreement"])
    if ag:
        lines += ["", "Agreement on harmful prompts (attack success vs not):", ""]
        lines += md_table(t.AGREEMENT_HEADER, ag)
    if len(report["judges"]) > 1:
        lines += ["", "ASR as seen by each judge:", "", *md_table(*t.judge_by_model(report))]
    return [*lines, ""]


def _suites(report: dict[str, Any]) -> list[str]:
    lines = ["## Per suite", ""]
    for model, m in report["metrics"].items():
        lines += [
            f"### {model} (`{report['models'].get(model)}`)",
            "",
            *md_table(t.SUITE_HEADER, t.suite_rows(m)),
        ]
        h = report["summary"][model]
        attacks = {k: v for k, v in (h.get("asr_by_attack") or {}).items() if k != "none"}
        if attacks:
            lines += [
                "",
                "ASR by attack: " + ", ".join(f"{k} {fmt_rate(v)}" for k, v in sorted(attacks.items())),
            ]
        if h.get("asr_jailbreak_train") or h.get("asr_jailbreak_heldout"):
            lines.append(
                f"ASR by attack split: train {fmt_rate(h.get('asr_jailbreak_train'))}, "
                f"held-out {fmt_rate(h.get('asr_jailbreak_heldout'))}"
            )
        for sname, s in m["suites"].items():
            if "by_xstest_type" in s:
                lines.append(
                    f"{sname} refusal by type: "
                    + ", ".join(f"{k} {fmt_rate(v)}" for k, v in s["by_xstest_type"].items())
                )
        if h.get("lm_eval"):
            lines.append("lm-eval: " + t.lm_text(h["lm_eval"]))
        lines.append("")
    return lines


def _examples(report: dict[str, Any]) -> list[str]:
    lines = ["## Examples", ""]
    for model, rows in report["examples"].items():
        for e in rows:
            lines.append(f"- **{model}** · {e['suite']} · {e['kind']} · judge: {e['label']}")
            lines.append(f"  - prompt: {_one_line(e['prompt'])}")
            lines.append(f"  - completion: {_one_line(e['completion'])}")
    return lines
