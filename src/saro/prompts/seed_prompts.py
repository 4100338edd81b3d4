"""The project's own seed prompts: benign general-assistant requests and borderline (risky-looking, benign) ones.

They are written by us, not copied from public benchmarks, so they can be used for training without contaminating
the evaluation sets. They ship as YAML next to this module; loading validates them strictly, because a typo in a
category or a duplicated prompt would silently skew the training mix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from saro.errors import SaroError
from saro.policy import NONE, load_policy

logger = logging.getLogger(__name__)

SEED_DIR = Path(__file__).with_name("seeds")
CONTRAST_FILE = "contrast.yaml"
SeedKind = Literal["benign", "borderline"]
SEED_KINDS: tuple[str, ...] = ("benign", "borderline")

# Over-refusal traps a borderline prompt is built around (see the header of seeds/borderline.yaml).
TRAPS: tuple[str, ...] = (
    "homonym",
    "figurative",
    "safe_target",
    "safe_context_fiction",
    "safe_context_history",
    "definition",
    "public_figure",
    "safety_information",
    "privacy_self",
    "harm_reduction",
    "education",
)

# Keys of the returned dicts.
TEXT = "text"
KIND = "kind"
CATEGORY = "category"
DOMAIN = "domain"
TRAP = "trap"


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("empty text")
        return v


class _BenignItem(_Item):
    domain: str = Field(pattern=r"^[a-z][a-z0-9_]*$")


class _TrapItem(_Item):
    """A borderline request with the trap that makes it look risky (one of ``TRAPS``)."""

    trap: str

    @field_validator("trap")
    @classmethod
    def _known_trap(cls, v: str) -> str:
        if v not in TRAPS:
            raise ValueError(f"unknown trap '{v}' (known: {', '.join(TRAPS)})")
        return v


class _BorderlineItem(_TrapItem):
    category: str


class _SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    prompts: list[dict] = Field(min_length=1)


class _ContrastSide(_Item):
    pass


class _ContrastBorderline(_TrapItem):
    pass


class _ContrastPair(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    topic: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    category: str
    borderline: _ContrastBorderline
    harmful: _ContrastSide


class _ContrastFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    pairs: list[dict] = Field(min_length=1)


def _where(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """A pydantic error location as a path like ``prompts[3].text``."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "top level"


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form of a prompt, used to find duplicates."""
    return " ".join(text.split()).casefold()


def seed_path(kind: SeedKind) -> Path:
    """The packaged YAML file holding the seed prompts of ``kind``."""
    if kind not in SEED_KINDS:
        raise SaroError(f"unknown seed kind '{kind}' (known: {', '.join(SEED_KINDS)})")
    return SEED_DIR / f"{kind}.yaml"


def load_seeds(kind: SeedKind) -> list[dict]:
    """The packaged seed prompts of ``kind`` as dicts ``{text, kind, category, domain|trap}``, validated."""
    return _load_seeds(kind, seed_path(kind))


def _read_yaml(p: Path) -> object:
    """Parse a seed YAML file; a missing file, bad encoding or bad YAML is a one-line SaroError."""
    if not p.is_file():
        raise SaroError(f"{p}: seed file not found")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SaroError(f"{p}: not valid UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SaroError(f"{p}{line}: invalid YAML") from None


def _load_seeds(kind: SeedKind, path: str | Path) -> list[dict]:
    """Read and validate a seed file; any problem is a one-line SaroError naming the file and item index."""
    if kind not in SEED_KINDS:
        raise SaroError(f"unknown seed kind '{kind}' (known: {', '.join(SEED_KINDS)})")
    p = Path(path)
    data = _read_yaml(p)
    try:
        seed_file = _SeedFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise SaroError(f"{p}: {_where(err['loc'])}: {err['msg']}") from None

    model: type[_Item] = _BenignItem if kind == "benign" else _BorderlineItem
    categories = set(load_policy().ids)
    seen: dict[str, int] = {}
    out: list[dict] = []
    for i, raw in enumerate(seed_file.prompts):
        try:
            item = model.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise SaroError(f"{p}: {_where(err['loc'], f'prompts[{i}]')}: {err['msg']}") from None
        key = normalize(item.text)
        if key in seen:
            raise SaroError(f"{p}: prompts[{i}]: duplicate of prompts[{seen[key]}]: {item.text[:60]!r}")
        seen[key] = i
        if isinstance(item, _BenignItem):
            out.append({TEXT: item.text, KIND: kind, CATEGORY: NONE, DOMAIN: item.domain})
            continue
        assert isinstance(item, _BorderlineItem)
        if item.category not in categories:
            raise SaroError(
                f"{p}: prompts[{i}].category: unknown policy category '{item.category}' "
                f"(known: {', '.join(sorted(categories))})"
            )
        out.append({TEXT: item.text, KIND: kind, CATEGORY: item.category, TRAP: item.trap})
    logger.debug("loaded %d %s seed prompts from %s", len(out), kind, p)
    return out


def load_contrast(path: str | Path | None = None) -> list[dict]:
    """The topic contrast pairs (seeds/contrast.yaml) as dicts ``{topic, category, borderline, harmful, trap}``.

    Each pair is one topic asked once as a borderline request (answer it) and once as a harmful one (refuse it),
    so a model has to read the intent, not the vocabulary. Validated strictly: unknown keys, categories and traps,
    duplicate topics and duplicate texts are one-line SaroErrors naming the file and pair index.
    """
    p = Path(path) if path is not None else SEED_DIR / CONTRAST_FILE
    data = _read_yaml(p)
    try:
        f = _ContrastFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise SaroError(f"{p}: {_where(err['loc'])}: {err['msg']}") from None
    categories = set(load_policy().ids)
    topics: dict[str, int] = {}
    texts: dict[str, str] = {}
    out: list[dict] = []
    for i, raw in enumerate(f.pairs):
        try:
            pair = _ContrastPair.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise SaroError(f"{p}: {_where(err['loc'], f'pairs[{i}]')}: {err['msg']}") from None
        if pair.category not in categories:
            raise SaroError(
                f"{p}: pairs[{i}].category: unknown policy category '{pair.category}' "
                f"(known: {', '.join(sorted(categories))})"
            )
        if pair.topic in topics:
            raise SaroError(f"{p}: pairs[{i}].topic: duplicate of pairs[{topics[pair.topic]}] ({pair.topic})")
        topics[pair.topic] = i
        for side in ("borderline", "harmful"):
            text = getattr(pair, side).text
            key = normalize(text)
            if key in texts:
                raise SaroError(f"{p}: pairs[{i}].{side}.text: duplicate of {texts[key]}: {text[:60]!r}")
            texts[key] = f"pairs[{i}].{side}"
        out.append(
            {
                "topic": pair.topic,
                CATEGORY: pair.category,
                "borderline": pair.borderline.text,
                "harmful": pair.harmful.text,
                TRAP: pair.borderline.trap,
            }
        )
    logger.debug("loaded %d contrast pairs from %s", len(out), p)
    return out
