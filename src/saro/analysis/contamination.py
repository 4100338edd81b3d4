"""Contamination check: are eval prompts in the training data of the models being compared?

Every eval prompt, in every form of its request (its text, or the request a jailbreak wraps, and the text a
rephrasing replaced), is compared with every training prompt of the runs behind the evaluated models
(``prompts/{rw,srpo}.jsonl``, ``synth_rw/{rit_d,safety_sft}.jsonl``, ``synth_srpo/{pairs,safety_dpo}.jsonl``) and
with any other training files given (jsonl, json or csv holding ``messages``, ``prompt``, ``text`` or a similar
column), in every form too (a Prompt record's ``meta.base_text`` and ``meta.original_text`` count), by the rules of
``saro.prompts.near_duplicates``:

- exact: equal after normalisation (case, punctuation and whitespace ignored);
- near-duplicate: word 3-gram containment at or above the measured threshold, or MiniLM cosine at or above
  ``eval.contamination_threshold``.

Findings are counts per suite, the ids of the eval prompts found (``eval_ids``; a jailbreak-wrapped prompt is
found by its unwrapped ``base_id``) and examples that name the eval prompt id, the training file and line, the rule
and its score; a harmful prompt's text is redacted in the examples (benign ones show an excerpt).
``check_cross_source`` turns a finding in a suite marked cross-source into an error naming the suite.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saro.prompts.near_duplicates import (
    NGRAM_THRESHOLD,
    Match,
    Rules,
    best_match,
    find_near_duplicates,
    normalize_for_match,
    request_forms,
)
from saro.records import Prompt
from saro.stage import RunDir, RunFiles
from saro.stages import TRAINING_DATA

log = logging.getLogger(__name__)

TEXT_KEYS = ("text", "instruction", "question", "query", "goal", "forbidden_prompt", "Behavior", "behavior")
EXCERPT_CHARS = 160


@dataclass(frozen=True)
class TrainText:
    """One training prompt and where it was found."""

    text: str
    file: str
    line: int


@dataclass(frozen=True)
class EvalText:
    """One eval prompt (unwrapped text) with its identity."""

    id: str
    suite: str
    kind: str
    text: str
    source_id: str | None = None


def redact(text: str, kind: str, show_unsafe: bool = False, limit: int = EXCERPT_CHARS) -> str:
    """An excerpt for reports: a harmful prompt's text is replaced by a marker unless ``show_unsafe``."""
    if kind == "harmful" and not show_unsafe:
        return f"[redacted harmful prompt, {len(text.split())} words]"
    t = " ".join(text.split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def run_dir_of(model: str | Path) -> Path | None:
    """The saro run folder a model folder was trained in (``<run>/train_sft/final`` -> ``<run>``), if any."""
    p = Path(model)
    if not p.exists():
        return None
    p = p.resolve()
    for parent in [p, *list(p.parents)[:4]]:
        if (parent / "manifest.json").is_file():
            return parent
    return None


def training_files(run: RunFiles | str | Path) -> list[Path]:
    """The training-data files a run has (``saro.stages.TRAINING_DATA``: the prompt sets and the synthesised SFT /
    preference data), read through ``run``: the eval stage's context, or a run folder."""
    files = RunDir(run) if isinstance(run, str | Path) else run
    found = (files.find(*ref.split(".", 1)) for ref in TRAINING_DATA)
    return [p for p in found if p is not None and p.is_file()]


def _user_turns(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if not isinstance(messages, list):
        return []
    return [
        m["content"]
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]


def prompts_of_row(row: dict[str, Any]) -> list[str]:
    """The user prompts in one training row (TRL messages / preference rows, Prompt records, plain tables)."""
    out: list[str] = []
    if "messages" in row:
        out += _user_turns(row["messages"])
    if "prompt" in row:
        out += _user_turns(row["prompt"])
    if not out:
        for k in TEXT_KEYS:
            if isinstance(row.get(k), str):
                out.append(row[k])
                break
    meta = row.get("meta")
    if isinstance(meta, dict):
        # a wrapped training prompt also counts by the request it wraps, a rephrased one by its original text
        out += [meta[k] for k in ("base_text", "original_text") if isinstance(meta.get(k), str)]
    return [t for t in dict.fromkeys(out) if t.strip()]


def read_training_texts(path: str | Path) -> list[TrainText]:
    """Every training prompt of a jsonl / json / csv file (bad rows skipped and counted in the log)."""
    from saro.prompts.sources import RowErrors, read_table

    path = Path(path)
    errors = RowErrors("skip")
    out = [
        TrainText(t, str(path), lineno)
        for lineno, row in read_table(path, errors)
        for t in prompts_of_row(row)
    ]
    if errors.counts:
        log.warning("contamination: %s: skipped rows %s", path, errors.counts)
    return out


def _form_keys(p: Prompt) -> list[tuple[str, str, str]]:
    """(suite, normalised text, text) of each form of an eval prompt's request (``request_forms``)."""
    suite = str(p.meta.get("suite") or p.source)
    return [(suite, normalize_for_match(t), t) for _, t in request_forms(p)]


def eval_texts(prompts: list[Prompt]) -> list[EvalText]:
    """Unique eval requests by suite and form text (a prompt under many attacks is checked once), each with the id
    of the first prompt that has it (``base_id`` for wrapped prompts); a rephrased prompt gives two."""
    seen: set[tuple[str, str]] = set()
    out = []
    for p in prompts:
        for suite, norm, text in _form_keys(p):
            if (suite, norm) in seen:
                continue
            seen.add((suite, norm))
            out.append(EvalText(p.base_id or p.id, suite, p.kind, text, p.meta.get("source_id")))
    return out


def check_cross_source(report: dict[str, Any], prompts: list[Prompt]) -> None:
    """Raise a SaroError naming every suite marked cross-source (prompt meta ``cross_source: true``) whose
    prompts the contamination check found in the training data: such a suite is in-source in fact, and its
    rates would silently be reported as generalization to an unseen source.

    The prompts stage already takes prompts that near-duplicate the run's own training prompts out of the
    cross-source rate (``saro.prompts.prompts``); what is left to find here is overlap with training data that stage
    could not see (other runs, ``eval.contamination_files``), which ``eval.drop_contaminated`` settles.
    ``report`` is what ``contamination_report`` returned (``eval_ids``: the checked id of each eval prompt found,
    i.e. the first prompt of its suite with that request form, by ``base_id`` for wrapped prompts).
    """
    if not report.get("checked") or not report.get("eval_ids"):
        return
    found = set(report["eval_ids"])
    checked_id: dict[tuple[str, str], str] = {}
    for p in prompts:
        for suite, norm, _ in _form_keys(p):
            checked_id.setdefault((suite, norm), p.base_id or p.id)
    bad: dict[str, set[str]] = defaultdict(set)
    for p in prompts:
        if p.meta.get("cross_source") is not True:
            continue
        keys = _form_keys(p)
        if any(checked_id[(suite, norm)] in found for suite, norm, _ in keys):
            bad[keys[0][0]].add(p.base_id or p.id)
    if bad:
        from saro.errors import SaroError

        named = ", ".join(f"'{s}' ({len(ids)} prompts)" for s, ids in sorted(bad.items()))
        raise SaroError(
            f"eval suite(s) {named} marked cross-source but found in the training data by the contamination "
            "check: set cross_source: false on the prompts.eval entry or remove the overlap"
        )


def check_contamination(
    evals: list[EvalText],
    train: list[TrainText],
    threshold: float | None = 0.95,
    max_examples: int = 20,
    ngram: float | None = NGRAM_THRESHOLD,
) -> dict[str, Any]:
    """Exact and near-duplicate matches of eval requests in training prompts (``threshold``: MiniLM cosine,
    ``ngram``: word 3-gram containment; None turns a rule off); counts per suite by eval prompt (its forms count
    once, by the strongest match), and examples."""
    by_norm: dict[str, TrainText] = {}
    for t in train:
        by_norm.setdefault(normalize_for_match(t.text), t)
    corpus = list(by_norm.values())
    rules = Rules(ngram=ngram, cosine=threshold)
    hits: dict[tuple[str, str], list[Match]] = defaultdict(list)  # (suite, eval id) -> matches of its forms
    if evals and corpus:
        log.info("contamination: checking %d eval and %d training prompts", len(evals), len(corpus))
        for m in find_near_duplicates([e.text for e in evals], [c.text for c in corpus], rules):
            hits[(evals[m.query].suite, evals[m.query].id)].append(m)
    findings = []
    for matches in hits.values():
        m = best_match(matches)
        findings.append(_finding(evals[m.query], corpus[m.corpus], m))
    per_suite: dict[str, dict[str, int]] = defaultdict(lambda: {"checked": 0, "exact": 0, "near": 0})
    checked = {(e.suite, e.id) for e in evals}
    for suite, _ in checked:
        per_suite[suite]["checked"] += 1
    for f in findings:
        per_suite[f["suite"]][f["match"]] += 1
    exact = sum(f["match"] == "exact" for f in findings)
    near = len(findings) - exact
    findings.sort(key=lambda f: (f["match"] != "exact", -f["score"], f["eval_id"]))
    return {
        "checked": True,
        "threshold": threshold,
        "ngram_threshold": ngram,
        "n_eval": len(checked),
        "n_train": len(train),
        "n_train_unique": len(by_norm),
        "exact": exact,
        "near": near,
        "near_by_method": {k: sum(f["method"] == k for f in findings) for k in ("ngram", "embedding")},
        "contaminated": exact + near,
        "rate": round((exact + near) / len(checked), 4) if checked else 0.0,
        "by_suite": dict(sorted(per_suite.items())),
        "examples": findings[:max_examples],
        "eval_ids": sorted({f["eval_id"] for f in findings}),
    }


def _finding(e: EvalText, t: TrainText, m: Match) -> dict[str, Any]:
    return {
        "match": "exact" if m.method == "exact" else "near",
        "method": m.method,
        "score": m.score,
        "cosine": m.score,  # the score of the rule that fired (kept under its old name for reports)
        "eval_id": e.id,
        "suite": e.suite,
        "kind": e.kind,
        "source_id": e.source_id,
        "train_file": t.file,
        "train_line": t.line,
        "eval_excerpt": redact(e.text, e.kind),
        "train_excerpt": redact(t.text, e.kind),
    }


def contamination_report(
    prompts: list[Prompt],
    runs: list[RunFiles | str | Path],
    files: list[str | Path],
    threshold: float | None = 0.95,
    max_examples: int = 20,
    ngram: float | None = NGRAM_THRESHOLD,
) -> dict[str, Any]:
    """Check eval prompts against the training data of ``runs`` and the extra ``files``; log the findings."""
    paths: list[Path] = []
    for r in runs:
        paths += training_files(r)
    paths += [Path(f) for f in files]
    paths = list(dict.fromkeys(p.resolve() for p in paths))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        from saro.errors import SaroError

        raise SaroError(f"contamination check: training file(s) not found: {', '.join(missing)}")
    if not paths:
        log.info("contamination: no training data found for the evaluated models; nothing to check")
        return {"checked": False, "reason": "no training data found for the evaluated models", "files": {}}
    train: list[TrainText] = []
    counts: dict[str, int] = {}
    for p in paths:
        texts = read_training_texts(p)
        counts[str(p)] = len(texts)
        train += texts
    if not train:
        log.info("contamination: the training files hold no prompts; nothing to check")
        return {"checked": False, "reason": "the training files hold no prompts", "files": counts}
    out = check_contamination(eval_texts(prompts), train, threshold, max_examples, ngram)
    out["files"] = counts
    out["runs"] = [str((Path(r) if isinstance(r, str | Path) else r.root).resolve()) for r in runs]
    if out["contaminated"]:
        near = f"{out['near']} near-duplicate (n-gram >= {ngram} or cosine >= {threshold})"
        log.warning(
            "contamination: %d of %d eval prompts found in training data (%d exact, %s); see the report",
            out["contaminated"],
            out["n_eval"],
            out["exact"],
            near,
        )
    else:
        log.info(
            "contamination: none of %d eval prompts found in %d training prompts", out["n_eval"], len(train)
        )
    return out
