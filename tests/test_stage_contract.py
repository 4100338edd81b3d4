"""The stage contract end to end: every stage of ``saro demo --quick``'s recipe (on the tiny model, sizes shrunk)
opens only the outputs of other stages it declares in the stage table; what the table derives (which stages run,
their commands, their units) matches what the code does; units are hashed, kept and shown by ``saro status``."""

from __future__ import annotations

import builtins
import fnmatch
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from saro import stages
from saro.errors import SaroError
from saro.pipeline import load_recipe, run_stage, stage_hashes, unit_status
from saro.recipe import Recipe, validate_recipe
from saro.stage import RunDir, StageContext

REPO = Path(__file__).resolve().parents[1]


def quick_recipe(model: Path, run_dir: Path, path: Path) -> Path:
    """demo-quick.yaml on the tiny model with shrunk sizes (its prompts, stages, models and judges unchanged)."""
    over = {
        "extends": str(REPO / "recipes" / "demo-quick.yaml"),
        "run_dir": str(run_dir),
        "threads": 1,
        "model": {"source": str(model), "template": "chatml"},
        "synth_rw": {"answer_model": {"max_new_tokens": 12}},
        # the drift model's answers become rejected sides only when complete and judged compliant: the tiny
        # random model's never are, the embedded model's often are (as in tests/test_pipeline.py)
        "synth_srpo": {
            "policy": {"max_new_tokens": 24},
            "drift_model": {"backend": "hf", "model": "embedded", "max_new_tokens": 48},
        },
        "train_sft": {"max_steps": 2, "max_length": 384, "save_steps": 1},
        "train_dpo": {"max_steps": 1, "max_length": 512, "save_steps": 1},
        "eval": {"max_new_tokens": 16, "base_max_new_tokens": 12, "bootstrap": 50},
    }
    path.write_text(yaml.safe_dump(over), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- what a stage opens


@contextmanager
def opened_files() -> Iterator[list[Path]]:
    """Every file opened through Python while the block runs (builtins.open, io.open, os.open; pathlib reads go
    through io.open), as absolute paths."""
    seen: list[Path] = []
    real_open, real_os_open = io.open, os.open

    def _open(file: Any, *a: Any, **kw: Any) -> Any:
        if isinstance(file, str | bytes | os.PathLike):
            seen.append(Path(os.fsdecode(file)).absolute())
        return real_open(file, *a, **kw)

    def _os_open(path: Any, *a: Any, **kw: Any) -> Any:
        seen.append(Path(os.fsdecode(path)).absolute())
        return real_os_open(path, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(builtins, "open", _open)
    mp.setattr(io, "open", _open)
    mp.setattr(os, "open", _os_open)
    try:
        yield seen
    finally:
        mp.undo()


def declared_patterns(recipe: Recipe, run: RunDir, stage: str) -> list[str]:
    """Glob patterns of the files of other stages that ``stage`` declares it reads."""
    row = stages.get(stage)
    reads = [(r.stage, r.output) for r in row.reads]
    if row.models_from is not None:
        reads += [(s, o) for s in stages.MODEL_STAGES for o in stages.MODEL_OUTPUTS]
    out = []
    for s, o in reads:
        output = stages.get(s).output(o)
        p = str(run.root.absolute() / s / output.path("*" if output.per_unit else None))
        out.append(p + "*" if output.file.endswith("/") else p)
    return out


def undeclared(opened: list[Path], run: RunDir, stage: str, patterns: list[str]) -> list[str]:
    """The files under another stage's folder that were opened without a declared read covering them."""
    root = run.root.absolute()
    bad = []
    for p in dict.fromkeys(opened):
        try:
            rel = p.relative_to(root)
        except ValueError:
            continue  # outside the run: models, caches, packaged data
        if len(rel.parts) < 2 or rel.parts[0] not in stages.STAGES or rel.parts[0] == stage:
            continue  # the manifest, the request cache, labels, analysis, its own folder
        if not any(fnmatch.fnmatch(str(p), pat) for pat in patterns):
            bad.append(str(rel))
    return bad


@pytest.fixture(scope="module")
def quick_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every stage of the shrunk demo-quick recipe, recording what each stage opens."""
    d = tmp_path_factory.mktemp("contract")
    recipe = load_recipe(quick_recipe(tiny_model_dir, d / "run", d / "quick.yaml"))
    run = RunDir(recipe.resolved_run_dir())
    opened: dict[str, list[Path]] = {}
    for stage in recipe.enabled():
        with opened_files() as seen:
            run_stage(recipe, stage, run=run)
        opened[stage] = list(seen)
    return {"recipe": recipe, "run": RunDir(run.root), "opened": opened}


def test_every_stage_of_the_demo_opens_only_what_it_declares(quick_run):
    recipe, run, opened = quick_run["recipe"], quick_run["run"], quick_run["opened"]
    assert list(opened) == list(stages.STAGES)  # demo-quick runs every stage
    for stage, files in opened.items():
        bad = undeclared(files, run, stage, declared_patterns(recipe, run, stage))
        assert bad == [], f"stage {stage} opened files of other stages it does not declare: {bad}"
    # the audit sees reads: every stage that reads another stage's output opened one
    for stage in ("synth_rw", "train_sft", "synth_srpo", "train_dpo", "eval", "report"):
        root = run.root.absolute()
        others = [p for p in opened[stage] if root in p.parents and p.relative_to(root).parts[0] != stage]
        assert any(p.relative_to(root).parts[0] in stages.STAGES for p in others), stage


def test_the_audit_fails_on_a_read_the_table_does_not_declare(quick_run):
    recipe, run = quick_run["recipe"], quick_run["run"]
    with opened_files() as seen:
        (run.root / "synth_rw" / "rit_d.jsonl").read_text(encoding="utf-8")  # as if eval read RIT-D
        (run.root / "eval" / "metrics.json").read_bytes()
    assert undeclared(seen, run, "synth_srpo", declared_patterns(recipe, run, "synth_srpo")) == [
        "synth_rw/rit_d.jsonl",
        "eval/metrics.json",
    ]
    ctx = StageContext(recipe, run, "synth_srpo")
    with pytest.raises(SaroError, match="reads synth_rw.rit_d without declaring it"):
        ctx.input("synth_rw", "rit_d")
    assert ctx.input("prompts", "srpo") == run.root / "prompts" / "srpo.jsonl"


def test_the_report_writes_in_its_folder_and_links_the_run_level_files(quick_run):
    run = quick_run["run"]
    for name in ("report.json", "report.md", "report.html"):
        own = run.root / "report" / name
        assert own.is_file() and (run.root / name).read_bytes() == own.read_bytes()
    seconds = json.loads((run.root / "report.json").read_text())["run"]["stage_seconds"]
    assert set(seconds) == set(stages.STAGES) and seconds["report"] is not None


def test_status_shows_the_units_and_a_changed_eval_model_keeps_the_others(quick_run, tmp_path):
    recipe, run = quick_run["recipe"], quick_run["run"]
    assert unit_status(recipe, run, "eval") == [(m.name, "done") for m in recipe.eval.models]
    variants = ["main", *(recipe.train_sft.variants or {})]  # the demo's SafetySFT variant too
    assert unit_status(recipe, run, "train_sft") == [(v, "done") for v in variants]
    data = recipe.model_dump(mode="json")
    data["eval"]["models"].append({"name": "rw-again", "source": "@train_sft", "suites": ["advbench"]})
    changed = validate_recipe(data)
    changed.run_dir = str(run.root)
    states = dict(unit_status(changed, run, "eval"))
    assert states["rw-again"] == "new" and all(states[m.name] == "kept" for m in recipe.eval.models)


# ------------------------------------------------------------------------------------- the table's derivations


def test_which_stages_run_follows_the_table(tmp_path):
    base = {"name": "x", "prompts": {}, "eval": {"models": [{"name": "b", "source": "@base"}]}}
    assert validate_recipe({**base, "report": {}}).enabled() == ["prompts", "eval", "report"]
    assert validate_recipe(base).enabled() == ["prompts", "eval"]
    with pytest.raises(SaroError, match="report needs eval"):
        validate_recipe({"name": "x", "report": {}})
    with pytest.raises(SaroError, match="train_sft needs synth_rw"):
        validate_recipe({"name": "x", "train_sft": {}})
    with pytest.raises(SaroError, match="train_dpo needs"):
        validate_recipe({"name": "x", "synth_rw": {}, "synth_srpo": {}, "train_dpo": {}})


def test_every_output_read_is_declared_by_its_stage():
    for row in stages.TABLE:
        for r in row.reads:
            assert stages.get(r.stage).output(r.output).name == r.output
            assert stages.STAGES.index(r.stage) < stages.STAGES.index(row.name), (row.name, str(r))


def test_eval_units_hash_drop_contaminated(tmp_path):
    """With reuse_from, generations of a run that kept contaminated prompts are not reused by one that drops them."""
    path = quick_recipe(tmp_path / "model", tmp_path / "run", tmp_path / "q.yaml")
    keep = load_recipe(path)
    drop = load_recipe(path, ["eval.drop_contaminated=true"])
    hashes = [
        StageContext(r, RunDir(tmp_path / "run"), "eval", hashes=stage_hashes(r, "eval")).unit_hashes()
        for r in (keep, drop)
    ]
    assert set(hashes[0]) == set(hashes[1]) == {m.name for m in keep.eval.models}
    assert all(hashes[0][m] != hashes[1][m] for m in hashes[0])


def test_every_stage_is_found_from_file_names_alone():
    """A stage's entry module is the file named after it (saro/synth/synth_rw.py runs synth_rw), and no other
    module carries a stage's name."""
    src = Path(stages.__file__).resolve().parent
    for row in stages.TABLE:
        assert row.module.rpartition(".")[2] == row.name, row.module
        assert callable(row.entry())
    named = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if p.stem in stages.STAGES)
    assert named == sorted(row.module.removeprefix("saro.").replace(".", "/") + ".py" for row in stages.TABLE)
