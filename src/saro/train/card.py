"""Model card (README.md) for a trained model folder, and an optional push to the Hugging Face hub.

The card records how the model was made (recipe, data, training numbers, evaluation) so a pushed model explains
itself. It never contains completions: generated text can be harmful and stays in the run directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.records import atomic_write_text

log = logging.getLogger(__name__)

_TRAIN_KEYS = (
    ("stage", "stage"),
    ("global_step", "optimizer steps"),
    ("epoch", "epochs"),
    ("first_loss", "first logged loss"),
    ("last_loss", "last logged loss"),
    ("train_loss", "mean train loss"),
    ("rewards/chosen", "rewards/chosen (last log)"),
    ("rewards/rejected", "rewards/rejected (last log)"),
    ("rewards/margins", "rewards/margins (last log)"),
    ("rewards/accuracies", "rewards/accuracies (last log)"),
    ("train_tokens", "tokens trained"),
    ("train_tokens_per_second", "tokens/s"),
    ("train_runtime", "train runtime (s)"),
    ("world_size", "processes"),
    ("template", "chat template"),
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    if not rows:
        return "_none recorded_\n"
    lines = ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def render_model_card(
    recipe_name: str,
    data_stats: dict[str, Any],
    train_metrics: dict[str, Any],
    eval_summary: dict[str, Any] | None = None,
    base_model: str | None = None,
) -> str:
    """The card's Markdown text (YAML front matter for the hub, then recipe, data, training, evaluation)."""
    base = base_model or train_metrics.get("base_model") or ""
    front = ["---", "library_name: transformers", "tags:", "- saro", "- safety", "- reasoning", "- trl"]
    if train_metrics.get("stage"):
        front.append(f"- {train_metrics['stage']}")
    if base and "/" in base and not base.startswith(("/", ".")):
        front.append(f"base_model: {base}")
    front.append("---")
    train_rows = [(label, train_metrics[k]) for k, label in _TRAIN_KEYS if train_metrics.get(k) is not None]
    parts = [
        "\n".join(front),
        "",
        f"# {recipe_name}: SaRO safety-reasoning model",
        "",
        "Trained with saro (SaRO: Reasoning-style Warmup SFT on policy-driven `<think>` "
        "reasoning, then Safety-oriented Reasoning Process Optimization with DPO). The model reasons about a "
        "safety policy inside `<think>...</think>` before it answers.",
        "",
        f"- recipe: `{recipe_name}`",
    ]
    if base:
        parts.append(f"- start model: `{base}`")
    parts += [
        "",
        "## Data",
        "",
        _table(list(data_stats.items())),
        "## Training",
        "",
        _table(train_rows),
        "## Evaluation",
        "",
        _table(list((eval_summary or {}).items())) if eval_summary else "_not evaluated yet_\n",
        "## Use",
        "",
        "The chat template shipped with the tokenizer is the one the model was trained with. Generate with it and "
        "split the output at `</think>`: the reasoning comes first, the answer after.",
        "",
        "## Limitations",
        "",
        "Safety training reduces but does not remove harmful outputs, and can cause over-refusal. Evaluate on your "
        "own prompts before use. Training data made by the offline teacher is not paper-quality.",
        "",
    ]
    return "\n".join(parts)


def write_model_card(
    model_dir: Path,
    recipe_name: str,
    data_stats: dict[str, Any],
    train_metrics: dict[str, Any],
    eval_summary: dict[str, Any] | None = None,
    base_model: str | None = None,
) -> Path:
    """Write ``model_dir/README.md`` (replacing the stub TRL writes) and return its path."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SaroError(f"{model_dir}: model folder not found")
    path = model_dir / "README.md"
    atomic_write_text(
        path, render_model_card(recipe_name, data_stats, train_metrics, eval_summary, base_model)
    )
    return path


def push_to_hub(model_dir: Path, repo_id: str, private: bool = True, token: str | None = None) -> str | None:
    """Upload ``model_dir`` to ``repo_id`` when a token is configured (``HF_TOKEN``); returns the repo URL, or None
    (with a log line) when no token is set. The token is never logged."""
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        log.info("push_to_hub: no HF_TOKEN set, not pushing %s", model_dir)
        return None
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model")
    except Exception as e:  # network/auth errors: one line, no token in it
        msg = str(e).replace(token, "***").splitlines()[0] if str(e) else type(e).__name__
        raise SaroError(f"push_to_hub {repo_id}: {msg}") from None
    url = f"https://huggingface.co/{repo_id}"
    log.info("pushed %s to %s", model_dir, url)
    return url
