"""The report stage's typed result, ``report/report.json`` (``Report``): validated when written and read (a file of
another version is one clear error naming what to rerun); its rows are described in ``saro.report.report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saro.evaluate.schema import Interval, JudgeMeasure, Row, Strict, validate_file
from saro.records import atomic_write_json, read_json

REPORT_VERSION = (
    5  # 5: primary measures, comparisons, clustered tests and MDD, verdicts, suites per rate; labels
)
_VERSION = ("schema_version", REPORT_VERSION)
_RERUN = "run the report stage again (saro report RECIPE or RUN)"


class RunInfo(Strict):
    """Where the report's numbers come from: the recipe, the run folder, the code and the time per stage."""

    recipe: str | None
    run_dir: str
    git_commit: str | None
    versions: dict[str, str] | None
    seed: int | None
    stage_seconds: dict[str, float | None]


class Report(Strict):
    """``report/report.json``: the report, every number with its interval and n (``saro.report.report``)."""

    schema_version: int
    title: str
    generated: str
    run: RunInfo
    primary_judge: str
    primary_judge_measures: str
    judges: list[str]
    judge_measures: dict[str, JudgeMeasure]
    judge_info: dict[str, Row]
    agreement: Row | None
    interval: Interval
    paired: list[Row]
    comparisons: list[list[str]] | None
    primary_measures: list[Row]
    models: dict[str, str]
    backends: dict[str, str]
    templates: dict[str, str]
    suites: dict[str, Row]
    summary: dict[str, Row]
    metrics: dict[str, Row]
    contamination: Row
    examples: dict[str, list[Row]]
    analysis: Row
    data: dict[str, Row]
    definitions: dict[str, str]
    redacted: bool
    labels: Row | None


def write_report_json(path: Path, report: dict[str, Any]) -> None:
    """Validate ``report.json`` against ``Report`` and write it as built."""
    validate_file(Report, report, str(path), _VERSION, "a bug: please report it")
    atomic_write_json(path, report)


def read_report(path: Path) -> Report:
    """``report.json``, validated; a file of another version is a clear error naming the stage to rerun."""
    return validate_file(Report, read_json(path), str(path), _VERSION, _RERUN)
