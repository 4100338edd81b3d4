"""What a stage works with: its run folder (``RunDir``, the file layout) and its context (``StageContext``).

A stage's context hands it exactly the recipe settings it declares in the stage table (``saro.stages``): reading
another stage's section through ``ctx.recipe`` raises, so a stage cannot depend on a setting its hash leaves out.
"""

from __future__ import annotations

import logging
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any

from saro import stages as table
from saro.errors import SaroError
from saro.recipe import Recipe
from saro.records import atomic_write_json, read_json

log = logging.getLogger(__name__)

# run-folder file names
MANIFEST = "manifest.json"
FINAL = "final"  # a training stage's (or variant's) final model folder

_SECTIONS = frozenset(
    {"prompts", "synth_rw", "train_sft", "synth_srpo", "train_dpo", "eval", "report", *table.GLOBAL_SETTINGS}
)


class RunDir:
    """A run directory and its manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / MANIFEST
        self.manifest: dict[str, Any] = read_json(self.manifest_path) if self.manifest_path.exists() else {}
        self.manifest.setdefault("stages", {})

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def status(self, stage: str) -> dict[str, Any]:
        return self.manifest["stages"].get(stage, {})

    def is_done(self, stage: str, h: str | None = None) -> bool:
        st = self.status(stage)
        return st.get("status") == "done" and (h is None or st.get("hash") == h)

    def save(self) -> None:
        atomic_write_json(self.manifest_path, self.manifest)

    def update_stage(self, stage: str, **kw: Any) -> None:
        self.manifest["stages"].setdefault(stage, {}).update(kw)
        self.save()


class _Partial:
    """A section of which a stage declares only some keys."""

    def __init__(self, value: Any, keys: set[str], where: str, stage: str) -> None:
        self._value, self._keys, self._where, self._stage = value, keys, where, stage

    def __getattr__(self, name: str) -> Any:
        if name not in self._keys:
            raise SaroError(
                f"stage '{self._stage}' reads {self._where}.{name} without declaring it (saro.stages)"
            )
        return getattr(self._value, name)


class RecipeView:
    """The recipe as a stage sees it: its declared settings, plus the run's identity (name, paths, reuse)."""

    def __init__(self, recipe: Recipe, stage: str) -> None:
        self._recipe, self._stage = recipe, stage
        self._declared = set(table.get(stage).sections) if stage in table.BY_NAME else set(_SECTIONS)

    def __getattr__(self, name: str) -> Any:
        if name not in _SECTIONS or name in self._declared:
            return getattr(self._recipe, name)
        keys = {k.split(".", 1)[1] for k in self._declared if k.startswith(name + ".")}
        value = getattr(self._recipe, name)
        if keys and value is not None:
            return _Partial(value, keys, name, self._stage)
        if keys:
            return None
        raise SaroError(
            f"stage '{self._stage}' reads the '{name}' settings without declaring them (saro.stages)"
        )


class StageContext:
    """What a stage's ``run(ctx)`` gets: its declared settings, its folder and ways to find upstream outputs."""

    def __init__(
        self,
        recipe: Recipe,
        run: RunDir,
        stage: str,
        overwrite: bool = False,
        hashes: dict[str, str] | None = None,
    ) -> None:
        self._recipe = recipe
        self.run = run
        self.stage = stage
        self.overwrite = overwrite
        self.hashes = hashes or {}

    @property
    def recipe(self) -> Any:
        return RecipeView(self._recipe, self.stage)

    @property
    def config(self) -> Any:
        return self._recipe.section(self.stage)

    def setting(self, key: str) -> Any:
        """A declared setting, resolved with its defaults (e.g. ``train_dpo.max_length``)."""
        if key not in table.get(self.stage).sections:
            raise SaroError(f"stage '{self.stage}' reads {key} without declaring it (saro.stages)")
        from saro.fingerprint import setting

        return setting(self._recipe, key)

    def upstream_hashes(self, section: Any) -> list[str]:
        """The hashes a (variant) section of this stage chains through, one per stage it reads."""
        from saro.fingerprint import dep_hashes, fingerprints

        return list(
            dep_hashes(self._recipe, self.stage, section, fingerprints(self._recipe, self.stage)).values()
        )

    @property
    def dir(self) -> Path:
        d = self.run.stage_dir(self.stage)
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @cached_property
    def policy(self) -> Any:
        from saro.policy import load_policy

        return load_policy(self.recipe.policy)

    def path(self, stage: str, *parts: str) -> Path:
        """A path inside another stage's folder."""
        return self.run.stage_dir(stage).joinpath(*parts)

    def require(self, stage: str, *parts: str) -> Path:
        """An upstream artefact that must exist (a clear error otherwise)."""
        p = self.path(stage, *parts)
        if not p.exists():
            raise SaroError(
                f"{p}: missing; run stage '{stage}' first (saro run {self._recipe.path or 'RECIPE'})"
            )
        return p

    def resolve_model(self, ref: str | None) -> str:
        """'@base' -> the recipe's base model; '@train_sft' / '@train_dpo[/variant]' -> that stage's final model."""
        parsed = table.parse_model_ref(ref or "@base")
        if parsed is None:
            return str(ref)
        if parsed.stage == "base":
            return self._recipe.model.source
        sub = (parsed.variant,) if parsed.variant else ()
        return str(self.require(parsed.stage, *sub, FINAL))

    def set_threads(self) -> None:
        set_threads(self._recipe.threads)


def set_threads(n: int | None) -> None:
    import torch

    n = n or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    torch.set_num_threads(n)


def copy_tree(src: Path, dst: Path, skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Copy a folder with hard links where the file system allows (model weights are large), leaving out the
    top-level entries named in ``skip``. Only for finished outputs: they are never written again (final files
    are replaced by rename), so a hard-linked copy cannot change its source. Idempotent: a stage interrupted
    after a copy copies again onto what is there (files already linked stay, stale ones are replaced)."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name in skip:
            continue
        target = dst / entry.name
        if entry.is_dir():
            copy_tree(entry, target)
            continue
        if target.exists() or target.is_symlink():
            if target.exists() and os.path.samefile(entry, target):
                continue
            target.unlink()
        try:
            os.link(entry, target)
        except OSError:
            shutil.copy2(entry, target)
