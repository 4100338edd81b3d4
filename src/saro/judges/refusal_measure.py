"""The refusal judge against human labels: the labelled sets, cross-validation grouped by prompt, agreement.

Sets (each read for metrics only: many answers comply with harmful requests, so nothing here prints text):

- XSTest v2, development half (``xstest_completions_dev.csv``): five chat models' answers with XSTest's three
  human classes. The head is fitted on it, so it is measured only out of fold, with folds grouped by prompt.
- PyRIT's refusal-scorer sets (``refusal.csv``, ``refusal_extra.csv``; ``mini_refusal.csv`` is a subset):
  binary human labels (1 = refusal). The judge is neither fitted nor tuned on them: a held-out source.
- The demo's own answers labelled by reading (``tests/data/demo_labels.jsonl``, written by ``saro label``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saro.errors import DataError
from saro.judges.base import cohen_kappa
from saro.judges.refusal import FULL_COMPLIANCE, FULL_REFUSAL, PARTIAL_REFUSAL, decide, read_turn
from saro.judges.refusal_features import xstest_string_match
from saro.judges.refusal_model import CLASSES, MINILM, Head, design, fit_head, grouped_folds
from saro.records import iter_jsonl, read_csv_rows
from saro.stats import wilson

log = logging.getLogger(__name__)

XSTEST_LABELS = {
    "1_full_compliance": FULL_COMPLIANCE,
    "2_full_refusal": FULL_REFUSAL,
    "3_partial_refusal": PARTIAL_REFUSAL,
}
DEMO_LABELS = (FULL_COMPLIANCE, PARTIAL_REFUSAL, FULL_REFUSAL, "degenerate", "unfinished")
DEMO_FIELDS = ("model", "kind", "prompt", "response", "label")


@dataclass(frozen=True)
class Labelled:
    """One human-labelled answer: the binary label, XSTest's class where the set has one, and the group (prompt)
    and stratum (prompt type) the folds respect."""

    prompt: str
    response: str
    refused: bool
    cls: str | None
    group: str
    stratum: str = ""
    source: str = ""


# ------------------------------------------------------------------------------------------------ readers


def read_xstest(path: str | Path) -> list[Labelled]:
    """XSTest completions with human classes (``model, id, type, prompt, completion, final_label``)."""
    path = Path(path)
    out = []
    for line, row in read_csv_rows(
        path, ("model", "id", "type", "prompt", "completion", "final_label"), "XSTest"
    ):
        label = (row.get("final_label") or "").strip()
        if label not in XSTEST_LABELS:
            raise DataError(
                path, line, f"column 'final_label' must be one of {list(XSTEST_LABELS)}, not {label!r}"
            )
        if not (row.get("id") or "").strip():
            raise DataError(path, line, "column 'id' is empty")
        cls = XSTEST_LABELS[label]
        refused = cls != FULL_COMPLIANCE
        out.append(
            Labelled(
                row["prompt"], row["completion"] or "", refused, cls, row["id"], row["type"], row["model"]
            )
        )
    return out


def read_refusal_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a PyRIT refusal-scorer csv (``objective, assistant_response, human_score``; ``#`` comment lines
    skipped); ``human_score`` must be 0 or 1 (1 = refusal) and the response non-empty."""
    path = Path(path)
    rows = []
    for line, row in read_csv_rows(
        path, ("objective", "assistant_response", "human_score"), "a human-label file"
    ):
        score = (row.get("human_score") or "").strip()
        if score not in ("0", "1", "0.0", "1.0"):
            raise DataError(path, line, f"column 'human_score' must be 0 or 1, found {score[:20]!r}")
        if not (row.get("assistant_response") or "").strip():
            raise DataError(path, line, "column 'assistant_response' is empty")
        rows.append(row)
    return rows


def read_pyrit(paths: Iterable[str | Path]) -> list[Labelled]:
    """The rows of PyRIT refusal csvs, each (objective, response) once; grouped by objective."""
    seen: set[tuple[str, str]] = set()
    out = []
    for path in paths:
        for r in read_refusal_csv(path):
            key = (r["objective"], r["assistant_response"])
            if key in seen:
                continue
            seen.add(key)
            refused = r["human_score"].strip() in ("1", "1.0")
            out.append(Labelled(key[0], key[1], refused, None, key[0], "", Path(path).name))
    return out


def read_demo_labels(path: str | Path) -> list[dict[str, str]]:
    """The demo's labelled answers (JSONL written by ``saro label``): ``model, kind, prompt, response, label``
    (``label`` one of ``DEMO_LABELS``); a row missing a field or with another label is a DataError."""
    path = Path(path)
    rows = []
    for line, obj in iter_jsonl(path):
        for f in DEMO_FIELDS:
            if not isinstance(obj.get(f), str):
                raise DataError(
                    path, line, f"field '{f}' must be a string" if f in obj else f"missing field '{f}'"
                )
        if obj["label"] not in DEMO_LABELS:
            raise DataError(
                path, line, f"field 'label' must be one of {list(DEMO_LABELS)}, not {obj['label']!r}"
            )
        rows.append({f: obj[f] for f in DEMO_FIELDS})
    return rows


def development_half(items: Sequence[Labelled]) -> set[str]:
    """The XSTest dev prompts whose answers were read while the rule features were written: within each type, the
    prompts at even ranks of sha256(prompt id) (fixed before any row was read). The rest were never read."""
    by_type: dict[str, set[str]] = defaultdict(set)
    for it in items:
        by_type[it.stratum].add(it.group)
    out: set[str] = set()
    for ids in by_type.values():
        ranked = sorted(ids, key=lambda g: hashlib.sha256(g.removeprefix("v2-").encode()).hexdigest())
        out.update(ranked[0::2])
    return out


# ------------------------------------------------------------------------------------------------ statistics


def agreement_stats(human: Sequence[bool], judged: Sequence[bool]) -> dict[str, Any]:
    """Agreement (Wilson 95%), Cohen's kappa, false-refusal and missed-refusal counts of binary refusal labels."""
    n = len(human)
    agree = sum(h == j for h, j in zip(human, judged, strict=True))
    n_comp = sum(not h for h in human)
    false_ref = sum(j and not h for h, j in zip(human, judged, strict=True))
    missed = sum(h and not j for h, j in zip(human, judged, strict=True))
    tp = sum(h and j for h, j in zip(human, judged, strict=True))
    return {
        "n": n,
        "agree": agree,
        "agreement": agree / n if n else 0.0,
        "ci95": wilson(agree, n),
        "kappa": cohen_kappa([str(h) for h in human], [str(j) for j in judged]),
        "false_refusal": (false_ref, n_comp),
        "missed_refusal": (missed, n - n_comp),
        "precision": tp / (tp + false_ref) if tp + false_ref else 0.0,
        "recall": tp / (n - n_comp) if n - n_comp else 0.0,
    }


def class_stats(human: Sequence[str], judged: Sequence[str]) -> dict[str, Any]:
    """Three-class accuracy (Wilson 95%), partial-refusal recall and precision, and the confusion matrix
    ``{human class: {judged class: count}}``."""
    n = len(human)
    right = sum(h == j for h, j in zip(human, judged, strict=True))
    partial = [j for h, j in zip(human, judged, strict=True) if h == PARTIAL_REFUSAL]
    found = sum(j == PARTIAL_REFUSAL for j in partial)
    said = sum(j == PARTIAL_REFUSAL for j in judged)
    conf = {h: dict.fromkeys(CLASSES, 0) for h in CLASSES}
    for h, j in zip(human, judged, strict=True):
        conf[h][j] += 1
    return {
        "n": n,
        "accuracy": right / n if n else 0.0,
        "ci95": wilson(right, n),
        "partial_recall": (found, len(partial)),
        "partial_recall_ci95": wilson(found, len(partial)),
        "partial_precision": (found, said),
        "confusion": conf,
    }


# ------------------------------------------------------------------------------------------------ measuring


@dataclass
class CrossValidated:
    """Out-of-fold classes of every item, the fold of each item and the C chosen in each fold."""

    classes: list[str]
    folds: list[int]
    chosen_C: list[float]
    chosen_alpha: list[float]


def cross_validate(items: Sequence[Labelled], embedding: bool, k: int = 5, seed: int = 0) -> CrossValidated:
    """The whole fit (regularisation chosen by an inner grouped CV, then the head, then the fixed structure rules)
    inside k outer folds grouped by prompt: every item is judged by a head that never saw its prompt."""
    if any(it.cls is None for it in items):
        raise ValueError("cross_validate needs three-class labels")
    texts = [read_turn(it.response).text for it in items]
    X = design(texts, embedding)
    y = np.asarray([CLASSES.index(str(it.cls)) for it in items])
    groups = [it.group for it in items]
    strata = [it.stratum for it in items]
    folds = np.asarray(grouped_folds(groups, k, seed=seed, strata=strata))
    out: list[str] = [""] * len(items)
    chosen, alphas = [], []
    for f in range(k):
        tr = np.flatnonzero(folds != f)
        te = np.flatnonzero(folds == f)
        head = fit_head(
            X[tr], y[tr], [groups[i] for i in tr], "cv", embedding, [strata[i] for i in tr], seed=seed
        )
        chosen.append(head.C)
        alphas.append(head.alpha)
        for i, p in zip(te, head.proba(X[te]), strict=True):
            out[i] = decide(p, head.alpha, texts[i])[0]
        log.info("refusal head cv: fold %d/%d done (C=%g)", f + 1, k, head.C)
    return CrossValidated(out, folds.tolist(), chosen, alphas)


def string_match(items: Sequence[Labelled]) -> list[bool]:
    """XSTest's string-match anchor on each item's final answer (what it reads)."""
    return [xstest_string_match(read_turn(it.response).text) for it in items]


def summarize(items: Sequence[Labelled], classes: Sequence[str]) -> dict[str, Any]:
    """Binary agreement of judged ``classes`` with the items' human labels (and three-class stats where the set
    has classes), beside the string-match anchor on the same rows."""
    human = [it.refused for it in items]
    out: dict[str, Any] = {
        "judge": agreement_stats(human, [c != FULL_COMPLIANCE for c in classes]),
        "anchor_string_match": agreement_stats(human, string_match(items)),
        "judged_classes": dict(sorted(Counter(classes).items())),
    }
    if all(it.cls is not None for it in items):
        out["three_class"] = class_stats([str(it.cls) for it in items], list(classes))
    return out


def measure_head(
    name: str, xstest: Sequence[Labelled], pyrit: Sequence[Labelled], k: int = 5, seed: int = 0
) -> tuple[Head, dict[str, Any]]:
    """Cross-validate one head on the XSTest half (all rows, and the rows never read while the rules were written),
    fit it on all of it, and judge PyRIT's held-out rows with the fitted head (as is, and with PyRIT's off-topic
    reading, ``offtopic_is_refusal``). Returns the head and the figures."""
    from saro.judges.base import JudgeInput
    from saro.judges.refusal import RefusalJudge

    embedding = name == MINILM
    cv = cross_validate(xstest, embedding, k=k, seed=seed)
    read = development_half(xstest)
    unread = [i for i, it in enumerate(xstest) if it.group not in read]
    texts = [read_turn(it.response).text for it in xstest]
    y = np.asarray([CLASSES.index(str(it.cls)) for it in xstest])
    groups, strata = [it.group for it in xstest], [it.stratum for it in xstest]
    head = fit_head(design(texts, embedding), y, groups, name, embedding, strata, seed=seed)
    inputs = [JudgeInput(it.prompt, it.response) for it in pyrit]
    verdicts = RefusalJudge.with_head(head).judge(inputs)
    pyrit_classes = [v.refusal_class or FULL_COMPLIANCE for v in verdicts]
    # PyRIT's own definition also counts an answer unrelated to the request as a refusal: the opt-in reading
    offtopic = RefusalJudge.with_head(head, offtopic_is_refusal=True).judge(inputs)
    figures = {
        "xstest_dev_cv": {
            **summarize(xstest, cv.classes),
            "prompts": len(set(groups)),
            "folds": k,
            "chosen_C": cv.chosen_C,
            "chosen_alpha": cv.chosen_alpha,
        },
        "xstest_dev_cv_unread": {
            **summarize([xstest[i] for i in unread], [cv.classes[i] for i in unread]),
            "prompts": len({groups[i] for i in unread}),
        },
        "pyrit_heldout": {
            **summarize(pyrit, pyrit_classes),
            "unparseable": sum(not v.parseable for v in verdicts),
        },
        "pyrit_heldout_offtopic_is_refusal": summarize(
            pyrit, [v.refusal_class or FULL_COMPLIANCE for v in offtopic]
        ),
    }
    return head, figures
