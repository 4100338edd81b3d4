"""The stage contract: one stage table, contexts that hand a stage only what it declares, hashes that cannot go
stale (file contents, defaults, code versions), and ``saro status`` / ``saro run`` saying why a stage is redone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saro import fingerprint, stages
from saro.errors import SaroError
from saro.pipeline import load_recipe, stage_hashes, stage_status
from saro.recipe import BackendSpec
from saro.records import read_rows
from saro.stage import RunDir, StageContext

REPO = Path(__file__).resolve().parents[1]


def _saro(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "saro", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=240
    )


def _own_recipe(tmp_path: Path, rows: list[str]) -> Path:
    csv = tmp_path / "mine.csv"
    csv.write_text("q\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    recipe = {
        "extends": str(REPO / "recipes" / "demo-quick.yaml"),
        "name": "mine",
        "run_dir": str(tmp_path / "run"),
        "prompts": {
            "categorize": "keyword",
            "rw": [
                {"source": "local", "options": {"path": "mine.csv", "text_column": "q", "kind": "benign"}}
            ],
        },
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_edited_prompt_file_redoes_the_prompts_stage_and_says_why(tmp_path):
    recipe = _own_recipe(tmp_path, ["How do I bake rye bread?", "What is a prime number?"])
    first = _saro("run", str(recipe), "--until", "prompts")
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(read_rows(tmp_path / "run" / "prompts" / "rw.jsonl")) == 2
    again = _saro("run", str(recipe), "--until", "prompts")
    assert "skipping" in again.stderr and "stale" not in again.stderr
    _own_recipe(tmp_path, ["How do I plant tulips?", "Explain photosynthesis.", "What is a haiku?"])
    status = _saro("status", str(tmp_path / "run"))
    assert status.returncode == 0, status.stderr[-2000:]
    line = next(x for x in status.stdout.splitlines() if x.startswith("prompts"))
    assert "stale" in line and "mine.csv changed" in line
    redo = _saro("run", str(recipe), "--until", "prompts")
    assert redo.returncode == 0, redo.stderr[-2000:]
    assert "stale" in redo.stderr and "mine.csv changed" in redo.stderr
    rows = read_rows(tmp_path / "run" / "prompts" / "rw.jsonl")
    assert sorted(r["text"] for r in rows) == [
        "Explain photosynthesis.",
        "How do I plant tulips?",
        "What is a haiku?",
    ]
    done = _saro("status", str(recipe))
    assert next(x for x in done.stdout.splitlines() if x.startswith("prompts")).split() == ["prompts", "done"]


def _recipe(tmp_path: Path):
    return load_recipe(_own_recipe(tmp_path, ["What is a prime number?"]))


def test_a_changed_training_default_makes_the_stage_stale(tmp_path, monkeypatch):
    from saro.train import config

    r = _recipe(tmp_path)
    before = fingerprint.fingerprints(r)
    monkeypatch.setitem(config.SFT_DEFAULTS, "packing", True)
    after = fingerprint.fingerprints(r)
    assert before["prompts"].hash == after["prompts"].hash
    assert before["train_sft"].hash != after["train_sft"].hash
    assert "setting train_sft.packing changed" in fingerprint.explain(
        before["train_sft"].to_json(), after["train_sft"]
    )
    # and everything downstream of it, through the chain
    assert before["train_dpo"].hash != after["train_dpo"].hash
    assert "upstream stage train_sft changed" in fingerprint.explain(
        before["train_dpo"].to_json(), after["train_dpo"]
    )


_HASHES = """
import json, sys
if sys.argv[2] == "block":
    sys.modules["trl"] = None  # as if the training extras were not installed
from saro.pipeline import load_recipe, stage_hashes
from saro.stage import RunDir, StageContext

r = load_recipe(sys.argv[1])
try:
    import saro.train.config  # noqa: F401
    trl = True
except ImportError:
    trl = False
units = StageContext(r, RunDir(sys.argv[3]), "train_dpo").unit_hashes()
print(json.dumps({"trl": trl, "stages": stage_hashes(r), "units": units}))
"""


def test_training_hashes_do_not_depend_on_whether_trl_is_installed(tmp_path):
    """A training stage's hash covers saro's settings with saro's defaults only, so it is the same with and without
    TRL importable (before, the TRL defaults entered it only when TRL was there)."""
    recipe = _own_recipe(tmp_path, ["What is a prime number?"])
    out = {}
    for mode in ("import", "block"):
        res = subprocess.run(
            [sys.executable, "-c", _HASHES, str(recipe), mode, str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        out[mode] = json.loads(res.stdout.splitlines()[-1])
    assert out["import"]["trl"] is True and out["block"]["trl"] is False
    assert out["import"]["stages"] == out["block"]["stages"]
    assert out["import"]["units"] == out["block"]["units"] and set(out["block"]["units"]) == {"main"}


def test_srpo_length_check_uses_train_dpos_resolved_max_length(tmp_path):
    r = _recipe(tmp_path)
    ctx = StageContext(r, RunDir(tmp_path / "x"), "synth_srpo")
    want = r.train_dpo.model_extra.get("max_length", 2048)
    assert ctx.setting("train_dpo.max_length", int) == want
    with pytest.raises(SaroError, match="without declaring"):
        ctx.setting("train_sft.max_length", int)
    prompts = StageContext(r, RunDir(tmp_path / "x"), "prompts")
    assert prompts.setting("synth_rw.teacher", BackendSpec).backend == "offline"
    with pytest.raises(SaroError, match="synth_rw.k"):
        prompts.setting("synth_rw.k", int)


def test_a_bumped_code_version_makes_the_stage_stale_and_names_it(tmp_path, monkeypatch):
    r = _recipe(tmp_path)
    old = fingerprint.fingerprints(r, "prompts")["prompts"]
    row = stages.BY_NAME["prompts"]
    monkeypatch.setitem(
        stages.BY_NAME, "prompts", dataclasses.replace(row, code_version=row.code_version + 1)
    )
    new = fingerprint.fingerprints(r, "prompts")["prompts"]
    assert new.hash != old.hash
    assert fingerprint.explain(old.to_json(), new) == [
        f"code version {row.code_version} -> {row.code_version + 1}"
    ]


def test_a_run_made_by_an_older_saro_needs_a_rerun(tmp_path):
    r = _recipe(tmp_path)
    run = RunDir(r.resolved_run_dir())
    h = stage_hashes(r, "prompts")["prompts"]
    run.update_stage("prompts", status="done", hash="0123456789abcdef", summary={})
    # even a matching hash without a fingerprint
    run.update_stage("synth_rw", status="done", hash=h, summary={})
    got = {s: (state, why) for s, state, why in stage_status(r, run)}
    assert got["prompts"] == ("stale", [fingerprint.OLDER_SARO])
    assert got["synth_rw"] == ("stale", [fingerprint.OLDER_SARO])
    assert got["train_sft"] == ("missing", [])


def test_unpinned_hub_dataset_is_recorded(tmp_path):
    r = _recipe(tmp_path)
    r.prompts.eval.append(r.prompts.eval[0].model_copy(update={"source": "xstest", "options": {}}))
    fp = fingerprint.fingerprints(r, "prompts")["prompts"]
    assert any("xstest" in u for u in fp.unpinned)
    pinned = r.prompts.eval[-1].model_copy(update={"options": {"revision": "abc123"}})
    r.prompts.eval[-1] = pinned
    assert not fingerprint.fingerprints(r, "prompts")["prompts"].unpinned


def test_model_reference_grammar():
    assert stages.parse_model_ref("@base") == stages.ModelRef("base")
    assert stages.parse_model_ref("@train_dpo/op_only") == stages.ModelRef("train_dpo", "op_only")
    assert stages.parse_model_ref("some/hub-id") is None
    for bad in ("@synth_rw", "@train_sft/", "@base/x"):
        with pytest.raises(SaroError, match="model reference"):
            stages.parse_model_ref(bad)


def test_non_utf8_recipe_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    out = _saro("status", str(bad))
    assert out.returncode == 2
    assert "bad.yaml" in out.stderr and "UTF-8" in out.stderr and "Traceback" not in out.stderr
