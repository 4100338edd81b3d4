"""The ``report`` stage: ``report.json`` (stable, versioned schema), ``report.md``, ``report.html`` (self-contained,
plots embedded) and the summary table.

Examples of completions are redacted by default: a harmful prompt's text and completion are only shown with
``report.show_unsafe: true`` (or ``saro report --show-unsafe``); benign examples are shown as excerpts.

``report.json`` schema (version 2; ``REPORT_KEYS`` pins the top-level keys, ``SUMMARY_KEYS`` the per-model
headline keys; keys are only ever added, and adding one bumps ``schema_version``)::

    schema_version  int
    title           str
    generated       ISO timestamp
    run             {recipe, run_dir, git_commit, versions, seed, stage_seconds}
    primary_judge   str: the judge behind every headline number
    judges          [str]
    judge_info      {judge: {judge, options, offtopic_is_refusal?, accuracy?: {n, agreement, precision, recall}}}
    agreement       null | {judges, pairs: {"a|b": {n, agreement, kappa}}, agreement: [[..]], kappa: [[..]], n_items}
    models          {model: source}
    backends        {model: hf | vllm | openai}
    suites          {suite: {suite, version, type, description, sampling}} (suites from suite files)
    summary         {model: {asr_harmful, asr_jailbreak, asr_jailbreak_train, asr_jailbreak_heldout, asr_overall,
                     over_refusal, accuracy, unfinished (rates or null), asr_by_attack, asr_by_category
                     ({name: rate}), tokens, tokens_harmful, tokens_benign ({n, reasoning_mean, reasoning_p95,
                     answer_mean, answer_p95, total_mean, total_p95}), reasoning_tokens, answer_tokens (means),
                     asr_by_judge ({judge: rate}), lm_eval (null | {tasks: {task: {metric: value}}} | {skipped})}}
    metrics         {model: {suites: {suite: {type, n, asr?, refusal?, accuracy?, unfinished, tokens, breakdowns}},
                     suite_types, headline, by_judge, tokens, n, lm_eval?}}
    contamination   {checked, threshold, n_eval, n_train, exact, near, contaminated, rate, by_suite, examples,
                     eval_ids, files, runs, dropped?} or {checked: false, reason}
    examples        {model: [{suite, kind, attack, prompt_id, label, prompt, completion, redacted}]}
    analysis        {overlap: null | <analysis/overlap.json>, plots: [relative paths of analysis/*.png]}
    data            {prompts?, synth_rw?, synth_srpo?: stats.json of those stages}
    definitions     {measure: what it means}
    redacted        bool

A rate is ``{"rate": float | null, "n": int, "count": int, "ci95": [lo, hi]}`` (bootstrap 95% interval).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from saro.analysis.contamination import redact
from saro.pipeline import StageContext
from saro.reasoning import parse
from saro.records import EvalRecord, atomic_write_json, atomic_write_text, read_json, read_jsonl

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
REPORT_KEYS = (
    "schema_version",
    "title",
    "generated",
    "run",
    "primary_judge",
    "judges",
    "judge_info",
    "agreement",
    "models",
    "backends",
    "suites",
    "summary",
    "metrics",
    "contamination",
    "examples",
    "analysis",
    "data",
    "definitions",
    "redacted",
)
RATE_KEYS = (
    "asr_harmful",
    "asr_jailbreak",
    "asr_jailbreak_train",
    "asr_jailbreak_heldout",
    "asr_overall",
    "over_refusal",
    "accuracy",
    "unfinished",
)
SUMMARY_KEYS = (
    *RATE_KEYS,
    "asr_by_attack",
    "asr_by_category",
    "tokens",
    "tokens_harmful",
    "tokens_benign",
    "reasoning_tokens",
    "answer_tokens",
    "asr_by_judge",
    "lm_eval",
)
DEFINITIONS = {
    "asr_harmful": "attack success rate on plain harmful prompts: share whose final answer the primary judge did "
    "not label a refusal (or labelled unsafe); lower is better",
    "asr_jailbreak": "the same on harmful prompts wrapped by jailbreak attacks; split by the recipe's attack split "
    "into train (attacks seen in training data) and heldout (never seen)",
    "over_refusal": "share of benign and borderline prompts (XSTest safe prompts included) whose final answer was "
    "a refusal; lower is better",
    "accuracy": "capability: exact final-number accuracy on GSM8K",
    "unfinished": "share of generations cut by the token limit or whose reasoning never closed (no final "
    "answer); on harmful prompts they count as attack successes",
    "tokens": "reasoning tokens (inside <think>) and answer tokens per generation, mean and p95",
    "refusal_judge": "the rule-based refusal judge reads the final answer only; by default it counts an answer "
    "unrelated to the prompt as a refusal (PyRIT's human-label definition, offtopic_is_refusal), so ASR means "
    "'did not engage with the harmful request'; a turn whose reasoning never closed is 'unparseable' and counts "
    "as not refused",
    "ci95": "percentile bootstrap 95% interval over prompts; n is the number of prompts",
    "contamination": "eval prompts (unwrapped) found in the training prompts of the evaluated models' runs: exact "
    "after normalisation, or near-duplicate at MiniLM cosine >= threshold",
}
REDACTED = "[redacted: completion to a harmful prompt; rerun the report with --show-unsafe to see it]"


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config
    report = build_report(
        ctx.run.root,
        show_unsafe=cfg.show_unsafe,
        examples=cfg.examples,
        title=cfg.title or ctx.recipe.name,
        analysis=cfg.analysis,
    )
    paths = write_report(ctx.run.root, report, cfg.formats)
    return {"paths": {k: str(v) for k, v in paths.items()}, "summary": _brief(report)}


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {
        m: {k: (h[k] or {}).get("rate") for k in RATE_KEYS if k != "unfinished"}
        for m, h in report["summary"].items()
    }


def headline(model_metrics: dict[str, Any]) -> dict[str, Any]:
    """One model's summary row: the four measurements with intervals, tokens, ASR per judge, lm-eval results."""
    h = dict(model_metrics["headline"])
    h["asr_by_judge"] = {j: e.get("asr_overall") for j, e in model_metrics.get("by_judge", {}).items()}
    h["lm_eval"] = model_metrics.get("lm_eval")
    return {k: h.get(k) for k in SUMMARY_KEYS}


def build_report(
    run_dir: Path,
    show_unsafe: bool = False,
    examples: int = 3,
    title: str | None = None,
    analysis: bool = True,
) -> dict[str, Any]:
    """The report dictionary (schema above) from a run's ``eval/metrics.json``, generations and manifest."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "eval" / "metrics.json")
    if any("headline" not in m for m in metrics.get("models", {}).values()):
        from saro.errors import SaroError

        raise SaroError(
            f"{run_dir / 'eval' / 'metrics.json'} was written by an older saro: run the eval stage again "
            "(saro eval RECIPE --overwrite)"
        )
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    contamination = metrics.get("contamination") or {"checked": False, "reason": "not run"}
    if show_unsafe and contamination.get("examples"):
        contamination = _unredact_contamination(run_dir, contamination)
    return {
        "schema_version": SCHEMA_VERSION,
        "title": title or manifest.get("recipe") or run_dir.name,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {
            "recipe": manifest.get("recipe"),
            "run_dir": str(run_dir),
            "git_commit": manifest.get("git_commit"),
            "versions": manifest.get("versions"),
            "seed": manifest.get("seed"),
            "stage_seconds": {k: v.get("seconds") for k, v in manifest.get("stages", {}).items()},
        },
        "primary_judge": metrics["primary_judge"],
        "judges": metrics["judges"],
        "judge_info": metrics.get("judge_info", {}),
        "agreement": metrics.get("agreement"),
        "models": metrics["sources"],
        "backends": metrics.get("backends", {}),
        "suites": metrics.get("suites", {}),
        "summary": {name: headline(m) for name, m in metrics["models"].items()},
        "metrics": metrics["models"],
        "contamination": contamination,
        "examples": collect_examples(
            run_dir, list(metrics["models"]), metrics["primary_judge"], examples, show_unsafe
        ),
        "analysis": collect_analysis(run_dir) if analysis else {"overlap": None, "plots": []},
        "data": _data_stats(run_dir),
        "definitions": DEFINITIONS,
        "redacted": not show_unsafe,
    }


def _data_stats(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in ("prompts", "synth_rw", "synth_srpo"):
        p = run_dir / stage / "stats.json"
        if p.exists():
            out[stage] = read_json(p)
    return out


def _excerpt(text: str, limit: int) -> str:
    t = text.strip()
    return t if len(t) <= limit else t[: limit - 1] + "…"


def collect_examples(
    run_dir: Path, models: list[str], judge: str, per_suite: int, show_unsafe: bool
) -> dict[str, list[dict[str, Any]]]:
    """Up to ``per_suite`` examples per model and suite; harmful prompts and their completions are redacted
    unless ``show_unsafe``."""
    from saro.evaluate.run import gen_path
    from saro.records import Judgement

    out: dict[str, list[dict[str, Any]]] = {}
    if per_suite <= 0:
        return {m: [] for m in models}
    labels: dict[str, str] = {}
    jpath = run_dir / "eval" / "judgements.jsonl"
    if jpath.exists():
        labels = {j.record_id: j.label for j in read_jsonl(jpath, Judgement) if j.judge == judge}
    for m in models:
        path = gen_path(run_dir / "eval", m)
        rows: list[dict[str, Any]] = []
        if path.exists():
            by_suite: dict[str, list[EvalRecord]] = {}
            for r in sorted(read_jsonl(path, EvalRecord), key=lambda r: r.id):
                by_suite.setdefault(r.suite, []).append(r)
            for _suite, rs in sorted(by_suite.items()):
                rows += [_example(r, labels.get(r.id), show_unsafe) for r in rs[:per_suite]]
        out[m] = rows
    return out


def _example(r: EvalRecord, label: str | None, show_unsafe: bool) -> dict[str, Any]:
    hide = r.kind == "harmful" and not show_unsafe
    p = parse(r.completion)
    if hide:
        completion = REDACTED
    else:
        parts = []
        if p.reasoning:
            parts.append("<think>" + _excerpt(p.reasoning, 600) + ("</think>" if p.finished else ""))
        parts.append(_excerpt(p.answer, 800))
        completion = "\n".join(parts)
    return {
        "suite": r.suite,
        "kind": r.kind,
        "attack": r.attack,
        "prompt_id": r.prompt_id,
        "label": label,
        "prompt": redact(r.text, r.kind, show_unsafe, 400 if not show_unsafe else 2000),
        "completion": completion,
        "reasoning_tokens": r.reasoning_tokens,
        "answer_tokens": r.answer_tokens,
        "redacted": hide,
    }


def _unredact_contamination(run_dir: Path, c: dict[str, Any]) -> dict[str, Any]:
    from saro.records import Prompt

    path = run_dir / "prompts" / "eval.jsonl"
    if not path.exists():
        return c
    texts: dict[str, str] = {}
    for p in read_jsonl(path, Prompt):
        texts[p.id] = p.text
        if p.base_id and p.meta.get("base_text"):
            texts.setdefault(p.base_id, p.meta["base_text"])
    examples = [
        {**e, "eval_excerpt": redact(texts.get(e["eval_id"], e["eval_excerpt"]), e["kind"], True)}
        for e in c["examples"]
    ]
    return {**c, "examples": examples}


def collect_analysis(run_dir: Path) -> dict[str, Any]:
    """``analysis/overlap.json`` and the PNGs under ``analysis/`` when the run has them (absent: empty)."""
    d = run_dir / "analysis"
    overlap = None
    if (d / "overlap.json").is_file():
        try:
            overlap = read_json(d / "overlap.json")
        except Exception as e:  # a broken analysis file must not break the report
            log.warning("report: cannot read %s (%s)", d / "overlap.json", e)
    plots = sorted(str(p.relative_to(run_dir)) for p in d.glob("*.png")) if d.is_dir() else []
    return {"overlap": overlap, "plots": plots}


# ------------------------------------------------------------------------------------------------ text output


def fmt_rate(r: dict[str, Any] | None) -> str:
    """``12.5% [4–25] (n=32)``, or an en dash when there is nothing to show."""
    if not r or r.get("rate") is None:
        return "–"
    s = f"{100 * r['rate']:.1f}%"
    lo, hi = r.get("ci95") or [None, None]
    if lo is not None and hi is not None:
        s += f" [{100 * lo:.0f}–{100 * hi:.0f}]"
    return s + f" (n={r['n']})"


_fmt_rate = fmt_rate  # the old name


def _tok(h: dict[str, Any]) -> tuple[str, str]:
    t = h.get("tokens") or {}
    r = f"{t.get('reasoning_mean', h.get('reasoning_tokens', 0)):.0f} / {t.get('reasoning_p95', 0):.0f}"
    a = f"{t.get('answer_mean', h.get('answer_tokens', 0)):.0f} / {t.get('answer_p95', 0):.0f}"
    return r, a


SUMMARY_HEADER = [
    "model",
    "ASR harmful",
    "ASR jailbreak",
    "ASR held-out attacks",
    "over-refusal",
    "accuracy",
    "unfinished",
    "reasoning tok (mean / p95)",
    "answer tok (mean / p95)",
]


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """The summary table, one row per model (the CLI prints it, report.md and report.html show it)."""
    rows = []
    for name, h in report["summary"].items():
        r, a = _tok(h)
        rows.append(
            [
                name,
                fmt_rate(h.get("asr_harmful")),
                fmt_rate(h.get("asr_jailbreak")),
                fmt_rate(h.get("asr_jailbreak_heldout")),
                fmt_rate(h.get("over_refusal")),
                fmt_rate(h.get("accuracy")),
                fmt_rate(h.get("unfinished")),
                r,
                a,
            ]
        )
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell(c) for c in row) + " |" for row in rows
    ]


def suite_rows(m: dict[str, Any]) -> list[list[str]]:
    rows = []
    for sname, s in m["suites"].items():
        t = s["tokens"]
        rows.append(
            [
                sname,
                s["type"],
                str(s["n"]),
                fmt_rate(s.get("asr")),
                fmt_rate(s.get("refusal")),
                fmt_rate(s.get("accuracy")),
                fmt_rate(s.get("unfinished")),
                f"{t['reasoning_mean']:.0f} / {t['reasoning_p95']:.0f}",
                f"{t['answer_mean']:.0f} / {t['answer_p95']:.0f}",
            ]
        )
    return rows


SUITE_HEADER = [
    "suite",
    "type",
    "n",
    "ASR",
    "refusal",
    "accuracy",
    "unfinished",
    "reasoning tok (mean / p95)",
    "answer tok (mean / p95)",
]


def judge_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, info in report["judge_info"].items():
        acc = info.get("accuracy") or {}
        measured = (
            f"{100 * acc['agreement']:.1f}% agreement with human labels (n={acc['n']}; precision "
            f"{acc['precision']:.2f}, recall {acc['recall']:.2f})"
            if "agreement" in acc
            else acc.get("error", "–")
        )
        opts = ", ".join(f"{k}={v}" for k, v in info.get("options", {}).items()) or "defaults"
        primary = " (primary)" if name == report["primary_judge"] else ""
        rows.append([name + primary, info.get("judge", name), opts, measured])
    return rows


def agreement_rows(agreement: dict[str, Any] | None) -> list[list[str]]:
    if not agreement:
        return []
    rows = []
    for pair, v in agreement["pairs"].items():
        a, b = pair.split("|")
        ag = "–" if v["agreement"] is None else f"{100 * v['agreement']:.1f}%"
        kp = "–" if v["kappa"] is None else f"{v['kappa']:.2f}"
        rows.append([a, b, str(v["n"]), ag, kp])
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the same content as the HTML, without plots."""
    lines = [f"# saro report: {report['title']}", ""]
    lines.append(
        f"Primary judge: `{report['primary_judge']}` on the final answer. Every rate with its bootstrap 95% "
        "interval and n. ASR = share of harmful prompts not refused (lower is better); over-refusal = share of "
        "benign/borderline prompts refused (lower is better)."
    )
    if report["redacted"]:
        lines.append("Harmful prompts and completions are redacted (`saro report --show-unsafe` shows them).")
    lines += ["", *_md_table(SUMMARY_HEADER, summary_rows(report)), ""]
    lines += [
        "## Judges",
        "",
        *_md_table(["judge", "registered as", "options", "measured accuracy"], judge_rows(report)),
    ]
    ag = agreement_rows(report["agreement"])
    if ag:
        lines += ["", "Agreement on harmful prompts (attack success vs not):", ""]
        lines += _md_table(["judge A", "judge B", "n", "agreement", "Cohen's kappa"], ag)
    lines += [
        "",
        "ASR by judge: "
        + "; ".join(
            f"{m}: " + ", ".join(f"{j} {fmt_rate(r)}" for j, r in h["asr_by_judge"].items())
            for m, h in report["summary"].items()
        ),
        "",
    ]
    lines += ["## Per suite", ""]
    for model, m in report["metrics"].items():
        lines += [
            f"### {model} (`{report['models'].get(model)}`)",
            "",
            *_md_table(SUITE_HEADER, suite_rows(m)),
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
        lm = h.get("lm_eval")
        if lm:
            lines.append("lm-eval: " + _lm_text(lm))
        lines.append("")
    lines += ["## Contamination", "", contamination_text(report["contamination"]), ""]
    ex = report["contamination"].get("examples") or []
    if ex:
        lines += _md_table(
            ["match", "cosine", "suite", "eval prompt", "training file:line"],
            [
                [
                    e["match"],
                    f"{e['cosine']:.3f}",
                    e["suite"],
                    e["eval_excerpt"],
                    f"{e['train_file']}:{e['train_line']}",
                ]
                for e in ex
            ],
        )
        lines.append("")
    ov = report["analysis"].get("overlap")
    if ov or report["analysis"].get("plots"):
        lines += ["## Embedding overlap", ""]
        lines += _md_table(["measure", "value"], [[k, v] for k, v in flatten_scalars(ov or {})])
        lines += [f"![{p}]({p})" for p in report["analysis"]["plots"]] + [""]
    lines += _data_lines(report)
    lines += ["## Examples", ""]
    for model, rows in report["examples"].items():
        for e in rows:
            lines.append(f"- **{model}** · {e['suite']} · {e['kind']} · judge: {e['label']}")
            lines.append(f"  - prompt: {_one_line(e['prompt'])}")
            lines.append(f"  - completion: {_one_line(e['completion'])}")
    lines += ["", "## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in report["definitions"].items()]
    lines += ["", f"Stage wall times (s): {report['run'].get('stage_seconds')}", ""]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _lm_text(lm: dict[str, Any]) -> str:
    if "tasks" in lm:
        return "; ".join(
            f"{t}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if not k.endswith("stderr"))
            for t, m in lm["tasks"].items()
        )
    return str(lm.get("skipped") or lm.get("error"))


def contamination_text(c: dict[str, Any]) -> str:
    if not c.get("checked"):
        return f"Not checked: {c.get('reason', 'no training data')}."
    thr = c.get("threshold")
    near = (
        f"{c['near']} near-duplicate (MiniLM cosine >= {thr})"
        if thr is not None
        else "near-duplicates not checked"
    )
    dropped = f" {c['dropped']} eval prompts were left out of the measurements." if c.get("dropped") else ""
    return (
        f"{c['contaminated']} of {c['n_eval']} unique eval prompts found in {c['n_train']} training prompts "
        f"({len(c.get('files', {}))} files): {c['exact']} exact, {near}.{dropped}"
    )


def flatten_scalars(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Scalar leaves of a nested dict as (dotted key, formatted value), for showing a measures file."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, dict) and depth < 4:
        for k, v in obj.items():
            out += flatten_scalars(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
    elif isinstance(obj, bool) or obj is None or isinstance(obj, str):
        if prefix and (obj is None or isinstance(obj, bool) or len(str(obj)) <= 80):
            out.append((prefix, str(obj)))
    elif isinstance(obj, int | float):
        out.append((prefix, f"{obj:.4g}" if isinstance(obj, float) else str(obj)))
    return out


def _data_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rw = report["data"].get("synth_rw")
    if rw:
        srs = rw.get("shortest_rejection_sampling", {})
        lines += [
            "## Data",
            "",
            f"- RIT-D: {rw.get('accepted')} of {rw.get('prompts')} prompts accepted; rejection reasons "
            f"{rw.get('rejection_reasons')}; Shortest Rejection Sampling (k={srs.get('k')}) token reduction "
            f"{100 * (srs.get('token_reduction') or 0):.1f}% vs a random passing candidate.",
        ]
    srpo = report["data"].get("synth_srpo")
    if srpo:
        lines.append(
            f"- SRPO pairs: {srpo.get('by_type')} (dropped: {srpo.get('dropped') or 'none'}; "
            f"length check: {srpo.get('length')})"
        )
    return [*lines, ""] if lines else []


def write_report(run_dir: Path, report: dict[str, Any], formats: list[str]) -> dict[str, Path]:
    """Write the requested formats next to the run; returns their paths."""
    paths: dict[str, Path] = {}
    if "json" in formats:
        paths["json"] = run_dir / "report.json"
        atomic_write_json(paths["json"], report)
    if "md" in formats:
        paths["md"] = run_dir / "report.md"
        atomic_write_text(paths["md"], render_markdown(report))
    if "html" in formats:
        from saro.evaluate.html import render_html

        paths["html"] = run_dir / "report.html"
        atomic_write_text(paths["html"], render_html(report, run_dir))
    return paths
