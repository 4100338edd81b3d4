"""Model cards: every final/ written by the training stages carries a huggingface_hub model card naming the base
model, the data, the method, the (masked) training configuration, the licence and library versions; the eval stage
can put its numbers into it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from test_train import _dpo_rows, _dpo_section, _sft_rows, _sft_section, _write_jsonl

SECRET = "hf_notarealtoken_0123456789"


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SafetySFT model on the tiny Llama, then an SRPO model started from it (2 steps each)."""
    from saro.train.config import build_dpo_config, build_sft_config
    from saro.train.dpo import train_dpo
    from saro.train.sft import train_sft

    d = tmp_path_factory.mktemp("cards")
    sft_data = _write_jsonl(d / "safety_sft.jsonl", _sft_rows(8))
    dpo_data = _write_jsonl(d / "pairs.jsonl", _dpo_rows(8))
    sec = _sft_section(tiny_model_dir, max_steps=2, save_steps=10, hub_token=SECRET)
    train_sft(build_sft_config(sec, str(d / "train_sft")), sft_data, method="SafetySFT")
    sft_final = d / "train_sft" / "final"
    dsec = _dpo_section(sft_final, max_steps=2, save_steps=10, sample_every_steps=0)
    train_dpo(build_dpo_config(dsec, str(d / "train_dpo")), dpo_data)
    return {"sft": sft_final, "dpo": d / "train_dpo" / "final", "base": str(tiny_model_dir), "data": dpo_data}


def test_every_final_has_a_card_naming_the_base_model(trained: dict[str, Any]) -> None:
    from huggingface_hub import ModelCard

    sft = ModelCard.load(trained["sft"] / "README.md")
    dpo = ModelCard.load(trained["dpo"] / "README.md")
    for card, method in ((sft, "SafetySFT"), (dpo, "SRPO")):
        saro = card.data.to_dict()["saro"]
        assert saro["base_model"] == trained["base"] and saro["method"] == method
        assert f"- base model: `{trained['base']}`" in card.text
        assert card.data.license == "other" and card.data.library_name == "transformers"
        assert "| transformers |" in card.text and "| trl |" in card.text  # library versions
        assert "_not evaluated yet_" in card.text
        assert SECRET not in str(card)  # the hub token in the training config is masked
    # the SRPO model's start model is the RW model, its base the RW model's base; its data is named
    assert f"`{trained['sft']}`" in dpo.text and f"`{trained['data']}`" in dpo.text
    assert '"hub_token": "***"' in sft.text
    # a local base model is not written as a hub base_model (the hub would reject the card)
    assert sft.data.base_model is None


def test_eval_results_update_the_card(trained: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from huggingface_hub import ModelCard

    from saro.errors import SaroError
    from saro.train.card import update_eval_results

    model = tmp_path / "final"
    shutil.copytree(trained["sft"], model)
    update_eval_results(model, {"harmbench": {"asr": 0.05, "n": 12}, "xstest_refusal": 0.1}, where="runs/x")
    update_eval_results(model, {"harmbench": {"asr": 0.04, "n": 12}}, where="runs/y")  # replaces, not appends
    card = ModelCard.load(model / "README.md")
    section = card.text.split("<!-- saro:eval -->")[1].split("<!-- /saro:eval -->")[0]
    assert "| harmbench / asr | 0.04 |" in section and "0.05" not in section
    assert "xstest_refusal" not in section and "runs/y" in section and "_not evaluated yet_" not in card.text
    assert card.data.eval_summary == {"harmbench / asr": 0.04, "harmbench / n": 12}
    assert card.data.to_dict()["saro"]["base_model"] == trained["base"]  # header kept
    (model / "README.md").write_text("# someone else's card\n")
    with pytest.raises(SaroError, match="not a saro model card"):
        update_eval_results(model, {"asr": 0.1})


def test_hub_base_model_goes_into_the_yaml(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from saro.train.card import write_training_card

    class Cfg:
        model = "HuggingFaceTB/SmolLM2-135M-Instruct"

        def to_dict(self) -> dict[str, Any]:
            return {"model": self.model, "learning_rate": 1e-5, "api_key": "sk-something-secret"}

    path = write_training_card(tmp_path, Cfg(), {"stage": "dpo", "method": "SafetyDPO", "global_step": 3})
    card = ModelCard.load(path)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "safetydpo" in card.data.tags and card.data.to_dict()["saro"]["method"] == "SafetyDPO"
    assert "sk-something-secret" not in path.read_text() and "| global_step | 3 |" in card.text


def test_the_embedded_model_is_named_by_its_hub_id_and_licence():
    from saro.train.card import EMBEDDED_BASE, _license_of, base_model_of, is_hub_id

    assert base_model_of("embedded") == EMBEDDED_BASE == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert is_hub_id(EMBEDDED_BASE)
    assert _license_of("embedded") == "apache-2.0"
    assert base_model_of("/no/such/folder") == "/no/such/folder"
