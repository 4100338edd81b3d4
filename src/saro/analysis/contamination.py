"""Contamination check: are eval prompts in the training data of the models being compared?

Every eval prompt (its unwrapped text, for jailbreak-wrapped prompts) is compared with every training prompt of the
runs behind the evaluated models (``prompts/{rw,srpo}.jsonl``, ``synth_rw/{rit_d,safety_sft}.jsonl``,
``synth_srpo/{pairs,safety_dpo}.jsonl``) and with any other training files given (jsonl, json or csv holding
``messages``, ``prompt``, ``text`` or a similar column):

- exact: equal after normalisation (case, punctuation and whitespace ignored);
- near-duplicate: MiniLM cosine similarity at or above a threshold (``eval.contamination_threshold``).

Findings are counts per suite, the ids of the eval prompts found (``eval_ids``; a jailbreak-wrapped prompt is
found by its unwrapped ``base_id``) and examples that name the eval prompt id, the training file and line and the
similarity; a harmful prompt's text is redacted in the examples (benign ones show an excerpt).
``check_cross_source`` turns a finding in a suite marked cross-source into an error naming the suite.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saro.records import Prompt

log = logging.getLogger(__name__)

RUN_TRAINING_FILES = (
    "prompts/rw.jsonl",
    "prompts/srpo.jsonl",
    "synth_rw/rit_d.jsonl",
    "synth_rw/safety_sft.jsonl",
    "synth_srpo/pairs.jsonl",
    "synth_srpo/safety_dpo.jsonl",
)
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


def normalize_for_match(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed: the form compared for exact duplicates."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


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


def training_files(run_dir: str | Path) -> list[Path]:
    """The training-data files a run has (prompt sets and the synthesised SFT / preference data)."""
    root = Path(run_dir)
    return [root / f for f in RUN_TRAINING_FILES if (root / f).is_file()]


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
    if isinstance(meta, dict) and isinstance(meta.get("base_text"), str):
        out.append(meta["base_text"])  # a wrapped training prompt also counts by the request it wraps
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


def _suite_and_key(p: Prompt) -> tuple[str, tuple[str, str]]:
    """The suite an eval prompt is counted in and the (suite, normalised unwrapped text) it is checked by."""
    suite = str(p.meta.get("suite") or p.source)
    return suite, (suite, normalize_for_match(p.meta.get("base_text") or p.text))


def eval_texts(prompts: list[Prompt]) -> list[EvalText]:
    """Unique eval prompts by suite and unwrapped text (a prompt under many attacks is checked once)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for p in prompts:
        suite, key = _suite_and_key(p)
        if key in seen:
            continue
        seen.add(key)
        text = p.meta.get("base_text") or p.text
        out.append(EvalText(p.base_id or p.id, suite, p.kind, text, p.meta.get("source_id")))
    return out


def check_cross_source(report: dict[str, Any], prompts: list[Prompt]) -> None:
    """Raise a SaroError naming every suite marked cross-source (prompt meta ``cross_source: true``) whose
    prompts the contamination check found in the training data: such a suite is in-source in fact, and its
    rates would silently be reported as generalization to an unseen source.

    ``report`` is what ``contamination_report`` returned (``eval_ids``: the checked id of each eval prompt found,
    i.e. the first prompt of its suite with that unwrapped text, by ``base_id`` for wrapped prompts).
    """
    if not report.get("checked") or not report.get("eval_ids"):
        return
    found = set(report["eval_ids"])
    checked_id: dict[tuple[str, str], str] = {}
    for p in prompts:
        checked_id.setdefault(_suite_and_key(p)[1], p.base_id or p.id)
    bad: dict[str, set[str]] = defaultdict(set)
    for p in prompts:
        if p.meta.get("cross_source") is not True:
            continue
        suite, key = _suite_and_key(p)
        if checked_id[key] in found:
            bad[suite].add(p.base_id or p.id)
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
) -> dict[str, Any]:
    """Exact and near-duplicate matches of eval prompts in training prompts; counts per suite and examples."""
    by_norm: dict[str, TrainText] = {}
    for t in train:
        by_norm.setdefault(normalize_for_match(t.text), t)
    findings: list[dict[str, Any]] = []
    exact_ids: set[int] = set()
    for i, e in enumerate(evals):
        hit = by_norm.get(normalize_for_match(e.text))
        if hit is not None:
            exact_ids.add(i)
            findings.append(_finding(e, hit, "exact", 1.0))
    if threshold is not None and train and evals:
        from saro.embeddings import near_duplicates

        todo = [i for i in range(len(evals)) if i not in exact_ids]
        corpus = list(by_norm.values())
        log.info("contamination: embedding %d eval and %d training prompts", len(todo), len(corpus))
        for qi, ci, cos in near_duplicates(
            [evals[i].text for i in todo], [c.text for c in corpus], threshold
        ):
            findings.append(_finding(evals[todo[qi]], corpus[ci], "near", cos))
    per_suite: dict[str, dict[str, int]] = defaultdict(lambda: {"checked": 0, "exact": 0, "near": 0})
    for e in evals:
        per_suite[e.suite]["checked"] += 1
    for f in findings:
        per_suite[f["suite"]][f["match"]] += 1
    exact = sum(f["match"] == "exact" for f in findings)
    near = len(findings) - exact
    findings.sort(key=lambda f: (f["match"] != "exact", -f["cosine"]))
    return {
        "checked": True,
        "threshold": threshold,
        "n_eval": len(evals),
        "n_train": len(train),
        "n_train_unique": len(by_norm),
        "exact": exact,
        "near": near,
        "contaminated": exact + near,
        "rate": round((exact + near) / len(evals), 4) if evals else 0.0,
        "by_suite": dict(sorted(per_suite.items())),
        "examples": findings[:max_examples],
        "eval_ids": sorted({f["eval_id"] for f in findings}),
    }


def _finding(e: EvalText, t: TrainText, match: str, cos: float) -> dict[str, Any]:
    return {
        "match": match,
        "cosine": round(float(cos), 4),
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
    runs: list[str | Path],
    files: list[str | Path],
    threshold: float | None = 0.95,
    max_examples: int = 20,
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
    out = check_contamination(eval_texts(prompts), train, threshold, max_examples)
    out["files"] = counts
    out["runs"] = [str(Path(r).resolve()) for r in runs]
    if out["contaminated"]:
        near = f"{out['near']} near-duplicate at cosine >= {threshold}" if threshold else "near check off"
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
