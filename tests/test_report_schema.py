"""The typed files between eval and report: metrics.json and report.json are validated when written and read (a
file of another version is one clear error naming what to rerun), the report lives in its own stage folder with the
run-level files linked to it, and the summary printed at the end fits an 80-column terminal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

from saro.cli import _print_summary
from saro.errors import SaroError
from saro.evaluate.eval import score_models
from saro.evaluate.schema import METRICS_VERSION, read_metrics, write_metrics
from saro.records import atomic_write_json, read_json
from saro.report.report import build_report, write_report
from saro.report.schema import read_report
from saro.report.tables import SUMMARY_RATES, summary_blocks, summary_rows
from saro.stage import RunDir
from test_metrics import _three_models

TYPES = {"harmbench": "harmful", "harmbench-jailbreak": "jailbreak", "rho": "overrefusal"}


def _metrics() -> dict:
    recs = _three_models()
    m = score_models(recs, ["refusal"], TYPES, 200, 0)
    return m | {
        "judge_info": {"refusal": {"judge": "refusal", "options": {}}},
        "sources": {name: "@base" if name == "base" else "@train_dpo" for name in recs},
        "backends": {name: "hf" for name in recs},
        "templates": {name: "chatml" for name in recs},
        "methods": {
            name: {"method": "none" if name == "base" else "trained", "name": "none"} for name in recs
        },
        "suites": {},
        "contamination": {"checked": False, "reason": "test"},
    }


def _run(tmp_path: Path, metrics: dict) -> RunDir:
    run = RunDir(tmp_path / "run")
    write_metrics(run.file("eval", "metrics"), metrics)
    return run


def test_metrics_are_validated_when_written_and_read(tmp_path):
    run = _run(tmp_path, _metrics())
    m = read_metrics(run.file("eval", "metrics"))
    assert m.metrics_version == METRICS_VERSION and list(m.models) == ["base", "rw", "saro"]
    assert m.methods["base"].method == "none" and m.models["saro"].n == 112
    broken = _metrics()
    del broken["models"]["rw"]["headline"]
    with pytest.raises(SaroError, match=r"models\.rw\.headline: Field required"):
        write_metrics(tmp_path / "x.json", broken)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("version", [None, 3, 99])
def test_a_metrics_file_of_another_version_is_one_clear_error(tmp_path, version):
    m = _metrics()
    if version is None:
        del m["metrics_version"]
    else:
        m["metrics_version"] = version
    path = tmp_path / "eval" / "metrics.json"
    atomic_write_json(path, m)
    older = version is None or version < METRICS_VERSION
    want = r"metrics\.json: written by an? " + ("older" if older else "newer") + r" saro .*saro eval RECIPE"
    with pytest.raises(SaroError, match=want):
        read_metrics(path)


def test_report_json_is_written_in_the_report_folder_and_validated(tmp_path):
    run = _run(tmp_path, _metrics())
    report = build_report(run, examples=0, analysis=False)
    paths = write_report(run, report, ["json", "md", "html"])
    assert paths == {f: run.root / "report" / f"report.{f}" for f in ("json", "md", "html")}
    for f in ("json", "md", "html"):
        top = run.root / f"report.{f}"
        assert top.is_symlink() and top.resolve() == paths[f].resolve()
    r = read_report(run.root / "report.json")
    assert r.schema_version == 5 and r.run.run_dir == str(run.root)
    old = read_json(paths["json"]) | {"schema_version": 4}
    atomic_write_json(paths["json"], old)
    with pytest.raises(SaroError, match=r"report\.json: written by an older saro.*saro report"):
        read_report(paths["json"])


def test_the_summary_fits_an_80_column_terminal(tmp_path):
    run = _run(tmp_path, _metrics())
    report = build_report(run, examples=0, analysis=False)
    write_report(run, report, ["json"])
    out = Console(width=80, record=True, file=open(tmp_path / "tty", "w"))  # noqa: SIM115
    _print_summary(run.root, out)
    text = out.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # no cell cut short
    flat = re.sub(r"\s+", " ", text)
    for (name, method, *rates), (title, rows) in zip(
        summary_rows(report), summary_blocks(report), strict=True
    ):
        assert title == f"{name} ({method})" and title in text
        assert [v for _, v in rows[: len(SUMMARY_RATES)]] == rates[: len(SUMMARY_RATES)]
        for label, v in rows:
            assert f"{label} {v}" in flat, v  # every label and number whole (a long value wraps at a space)
