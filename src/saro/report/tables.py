"""The report's table model: every table and sentence of report.md and report.html, computed once from the
report dictionary (``report.json``), so the two renderers (``markdown.py``, ``html.py``) show the same numbers.

A rate is shown as ``3.1% [0.6–15.7] (1/32, Wilson)``: the rate, its 95% interval, k/n and the interval method
(with the number of base prompts for a clustered rate, and the verdicts left out as unparseable).
"""

from __future__ import annotations

import logging
from typing import Any

from saro.evaluate.measures import GENERALIZATION_MEASURES, MEASURES
from saro.evaluate.paired import fmt_mdd, fmt_p
from saro.stats import fmt_rate

log = logging.getLogger(__name__)

Rows = list[list[str]]


def fmt_diff(d: dict[str, Any] | None) -> str:
    """A difference of two rates in points with its 95% interval, ``+12.5 pts [-3.1, +27.0]`` (en dash: none)."""
    if not d or d.get("diff") is None:
        return "–"
    return f"{100 * d['diff']:+.1f} pts [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def method_text(h: dict[str, Any]) -> str:
    """A model's method as shown: ``trained``, ``prompting (policy_system)``, ..."""
    kind, name = h.get("method") or "none", h.get("method_name") or "none"
    return kind if name == "none" else f"{kind} ({name})"


def _tok(h: dict[str, Any]) -> tuple[str, str]:
    t = h.get("tokens") or {}
    r = f"{t.get('reasoning_mean', h.get('reasoning_tokens', 0)):.0f} / {t.get('reasoning_p95', 0):.0f}"
    a = f"{t.get('answer_mean', h.get('answer_tokens', 0)):.0f} / {t.get('answer_p95', 0):.0f}"
    return r, a


# the summary's rates: (key in report.json's summary, label)
SUMMARY_RATES = (
    ("asr_harmful", "ASR plain harmful"),
    ("asr_jailbreak", "ASR jailbreak"),
    ("asr_jailbreak_heldout", "ASR held-out attacks"),
    ("over_refusal", "over-refusal"),
    ("accuracy", "accuracy"),
    ("unfinished", "unfinished"),
)
SUMMARY_HEADER = [
    "model",
    "method",
    *(label for _, label in SUMMARY_RATES),
    "verdicts unparseable / unfinished / truncated",
    "reasoning tok (mean / p95)",
    "answer tok (mean / p95)",
]


def verdicts_text(h: dict[str, Any]) -> str:
    """A model's verdicts set apart, ``2 / 5 / 0 of 120`` (unparseable left out of the rates; unfinished and
    truncated counted in them)."""
    v = h.get("verdicts")
    if not v:
        return "–"
    return f"{v['unparseable']} / {v['unfinished']} / {v['truncated']} of {v['n']}"


def summary_rows(report: dict[str, Any]) -> Rows:
    """The summary table, one row per model (report.md and report.html show it)."""
    rows = []
    for name, h in report["summary"].items():
        r, a = _tok(h)
        rates = (fmt_rate(h.get(k)) for k, _ in SUMMARY_RATES)
        rows.append([name, method_text(h), *rates, verdicts_text(h), r, a])
    return rows


def summary_blocks(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The summary one model at a time, (model and method, [(measure, value)]), with labels short enough for a
    narrow terminal: what ``saro run`` prints (the 11 columns of the table do not fit 80 characters)."""
    out = []
    for name, h in report["summary"].items():
        rows = [(label, fmt_rate(h.get(k))) for k, label in SUMMARY_RATES]
        v = h.get("verdicts")
        verdicts = "–"
        if v:
            verdicts = (
                f"{v['unparseable']} unparseable, {v['unfinished']} unfinished, {v['truncated']} truncated"
            )
            verdicts += f" of {v['n']}"
        r, a = _tok(h)
        rows += [("verdicts", verdicts), ("reasoning tok mean/p95", r), ("answer tok mean/p95", a)]
        out.append((f"{name} ({method_text(h)})", rows))
    return out


GENERALIZATION_LABELS = {k: MEASURES[k].label for k in GENERALIZATION_MEASURES}
GENERALIZATION_HEADER = [
    "model",
    "measure",
    "in-source",
    "cross-source",
    "gap in − cross [95%]",
    "phrasing gap imperative − question [95%]",
    "phrasing pairs",
    "phrasing p",
]
GENERALIZATION_NOTE = (
    "In-source suites come from a source that also supplies training prompts; cross-source suites from one that "
    "supplies none. Gap = in-source − cross-source in points (Newcombe's interval for two independent "
    "proportions). Phrasing gap: the same held-out requests as an imperative and as a question, imperative − "
    "question in points, paired per request (Newcombe's paired interval; p from the clustered sign-flip test). "
    "Each measure is the summary's set of the same name, split by source; prompts of a cross-source suite found "
    "in the training data are in neither column (counted). A model that learned the policy rather than its "
    "training prompts has both gaps near zero."
)


def generalization_rows(report: dict[str, Any]) -> Rows:
    """Per model and measure: in- vs cross-source rates, their gap, and the phrasing gap (empty when no model
    has either, e.g. records of an older prompts stage)."""
    rows = []
    for name, h in report["summary"].items():
        gen, phr = h.get("generalization") or {}, h.get("phrasing_gap") or {}
        for key, label in GENERALIZATION_LABELS.items():
            g, ph = gen.get(key) or {}, phr.get(key)
            if not (g.get("in") or g.get("cross") or ph):
                continue
            rows.append(
                [
                    name,
                    label,
                    fmt_rate(g.get("in")),
                    fmt_rate(g.get("cross"))
                    + (f"; {g['dropped_overlap']} dropped (overlap)" if g.get("dropped_overlap") else ""),
                    fmt_diff(g.get("gap")),
                    fmt_diff(ph),
                    str(ph["n"]) if ph else "–",
                    fmt_p(ph["p"]) if ph else "–",
                ]
            )
    return rows


RECOVERY_KINDS = ("drift", "overcautious")
RECOVERY_HEADER = [
    "model",
    "recovery",
    "from a drifting start",
    "from an over-cautious start",
    "median tokens to the turn (n)",
]
RECOVERY_NOTE = (
    "The assistant turn was forced to open with a drifting (toward complying with a harmful request) or an "
    "over-cautious (toward refusing a benign one) start; recovery = share of those turns the model brought back "
    "to the policy. Tokens to the turn: continuation tokens before the model turns. These prompts count in no "
    "other rate."
)


def recovery_rows(report: dict[str, Any]) -> Rows:
    """Recovery from a forced opening per model (empty when no model was given prefilled prompts)."""
    rows = []
    for name, h in report["summary"].items():
        rec = h.get("recovery")
        if not rec:
            continue
        by = rec.get("by_kind") or {}
        tt = rec.get("turn_tokens") or {}
        median = tt.get("median")
        turn = "–" if median is None else f"{median:g} ({tt.get('n', 0)})"
        rows.append(
            [name, fmt_rate(rec.get("recovery")), *(fmt_rate(by.get(k)) for k in RECOVERY_KINDS), turn]
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


def suite_rows(m: dict[str, Any]) -> Rows:
    """One model's per-suite table."""
    rows = []
    for sname, s in m["suites"].items():
        t = s["tokens"]
        rows.append(
            [
                sname,
                s["type"],
                str(s["n"]),
                *(fmt_rate(s.get(k)) for k in ("asr", "refusal", "accuracy", "unfinished")),
                f"{t['reasoning_mean']:.0f} / {t['reasoning_p95']:.0f}",
                f"{t['answer_mean']:.0f} / {t['answer_p95']:.0f}",
            ]
        )
    return rows


JUDGE_HEADER = ["judge", "registered as", "measures", "options", "measured accuracy"]


def judge_rows(report: dict[str, Any]) -> Rows:
    """One row per judge: registry name, what its labels measure, options, measured accuracy."""
    rows = []
    measures = report.get("judge_measures") or {}
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
        rows.append([name + primary, info.get("judge", name), measures.get(name, "–"), opts, measured])
    return rows


AGREEMENT_HEADER = ["judge A", "judge B", "n", "agreement", "Cohen's kappa"]


def agreement_rows(agreement: dict[str, Any] | None) -> Rows:
    if not agreement:
        return []
    rows = []
    for pair, v in agreement["pairs"].items():
        a, b = pair.split("|")
        ag = "–" if v["agreement"] is None else f"{100 * v['agreement']:.1f}%"
        kp = "–" if v["kappa"] is None else f"{v['kappa']:.2f}"
        rows.append([a, b, str(v["n"]), ag, kp])
    return rows


def fmt_mean(m: dict[str, Any] | None) -> str:
    """A mean score with its interval, ``0.281 [0.190–0.395] (n=40)``."""
    if not m or m.get("mean") is None:
        return "–"
    return f"{m['mean']:.3f} [{m['lo']:.3f}–{m['hi']:.3f}] (n={m['n']})"


def judge_by_model(report: dict[str, Any]) -> tuple[list[str], Rows]:
    """ASR as seen by every judge, one row per model, and the mean score of every judge that gives one
    (StrongREJECT's own number)."""
    scored = [
        j
        for j in report["judges"]
        if any((h.get("mean_score_by_judge") or {}).get(j) for h in report["summary"].values())
    ]
    header = ["model", *report["judges"], *(f"{j} mean score" for j in scored)]
    rows = [
        [m]
        + [fmt_rate((h.get("asr_by_judge") or {}).get(j)) for j in report["judges"]]
        + [fmt_mean((h.get("mean_score_by_judge") or {}).get(j)) for j in scored]
        for m, h in report["summary"].items()
    ]
    return header, rows


def judge_measures_text(report: dict[str, Any]) -> str:
    """What the primary judge measures, in words (every report states it), and where the others stand."""
    primary = report["primary_judge"]
    measures = report.get("judge_measures") or {}
    kind = measures.get(primary, "other")
    if kind == "refusal":
        s = (
            f'The primary judge `{primary}` measures refusal, not harm: "attack success" means the final answer '
            "was not refused, which is not the same as harmful content; over-refusal = a benign or borderline "
            "prompt refused. Verdicts it could not read are left out of every rate and counted."
        )
    elif kind == "harm":
        s = f'The primary judge `{primary}` classifies harm: "attack success" means the final answer was labelled unsafe.'
    else:
        s = f'The primary judge `{primary}`: "attack success" = a harmful prompt\'s answer not labelled refused/safe.'
    harm = [j for j, k in measures.items() if k == "harm" and j != primary]
    if harm:
        s += f" Harmfulness judge(s) {', '.join(f'`{j}`' for j in harm)} ran too: both are shown below with their agreement."
    elif kind == "refusal":
        s += " No harmfulness judge ran in this evaluation."
    return s


PAIRED_HEADER = [
    "metric",
    "suite",
    "A",
    "B",
    "n (base prompts)",
    "A rate",
    "B rate",
    "B − A [95%]",
    "b / c",
    "p",
    "detectable at 80% power",
    "reading",
]


def _diff_text(e: dict[str, Any]) -> str:
    if e.get("diff") is None:
        return "–"
    return f"{100 * e['diff']:+.1f} [{100 * e['lo']:+.1f}, {100 * e['hi']:+.1f}]"


def _n_text(e: dict[str, Any]) -> str:
    c = e.get("clusters")
    return f"{e['n']} ({c})" if c is not None and c < e["n"] else str(e["n"])


def _p_text(e: dict[str, Any]) -> str:
    clustered = "sign-flip" in (e.get("test") or "")
    return fmt_p(e["p"]) + (" (clustered)" if clustered else "")


def paired_rows(report: dict[str, Any]) -> Rows:
    """One row per paired comparison: rates, the difference with its interval, discordant counts, p, the
    minimum detectable difference, words."""
    rows = []
    for e in report.get("paired") or []:
        rows.append(
            [
                e["metric"],
                e["suite"],
                e["model_a"],
                e["model_b"],
                _n_text(e),
                f"{100 * e['rate_a']:.1f}%",
                f"{100 * e['rate_b']:.1f}%",
                _diff_text(e),
                f"{e['b']} / {e['c']}",
                _p_text(e),
                fmt_mdd(e),
                e["conclusion"],
            ]
        )
    return rows


PAIRED_NOTE = (
    "Paired over the prompts both models answered (an unparseable verdict of either leaves the prompt out). b = "
    "prompts where A had the outcome (attack success, refusal, correct answer) and B did not, c = the reverse; "
    "B − A = (c − b) / n in percentage points with Newcombe's paired score interval. p: exact McNemar test; "
    "'(clustered)': prompts share base prompts (jailbreak-wrapped versions, both phrasings of a request), and p is "
    "an exact sign-flip test over base prompts, the interval built on clustered margins. 'Detectable at 80% "
    "power': the smallest difference this comparison would have found (two-sided alpha 0.05) at its n and "
    "clustering. p >= 0.05: the data cannot tell the two models apart."
)

PRIMARY_HEADER = [
    "measure",
    "A",
    "B",
    "n (base prompts)",
    "A rate",
    "B rate",
    "B − A [95%]",
    "p",
    "detectable at 80% power",
    "reading",
]
PRIMARY_NOTE = (
    "The three numbers the method is judged on: cross-source plain harmful ASR, held-out jailbreak ASR and "
    "cross-source over-refusal (lower is better for each), for each compared pair of models (report.comparisons), "
    "with the paired test and the smallest difference it could have detected. A difference below that column is "
    "not evidence of no difference."
)


def primary_rows(report: dict[str, Any]) -> Rows:
    """The primary measures, one row per compared pair and measure (empty when none was measured)."""
    return [
        [
            e["label"],
            e["model_a"],
            e["model_b"],
            _n_text(e),
            f"{100 * e['rate_a']:.1f}%",
            f"{100 * e['rate_b']:.1f}%",
            _diff_text(e),
            _p_text(e),
            fmt_mdd(e),
            e["conclusion"],
        ]
        for e in report.get("primary_measures") or []
    ]


QUALITY_HEADER = [
    "model",
    "reasoning/answer inconsistent",
    "reasoning leak",
    "degenerate",
    "empty",
    "unfinished",
    "repetition loop",
    "incoherent",
]


def quality_rows(report: dict[str, Any]) -> Rows:
    """Reasoning and output quality per model (``n/a`` where not measurable; reasons in ``na_reasons``)."""
    rows = []
    for m, h in report["summary"].items():
        q = h.get("quality") or {}
        by = q.get("degenerate_by_reason") or {}
        rows.append(
            [
                m,
                fmt_rate(q.get("inconsistent")),
                fmt_rate(q.get("reasoning_leak")),
                fmt_rate(q.get("degenerate")),
                *(fmt_rate(by.get(k)) for k in ("empty", "unfinished", "repetition", "incoherent")),
            ]
        )
    return rows


def na_reasons(report: dict[str, Any]) -> list[str]:
    """Why a quality measure is n/a, once per distinct reason."""
    seen: dict[str, list[str]] = {}
    for m, h in report["summary"].items():
        for key in ("inconsistent", "reasoning_leak"):
            r = (h.get("quality") or {}).get(key) or {}
            if r.get("na"):
                seen.setdefault(f"{key.replace('_', ' ')}: {r['na']}", []).append(m)
    return [f"{k} ({', '.join(v)})" for k, v in seen.items()]


def by_model(report: dict[str, Any], key: str) -> tuple[list[str], Rows]:
    """A name x model table of one summary breakdown (e.g. ASR by attack)."""
    models = list(report["summary"])
    names = sorted({k for h in report["summary"].values() for k in (h.get(key) or {})})
    rows = [[n] + [fmt_rate((report["summary"][m].get(key) or {}).get(n)) for m in models] for n in names]
    return ["", *models], rows


def split_rows(report: dict[str, Any]) -> Rows:
    """ASR on train vs held-out attacks per model (empty when the recipe has no attack split)."""
    rows = [
        [label] + [fmt_rate(report["summary"][m].get(key)) for m in report["summary"]]
        for label, key in (
            ("train attacks (seen in training data)", "asr_jailbreak_train"),
            ("held-out attacks (never trained on)", "asr_jailbreak_heldout"),
        )
    ]
    return rows if any(c != "–" for r in rows for c in r[1:]) else []


def lm_text(lm: dict[str, Any]) -> str:
    if "tasks" in lm:
        return "; ".join(
            f"{t}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if not k.endswith("stderr"))
            for t, m in lm["tasks"].items()
        )
    return str(lm.get("skipped") or lm.get("error"))


def lm_rows(report: dict[str, Any]) -> Rows:
    rows = []
    for m, h in report["summary"].items():
        lm = h.get("lm_eval")
        if not lm:
            continue
        if "tasks" in lm:
            for task, metrics in lm["tasks"].items():
                shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if not k.endswith("stderr"))
                rows.append([m, task, shown])
        else:
            rows.append([m, "–", str(lm.get("skipped") or lm.get("error"))])
    return rows


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


def contamination_rows(c: dict[str, Any]) -> Rows:
    return [
        [
            e["match"],
            f"{e['cosine']:.3f}",
            e["suite"],
            e["eval_id"],
            e["eval_excerpt"],
            f"{e['train_file']}:{e['train_line']}",
        ]
        for e in c.get("examples") or []
    ]


CONTAMINATION_HEADER = ["match", "cosine", "suite", "eval id", "eval prompt", "training file:line"]


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


def data_lines(report: dict[str, Any]) -> list[str]:
    """Sentences about the training data (RIT-D, SRPO pairs) when the run made it."""
    lines: list[str] = []
    rw = report["data"].get("synth_rw")
    if rw:
        srs = rw.get("shortest_rejection_sampling", {})
        lines.append(
            f"RIT-D: {rw.get('accepted')} of {rw.get('prompts')} prompts accepted; rejection reasons "
            f"{rw.get('rejection_reasons')}; Shortest Rejection Sampling (k={srs.get('k')}) token reduction "
            f"{100 * (srs.get('token_reduction') or 0):.1f}% vs a random passing candidate."
        )
    srpo = report["data"].get("synth_srpo")
    if srpo:
        lines.append(
            f"SRPO pairs: {srpo.get('by_type')} (dropped: {srpo.get('dropped') or 'none'}; "
            f"length check: {srpo.get('length')})"
        )
    return lines


INTRO = (
    "Every rate with its 95% interval, k/n and the interval method: Wilson score (or exact Clopper-Pearson), and "
    "for prompts that share a base prompt (jailbreak-wrapped, both phrasings of a request) the same interval on "
    "the effective sample size over base prompts (at 0/n and n/n: the number of base prompts). n leaves out "
    "unparseable verdicts (counted per model); verdicts on unfinished or truncated turns count and are counted "
    "apart. ASR = share of harmful prompts with attack success (lower is better); over-refusal = share of "
    "benign/borderline prompts refused (lower is better). Each name means one set of prompts everywhere "
    "(Definitions)."
)


def templates_text(report: dict[str, Any]) -> str:
    """One line: the chat template each model was prompted with ("+markers": a training template with the same
    rendering), so a base-vs-trained comparison visibly changes the weights and not the prompt format."""
    tpl = report.get("templates") or {}
    if not tpl:
        return ""
    return "Chat templates: " + ", ".join(f"{m} {v}" for m, v in tpl.items()) + "."
