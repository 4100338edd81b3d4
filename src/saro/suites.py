"""Benchmark suites: versioned YAML files that expand into eval prompt entries.

A suite (``src/saro/prompts/suites/<name>.yaml``, or any YAML path) has a ``name``, a ``version``, a ``type``
(harmful, jailbreak, overrefusal, capability; ``set`` for a named list of other suites), prompt ``entries`` in the
recipe's ``prompts.eval`` format (source, n, options, attacks) and ``sampling`` settings (greedy by default).

A recipe references suites by name with ``prompts.eval_suites``::

    prompts:
      eval_suites:
        - demo                                   # a packaged set of suites
        - {name: xstest, options: {path: data/xstest_v2_prompts.csv}}
        - {name: harmbench, n: 50, version: 1}   # size override; version pinned (an error if it changed)

Each suite becomes eval entries whose ``suite`` is the suite name, and ``prompts.suite_info`` records the resolved
name, version, type and sampling of every suite (so the config hash changes when a suite file does).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saro.errors import SaroError

if TYPE_CHECKING:
    from saro.records import Prompt

log = logging.getLogger(__name__)

SUITE_DIR = Path(__file__).resolve().parent / "prompts" / "suites"  # the packaged suites (data)
SUITE_TYPES = ("harmful", "jailbreak", "overrefusal", "capability")
SuiteType = Literal["harmful", "jailbreak", "overrefusal", "capability", "set"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuiteSampling(_Strict):
    """Decoding settings of a suite. ``max_new_tokens`` is capped by ``eval.max_new_tokens``."""

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)
    reasoning_budget: int | None = Field(None, ge=1)


class SuiteRef(_Strict):
    """A reference to a suite from a recipe: a name or path, with optional size, options and pinned version."""

    name: str
    n: int | None = Field(None, ge=1, description="prompts per entry (jailbreak: base prompts per attack)")
    options: dict[str, Any] = Field(default_factory=dict, description="merged into every entry's options")
    version: int | str | None = Field(None, description="fail if the suite's version differs")


class Suite(_Strict):
    """One suite file."""

    name: str
    version: int | str
    type: SuiteType
    description: str = ""
    requires: list[str] = Field(default_factory=list, description="options the user must supply (e.g. path)")
    entries: list[dict[str, Any]] = Field(default_factory=list)
    include: list[str | SuiteRef] = Field(default_factory=list, description="type set: the suites it holds")
    sampling: SuiteSampling = Field(default_factory=SuiteSampling)
    path: str | None = Field(None, exclude=True)


def canonical(name: str) -> str:
    """Suite names are case-insensitive and treat '_' like '-' (``rho_overrefusal`` = ``rho-overrefusal``)."""
    return name.strip().lower().replace("_", "-")


def list_suites() -> list[str]:
    """Names of the packaged suites."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def _suite_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    packaged = SUITE_DIR / f"{canonical(name)}.yaml"
    if packaged.is_file():
        return packaged
    close = difflib.get_close_matches(canonical(name), list_suites(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (packaged: {', '.join(list_suites())})"
    raise SaroError(f"unknown eval suite '{name}'{hint}")


def load_suite(name: str) -> Suite:
    """A suite by packaged name or YAML path; schema errors name the file and key."""
    path = _suite_path(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SaroError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise SaroError(f"{path}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise SaroError(f"{path}: a suite must be a YAML mapping")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SaroError(f"{path}: key '{loc}': {err['msg']}") from None
    if suite.type == "set" and suite.entries:
        raise SaroError(f"{path}: a suite of type 'set' lists other suites under 'include', not entries")
    if suite.type != "set" and not suite.entries:
        raise SaroError(f"{path}: suite '{suite.name}' has no entries")
    suite.path = str(path)
    return suite


def _ref(ref: str | dict[str, Any] | SuiteRef) -> SuiteRef:
    if isinstance(ref, SuiteRef):
        return ref
    if isinstance(ref, str):
        return SuiteRef(name=ref)
    try:
        return SuiteRef.model_validate(ref)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "suite reference"
        raise SaroError(f"eval suite reference {ref!r}: key '{loc}': {err['msg']}") from None


def resolve_suites(refs: Sequence[str | dict[str, Any] | SuiteRef]) -> list[tuple[Suite, SuiteRef]]:
    """Flatten references (sets expand into their members; an outer ``n``/``options`` wins) into suites."""
    out: list[tuple[Suite, SuiteRef]] = []
    seen: dict[str, str] = {}

    def visit(ref: SuiteRef, outer: SuiteRef | None, stack: tuple[str, ...]) -> None:
        suite = load_suite(ref.name)
        if ref.version is not None and str(ref.version) != str(suite.version):
            raise SaroError(
                f"eval suite '{suite.name}': version {suite.version} found, {ref.version} pinned by the recipe"
            )
        if suite.name in stack:
            raise SaroError(f"eval suite '{suite.name}' includes itself")
        merged = ref.model_copy(
            update={
                "n": outer.n if outer and outer.n else ref.n,
                "options": {**ref.options, **(outer.options if outer else {})},
            }
        )
        if suite.type == "set":
            for inner in suite.include:
                visit(_ref(inner), merged if (merged.n or merged.options) else None, (*stack, suite.name))
            return
        key = canonical(suite.name)
        if key in seen:
            raise SaroError(f"eval suite '{suite.name}' is referenced twice ({seen[key]} and {ref.name})")
        seen[key] = ref.name
        out.append((suite, merged))

    for r in refs:
        visit(_ref(r), None, ())
    return out


def suite_entries(suite: Suite, ref: SuiteRef) -> list[dict[str, Any]]:
    """The suite's prompt entries (recipe ``prompts.eval`` dicts) with the reference's size and options."""
    missing = [k for k in suite.requires if k not in ref.options]
    if missing:
        raise SaroError(
            f"eval suite '{suite.name}' needs options {missing}: "
            f"eval_suites: [{{name: {suite.name}, options: {{{missing[0]}: ...}}}}]"
        )
    out = []
    for e in suite.entries:
        entry = dict(e)
        entry.setdefault("suite", suite.name)
        if ref.n is not None:
            entry["n"] = ref.n
        if ref.options:
            entry["options"] = {**entry.get("options", {}), **ref.options}
        out.append(entry)
    return out


def expand_suites(
    refs: Sequence[str | dict[str, Any] | SuiteRef],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Eval prompt entries for the referenced suites, and ``suite_info`` (suite name -> version, type, sampling)."""
    entries: list[dict[str, Any]] = []
    info: dict[str, dict[str, Any]] = {}
    for suite, ref in resolve_suites(refs):
        es = suite_entries(suite, ref)
        entries.extend(es)
        for e in es:
            info[e["suite"]] = {
                "suite": suite.name,
                "version": suite.version,
                "type": suite.type,
                "description": suite.description,
                "sampling": suite.sampling.model_dump(),
            }
    return entries, info


def suite_sampling(info: dict[str, Any] | None) -> SuiteSampling:
    """The sampling settings recorded for a suite (greedy defaults when the suite is not a registered one)."""
    if not info or "sampling" not in info:
        return SuiteSampling()
    return SuiteSampling.model_validate(info["sampling"])


def suite_files(refs: Sequence[str | dict[str, Any] | SuiteRef]) -> list[Path]:
    """Every suite YAML the references read (sets and the suites they include), for the stage hash."""
    out: set[Path] = set()
    todo = [_ref(r) for r in refs]
    while todo:
        suite = load_suite(todo.pop().name)
        path = Path(suite.path or "").resolve()
        if path not in out:
            out.add(path)
            todo.extend(_ref(r) for r in suite.include)
    return sorted(out)


def suite_of(p: Prompt) -> str:
    """The suite a prompt belongs to: its recipe ``suite`` or one derived from source and attack split."""
    if p.meta.get("suite"):
        return str(p.meta["suite"])
    if p.attack:
        return f"{p.source}-jailbreak-{p.meta.get('attack_split', 'attack')}"
    return p.source
