"""The safety policy: a validated YAML spec of categories, rendered into teacher and judge prompts."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from saro.errors import SaroError

DEFAULT_POLICY = Path(__file__).with_name("default.yaml")
NONE = "none"  # category of prompts that touch no policy area


class Category(BaseModel):
    """One policy area: what is disallowed and what must still be helped with."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    description: str
    disallowed: list[str] = Field(min_length=1)
    allowed: list[str] = Field(min_length=1)
    alternatives: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)


class Policy(BaseModel):
    """A whole safety policy file."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    name: str
    principle: str
    categories: list[Category] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique_ids(cls, cats: list[Category]) -> list[Category]:
        ids = [c.id for c in cats]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate category ids: {sorted(dup)}")
        if NONE in ids:
            raise ValueError(f"'{NONE}' is reserved for prompts outside every category")
        return cats

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.categories]

    def get(self, cid: str) -> Category:
        for c in self.categories:
            if c.id == cid:
                return c
        close = difflib.get_close_matches(cid, self.ids, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SaroError(f"unknown policy category '{cid}'{hint}")

    def render(self, include_allowed: bool = True) -> str:
        """The policy as text for a teacher or judge prompt."""
        lines = [f"Safety policy ({self.name}, v{self.version})", "", self.principle.strip(), ""]
        for c in self.categories:
            lines.append(f"[{c.id}] {c.name}: {c.description}")
            lines.append("  Not allowed: " + "; ".join(c.disallowed) + ".")
            if include_allowed:
                lines.append("  Still fine (help with these): " + "; ".join(c.allowed) + ".")
        return "\n".join(lines)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file (the packaged default when ``path`` is None)."""
    return _load(str(Path(path).resolve()) if path else str(DEFAULT_POLICY))


@lru_cache(maxsize=8)
def _load(path: str) -> Policy:
    p = Path(path)
    if not p.is_file():
        raise SaroError(f"{p}: policy file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SaroError(f"{p}{line}: invalid YAML") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise SaroError(f"{p}: {loc}: {err['msg']}") from None
