"""95% intervals for rates: Wilson score, exact Clopper-Pearson, and a cluster bootstrap over base prompts.

Why: a percentile bootstrap of a 0/1 sample collapses to [0, 0] at 0/n and treats jailbreak-wrapped prompts that
share one base prompt as independent. The Wilson interval is honest at small n (0/32 -> [0, 10.7]%); prompts that
share a ``base_id`` are resampled as whole clusters, and that interval is widened to contain the Wilson one, so a
cluster bootstrap can never report less uncertainty than the independent-prompts bound.

A rate is ``{"rate", "k", "n", "lo", "hi", "method", "clusters", "count", "ci95"}``; ``count`` (= k) and ``ci95``
(= [lo, hi]) are kept for readers of older reports.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

log = logging.getLogger(__name__)

Z95 = 1.959963984540054
MIN_BOOT = 2000
_CHUNK = 2_000_000  # cluster draws held in memory at once
IntervalMethod = Literal["wilson", "clopper_pearson", "cluster_bootstrap"]
METHOD_LABELS = {
    "wilson": "Wilson",
    "clopper_pearson": "Clopper-Pearson",
    "cluster_bootstrap+wilson": "cluster bootstrap + Wilson",
    "cluster_bootstrap+clopper_pearson": "cluster bootstrap + Clopper-Pearson",
}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials ((nan, nan) for n = 0)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    den = n + z * z
    center = (k + z * z / 2) / den
    half = z * math.sqrt(n * p * (1 - p) + z * z / 4) / den
    return (max(0.0, center - half), min(1.0, center + half))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (stable for large n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k + 1)
    ]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def _bisect(f: Any, target: float, decreasing: bool) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        v = f(mid)
        if (v > target) == decreasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval: the p at which P(X >= k) and P(X <= k) equal alpha / 2."""
    if n <= 0:
        return (math.nan, math.nan)
    lo = 0.0 if k == 0 else _bisect(lambda p: 1 - _binom_cdf(k - 1, n, p), alpha / 2, decreasing=False)
    hi = 1.0 if k == n else _bisect(lambda p: _binom_cdf(k, n, p), alpha / 2, decreasing=True)
    return (lo, hi)


def cluster_bootstrap(
    values: Sequence[bool | float], clusters: Sequence[str], n_boot: int = MIN_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap of a mean resampling whole clusters (vectorised: cluster sums and sizes)."""
    import numpy as np

    ids: dict[str, int] = {}
    idx = np.array([ids.setdefault(c, len(ids)) for c in clusters], dtype=np.int64)
    xs = np.asarray(values, dtype="float64")
    if xs.size == 0:
        return (math.nan, math.nan)
    sums = np.bincount(idx, weights=xs)
    sizes = np.bincount(idx).astype("float64")
    rng = np.random.default_rng(seed)
    total, j = max(n_boot, MIN_BOOT), len(ids)
    step = max(1, _CHUNK // j)  # resamples per chunk: bounded memory at any number of clusters
    means = []
    for start in range(0, total, step):
        draw = rng.integers(0, j, size=(min(step, total - start), j))
        means.append(sums[draw].sum(axis=1) / sizes[draw].sum(axis=1))
    lo, hi = np.quantile(np.concatenate(means), [0.025, 0.975])
    return (float(lo), float(hi))


def rate(
    values: Sequence[bool],
    clusters: Sequence[str] | None = None,
    method: IntervalMethod = "wilson",
    n_boot: int = MIN_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """A rate with k, n, its 95% interval and the method that produced it.

    ``clusters`` (one base-prompt id per value): when some values share a cluster, or with
    ``method="cluster_bootstrap"``, the interval is a cluster bootstrap widened to contain the Wilson (or, with
    ``clopper_pearson``, the exact) interval.
    """
    n = len(values)
    k = sum(1 for v in values if v)
    n_clusters = len(set(clusters)) if clusters is not None else n
    if n == 0:
        return _rate_dict(None, 0, 0, None, None, method, 0)
    base = "clopper_pearson" if method == "clopper_pearson" else "wilson"
    lo, hi = clopper_pearson(k, n) if base == "clopper_pearson" else wilson(k, n)
    used = base
    if clusters is not None and (n_clusters < n or method == "cluster_bootstrap"):
        blo, bhi = cluster_bootstrap([1.0 if v else 0.0 for v in values], clusters, n_boot, seed)
        lo, hi, used = min(lo, blo), max(hi, bhi), f"cluster_bootstrap+{base}"
    return _rate_dict(k / n, k, n, lo, hi, used, n_clusters)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _rate_dict(
    p: float | None, k: int, n: int, lo: float | None, hi: float | None, method: str, clusters: int
) -> dict[str, Any]:
    return {
        "rate": _round(p),
        "k": k,
        "n": n,
        "lo": _round(lo),
        "hi": _round(hi),
        "method": method,
        "clusters": clusters,
        "count": k,
        "ci95": [_round(lo), _round(hi)],
    }


def method_label(method: str | None) -> str:
    """The interval method as shown beside a rate ("Wilson", "cluster bootstrap + Wilson", ...)."""
    return METHOD_LABELS.get(method or "", method or "bootstrap")
