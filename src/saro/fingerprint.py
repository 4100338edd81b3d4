"""Stage fingerprints: what a stage's result depends on, so that a result can never be silently stale.

A stage's fingerprint holds a digest of every setting it declares in the stage table (resolved: defaults
included, one entry per section key), the SHA-256 of the contents of every input file it reads, the hashes of the
stages it depends on and its code version. Its hash is the hash of all of that. The manifest stores the
fingerprint, so that ``saro status`` and ``saro run`` can say *why* a stage is stale (which key, file, version or
upstream stage changed).

A training stage also has a "main" hash without its ``variants``: a stage that reads only the main model chains
through it, so adding a variant does not redo what the main model feeds (see ``dep_hashes``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saro import stages as table
from saro.errors import SaroError
from saro.recipe import PromptEntry, Recipe
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
    main: str = ""  # training stages: the hash without ``variants``

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ settings


def _section_value(recipe: Recipe, name: str) -> Any:
    resolve = table.get(name).resolver() if name in table.BY_NAME else None
    if resolve is not None:  # training sections: defaults from the layer that owns them
        return resolve(name, getattr(recipe, name))
    if name == "seed":
        return recipe.seed
    if name == "policy":
        return recipe.policy
    value = recipe.prompts if name == "prompts" else getattr(recipe, name)
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


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (of every file under a folder, by relative path)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode("utf-8") + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()
    try:
        h.update(path.read_bytes())
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
        from saro.prompts.suites import suite_files

        paths += suite_files(recipe.prompts.eval_suites)
    if table.POLICY_FILE in kinds:
        paths.append(Path(recipe.policy).resolve() if recipe.policy else DEFAULT_POLICY)
    if table.LABEL_FILE in kinds:
        labels = (recipe.resolved_run_dir() / table.LABELS_FILE).resolve()
        if labels.is_file():  # absent until someone labels; then "file ... added" makes the stage stale
            paths.append(labels)
    for u in unpinned:
        if u not in _warned:
            _warned.add(u)
            log.warning("%s: hub dataset without a pinned revision; set options.revision to pin it", u)
    return {str(p): file_digest(p) for p in dict.fromkeys(paths)}, unpinned


# ------------------------------------------------------------------------------------------------- hashing


def stage_deps(recipe: Recipe, stage: str) -> list[str]:
    """The enabled stages whose outputs ``stage`` reads (eval: also the training stages its models name)."""
    row = table.get(stage)
    deps = list(row.deps)
    if row.deps_from_models:
        deps += [r.stage for r in table.model_refs(setting(recipe, stage))]
    enabled = recipe.enabled()
    return [d for d in dict.fromkeys(deps) if d in enabled]


def dep_hashes(recipe: Recipe, stage: str, section: Any, fps: dict[str, Fingerprint]) -> dict[str, str]:
    """The hash ``section`` of ``stage`` chains through per upstream stage: a training stage's main hash,
    or its whole hash when the section names one of its variants (``@train_sft/safety_sft``)."""
    named = {r.stage for r in table.model_refs(section) if r.variant}
    return {d: fps[d].hash if d in named else fps[d].main for d in stage_deps(recipe, stage)}


def _digests(settings: dict[str, Any]) -> dict[str, str]:
    return {k: stable_id(v) for k, v in settings.items()}


def fingerprint(recipe: Recipe, stage: str, fps: dict[str, Fingerprint]) -> Fingerprint:
    """The fingerprint of one stage (its dependencies' fingerprints must be in ``fps``)."""
    row = table.get(stage)
    settings = _digests(stage_settings(recipe, stage))
    files, unpinned = input_files(recipe, stage)
    deps = dep_hashes(recipe, stage, setting(recipe, stage), fps)
    fp = Fingerprint(stage, row.code_version, settings, files, deps, unpinned)
    fp.hash = stable_id(stage, row.code_version, settings, files, deps)
    variants = f"{stage}.variants"
    if stage in table.MODEL_STAGES and settings.get(variants) != stable_id(None):
        rest = {k: v for k, v in settings.items() if k != variants}
        fp.main = stable_id(stage, row.code_version, rest, files, deps)
    else:
        fp.main = fp.hash
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
