"""Trainer callbacks of the training stages: every log to ``metrics.jsonl``, greedy samples to ``samples.jsonl``,
and a per-rank report under multi-process launches; each resumes without writing a replayed step twice."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from saro.records import atomic_write_json
from saro.train.checkpoints import METRICS_JSONL, SAMPLES_JSONL
from saro.train.dist import state_world_size, uses_sharding

log = logging.getLogger(__name__)


def drop_rows_after(path: Path, step: int) -> None:
    """Keep only the JSONL rows logged at or before ``step`` (the checkpoint a resumed run starts from), so that a
    resumed run does not log the replayed steps twice; a torn last line from a kill is dropped too."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)


class JsonlLogCallback(TrainerCallback):
    """Append every training log (loss, lr, rewards, ...) to ``metrics.jsonl``; on resume, drop rows past the
    checkpoint so that no step appears twice."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            drop_rows_after(self.path, state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()


class SampleCallback(TrainerCallback):
    """Greedy generations on fixed prompts every ``every`` steps, appended to ``samples.jsonl``.

    Completions can be harmful text: they go to the file only, never to the console or the log.
    """

    def __init__(
        self, path: Path, tokenizer: Any, prompts: list[str], every: int, max_new_tokens: int
    ) -> None:
        self.path = Path(path)
        self.tok = tokenizer
        self.prompts = list(prompts)
        self.every = every
        self.max_new_tokens = max_new_tokens

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if state.is_world_process_zero:
            drop_rows_after(self.path, state.global_step)
        if state.global_step == 0:
            self._sample(args, state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.every and state.global_step % self.every == 0:
            self._sample(args, state, model)

    def _sample(self, args: Any, state: Any, model: Any) -> None:
        if model is None or not self.prompts:
            return
        sharded = uses_sharding(args)
        if not sharded and not state.is_world_process_zero:
            return
        t0 = time.time()
        enc = self._encode(next(model.parameters()).device)
        out = self._generate(model, enc, synced=sharded and state_world_size() > 1)
        if not state.is_world_process_zero:
            return
        self._write(state.global_step, model, out[:, enc["input_ids"].shape[1] :].tolist())
        log.info(
            "samples at step %d written to %s (%.1fs)", state.global_step, self.path.name, time.time() - t0
        )

    def _encode(self, device: Any) -> dict[str, Any]:
        """The prompts with the chat template, left-padded for batched generation."""
        convs = [[{"role": "user", "content": p}] for p in self.prompts]
        side = self.tok.padding_side
        self.tok.padding_side = "left"
        try:
            enc = self.tok.apply_chat_template(
                convs, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
            )
        finally:
            self.tok.padding_side = side
        return {k: v.to(device) for k, v in enc.items()}

    def _generate(self, model: Any, enc: dict[str, Any], synced: bool) -> Any:
        """Greedy generation in eval mode; the model is put back in training mode afterwards."""
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=self.tok.pad_token_id,
                    synced_gpus=synced,
                )
        finally:
            if was_training:
                model.train()

    def _write(self, step: int, model: Any, completions: list[list[int]]) -> None:
        eos = {*as_list(getattr(model.generation_config, "eos_token_id", None)), self.tok.eos_token_id}
        with open(self.path, "a", encoding="utf-8") as f:
            for prompt, ids in zip(self.prompts, completions, strict=True):
                row = {
                    "step": step,
                    "prompt": prompt,
                    "completion": self.tok.decode(ids, skip_special_tokens=True),
                    "finished": any(t in eos for t in ids),
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


class RankReportCallback(TrainerCallback):
    """Each process writes ``ranks/rank-N.json`` (rank, world size, steps it took part in) at the end of training:
    proof that every rank of a multi-process launch trained, and a first stop when one hangs."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir) / "ranks"
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        info = {
            "rank": args.process_index,
            "world_size": args.world_size,
            "parallel_mode": str(args.parallel_mode),
            "device": str(args.device),
            "steps_here": self.steps,
            "global_step": state.global_step,
            "pid": os.getpid(),
        }
        atomic_write_json(self.dir / f"rank-{args.process_index}.json", info)


def as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def stage_callbacks(cfg: Any, tok: Any, extra: Iterable[Any] | None) -> list[Any]:
    out_dir = Path(cfg.output_dir)
    cbs: list[Any] = [JsonlLogCallback(out_dir / METRICS_JSONL)]
    if cfg.world_size > 1:
        cbs.append(RankReportCallback(out_dir))
    if cfg.sample_prompts and cfg.sample_every_steps:
        cbs.append(
            SampleCallback(
                out_dir / SAMPLES_JSONL,
                tok,
                cfg.sample_prompts,
                cfg.sample_every_steps,
                cfg.sample_max_new_tokens,
            )
        )
    return cbs + list(extra or [])
