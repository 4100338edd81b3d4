"""Run a recipe's stages in order, skipping what is done.

Each run directory has a ``manifest.json``: the resolved config (secrets masked), a config hash per stage (which
includes the hashes of the stages it depends on), library versions, the git commit and the seed. A stage whose
hash is unchanged and which finished is skipped; a stage that was interrupted resumes (its code skips the ids
already written); a stage whose config changed, or that is run with ``overwrite``, starts from scratch.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.recipe import STAGES, Recipe
from saro.records import atomic_write_json, read_json, stable_id

log = logging.getLogger(__name__)

# stage -> module whose run(ctx) implements it
STAGE_MODULES = {
    "prompts": "saro.prompts.build",
    "synth_rw": "saro.synth.rw",
    "train_sft": "saro.train.stage",
    "synth_srpo": "saro.synth.srpo",
    "train_dpo": "saro.train.stage",
    "eval": "saro.evaluate.run",
    "report": "saro.evaluate.report",
}

_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE)
MASK = "***"


def mask_secrets(obj: Any) -> Any:
    """Mask values of secret-looking keys, and any string equal to a secret environment variable's value."""
    secrets = {
        v
        for k, v in os.environ.items()
        if v and len(v) >= 8 and re.search(r"KEY|TOKEN|SECRET|PASSWORD", k, re.IGNORECASE)
    }

    def walk(o: Any, key: str = "") -> Any:
        if isinstance(o, dict):
            return {k: walk(v, str(k)) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [walk(v, key) for v in o]
        if isinstance(o, str):
            if _SECRET_KEY.search(key) and not key.endswith("_env") and o:
                return MASK
            for s in secrets:
                if s in o:
                    o = o.replace(s, MASK)
        return o

    return walk(obj)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("saro", "torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the source checkout saro runs from (with -dirty when it has uncommitted changes)."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A run directory and its manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"
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


@dataclass
class StageContext:
    """What a stage's ``run(ctx)`` gets: the recipe, its section, its folder and ways to find upstream outputs."""

    recipe: Recipe
    run: RunDir
    stage: str
    overwrite: bool = False
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.recipe.section(self.stage)

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
                f"{p}: missing; run stage '{stage}' first (saro run {self.recipe.path or 'RECIPE'})"
            )
        return p

    def resolve_model(self, ref: str | None) -> str:
        """'@base' -> the recipe's base model; '@train_sft' / '@train_dpo[/variant]' -> that stage's final model."""
        if ref is None or ref == "@base":
            return self.recipe.model.source
        if ref.startswith("@"):
            stage, _, variant = ref[1:].partition("/")
            if stage not in ("train_sft", "train_dpo"):
                raise SaroError(f"model reference '{ref}': use @base, @train_sft or @train_dpo[/variant]")
            sub = (variant,) if variant else ()
            return str(self.require(stage, *sub, "final"))
        return ref

    def set_threads(self) -> None:
        set_threads(self.recipe.threads)


def set_threads(n: int | None) -> None:
    import torch

    n = n or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    torch.set_num_threads(n)


def stage_deps(recipe: Recipe, stage: str) -> list[str]:
    """The stages whose outputs ``stage`` reads."""
    deps = {
        "prompts": [],
        "synth_rw": ["prompts"],
        "train_sft": ["synth_rw"],
        "synth_srpo": ["prompts", "train_sft"],
        "train_dpo": ["synth_srpo", "train_sft"],
        "report": ["eval"],
    }.get(stage)
    if deps is not None:
        return [d for d in deps if d in recipe.enabled()]
    assert stage == "eval" and recipe.eval is not None
    out = ["prompts"]
    for m in recipe.eval.models:
        if m.source.startswith("@train_"):
            out.append(m.source[1:].split("/")[0])
    return [d for d in dict.fromkeys(out) if d in recipe.enabled()]


def stage_hashes(recipe: Recipe) -> dict[str, str]:
    """Config hash per enabled stage, chained through the stages it depends on (see ``upstream_hashes``)."""
    return _chain_hashes(recipe)[0]


def upstream_hashes(recipe: Recipe, stage: str, section: Any) -> list[str]:
    """The hashes ``section`` of ``stage`` chains through, one per stage it reads.

    A section that reads only the main model of a training stage chains through that model's hash (the stage
    section without its ``variants``), so adding a variant (SafetySFT, an ablation) does not redo what the main
    model feeds; a section that names a variant (``@train_sft/safety_sft``) chains through the whole stage."""
    full, main = _chain_hashes(recipe)
    return _deps(recipe, stage, section, full, main)


def _deps(recipe: Recipe, stage: str, section: Any, full: dict[str, str], main: dict[str, str]) -> list[str]:
    text = json.dumps(section, sort_keys=True, default=str)
    return [full[d] if f'"@{d}/' in text else main[d] for d in stage_deps(recipe, stage)]


def _chain_hashes(recipe: Recipe) -> tuple[dict[str, str], dict[str, str]]:
    full: dict[str, str] = {}
    main: dict[str, str] = {}
    policy_hash = None
    if recipe.policy:
        policy_hash = stable_id(Path(recipe.policy).read_text(encoding="utf-8"))
    model = recipe.model.model_dump(mode="json", exclude_defaults=True)
    for stage in recipe.enabled():
        section = recipe.section(stage)
        # only values that differ from the defaults: adding a new config field does not invalidate old runs
        dumped = (
            section.model_dump(mode="json", exclude_defaults=True)
            if hasattr(section, "model_dump")
            else section
        )
        deps = _deps(recipe, stage, dumped, full, main)
        full[stage] = stable_id(stage, dumped, recipe.seed, model, policy_hash, *deps)
        main[stage] = full[stage]
        if isinstance(dumped, dict) and "variants" in dumped:
            rest = {k: v for k, v in dumped.items() if k != "variants"}
            main[stage] = stable_id(stage, rest, recipe.seed, model, policy_hash, *deps)
    return full, main


def resolved_config(recipe: Recipe) -> dict[str, Any]:
    return mask_secrets(recipe.model_dump(mode="json"))


def world() -> tuple[int, int]:
    """(rank, world size) when started by accelerate / torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


DISTRIBUTED_STAGES = ("train_sft", "train_dpo")


def run_stage(
    recipe: Recipe, stage: str, overwrite: bool = False, run: RunDir | None = None
) -> dict[str, Any]:
    """Run one stage (resuming or skipping as the manifest allows); returns its summary.

    Under ``accelerate launch`` (several ranks) only the training stages may run; rank 0 keeps the manifest and
    the stage folder, the other ranks wait for it and then train with it.
    """
    if stage not in recipe.enabled():
        raise SaroError(
            f"stage '{stage}' is not configured in recipe '{recipe.name}' (add a '{stage}:' section)"
        )
    rank, size = world()
    if size > 1 and stage not in DISTRIBUTED_STAGES:
        raise SaroError(
            f"stage '{stage}' runs in one process; use accelerate launch only for train sft / train dpo"
        )
    run = run or RunDir(recipe.resolved_run_dir())
    hashes = stage_hashes(recipe)
    h = hashes[stage]
    for dep in stage_deps(recipe, stage):
        if not run.is_done(dep, hashes[dep]):
            raise SaroError(
                f"stage '{stage}' needs '{dep}' to be done first (with the current recipe): saro run ..."
            )
    st = run.status(stage)
    if run.is_done(stage, h) and not overwrite:
        log.info("stage %s: done (config unchanged), skipping", stage)
        return st.get("summary", {})
    ctx = StageContext(recipe=recipe, run=run, stage=stage, overwrite=overwrite, hashes=hashes)
    module = importlib.import_module(STAGE_MODULES[stage])
    if rank == 0:
        sdir = run.stage_dir(stage)
        if not overwrite and recipe.reuse_from and _reuse(recipe, stage, h, run):
            return run.status(stage).get("summary", {})
        if overwrite or (st and st.get("hash") != h):
            keep = getattr(module, "keep_unchanged", None)  # training stages: a model per variant
            if sdir.exists() and keep is not None and not overwrite:
                log.info("stage %s: config changed; models whose inputs did not change are kept", stage)
                keep(ctx, st.get("summary") or {})
            elif sdir.exists():
                why = "--overwrite" if overwrite else "config changed"
                log.info("stage %s: %s, starting from scratch", stage, why)
                shutil.rmtree(sdir)
        elif st.get("status") == "running":
            log.info("stage %s: resuming an interrupted run", stage)
        token = f"{os.environ.get('MASTER_PORT', '')}:{os.getppid()}" if size > 1 else None
        _write_run_info(run, recipe, hashes)
        run.update_stage(
            stage, status="running", hash=h, started=_now(), config=_stage_config(recipe, stage), launch=token
        )
    else:
        _wait_for_rank0(run, stage, h)
    t0 = time.time()
    log.info("stage %s: running%s", stage, f" (rank {rank} of {size})" if size > 1 else "")
    summary = module.run(ctx) or {}
    dt = round(time.time() - t0, 1)
    if rank == 0:
        run.update_stage(stage, status="done", finished=_now(), seconds=dt, summary=summary)
    log.info("stage %s: done in %.0f s", stage, dt)
    return summary


def _wait_for_rank0(run: RunDir, stage: str, h: str, timeout: float = 600.0) -> None:
    """Non-zero ranks: wait until rank 0 has prepared the stage folder for this launch."""
    token = f"{os.environ.get('MASTER_PORT', '')}:{os.getppid()}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            st = read_json(run.manifest_path)["stages"].get(stage, {})
        except (SaroError, KeyError):
            st = {}
        if st.get("hash") == h and st.get("status") == "running" and st.get("launch") == token:
            return
        time.sleep(0.2)
    raise SaroError(f"stage '{stage}': rank 0 did not start the stage within {timeout:.0f} s")


def _reuse(recipe: Recipe, stage: str, h: str, run: RunDir) -> bool:
    """Copy a stage done with the same hash in ``recipe.reuse_from`` (hard links where possible)."""
    src = Path(recipe.reuse_from or "")
    if not (src / "manifest.json").exists() or src.resolve() == run.root.resolve():
        return False
    other = RunDir(src)
    if not other.is_done(stage, h):
        return False
    dst = run.stage_dir(stage)
    if dst.exists():
        shutil.rmtree(dst)
    copy_tree(other.stage_dir(stage), dst)
    _write_run_info(run, recipe, stage_hashes(recipe))
    st = other.status(stage)
    run.update_stage(stage, **{**st, "reused_from": str(src)})
    log.info("stage %s: same config as in %s, reused", stage, src)
    return True


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


def _stage_config(recipe: Recipe, stage: str) -> Any:
    section = recipe.section(stage)
    dumped = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return mask_secrets(dumped)


def _write_run_info(run: RunDir, recipe: Recipe, hashes: dict[str, str]) -> None:
    run.manifest.update(
        recipe=recipe.name,
        recipe_path=recipe.path,
        seed=recipe.seed,
        config=resolved_config(recipe),
        config_hash=stable_id(recipe.model_dump(mode="json")),
        stage_hashes=hashes,
        versions=library_versions(),
        git_commit=git_commit(),
        updated=_now(),
    )
    run.manifest.setdefault("created", _now())
    run.save()


def run_recipe(
    recipe: Recipe, overwrite: bool = False, stages: list[str] | None = None, until: str | None = None
) -> dict[str, Any]:
    """Run all enabled stages (or the listed ones) in order."""
    run = RunDir(recipe.resolved_run_dir())
    todo = recipe.enabled()
    if until:
        if until not in todo:
            raise SaroError(f"--until {until}: not a stage of this recipe ({', '.join(todo)})")
        todo = todo[: todo.index(until) + 1]
    if stages:
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise SaroError(f"unknown stage(s) {bad}; stages: {', '.join(STAGES)}")
        todo = [s for s in todo if s in stages]
    set_threads(recipe.threads)
    out = {}
    for stage in todo:
        out[stage] = run_stage(recipe, stage, overwrite=overwrite, run=run)
    return out
