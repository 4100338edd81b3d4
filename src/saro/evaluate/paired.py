"""Paired comparisons of two models on the same prompts: the difference of two rates with its 95% interval and
an exact McNemar p-value.

Why: two models answer the same prompts, so their outcomes are paired; comparing overlapping marginal intervals
throws that pairing away and cannot tell whether a difference is real. For each prompt both models answered,
``b`` = prompts where model A had the outcome and B did not, ``c`` = the reverse; ``diff`` = rate(B) - rate(A)
= (c - b) / n. The interval is Newcombe's hybrid score interval for a paired difference (Newcombe 1998, method 10:
the two Wilson intervals combined with the continuity-corrected phi correlation); when prompts share a base prompt it is widened to contain
a paired cluster bootstrap over base prompts. The p-value is the exact two-sided binomial test of b against c
(exact McNemar).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from saro.stats import MIN_BOOT, cluster_bootstrap, wilson

log = logging.getLogger(__name__)

ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c trials at p = 1/2."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


def newcombe_paired(both: int, b: int, c: int, neither: int) -> tuple[float, float]:
    """Newcombe's (1998, method 10) 95% interval for p_B - p_A from a paired 2x2 table.

    ``both``: outcome under A and B; ``b``: under A only; ``c``: under B only; ``neither``: under none.
    """
    n = both + b + c + neither
    if n == 0:
        return (math.nan, math.nan)
    pa, pb = (both + b) / n, (both + c) / n
    la, ua = wilson(both + b, n)
    lb, ub = wilson(both + c, n)
    den = (both + b) * (c + neither) * (both + c) * (b + neither)
    cross: float = both * neither - b * c
    # Newcombe's continuity-corrected phi (as in Altman et al., Statistics with Confidence, 2000, p. 52)
    cross = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = cross / math.sqrt(den) if den > 0 else 0.0
    d = pb - pa
    dl = math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    du = math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return (max(-1.0, d - dl), min(1.0, d + du))


def newcombe_independent(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
    """Newcombe's (1998, method 10) 95% interval for p_A - p_B of two independent proportions.

    ``a`` and ``b`` are (rate, lo, hi) with each rate's own 95% interval (Wilson, or one widened by a cluster
    bootstrap), so the difference inherits whatever clustering the two intervals account for.
    """
    (pa, la, ua), (pb, lb, ub) = a, b
    d = pa - pb
    lo = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return (max(-1.0, lo), min(1.0, hi))


def compare(
    a: Sequence[bool],
    b: Sequence[bool],
    clusters: Sequence[str] | None = None,
    n_boot: int = MIN_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """The paired comparison of outcome vectors ``a`` and ``b`` (same prompts, same order)."""
    n = len(a)
    nb = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    nc = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    lo, hi = newcombe_paired(both, nb, nc, n - both - nb - nc)
    method = "newcombe"
    if clusters is not None and len(set(clusters)) < n:
        d = [(1.0 if y else 0.0) - (1.0 if x else 0.0) for x, y in zip(a, b, strict=True)]
        blo, bhi = cluster_bootstrap(d, clusters, n_boot, seed)
        lo, hi, method = min(lo, blo), max(hi, bhi), "newcombe+cluster_bootstrap"
    return {
        "n": n,
        "b": nb,
        "c": nc,
        "rate_a": round((both + nb) / n, 4) if n else None,
        "rate_b": round((both + nc) / n, 4) if n else None,
        "diff": round((nc - nb) / n, 4) if n else None,
        "lo": round(lo, 4),
        "hi": round(hi, 4),
        "p": mcnemar_exact(nb, nc),
        "method": method + " interval; exact McNemar p",
    }


def fmt_p(p: float) -> str:
    """A p-value as shown: three significant digits, "<0.001" below that."""
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def conclusion(entry: dict[str, Any], lower_is_better: bool = True) -> str:
    """The comparison in words: which model is better by how much, or that the data cannot tell them apart."""
    n, p = entry["n"], entry["p"]
    if p >= ALPHA:
        return f"no detectable difference at n={n} (p={fmt_p(p)})"
    d = 100 * entry["diff"]
    better = entry["model_b"] if (d < 0) == lower_is_better else entry["model_a"]
    direction = "lower" if d < 0 else "higher"
    return f"{entry['model_b']} {direction} by {abs(d):.1f} points at n={n} (p={fmt_p(p)}); better: {better}"


Outcome = Callable[[Any], bool]


def paired_comparisons(
    groups: dict[tuple[str, str], dict[str, dict[str, tuple[bool, str]]]],
    lower_is_better: dict[str, bool],
    n_boot: int = MIN_BOOT,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Every model pair on every (metric, suite) group.

    ``groups[(metric, suite)][model][prompt_id] = (outcome, base_id)``; prompts that only one model answered are
    left out of that pair (and counted in ``unpaired``).
    """
    out: list[dict[str, Any]] = []
    for (metric, suite), by_model in groups.items():
        for ma, mb in itertools.combinations(list(by_model), 2):
            xa, xb = by_model[ma], by_model[mb]
            common = sorted(set(xa) & set(xb))
            if not common:
                continue
            entry: dict[str, Any] = {"metric": metric, "suite": suite, "model_a": ma, "model_b": mb}
            entry |= compare(
                [xa[p][0] for p in common],
                [xb[p][0] for p in common],
                [xa[p][1] for p in common],
                n_boot,
                seed,
            )
            entry["unpaired"] = len(set(xa) ^ set(xb))
            entry["conclusion"] = conclusion(entry, lower_is_better.get(metric, True))
            out.append(entry)
    return out
