"""What a stage works with: its run folder (``RunDir``, the file layout) and its context (``StageContext``).

A stage's context hands it exactly what the stage table (``saro.stages``) declares for it: its own section, typed
(``StageContext[SynthRWConfig]``), the other settings it names (``ctx.setting``), and the outputs of other stages it
reads (``ctx.input`` / ``ctx.records``). Reading another stage's section, or an output the stage does not declare,
raises, so a stage cannot depend on a setting or a file its hash leaves out.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from saro import stages as table
from saro.errors import SaroError
from saro.recipe import ModelSpec, Recipe, Section
from saro.records import atomic_write_json, read_json, read_jsonl

if TYPE_CHECKING:
    from saro.policy import Policy

log = logging.getLogger(__name__)

# run-folder file names
MANIFEST = "manifest.json"
FINAL = "final"  # a training stage's (or variant's) final model folder

C = TypeVar("C", bound=Section)
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


def unit_folder(unit: str) -> str:
    """The folder of a unit inside its stage folder ("" for a training stage's main model)."""
    return "" if unit == table.MAIN else re.sub(r"[^A-Za-z0-9_.-]+", "_", unit)


class RunFiles(Protocol):
    """Where the outputs of a run's stages are: a stage's context (declared outputs only) or the run folder."""

    @property
    def root(self) -> Path: ...

    def input(self, stage: str, output: str, unit: str | None = None) -> Path: ...

    def find(self, stage: str, output: str, unit: str | None = None) -> Path | None: ...


class StageStatus(TypedDict, total=False):
    """A stage's entry in the run's manifest (absent keys: not reached yet). ``summary`` is what the stage's
    ``run(ctx)`` returned (JSON; per unit for a stage made of units); ``units``: {unit: unit hash}."""

    status: str  # "running" | "done"
    hash: str
    fingerprint: dict[str, Any]
    units: dict[str, str]
    started: str
    finished: str
    seconds: float
    config: dict[str, Any]
    launch: str | None
    summary: dict[str, Any]
    reused_from: str


class RunDir:
    """A run directory, its file layout (every stage output's path, from the stage table) and its manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / MANIFEST
        self.manifest: dict[str, Any] = read_json(self.manifest_path) if self.manifest_path.exists() else {}
        self.manifest.setdefault("stages", {})

    def __str__(self) -> str:
        return str(self.root)

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def unit_dir(self, stage: str, unit: str) -> Path:
        """The folder of one unit of a stage (a training variant, an eval model)."""
        return self.stage_dir(stage) / unit_folder(unit)

    def file(self, stage: str, output: str, unit: str | None = None) -> Path:
        """The path of a declared output of a stage (``unit``: the unit an output per unit belongs to)."""
        out = table.get(stage).output(output)
        return self.stage_dir(stage) / out.path(unit_folder(unit) if unit is not None else None)

    def find(self, stage: str, output: str, unit: str | None = None) -> Path | None:
        """An output's path when it exists (None otherwise)."""
        p = self.file(stage, output, unit)
        return p if p.exists() else None

    def input(self, stage: str, output: str, unit: str | None = None) -> Path:
        """An output that must exist (a clear error naming the stage to run otherwise)."""
        p = self.file(stage, output, unit)
        if not p.exists():
            raise SaroError(f"{p}: missing; run stage '{stage}' of {self.root} first")
        return p

    def status(self, stage: str) -> StageStatus:
        """The stage's manifest entry (empty when it never ran here)."""
        return cast("StageStatus", self.manifest["stages"].get(stage, {}))

    def is_done(self, stage: str, h: str | None = None) -> bool:
        st = self.status(stage)
        return st.get("status") == "done" and (h is None or st.get("hash") == h)

    def save(self) -> None:
        atomic_write_json(self.manifest_path, self.manifest)

    def update_stage(self, stage: str, **kw: object) -> None:
        self.manifest["stages"].setdefault(stage, {}).update(kw)
        self.save()


class StageContext(Generic[C]):
    """What a stage's ``run(ctx)`` gets: its typed section (``config``), the other settings it declares, its
    folder, and the outputs of the stages it reads."""

    def __init__(
        self,
        recipe: Recipe,
        run: RunDir,
        stage: str,
        overwrite: bool = False,
        hashes: Mapping[str, str] | None = None,
    ) -> None:
        self._recipe = recipe
        self.run = run
        self.stage = stage
        self.row = table.get(stage)
        self.overwrite = overwrite
        self.hashes: dict[str, str] = dict(hashes or {})
        self.opened: list[tuple[str, str, str | None]] = []  # (stage, output, unit) of every input asked for

    def __str__(self) -> str:
        return f"stage {self.stage} of {self.run.root}"

    @property
    def root(self) -> Path:
        """The run folder."""
        return self.run.root

    @property
    def config(self) -> C:
        """The stage's own section, typed (``StageContext[EvalConfig]``)."""
        section = self._recipe.section(self.stage)
        if section is None:
            raise SaroError(f"stage '{self.stage}' is not configured in recipe '{self._recipe.name}'")
        return cast("C", section)

    def setting(self, key: str, kind: type[T]) -> T:
        """A declared setting resolved with its defaults (``train_dpo.max_length``), validated as ``kind``."""
        value = self.setting_or_none(key, kind)
        if value is None:
            raise SaroError(f"stage '{self.stage}' needs {key}, which the recipe leaves unset")
        return value

    def setting_or_none(self, key: str, kind: type[T]) -> T | None:
        """A declared setting as ``setting``, or None where the recipe leaves it unset (its section absent)."""
        if key not in self.row.sections:
            raise SaroError(f"stage '{self.stage}' reads {key} without declaring it (saro.stages)")
        from saro.fingerprint import setting

        value = setting(self._recipe, key)
        if value is None:
            return None
        try:
            return TypeAdapter(kind).validate_python(value)
        except ValidationError as e:
            raise SaroError(f"{key}: {e.errors()[0]['msg']}") from None

    @property
    def model(self) -> ModelSpec:
        """The base model (a declared global setting)."""
        self._declared("model")
        return self._recipe.model

    @property
    def seed(self) -> int:
        self._declared("seed")
        return self._recipe.seed

    @cached_property
    def policy(self) -> Policy:
        """The safety policy (a declared global setting)."""
        from saro.policy import load_policy

        self._declared("policy")
        return load_policy(self._recipe.policy)

    @property
    def recipe_name(self) -> str:
        return self._recipe.name

    @property
    def recipe_dir(self) -> Path | None:
        """The folder of the recipe file (relative paths in settings are relative to it), if it came from one."""
        return Path(self._recipe.path).parent if self._recipe.path else None

    @property
    def reuse_from(self) -> Path | None:
        """Another run folder whose finished work with equal hashes this run copies (``reuse_from``)."""
        return Path(self._recipe.reuse_from) if self._recipe.reuse_from else None

    def _declared(self, name: str) -> None:
        if name not in self.row.sections:
            raise SaroError(
                f"stage '{self.stage}' reads the '{name}' setting without declaring it (saro.stages)"
            )

    def model_units(self, stage: str) -> dict[str, str]:
        """{model: unit hash} of a training stage's models (``main`` and each variant): this stage's own, or those
        of a training stage whose models it reads."""
        if stage != self.stage and not self.row.declares(stage, "model"):
            raise SaroError(
                f"stage '{self.stage}' reads the models of {stage} without declaring it (saro.stages)"
            )
        from saro.fingerprint import fingerprints, training_units

        return training_units(self._recipe, stage, fingerprints(self._recipe, stage))

    # ------------------------------------------------------------------------------------------------ files

    @property
    def dir(self) -> Path:
        d = self.run.stage_dir(self.stage)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def output(self, name: str, unit: str | None = None) -> Path:
        """The path of one of this stage's own declared outputs (its folder is made)."""
        p = self.run.file(self.stage, name, unit)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def unit_dir(self, unit: str) -> Path:
        """The folder of one of this stage's units (the stage folder for a training stage's main model)."""
        return self.run.unit_dir(self.stage, unit)

    def _check(self, stage: str, output: str) -> None:
        if stage != self.stage and not self.row.declares(stage, output):
            raise SaroError(
                f"stage '{self.stage}' reads {stage}.{output} without declaring it (saro.stages, reads)"
            )

    def find(self, stage: str, output: str, unit: str | None = None) -> Path | None:
        """A declared output of another stage when it exists (its stage may not be in the recipe)."""
        self._check(stage, output)
        self.opened.append((stage, output, unit))
        return self.run.find(stage, output, unit)

    def input(self, stage: str, output: str, unit: str | None = None) -> Path:
        """A declared output of another stage that must exist (a clear error otherwise)."""
        p = self.find(stage, output, unit)
        if p is None:
            where = self.run.file(stage, output, unit)
            raise SaroError(
                f"{where}: missing; run stage '{stage}' first (saro run {self._recipe.path or 'RECIPE'})"
            )
        return p

    def records(self, stage: str, output: str, model: type[R], unit: str | None = None) -> list[R]:
        """The rows of a declared JSONL output of another stage, validated as its declared record type."""
        declared = table.get(stage).output(output).schema
        if declared != f"{model.__module__}:{model.__qualname__}":
            raise SaroError(f"{stage}.{output} holds {declared} rows, not {model.__qualname__}")
        return read_jsonl(self.input(stage, output, unit), model)

    def resolve_model(self, ref: str | None) -> str:
        """'@base' -> the recipe's base model; '@train_sft' / '@train_dpo[/variant]' -> that model's folder."""
        parsed = table.parse_model_ref(ref or "@base")
        if parsed is None:
            return str(ref)
        if parsed.stage == "base":
            return self._recipe.model.source
        if parsed.variant:
            return str(self.input(parsed.stage, "variant", parsed.variant))
        return str(self.input(parsed.stage, "model"))

    # ------------------------------------------------------------------------------------------------ units

    def unit_hashes(self) -> dict[str, str]:
        """{unit: hash} of this stage's units (empty for a stage without units)."""
        fn = self.row.unit_hashes()
        return dict(fn(self)) if fn is not None else {}

    def reused_unit(self, unit: str, h: str) -> Path | None:
        """With ``reuse_from``: the folder of ``unit`` in that run, when it finished this stage with the unit at
        hash ``h`` (None otherwise)."""
        src = self.reuse_from
        if src is None or not (src / MANIFEST).is_file() or src.resolve() == self.run.root.resolve():
            return None
        other = RunDir(src)
        st = other.status(self.stage)
        if st.get("status") != "done" or (st.get("units") or {}).get(unit) != h:
            return None
        d = other.unit_dir(self.stage, unit)
        return d if d.is_dir() else None

    def set_threads(self) -> None:
        set_threads(self._recipe.threads)


def model_unit_hashes(ctx: StageContext[Section]) -> dict[str, str]:
    """The units of a training stage (the stage table's ``Units``): {model: hash} of its main model and variants."""
    return ctx.model_units(ctx.stage)


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
