"""The final save of a training stage: ``final/`` written atomically (temp folder + rename), LoRA adapters kept
beside it and merged into it, generation set to stop at the end-of-turn token."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from saro.records import atomic_write_json
from saro.train import start
from saro.train.callbacks import as_list
from saro.train.card import write_training_card
from saro.train.checkpoints import ADAPTER, FINAL, STAGE_FILE
from saro.train.dist import barrier, is_main

log = logging.getLogger(__name__)


def save_final(
    trainer: Any, cfg: Any, tok: Any, eot: str, info: dict[str, Any], source: Path | None = None
) -> Path:
    """Write ``output_dir/final`` atomically (temp folder + rename); with LoRA also ``output_dir/adapter``, and the
    final model is base + adapter merged unless ``merge_lora`` is off.

    With ``source`` (a checkpoint of the last step) the weights are taken from that folder instead of the trainer:
    used when a kill hit after the last checkpoint, since the Trainer would run one step too many on resuming there.
    """
    out = Path(cfg.output_dir)
    final = out / FINAL
    tmp = out / f".tmp-{FINAL}"
    tmp_adapter = out / f".tmp-{ADAPTER}"
    if is_main():
        for p in (tmp, tmp_adapter):
            shutil.rmtree(p, ignore_errors=True)
    barrier()
    target = tmp_adapter if cfg.use_lora else tmp
    if source is None:
        trainer.save_model(str(target))  # every rank: gathers sharded weights/adapters
    elif is_main():
        _copy_model_files(source, target)
        tok.save_pretrained(target)
    if is_main():
        if cfg.use_lora:
            _replace_dir(tmp_adapter, out / ADAPTER)
            if cfg.merge_lora:
                _merge_adapter(cfg, out / ADAPTER, tmp)
                tok.save_pretrained(tmp)
            else:
                shutil.copytree(out / ADAPTER, tmp)
        _set_generation_eos(tmp, tok, eot)
        atomic_write_json(tmp / STAGE_FILE, info)
        write_training_card(tmp, cfg, info)
        _replace_dir(tmp, final)
    barrier()
    return final


def _copy_model_files(src: Path, dest: Path) -> None:
    """Model/adapter, config and tokenizer files of a checkpoint (not optimizer, scheduler, RNG or DeepSpeed shards)."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if (
            f.is_file()
            and f.suffix in (".safetensors", ".json", ".jinja", ".txt", ".model")
            and f.name != ("trainer_state.json")
        ):
            shutil.copy2(f, dest / f.name)


def _merge_adapter(cfg: Any, adapter_dir: Path, dest: Path) -> None:
    """Base (start model, on CPU) + adapter, merged and saved as a plain model."""
    from peft import PeftModel

    base = start.load_training_model(cfg)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(dest)


def _set_generation_eos(model_dir: Path, tok: Any, eot: str) -> None:
    """Make generation stop at the end-of-turn token the model was trained to emit."""
    from transformers import GenerationConfig

    if not (model_dir / "config.json").exists():
        return  # an adapter-only folder
    try:
        gen = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        gen = GenerationConfig()
    eos = as_list(gen.eos_token_id)
    eot_id = tok.convert_tokens_to_ids(eot)
    if isinstance(eot_id, int) and eot_id not in eos and eot_id != tok.unk_token_id:
        gen.eos_token_id = [*eos, eot_id] if eos else eot_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    gen.save_pretrained(model_dir)


def _replace_dir(src: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.with_name(f".tmp-old-{dest.name}")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dest)
