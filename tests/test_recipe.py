"""Recipes: every shipped recipe loads and builds every stage config; mistakes are one-line errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from saro.errors import SaroError
from saro.pipeline import load_recipe
from saro.recipe import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"demo.yaml", "demo-quick.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_builds_stage_configs(path, tmp_path):
    from saro.train.config import build_dpo_config, build_sft_config

    r = load_recipe(path)
    assert r.enabled()[0] == "prompts"
    for name, build in (("train_sft", build_sft_config), ("train_dpo", build_dpo_config)):
        sec = getattr(r, name)
        if sec is None:
            continue
        for unit, s in sec.units(name):
            cfg = build(s.trainer_settings(), output_dir=str(tmp_path / name / unit))
            assert cfg.bf16 is False or cfg.bf16 is True


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_misspelled_key_names_it_and_the_closest(tmp_path):
    p = _write(tmp_path, "name: x\nsynth_rw:\n  kk: 3\n")
    with pytest.raises(SaroError, match=r"unknown key 'synth_rw.kk' \(did you mean 'k'\?\)"):
        load_recipe(p)
    p = _write(tmp_path, "name: x\nmodell: {source: embedded}\n")
    with pytest.raises(SaroError, match=r"unknown key 'modell' \(did you mean 'model'\?\)"):
        load_recipe(p)


def test_wrong_type_names_key(tmp_path):
    p = _write(tmp_path, "name: x\nsynth_rw:\n  k: many\n")
    with pytest.raises(SaroError, match=r"key 'synth_rw.k'"):
        load_recipe(p)


def test_training_key_typo_is_caught_at_load(tmp_path):
    p = _write(tmp_path, "name: x\nsynth_rw: {}\ntrain_sft:\n  learnig_rate: 1.0e-4\n")
    with pytest.raises(SaroError, match=r"learnig_rate.*learning_rate"):
        load_recipe(p)


def test_missing_files_name_the_path(tmp_path):
    p = _write(tmp_path, "name: x\npolicy: nope.yaml\n")
    with pytest.raises(SaroError, match="nope.yaml"):
        load_recipe(p)
    p = _write(
        tmp_path,
        "name: x\nprompts:\n  rw:\n    - {source: local, options: {path: missing.csv, kind: benign}}\n",
    )
    with pytest.raises(SaroError, match=r"prompts.rw\[0\].options.path: file not found: missing.csv"):
        load_recipe(p)
    with pytest.raises(SaroError, match="recipe not found"):
        load_recipe(tmp_path / "none.yaml")


def test_invalid_yaml_names_line(tmp_path):
    p = _write(tmp_path, "name: x\nseed: [1,\n")
    with pytest.raises(SaroError, match=r"r.yaml:\d+: invalid YAML"):
        load_recipe(p)


def test_extends_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nseed: 1\nsynth_rw: {k: 2}\n")
    p = _write(tmp_path, "extends: base.yaml\nname: child\nsynth_rw: {judge: refusal}\n")
    r = load_recipe(p, ["seed=7", "synth_rw.k=5"])
    assert (r.name, r.seed, r.synth_rw.k, r.synth_rw.judge) == ("child", 7, 5, "refusal")
    with pytest.raises(SaroError, match="KEY=VALUE"):
        apply_overrides({}, ["novalue"])


def test_cli_misspelled_key_exit_code_2_one_line(tmp_path):
    p = _write(tmp_path, "name: x\nsynth_rw:\n  teachr: {backend: offline}\n")
    res = subprocess.run(
        [sys.executable, "-m", "saro", "run", str(p)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr
    assert len(err.splitlines()) == 1, err
    assert "synth_rw.teachr" in err and "teacher" in err


def test_non_utf8_recipe_and_policy_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SaroError, match=r"bad\.yaml: not valid UTF-8"):
        load_recipe(bad)
    pol = tmp_path / "pol.yaml"
    pol.write_bytes(b"categories: \xff\n")
    p = _write(tmp_path, f"name: x\npolicy: {pol}\n")
    with pytest.raises(SaroError, match=r"pol\.yaml: not valid UTF-8"):
        load_recipe(p)


def test_recipe_module_imports_no_stage_layer():
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "saro" / "recipe.py"
    mods = [
        n.module or ""
        for n in ast.walk(ast.parse(src.read_text(encoding="utf-8")))
        if isinstance(n, ast.ImportFrom)
    ] + [
        a.name
        for n in ast.walk(ast.parse(src.read_text(encoding="utf-8")))
        if isinstance(n, ast.Import)
        for a in n.names
    ]
    assert not [m for m in mods if m.startswith(("saro.evaluate", "saro.train"))]
