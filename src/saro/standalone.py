"""``saro eval`` without a recipe: evaluate N model folders (or served models) on named suites in one run.

    saro eval --model base=embedded --model rw=runs/demo/train_sft/final --model saro=runs/demo/train_dpo/final \\
              --suite demo --out runs/eval-x

builds an in-memory recipe (a prompts section from the suites, an eval and a report section) and runs its
``prompts``, ``eval`` and ``report`` stages through ``saro.pipeline``, so the run folder has the same files,
manifest, resume and skip behaviour as a recipe run. A model is ``NAME=SOURCE`` where SOURCE is a folder, a hub
id or ``embedded``; prefix it with a backend to generate elsewhere: ``NAME=vllm:/models/x`` or
``NAME=openai:served-name`` (with ``--base-url`` and ``--api-key-env``). ``--method NAME=METHOD`` evaluates a model
with a prompting or inference-time method (``saro.evaluate.methods``: policy_system, policy_reasoning,
self_reflect); give the same source twice under two names to compare a model with and without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.recipe import Recipe, apply_overrides, validate_recipe

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm", "openai")
DEFAULT_SUITES = ["demo"]


@dataclass
class StandaloneEval:
    """Options of a recipe-less ``saro eval``."""

    models: list[str]
    out: str
    methods: list[str] = field(default_factory=list)
    reflect_max_new_tokens: int | None = None
    suites: list[str | dict[str, Any]] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    judge_options: list[str] = field(default_factory=list)
    n: int | None = None
    max_new_tokens: int = 256
    reasoning_budget: int | None = None
    batch_size: int = 8
    backend: str = "hf"
    base_url: str | None = None
    api_key_env: str | None = None
    train_data: list[str] = field(default_factory=list)
    train_runs: list[str] = field(default_factory=list)
    contamination_threshold: float | None = 0.95
    drop_contaminated: bool = False
    lm_eval_tasks: list[str] = field(default_factory=list)
    lm_eval_limit: int | None = None
    show_unsafe: bool = False
    bootstrap: int = 1000
    seed: int = 0
    threads: int | None = None
    name: str | None = None
    overrides: list[str] = field(default_factory=list)


def parse_model(spec: str, default_backend: str = "hf") -> tuple[str, str, str]:
    """``NAME=[BACKEND:]SOURCE`` -> (name, backend, source)."""
    if "=" not in spec:
        raise SaroError(f"--model {spec!r}: expected NAME=SOURCE, e.g. --model rw=runs/demo/train_sft/final")
    name, source = (x.strip() for x in spec.split("=", 1))
    if not name or not source:
        raise SaroError(f"--model {spec!r}: empty name or source")
    backend = default_backend
    head, sep, rest = source.partition(":")
    if sep and head in BACKENDS:
        backend, source = head, rest
    return name, backend, source


def parse_methods(items: list[str], names: list[str]) -> dict[str, str]:
    """``NAME=METHOD`` items -> {model name: method}; the name must be one of the ``--model`` names."""
    from saro.evaluate.methods import METHODS

    out: dict[str, str] = {}
    for it in items:
        name, sep, method = (x.strip() for x in it.partition("="))
        if not sep or not name or not method:
            raise SaroError(f"--method {it!r}: expected NAME=METHOD, e.g. --method base=policy_reasoning")
        if name not in names:
            raise SaroError(f"--method {it!r}: no --model is named '{name}' (models: {', '.join(names)})")
        if method not in METHODS:
            raise SaroError(f"--method {it!r}: unknown method '{method}' (one of {', '.join(METHODS)})")
        if name in out:
            raise SaroError(f"--method: model '{name}' is given a method twice")
        out[name] = method
    return out


def _apply_methods(opts: StandaloneEval, models: list[dict[str, Any]]) -> None:
    """Set each model entry's method, and the self_reflect second-pass budget on self_reflect models."""
    methods = parse_methods(opts.methods, [m["name"] for m in models])
    for entry in models:
        if entry["name"] in methods:
            entry["method"] = methods[entry["name"]]
    if opts.reflect_max_new_tokens is not None:
        chosen = [e for e in models if e.get("method") == "self_reflect"]
        if not chosen:
            raise SaroError("--reflect-max-new-tokens: no model has --method NAME=self_reflect")
        if opts.reflect_max_new_tokens < opts.max_new_tokens:
            raise SaroError(
                f"--reflect-max-new-tokens {opts.reflect_max_new_tokens} is smaller than the first pass "
                f"(--max-new-tokens {opts.max_new_tokens})"
            )
        for e in chosen:
            e["reflect_max_new_tokens"] = opts.reflect_max_new_tokens


def parse_judge_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``JUDGE.KEY=VALUE`` items (values parsed as YAML) -> {judge: {key: value}}."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for it in items:
        key, sep, raw = it.partition("=")
        judge, dot, opt = key.partition(".")
        if not sep or not dot or not judge or not opt:
            raise SaroError(
                f"--judge-option {it!r}: expected JUDGE.KEY=VALUE, e.g. refusal.offtopic_is_refusal=false"
            )
        out.setdefault(judge, {})[opt] = yaml.safe_load(raw)
    return out


def build_recipe(opts: StandaloneEval) -> Recipe:
    """The in-memory recipe of a standalone evaluation."""
    if not opts.models:
        raise SaroError("saro eval: give a recipe, or at least one --model NAME=SOURCE")
    models: list[dict[str, Any]] = []
    local: list[str] = []
    for spec in opts.models:
        name, backend, source = parse_model(spec, opts.backend)
        if any(m["name"] == name for m in models):
            raise SaroError(f"--model: the name '{name}' is used twice")
        entry: dict[str, Any] = {"name": name, "source": source}
        if backend != "hf":
            b: dict[str, Any] = {"backend": backend, "model": source, "batch_size": opts.batch_size}
            if backend == "openai":
                b.update(base_url=opts.base_url, api_key_env=opts.api_key_env)
            entry["backend"] = b
        if backend != "openai":
            local.append(source)
        models.append(entry)
    _apply_methods(opts, models)
    suites: list[Any] = list(opts.suites or DEFAULT_SUITES)
    if opts.n is not None:
        suites = [{"name": s, "n": opts.n} if isinstance(s, str) else {**s, "n": opts.n} for s in suites]
    judges = list(opts.judges or ["refusal"])
    jopts = parse_judge_options(opts.judge_options)
    aliases = {}
    for j in judges:  # "alias=registered" gives a second instance of a judge with other options
        if "=" in j:
            alias, reg = j.split("=", 1)
            aliases[alias] = reg
    judges = [j.split("=", 1)[0] for j in judges]
    for j in jopts:
        if j not in judges:
            raise SaroError(f"--judge-option {j}.…: '{j}' is not one of the judges ({', '.join(judges)})")
    out = Path(opts.out)
    data: dict[str, Any] = {
        "name": opts.name or f"eval-{out.name}",
        "description": "saro eval on " + ", ".join(m["name"] for m in models),
        "seed": opts.seed,
        "run_dir": str(out),
        "threads": opts.threads,
        "model": {"source": local[0] if local else "embedded"},
        "prompts": {"eval_suites": suites},
        "eval": {
            "models": models,
            "max_new_tokens": opts.max_new_tokens,
            "reasoning_budget": opts.reasoning_budget,
            "batch_size": opts.batch_size,
            "judges": judges,
            "judge_options": jopts,
            "judge_aliases": aliases,
            "bootstrap": opts.bootstrap,
            "contamination_threshold": opts.contamination_threshold,
            "contamination_files": [str(Path(f).resolve()) for f in opts.train_data],
            "contamination_runs": [str(Path(r).resolve()) for r in opts.train_runs],
            "drop_contaminated": opts.drop_contaminated,
        },
        "report": {"show_unsafe": opts.show_unsafe},
    }
    if opts.lm_eval_tasks:
        data["eval"]["lm_eval"] = {"tasks": opts.lm_eval_tasks, "limit": opts.lm_eval_limit}
    data = apply_overrides(data, opts.overrides)
    return validate_recipe(data, where="saro eval")


def run_standalone(opts: StandaloneEval, overwrite: bool = False) -> tuple[Recipe, dict[str, Any]]:
    """Build the recipe and run its prompts, eval and report stages; returns the recipe and stage summaries."""
    from saro.pipeline import run_stage
    from saro.stage import RunDir, set_threads

    recipe = build_recipe(opts)
    for f in recipe.eval.contamination_files if recipe.eval else []:
        if not Path(f).is_file():
            raise SaroError(f"--train-data {f}: file not found")
    set_threads(recipe.threads)
    run = RunDir(recipe.resolved_run_dir())
    out = {}
    for stage in ("prompts", "eval", "report"):
        out[stage] = run_stage(recipe, stage, overwrite=overwrite, run=run)
    return recipe, out


def recipe_from_run(run_dir: str | Path) -> Recipe:
    """The recipe a run folder was made with (from its manifest), e.g. to re-write the report of a standalone
    evaluation."""
    from saro.records import read_json

    m = Path(run_dir) / "manifest.json"
    if not m.is_file():
        raise SaroError(f"{run_dir}: not a saro run folder (no manifest.json)")
    config = read_json(m).get("config")
    if not isinstance(config, dict):
        raise SaroError(f"{m}: has no resolved config")
    config["run_dir"] = str(Path(run_dir))
    return validate_recipe(config, where=str(m))
