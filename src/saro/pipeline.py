"""Run a recipe's stages in order, skipping what is done.

Each run directory has a ``manifest.json``: the resolved config (secrets masked), a config hash per stage (which
includes the hashes of the stages it depends on), library versions, the git commit and the seed. A stage whose
hash is unchanged and which finished is skipped; a stage that was interrupted resumes (its code skips the ids
already written); a stage whose config changed, or that is run with ``overwrite``, starts from scratch.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from saro import fingerprint
from saro import stages as table
from saro.errors import SaroError
from saro.masking import mask_secrets
from saro.recipe import Recipe, TrainingSection
from saro.recipe import load_recipe as load_recipe_schema
from saro.records import read_json, stable_id
from saro.stage import RunDir, StageContext, StageStatus, copy_tree, set_threads, unit_folder
from saro.stages import DISTRIBUTED_STAGES, MAIN, STAGES

__all__ = [
    "RunDir",
    "StageContext",
    "copy_tree",
    "load_recipe",
    "run_recipe",
    "run_stage",
    "set_threads",
    "stage_hashes",
]

log = logging.getLogger(__name__)


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


def stage_deps(recipe: Recipe, stage: str) -> list[str]:
    """The stages whose outputs ``stage`` reads (from the stage table)."""
    return fingerprint.stage_deps(recipe, stage)


def stage_hashes(recipe: Recipe, upto: str | None = None) -> dict[str, str]:
    """Hash per enabled stage (or per stage ``upto`` depends on), chained through its dependencies."""
    return {s: fp.hash for s, fp in fingerprint.fingerprints(recipe, upto).items()}


def resolved_config(recipe: Recipe) -> dict[str, Any]:
    return mask_secrets(recipe.model_dump(mode="json"))


def world() -> tuple[int, int]:
    """(rank, world size) when started by accelerate / torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


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
    fps = fingerprint.fingerprints(recipe, stage)
    hashes = {s: fp.hash for s, fp in fps.items()}
    h = hashes[stage]
    for dep in stage_deps(recipe, stage):
        if not run.is_done(dep, hashes[dep]):
            raise SaroError(
                f"stage '{stage}' needs '{dep}' to be done first (with the current recipe): saro run ..."
            )
    st = run.status(stage)
    if run.is_done(stage, h) and not overwrite:
        log.info("stage %s: done (nothing it reads changed), skipping", stage)
        return st.get("summary", {})
    ctx: StageContext[Any] = StageContext(
        recipe=recipe, run=run, stage=stage, overwrite=overwrite, hashes=hashes
    )
    row = table.get(stage)
    if rank == 0:
        if not overwrite and recipe.reuse_from and _reuse(recipe, stage, h, run):
            return run.status(stage).get("summary", {})
        _prepare(ctx, st, h, fps[stage])
        token = f"{os.environ.get('MASTER_PORT', '')}:{os.getppid()}" if size > 1 else None
        _write_run_info(run, recipe, hashes)
        run.update_stage(
            stage,
            status="running",
            hash=h,
            fingerprint=fps[stage].to_json(),
            units=ctx.unit_hashes(),
            started=_now(),
            config=_stage_config(recipe, stage),
            launch=token,
        )
    else:
        _wait_for_rank0(run, stage, h)
    t0 = time.time()
    log.info("stage %s: running%s", stage, f" (rank {rank} of {size})" if size > 1 else "")
    summary = cast("dict[str, Any] | None", row.entry()(ctx)) or {}
    dt = round(time.time() - t0, 1)
    if rank == 0:
        run.update_stage(stage, status="done", finished=_now(), seconds=dt, summary=summary)
    log.info("stage %s: done in %.0f s", stage, dt)
    return summary


def _prepare(ctx: StageContext[Any], st: StageStatus, h: str, fp: fingerprint.Fingerprint) -> None:
    """Clear (or, for a training stage, prune) a stage folder whose inputs changed, logging why."""
    stage, sdir = ctx.stage, ctx.run.stage_dir(ctx.stage)
    if not ctx.overwrite and not (st and st.get("hash") != h):
        if st.get("status") == "running":
            log.info("stage %s: resuming an interrupted run", stage)
        return
    why = "--overwrite" if ctx.overwrite else "; ".join(fingerprint.explain(st.get("fingerprint"), fp))
    if sdir.exists() and ctx.row.units is not None and not ctx.overwrite and st.get("units"):
        kept = _keep_units(ctx, st["units"])
        log.info(
            "stage %s: stale (%s); %s whose inputs did not change: %s",
            stage,
            why,
            ctx.row.units.kind + "s",
            ", ".join(kept) or "none",
        )
    elif sdir.exists():
        log.info("stage %s: stale (%s), starting from scratch", stage, why)
        shutil.rmtree(sdir)


def _keep_units(ctx: StageContext[Any], old: dict[str, str]) -> list[str]:
    """A stale stage made of units: keep the files of every unit whose hash did not change (a training variant
    added beside the RW model does not retrain it; an eval model added does not regenerate the others), delete
    the rest. A unit's files are its folder; a training stage's main model owns the rest of the stage folder."""
    units = ctx.row.units
    assert units is not None
    now = ctx.unit_hashes()
    kept = [u for u, h in now.items() if old.get(u) == h]
    folders = {unit_folder(u): u for u in {*old, *now} if u != MAIN}
    for entry in ctx.run.stage_dir(ctx.stage).iterdir():
        owner = folders.get(entry.name, MAIN if units.main else None)
        if owner in kept:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return kept


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


def _stage_config(recipe: Recipe, stage: str) -> Any:
    section = recipe.section(stage)
    return mask_secrets(section.model_dump(mode="json") if section is not None else None)


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
        if _launches(recipe, stage, overwrite, run):
            out[stage] = _launch_stage(recipe, stage, overwrite)
            run = RunDir(run.root)  # the launched ranks wrote the manifest
        else:
            out[stage] = run_stage(recipe, stage, overwrite=overwrite, run=run)
    return out


def _launches(recipe: Recipe, stage: str, overwrite: bool, run: RunDir) -> bool:
    """Whether ``saro run`` starts ``stage`` under ``accelerate launch``: a training stage of a recipe with a
    ``launch:`` section, not done yet, and this process is not itself a launched one."""
    from saro.train.launch import launched

    if recipe.launch is None or stage not in DISTRIBUTED_STAGES or launched():
        return False
    return overwrite or not run.is_done(stage, stage_hashes(recipe, stage)[stage])


def _launch_stage(recipe: Recipe, stage: str, overwrite: bool) -> dict[str, Any]:
    """Run a training stage under ``accelerate launch`` (the recipe's file and overrides, so every rank loads the
    same recipe), then check in the manifest that it finished with this recipe's hash; returns its summary."""
    from saro.train.launch import launch_stage

    if recipe.launch is None:
        raise SaroError(f"stage '{stage}': the recipe has no launch: section")
    launch_stage(stage, recipe.launch, recipe.path, recipe.overrides, overwrite)
    run = RunDir(recipe.resolved_run_dir())
    h = stage_hashes(recipe, stage)[stage]
    if not run.is_done(stage, h):
        raise SaroError(
            f"stage '{stage}': accelerate launch ended but the manifest does not show it done with this "
            f"recipe's hash ({run.status(stage).get('status', 'not started')})"
        )
    return run.status(stage).get("summary", {})


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, validate_training: bool = True
) -> Recipe:
    """Load a recipe (``saro.recipe.load_recipe``) and check its training sections against the TRL configs, so
    that bad training keys fail at load time, not hours later."""
    recipe = load_recipe_schema(path, overrides)
    if recipe.launch is not None and recipe.launch.config:
        from saro.train.launch import accelerate_config_file

        base = Path(recipe.path).parent if recipe.path else None
        accelerate_config_file(recipe.launch.config, base)  # a missing accelerate config fails at load time
    if validate_training:
        validate_training_sections(recipe)
    return recipe


def validate_training_sections(recipe: Recipe) -> None:
    """Build the TRL-based configs once per training section and variant; a bad key is a one-line SaroError."""
    if recipe.train_sft is None and recipe.train_dpo is None:
        return
    try:
        from saro.train.config import build_dpo_config, build_sft_config
    except ImportError:  # training extras missing: checked again when the stage runs
        return
    import tempfile

    sections: list[tuple[str, TrainingSection | None]] = [
        ("train_sft", recipe.train_sft),
        ("train_dpo", recipe.train_dpo),
    ]
    for name, section in sections:
        if section is None:
            continue
        for unit, sec in section.units(name):
            label = name if unit == MAIN else f"{name}.variants[{unit}]"
            build = build_sft_config if name == "train_sft" else build_dpo_config
            try:
                build(sec.trainer_settings(), output_dir=os.path.join(tempfile.gettempdir(), "saro-validate"))
            except SaroError as e:
                msg = str(e)
                raise SaroError(
                    msg if msg.startswith(label) else f"{label}: {msg.split(': ', 1)[-1]}"
                ) from None


def stage_status(recipe: Recipe, run: RunDir) -> list[tuple[str, str, list[str]]]:
    """(stage, state, reasons) per enabled stage: done / stale (with why) / missing / running (or interrupted)."""
    fps = fingerprint.fingerprints(recipe)
    out: list[tuple[str, str, list[str]]] = []
    for stage, fp in fps.items():
        st = run.status(stage)
        if not st:
            out.append((stage, "missing", []))
            continue
        why = fingerprint.explain(st.get("fingerprint"), fp) if st.get("hash") != fp.hash else []
        if not st.get("fingerprint"):
            why = [fingerprint.OLDER_SARO]
        state = "stale" if why else "done" if st.get("status") == "done" else "running"
        out.append((stage, state, why if why else ["running or interrupted"] if state == "running" else []))
    return out


def unit_status(recipe: Recipe, run: RunDir, stage: str) -> list[tuple[str, str]]:
    """(unit, state) of a stage's units (training variants, eval models): "done" in a stage done with the current
    recipe; else "kept" (its hash did not change: its work is kept when the stage reruns), "changed" or "new"."""
    if table.get(stage).units is None:
        return []
    st = run.status(stage)
    hashes = stage_hashes(recipe, stage)
    now = StageContext(recipe, run, stage, hashes=hashes).unit_hashes()
    if run.is_done(stage, hashes[stage]):
        return [(u, "done") for u in now]
    old = st.get("units") or {}
    return [(u, "new" if u not in old else "kept" if old[u] == h else "changed") for u, h in now.items()]


def recipe_of_run(root: str | Path) -> Recipe:
    """The recipe a run folder was made with (its manifest's resolved config)."""
    from saro.recipe import validate_recipe

    m = Path(root) / "manifest.json"
    if not m.is_file():
        raise SaroError(f"{root}: not a saro run folder (no manifest.json)")
    manifest = read_json(m)
    recipe = validate_recipe(manifest.get("config") or {}, where=str(m))
    recipe.path = manifest.get("recipe_path")
    recipe.run_dir = str(root)
    return recipe
