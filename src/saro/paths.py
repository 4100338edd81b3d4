"""Where saro keeps its caches and finds the packaged asset files (read as files, never imported)."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import cast

from saro.errors import SaroError


def cache_dir() -> Path:
    """Cache root: $SARO_CACHE, else ~/.cache/saro."""
    root = os.environ.get("SARO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "saro")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def package_file(dist: str, rel: str) -> Path:
    """A data file shipped inside an installed distribution (installed with --no-deps, never imported)."""
    try:
        # locate_file is typed as returning the SimplePath protocol; for installed distributions it is a Path.
        p = Path(cast("os.PathLike[str]", distribution(dist).locate_file(rel)))
    except PackageNotFoundError:
        raise SaroError(
            f"package '{dist}' is not installed; run `make setup` (it installs the asset packages with --no-deps)"
        ) from None
    if not p.exists():
        raise SaroError(f"{rel} not found in package '{dist}' ({p})")
    return p


ASSETS = Path(__file__).resolve().parent / "assets"


def package_asset(*parts: str) -> Path:
    """A file shipped in saro's own ``assets/`` folder (training chat templates, the embedded tokenizer)."""
    p = ASSETS.joinpath(*parts)
    if not p.is_file():
        raise SaroError(f"{p}: a packaged asset is missing (a broken install: reinstall saro)")
    return p
