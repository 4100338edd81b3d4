"""Stage fingerprints: what a stage's result depends on, so that a result can never be silently stale.

A stage's fingerprint holds a digest of every setting it declares in the stage table (resolved: defaults
included, one entry per section key), the SHA-256 of the contents of every input file it reads, the hashes of the
stages it depends on and its code version. Its hash is the hash of all of that. The manifest stores the
fingerprint, so that ``saro status`` and ``saro run`` can say *why* a stage is stale (which key, file, version or
upstream stage changed).

A stage made of units (``saro.stages.Units``: training variants, eval models) also hashes each unit with
``unit_hash``, the one notion of a unit of work's hash (what it is, its settings with defaults, the identities of
what it reads, the version of the code that makes it): training variants, eval models, reference log-probs and
training checkpoints are all hashed by it. A stage that reads a model chains through that model's unit hash, not
its stage's hash, so adding a variant (SafetySFT, an ablation) does not redo what the main model feeds
(``dep_hashes``). ``file_digest`` is the one file hasher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saro import stages as table
from saro.errors import SaroError
from saro.recipe import TRAINING_SECTIONS, PromptEntry, Recipe, TrainingSection
from saro.records import stable_id

log = logging.getLogger(__name__)

# Prompt sources that can read a hub dataset; without a pinned ``revision`` their data can change under a run.
HUB_SOURCES = ("hf", "xstest", "wildjailbreak", "sgbench", "salad_bench")
DEFAULT_POLICY = Path(__file__).resolve().parent / "policy" / "default.yaml"
_warned: set[str] = set()


@dataclass
class Fingerprint:
    """Everything one stage's outputs depend on."""

    stage: str
    code_version: int
    settings: dict[str, str]  # "section.key" -> digest of its resolved value
    files: dict[str, str]  # absolute path -> sha256 of its contents
    deps: dict[str, str]  # upstream stage -> the hash this stage chains through
    unpinned: list[str] = field(default_factory=list)  # hub datasets read without a pinned revision
    hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ settings


def _section_value(recipe: Recipe, name: str) -> Any:
    if name == "seed":
        return recipe.seed
    if name == "policy":
        return recipe.policy
    value = getattr(recipe, name)
    if (
        name in TRAINING_SECTIONS
    ):  # every default filled in (an absent section's too): a changed default retrains
        return (value or TRAINING_SECTIONS[name]()).resolved()
    return value.model_dump(mode="json") if value is not None else None


def setting(recipe: Recipe, key: str) -> Any:
    """The resolved value of a declared setting: a section ("eval"), a section key ("train_dpo.max_length")."""
    name, _, sub = key.partition(".")
    value = _section_value(recipe, name)
    if not sub:
        return value
    if isinstance(value, dict):
        return value.get(sub)
    return None


def stage_settings(recipe: Recipe, stage: str) -> dict[str, Any]:
    """The resolved settings a stage declares, one entry per section key (so a change names its key)."""
    out: dict[str, Any] = {}
    for key in table.get(stage).sections:
        value = setting(recipe, key)
        if "." not in key and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------- files


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (of every file under a folder, by relative path): the one file hasher."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode("utf-8") + b"\0")
            h.update(bytes.fromhex(file_digest(p)))
        return h.hexdigest()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise SaroError(f"{path}: cannot read input file ({e.strerror})") from None
    return h.hexdigest()


def _entries(recipe: Recipe) -> list[tuple[str, PromptEntry]]:
    p = recipe.prompts
    return [
        (f"prompts.{use}[{i}]", e) for use in ("rw", "srpo", "eval") for i, e in enumerate(getattr(p, use))
    ]


def _unpinned(where: str, e: PromptEntry) -> str | None:
    opts = e.options
    if e.source not in HUB_SOURCES or opts.get("path") or opts.get("revision"):
        return None
    return f"{where} ({e.source}{': ' + str(opts['dataset']) if opts.get('dataset') else ''})"


def input_files(recipe: Recipe, stage: str) -> tuple[dict[str, str], list[str]]:
    """{path: sha256} of the input files a stage reads, and the hub datasets it reads without a revision."""
    kinds = table.get(stage).inputs
    paths: list[Path] = []
    unpinned: list[str] = []
    if table.PROMPT_FILES in kinds:
        for where, e in _entries(recipe):
            path = e.options.get("path")
            if path and not str(path).startswith("hf://"):
                paths.append(Path(path).resolve())
            u = _unpinned(where, e)
            if u:
                unpinned.append(u)
    if table.SUITE_FILES in kinds and recipe.prompts.eval_suites:
        from saro.suites import suite_files

        paths += suite_files(recipe.prompts.eval_suites)
    if table.POLICY_FILE in kinds:
        paths.append(Path(recipe.policy).resolve() if recipe.policy else DEFAULT_POLICY)
    if table.LABEL_FILE in kinds:
        labels = (recipe.resolved_run_dir() / table.LABELS_FILE).resolve()
        if labels.is_file():  # absent until someone labels; then "file ... added" makes the stage stale
            paths.append(labels)
    if table.ANALYSIS_FILES in kinds:
        analysis = (recipe.resolved_run_dir() / table.ANALYSIS_DIR).resolve()
        if analysis.is_dir():  # absent until saro analyze overlap RUN; then the report embeds it
            paths.append(analysis)
    for u in unpinned:
        if u not in _warned:
            _warned.add(u)
            log.warning("%s: hub dataset without a pinned revision; set options.revision to pin it", u)
    return {str(p): file_digest(p) for p in dict.fromkeys(paths)}, unpinned


# ------------------------------------------------------------------------------------------------- hashing


def unit_hash(kind: str, settings: Any, inputs: Any, code_version: int = 1) -> str:
    """The hash of one unit of work: its ``kind`` (a training variant, an eval model, reference log-probs, a
    training run's checkpoints), the ``settings`` it runs with (defaults filled in), the identities of what it reads
    (``inputs``: upstream hashes, file digests, model identities) and the version of the code that makes it."""
    return stable_id(kind, settings, inputs, code_version)


def stage_deps(recipe: Recipe, stage: str) -> list[str]:
    """The enabled stages whose outputs ``stage`` reads: its declared reads, and the training stages named by the
    model references of its ``models_from`` section."""
    row = table.get(stage)
    deps = list(row.upstream)
    if row.models_from is not None:
        deps += [r.stage for r in table.model_refs(setting(recipe, row.models_from))]
    enabled = recipe.enabled()
    return [d for d in table.STAGES if d in deps and d in enabled]


def dep_hashes(recipe: Recipe, stage: str, section: Any, fps: Mapping[str, Fingerprint]) -> dict[str, str]:
    """The hash ``section`` of ``stage`` chains through per upstream stage: for a training stage, the unit hashes
    of the models the section names (``@train_sft/safety_sft``; the main model when it names none), for any
    other stage its stage hash."""
    refs = table.model_refs(section)
    out: dict[str, str] = {}
    for d in stage_deps(recipe, stage):
        if d not in table.MODEL_STAGES:
            out[d] = fps[d].hash
            continue
        named = sorted({r.variant or table.MAIN for r in refs if r.stage == d}) or [table.MAIN]
        units = training_units(recipe, d, fps)
        unknown = [u for u in named if u not in units]
        if unknown:
            raise SaroError(
                f"{stage}: model reference '@{d}/{unknown[0]}': {d} has no variant '{unknown[0]}' "
                f"(its models: {', '.join(units)})"
            )
        out[d] = units[named[0]] if len(named) == 1 else stable_id(*(units[u] for u in named))
    return out


def training_units(recipe: Recipe, stage: str, fps: Mapping[str, Fingerprint]) -> dict[str, str]:
    """{unit: hash} of a training stage's models (``main`` and each variant): its settings with defaults, the
    base model, the seed, what it chains through and the stage's code version (the fingerprints of the stages it
    depends on must be in ``fps``)."""
    section = getattr(recipe, stage)
    if not isinstance(section, TrainingSection):
        raise SaroError(f"stage '{stage}' has no training section in this recipe")
    model = recipe.model.model_dump(mode="json")
    version = table.get(stage).unit_version
    out: dict[str, str] = {}
    for name, sec in section.units(stage):
        resolved = sec.resolved()
        settings = {"stage": stage, "section": resolved, "model": model, "seed": recipe.seed}
        out[name] = unit_hash("variant", settings, dep_hashes(recipe, stage, resolved, fps), version)
    return out


def _digests(settings: dict[str, Any]) -> dict[str, str]:
    return {k: stable_id(v) for k, v in settings.items()}


def fingerprint(recipe: Recipe, stage: str, fps: Mapping[str, Fingerprint]) -> Fingerprint:
    """The fingerprint of one stage (its dependencies' fingerprints must be in ``fps``)."""
    row = table.get(stage)
    settings = _digests(stage_settings(recipe, stage))
    files, unpinned = input_files(recipe, stage)
    deps = dep_hashes(recipe, stage, setting(recipe, row.models_from or stage), fps)
    fp = Fingerprint(stage, row.code_version, settings, files, deps, unpinned)
    fp.hash = stable_id(stage, row.code_version, settings, files, deps)
    return fp


def fingerprints(recipe: Recipe, upto: str | None = None) -> dict[str, Fingerprint]:
    """Fingerprints of every enabled stage, or of ``upto`` and the stages it depends on."""
    fps: dict[str, Fingerprint] = {}
    enabled = recipe.enabled()
    need = set(enabled)
    if upto is not None:
        need, todo = set(), [upto]
        while todo:
            s = todo.pop()
            if s not in need:
                need.add(s)
                todo += stage_deps(recipe, s)
    for stage in enabled:
        if stage in need:
            fps[stage] = fingerprint(recipe, stage, fps)
    return fps


# ------------------------------------------------------------------------------------------------ explaining


OLDER_SARO = "made by an older saro (no fingerprint in the manifest): needs a rerun"


def explain(old: dict[str, Any] | None, new: Fingerprint) -> list[str]:
    """Why a stage recorded with fingerprint ``old`` is stale under ``new`` (empty when it is not)."""
    if not old or "settings" not in old:
        return [OLDER_SARO]
    if old.get("hash") == new.hash:
        return []
    why: list[str] = []
    if old.get("code_version") != new.code_version:
        why.append(f"code version {old.get('code_version')} -> {new.code_version}")
    why += _diff("setting", old.get("settings") or {}, new.settings)
    why += _diff("file", old.get("files") or {}, new.files)
    for d in sorted(set(old.get("deps") or {}) | set(new.deps)):
        if (old.get("deps") or {}).get(d) != new.deps.get(d):
            why.append(f"upstream stage {d} changed")
    return why or ["fingerprint changed"]


def _diff(what: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        if k not in old:
            out.append(f"{what} {k} added")
        elif k not in new:
            out.append(f"{what} {k} removed")
        elif old[k] != new[k]:
            out.append(f"{what} {k} changed")
    return out
