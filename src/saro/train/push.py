"""``saro push``: upload a trained ``final/`` folder (with its model card) of a run to the Hugging Face hub.

The token comes from ``HF_TOKEN`` only and is never printed; errors from the hub are one line with the token masked.
With ``merge_lora`` an adapter-only folder is merged into its base model first, in a temporary folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from saro import stages as table
from saro.errors import SaroError
from saro.stage import RunDir
from saro.train.card import CARD

log = logging.getLogger(__name__)

# --model sft / dpo: the training stages, by their commands (saro train sft)
STAGES: dict[str, str] = {table.get(s).command[-1]: s for s in table.MODEL_STAGES}


def find_final(run: Path, model: str | None) -> Path:
    """The ``final/`` folder of ``model`` in run folder ``run``: ``sft``, ``dpo`` or a variant name; by default the
    model of the last training stage that trained one (SRPO, else RW)."""
    if not Path(run).is_dir():
        raise SaroError(f"{run}: run folder not found")
    rd = RunDir(run)
    if model in STAGES:
        candidates = [rd.file(STAGES[model], "model")]
    elif model:
        candidates = [rd.file(stage, "variant", model) for stage in STAGES.values()]
    else:
        candidates = [rd.file(stage, "model") for stage in reversed(STAGES.values())]
    found = [c for c in candidates if (c / "config.json").is_file() or (c / "adapter_config.json").is_file()]
    if not found:
        raise SaroError(
            f"{run}: no trained model {model or ''} (looked for {', '.join(map(str, candidates))})"
        )
    if model and model not in STAGES and len(found) > 1:
        raise SaroError(f"{run}: variant '{model}' exists in both stages; give --model sft or dpo")
    return found[0]


def _merged_copy(final: Path, dest: Path) -> Path:
    """``final`` as a plain model: an adapter-only folder is merged into its base; a merged one is copied as is."""
    if (final / "config.json").is_file():
        log.info("push: %s is already a full model, nothing to merge", final)
        return final
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = json.loads((final / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise SaroError(f"{final}/adapter_config.json: no base_model_name_or_path to merge into")
    model = AutoModelForCausalLM.from_pretrained(base)
    PeftModel.from_pretrained(model, str(final)).merge_and_unload().save_pretrained(dest)
    for f in final.iterdir():  # tokenizer, card, saro_train.json; not the adapter weights
        if f.is_file() and not f.name.startswith("adapter_") and not (dest / f.name).exists():
            shutil.copy2(f, dest / f.name)
    return dest


def push_model(
    run: Path, repo_id: str, model: str | None = None, private: bool = False, merge_lora: bool = False
) -> str:
    """Create ``repo_id`` (if needed) and upload the chosen ``final/`` with its card; returns the repo URL."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise SaroError("saro push: HF_TOKEN is not set (a write token from huggingface.co/settings/tokens)")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise SaroError(f"--repo-id {repo_id!r}: expected OWNER/NAME")
    final = find_final(run, model)
    if not (final / CARD).is_file():
        raise SaroError(f"{final}: no model card (README.md); retrain with this saro version")
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="saro-push-") as tmp:
        folder = _merged_copy(final, Path(tmp)) if merge_lora else final
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="model",
                commit_message=f"saro: upload {final.parent.name}/{final.name}",
            )
        except Exception as e:  # network/auth errors: one line, no token in it
            msg = str(e).replace(token, "***").splitlines()[0] if str(e) else type(e).__name__
            raise SaroError(f"saro push {repo_id}: {msg}") from None
    log.info("pushed %s to %s", final, url)
    return str(url)
