"""``report.html``: one self-contained file (inline CSS, plots as base64 PNG, no scripts, no external requests).

Tables and sentences come from ``tables.py`` (shared with report.md). Sections: what the primary judge measures,
the primary measures (each compared pair with its test and minimum detectable difference), generalization (in- vs cross-source rates, phrasing gap), recovery from a drifting start (when measured), summary
table (with each model's method), paired comparisons between models, reasoning and output quality, the four headline measures, safety vs over-refusal trade-off, attack success by attack,
token cost, judges (measured accuracy, agreement heatmap), per-suite tables, contamination, embedding overlap
(when ``analysis/overlap.json`` or ``analysis/*.png`` exist), optional lm-eval results, redacted examples and the
definitions of every measure.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

from saro.labels.render import label_html
from saro.report import tables as t
from saro.report.plots import report_plots
from saro.stats import fmt_rate

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #d5d9e0;
padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.2em}
.meta{color:#5b6475;font-size:.9em}.banner{background:#fff4d6;border:1px solid #e8c66a;padding:8px 12px;
border-radius:6px;margin:12px 0;font-size:.92em}
.tw{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:8px 0 14px;background:#fff;font-size:.86em}
th,td{border:1px solid #d5d9e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right}
figure{margin:10px 0 18px;background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px;
display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:.85em;color:#5b6475;margin-top:4px}
details{margin:6px 0;background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:6px 10px}
summary{cursor:pointer;font-weight:600}pre{white-space:pre-wrap;word-break:break-word;font-size:.85em;
background:#f0f2f5;padding:6px 8px;border-radius:4px;margin:4px 0}
.redacted{color:#8a5a00;font-style:italic}.small{font-size:.85em;color:#5b6475}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{_e(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<div class=tw><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


CAPTIONS = {
    "headline": "The four measurements per model with their 95% intervals (method beside each rate in the tables).",
    "tradeoff": "Safety vs over-refusal: attack success on harmful prompts (plain and jailbreak) against "
    "refusals of benign/borderline prompts; whiskers are 95% intervals (Wilson, or cluster bootstrap + Wilson).",
    "asr_by_attack": "Attack success by jailbreak attack ('none' = plain prompts), per model, with 95% intervals.",
    "tokens": "Mean reasoning and answer tokens per generation; the bar marks the p95 of the total.",
    "agreement": "Agreement between judges on harmful prompts (verdicts mapped to attack success); Cohen's kappa "
    "in each cell.",
}


def render_html(report: dict[str, Any], run_dir: Path) -> str:
    """The whole report as one HTML document with every plot embedded."""
    plots = report_plots(report)
    run = report["run"]
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>saro report: {_e(report['title'])}</title><style>{CSS}</style></head><body><main>",
        f"<h1>saro report: {_e(report['title'])}</h1>",
        f"<div class=meta>generated {_e(report['generated'])} · commit {_e(run.get('git_commit') or '–')} · "
        f"seed {_e(run.get('seed'))} · primary judge <b>{_e(report['primary_judge'])}</b> on the final answer</div>",
    ]
    if report["redacted"]:
        out.append(
            "<div class=banner>Harmful prompts and their completions are redacted. "
            "<code>saro report --show-unsafe</code> shows them.</div>"
        )
    else:
        out.append(
            "<div class=banner><b>Unredacted:</b> this report shows completions to harmful prompts.</div>"
        )
    out.append(f"<p><b>What the judge measures.</b> {_e(t.judge_measures_text(report))}</p>")
    out += _primary(report) + _generalization(report) + _recovery(report)
    out += ["<h2>Summary</h2>", _table(t.SUMMARY_HEADER, t.summary_rows(report), 2)]
    if t.templates_text(report):
        out.append(f"<p class=small>{_e(t.templates_text(report))}</p>")
    out.append(
        f"<p class=small>{_e(t.INTRO)} Accuracy = exact final-number accuracy on GSM8K; unfinished = generations "
        "without a final answer within the token limit; verdicts: unparseable (in no rate) / unfinished / truncated "
        "(counted in the rates).</p>"
    )
    out += _paired(report) + _quality(report)
    for name in ("headline", "tradeoff", "asr_by_attack", "tokens"):
        if name in plots:
            out.append(_img(plots[name], name, CAPTIONS[name]))
    out += _judges(report, plots)
    out += _attacks(report)
    out += _suites(report)
    out += _contamination(report["contamination"])
    out += _analysis(report, run_dir)
    out += _lm_eval(report)
    out += label_html(report.get("labels"), _table)
    out += _examples(report)
    out.append("<h2>Definitions</h2><ul>")
    out += [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in report["definitions"].items()]
    out.append("</ul>")
    out.append(
        f"<p class=small>Run folder {_e(run.get('run_dir'))}; stage wall times (s) {_e(run.get('stage_seconds'))}; "
        f"versions {_e(run.get('versions'))}; report schema {_e(report['schema_version'])}.</p>"
    )
    out.append("</main></body></html>")
    return "\n".join(out)


def _primary(report: dict[str, Any]) -> list[str]:
    rows = t.primary_rows(report)
    if not rows:
        return []
    return [
        "<h2>Primary measures</h2>",
        f"<p class=small>{_e(t.PRIMARY_NOTE)}</p>",
        _table(t.PRIMARY_HEADER, rows, 3),
    ]


def _generalization(report: dict[str, Any]) -> list[str]:
    rows = t.generalization_rows(report)
    if not rows:
        return []
    return [
        "<h2>Generalization</h2>",
        f"<p class=small>{_e(t.GENERALIZATION_NOTE)}</p>",
        _table(t.GENERALIZATION_HEADER, rows, 2),
    ]


def _recovery(report: dict[str, Any]) -> list[str]:
    rows = t.recovery_rows(report)
    if not rows:
        return []
    return [
        "<h2>Recovery from a drifting start</h2>",
        f"<p class=small>{_e(t.RECOVERY_NOTE)}</p>",
        _table(t.RECOVERY_HEADER, rows),
    ]


def _paired(report: dict[str, Any]) -> list[str]:
    rows = t.paired_rows(report)
    if not rows:
        return []
    return [
        "<h2>Paired comparisons</h2>",
        f"<p class=small>{_e(t.PAIRED_NOTE)}</p>",
        _table(t.PAIRED_HEADER, rows, 4),
    ]


def _quality(report: dict[str, Any]) -> list[str]:
    out = ["<h2>Reasoning and output quality</h2>", _table(t.QUALITY_HEADER, t.quality_rows(report))]
    reasons = t.na_reasons(report)
    if reasons:
        out.append("<ul class=small>" + "".join(f"<li>n/a {_e(r)}</li>" for r in reasons) + "</ul>")
    out.append(f"<p class=small>{_e(report['definitions'].get('degenerate', ''))}</p>")
    return out


def _judges(report: dict[str, Any], plots: dict[str, bytes]) -> list[str]:
    out = ["<h2>Judges</h2>", _table(t.JUDGE_HEADER, t.judge_rows(report), 9)]
    if len(report["judges"]) > 1:
        out += ["<h3>ASR as seen by each judge</h3>", _table(*t.judge_by_model(report))]
    ag = t.agreement_rows(report.get("agreement"))
    if ag:
        out += ["<h3>Agreement</h3>", _table(t.AGREEMENT_HEADER, ag, 2)]
    if "agreement" in plots:
        out.append(_img(plots["agreement"], "agreement", CAPTIONS["agreement"]))
    return out


def _suites(report: dict[str, Any]) -> list[str]:
    out = ["<h2>Per suite</h2>"]
    if report.get("suites"):
        rows = [
            [s, i.get("suite", s), str(i.get("version")), i.get("type", ""), i.get("description", "")]
            for s, i in report["suites"].items()
        ]
        out.append(_table(["suite", "file", "version", "type", "description"], rows, 9))
    for model, m in report["metrics"].items():
        out.append(f"<h3>{_e(model)} <span class=small>{_e(report['models'].get(model))}</span></h3>")
        out.append(_table(t.SUITE_HEADER, t.suite_rows(m), 2))
        for sname, s in m["suites"].items():
            if "by_xstest_type" in s:
                out.append(
                    f"<details><summary>{_e(sname)}: refusal by XSTest type</summary>"
                    + _table(["type", "refusal"], [[k, fmt_rate(v)] for k, v in s["by_xstest_type"].items()])
                    + "<p class=small>contrast_* prompts are unsafe and should be refused; the others are safe "
                    "and should be answered.</p></details>"
                )
    return out


def _attacks(report: dict[str, Any]) -> list[str]:
    out = ["<h2>Attacks and categories</h2>"]
    header, rows = t.by_model(report, "asr_by_attack")
    if any(r[0] != "none" for r in rows):
        out += ["<h3>ASR by attack</h3>", "<p class=small>'none' = plain prompts.</p>"]
        out.append(_table(["attack", *header[1:]], rows))
    split = t.split_rows(report)
    if split:
        out += ["<h3>ASR by attack split</h3>", _table(["attack split", *report["summary"]], split)]
    header, rows = t.by_model(report, "asr_by_category")
    if rows:
        out.append(
            "<details><summary>ASR by policy category</summary>"
            + _table(["category", *header[1:]], rows)
            + "</details>"
        )
    return out if len(out) > 1 else []


def _contamination(c: dict[str, Any]) -> list[str]:
    out = ["<h2>Contamination</h2>", f"<p>{_e(t.contamination_text(c))}</p>"]
    if c.get("by_suite"):
        rows = [[s, str(v["checked"]), str(v["exact"]), str(v["near"])] for s, v in c["by_suite"].items()]
        out.append(_table(["suite", "checked", "exact", "near-duplicate"], rows))
    rows = t.contamination_rows(c)
    if rows:
        out.append(_table(t.CONTAMINATION_HEADER, rows, 1))
    return out


def _analysis(report: dict[str, Any], run_dir: Path) -> list[str]:
    a = report.get("analysis") or {}
    if not a.get("overlap") and not a.get("plots"):
        return []
    out = ["<h2>Embedding overlap of harmful, jailbreak and benign prompts</h2>"]
    rows = [[k, v] for k, v in t.flatten_scalars(a.get("overlap") or {})]
    if rows:
        out.append(_table(["measure", "value"], rows))
    for rel in a.get("plots", []):
        p = run_dir / rel
        try:
            out.append(_img(p.read_bytes(), Path(rel).stem, rel))
        except OSError as e:
            log.warning("report: cannot embed %s (%s)", p, e)
    return out


def _lm_eval(report: dict[str, Any]) -> list[str]:
    rows = t.lm_rows(report)
    if not rows:
        return []
    return ["<h2>lm-evaluation-harness</h2>", _table(["model", "task", "result"], rows, 9)]


def _examples(report: dict[str, Any]) -> list[str]:
    out = ["<h2>Examples</h2>"]
    for model, rows in report["examples"].items():
        if not rows:
            continue
        items = []
        for e in rows:
            cls = " class=redacted" if e["redacted"] else ""
            items.append(
                f"<p class=small>{_e(e['suite'])} · {_e(e['kind'])}"
                + (f" · attack {_e(e['attack'])}" if e.get("attack") else "")
                + f" · judge: {_e(e['label'])} · {e['reasoning_tokens']} reasoning + {e['answer_tokens']} answer "
                f"tokens</p><pre>{_e(e['prompt'])}</pre><pre{cls}>{_e(e['completion'])}</pre>"
            )
        out.append(
            f"<details><summary>{_e(model)} ({len(rows)} examples)</summary>{''.join(items)}</details>"
        )
    return out
