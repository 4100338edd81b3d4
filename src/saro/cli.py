"""The ``saro`` command line: parses arguments, loads the recipe, calls one stage's ``run``; no logic of its own."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from saro import stages as table
from saro.console import console, setup_logging
from saro.errors import SaroError

log = logging.getLogger("saro.cli")

app = typer.Typer(
    name="saro",
    help="SaRO: safety alignment by policy-driven reasoning (Reasoning-style Warmup SFT + SRPO DPO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# the groups of the stages' two-word commands (saro synth rw, saro train sft: the stage table's ``command``)
GROUP_HELP = {
    "synth": "Build training data: RIT-D for the warmup (rw), preference pairs for SRPO (srpo).",
    "train": "Train: Reasoning-style Warmup SFT (sft) and SRPO DPO (dpo), on TRL.",
}
analyze_app = typer.Typer(
    help="Analyses: embedding-space overlap of harmful, jailbreak and benign prompts.", no_args_is_help=True
)
app.add_typer(analyze_app, name="analyze")

RecipeArg = Annotated[str, typer.Argument(help="Recipe YAML (path, or a name under recipes/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe key: --set train_sft.learning_rate=1e-4"),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo the stage(s) even if done.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def _recipe(name: str, overrides: list[str] | None):
    from saro.pipeline import load_recipe
    from saro.recipe import find_recipe

    return load_recipe(find_recipe(name), overrides or [])


def _stage(recipe_name: str, stage: str, overrides: list[str] | None, overwrite: bool, verbose: bool) -> None:
    setup_logging(verbose)
    from saro.pipeline import run_stage
    from saro.stage import RunDir, set_threads

    recipe = _recipe(recipe_name, overrides)
    set_threads(recipe.threads)
    summary = run_stage(recipe, stage, overwrite=overwrite, run=RunDir(recipe.resolved_run_dir()))
    console.print(f"[bold]{stage}[/bold] done: {summary}")


@app.command()
def demo(
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer prompts and steps: a first look in minutes.")
    ] = False,
    overwrite: OverwriteOpt = False,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run SaRO end to end on the embedded SmolLM2-135M, offline: recipes/demo.yaml into runs/demo/."""
    run(recipe="demo-quick" if quick else "demo", set_=set_, overwrite=overwrite, verbose=verbose)


@app.command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    stage: Annotated[list[str] | None, typer.Option(help="Run only these stages (repeatable).")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run every stage of a recipe in order, skipping stages that are done with the same config."""
    setup_logging(verbose)
    from saro.pipeline import run_recipe

    r = _recipe(recipe, set_)
    console.print(
        f"[bold]saro run[/bold] {r.name}: stages {', '.join(r.enabled())} -> {r.resolved_run_dir()}"
    )
    run_recipe(r, overwrite=overwrite, stages=stage, until=until)
    from saro.stage import RunDir

    if RunDir(r.resolved_run_dir()).find("report", "json") and (until is None or until == "report"):
        _print_summary(r.resolved_run_dir())


def _print_summary(run_dir: Path, out: Console | None = None) -> None:
    """The report's summary, one block per model (fits an 80-column terminal), then where the report files are."""
    from rich.table import Table

    from saro.report.schema import read_report
    from saro.report.tables import summary_blocks
    from saro.stage import RunDir

    out = out or console
    run = RunDir(run_dir)
    report = read_report(run.file("report", "json")).model_dump(mode="json")
    out.print(f"[bold]saro: {report['run'].get('recipe')}[/bold] (judge: {report['primary_judge']})")
    for title, rows in summary_blocks(report):
        t = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
        t.add_column(no_wrap=True)
        t.add_column(overflow="fold")
        for measure, value in rows:
            t.add_row(measure, value)
        out.print(t)
    for suffix in ("md", "html", "json"):
        p = run.root / f"report.{suffix}"
        if p.exists():
            out.print(f"report: {p}")


def _stage_command(stage: str) -> Callable[..., None]:
    """``saro <command> RECIPE``: run one stage of the recipe (its help is the stage table's ``doc``)."""

    def command(
        recipe: RecipeArg, set_: SetOpt = None, overwrite: OverwriteOpt = False, verbose: VerboseOpt = False
    ) -> None:
        _stage(recipe, stage, set_, overwrite, verbose)

    command.__doc__ = table.get(stage).doc
    return command


def prompts_cmd(
    recipe: RecipeArg, set_: SetOpt = None, overwrite: OverwriteOpt = False, verbose: VerboseOpt = False
) -> None:
    """Draw and label the recipe's prompt sets (disjoint rw / srpo / eval), with jailbreak attacks applied."""
    _stage(recipe, "prompts", set_, overwrite, verbose)
    from saro.prompts.phrasing import phrasing_rich_table
    from saro.records import read_json
    from saro.stage import RunDir

    stats = RunDir(_recipe(recipe, set_).resolved_run_dir()).find("prompts", "stats")
    if stats is not None:
        console.print(phrasing_rich_table(read_json(stats).get("phrasing") or {}))


def eval_cmd(
    recipe: Annotated[
        str | None,
        typer.Argument(help="Recipe YAML (runs its eval stage); omit it to evaluate --model folders."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="NAME=SOURCE (folder, hub id, 'embedded'; prefix vllm: or openai:). Repeatable.",
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=METHOD for --model NAME: policy_system (policy as system prompt), policy_reasoning "
            "(reason over the policy, few-shot), self_reflect (answer, review, revise). Repeatable."
        ),
    ] = None,
    reflect_max_new_tokens: Annotated[
        int | None, typer.Option(help="self_reflect: review-pass tokens (default, least: --max-new-tokens).")
    ] = None,
    suite: Annotated[
        list[str] | None, typer.Option("--suite", help="Suite name or YAML (default: demo). Repeatable.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder for a recipe-less evaluation.")
    ] = None,
    judge: Annotated[
        list[str] | None,
        typer.Option("--judge", help="Judge (first = primary; ALIAS=JUDGE for a second copy)."),
    ] = None,
    judge_option: Annotated[
        list[str] | None, typer.Option("--judge-option", help="JUDGE.KEY=VALUE, e.g. llama_guard.model=PATH.")
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Prompts per suite entry (smaller, quicker runs).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per generation.")] = 256,
    reasoning_budget: Annotated[
        int | None, typer.Option(help="Close </think> after this many thinking tokens, then answer.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 8,
    backend: Annotated[
        str, typer.Option(help="Default backend for --model: hf, ct2, vllm or openai.")
    ] = "hf",
    base_url: Annotated[str | None, typer.Option(help="openai backend: server URL.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="openai backend: NAME of the key variable.")] = None,
    train_data: Annotated[
        list[str] | None, typer.Option("--train-data", help="Training file to check for contamination.")
    ] = None,
    train_run: Annotated[
        list[str] | None, typer.Option("--train-run", help="Run folder whose training data is checked.")
    ] = None,
    contamination_threshold: Annotated[
        float, typer.Option(help="Near-duplicate MiniLM cosine threshold (0 turns the near check off).")
    ] = 0.95,
    drop_contaminated: Annotated[
        bool, typer.Option("--drop-contaminated", help="Leave out eval prompts found in the training data.")
    ] = False,
    lm_eval_task: Annotated[
        list[str] | None,
        typer.Option("--lm-eval-task", help="Also run lm-evaluation-harness (if installed)."),
    ] = None,
    lm_eval_limit: Annotated[int | None, typer.Option(help="Examples per lm-eval task.")] = None,
    show_unsafe: Annotated[
        bool, typer.Option("--show-unsafe", help="Show harmful completions unredacted in the report.")
    ] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate with each model on the held-out suites, judge, and compute metrics with intervals.

    With a RECIPE: run its eval stage. Without: evaluate the --model folders on --suite suites into --out
    (prompts, eval and report stages), e.g. saro eval -m base=embedded -m rw=runs/demo/train_sft/final
    --suite harmbench --suite rho-overrefusal --out runs/eval-x. Baselines: -m base+reasoning=embedded
    --method base+reasoning=policy_reasoning evaluates the same model prompted to reason over the policy.
    """
    if recipe is not None:
        if model or out or method or reflect_max_new_tokens is not None:
            raise SaroError("saro eval: give a RECIPE or --model/--method/--out, not both")
        _stage(recipe, "eval", set_, overwrite, verbose)
        return
    setup_logging(verbose)
    from saro.standalone import run_standalone

    if out is None:
        raise SaroError("saro eval: give a RECIPE, or --model NAME=SOURCE (repeatable) and --out RUN_FOLDER")
    opts = _standalone_options(locals())
    opts.methods = list(method or [])
    opts.reflect_max_new_tokens = reflect_max_new_tokens
    r, _ = run_standalone(opts, overwrite=overwrite)
    _print_summary(r.resolved_run_dir())


def _standalone_options(a: dict[str, Any]) -> Any:
    """The StandaloneEval of a recipe-less ``saro eval`` from the command's arguments (its locals)."""
    from saro.standalone import StandaloneEval

    return StandaloneEval(
        models=list(a["model"] or []),
        out=str(a["out"]),
        suites=list(a["suite"] or []),
        judges=list(a["judge"] or []),
        judge_options=list(a["judge_option"] or []),
        n=a["n"],
        max_new_tokens=a["max_new_tokens"],
        reasoning_budget=a["reasoning_budget"],
        batch_size=a["batch_size"],
        backend=a["backend"],
        base_url=a["base_url"],
        api_key_env=a["api_key_env"],
        train_data=list(a["train_data"] or []),
        train_runs=list(a["train_run"] or []),
        contamination_threshold=a["contamination_threshold"] or None,
        drop_contaminated=a["drop_contaminated"],
        lm_eval_tasks=list(a["lm_eval_task"] or []),
        lm_eval_limit=a["lm_eval_limit"],
        show_unsafe=a["show_unsafe"],
        bootstrap=a["bootstrap"],
        seed=a["seed"],
        threads=a["threads"],
        overrides=list(a["set_"] or []),
    )


def report_cmd(
    recipe: Annotated[
        str, typer.Argument(help="Recipe YAML, or a run folder (e.g. one made by saro eval --out).")
    ],
    set_: SetOpt = None,
    show_unsafe: Annotated[
        bool, typer.Option("--show-unsafe", help="Show harmful prompts and completions unredacted.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write report.json / report.md / report.html for a run and print the summary table."""
    overrides = list(set_ or []) + (["report.show_unsafe=true"] if show_unsafe else [])
    if Path(recipe).is_dir():
        setup_logging(verbose)
        from saro.pipeline import run_stage
        from saro.recipe import apply_overrides, validate_recipe
        from saro.stage import RunDir
        from saro.standalone import recipe_from_run

        r = recipe_from_run(recipe)
        if overrides:
            r = validate_recipe(apply_overrides(r.model_dump(mode="json"), overrides), where=recipe)
        if r.report is None:
            raise SaroError(f"{recipe}: its recipe has no report section")
        run_stage(r, "report", overwrite=True, run=RunDir(recipe))
        _print_summary(Path(recipe))
        return
    _stage(recipe, "report", overrides, True, verbose)
    r = _recipe(recipe, overrides)
    _print_summary(r.resolved_run_dir())


@app.command()
def judge(
    name: Annotated[
        str,
        typer.Argument(
            help="Judge name (refusal, llama_guard, wildguard, wildguard_refusal, harmbench, llm_harm, strongreject)."
        ),
    ],
    file: Annotated[Path, typer.Argument(help="csv or jsonl with prompt and response columns.")],
    out: Annotated[
        Path | None, typer.Option(help="Output file (jsonl or csv); default: FILE.<judge>.jsonl")
    ] = None,
    prompt_col: Annotated[str, typer.Option(help="Prompt column.")] = "prompt",
    response_col: Annotated[str, typer.Option(help="Response column.")] = "response",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Judge option KEY=VALUE.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Label existing (prompt, response) rows with a judge; resumable."""
    setup_logging(verbose)
    import yaml

    from saro.judges import judge_file

    kw = {}
    for o in option or []:
        if "=" not in o:
            raise SaroError(f"--option {o!r}: expected KEY=VALUE")
        k, v = o.split("=", 1)
        kw[k] = yaml.safe_load(v)
    out = out or file.with_name(f"{file.stem}.{name}.jsonl")
    summary = judge_file(name, file, out, prompt_col=prompt_col, response_col=response_col, **kw)
    console.print(f"wrote {out}: {summary}")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="Model folder, 'embedded', or a hub id.")],
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require this bearer token (or set SARO_API_KEY).")
    ] = None,
    hide_reasoning: Annotated[bool, typer.Option(help="Hide reasoning and reasoning_content.")] = False,
    reasoning_budget: Annotated[int | None, typer.Option(help="Cap the thinking tokens.")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Requests batched together.")] = 8,
    model_name: Annotated[str | None, typer.Option(help="Model name served (default: folder name).")] = None,
    batch_dir: Annotated[
        str | None,
        typer.Option(help="Batch API files and batches (kept across restarts; default: a temporary folder)."),
    ] = None,
    backend: Annotated[str, typer.Option(help="Engine: hf (transformers) or ct2 (CTranslate2, CPU).")] = "hf",
    compute_type: Annotated[str, typer.Option(help="ct2: float32 or int8.")] = "float32",
    verbose: VerboseOpt = False,
) -> None:
    """OpenAI-compatible API for a model: reasoning in reasoning (and reasoning_content), answer in content,
    and the Batch API (/v1/files, /v1/batches)."""
    setup_logging(verbose)
    from saro.serve import serve as _serve

    _serve(
        model,
        host=host,
        port=port,
        api_key=api_key,
        hide_reasoning=hide_reasoning,
        reasoning_budget=reasoning_budget,
        max_batch_size=max_batch_size,
        model_name=model_name,
        batch_dir=batch_dir,
        backend=backend,
        compute_type=compute_type,
    )


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="Model folder, 'embedded', or a server URL (http://...).")],
    hide_reasoning: Annotated[bool, typer.Option(help="Hide the reasoning.")] = False,
    backend: Annotated[str, typer.Option(help="Engine for a local model: hf or ct2.")] = "hf",
    verbose: VerboseOpt = False,
) -> None:
    """Interactive chat in the terminal; reasoning shown dimmed."""
    setup_logging(verbose)
    from saro.chat import chat as _chat

    _chat(model, hide_reasoning=hide_reasoning, engine=backend)


@analyze_app.command("overlap")
def analyze_overlap(
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run directory: use its prompts/*.jsonl (else: prompt sources).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RUN/analysis, or runs/overlap).")
    ] = None,
    n: Annotated[
        int | None, typer.Option(help="Prompts per group (default: 80 from sources, all from a run).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling, attacks, CV folds and t-SNE.")] = 0,
    harmful: Annotated[
        list[str] | None,
        typer.Option(help="Harmful prompt source (repeatable; default harmbench, advbench)."),
    ] = None,
    borderline: Annotated[
        list[str] | None,
        typer.Option(help="Borderline source (repeatable; default rho_overrefusal, saro_borderline)."),
    ] = None,
    benign: Annotated[
        list[str] | None, typer.Option(help="Benign source (repeatable; default saro_benign).")
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(help="Attack wrapping the jailbreak group (repeatable; default: readable templates)."),
    ] = None,
    minilm: Annotated[
        bool | None,
        typer.Option(
            "--minilm/--no-minilm", help="MiniLM sentence embeddings (default: on unless a model given)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="A causal LM's hidden states: 'embedded', a folder, a hub id, or @stage."),
    ] = None,
    base: Annotated[str | None, typer.Option(help="Base model, measured beside --aligned.")] = None,
    aligned: Annotated[
        str | None, typer.Option(help="Aligned model, e.g. runs/demo/train_dpo/final or @train_dpo.")
    ] = None,
    layer: Annotated[
        str, typer.Option(help="Hidden-state layer: int (negative from the end) or 'middle'.")
    ] = "middle",
    pooling: Annotated[str, typer.Option(help="Token pooling: mean or last.")] = "mean",
    template: Annotated[
        bool, typer.Option("--template/--no-template", help="Embed each prompt as a chat user turn.")
    ] = True,
    batch_size: Annotated[int, typer.Option(help="Forward-pass batch size.")] = 16,
    k: Annotated[int, typer.Option(help="Neighbours for kNN label purity.")] = 10,
    folds: Annotated[int, typer.Option(help="Cross-validation folds of the linear probes.")] = 5,
    verbose: VerboseOpt = False,
) -> None:
    """Embedding-space overlap of harmful, jailbreak, borderline and benign prompts: plots and measures."""
    setup_logging(verbose)
    from saro.analysis import overlap as ov

    if run_dir is not None:
        if harmful or borderline or benign or attack:
            raise SaroError(
                "give a run directory or prompt sources (--harmful/--borderline/--benign), not both"
            )
        groups, inputs = ov.groups_from_run(run_dir, n=n, seed=seed)
    else:
        groups, inputs = ov.groups_from_sources(
            n=80 if n is None else n,
            seed=seed,
            harmful=harmful or ov.DEFAULT_HARMFUL,
            borderline=borderline or ov.DEFAULT_BORDERLINE,
            benign=benign or ov.DEFAULT_BENIGN,
            attacks=attack or ov.DEFAULT_ATTACKS,
        )
    if (base is None) != (aligned is None):
        raise SaroError("--base and --aligned go together (measured side by side)")
    models = [(label, ref) for label, ref in (("model", model), ("base", base), ("aligned", aligned)) if ref]
    use_minilm = minilm if minilm is not None else not models
    embedders = [ov.Embedder(ov.MINILM, ov.MINILM)] if use_minilm else []
    for label, ref in models:
        embedders.append(ov.Embedder(label, ov.resolve_run_model(ref, run_dir), layer, pooling))
    out = out or (run_dir / "analysis" if run_dir is not None else Path("runs/overlap"))
    result = ov.run_overlap(
        groups,
        embedders,
        out,
        inputs=inputs,
        k=k,
        folds=folds,
        seed=seed,
        batch_size=batch_size,
        template=template,
    )
    _print_overlap(result, out)


def _print_overlap(result: dict[str, Any], out: Path) -> None:
    """The side-by-side measures of ``saro analyze overlap`` as a table, then the files written."""
    from rich.table import Table

    table = Table(title=f"embedding overlap ({', '.join(f'{g} {c}' for g, c in result['counts'].items())})")
    table.add_column("measure")
    for s in result["sources"]:
        table.add_column(s["label"])
    labels = [s["label"] for s in result["sources"]]
    for key, row in result["side_by_side"].items():
        if not key.endswith("_std"):
            table.add_row(key, *("-" if row.get(lb) is None else f"{row[lb]:.3f}" for lb in labels))
    console.print(table)
    console.print(f"wrote {out / 'overlap.json'} and {', '.join(result['plots'].values())}")


@app.command("push")
def push_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (e.g. runs/demo).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repository OWNER/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    model: Annotated[
        str | None, typer.Option("--model", help="sft, dpo or a variant name (default: dpo, else sft).")
    ] = None,
    merge_lora: Annotated[
        bool, typer.Option("--merge-lora", help="Merge an adapter-only final/ into its base first.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Upload a trained final/ model with its model card to the Hugging Face hub (token from HF_TOKEN)."""
    setup_logging(verbose)
    from saro.train.push import push_model

    console.print(
        f"pushed to {push_model(run, repo_id, model=model, private=private, merge_lora=merge_lora)}"
    )


@app.command("status")
def status_cmd(
    target: Annotated[str, typer.Argument(help="A run folder or a recipe.")],
    overrides: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Each stage: done / stale (and why: which setting, file, code version or upstream stage) / missing."""
    setup_logging(verbose)
    from saro.pipeline import recipe_of_run, stage_status, unit_status
    from saro.stage import RunDir

    is_run = Path(target).is_dir() and (Path(target) / "manifest.json").is_file()
    recipe = recipe_of_run(target) if is_run else _recipe(target, overrides)
    if not recipe.resolved_run_dir().is_dir():  # nothing run yet: do not create the folder
        for stage in recipe.enabled():
            typer.echo(f"{stage:<11} missing")
        return
    run = RunDir(recipe.resolved_run_dir())
    for stage, state, why in stage_status(recipe, run):
        typer.echo(f"{stage:<11} {state}" + (f": {'; '.join(why)}" if why else ""))
        if state != "missing":
            for unit, ustate in unit_status(recipe, run, stage):
                typer.echo(f"  {unit:<20} {ustate}")


@app.command("label")
def label_cmd(
    target: Annotated[str, typer.Argument(help="A run folder or a recipe (its run folder).")],
    n: Annotated[
        int, typer.Option("--n", help="Answers in the blind sample (stratified by model and group).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the sample (same seed, larger --n: a superset).")] = 0,
    labeller: Annotated[
        str | None, typer.Option(help="Who labels (default: $SARO_LABELLER or the login name).")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Write the blind sample as JSONL (no verdicts, no models)."),
    ] = None,
    import_file: Annotated[
        Path | None, typer.Option("--import", help="Import labels: JSONL rows {id, label[, note]}.")
    ] = None,
    html: Annotated[
        bool, typer.Option("--html", help="Write a self-contained labelling page (RUN/labels/label.html).")
    ] = False,
    html_out: Annotated[Path | None, typer.Option("--html-out", help="Path of the --html page.")] = None,
    testset: Annotated[
        Path | None,
        typer.Option(
            "--testset", help="Write the labelled answers (model, kind, prompt, response, label) as JSONL."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before showing answers.")] = False,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Label a blind, stratified sample of a run's answers (terminal, HTML page or JSONL); the report then shows the
    judge's agreement with the labels and the rates recomputed from them. Shows answers to harmful prompts."""
    setup_logging(verbose)
    from saro.labels.command import LabelOptions, label_run
    from saro.labels.store import default_labeller

    run_dir = Path(target) if Path(target).is_dir() else _recipe(target, set_).resolved_run_dir()
    opts = LabelOptions(
        n=n,
        seed=seed,
        labeller=labeller or default_labeller(),
        export=export,
        import_file=import_file,
        html=html_out,
        html_default=html,
        testset=testset,
        yes=yes,
    )

    def read() -> str | None:
        line = sys.stdin.readline()
        return line if line else None

    label_run(run_dir, opts, Console(file=sys.stdout, highlight=False, soft_wrap=True, markup=False), read)


@app.command("sources")
def sources_cmd() -> None:
    """List the registered prompt sources, jailbreak attacks and judges."""
    from rich.table import Table

    from saro.judges import list_judges
    from saro.prompts.attacks import ATTACKS
    from saro.prompts.sources import SOURCES

    t = Table(title="prompt sources")
    t.add_column("name")
    t.add_column("description")
    for s in SOURCES.values():
        t.add_row(s.name, s.description)
    console.print(t)
    a = Table(title="attacks")
    for c in ("name", "family", "default split", "needs LLM"):
        a.add_column(c)
    for x in ATTACKS.values():
        a.add_row(x.name, x.family, x.default_split, "yes" if x.needs_llm else "")
    console.print(a)
    console.print("judges: " + ", ".join(list_judges()))


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes are one line on stderr with exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="saro", standalone_mode=False)
    except SaroError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted; run the same command again to resume")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # usage errors of typer's (vendored) click or a plain click
        _usage_error_exit(e)
        raise


def _register_stage_commands() -> None:
    """One command per stage, named by the stage table (``saro prompts``, ``saro synth rw``, ``saro train sft``,
    ``saro eval``, ``saro report``): the stages with options of their own have their own function."""
    own: dict[str, Callable[..., None]] = {"prompts": prompts_cmd, "eval": eval_cmd, "report": report_cmd}
    groups: dict[str, typer.Typer] = {}
    for row in table.TABLE:
        fn: Callable[..., None] = own.get(row.name) or _stage_command(row.name)
        if len(row.command) == 1:
            app.command(row.command[0])(fn)
            continue
        group, name = row.command
        if group not in groups:
            groups[group] = typer.Typer(help=GROUP_HELP.get(group), no_args_is_help=True)
            app.add_typer(groups[group], name=group)
        groups[group].command(name)(fn)


_register_stage_commands()


def _click_modules() -> list[Any]:
    """typer >= 0.2x vendors click as ``typer._click``; older typers use click itself."""
    mods: list[Any] = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            continue
    return mods


def _usage_error_exit(e: Exception) -> None:
    """Usage errors: the usage line plus one line naming the argument, exit 2; Abort exits 130."""
    for exc in _click_modules():
        if isinstance(e, exc.UsageError):
            ctx = e.ctx
            if ctx is not None:
                typer.echo(ctx.get_usage(), err=True)
            msg = e.format_message()
            if msg:  # a group called without a subcommand has shown its help already
                typer.echo(f"error: {msg}", err=True)
            sys.exit(2)
        if isinstance(e, exc.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, exc.Abort):
            sys.exit(130)


if __name__ == "__main__":
    main()
