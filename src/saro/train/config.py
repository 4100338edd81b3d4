"""Training configs: TRL's ``SFTConfig`` / ``DPOConfig`` plus the fields saro adds, and recipe-section builders.

Only our own fields are declared here (model source, template, LoRA, audit, sample generations); everything else is
TRL's, so a TRL upgrade cannot make the two drift apart. Environment-dependent defaults (bf16 only on a bf16 GPU, no
pinned memory or activation checkpointing on CPU, ``use_cpu`` under a multi-process CPU launch) are resolved in
``__post_init__`` before TRL's own checks run. Defaults that are ours but would need a re-declared TRL field
(``logging_steps``, ``save_steps``, ``precompute_ref_log_probs``, ...) are applied by ``build_*_config``.
"""

import dataclasses
import difflib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from trl import DPOConfig, SFTConfig

if TYPE_CHECKING:
    from transformers import TrainingArguments

from saro.errors import SaroError

# saro's defaults for TRL fields, applied under the recipe section by build_*_config; defined with the training
# sections, where the stage hash reads them without TRL
from saro.recipe import DPO_DEFAULTS, SFT_DEFAULTS

log = logging.getLogger(__name__)


def _bf16_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class _SaroFields:
    """The fields saro adds to TRL's configs (shared by SFT and DPO). Listed first in the bases so that TRL's
    positional ``output_dir`` stays first in ``__init__``."""

    model: str = field(
        default="embedded",
        metadata={"help": "Model to start from: 'embedded', a local folder, or a hub id (owner/name)."},
    )
    template: str = field(
        default="auto",
        metadata={
            "help": "Training chat template: auto, chatml, llama3, or native (the model's own, with markers)."
        },
    )
    default_system: str | None = field(
        default="native",
        metadata={
            "help": "Default system prompt in the template: 'native' keeps the model's own, null drops it."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention implementation (sdpa, eager, flash_attention_2); None = default."},
    )
    model_dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto (fp32 on CPU and for full fine-tuning without DeepSpeed/FSDP, else bf16 on "
            "a bf16 GPU), float32, bfloat16, float16."
        },
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | str = field(
        default="all-linear", metadata={"help": "Modules that get adapters: 'all-linear' or a list of names."}
    )
    merge_lora: bool = field(
        default=True, metadata={"help": "Merge the adapters into the base weights for the final model."}
    )
    audit: bool = field(
        default=True,
        metadata={"help": "Check the loss mask and lengths on the data before training; fail on problems."},
    )
    audit_samples: int = field(default=64, metadata={"help": "Examples tokenised by the loss-mask audit."})
    max_truncated_share: float = field(
        default=0.0,
        metadata={"help": "Largest share of examples allowed to be truncated or dropped by max_length."},
    )
    sample_prompts: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Fixed prompts generated from during training (written to samples.jsonl, never printed)."
        },
    )
    sample_every_steps: int = field(
        default=0, metadata={"help": "Generate on sample_prompts every N optimizer steps (0 = off)."}
    )
    sample_max_new_tokens: int = field(default=256, metadata={"help": "Token limit for sample generations."})
    length_grouping: bool = field(
        default=False,
        metadata={
            "help": "Batches of rows of similar length (less padding), trained in a seeded random order "
            "(saro.train.batching)."
        },
    )

    def _saro_post_init(self) -> None:
        """Resolve environment-dependent defaults before TRL/transformers validate the config."""
        # The TRL/transformers fields: this class is mixed in before SFTConfig/DPOConfig, on the same object.
        args = cast("TrainingArguments", self)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        cuda = _cuda()
        if not cuda and world > 1:
            # accelerate/torchrun launched several CPU processes: without use_cpu they would each train alone.
            args.use_cpu = True
        if args.bf16 is None:
            args.bf16 = bool(not args.fp16 and _bf16_gpu() and not args.use_cpu)
        elif args.bf16 and not _bf16_gpu():
            args.use_cpu = True  # bf16 autocast on CPU needs use_cpu (else transformers refuses bf16)
        if hasattr(self, "activation_checkpointing"):  # transformers >= 5.23 renamed gradient_checkpointing
            if args.activation_checkpointing is None:
                # TRL turns it on by default (memory on GPUs); on CPU it only costs time.
                args.activation_checkpointing = bool(
                    args.gradient_checkpointing and cuda and not args.use_cpu
                )
            args.gradient_checkpointing = (
                args.activation_checkpointing
            )  # silences the deprecated-alias warning
        elif not cuda or args.use_cpu:
            # transformers < 5.23 (no activation_checkpointing field): TRL's default True cannot be told from a
            # recipe's, so on CPU, where checkpointing changes no number and only costs time, it is always off.
            args.gradient_checkpointing = False
        if not cuda or args.use_cpu:
            args.dataloader_pin_memory = False
        if args.save_total_limit is None:
            args.save_total_limit = 2
        if args.ddp_find_unused_parameters is None:
            args.ddp_find_unused_parameters = False
        if args.report_to is None:
            args.report_to = "none"
        if isinstance(self.lora_target_modules, str) and self.lora_target_modules != "all-linear":
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if not 0.0 <= self.max_truncated_share <= 1.0:
            raise ValueError(f"max_truncated_share must be within [0, 1], got {self.max_truncated_share}")
        if self.sample_every_steps < 0:
            raise ValueError("sample_every_steps must be >= 0")
        if self.lora_r <= 0:
            raise ValueError("lora_r must be > 0")
        if self.length_grouping and (
            getattr(args, "train_sampling_strategy", "random") != "random"
            or getattr(args, "group_by_length", False)
        ):
            raise ValueError("length_grouping replaces train_sampling_strategy: set only one of them")


@dataclass
class SaroSFTConfig(_SaroFields, SFTConfig):
    """Stage 1 (RW): TRL ``SFTConfig`` + saro fields. ``assistant_only_loss`` is always on (the template decides
    what is in the loss, and the audit checks it)."""

    def __post_init__(self) -> None:
        self._saro_post_init()
        self.assistant_only_loss = True
        super().__post_init__()


# The loss types TRL 1.16's DPOTrainer implements (it only checks them at the first training step; TRL exposes the
# list only in the field's help text, so tests/test_train.py checks this copy against it; TRL is pinned to 1.16).
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


# How the "sft" NLL term treats the completion prefix chosen and rejected share (SaroDPOConfig.sft_shared_prefix).
SFT_SHARED_PREFIX = ("mask", "train")
# Loss types that score the chosen (or rejected) completion against the reference on its own, not as a
# chosen - rejected difference: a shared prefix does not cancel in them, and sft_shared_prefix does not mask it.
UNPAIRED_LOSS_TYPES = ("nca_pair", "bco_pair", "sppo_hard", "aot_unpaired", "apo_zero", "apo_down")


@dataclass
class SaroDPOConfig(_SaroFields, DPOConfig):
    """Stage 2 (SRPO): TRL ``DPOConfig`` + saro fields. ``ref_model`` None means the start model (the RW model);
    with LoRA the reference is the start model with adapters disabled (no second copy)."""

    ref_model: str | None = field(
        default=None, metadata={"help": "Reference model source; None = the model DPO starts from."}
    )
    sft_shared_prefix: Literal["mask", "train"] = field(
        default="mask",
        metadata={
            "help": "The tokens chosen and rejected share at the start of their completions (PP-COT's drifting "
            "prefix) in the 'sft' NLL term: 'mask' leaves them out (the term trains the correction only), "
            "'train' keeps TRL's behaviour (the whole chosen completion). Log-ratio terms are unchanged.",
            "choices": list(SFT_SHARED_PREFIX),
        },
    )

    def __post_init__(self) -> None:
        if self.sft_shared_prefix not in SFT_SHARED_PREFIX:
            raise ValueError(
                f"sft_shared_prefix must be one of {', '.join(SFT_SHARED_PREFIX)}, got {self.sft_shared_prefix!r}"
            )
        self._saro_post_init()
        super().__post_init__()
        bad = [t for t in self.loss_type if t not in DPO_LOSS_TYPES]
        if bad:
            raise ValueError(f"unknown loss_type {bad[0]!r} (one of: {', '.join(DPO_LOSS_TYPES)})")

    @property
    def masks_shared_prefix(self) -> bool:
        """Whether training leaves the shared completion prefix out of the 'sft' term (it is in the loss)."""
        return self.sft_shared_prefix == "mask" and "sft" in self.loss_type


# Set by the stage itself, never by the user's recipe.
RESERVED = (
    "output_dir",
    "logging_dir",
    "assistant_only_loss",
    "resume_from_checkpoint",
    "overwrite_output_dir",
)


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    """Public dataclass fields of a config class, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


# Recipe keys -> their names in transformers before 5.23 (vLLM 0.31 allows 5.10-5.17, vLLM 0.33 5.16-5.20).
RENAMED_FIELDS = {
    "activation_checkpointing": "gradient_checkpointing",
    "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs",
}


def installed_names(cls: type, stage: str, section: dict[str, Any]) -> dict[str, Any]:
    """The section with each renamed key under the name the installed transformers uses, so one recipe loads
    under every version ``pyproject.toml`` allows (recipes write the current name)."""
    known = config_fields(cls)
    out: dict[str, Any] = {}
    for key, value in section.items():
        old = RENAMED_FIELDS.get(key)
        if old is not None and key not in known and old in known:
            if old in section:
                raise SaroError(f"{stage}: set '{key}' only ('{old}' is its old name)")
            out[old] = value
        else:
            out[key] = value
    return out


def _build(cls: type, stage: str, defaults: dict[str, Any], section: dict[str, Any], output_dir: str) -> Any:
    if not isinstance(section, dict):
        raise SaroError(f"{stage}: expected a mapping of settings, got {type(section).__name__}")
    known = config_fields(cls)
    section = installed_names(cls, stage, section)
    for key in section:
        if key in RESERVED:
            raise SaroError(f"{stage}: '{key}' is set by saro, remove it from the recipe")
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SaroError(f"{stage}: unknown key '{key}'{hint}")
    kwargs = {**defaults, **_coerce(cls, stage, section), "output_dir": str(output_dir)}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SaroError(f"{stage}: invalid setting: {msg}") from None


def build_sft_config(section: dict[str, Any], output_dir: str) -> SaroSFTConfig:
    """Validated SFT config from a recipe section (unknown keys and bad values are one-line SaroErrors)."""
    return _build(SaroSFTConfig, "train_sft", SFT_DEFAULTS, section, output_dir)


def build_dpo_config(section: dict[str, Any], output_dir: str) -> SaroDPOConfig:
    """Validated DPO config from a recipe section (unknown keys and bad values are one-line SaroErrors)."""
    return _build(SaroDPOConfig, "train_dpo", DPO_DEFAULTS, section, output_dir)


def _simple_types(tp: Any) -> tuple[type, ...] | None:
    """(int, float, bool, str) members of a field annotation, or None when it holds anything else."""
    import types
    import typing

    args = (
        typing.get_args(tp)
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
        else (tp,)
    )
    out = tuple(a for a in args if a is not type(None))
    return out if out and all(a in (int, float, bool, str) for a in out) else None


def _coerce(cls: type, stage: str, section: dict[str, Any]) -> dict[str, Any]:
    """Type-check simple fields; accept numbers written as strings (YAML reads ``1e-5`` as a string)."""
    if not isinstance(section, dict):
        raise SaroError(f"{stage}: expected a mapping of settings, got {type(section).__name__}")
    known = config_fields(cls)
    out = dict(section)
    for key, value in section.items():
        f = known.get(key)
        types_ = _simple_types(f.type) if f is not None else None
        if types_ is None or value is None:
            continue
        ok = (
            (isinstance(value, bool) and bool in types_)
            or (isinstance(value, str) and str in types_)
            or (not isinstance(value, bool) and isinstance(value, int) and (int in types_ or float in types_))
            or (isinstance(value, float) and float in types_)
        )
        if ok:
            continue
        num = _number(value) if not isinstance(value, bool) else None
        if num is not None and float in types_:
            out[key] = num
            continue
        if num is not None and int in types_ and num.is_integer():
            out[key] = int(num)
            continue
        want = " or ".join(
            "true/false" if t is bool else "a number" if t in (int, float) else "text" for t in types_
        )
        raise SaroError(f"{stage}: '{key}' must be {want}, got {value!r}")
    return out


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
