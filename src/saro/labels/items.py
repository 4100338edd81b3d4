"""The answers a person can label, and the blind stratified sample drawn from them.

An answer is one eval generation (``eval/<model>/generations.jsonl``) of one model on one prompt. Its stratum is
(model, group), where the group is the prompt kind with harmful prompts split into plain and jailbreak-wrapped:
``harmful``, ``jailbreak``, ``benign``, ``borderline``. Answers on capability suites (GSM8K: graded by their
number, not by refusal) and prefilled turns (recovery: they continue a forced opening) are not labelled.

The sample allocates ``n`` as evenly as the strata allow (a stratum smaller than its share gives the rest to the
others) and takes, in each stratum, the first answers of a seeded permutation: the same seed and a larger ``n``
give a superset of the smaller sample, so labelling can grow without discarding labels. It is shown in an order
that mixes strata (a hash of seed and answer id), and nothing in an item says which model wrote it or what the
judge said: the labels are blind to both. Judge verdicts are never read here.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.evaluate.measures import is_prefilled, is_wrapped
from saro.evaluate.schema import read_metrics
from saro.records import EvalRecord, Prompt, read_jsonl, stable_id
from saro.stage import RunFiles
from saro.stages import LABELS_FILE

log = logging.getLogger(__name__)

LABELS_DIR = str(Path(LABELS_FILE).parent)
GROUPS = ("harmful", "jailbreak", "borderline", "benign")
DEFAULT_N = 200


def labels_path(run_dir: str | Path) -> Path:
    """Where a run's labels live: ``RUN/labels/labels.jsonl`` (an input of the report stage)."""
    return Path(run_dir) / LABELS_FILE


def response_hash(text: str) -> str:
    """SHA-256 of the exact response text a label was given to; a changed answer makes its label stale."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Answer:
    """One labellable answer. ``id`` is the eval record id (a hash of model and prompt id, so it reveals neither).
    ``cluster`` is the base prompt it was made from (jailbreak-wrapped prompts share one)."""

    id: str
    model: str
    group: str
    kind: str
    suite: str
    prompt_id: str
    prompt: str
    completion: str
    response_sha256: str
    cluster: str
    finished: bool = True  # False: the reasoning never closed, or the generation hit its token limit

    @property
    def stratum(self) -> tuple[str, str]:
        return (self.model, self.group)


def group_of(record: EvalRecord) -> str:
    """The record's stratum group: harmful prompts split into plain and jailbreak-wrapped, else its kind."""
    if record.kind == "harmful":
        return "jailbreak" if is_wrapped(record) else "harmful"
    return record.kind


def load_answers(files: RunFiles) -> list[Answer]:
    """Every labellable answer of a run whose eval stage finished (a clear error when it did not); ``files``: the
    run folder (``saro.stage.RunDir``) or the report stage's context."""
    metrics_path = files.find("eval", "metrics")
    if metrics_path is None:
        raise SaroError(f"{files}: no finished eval stage (eval/metrics.json is missing); run the eval first")
    metrics = read_metrics(metrics_path)
    if not metrics.models:
        raise SaroError(f"{metrics_path}: no models")
    bases = _base_ids(files)
    out: list[Answer] = []
    for model, m in metrics.models.items():
        for r in read_jsonl(files.input("eval", "generations", model), EvalRecord):
            if m.suite_types.get(r.suite) == "capability" or is_prefilled(r):
                continue
            out.append(
                Answer(
                    id=r.id,
                    model=model,
                    group=group_of(r),
                    kind=r.kind,
                    suite=r.suite,
                    prompt_id=r.prompt_id,
                    prompt=r.text,
                    completion=r.completion,
                    response_sha256=response_hash(r.completion),
                    cluster=r.base_id or bases.get(r.prompt_id) or r.prompt_id,
                    finished=r.finished,
                )
            )
    return out


def _base_ids(files: RunFiles) -> dict[str, str]:
    """Base prompt ids of the eval prompts (records of an older saro do not carry theirs)."""
    path = files.find("prompts", "eval")
    if path is None:
        return {}
    return {p.id: p.base_id for p in read_jsonl(path, Prompt) if p.base_id}


def stratum_key(stratum: tuple[str, str]) -> tuple[str, int]:
    """Strata in reading order: by model, then harmful, jailbreak, borderline, benign."""
    model, group = stratum
    return (model, GROUPS.index(group) if group in GROUPS else len(GROUPS))


def allocate(sizes: dict[Any, int], n: int) -> dict[Any, int]:
    """Split ``n`` over strata as evenly as their sizes allow (water-filling; ties to the strata in order)."""
    take = dict.fromkeys(sizes, 0)
    left = min(n, sum(sizes.values()))
    while left > 0:
        open_ = [s for s in sizes if take[s] < sizes[s]]
        share = max(1, left // len(open_))
        for s in open_:
            add = min(share, sizes[s] - take[s], left)
            take[s] += add
            left -= add
            if left == 0:
                break
    return take


def draw_sample(answers: list[Answer], n: int = DEFAULT_N, seed: int = 0) -> list[Answer]:
    """The blind stratified sample of ``n`` answers (nested in ``n`` for one seed), in presentation order."""
    if n < 1:
        raise SaroError(f"--n {n}: the sample needs at least one answer")
    strata: dict[tuple[str, str], list[Answer]] = defaultdict(list)
    for a in sorted(answers, key=lambda a: a.id):
        strata[a.stratum].append(a)
    order = sorted(strata, key=stratum_key)
    take = allocate({s: len(strata[s]) for s in order}, n)
    picked: list[Answer] = []
    for s in order:
        pool = list(strata[s])
        random.Random(stable_id("label-sample", seed, s[0], s[1])).shuffle(pool)
        picked += pool[: take[s]]
    picked.sort(key=lambda a: stable_id("label-order", seed, a.id))
    log.info(
        "label sample: %d answers from %d strata (%s)",
        len(picked),
        len(order),
        ", ".join(f"{m}/{g} {take[(m, g)]} of {len(strata[(m, g)])}" for m, g in order),
    )
    return picked


def sample_name(n: int, seed: int) -> str:
    """How a label records the sample it was drawn in."""
    return f"seed={seed},n={n}"
