"""95% intervals for rates: Wilson score, exact Clopper-Pearson, and, for prompts that share a base prompt, the
same intervals on the Korn-Graubard effective sample size.

Why: prompts made from one base prompt (jailbreak-wrapped versions, both phrasings of a request, prefills of one
request) tend to share their outcome, so 80 prompts over 10 base prompts carry far less information than 80
independent prompts. A percentile bootstrap over base prompts collapses to [0, 0] at 0/n and n/n and is too
narrow with few clusters. Here a clustered rate uses the effective sample size of Korn & Graubard (1998,
"Confidence intervals for proportions with small expected number of positive counts estimated from survey data",
Survey Methodology 24:193-201): ``n_eff = p(1 - p) / Var_cluster(p)`` with the cluster-robust (ratio-estimator)
variance over base prompts, never more than n (design effect >= 1), times their degrees-of-freedom factor
``(z / t_{C-1})^2`` for C clusters; the Wilson (or exact) interval is then computed on ``p * n_eff`` of
``n_eff``. At 0/n and n/n the variance is 0 and says nothing about how alike the prompts of a base prompt are, so
the worst case is taken: every prompt of a base prompt shares its outcome, n_eff = C (times the df factor):
0/80 over 10 base prompts is [0, 33.9%], not [0, 4.6%]. The interval always contains the independent-prompts
Wilson interval. ``method="cluster_bootstrap"`` also widens it to contain a cluster bootstrap (>= 2000 resamples).

Checked by simulation (beta-binomial clusters, 6 to 40 clusters of 2 to 10 prompts, ICC 0 to 0.95, p 0.02 to
0.4): coverage of the nominal 95% interval 0.915 to 0.997, at least 0.93 in most settings.

A rate is ``{"rate", "k", "n", "lo", "hi", "method", "clusters", "n_eff", "count", "ci95"}``; ``count`` (= k) and
``ci95`` (= [lo, hi]) are kept for readers of older reports.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

log = logging.getLogger(__name__)

Z95 = 1.959963984540054
MIN_BOOT = 2000
_CHUNK = 2_000_000  # cluster draws held in memory at once
IntervalMethod = Literal["wilson", "clopper_pearson", "cluster_bootstrap"]
METHOD_LABELS = {
    "wilson": "Wilson",
    "clopper_pearson": "Clopper-Pearson",
    "wilson_neff": "Wilson on effective n",
    "clopper_pearson_neff": "Clopper-Pearson on effective n",
    "wilson_neff+cluster_bootstrap": "Wilson on effective n + cluster bootstrap",
    "clopper_pearson_neff+cluster_bootstrap": "Clopper-Pearson on effective n + cluster bootstrap",
    # written by older versions
    "cluster_bootstrap+wilson": "cluster bootstrap + Wilson",
    "cluster_bootstrap+clopper_pearson": "cluster bootstrap + Clopper-Pearson",
}


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials ((nan, nan) for n = 0); k and n may be effective
    (non-integer) counts."""
    if n <= 0:
        return (math.nan, math.nan)
    p = min(1.0, max(0.0, k / n))
    den = n + z * z
    center = (n * p + z * z / 2) / den
    half = z * math.sqrt(n * p * (1 - p) + z * z / 4) / den
    return (max(0.0, center - half), min(1.0, center + half))


def clopper_pearson(k: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval from beta quantiles; k and n may be effective (non-integer) counts."""
    from scipy.special import betaincinv

    if n <= 0:
        return (math.nan, math.nan)
    k = min(float(n), max(0.0, float(k)))
    lo = 0.0 if k <= 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k >= n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return (lo, hi)


@functools.lru_cache(maxsize=4096)
def t_quantile(df: float, q: float = 0.975) -> float:
    """Student t quantile (the normal one for df = inf)."""
    from scipy.special import stdtrit

    return NormalDist().inv_cdf(q) if math.isinf(df) else float(stdtrit(df, q))


@dataclass(frozen=True)
class Clusters:
    """Per-cluster sums and sizes of a 0/1 (or any numeric) sample, in first-seen order."""

    sums: tuple[float, ...]
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, values: Sequence[bool | float], clusters: Sequence[str]) -> Clusters:
        sums: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for v, c in zip(values, clusters, strict=True):
            sums[c] = sums.get(c, 0.0) + float(v)
            sizes[c] = sizes.get(c, 0) + 1
        return cls(tuple(sums.values()), tuple(sizes.values()))

    @property
    def n(self) -> int:
        return sum(self.sizes)

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def clustered(self) -> bool:
        """Some cluster holds more than one value."""
        return any(s > 1 for s in self.sizes)

    @property
    def weighted_size(self) -> float:
        """The size-weighted mean cluster size, sum(m^2) / n: the one a design effect is made of."""
        return sum(s * s for s in self.sizes) / self.n if self.n else 0.0

    def ratio_variance(self) -> float:
        """Cluster-robust variance of the mean sum(sums) / n (ratio estimator, C / (C - 1) correction)."""
        n, c = self.n, self.count
        if c < 2 or n == 0:
            return math.nan
        mean = sum(self.sums) / n
        ss = sum((y - mean * m) ** 2 for y, m in zip(self.sums, self.sizes, strict=True))
        return c / (c - 1) * ss / (n * n)

    def df_factor(self) -> float:
        """Korn-Graubard's degrees-of-freedom factor (z / t_{C-1})^2 (1 with one cluster per value)."""
        if not self.clustered:
            return 1.0
        return (Z95 / t_quantile(max(1, self.count - 1))) ** 2


def effective_n(values: Sequence[bool | float], clusters: Sequence[str]) -> float:
    """Korn-Graubard effective sample size of a clustered sample of values in [0, 1] (see the module docstring): n
    when no cluster holds two values; the number of clusters (times the df factor) when the mean is 0 or 1."""
    cl = Clusters.of(values, clusters)
    n = cl.n
    if n == 0:
        return 0.0
    if not cl.clustered:
        return float(n)
    p = sum(cl.sums) / n
    if p <= 0.0 or p >= 1.0 or cl.count < 2:
        base = float(cl.count)
    else:
        deff = max(1.0, cl.ratio_variance() / (p * (1 - p) / n))
        base = n / deff
    return min(float(n), base * cl.df_factor())


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


def interval(k: float, n: float, method: str = "wilson") -> tuple[float, float]:
    """The Wilson or exact interval of k of n (effective counts allowed)."""
    return clopper_pearson(k, n) if method == "clopper_pearson" else wilson(k, n)


def rate(
    values: Sequence[bool],
    clusters: Sequence[str] | None = None,
    method: IntervalMethod = "wilson",
    n_boot: int = MIN_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """A rate with k, n, its 95% interval and the method that produced it.

    ``clusters`` (one base-prompt id per value): when some values share a cluster, the interval is the Wilson
    (or exact) interval on the Korn-Graubard effective sample size, widened to contain the independent one;
    ``method="cluster_bootstrap"`` also widens it to contain a cluster bootstrap.
    """
    n = len(values)
    k = sum(1 for v in values if v)
    n_clusters = len(set(clusters)) if clusters is not None else n
    if n == 0:
        return _rate_dict(None, 0, 0, None, None, method, 0, 0.0)
    base = "clopper_pearson" if method == "clopper_pearson" else "wilson"
    lo, hi = interval(k, n, base)
    used, n_eff = base, float(n)
    if clusters is not None and n_clusters < n:
        n_eff = effective_n(values, clusters)
        elo, ehi = interval(k / n * n_eff, n_eff, base)
        lo, hi, used = min(lo, elo), max(hi, ehi), f"{base}_neff"
    if clusters is not None and method == "cluster_bootstrap":
        blo, bhi = cluster_bootstrap([1.0 if v else 0.0 for v in values], clusters, n_boot, seed)
        lo, hi = min(lo, blo), max(hi, bhi)
        used = f"{base}_neff+cluster_bootstrap" if used.endswith("_neff") else f"cluster_bootstrap+{base}"
    return _rate_dict(k / n, k, n, lo, hi, used, n_clusters, n_eff)


def mean_of(values: Sequence[float], clusters: Sequence[str] | None = None) -> dict[str, Any]:
    """The mean of scores in [0, 1] (e.g. StrongREJECT's) with a 95% interval: Wilson on the (effective) sample
    size with the mean as a fractional success count, conservative for scores between 0 and 1 (a Bernoulli
    variable has the largest variance of any with that mean)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "n": 0, "lo": None, "hi": None, "method": "wilson", "clusters": 0}
    keys = list(clusters) if clusters is not None else [str(i) for i in range(n)]
    total = float(sum(values))
    n_eff = effective_n(values, keys)
    lo, hi = wilson(total / n * n_eff, n_eff)
    wlo, whi = wilson(total, n)
    return {
        "mean": _round(total / n),
        "n": n,
        "lo": _round(min(lo, wlo)),
        "hi": _round(max(hi, whi)),
        "method": "wilson_neff" if n_eff < n else "wilson",
        "clusters": len(set(keys)),
        "n_eff": round(n_eff, 2),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _rate_dict(
    p: float | None,
    k: int,
    n: int,
    lo: float | None,
    hi: float | None,
    method: str,
    clusters: int,
    n_eff: float,
) -> dict[str, Any]:
    return {
        "rate": _round(p),
        "k": k,
        "n": n,
        "lo": _round(lo),
        "hi": _round(hi),
        "method": method,
        "clusters": clusters,
        "n_eff": round(n_eff, 2),
        "count": k,
        "ci95": [_round(lo), _round(hi)],
    }


def method_label(method: str | None) -> str:
    """The interval method as shown beside a rate ("Wilson", "Wilson on effective n", ...)."""
    return METHOD_LABELS.get(method or "", method or "bootstrap")


def _pct(x: float) -> str:
    v = 100 * x
    return f"{v:.1f}" if v not in (0.0, 100.0) else f"{v:.0f}"


def fmt_rate(r: Mapping[str, Any] | None) -> str:
    """How a rate is written: ``3.1% [0.6–15.7] (1/32, Wilson)`` (rate, 95% interval, k/n and the interval method,
    with the base prompts of a clustered rate and the unparseable verdicts left out), an en dash when there is
    nothing to show, ``n/a`` when the rate is not measurable (its reason kept apart)."""
    if not r:
        return "–"
    if r.get("rate") is None:
        return "n/a" if r.get("na") else "–"
    s = f"{100 * r['rate']:.1f}%"
    lo, hi = r.get("lo"), r.get("hi")
    if lo is None and r.get("ci95"):
        lo, hi = r["ci95"]
    if lo is not None and hi is not None:
        s += f" [{_pct(lo)}–{_pct(hi)}]"
    k = r.get("k", r.get("count"))
    if not r.get("method"):
        return s + f" ({k}/{r['n']})"
    how = method_label(r.get("method"))
    if ("neff" in r["method"] or r["method"].startswith("cluster")) and r.get("clusters"):
        how += f", {r['clusters']} base prompts"
    if r.get("unparseable"):
        how += f"; {r['unparseable']} unparseable left out"
    return s + f" ({k}/{r['n']}, {how})"
