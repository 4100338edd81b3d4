"""The minimum detectable difference (MDD) of a paired comparison: the smallest difference of two rates that the
comparison's test would find at 80% power (two-sided alpha 0.05) at its n, clustering taken into account.

Why: "no detectable difference at n=40" reads as "the models are alike" unless it says how large a difference
could have been missed. Method (normal approximation to McNemar's test, Connor 1987, "Sample size for testing
differences in proportions for the paired-sample design", Biometrics 43:207-211): with discordance rate psi (share
of prompts on which the two models' outcomes differ) and a true difference d, the test on n independent pairs has
power ``Phi((sqrt(n) * d - z_{alpha/2} * sqrt(psi)) / sqrt(psi - d^2))``. Clustering enters through the effective
number of pairs ``n_eff = n / deff * (z / t_{C-1})^2``: the design effect ``deff`` of the per-prompt differences
(cluster-robust over independent variance, at least 1; the worst case, the size-weighted mean cluster size, when
the data carry no discordance to estimate it from) and Korn-Graubard's degrees-of-freedom factor for C clusters.
Under the alternative the discordance is at least the difference itself (``psi >= d``), so the MDD stays honest
when the observed discordance is 0. ``tests/test_paired_clustered.py`` checks it against the simulated power of the exact tests.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist

log = logging.getLogger(__name__)

ALPHA = 0.05
POWER = 0.8
_NORMAL = NormalDist()


def paired_power(n_eff: float, discordance: float, diff: float, alpha: float = ALPHA) -> float:
    """Approximate power of a two-sided paired test on ``n_eff`` independent pairs (see the module docstring)."""
    d = abs(diff)
    if n_eff <= 0 or d <= 0:
        return alpha / 2 if d <= 0 else 0.0
    psi = min(1.0, max(discordance, d))
    za = _NORMAL.inv_cdf(1 - alpha / 2)
    sd = math.sqrt(max(psi - d * d, 1e-12))
    return _NORMAL.cdf((math.sqrt(n_eff) * d - za * math.sqrt(psi)) / sd)


def min_detectable_difference(
    n_eff: float, discordance: float, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest |p_B - p_A| detected with ``power`` at ``n_eff`` effective pairs (None: not even a difference
    of 1 is, e.g. n_eff < 4)."""
    if n_eff <= 0 or paired_power(n_eff, discordance, 1.0, alpha) < power:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):  # power rises with the difference: bisect
        mid = (lo + hi) / 2
        if paired_power(n_eff, discordance, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi
