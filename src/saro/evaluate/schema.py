"""The eval stage's typed result, ``eval/metrics.json`` (``Metrics``), and the versioned-file check it shares with
``report.json`` (``saro.report.schema``).

A file carries its schema version; it is validated when written (a missing or misspelt key is a bug, caught before
the file exists) and when read, where a file of another version, or one that does not validate, is one clear error
naming the file and what to rerun. The rows below the top level (a rate, a suite's numbers, a paired comparison)
are described in ``saro.evaluate.metrics``; they are kept as written (mappings), so the file stays byte for byte
what the stage computed.
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

Interval = Literal["wilson", "clopper_pearson", "cluster_bootstrap"]
JudgeMeasure = Literal["refusal", "harm", "other"]
MethodKind = Literal["none", "trained", "prompting", "inference_time"]
Row = dict[str, Any]

F = TypeVar("F", bound="Strict")


class Strict(BaseModel):
    """A part of a versioned file: every key named, none unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodInfo(Strict):
    """How a model got its behaviour: the kind (``none`` for a model as it is) and the method's name."""

    method: MethodKind
    name: str


class ModelMetrics(Strict):
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


class Metrics(Strict):
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


def validate_file(kind: type[F], data: object, where: str, version: tuple[str, int], rerun: str) -> F:
    """``data`` (a file's JSON) as ``kind``; ``version``: its version key and the version this saro reads."""
    version_key, want = version
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


_RERUN = "run the eval stage again (saro eval RECIPE --overwrite)"
_VERSION = ("metrics_version", METRICS_VERSION)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Validate ``metrics.json`` against ``Metrics`` and write it as computed."""
    validate_file(Metrics, metrics, str(path), _VERSION, "a bug: please report it")
    atomic_write_json(path, metrics)


def read_metrics(path: Path) -> Metrics:
    """``metrics.json``, validated; a file of another version is a clear error naming the stage to rerun."""
    return validate_file(Metrics, read_json(path), str(path), _VERSION, _RERUN)
