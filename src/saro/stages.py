"""THE stage table: every stage's name, entry module, the recipe settings it reads, its input files, the outputs
it writes, the outputs of other stages it reads, the units it is made of, its command and its code version.

The loader, the pipeline, the CLI, ``saro status`` and the docs all read this table; nothing else lists the stages.
A stage's ``run(ctx)`` sees exactly the settings named in ``sections`` (``saro.stage.StageContext``) and opens
another stage's files only through ``ctx.input`` / ``ctx.records``, which accept only the outputs named in
``reads`` (a test runs every stage of the demo recipe and fails when one opens anything else). A stage depends on
the stages it reads; its hash covers exactly its settings (defaults included), the contents of the input files of
the kinds named in ``inputs``, the hashes of the stages it reads and ``code_version``. Bump a stage's
``code_version`` when a change to its code changes what it writes for the same settings (docs/contributing.md).

A stage made of units (training variants, eval models) hashes each unit on its own (``saro.fingerprint.unit_hash``):
when the stage goes stale, the units whose hash did not change are kept, and with ``reuse_from`` a unit done with
the same hash in another run is copied instead of recomputed.

Model references (``@base``, ``@train_sft``, ``@train_dpo/<variant>``) are parsed here, in ``parse_model_ref``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from saro.errors import SaroError

# Kinds of input files a stage can read (their contents go into its hash).
PROMPT_FILES = "prompt_files"  # local prompt files (prompts.*[].options.path)
SUITE_FILES = "suite_files"  # eval suite YAMLs (prompts.eval_suites), packaged or local
POLICY_FILE = "policy_file"  # the recipe's policy, or the packaged default policy
LABEL_FILE = "label_file"  # the run's human labels (RUN/LABELS_FILE, written by saro label), when present
ANALYSIS_FILES = "analysis_files"  # RUN/ANALYSIS_DIR (written by saro analyze overlap RUN), when present
LABELS_FILE = "labels/labels.jsonl"  # where saro label keeps a run's labels, relative to the run folder
ANALYSIS_DIR = "analysis"  # where saro analyze overlap RUN writes, relative to the run folder
INPUT_KINDS = (PROMPT_FILES, SUITE_FILES, POLICY_FILE, LABEL_FILE, ANALYSIS_FILES)

# Settings outside the stage sections; declared like sections.
GLOBAL_SETTINGS = ("model", "seed", "policy")

UNIT = "{unit}"  # in an output's file: the unit's folder name (a training variant, an eval model)
MAIN = "main"  # the unit of a training stage's main model (its files are the stage folder, variants aside)


@dataclass(frozen=True)
class Output:
    """One file (or folder, ending in "/") a stage writes inside its folder, by the name its readers use.

    ``schema`` is "module:Class" of the pydantic model each JSONL row (or the JSON file) validates as."""

    name: str
    file: str
    schema: str | None = None
    doc: str = ""

    @property
    def per_unit(self) -> bool:
        return UNIT in self.file

    def path(self, unit: str | None = None) -> str:
        """The file's path inside the stage folder (``unit``: the unit's folder, "" for the stage folder itself)."""
        if self.per_unit != (unit is not None):
            raise SaroError(
                f"output '{self.name}' ({self.file}) " + ("needs a unit" if self.per_unit else "has no units")
            )
        return self.file.replace(UNIT, unit or "").lstrip("/")


@dataclass(frozen=True)
class Read:
    """An output of another stage that a stage reads; ``needed``: the stage cannot run without it."""

    stage: str
    output: str
    needed: bool = True

    def __str__(self) -> str:
        return f"{self.stage}.{self.output}"


def _read(ref: str, needed: bool) -> Read:
    stage, _, output = ref.partition(".")
    return Read(stage, output, needed)


def need(*refs: str) -> tuple[Read, ...]:
    """Outputs ("stage.output") a stage cannot run without: their stage must be in the recipe."""
    return tuple(_read(r, True) for r in refs)


def may(*refs: str) -> tuple[Read, ...]:
    """Outputs ("stage.output") a stage reads when their stage is in the recipe."""
    return tuple(_read(r, False) for r in refs)


@dataclass(frozen=True)
class Units:
    """What a stage is made of. ``hashes`` is "module:function" of ``(ctx) -> {unit: hash}``; a unit's files are
    the folder named after it (``folder`` of the unit), the main unit's (``main``) the rest of the stage folder."""

    kind: str  # "variant" | "model"
    hashes: str
    main: bool = False  # the stage folder itself holds a "main" unit (training: the main model)
    code_version: int | None = None  # of the code that makes one unit (None: the stage's code_version)


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    name: str
    module: str  # the module whose ``run(ctx)`` implements the stage
    command: tuple[str, ...]  # its CLI command (``saro synth rw RECIPE``)
    doc: str  # one line: what it does (the command's help)
    # recipe settings it reads: a section, a section key ("synth_rw.teacher"), or a global (model, seed, policy)
    sections: tuple[str, ...]
    outputs: tuple[Output, ...] = ()
    reads: tuple[Read, ...] = ()  # outputs of other stages it reads (its dependencies)
    inputs: tuple[str, ...] = ()  # kinds of input files it reads
    code_version: int = 1  # bumped when the stage's logic changes what it writes
    units: Units | None = None
    distributed: bool = False  # may run under accelerate launch (several ranks)
    # also reads the models that the model references of this section name (and depends on their stages)
    models_from: str | None = None
    always: bool = False  # runs in every recipe (else only when the recipe has its section)

    def entry(self) -> Callable[..., object]:
        """The stage's ``run(ctx)``."""
        return _load(self.module + ":run")

    def unit_hashes(self) -> Callable[..., Mapping[str, str]] | None:
        """The stage's ``(ctx) -> {unit: hash}``, or None for a stage without units."""
        if self.units is None:
            return None
        return cast("Callable[..., Mapping[str, str]]", _load(self.units.hashes))

    @property
    def unit_version(self) -> int:
        """The code version in its units' hashes."""
        if self.units is None or self.units.code_version is None:
            return self.code_version
        return self.units.code_version

    def output(self, name: str) -> Output:
        for o in self.outputs:
            if o.name == name:
                return o
        names = ", ".join(o.name for o in self.outputs)
        raise SaroError(f"stage '{self.name}' has no output '{name}' (its outputs: {names})")

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages it reads from, in table order."""
        return tuple(dict.fromkeys(r.stage for r in self.reads))

    @property
    def needs(self) -> tuple[str, ...]:
        """The stages it cannot run without."""
        return tuple(dict.fromkeys(r.stage for r in self.reads if r.needed))

    def declares(self, stage: str, output: str) -> bool:
        """Whether it reads ``output`` of ``stage`` (the model outputs of training stages through ``models_from``)."""
        if any(r.stage == stage and r.output == output for r in self.reads):
            return True
        return self.models_from is not None and stage in MODEL_STAGES and output in MODEL_OUTPUTS


def _load(ref: str) -> Callable[..., object]:
    module, _, name = ref.partition(":")
    return cast("Callable[..., object]", getattr(importlib.import_module(module), name))


_G = GLOBAL_SETTINGS
_P = "saro.records:Prompt"
STATS = Output("stats", "stats.json", doc="counts for the report")
MODEL = Output("model", "final/", doc="the main model (weights, tokenizer, model card)")
VARIANT = Output("variant", UNIT + "/final/", doc="a variant's model")
MODEL_OUTPUTS = (MODEL.name, VARIANT.name)
# what the contamination check compares eval prompts with
TRAINING_DATA: tuple[str, ...] = ("prompts.rw", "prompts.srpo", "synth_rw.rit_d", "synth_rw.safety_sft")
TRAINING_DATA += ("synth_srpo.pairs", "synth_srpo.safety_dpo")

TABLE: tuple[Stage, ...] = (
    Stage(
        "prompts",
        "saro.prompts.prompts",
        ("prompts",),
        "Draw and label the recipe's prompt sets (disjoint rw / srpo / eval), with jailbreak attacks applied.",
        ("prompts", "synth_rw.teacher", *_G),
        outputs=(
            Output("rw", "rw.jsonl", _P, "warmup prompts"),
            Output("srpo", "srpo.jsonl", _P, "SRPO prompts"),
            Output("eval", "eval.jsonl", _P, "held-out eval prompts"),
            STATS,
        ),
        inputs=(PROMPT_FILES, SUITE_FILES, POLICY_FILE),
        code_version=3,  # 2: phrasing, rephrase, cross_source, contrast and prefill entries; categories with a
        # margin. 3: cross-source by content (meta.overlap), dedup on every form, verb-noun phrasing, same-content
        # rephrasing, per-suite stats
        always=True,
    ),
    Stage(
        "synth_rw",
        "saro.synth.synth_rw",
        ("synth", "rw"),
        "Stage 1 data (RIT-D): teacher reasoning, k candidates, judged, Shortest Rejection Sampling.",
        ("synth_rw", *_G),
        outputs=(
            Output(
                "rit_d", "rit_d.jsonl", "saro.records:SFTExample", "RIT-D: reasoning + answer (TRL messages)"
            ),
            Output("safety_sft", "safety_sft.jsonl", "saro.records:SFTExample", "SafetySFT: answers only"),
            STATS,
        ),
        reads=need("prompts.rw"),
        inputs=(POLICY_FILE,),
        # 3: k samples in one request (n=k); judged on the unwrapped request; truncated and label-citing
        # candidates rejected; SRS by reasoning tokens; offline styles drawn per (prompt, sample)
        # 4: the refusal judge was rebuilt. 5: offline composer opens every trajectory with the same neutral
        # restatement and gives every later step two phrasings on every path
        code_version=5,
    ),
    Stage(
        "train_sft",
        "saro.train.train_sft",
        ("train", "sft"),
        "Reasoning-style Warmup: SFT on RIT-D (loss on reasoning, answer and end-of-turn).",
        ("train_sft", "model", "seed"),
        outputs=(MODEL, VARIANT),
        reads=need("synth_rw.rit_d", "synth_rw.safety_sft"),
        units=Units("variant", "saro.stage:model_unit_hashes", main=True),
        distributed=True,
    ),
    Stage(
        "synth_srpo",
        "saro.synth.synth_srpo",
        ("synth", "srpo"),
        "Stage 2 data: sample the RW model, build OP-COT, PP-COT and early-vs-late preference pairs.",
        ("synth_srpo", "train_dpo.max_length", *_G),
        outputs=(
            Output("pairs", "pairs.jsonl", "saro.records:PreferencePair", "SRPO preference pairs"),
            Output("safety_dpo", "safety_dpo.jsonl", "saro.records:PreferencePair", "SafetyDPO pairs"),
            STATS,
        ),
        reads=need("prompts.srpo") + may("train_sft.model", "train_sft.variant"),
        inputs=(POLICY_FILE,),
        # 4: judged on the unwrapped request; drift answers judged (only compliant ones used); truncated
        # samples and teacher answers rejected; negation-aware step judge; prefix check; sampling follows
        # the model's generation config (top_k 50 unless it sets one). 5: the refusal judge was rebuilt
        # 6: the offline composer's new phrasings (constructed drifts and corrections change)
        code_version=6,
    ),
    Stage(
        "train_dpo",
        "saro.train.train_dpo",
        ("train", "dpo"),
        "SRPO: DPO on the reasoning-process preference pairs, reference = the RW model.",
        ("train_dpo", "model", "seed"),
        outputs=(MODEL, VARIANT),
        reads=need("synth_srpo.pairs", "synth_srpo.safety_dpo", "train_sft.model") + may("train_sft.variant"),
        units=Units("variant", "saro.stage:model_unit_hashes", main=True),
        distributed=True,
        code_version=2,  # the sft term leaves out the prefix chosen and rejected share
    ),
    Stage(
        "eval",
        "saro.evaluate.eval",
        ("eval",),
        "Generate with each model on the held-out suites, judge, and compute metrics with intervals.",
        ("eval", "prompts.suite_info", *_G),
        outputs=(
            Output(
                "generations", UNIT + "/generations.jsonl", "saro.records:EvalRecord", "one model's answers"
            ),
            Output("judgements", "judgements.jsonl", "saro.records:Judgement", "every judge's verdicts"),
            Output("contamination", "contamination.json", doc="eval prompts found in training data"),
            Output("metrics", "metrics.json", "saro.evaluate.schema:Metrics", "every number of the report"),
        ),
        reads=need("prompts.eval") + may(*TRAINING_DATA),
        inputs=(POLICY_FILE,),
        # the generation's own version (not the metrics'): 2: sampled suites follow the model's generation config
        units=Units("model", "saro.evaluate.eval:unit_hashes", code_version=2),
        models_from="eval",
        # 3: one denominator, clustered tests + MDD, verdict flags, clean judge request;
        # 4: sampled suites follow the model's generation config
        # 5: the refusal judge was rebuilt (learned head; unfinished turns judged; held-out accuracy)
        code_version=5,
    ),
    Stage(
        "report",
        "saro.report.report",
        ("report",),
        "Write report.json / report.md / report.html for a run and print the summary table.",
        ("report", "seed"),
        outputs=(
            Output("json", "report.json", "saro.report.schema:Report", "the report, every number"),
            Output("md", "report.md", doc="the report as Markdown"),
            Output("html", "report.html", doc="the report as one self-contained page"),
        ),
        reads=need("eval.metrics", "eval.judgements", "eval.generations")
        + may("prompts.eval", "prompts.stats", "synth_rw.stats", "synth_srpo.stats"),
        inputs=(LABEL_FILE, ANALYSIS_FILES),
        models_from="eval",  # writes the eval numbers into the model cards of the models it reports on
        # 3: the judge vs human labels section; primary measures, clustered tests, MDD
        # 4: the refusal judge's held-out figures
        code_version=4,
    ),
)

STAGES: tuple[str, ...] = tuple(s.name for s in TABLE)
BY_NAME: dict[str, Stage] = {s.name: s for s in TABLE}
MODEL_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if MODEL in s.outputs)  # stages that make models
DISTRIBUTED_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if s.distributed)


def get(name: str) -> Stage:
    """A stage's row; an unknown name is a SaroError listing the stages."""
    if name not in BY_NAME:
        raise SaroError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    return BY_NAME[name]


def by_command(command: Sequence[str]) -> Stage:
    """The stage a CLI command runs (``("train", "sft")`` -> train_sft)."""
    for s in TABLE:
        if s.command == tuple(command):
            return s
    raise SaroError(f"no stage runs 'saro {' '.join(command)}'")


def enabled(present: Mapping[str, bool]) -> list[str]:
    """The stages a recipe runs, in order: those whose section is present (``present[stage]``; the prompts stage
    always) and whose needed stages run too."""
    out: list[str] = []
    for s in TABLE:
        if (s.always or present.get(s.name, False)) and all(d in out for d in s.needs):
            out.append(s.name)
    return out


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


def model_refs(value: object) -> list[ModelRef]:
    """Every model reference to a trained model in a (dumped) recipe section, in order."""
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
