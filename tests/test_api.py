"""The Python API: the README's notebook example runs (on the tiny model), errors are SaroError, import is lazy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import saro
from saro.errors import SaroError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README: the Python API section has no python block"
    return blocks[0]


def test_readme_example_runs_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _readme_example().replace('"embedded"', repr(str(tiny_model_dir)))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "runs/eval-nb/report.md").is_file()
    assert scope["result"]["eval"]
    verdicts = scope["verdicts"]
    assert len(verdicts) == 2 and {"label", "score", "refusal_class"} <= set(verdicts[0])
    assert verdicts[0]["label"] != verdicts[1]["label"]  # a refusal and a compliance
    assert scope["recipe"].resolved_run_dir()


def test_judge_row_without_response_is_a_saro_error():
    with pytest.raises(SaroError, match="row 1 needs 'prompt' and 'response'"):
        saro.judge("refusal", [{"prompt": "a", "response": "b"}, {"prompt": "a"}])
    assert saro.judge("refusal", []) == []


def test_run_rejects_overrides_with_a_loaded_recipe():
    recipe = saro.load_recipe("demo-quick")
    with pytest.raises(SaroError, match="overrides"):
        saro.run(recipe, overrides=["seed=1"])


def test_import_is_lazy_and_fast():
    code = "import sys, saro; print(sorted(m for m in ('torch', 'transformers', 'typer', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_logging_set_up_once():
    import logging

    saro.judge("refusal", [{"prompt": "p", "response": "I can't help with that."}])
    before = list(logging.getLogger("saro").handlers)
    saro.judge("refusal", [{"prompt": "p", "response": "Sure."}])
    assert logging.getLogger("saro").handlers == before
    assert any(type(h).__module__.startswith("logging") or "rich" in type(h).__module__ for h in before)


def test_py_typed_ships():
    assert (Path(saro.__file__).parent / "py.typed").is_file()


def test_evaluate_stays_callable_after_the_evaluate_package_is_imported():
    import inspect
    import sys

    from saro.evaluate import metrics  # a submodule import must not rebind saro.evaluate to the package

    assert callable(saro.evaluate)
    assert "suites" in inspect.signature(saro.evaluate).parameters
    assert sys.modules["saro.evaluate.metrics"] is metrics
