"""Recipes: YAML -> typed, validated per-stage configs.

A recipe names the base model, the prompt sets, and one section per stage. Unknown or misspelled keys, wrong types
and missing files are errors that name the key (and the closest valid key) or the path. ``extends:`` deep-merges a
parent recipe; ``--set a.b=value`` overrides single keys from the command line.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from saro import stages as table
from saro.errors import SaroError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Section):
    """The base model every stage starts from."""

    source: str = Field(
        "embedded", description="'embedded' (SmolLM2-135M-Instruct), a model folder or a hub id"
    )
    dtype: str = Field("auto", description="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    template: str = Field("auto", description="training chat template: auto, chatml, llama3, native")
    trust_remote_code: bool = False
    attn_implementation: str | None = None


class PromptEntry(Section):
    """One prompt set drawn from a registered source."""

    source: str = Field(description="registered prompt source name (see `saro sources`)")
    n: int | None = Field(None, ge=1, description="how many base prompts (None = all that are left)")
    kind: Literal["harmful", "benign", "borderline"] | None = Field(None, description="keep only this kind")
    attacks: list[str] | Literal["train", "heldout", "all"] | None = Field(
        None, description="wrap prompts with these jailbreak attacks (names, or the train/heldout split)"
    )
    attack_mode: Literal["one", "each"] | None = Field(
        None,
        description="one seeded attack per prompt, or every attack on every prompt (default: each for eval)",
    )
    keep_plain: bool = Field(False, description="with attacks: also keep the unwrapped prompts")
    suite: str | None = Field(None, description="eval suite name (eval sets only)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="source-specific options (path, columns...)"
    )
    rephrase: Literal["question", "imperative", "mixed"] | None = Field(
        None,
        description="rewrite prompts into this form (mixed: rewrite prompts of the entry's majority form, in a seeded order, until both forms are equally common)",
    )
    phrasing_contrast: bool = Field(
        False, description="eval only: every request in both forms (original and rephrased), same base_id"
    )
    cross_source: bool | None = Field(
        None,
        description="eval only: source not trained on (None = computed; True is checked); either way, prompts "
        "that near-duplicate a training prompt or a training source's row are marked in-source one by one",
    )
    prefill: bool = Field(
        False, description="eval only: open the assistant turn with a drifting or over-cautious prefill"
    )


class AttackSplit(Section):
    train: list[str] | None = None
    heldout: list[str] | None = None


class PromptsConfig(Section):
    """Prompt sets per use; sets from the same source are disjoint across uses (rw, srpo, eval)."""

    rw: list[PromptEntry] = Field(default_factory=list)
    srpo: list[PromptEntry] = Field(default_factory=list)
    eval: list[PromptEntry] = Field(default_factory=list)
    attacks: AttackSplit = Field(default_factory=AttackSplit)
    categorize: Literal["embedding", "keyword"] = Field(
        "embedding", description="how prompts without a usable source label get a policy category"
    )
    categorize_margin: float | None = Field(
        None,
        ge=0,
        description="category only when it is this much nearer (cosine) than the runner-up, else 'unclear' "
        "(None = the categoriser's default)",
    )
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="malformed source rows: error, or skip and count"
    )
    dedup_threshold: float | None = Field(
        None,
        description="also drop training prompts that near-duplicate an eval prompt (in any form: n-gram rule, or "
        "MiniLM cosine >= this); None = equal ones only",
    )
    eval_suites: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="benchmark suites by name or YAML path (see `saro.suites`), expanded into eval",
    )
    suite_info: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="filled from eval_suites: version, type and sampling per suite"
    )

    @model_validator(mode="after")
    def _expand_suites(self) -> PromptsConfig:
        """Append the entries of ``eval_suites`` to ``eval`` (once: a dumped and reloaded config is unchanged)."""
        if not self.eval_suites:
            return self
        from saro.suites import expand_suites

        try:
            raw, info = expand_suites(self.eval_suites)
            new = [PromptEntry.model_validate(e) for e in raw]
        except (SaroError, ValidationError) as e:
            raise ValueError(str(e).splitlines()[0]) from None
        have = {(e.suite, e.source) for e in self.eval}
        keys = {(e.suite, e.source) for e in new}
        if not keys <= have:
            # suite-expanded entries are named, so the shared suite names are str
            clash = sorted(cast("set[str]", {s for s, _ in keys} & {s for s, _ in have}))
            if clash:
                raise ValueError(f"eval suite(s) {clash} are both in prompts.eval and prompts.eval_suites")
            self.eval = [*self.eval, *new]
        self.suite_info = {**self.suite_info, **info}
        return self


class BackendSpec(Section):
    """A generation backend (teacher, policy sampler or model under evaluation)."""

    backend: Literal["offline", "hf", "ct2", "vllm", "openai", "openai_batch"] = Field(
        "hf",
        description="hf (transformers), ct2 (CTranslate2 on the CPU), vllm, openai, openai_batch, offline",
    )
    model: str | None = Field(
        None, description="model source, '@base', '@train_sft', or the served model name"
    )
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key")
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    malformed_retries: int = Field(2, ge=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(8, ge=1)
    compute_type: Literal["float32", "int8"] = Field(
        "float32", description="ct2: weights and matmuls in float32 (greedy ids equal to hf) or int8 (faster)"
    )
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    cache: bool = True


class SynthRWConfig(Section):
    """Stage 1 data (RIT-D): teacher reasoning + answer, k candidates, judged, shortest passing kept."""

    teacher: BackendSpec = Field(default_factory=lambda: BackendSpec(backend="offline"))
    answer_model: BackendSpec = Field(
        default_factory=lambda: BackendSpec(backend="hf", model="@base", max_new_tokens=96),
        description="offline teacher: the model whose own answers are used for benign/borderline prompts",
    )
    k: int = Field(
        1, ge=1, description="candidates per prompt (Shortest Rejection Sampling keeps the shortest passing)"
    )
    judge: str = Field("refusal", description="behaviour judge for filtering")
    require_reflection: bool = True
    require_category: bool = True
    few_shot: bool = True
    safety_sft: bool = Field(
        True, description="also write SafetySFT baseline data (answers without reasoning)"
    )
    selection: Literal["shortest", "random"] = Field(
        "shortest",
        description="which passing candidate RIT-D keeps: the shortest (Shortest Rejection Sampling) or a seeded "
        "random one (the paper's SRS ablation)",
    )


class PairMix(Section):
    """Relative share of each SRPO pair type when ``max_pairs`` caps the total (0 leaves a type out)."""

    op_cot: float = Field(1.0, ge=0)
    pp_cot: float = Field(1.0, ge=0)
    early_late: float = Field(0.5, ge=0)
    long_short: float = Field(0.0, ge=0)


class SynthSRPOConfig(Section):
    """Stage 2 data: sample the RW model, judge, build OP-COT / PP-COT / early-vs-late pairs."""

    policy: BackendSpec = Field(
        default_factory=lambda: BackendSpec(
            backend="hf", model="@train_sft", temperature=0.9, max_new_tokens=224
        )
    )
    n_samples: int = Field(4, ge=1)
    judge: str = "refusal"
    judge_reasoning: bool = Field(
        False,
        description="a sample whose final answer is right but whose reasoning drifts (offline step judge) "
        "counts as wrong",
    )
    step_judge: Literal["offline", "teacher"] = Field(
        "offline", description="who finds the earliest drifting step: the regex stance judge or the teacher"
    )
    teacher: BackendSpec = Field(
        default_factory=lambda: BackendSpec(backend="offline"),
        description="writes OP-COT chosen trajectories, PP-COT reflections and corrections (offline: composed)",
    )
    drift_model: BackendSpec = Field(
        default_factory=lambda: BackendSpec(backend="hf", model="@base", max_new_tokens=96),
        description="offline: the model whose compliant answers serve as drifting continuations",
    )
    mix: PairMix = Field(default_factory=PairMix)
    max_pairs: int | None = Field(None, ge=1)
    max_length: int | None = Field(
        None, ge=16, description="DPO max_length for the length check (default: train_dpo's)"
    )
    safety_dpo: bool = Field(
        True, description="also write SafetyDPO baseline pairs (direct answers, no reasoning)"
    )

    @model_validator(mode="after")
    def _teacher_step_judge(self) -> SynthSRPOConfig:
        if self.step_judge == "teacher" and self.teacher.backend == "offline":
            raise ValueError("step_judge: teacher needs a model teacher (set synth_srpo.teacher.backend)")
        return self


# Defaults that are ours for fields of TRL's configs: applied under the recipe section by
# ``saro.train.config.build_*_config`` and part of every training hash (TRL's own defaults are not: a hash never
# depends on which TRL, or whether any, is installed).
_COMMON_TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 5,
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "report_to": "none",
    "max_length": 2048,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0,
    "seed": 0,
}
SFT_DEFAULTS: dict[str, Any] = {
    **_COMMON_TRAIN_DEFAULTS,
    "packing": False,
}  # packing is wrong on CPU (cross-attention)
DPO_DEFAULTS: dict[str, Any] = {
    **_COMMON_TRAIN_DEFAULTS,
    "precompute_ref_log_probs": True,
    "beta": 0.1,
}

T = TypeVar("T", bound="TrainingSection")


class TrainingSection(Section):
    """A training stage's section: saro's own keys, typed; every other key is a field of the stage's TRL config
    (``saro.train.config``; checked against it when the recipe is loaded with TRL installed). ``variants`` names
    further models of the stage, each the section with its overrides (SafetySFT, an ablation)."""

    model_config = ConfigDict(extra="allow")
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    variants: dict[str, dict[str, Any]] | None = Field(
        None, description="further models of this stage: variant name -> the keys it overrides"
    )

    def trainer_settings(self) -> dict[str, Any]:
        """The keys of the TRL config, as the recipe writes them (saro's own keys and ``variants`` left out)."""
        return dict(self.model_extra or {})

    def resolved(self) -> dict[str, Any]:
        """Every setting with saro's defaults filled in: what the stage's hash covers (a changed default retrains)."""
        own = self.model_dump(mode="json", exclude=set(self.model_extra or {}))
        return {**self.DEFAULTS, **own, **self.trainer_settings()}

    def units(self: T, stage: str) -> list[tuple[str, T]]:
        """The models this section trains: ("main", the section without variants), then each variant
        (its name, the section with the variant's overrides)."""
        base = self.model_dump(mode="json", exclude={"variants"})
        out = [(table.MAIN, self.model_validate(base))]
        for name, over in (self.variants or {}).items():
            if name == table.MAIN:
                raise SaroError(f"{stage}.variants: '{table.MAIN}' names the main model; rename the variant")
            try:
                out.append((str(name), self.model_validate({**base, **over})))
            except ValidationError as e:
                raise SaroError(f"{stage}.variants.{name}: {_explain(e, over, type(self))}") from None
        return out


class TrainSFTConfig(TrainingSection):
    """Reasoning-style Warmup (SFT) on RIT-D, or a variant on other data (SafetySFT)."""

    DEFAULTS: ClassVar[dict[str, Any]] = SFT_DEFAULTS
    data: Literal["rit_d", "safety_sft"] = Field(
        "rit_d", description="the synth_rw dataset: rit_d (reasoning + answer) or safety_sft (answers only)"
    )


class TrainDPOConfig(TrainingSection):
    """SRPO (DPO) on the preference pairs, or a variant on other data (SafetyDPO) or pair types (an ablation)."""

    DEFAULTS: ClassVar[dict[str, Any]] = DPO_DEFAULTS
    data: Literal["srpo", "safety_dpo"] = Field(
        "srpo",
        description="the synth_srpo dataset: srpo (OP-COT, PP-COT, ...) or safety_dpo (direct answers)",
    )
    pair_types: list[str] | None = Field(None, description="train on these SRPO pair types only")
    model: str = Field(
        "@train_sft",
        description="the model DPO starts from, also the reference ('@train_sft[/variant]', a path)",
    )


TRAINING_SECTIONS: dict[str, type[TrainingSection]] = {
    "train_sft": TrainSFTConfig,
    "train_dpo": TrainDPOConfig,
}


class EvalModel(Section):
    name: str
    source: str = Field(
        description="'@base', '@train_sft', '@train_dpo', '@train_dpo/<variant>', a folder or hub id"
    )
    backend: BackendSpec | None = None
    method: Literal["none", "policy_system", "policy_reasoning", "self_reflect"] = Field(
        "none",
        description="how the model is prompted (saro.evaluate.methods): none; policy_system (the policy as "
        "system prompt); policy_reasoning (reason over the policy with a 'Wait, ...' step, policy few-shot); "
        "self_reflect (answer, then check the draft against the policy and revise)",
    )
    reflect_max_new_tokens: int | None = Field(
        None, ge=1, description="self_reflect: tokens of the second pass (default: the first pass's)"
    )
    template: Literal["chat", "stripped"] = Field(
        "chat",
        description="stripped: the same prompts without the chat template (the message texts only), a "
        "robustness view (hf backend)",
    )
    suites: list[str] | None = Field(
        None, description="evaluate this model on these eval suites only (None = every suite)"
    )


class LmEvalConfig(Section):
    """lm-evaluation-harness tasks run on each local/hub model folder (skipped with a message if not installed)."""

    tasks: list[str] = Field(default_factory=lambda: ["mmlu"])
    limit: int | None = Field(None, ge=1, description="examples per task (None = all)")
    batch_size: int = Field(8, ge=1)
    device: str | None = Field(None, description="cpu, cuda, cuda:0 (default: lm_eval's)")
    args: list[str] = Field(default_factory=list, description="extra command-line arguments for lm_eval")


class EvalConfig(Section):
    """Generate with each model on the held-out suites, judge the final answers, compute metrics."""

    models: list[EvalModel] = Field(min_length=1)
    max_new_tokens: int = Field(256, ge=1)
    base_max_new_tokens: int | None = Field(
        None, ge=1, description="max_new_tokens for '@base' (non-reasoning)"
    )
    batch_size: int = Field(8, ge=1)
    reasoning_budget: int | None = Field(None, ge=1)
    judges: list[str] = Field(default_factory=lambda: ["refusal"])
    judge_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    bootstrap: int = Field(1000, ge=0)
    interval: Literal["wilson", "clopper_pearson", "cluster_bootstrap"] = Field(
        "wilson",
        description="95% interval of every rate: Wilson or exact; over prompts sharing a base prompt, on the "
        "effective sample size (saro.stats); cluster_bootstrap also widens it to a cluster bootstrap "
        "(eval.bootstrap resamples, at least 2000)",
    )
    contamination_threshold: float | None = Field(0.95, gt=0, le=1)
    judge_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="extra judge names -> registry judge, e.g. {refusal_plain: refusal} with its own options",
    )
    contamination_files: list[str] = Field(
        default_factory=list, description="more training files (jsonl/json/csv) to check eval prompts against"
    )
    contamination_runs: list[str] = Field(
        default_factory=list, description="more run folders whose training prompts are checked"
    )
    drop_contaminated: bool = Field(
        False, description="leave out eval prompts found in the training data (counted in the report)"
    )
    refusal_accuracy: bool = Field(
        True, description="quote the refusal judge's held-out agreement with human labels in the report"
    )
    lm_eval: LmEvalConfig | None = Field(
        None, description="optional extra capability run through lm-evaluation-harness (if installed)"
    )

    @model_validator(mode="after")
    def _reflect_budgets(self) -> EvalConfig:
        """A self_reflect second pass must have room to repeat the whole first-pass answer."""
        for i, m in enumerate(self.models):
            key = f"eval.models[{i}].reflect_max_new_tokens"
            if m.reflect_max_new_tokens is None:
                continue
            if m.method != "self_reflect":
                raise ValueError(f"{key} is only read by method self_reflect (model '{m.name}': {m.method})")
            first = self.base_max_new_tokens if m.source == "@base" and self.base_max_new_tokens else None
            first = first or self.max_new_tokens
            if m.reflect_max_new_tokens < first:
                raise ValueError(
                    f"{key} = {m.reflect_max_new_tokens} is smaller than the first pass "
                    f"({first} max_new_tokens); the revision could not repeat the draft"
                )
        return self


def _all_formats() -> list[Literal["json", "md", "html"]]:
    return ["json", "md", "html"]


class ReportConfig(Section):
    formats: list[Literal["json", "md", "html"]] = Field(default_factory=_all_formats)
    show_unsafe: bool = False
    examples: int = Field(3, ge=0)
    title: str | None = Field(None, description="report title (default: the recipe name)")
    analysis: bool = Field(
        True, description="embed analysis/overlap.json and its plots when the run has them"
    )
    comparisons: list[tuple[str, str]] | None = Field(
        None,
        description="model pairs [A, B] (eval model names) whose paired comparisons (B - A) the report prints, "
        "in this order, with the primary-measures table; default: every pair in eval.models order",
    )


class LaunchConfig(Section):
    """How ``saro run`` starts the training stages: under ``accelerate launch`` with these settings (how to run, not
    what: no stage hash reads it). Unset fields come from the accelerate config file, or accelerate's defaults."""

    config: str | None = Field(
        None,
        description="accelerate config: a name in configs/accelerate/ (deepspeed_zero3, ddp, ...) or a YAML path",
    )
    num_processes: int | None = Field(None, ge=1, description="processes in all (one per GPU)")
    num_machines: int | None = Field(None, ge=1)
    machine_rank: int | None = Field(None, ge=0)
    main_process_ip: str | None = None
    main_process_port: int | None = Field(None, ge=1, le=65535)
    mixed_precision: Literal["no", "fp16", "bf16", "fp8"] | None = None
    use_cpu: bool = Field(False, description="gloo processes on CPU (tests, a machine without GPUs)")
    args: list[str] = Field(default_factory=list, description="extra `accelerate launch` arguments, verbatim")


class Recipe(Section):
    """A whole recipe: base model, prompts, and one section per stage (absent section = stage not run)."""

    name: str
    description: str = ""
    seed: int = 0
    run_dir: str | None = None
    reuse_from: str | None = Field(
        None,
        description="another run dir: stages done there with the same config hash are copied, not recomputed",
    )
    threads: int | None = Field(
        None, ge=1, description="torch threads (default: OMP_NUM_THREADS or all cores)"
    )
    policy: str | None = Field(None, description="safety policy YAML (default: the packaged policy)")
    model: ModelSpec = Field(default_factory=ModelSpec)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    synth_rw: SynthRWConfig | None = None
    train_sft: TrainSFTConfig | None = None
    synth_srpo: SynthSRPOConfig | None = None
    train_dpo: TrainDPOConfig | None = None
    eval: EvalConfig | None = None
    report: ReportConfig | None = None
    launch: LaunchConfig | None = Field(
        None, description="run train_sft / train_dpo under accelerate launch (saro run starts it)"
    )

    # where the recipe came from and the --set overrides applied (set by load_recipe; not YAML keys)
    path: str | None = Field(None, exclude=True)
    overrides: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        present = self._present()
        for s in table.TABLE:
            missing = [d for d in s.needs if present[s.name] and not present[d]]
            if missing:
                raise ValueError(
                    f"{s.name} needs {missing[0]}: it reads its output (add a '{missing[0]}:' section)"
                )
        pairs = self.report.comparisons if self.report is not None else None
        if pairs and self.eval is not None:
            names = [m.name for m in self.eval.models]
            for i, pair in enumerate(pairs):
                unknown = [x for x in pair if x not in names]
                if unknown or pair[0] == pair[1]:
                    what = (
                        f"{unknown[0]!r} is not an eval model" if unknown else "a model compared with itself"
                    )
                    raise ValueError(
                        f"report.comparisons[{i}] {list(pair)}: {what} (eval models: {', '.join(names)})"
                    )
        return self

    def _present(self) -> dict[str, bool]:
        return {s.name: s.always or self.section(s.name) is not None for s in table.TABLE}

    def enabled(self) -> list[str]:
        """Stages this recipe runs, in order (the stage table: those with a section, and the prompts stage)."""
        return table.enabled(self._present())

    def section(self, stage: str) -> Section | None:
        """A stage's section (None when the recipe has none)."""
        value = getattr(self, table.get(stage).name)
        return value if isinstance(value, Section) else None

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")


# ------------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SaroError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SaroError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SaroError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', 'syntax error')})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SaroError(f"{path}: a recipe must be a YAML mapping")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe YAML, following ``extends:`` (relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise SaroError(f"{path}: circular 'extends'")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise SaroError(f"{path}: 'extends' must be a path to another recipe")
    base = load_raw((path.parent / parent), (*_seen, path))
    return _deep_merge(base, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML)."""
    data = copy.deepcopy(data)
    for ov in overrides:
        if "=" not in ov:
            raise SaroError(f"--set {ov!r}: expected KEY=VALUE, e.g. --set train_sft.learning_rate=1e-4")
        key, raw = ov.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SaroError(f"--set {ov!r}: empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        cur = data
        for p in parts[:-1]:
            nxt = cur.get(p)
            if nxt is None:
                nxt = cur[p] = {}
            if not isinstance(nxt, dict):
                raise SaroError(f"--set {ov!r}: '{p}' is not a section")
            cur = nxt
        cur[parts[-1]] = value
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load, merge, override and validate a recipe against the schema; every problem is a one-line SaroError.

    ``saro.pipeline.load_recipe`` also checks the training sections against the TRL configs."""
    data = apply_overrides(load_raw(path), overrides or [])
    recipe = validate_recipe(data, where=str(path))
    recipe.path = str(Path(path).resolve())
    recipe.overrides = list(overrides or [])
    _check_files(recipe, Path(path).resolve().parent)
    return recipe


def validate_recipe(data: dict[str, Any], where: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise SaroError(f"{where}: {_explain(e, data)}") from None


def _explain(e: ValidationError, data: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    err = e.errors()[0]
    loc = [x for x in err["loc"]]
    dotted = ".".join(str(x) for x in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        valid = _fields_at(model or Recipe, loc[:-1], data)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        hint = (
            f" (did you mean '{close[0]}'?)"
            if close
            else f" (valid keys: {', '.join(valid)})"
            if valid
            else ""
        )
        return f"unknown key '{dotted}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{dotted}'"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"key '{dotted}': {err['msg']} (got {shown})"


def _fields_at(model: type[BaseModel], loc: list[Any], data: Any) -> list[str]:
    """The valid field names of the (sub)model found by walking ``loc`` from ``model``."""
    import typing

    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return []
        field = cur.model_fields.get(str(part))
        if field is None:
            return []
        cur = _submodel(field.annotation, typing)
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return [n for n, f in cur.model_fields.items() if not f.exclude]
    return []


def _submodel(ann: Any, typing: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is None:
        return ann
    for arg in typing.get_args(ann):
        sub = _submodel(arg, typing)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            return sub
    return None


def _check_files(recipe: Recipe, base: Path) -> None:
    if recipe.policy:
        p = Path(recipe.policy)
        if not p.is_absolute():
            p = (base / p) if (base / p).exists() else p
        if not p.is_file():
            raise SaroError(f"policy: file not found: {recipe.policy}")
        recipe.policy = str(p.resolve())
        try:
            p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SaroError(f"{recipe.policy}: not valid UTF-8 (byte {exc.start})") from None
        from saro.policy import load_policy

        load_policy(recipe.policy)
    uses = {"rw": recipe.prompts.rw, "srpo": recipe.prompts.srpo, "eval": recipe.prompts.eval}
    for use, entries in uses.items():
        for i, e in enumerate(entries):
            path = e.options.get("path")
            if path and not str(path).startswith(("hf://",)):
                p = Path(path)
                if not p.is_absolute() and (base / p).exists():
                    p = base / p
                if not p.exists():
                    raise SaroError(f"prompts.{use}[{i}].options.path: file not found: {path}")
                e.options["path"] = str(p.resolve())


def find_recipe(name: str) -> Path:
    """Locate a recipe by path, or by name in ./recipes or the source checkout's recipes folder."""
    p = Path(name)
    if p.is_file():
        return p
    candidates = [Path("recipes") / name, Path("recipes") / f"{name}.yaml"]
    repo = Path(__file__).resolve().parents[2] / "recipes"
    candidates += [repo / name, repo / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise SaroError(f"{name}: recipe not found")
