"""The safety policy: the packaged default validates and covers the required areas; bad files fail clearly."""

from __future__ import annotations

import pytest

from saro.errors import SaroError
from saro.policy import load_policy

REQUIRED = {
    "violence_weapons",
    "cbrn",
    "cyber",
    "fraud_scams",
    "hate_harassment",
    "sexual_content",
    "self_harm",
    "privacy_surveillance",
    "illegal_goods_drugs",
    "misinformation_manipulation",
}


def test_default_policy_covers_required_categories():
    pol = load_policy()
    assert set(pol.ids) >= REQUIRED
    for c in pol.categories:
        assert c.disallowed and c.allowed, c.id
    assert any("minors" in d for d in pol.get("sexual_content").disallowed)


def test_render_mentions_every_category_and_allowed_cases():
    text = load_policy().render()
    for cid in REQUIRED:
        assert f"[{cid}]" in text
    assert "Still fine" in text


def test_unknown_category_suggests(tmp_path):
    with pytest.raises(SaroError, match="did you mean 'cyber'"):
        load_policy().get("cyberr")


@pytest.mark.parametrize(
    "body,msg",
    [
        ("name: x\nprinciple: p\ncategories: []\n", "categories"),
        (
            "name: x\nprinciple: p\ncategories:\n- {id: a, name: A, description: d, disallowed: [x], allowed: [y], typo: 1}\n",
            "typo",
        ),
        (
            "name: x\nprinciple: p\ncategories:\n- {id: a, name: A, description: d, disallowed: [], allowed: [y]}\n",
            "disallowed",
        ),
        ("name: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_policy_files(tmp_path, body, msg):
    p = tmp_path / "pol.yaml"
    p.write_text(body)
    with pytest.raises(SaroError, match=msg):
        load_policy(p)


def test_missing_policy_file(tmp_path):
    with pytest.raises(SaroError, match="not found"):
        load_policy(tmp_path / "nope.yaml")
