"""saro: safety alignment of chat LLMs by policy-driven reasoning (SaRO: RW SFT + SRPO DPO).

The Python API mirrors the command line and imports lazily, so that ``import saro`` stays fast::

    import saro
    recipe = saro.load_recipe("recipes/demo.yaml", overrides=["run_dir=runs/nb"])
    saro.run(recipe, until="eval")
    result = saro.evaluate({"base": "embedded"}, ["harmbench"], n=16, out="runs/eval-nb")
    verdicts = saro.judge("refusal", [{"prompt": "...", "response": "I can't help with that."}])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Import the (light) evaluate package first, so that the API function ``evaluate`` defined below is what the name
# ``saro.evaluate`` stays bound to: Python binds a subpackage to its parent's attribute when it is first imported,
# which would otherwise replace the function with the package. Submodules stay importable as usual
# (``from saro.evaluate import metrics``).
import saro.evaluate as _evaluate_package  # noqa: F401

if TYPE_CHECKING:
    from saro.recipe import Recipe

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "judge", "load_recipe", "run"]


def _setup() -> None:
    """Logging and progress on first use (setup_logging adds its handler once, however often it is called)."""
    from saro.console import setup_logging

    setup_logging(verbose=False)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load and validate a recipe YAML (a path or a bundled recipe name), with ``key=value`` overrides."""
    from saro.pipeline import load_recipe as _load
    from saro.recipe import find_recipe

    _setup()
    return _load(find_recipe(str(path)), list(overrides))


def run(
    recipe: str | Path | Recipe,
    stages: Sequence[str] | None = None,
    until: str | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a recipe's enabled stages (or only ``stages``, or up to ``until``), like ``saro run``.

    Stages already done with the same settings are reused; returns each stage's result by stage name.
    """
    from saro.pipeline import run_recipe

    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        from saro.errors import SaroError

        raise SaroError("saro.run: overrides apply to a recipe path; pass them to saro.load_recipe instead")
    _setup()
    return run_recipe(recipe, overwrite=overwrite, stages=list(stages) if stages else None, until=until)


def evaluate(
    models: Mapping[str, str] | Iterable[str],
    suites: Sequence[str] = (),
    judges: Sequence[str] = (),
    n: int | None = None,
    out: str | Path = "runs/eval",
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate models on suites into ``out``, like ``saro eval --model NAME=SOURCE --suite S --out OUT``.

    ``models`` maps a name to a source (folder, hub id, ``embedded``, ``vllm:``/``openai:`` prefix) or is a
    list of ``NAME=SOURCE`` strings. Other keywords are the ``StandaloneEval`` fields (``max_new_tokens``,
    ``batch_size``, ``judge_options``, ``seed``, ...). Returns the eval stage's result.
    """
    from saro.standalone import StandaloneEval, run_standalone

    _setup()
    specs = [f"{k}={v}" for k, v in models.items()] if isinstance(models, Mapping) else list(models)
    opts = StandaloneEval(
        models=specs, out=str(out), suites=list(suites), judges=list(judges), n=n, **options
    )
    _, result = run_standalone(opts, overwrite=overwrite)
    return result


def judge(name: str, rows: Iterable[Mapping[str, str]], **options: Any) -> list[dict[str, Any]]:
    """Judge ``{"prompt", "response"}`` rows with a registered judge; one verdict dict per row, in order.

    ``options`` go to the judge (e.g. ``model=PATH``). Each dict has ``label``, ``score``, ``raw``,
    ``refusal_class`` and ``truncated``.
    """
    from saro.errors import SaroError
    from saro.judges.base import JudgeInput, get_judge

    _setup()
    items = []
    for i, row in enumerate(rows):
        if "prompt" not in row or "response" not in row:
            raise SaroError(f"saro.judge: row {i} needs 'prompt' and 'response' keys (has {sorted(row)})")
        items.append(JudgeInput(str(row["prompt"]), str(row["response"])))
    return [asdict(v) for v in get_judge(name, **options).judge(items)] if items else []
