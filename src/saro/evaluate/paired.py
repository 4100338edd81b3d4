"""Paired comparisons of two models on the same prompts: the difference of two rates with its 95% interval, a
p-value from a test that respects prompts sharing a base prompt, and the smallest difference the comparison could
have detected.

Why: two models answer the same prompts, so their outcomes are paired; comparing overlapping marginal intervals
throws that pairing away. And prompts made from one base prompt (jailbreak-wrapped versions, the two phrasings of a
request, prefills of one request) are not independent: counting 8 wrapped versions of a request as 8 pairs
overstates the evidence up to eightfold. For each prompt both models answered, ``b`` = prompts where model A had the
outcome and B did not, ``c`` = the reverse; ``diff`` = rate(B) - rate(A) = (c - b) / n.

- **Test.** Without shared base prompts: the exact McNemar test (two-sided binomial test of b against c). With
  them: an exact cluster-level sign-flip (randomization) test of ``T = sum_c d_c``, ``d_c`` = (B outcomes - A
  outcomes) summed over the prompts of base prompt c: under the null hypothesis that the two models are
  exchangeable on every base prompt, each ``d_c`` is as likely to have the opposite sign, so
  ``p = P(|sum_c e_c d_c| >= |T|)`` over independent random signs ``e_c``, computed exactly by convolution. This
  is the randomization test for clustered matched pairs (Fisher's sign-flip principle applied to cluster totals;
  the permutation counterpart of the clustered McNemar tests of Obuchowski 1998, Stat Med 17:1495-1507, and
  Durkalski et al. 2003, Stat Med 22:2417-2428, which are asymptotic and liberal with few clusters). With one
  prompt per cluster it is the exact McNemar test itself. Its size under the null is checked by simulation in
  ``tests/test_paired_clustered.py``.
- **Interval.** Newcombe's hybrid score interval for a paired difference (Newcombe 1998, method 10: the two
  marginal intervals combined with the continuity-corrected phi correlation). With shared base prompts the
  marginal intervals are the clustered ones (``saro.stats``: Wilson on the effective sample size) and the interval
  is widened to contain the cluster-robust t interval ``diff +- t_{C-1} * SE`` (ratio estimator over base prompts).
- **Minimum detectable difference** (``saro.evaluate.power``): the smallest difference the test would find at 80%
  power, from the observed discordance and design effect.

"Higher" / "lower" appear only when the test rejects at alpha = 0.05.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from saro.evaluate.power import min_detectable_difference
from saro.stats import Clusters, effective_n, t_quantile, wilson

log = logging.getLogger(__name__)

ALPHA = 0.05
Interval = tuple[float, float]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c trials at p = 1/2."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


def sign_flip_p(totals: Sequence[float]) -> float:
    """Exact two-sided p of the cluster sign-flip test: P(|sum e_c d_c| >= |sum d_c|) over random signs e_c.

    ``totals`` are the per-cluster sums of integer differences d_c; the null distribution is built by
    convolution over the possible sums (exact, O(clusters x sum |d_c|))."""
    import numpy as np

    ints = [round(d) for d in totals]  # sums of -1 / 0 / +1 differences: integers
    mags = [abs(d) for d in ints if d]
    observed = abs(sum(ints))
    if not mags:
        return 1.0
    span = sum(mags)
    dist = np.zeros(2 * span + 1)
    dist[span] = 1.0  # index span = a sum of 0
    for m in mags:
        dist = 0.5 * (np.roll(dist, m) + np.roll(dist, -m))  # no wrap-around: |partial sums| <= span
    sums = np.arange(-span, span + 1)
    return float(min(1.0, dist[np.abs(sums) >= observed].sum()))


def newcombe_paired(
    both: int, b: int, c: int, neither: int, margins: tuple[Interval, Interval] | None = None
) -> Interval:
    """Newcombe's (1998, method 10) 95% interval for p_B - p_A from a paired 2x2 table.

    ``both``: outcome under A and B; ``b``: under A only; ``c``: under B only; ``neither``: under none.
    ``margins``: the 95% intervals of rate A and rate B to combine (default: their Wilson intervals; the clustered
    intervals for prompts that share base prompts).
    """
    n = both + b + c + neither
    if n == 0:
        return (math.nan, math.nan)
    pa, pb = (both + b) / n, (both + c) / n
    (la, ua), (lb, ub) = margins or (wilson(both + b, n), wilson(both + c, n))
    den = (both + b) * (c + neither) * (both + c) * (b + neither)
    cross: float = both * neither - b * c
    # Newcombe's continuity-corrected phi (as in Altman et al., Statistics with Confidence, 2000, p. 52)
    cross = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = cross / math.sqrt(den) if den > 0 else 0.0
    d = pb - pa
    dl = math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    du = math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return (max(-1.0, d - dl), min(1.0, d + du))


def newcombe_independent(a: tuple[float, float, float], b: tuple[float, float, float]) -> Interval:
    """Newcombe's (1998, method 10) 95% interval for p_A - p_B of two independent proportions.

    ``a`` and ``b`` are (rate, lo, hi) with each rate's own 95% interval (Wilson, or the clustered one), so the
    difference inherits whatever clustering the two intervals account for.
    """
    (pa, la, ua), (pb, lb, ub) = a, b
    d = pa - pb
    lo = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return (max(-1.0, lo), min(1.0, hi))


def _clustered_margin(values: Sequence[bool], clusters: Sequence[str]) -> Interval:
    n_eff = effective_n(values, clusters)
    k = sum(1 for v in values if v)
    lo, hi = wilson(k / len(values) * n_eff, n_eff)
    wlo, whi = wilson(k, len(values))
    return (min(lo, wlo), max(hi, whi))


def _paired_design(diffs: Sequence[int], clusters: Sequence[str]) -> tuple[float, float, Clusters]:
    """(cluster-robust variance of the mean difference, design effect >= 1, the clusters) of per-prompt
    differences; the design effect is the worst case (weighted mean cluster size) when the differences do not
    vary, so there is nothing to estimate it from."""
    cl = Clusters.of(diffs, clusters)
    if not cl.clustered:
        return (0.0, 1.0, cl)
    n = cl.n
    mean = sum(diffs) / n
    var_ind = (sum(d * d for d in diffs) / n - mean * mean) / n
    var_c = cl.ratio_variance() if cl.count > 1 else math.nan
    if var_ind <= 0 or math.isnan(var_c):
        return (var_c if not math.isnan(var_c) else 0.0, max(1.0, cl.weighted_size), cl)
    return (var_c, max(1.0, var_c / var_ind), cl)


def compare(
    a: Sequence[bool],
    b: Sequence[bool],
    clusters: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The paired comparison of outcome vectors ``a`` and ``b`` (same prompts, same order), clustered by
    ``clusters`` (one base-prompt id per prompt) when given."""
    n = len(a)
    nb = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    nc = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    out: dict[str, Any] = {"n": n, "b": nb, "c": nc}
    if n == 0:
        return out | {"rate_a": None, "rate_b": None, "diff": None, "lo": None, "hi": None, "p": 1.0}
    keys = list(clusters) if clusters is not None else [str(i) for i in range(n)]
    diffs = [int(bool(y)) - int(bool(x)) for x, y in zip(a, b, strict=True)]
    var_c, deff, cl = _paired_design(diffs, keys)
    diff = (nc - nb) / n
    if cl.clustered:
        margins = (_clustered_margin(a, keys), _clustered_margin(b, keys))
        lo, hi = newcombe_paired(both, nb, nc, n - both - nb - nc, margins)
        half = t_quantile(max(1, cl.count - 1)) * math.sqrt(max(0.0, var_c))
        lo, hi = min(lo, diff - half), max(hi, diff + half)
        p, test = sign_flip_p(cl.sums), "exact cluster sign-flip test over base prompts"
        how = "Newcombe paired interval on clustered margins + cluster-robust t interval"
    else:
        lo, hi = newcombe_paired(both, nb, nc, n - both - nb - nc)
        p, test = mcnemar_exact(nb, nc), "exact McNemar test"
        how = "Newcombe paired interval"
    n_eff = n / deff * cl.df_factor()
    mdd = min_detectable_difference(n_eff, (nb + nc) / n, alpha)
    return out | {
        "rate_a": round((both + nb) / n, 4),
        "rate_b": round((both + nc) / n, 4),
        "diff": round(diff, 4),
        "lo": round(max(-1.0, lo), 4),
        "hi": round(min(1.0, hi), 4),
        "p": p,
        "test": test,
        "method": f"{how}; {test}",
        "clusters": cl.count,
        "deff": round(deff, 3),
        "n_eff": round(n_eff, 2),
        "mdd": None if mdd is None else round(mdd, 4),
    }


def fmt_p(p: float) -> str:
    """A p-value as shown: three significant digits, "<0.001" below that."""
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def fmt_mdd(entry: dict[str, Any]) -> str:
    """The minimum detectable difference as shown: "±12.3 pts" (or "> 100 pts" when none is reachable)."""
    if "mdd" not in entry:
        return "–"
    m = entry["mdd"]
    return "> 100 pts" if m is None else f"±{100 * m:.1f} pts"


def conclusion(entry: dict[str, Any], lower_is_better: bool = True) -> str:
    """The comparison in words: which model is better by how much, or that the data cannot tell them apart (and
    what difference they could have told)."""
    n, p = entry["n"], entry["p"]
    if p >= ALPHA:
        return f"no detectable difference at n={n} (p={fmt_p(p)}; detectable at 80% power: {fmt_mdd(entry)})"
    d = 100 * entry["diff"]
    better = entry["model_b"] if (d < 0) == lower_is_better else entry["model_a"]
    direction = "lower" if d < 0 else "higher"
    return f"{entry['model_b']} {direction} by {abs(d):.1f} points at n={n} (p={fmt_p(p)}); better: {better}"


Outcome = Callable[[Any], bool]
Group = dict[str, dict[str, tuple[bool | None, str]]]  # model -> prompt id -> (outcome or None, base id)


def paired_comparisons(
    groups: dict[tuple[str, str], Group],
    lower_is_better: dict[str, bool],
) -> list[dict[str, Any]]:
    """Every model pair on every (metric, suite) group.

    ``groups[(metric, suite)][model][prompt_id] = (outcome, base_id)``; an outcome of None is a verdict that could
    not be read (left out of the pair, counted in ``unparseable``); prompts that only one model answered are left
    out too (counted in ``unpaired``).
    """
    out: list[dict[str, Any]] = []
    for (metric, suite), by_model in groups.items():
        for ma, mb in itertools.combinations(list(by_model), 2):
            xa, xb = by_model[ma], by_model[mb]
            shared = sorted(set(xa) & set(xb))
            common = [p for p in shared if xa[p][0] is not None and xb[p][0] is not None]
            if not common:
                continue
            entry: dict[str, Any] = {"metric": metric, "suite": suite, "model_a": ma, "model_b": mb}
            entry |= compare(
                [bool(xa[p][0]) for p in common],
                [bool(xb[p][0]) for p in common],
                [xa[p][1] for p in common],
            )
            entry["unpaired"] = len(set(xa) ^ set(xb))
            entry["unparseable"] = len(shared) - len(common)
            entry["lower_is_better"] = lower_is_better.get(metric, True)
            entry["conclusion"] = conclusion(entry, entry["lower_is_better"])
            out.append(entry)
    return out


def oriented(entry: dict[str, Any], model_a: str, model_b: str) -> dict[str, Any] | None:
    """The comparison read as ``model_b`` - ``model_a`` (flipped when it was computed the other way round);
    None when it compares other models."""
    if (entry["model_a"], entry["model_b"]) == (model_a, model_b):
        return entry
    if (entry["model_a"], entry["model_b"]) != (model_b, model_a):
        return None
    flipped = dict(entry)
    flipped |= {
        "model_a": model_a,
        "model_b": model_b,
        "b": entry["c"],
        "c": entry["b"],
        "rate_a": entry["rate_b"],
        "rate_b": entry["rate_a"],
        "diff": None if entry["diff"] is None else -entry["diff"],
        "lo": None if entry["hi"] is None else -entry["hi"],
        "hi": None if entry["lo"] is None else -entry["lo"],
    }
    flipped["conclusion"] = conclusion(flipped, entry.get("lower_is_better", True))
    return flipped
