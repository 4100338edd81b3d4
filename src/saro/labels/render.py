"""The labels section of report.md and report.html (the rows are built once here; each format passes its own
table renderer, so this module depends on neither)."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

from saro.labels.store import LABELS
from saro.stats import fmt_rate

log = logging.getLogger(__name__)

TITLE = "Judge vs human labels"
AGREEMENT_HEADER = [
    "judge",
    "model",
    "group",
    "n",
    "agreement",
    "Cohen's kappa",
    "3-class",
    "3-class kappa",
    "set apart",
]
RATES_HEADER = [
    "model",
    "group",
    "measure",
    "labelled / answers",
    "from labels",
    "judge, same answers",
    "judge, all answers",
    "set apart",
]
MEASURES = {"asr": "attack success", "over_refusal": "over-refusal"}
Table = Callable[[list[str], list[list[str]]], Any]


def _k(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _apart(d: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('labelled_', '').replace('_', ' ')} {v}" for k, v in d.items() if v) or "–"


def summary_text(section: dict[str, Any]) -> str:
    """What was labelled, and the labels that do not count."""
    s = f"{section['labels']} answers labelled by {', '.join(section['labellers']) or 'nobody'} ({section['file']})."
    if section["stale"]:
        s += f" {section['stale']} labels are stale (the answer changed since it was labelled) and are not used: relabel them with `saro label RUN`."
    if section["orphaned"]:
        s += f" {section['orphaned']} labels are for answers no longer in the run and are not used."
    if not section["judges"]:
        s += " The run has no refusal judge to compare with."
    return s


def rates_caption(section: dict[str, Any]) -> str:
    judge = section["rates"][0].get("judge") if section["rates"] else None
    return "Rates recomputed from the labels (labelled subsample)" + (
        f", beside the {judge} judge's" if judge else ""
    )


def agreement_rows(section: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["judge"],
            r["model"],
            r["group"],
            str(r["n"]),
            fmt_rate(r["agreement"]),
            _k(r["kappa"]),
            fmt_rate(r["agreement_3class"]),
            _k(r["kappa_3class"]),
            _apart(r["set_apart"]),
        ]
        for r in section["agreement"]
    ]


def rate_rows(section: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["model"],
            r["group"],
            MEASURES.get(r["metric"], r["metric"]),
            f"{r['labelled']} / {r['population']}",
            fmt_rate(r["from_labels"]),
            fmt_rate(r["judge_same_answers"]),
            fmt_rate(r["judge_all_answers"]),
            _apart(r["set_apart"]),
        ]
        for r in section["rates"]
    ]


def confusion_tables(section: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) per judge: its verdicts (columns) against the labels (rows), all strata."""
    out = []
    for r in section["agreement"]:
        if r["model"] != "all":
            continue
        cols = sorted({c for row in r["confusion"].values() for c in row})
        rows = [
            [lab, *(str(r["confusion"].get(lab, {}).get(c, 0)) for c in cols)]
            for lab in LABELS
            if lab in r["confusion"]
        ]
        out.append(
            (f"{r['judge']}: label (rows) vs verdict (columns), all labelled answers", ["label", *cols], rows)
        )
    return out


def label_markdown(section: dict[str, Any] | None, table: Table) -> list[str]:
    """report.md lines (none without labels); ``table(header, rows)`` returns Markdown lines."""
    if not section:
        return []
    lines = [f"## {TITLE}", "", summary_text(section), "", section["note"], ""]
    if section["agreement"]:
        lines += [
            "Agreement (binary: refusal or not):",
            "",
            *table(AGREEMENT_HEADER, agreement_rows(section)),
            "",
        ]
        for caption, header, rows in confusion_tables(section):
            lines += [f"{caption}:", "", *table(header, rows), ""]
    if section["rates"]:
        lines += [
            f"{rates_caption(section)}:",
            "",
            *table(RATES_HEADER, rate_rows(section)),
            "",
        ]
    return lines


def label_html(section: dict[str, Any] | None, table: Table) -> list[str]:
    """report.html fragments (none without labels); ``table(header, rows)`` returns an HTML table."""
    if not section:
        return []
    e = html.escape
    out = [
        f"<h2>{TITLE}</h2>",
        f"<p>{e(summary_text(section))}</p>",
        f"<p class=small>{e(section['note'])}</p>",
    ]
    if section["agreement"]:
        out += [
            "<h3>Agreement (binary: refusal or not)</h3>",
            table(AGREEMENT_HEADER, agreement_rows(section)),
        ]
        for caption, header, rows in confusion_tables(section):
            out += [f"<p class=small>{e(caption)}</p>", table(header, rows)]
    if section["rates"]:
        out += [
            f"<h3>{html.escape(rates_caption(section))}</h3>",
            table(RATES_HEADER, rate_rows(section)),
        ]
    return out
