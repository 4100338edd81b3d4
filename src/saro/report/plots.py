"""Report plots as PNG bytes (matplotlib, Agg canvas, no pyplot state): attack success by attack, the safety
versus over-refusal trade-off, the four headline measures, token cost, and judge agreement. Error bars are each
rate's 95% interval (``lo``, ``hi``: Wilson or cluster bootstrap, see ``intervals.py``)."""

from __future__ import annotations

import io
import logging
from typing import Any

log = logging.getLogger(__name__)

COLORS = ["#3b6ea8", "#d9822b", "#4f9a5b", "#b6454b", "#7d63a8", "#8c6d4f", "#cf6fa8", "#6f6f6f"]


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _pct(r: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(rate, lower error, upper error) in percent, or None when the rate is missing."""
    if not r or r.get("rate") is None:
        return None
    v = 100 * r["rate"]
    lo, hi = (r["lo"], r["hi"]) if "lo" in r else (r.get("ci95") or [None, None])
    lo = v if lo is None else 100 * lo
    hi = v if hi is None else 100 * hi
    return v, max(0.0, v - lo), max(0.0, hi - v)


def _grouped_bars(ax: Any, groups: list[str], models: list[str], value) -> None:
    """Bars per group (x) and model (colour) with CI whiskers; ``value(model, group)`` -> rate dict or None."""
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for g, _ in enumerate(groups):
            p = _pct(value(m, groups[g]))
            if p is None:
                continue
            xs.append(g - 0.4 + width * (i + 0.5))
            ys.append(p[0])
            lo.append(p[1])
            hi.append(p[2])
        ax.bar(xs, ys, width, color=COLORS[i % len(COLORS)], label=m)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="#222", elinewidth=0.8, capsize=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)


def plot_headline(summary: dict[str, Any]) -> bytes:
    """Four panels: ASR on plain harmful prompts, ASR under jailbreaks, over-refusal, capability accuracy."""
    models = list(summary)
    panels = [
        ("asr_harmful", "ASR plain harmful (lower is better)"),
        ("asr_jailbreak", "ASR jailbreak (lower is better)"),
        ("over_refusal", "over-refusal (lower is better)"),
        ("accuracy", "accuracy (higher is better)"),
    ]
    fig = _figure(11, 3.2)
    for k, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 4, k + 1)
        for i, m in enumerate(models):
            p = _pct(summary[m].get(key))
            if p is None:
                continue
            ax.bar([i], [p[0]], 0.7, color=COLORS[i % len(COLORS)])
            ax.errorbar(
                [i], [p[0]], yerr=[[p[1]], [p[2]]], fmt="none", ecolor="#222", elinewidth=0.8, capsize=3
            )
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_asr_by_attack(summary: dict[str, Any]) -> bytes:
    """Attack success per attack ("none" = plain prompts), one bar per model, with 95% intervals."""
    models = list(summary)
    attacks = sorted(
        {a for h in summary.values() for a in (h.get("asr_by_attack") or {})}, key=lambda a: (a != "none", a)
    )
    fig = _figure(max(6.0, 1.0 + 0.55 * len(attacks) * max(1, len(models)) ** 0.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    _grouped_bars(ax, attacks, models, lambda m, a: (summary[m].get("asr_by_attack") or {}).get(a))
    ax.set_ylim(0, 120)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("attack success rate (%)")
    ax.set_title("Attack success by attack (lower is better)", fontsize=10)
    ax.legend(fontsize=8, ncol=min(6, len(models)), loc="upper center")
    return _png(fig)


def plot_tradeoff(summary: dict[str, Any]) -> bytes:
    """Safety versus over-refusal: ASR (y) against over-refusal (x) per model, with 95% interval whiskers;
    the lower-left corner is best."""
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for i, (m, h) in enumerate(summary.items()):
        y = _pct(h.get("asr_overall") or h.get("asr_harmful"))
        x = _pct(h.get("over_refusal"))
        if x is None or y is None:
            continue
        c = COLORS[i % len(COLORS)]
        ax.errorbar(
            [x[0]],
            [y[0]],
            xerr=[[x[1]], [x[2]]],
            yerr=[[y[1]], [y[2]]],
            fmt="o",
            color=c,
            ecolor=c,
            capsize=3,
        )
        ax.annotate(m, (x[0], y[0]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("over-refusal on benign / borderline prompts (%)")
    ax.set_ylabel("attack success on harmful prompts (%)")
    ax.set_title("Safety vs over-refusal (lower-left is better)", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_tokens(summary: dict[str, Any]) -> bytes:
    """Token cost per model: mean reasoning + answer tokens (stacked), p95 of the total as a marker."""
    models = list(summary)
    fig = _figure(max(4.5, 1.2 * len(models) + 2), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(models)))
    r = [(summary[m].get("tokens") or {}).get("reasoning_mean", 0.0) for m in models]
    a = [(summary[m].get("tokens") or {}).get("answer_mean", 0.0) for m in models]
    p95 = [(summary[m].get("tokens") or {}).get("total_p95", 0.0) for m in models]
    ax.bar(xs, r, 0.6, color=COLORS[0], label="reasoning (mean)")
    ax.bar(xs, a, 0.6, bottom=r, color=COLORS[1], label="answer (mean)")
    ax.scatter(xs, p95, marker="_", s=400, color="#222", label="total p95", zorder=3)
    ax.set_xticks(xs)
    ax.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, max(1.0, *p95, *[x + y for x, y in zip(r, a, strict=True)]) * 1.15)
    ax.set_ylabel("tokens per generation")
    ax.set_title("Token cost per model", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_agreement(agreement: dict[str, Any]) -> bytes:
    """Heatmap of pairwise judge agreement (share of equal verdicts), Cohen's kappa in each cell."""
    names = agreement["judges"]
    k = len(names)
    mat = [[(v if v is not None else float("nan")) for v in row] for row in agreement["agreement"]]
    fig = _figure(1.6 + 1.1 * k, 1.2 + 0.9 * k)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ag = agreement["agreement"][i][j]
            kp = agreement["kappa"][i][j]
            txt = "–" if ag is None else f"{100 * ag:.0f}%" + ("" if kp is None else f"\nκ {kp:.2f}")
            ax.text(
                j, i, txt, ha="center", va="center", fontsize=8, color="#000" if (ag or 0) < 0.6 else "#fff"
            )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_title(f"Judge agreement on harmful prompts (n={agreement.get('n_items', '?')})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig)


def report_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """Every plot the report has data for, by name (a plot that fails is logged and left out)."""
    summary = report["summary"]
    todo: dict[str, Any] = {
        "headline": lambda: plot_headline(summary),
        "tradeoff": lambda: plot_tradeoff(summary),
        "tokens": lambda: plot_tokens(summary),
    }
    if any((h.get("asr_by_attack") or {}) for h in summary.values()):
        todo["asr_by_attack"] = lambda: plot_asr_by_attack(summary)
    if report.get("agreement"):
        todo["agreement"] = lambda: plot_agreement(report["agreement"])
    out: dict[str, bytes] = {}
    for name, fn in todo.items():
        try:
            out[name] = fn()
        except Exception as e:  # a plot must never cost the report
            log.warning("report: plot %s failed (%s: %s)", name, type(e).__name__, e)
    return out
