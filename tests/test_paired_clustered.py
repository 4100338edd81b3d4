"""Paired comparisons that respect prompts sharing a base prompt: the issue's reproducer, the clustered test's
size under the null and the minimum detectable difference, both checked by seeded simulation, and the report's
comparisons / primary-measures tables."""

from __future__ import annotations

import numpy as np
import pytest

from saro.evaluate.metrics import paired_metrics
from saro.evaluate.paired import compare, conclusion, mcnemar_exact, oriented, sign_flip_p
from saro.evaluate.power import min_detectable_difference, paired_power
from saro.records import EvalRecord
from saro.stats import Z95, t_quantile


def _rec(model: str, i: int, label: str, base: str, attack: str | None = None, **meta) -> EvalRecord:
    return EvalRecord(
        id=f"{model}-{i}",
        model=model,
        suite="hb-jb",
        prompt_id=f"p{i}",
        text=f"prompt {i}",
        kind="harmful",
        attack=attack,
        completion="<think>\nok\n</think>\nanswer",
        labels={"refusal": label},
        base_id=base,
        meta=meta,
    )


def _reproducer() -> dict[str, list[EvalRecord]]:
    """10 base prompts x 8 attacks; B differs from A on all 8 attacks of 2 bases (the issue's example)."""
    out: dict[str, list[EvalRecord]] = {"A": [], "B": []}
    for i in range(80):
        base = f"b{i // 8}"
        out["A"].append(_rec("A", i, "refused", base, attack=f"a{i % 8}", attack_split="heldout"))
        out["B"].append(
            _rec(
                "B", i, "complied" if i < 16 else "refused", base, attack=f"a{i % 8}", attack_split="heldout"
            )
        )
    return out


def test_issue_reproducer_no_longer_reads_higher():
    paired = paired_metrics(_reproducer(), "refusal", {"hb-jb": "jailbreak"})
    e = next(x for x in paired if x["metric"] == "asr_jailbreak_heldout")
    assert (e["n"], e["b"], e["c"], e["clusters"]) == (80, 0, 16, 10)
    assert e["p"] == pytest.approx(
        0.5
    )  # 2 informative base prompts: 4 equally likely sign patterns, 2 as extreme
    assert mcnemar_exact(0, 16) < 0.001  # what the unclustered test said
    assert "higher" not in e["conclusion"] and e["conclusion"].startswith("no detectable difference at n=80")
    assert e["lo"] < 0 < e["hi"] and e["mdd"] > 0.5  # 8 prompts of a base prompt move together: ~10 pairs


def test_sign_flip_p_is_exact_on_hand_built_totals():
    assert sign_flip_p([]) == 1.0 and sign_flip_p([0, 0]) == 1.0
    assert sign_flip_p([3]) == 1.0  # one informative cluster: both signs as extreme
    assert sign_flip_p([2, 2, 2]) == pytest.approx(2 / 8)
    assert sign_flip_p([3, 1]) == pytest.approx(2 / 4)  # |3+1|, |3-1|, |-3+1|, |-3-1|: 2 of 4 reach 4
    assert sign_flip_p([1] * 9 + [-1]) == pytest.approx(mcnemar_exact(1, 9))


def _simulate(rng, n_clusters: int, size: int, psi: float, diff: float, copy: float):
    """Per-prompt differences (B - A outcome) with discordance psi and true difference diff; each prompt copies
    its base prompt's draw with probability ``copy`` (correlation copy^2 within a base prompt)."""
    p = [(psi - diff) / 2, 1 - psi, (psi + diff) / 2]
    shared = rng.choice([-1, 0, 1], size=n_clusters, p=p)
    own = rng.choice([-1, 0, 1], size=(n_clusters, size), p=p)
    return np.where(rng.random((n_clusters, size)) < copy, shared[:, None], own)


@pytest.mark.parametrize(("n_clusters", "size", "copy"), [(40, 4, 0.7), (12, 8, 0.5), (30, 2, 1.0)])
def test_clustered_test_holds_its_size_under_the_null(n_clusters, size, copy):
    """Models exchangeable on every base prompt (no difference), correlated prompts within a base prompt: the
    clustered test rejects at most ~5% of the time; counting prompts as independent pairs rejects far more."""
    rng = np.random.default_rng(7)
    reps, rejected, naive = 400, 0, 0
    for _ in range(reps):
        x = _simulate(rng, n_clusters, size, 0.3, 0.0, copy)
        rejected += sign_flip_p(x.sum(axis=1).tolist()) < 0.05
        naive += mcnemar_exact(int((x == -1).sum()), int((x == 1).sum())) < 0.05
    assert rejected / reps <= 0.05 + 2 * (0.05 * 0.95 / reps) ** 0.5
    assert naive / reps > 0.1


@pytest.mark.parametrize(
    ("n_clusters", "size", "psi", "copy"), [(200, 1, 0.3, 0.0), (60, 4, 0.3, 0.6), (40, 8, 0.2, 0.5)]
)
def test_mdd_matches_simulated_power(n_clusters, size, psi, copy):
    """At the MDD computed for a design (n, discordance, design effect 1 + (m - 1) copy^2), the exact test
    (McNemar, or the clustered sign-flip test) finds the difference about 80% of the time."""
    n = n_clusters * size
    deff = 1 + (size - 1) * copy**2
    df = (Z95 / t_quantile(n_clusters - 1)) ** 2 if size > 1 else 1.0
    mdd = min_detectable_difference(n / deff * df, psi)
    assert mdd is not None and 0 < mdd < psi
    assert paired_power(n / deff * df, psi, mdd) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(3)
    reps, found = 500, 0
    for _ in range(reps):
        x = _simulate(rng, n_clusters, size, psi, mdd, copy)
        p = sign_flip_p(x.sum(axis=1).tolist())
        found += p < 0.05
    assert 0.72 <= found / reps <= 0.9, found / reps


def test_mdd_from_observed_data_and_at_zero_discordance():
    # no discordant prompt at all: the alternative still needs at least d discordant pairs, so the MDD is finite
    same = compare([False] * 100, [False] * 100)
    assert same["mdd"] == pytest.approx(min_detectable_difference(100, 0.0), abs=1e-4) and same["mdd"] < 0.12
    # 25 base prompts x 4, nothing discordant: the worst-case design effect (4) is assumed
    clustered = compare([False] * 100, [False] * 100, [f"b{i // 4}" for i in range(100)])
    assert clustered["deff"] == 4.0 and clustered["mdd"] > 2 * same["mdd"]
    assert min_detectable_difference(2, 0.5) is None  # two pairs cannot reach 80% power


def test_orientation_follows_the_requested_pair():
    e = paired_metrics(_reproducer(), "refusal", {"hb-jb": "jailbreak"})[0]
    assert oriented(e, "A", "B") is e and oriented(e, "X", "B") is None
    flipped = oriented(e, "B", "A")
    assert flipped is not None and (flipped["b"], flipped["c"]) == (e["c"], e["b"])
    assert flipped["diff"] == -e["diff"] and (flipped["lo"], flipped["hi"]) == (-e["hi"], -e["lo"])
    assert flipped["rate_a"] == e["rate_b"] and flipped["mdd"] == e["mdd"]


def test_conclusion_words_only_when_the_test_rejects():
    entry = {"n": 40, "p": 0.01, "diff": -0.2, "model_a": "rw", "model_b": "saro", "mdd": 0.15}
    assert conclusion(entry).startswith("saro lower by 20.0 points") and "better: saro" in conclusion(entry)
    entry["p"] = 0.2
    text = conclusion(entry)
    assert "lower" not in text and "higher" not in text and "±15.0 pts" in text
