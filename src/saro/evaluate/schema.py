"""The typed files between the eval and report stages and their readers: ``eval/metrics.json`` (``Metrics``) and
``report/report.json`` (``Report``).

Each file carries its schema version (``metrics_version``, ``schema_version``); it is validated when written (a
missing or misspelt key is a bug, caught before the file exists) and when read, where a file of another version,
or one that does not validate, is one clear error naming the file and what to rerun. The rows below the top level
(a rate, a suite's numbers, a paired comparison) are described in ``saro.evaluate.metrics`` and
``saro.evaluate.report``; they are kept as written (mappings), so the files stay byte for byte what the stages
computed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from saro.errors import SaroError
from saro.records import atomic_write_json, read_json

log = logging.getLogger(__name__)

METRICS_VERSION = 4  # metrics.json layout: 4 = one denominator per name, clustered tests, verdicts set apart
REPORT_VERSION = (
    5  # 5: primary measures, comparisons, clustered tests and MDD, verdicts, suites per rate; labels
)

Interval = Literal["wilson", "clopper_pearson", "cluster_bootstrap"]
JudgeMeasure = Literal["refusal", "harm", "other"]
MethodKind = Literal["none", "trained", "prompting", "inference_time"]
Row = dict[str, Any]

F = TypeVar("F", bound="_File")


class _File(BaseModel):
    """A versioned JSON file: every top-level key named, none unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodInfo(_File):
    """How a model got its behaviour: the kind (``none`` for a model as it is) and the method's name."""

    method: MethodKind
    name: str


class ModelMetrics(_File):
    """One model's numbers (``saro.evaluate.metrics.compute_metrics``): per suite, the headline rates, per judge,
    quality, tokens, the in-/cross-source split, the phrasing gap, the recovery from prefills and lm-eval's."""

    suites: dict[str, Row]
    suite_types: dict[str, str]
    headline: Row
    by_judge: dict[str, Row]
    quality: Row | None
    tokens: Row
    n: int
    generalization: Row | None
    phrasing_gap: Row | None
    n_prefilled: int
    recovery: Row | None
    lm_eval: Row | None = None


class Metrics(_File):
    """``eval/metrics.json``: every number the report shows, with what produced it."""

    metrics_version: int
    interval: Interval
    primary_judge: str
    judges: list[str]
    judge_measures: dict[str, JudgeMeasure]
    paired: list[Row]
    agreement: Row | None
    models: dict[str, ModelMetrics]
    sources: dict[str, str]
    # what the report shows when present (the eval stage always writes them)
    judge_info: dict[str, Row] = {}
    backends: dict[str, str] = {}
    templates: dict[str, str] = {}
    methods: dict[str, MethodInfo] = {}
    suites: dict[str, Row] = {}
    contamination: Row | None = None


class RunInfo(_File):
    """Where the report's numbers come from: the recipe, the run folder, the code and the time per stage."""

    recipe: str | None
    run_dir: str
    git_commit: str | None
    versions: dict[str, str] | None
    seed: int | None
    stage_seconds: dict[str, float | None]


class Report(_File):
    """``report/report.json``: the report, every number with its interval and n (``saro.evaluate.report``)."""

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


def _validate(kind: type[F], data: object, where: str, rerun: str) -> F:
    version_key = "metrics_version" if kind is Metrics else "schema_version"
    want = METRICS_VERSION if kind is Metrics else REPORT_VERSION
    got = data.get(version_key) if isinstance(data, dict) else None
    if got != want:
        age = "a newer" if isinstance(got, int) and got > want else "an older"
        raise SaroError(
            f"{where}: written by {age} saro ({version_key} {got!r}, this saro reads {want}); {rerun}"
        )
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SaroError(f"{where}: {loc}: {err['msg']}; {rerun}") from None


_RERUN_EVAL = "run the eval stage again (saro eval RECIPE --overwrite)"
_RERUN_REPORT = "run the report stage again (saro report RECIPE or RUN)"


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Validate ``metrics.json`` against ``Metrics`` and write it as computed."""
    _validate(Metrics, metrics, str(path), "a bug: please report it")
    atomic_write_json(path, metrics)


def read_metrics(path: Path) -> Metrics:
    """``metrics.json``, validated; a file of another version is a clear error naming the stage to rerun."""
    return _validate(Metrics, read_json(path), str(path), _RERUN_EVAL)


def write_report_json(path: Path, report: dict[str, Any]) -> None:
    """Validate ``report.json`` against ``Report`` and write it as built."""
    _validate(Report, report, str(path), "a bug: please report it")
    atomic_write_json(path, report)


def read_report(path: Path) -> Report:
    """``report.json``, validated; a file of another version is a clear error naming the stage to rerun."""
    return _validate(Report, read_json(path), str(path), _RERUN_REPORT)
