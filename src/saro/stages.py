"""THE stage table: every stage's name, module, dependencies, the recipe settings it reads, its input files, its
code version.

The loader, the pipeline, the CLI and the docs all read this table; nothing else lists the stages. A stage's
``run(ctx)`` sees exactly the settings named in ``sections`` (see ``saro.stage.StageContext``), and its hash covers
exactly those settings (defaults included), the contents of the input files of the kinds named in ``inputs``, the
hashes of its dependencies and ``code_version``. Bump a stage's ``code_version`` when a change to its code changes
what it writes for the same settings (docs/contributing.md).

Model references (``@base``, ``@train_sft``, ``@train_dpo/<variant>``) are parsed here, in ``parse_model_ref``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saro.errors import SaroError

# Kinds of input files a stage can read (their contents go into its hash).
PROMPT_FILES = "prompt_files"  # local prompt files (prompts.*[].options.path)
SUITE_FILES = "suite_files"  # eval suite YAMLs (prompts.eval_suites), packaged or local
POLICY_FILE = "policy_file"  # the recipe's policy, or the packaged default policy
LABEL_FILE = "label_file"  # the run's human labels (RUN/LABELS_FILE, written by saro label), when present
LABELS_FILE = "labels/labels.jsonl"  # where saro label keeps a run's labels, relative to the run folder
INPUT_KINDS = (PROMPT_FILES, SUITE_FILES, POLICY_FILE, LABEL_FILE)

# Settings outside the stage sections; declared like sections.
GLOBAL_SETTINGS = ("model", "seed", "policy")


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    name: str
    module: str  # the module whose ``run(ctx)`` implements the stage
    deps: tuple[str, ...]  # stages whose outputs it reads (eval adds the training stages its models name)
    # recipe settings it reads: a section, a section key ("synth_rw.teacher"), or a global (model, seed, policy)
    sections: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # kinds of input files it reads
    code_version: int = 1  # bumped when the stage's logic changes what it writes
    # function of ``module`` that keeps the models whose inputs did not change (training stages)
    keep_unchanged: str | None = None
    distributed: bool = False  # may run under accelerate launch (several ranks)
    deps_from_models: bool = False  # also depends on the training stages named by its model references
    # "module:function" that fills in the defaults of the stage's own section (for the hash and ctx.setting)
    resolve: str | None = None

    def entry(self) -> Callable[[Any], dict[str, Any] | None]:
        """The stage's ``run(ctx)``."""
        return importlib.import_module(self.module).run

    def keeper(self) -> Callable[[Any, dict[str, Any]], None] | None:
        """The declared ``keep_unchanged(ctx, previous_summary)`` hook of a training stage, or None."""
        if self.keep_unchanged is None:
            return None
        return getattr(importlib.import_module(self.module), self.keep_unchanged)

    def resolver(self) -> Callable[[str, Any], dict[str, Any]] | None:
        """The declared function that resolves this stage's section with its defaults, or None."""
        if self.resolve is None:
            return None
        module, _, name = self.resolve.partition(":")
        return getattr(importlib.import_module(module), name)


_G = GLOBAL_SETTINGS
TABLE: tuple[Stage, ...] = (
    Stage(
        "prompts",
        "saro.prompts.build",
        (),
        ("prompts", "synth_rw.teacher", *_G),
        (PROMPT_FILES, SUITE_FILES, POLICY_FILE),
        code_version=3,  # 2: phrasing, rephrase, cross_source, contrast and prefill entries; categories with a
        # margin. 3: cross-source by content (meta.overlap), dedup on every form, verb-noun phrasing, same-content
        # rephrasing, per-suite stats
    ),
    Stage(
        "synth_rw",
        "saro.synth.rw",
        ("prompts",),
        ("synth_rw", *_G),
        (POLICY_FILE,),
        # 3: k samples in one request (n=k); judged on the unwrapped request; truncated and label-citing
        # candidates rejected; SRS by reasoning tokens; offline styles drawn per (prompt, sample)
        # 4: the refusal judge was rebuilt. 5: offline composer opens every trajectory with the same neutral
        # restatement and gives every later step two phrasings on every path
        code_version=5,
    ),
    Stage(
        "train_sft",
        "saro.train.stage",
        ("synth_rw",),
        ("train_sft", "model", "seed"),
        keep_unchanged="keep_unchanged",
        distributed=True,
        resolve="saro.train.resolve:resolve_training",
    ),
    Stage(
        "synth_srpo",
        "saro.synth.srpo",
        ("prompts", "train_sft"),
        ("synth_srpo", "train_dpo.max_length", *_G),
        (POLICY_FILE,),
        # 4: judged on the unwrapped request; drift answers judged (only compliant ones used); truncated
        # samples and teacher answers rejected; negation-aware step judge; prefix check; sampling follows
        # the model's generation config (top_k 50 unless it sets one). 5: the refusal judge was rebuilt
        # 6: the offline composer's new phrasings (constructed drifts and corrections change)
        code_version=6,
    ),
    Stage(
        "train_dpo",
        "saro.train.stage",
        ("synth_srpo", "train_sft"),
        ("train_dpo", "model", "seed"),
        keep_unchanged="keep_unchanged",
        distributed=True,
        resolve="saro.train.resolve:resolve_training",
        code_version=2,  # the sft term leaves out the prefix chosen and rejected share
    ),
    Stage(
        "eval",
        "saro.evaluate.run",
        ("prompts",),
        ("eval", "prompts.suite_info", *_G),
        (POLICY_FILE,),
        deps_from_models=True,
        # 3: one denominator, clustered tests + MDD, verdict flags, clean judge request;
        # 4: sampled suites follow the model's generation config
        # 5: the refusal judge was rebuilt (learned head; unfinished turns judged; held-out accuracy)
        code_version=5,
    ),
    Stage(
        "report",
        "saro.evaluate.report",
        ("eval",),
        ("report", "seed"),
        (LABEL_FILE,),
        # 3: the judge vs human labels section; primary measures, clustered tests, MDD
        # 4: the refusal judge's held-out figures
        code_version=4,
    ),
)

STAGES: tuple[str, ...] = tuple(s.name for s in TABLE)
BY_NAME: dict[str, Stage] = {s.name: s for s in TABLE}
MODEL_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if s.keep_unchanged)  # stages that make models
DISTRIBUTED_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if s.distributed)


def get(name: str) -> Stage:
    """A stage's row; an unknown name is a SaroError listing the stages."""
    if name not in BY_NAME:
        raise SaroError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    return BY_NAME[name]


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``@stage[/variant]`` reference (``stage`` is "base" for ``@base``)."""

    stage: str
    variant: str | None = None


def parse_model_ref(ref: str | None) -> ModelRef | None:
    """``@base`` / ``@train_sft`` / ``@train_dpo/<variant>`` -> ModelRef; any other string (a path or hub id)
    -> None. A malformed reference is a SaroError naming the valid forms."""
    if ref is None or not ref.startswith("@"):
        return None
    stage, _, variant = ref[1:].partition("/")
    if stage == "base" and not variant:
        return ModelRef("base")
    if stage not in MODEL_STAGES or (ref.endswith("/") and not variant):
        forms = ", ".join(f"@{s}[/variant]" for s in MODEL_STAGES)
        raise SaroError(f"model reference '{ref}': use @base, {forms}")
    return ModelRef(stage, variant or None)


def model_refs(value: Any) -> list[ModelRef]:
    """Every model reference in a (dumped) recipe section, in order."""
    out: list[ModelRef] = []
    if isinstance(value, dict):
        for v in value.values():
            out += model_refs(v)
    elif isinstance(value, list | tuple):
        for v in value:
            out += model_refs(v)
    elif isinstance(value, str) and value.startswith("@"):
        ref = parse_model_ref(value)
        if ref is not None and ref.stage != "base":
            out.append(ref)
    return out
