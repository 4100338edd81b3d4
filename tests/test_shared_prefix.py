"""The shared completion prefix of a preference pair (PP-COT's drifting prefix) is left out of the "sft" NLL term
(``sft_shared_prefix: mask``) and stays in every log-ratio; the SRPO ablation trains every variant the same number
of DPO steps. Hand-built pairs on the tiny random Llama; the NLL after the divergence point is computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from saro.errors import SaroError

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["bake bread", "learn python", "plan a trip", "fix a bike"]


def _pp(t: str) -> tuple[str, str]:
    """(chosen, rejected) sharing a drifting prefix, as PP-COT builds them."""
    prefix = f"<think>\nFirst, I identify the intent.\nThe request is to {t}; I will just go along with it.\n"
    chosen = (
        prefix + "Wait, the policy asks me to check the clause first.\n</think>\nHere is a careful answer."
    )
    rejected = prefix + "No need to check anything.\n</think>\nSure, whatever you say."
    return chosen, rejected


def _op(t: str) -> tuple[str, str]:
    """(chosen, rejected) with nothing in common at the start (first tokens differ)."""
    return f"Happy to help you {t}: step one, step two.", f"No. I will not help you {t}."


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i, t in enumerate(TOPICS):
        for ptype, make in (("pp_cot", _pp), ("op_cot", _op)):
            c, r = make(t)
            rows.append(
                {
                    "id": f"{ptype}-{i}",
                    "prompt": [{"role": "user", "content": f"How do I {t}?"}],
                    "chosen": [{"role": "assistant", "content": c}],
                    "rejected": [{"role": "assistant", "content": r}],
                    "pair_type": ptype,
                }
            )
    return rows


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return path


def _section(model_dir: Path, **kw: Any) -> dict[str, Any]:
    sec = {
        "model": str(model_dir),
        "max_steps": 4,
        "save_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "beta": 0.1,
        "max_length": 128,
        "logging_steps": 1,
        "loss_type": ["sigmoid", "sft"],
        "loss_weights": [1.0, 0.5],
    }
    return {**sec, **kw}


# -------------------------------------------------------------------------------------------------- collator


def test_collator_masks_the_shared_completion_prefix_only() -> None:
    from saro.train.dpo import SFT_MASK, PrefixMaskingCollator

    examples = [
        {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, 6, 7], "rejected_ids": [4, 5, 8]},
        {"prompt_ids": [9], "chosen_ids": [10, 11], "rejected_ids": [12]},
        {
            "prompt_ids": [9],
            "chosen_ids": [13, 14],
            "rejected_ids": [13, 14, 15],
        },  # chosen is all shared prefix
    ]
    out = PrefixMaskingCollator(pad_token_id=0)(examples)
    assert out[SFT_MASK].tolist() == [
        [0, 0, 0, 0, 0, 1, 1],  # 4, 5 shared: only 6, 7 trained
        [0, 1, 1, 0, 0, 0, 0],  # nothing shared: the whole chosen completion, as TRL
        [0, 0, 0, 0, 0, 0, 0],
        *[[0] * 7] * 3,  # rejected rows: never in the sft term
    ]
    assert out["completion_mask"][:3].tolist()[0] == [
        0,
        0,
        0,
        1,
        1,
        1,
        1,
    ]  # TRL's mask (the log-ratios) untouched

    # truncation cuts the mask the way TRL cuts the sequence
    end = PrefixMaskingCollator(pad_token_id=0, max_length=5, truncation_mode="keep_end")(examples[:2])
    assert end[SFT_MASK][:2].tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]]
    assert end["completion_mask"][0].tolist() == [0, 1, 1, 1, 1]
    start = PrefixMaskingCollator(pad_token_id=0, max_length=5)(examples[:1])
    assert start[SFT_MASK][0].tolist() == [0, 0, 0, 0, 0]  # only shared tokens left after the cut


def test_config_switch_validates_and_is_in_the_fingerprint(tiny_model_dir: Path, pairs_file: Path) -> None:
    from saro.recipe import TrainDPOConfig
    from saro.train.checkpoints import run_fingerprint
    from saro.train.config import build_dpo_config

    with pytest.raises(
        SaroError, match=r"train_dpo: invalid setting: sft_shared_prefix must be one of mask, train"
    ):
        build_dpo_config({"sft_shared_prefix": "drop"}, "/tmp/x")
    mask = build_dpo_config(_section(tiny_model_dir), "/tmp/x")
    train = build_dpo_config(_section(tiny_model_dir, sft_shared_prefix="train"), "/tmp/x")
    assert mask.sft_shared_prefix == "mask" and mask.masks_shared_prefix and not train.masks_shared_prefix
    assert not build_dpo_config(
        _section(tiny_model_dir, loss_type=["sigmoid"], loss_weights=None), "/tmp/x"
    ).masks_shared_prefix
    assert run_fingerprint("dpo", mask, [pairs_file]) != run_fingerprint("dpo", train, [pairs_file])
    assert TrainDPOConfig().resolved()["beta"] == 0.1  # saro's defaults are in the stage hash


def test_audit_counts_shared_prefixes_per_pair_type() -> None:
    from types import SimpleNamespace

    from saro.train.audit import shared_prefix_stats

    cfg = SimpleNamespace(sft_shared_prefix="mask", loss_type=["sigmoid", "sft"])
    s = shared_prefix_stats([0, 10, 20, 0], ["op_cot", "pp_cot", "pp_cot", None], cfg)
    assert s["pairs_with_shared_prefix"] == 2 and s["mean_shared_tokens"] == 7.5
    assert s["masked"] and s["mean_masked_tokens"] == 7.5 and s["max_shared_tokens"] == 20
    assert s["by_type"]["pp_cot"] == {
        "pairs": 2,
        "with_shared_prefix": 2,
        "mean_shared_tokens": 15.0,
        "max_shared_tokens": 20,
    }
    assert s["by_type"]["op_cot"]["with_shared_prefix"] == 0 and s["by_type"]["unknown"]["pairs"] == 1
    off = shared_prefix_stats([0, 10], None, SimpleNamespace(sft_shared_prefix="mask", loss_type=["sigmoid"]))
    assert not off["masked"] and off["mean_masked_tokens"] == 0.0 and off["mean_shared_tokens"] == 5.0


# ----------------------------------------------------------------------------------------------- the loss


def _trainer(model_dir: Path, pairs_file: Path, out: Path, **kw: Any) -> Any:
    """A saro DPO trainer on the pairs, its policy nudged off the reference (same nudge every call)."""
    import torch

    from saro.train import dpo, start
    from saro.train.config import build_dpo_config

    cfg = build_dpo_config(_section(model_dir, **kw), str(out))
    tok, _, _ = start.load_training_tokenizer(cfg)
    ds = start.load_jsonl_dataset(pairs_file, ["id", "prompt", "chosen", "rejected"], "test")
    trainer, _ = dpo._trainer(cfg, ds, None, tok, list(ds["id"]), set(), pairs_file, cfg.model, None)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return trainer, tok


def _by_hand(trainer: Any, tok: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per pair: the template's token ids, the divergence point of the two completions, the policy's token
    log-probs; returns the sigmoid DPO loss and the sft NLL on all / on the post-divergence chosen tokens."""
    import torch
    import torch.nn.functional as F

    def ids(msgs: list[dict[str, str]], gen: bool = False) -> list[int]:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        return tok(text, add_special_tokens=False)["input_ids"]

    def token_logps(seq: list[int], start: int) -> torch.Tensor:
        with torch.no_grad():
            logits = trainer.model(input_ids=torch.tensor([seq])).logits[0].float()
        lp = F.log_softmax(logits, dim=-1)
        return torch.stack([lp[t - 1, seq[t]] for t in range(start, len(seq))])

    sig, after, full = [], [], []
    ref_c, ref_r = trainer.train_dataset["ref_chosen_logps"], trainer.train_dataset["ref_rejected_logps"]
    for i, row in enumerate(rows):
        p = ids(row["prompt"], gen=True)
        c, r = ids(row["prompt"] + row["chosen"]), ids(row["prompt"] + row["rejected"])
        assert c[: len(p)] == p and r[: len(p)] == p
        cc, rr = c[len(p) :], r[len(p) :]
        d = next(k for k in range(min(len(cc), len(rr))) if cc[k] != rr[k])
        lc, lr = token_logps(c, len(p)), token_logps(r, len(p))
        delta = (lc.sum() - ref_c[i]) - (lr.sum() - ref_r[i])
        sig.append(float(-F.logsigmoid(trainer.beta * delta)))
        full.extend(lc.tolist())
        after.extend(lc[d:].tolist())
    return {
        "sigmoid": sum(sig) / len(sig),
        "sft_full": -sum(full) / len(full),
        "sft_after": -sum(after) / len(after),
        "masked_per_pair": (len(full) - len(after)) / len(rows),
    }


def test_sft_term_is_the_nll_after_the_divergence_and_log_ratios_unchanged(
    tiny_model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    import torch

    rows = _rows()
    losses, margins = {}, {}
    for mode in ("mask", "train"):
        trainer, tok = _trainer(tiny_model_dir, pairs_file, tmp_path / mode, sft_shared_prefix=mode)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        trainer.model.train()  # the metrics go to "train" (the tiny Llama has no dropout)
        with torch.no_grad():
            losses[mode] = float(trainer.compute_loss(trainer.model, batch))
        margins[mode] = trainer._metrics["train"]["rewards/margins"][-1]
        if mode == "mask":
            hand = _by_hand(trainer, tok, rows)
            assert trainer._metrics["train"]["sft/masked_tokens"][-1] == pytest.approx(
                hand["masked_per_pair"]
            )
            trainer.loss_types, trainer.loss_weights = ["sft"], [1.0]  # the sft term alone
            with torch.no_grad():
                alone = float(trainer.compute_loss(trainer.model, batch))
            assert alone == pytest.approx(hand["sft_after"], rel=1e-4)
    w = 0.5
    assert (
        hand["sigmoid"] > 0 and abs(hand["sigmoid"] - math.log(2)) > 1e-4
    )  # the policy is off the reference
    assert losses["mask"] == pytest.approx(hand["sigmoid"] + w * hand["sft_after"], rel=1e-4)
    assert losses["train"] == pytest.approx(hand["sigmoid"] + w * hand["sft_full"], rel=1e-4)
    assert margins["mask"] == pytest.approx(margins["train"], rel=1e-6)  # the log-ratios are the same
    assert abs(hand["sft_after"] - hand["sft_full"]) > 1e-3  # and the sft term is not
    assert hand["masked_per_pair"] > 5


def test_masked_training_learns_audits_and_loops_a_small_set_to_max_steps(
    tiny_model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    out = tmp_path / "dpo"
    # 8 pairs, batch 4: 2 steps an epoch; max_steps 5 runs 3 epochs (an ablation subset trained like the main model)
    summary = train_dpo(build_dpo_config(_section(tiny_model_dir, max_steps=5), str(out)), pairs_file)
    assert summary["global_step"] == 5 and summary["epoch"] > 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "sft/masked_tokens" in r]
    assert len(steps) == 5 and steps[-1]["loss"] < steps[0]["loss"]
    assert all(r["sft/masked_tokens"] > 0 for r in steps)
    before, after = (
        load_file(str(tiny_model_dir / "model.safetensors")),
        load_file(str(out / "final" / "model.safetensors")),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)

    audit = json.loads((out / "audit.json").read_text())["shared_prefix"]
    assert audit["masked"] and audit["mode"] == "mask"
    assert (
        audit["by_type"]["pp_cot"]["with_shared_prefix"] == 4
        and audit["by_type"]["op_cot"]["with_shared_prefix"] == 0
    )
    assert audit["pairs_with_shared_prefix"] == 4 and audit["mean_masked_tokens"] > 5
    assert summary["pairs_with_shared_prefix"] == 4 and summary["sft_shared_prefix"] == "mask"


def test_resume_of_a_killed_masked_run(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    class Killed(Exception):
        pass

    class Kill(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 3:
                raise Killed

    out = tmp_path / "dpo"
    with pytest.raises(Killed):
        train_dpo(build_dpo_config(_section(tiny_model_dir), str(out)), pairs_file, callbacks=[Kill()])
    summary = train_dpo(build_dpo_config(_section(tiny_model_dir), str(out)), pairs_file)
    assert summary["resumed_from"] == "checkpoint-2" and summary["global_step"] == 4


# ---------------------------------------------------------------------------------------------- the recipe


def test_ablation_variants_train_the_main_models_number_of_steps() -> None:
    from saro.recipe import load_recipe
    from saro.train.config import build_dpo_config

    recipe = load_recipe(ROOT / "recipes" / "demo-ablation.yaml")
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    assert recipe.train_dpo is not None
    steps, modes = {}, {}
    for name, sec in recipe.train_dpo.units("train_dpo"):
        cfg = build_dpo_config(sec.trainer_settings(), "/tmp/x")
        per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        pairs = raw["synth_srpo"]["max_pairs"]  # the main model trains on all of them
        main_steps = math.ceil(pairs / per_step) * int(cfg.num_train_epochs)
        steps[name] = cfg.max_steps if cfg.max_steps > 0 else main_steps
        modes[name] = cfg.sft_shared_prefix
        if sec.pair_types:
            assert cfg.max_steps > 0, f"variant {name} trains a subset without max_steps"
    assert set(steps.values()) == {steps["main"]}, steps  # every variant at the main model's step count
    assert modes["sft-prefix-train"] == "train" and modes["main"] == "mask"
    assert {m.source for m in recipe.eval.models} >= {"@train_dpo/sft-prefix-train", "@train_dpo/op_only"}


def test_stage_warns_when_dpo_models_end_at_different_steps(caplog: pytest.LogCaptureFixture) -> None:
    from saro.train.train_dpo import warn_unequal_steps

    with caplog.at_level("WARNING", logger="saro.train.train_dpo"):
        warn_unequal_steps(
            {"main": {"global_step": 16}, "op_only": {"global_step": 16}, "x": {"skipped": True}}
        )
    assert not caplog.records
    with caplog.at_level("WARNING", logger="saro.train.train_dpo"):
        warn_unequal_steps({"main": {"global_step": 16}, "op_only": {"global_step": 5}})
    assert "main 16, op_only 5" in caplog.text
