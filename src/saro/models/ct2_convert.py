"""The CTranslate2 conversion cache: a transformers model folder converted once per (weights, converter) pair.

An entry lives under ``<saro cache>/ct2/<key>/``. The key is a SHA-256 over the converter (ctranslate2's version
and ``CONVERTER_VERSION``), the weight quantization, and the name and SHA-256 of every file of the folder that
the conversion reads (weights, config, generation config, tokenizer files): two folders with the same bytes share
an entry, a changed file gives a new one, so an entry is never stale and never shared between different weights.

An entry is built in a temporary folder beside it and renamed into place, with a marker (``saro-ct2.json``) that
lists every file of the entry with its size and SHA-256. A folder without a valid marker, or whose files do not
match it, is rebuilt, never used. A file lock per key makes concurrent callers wait for one conversion. File
digests are remembered by (path, size, mtime, ctime, inode), so an unchanged file is hashed once, not at every load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock

from saro.errors import SaroError
from saro.paths import cache_dir
from saro.records import atomic_write_text, stable_id

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when what saro asks the converter to write changes
MARKER = "saro-ct2.json"
QUANTIZATIONS = ("float32", "int8")
# Files of a transformers folder that the conversion reads (besides the weights): the vocabulary comes from the
# tokenizer, the end token and the architecture from the configs.
READ_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def ct2_root() -> Path:
    """The folder that holds the converted models."""
    return cache_dir() / "ct2"


def source_files(folder: Path) -> list[Path]:
    """The files of a model folder that a conversion depends on, sorted by name."""
    weights = [
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name.endswith(".index.json"))
    ]
    if not any(p.suffix in WEIGHT_SUFFIXES for p in weights):
        raise SaroError(f"{folder}: no model weights (*.safetensors or *.bin) to convert for ct2")
    return sorted(weights + [folder / n for n in READ_FILES if (folder / n).is_file()], key=lambda p: p.name)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, remembered by (path, size, mtime, ctime, inode): any change to the file changes its
    ctime, so a remembered digest is only reused for the very same bytes."""
    from saro import fingerprint

    st = path.stat()
    stamp = [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    memo = ct2_root() / "digests" / f"{stable_id(stamp[0])}.json"
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if saved.get("stamp") == stamp:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    digest = fingerprint.file_digest(path)
    atomic_write_text(memo, json.dumps({"stamp": stamp, "sha256": digest}) + "\n")
    return digest


def cache_key(folder: Path, quantization: str) -> str:
    """The key of ``folder``'s conversion: converter versions, quantization, and every read file's digest."""
    import ctranslate2

    parts: list[Any] = [ctranslate2.__version__, CONVERTER_VERSION, quantization]
    parts += [(p.name, file_digest(p)) for p in source_files(folder)]
    return stable_id(*parts, n=32)


def entry_is_valid(entry: Path, key: str) -> bool:
    """Whether ``entry`` is a complete conversion for ``key``: its marker names the key and every file listed
    there exists with the recorded size and digest (and nothing the converter writes is missing)."""
    try:
        marker = json.loads((entry / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        if marker.get("key") != key or not {"model.bin", "config.json"} <= set(files):
            return False
        for name, (size, digest) in files.items():
            p = entry / name
            if p.stat().st_size != size or file_digest(p) != digest:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def converted_model(source: str | Path, quantization: str = "float32") -> Path:
    """The CTranslate2 folder for the transformers model folder ``source``, converted on first use.

    Raises SaroError (one line, exit 2) for a folder the converter cannot read: an architecture CTranslate2 does
    not support, missing weights, or an unknown quantization.
    """
    if quantization not in QUANTIZATIONS:
        raise SaroError(f"ct2: unknown weight quantization '{quantization}' ({', '.join(QUANTIZATIONS)})")
    folder = Path(source)
    if not (folder / "config.json").is_file():
        raise SaroError(f"{folder}: not a model folder (no config.json)")
    _check_architecture(folder)
    root = ct2_root()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(folder, quantization)
    entry = root / key
    with FileLock(str(root / f".{key}.lock")):
        if entry_is_valid(entry, key):
            return entry
        if entry.exists() or entry.is_symlink():
            log.warning("ct2 cache entry %s is incomplete or corrupt: converting again", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        _build(folder, entry, key, quantization)
    return entry


def _build(folder: Path, entry: Path, key: str, quantization: str) -> None:
    """Convert ``folder`` into a temporary folder beside ``entry``, write the marker, rename it into place."""
    for stale in entry.parent.glob(f".tmp-{key}-*"):  # left by a killed conversion (we hold the key's lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=entry.parent))
    out = tmp / "model"
    log.info("converting %s for CTranslate2 (%s, once per weights) into %s", folder, quantization, entry)
    try:
        _convert(folder, out, quantization)
        files = {p.name: [p.stat().st_size, file_digest(p)] for p in sorted(out.iterdir()) if p.is_file()}
        marker = {"key": key, "source": str(folder), "quantization": quantization, "files": files}
        (out / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        for p in [*out.iterdir(), out]:  # on disk before the rename makes the entry visible
            _fsync(p)
        out.rename(entry)
        _fsync(entry.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(folder: Path, out: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter

    try:
        TransformersConverter(str(folder)).convert(
            str(out), quantization=None if quantization == "float32" else quantization, force=True
        )
    except (ValueError, NotImplementedError) as e:
        if "No conversion is registered" in str(e) or isinstance(e, NotImplementedError):
            raise SaroError(
                f"{folder}: CTranslate2 cannot convert this model (architecture {_architecture(folder)}); "
                "use backend: hf"
            ) from None
        raise _conversion_failed(folder, e) from None
    # the converter reads a user's folder: a truncated weights file raises SafetensorError (an Exception)
    except Exception as e:
        log.debug("conversion of %s failed", folder, exc_info=True)
        raise _conversion_failed(folder, e) from None


def _conversion_failed(folder: Path, e: Exception) -> SaroError:
    """One line for a folder the converter has a loader for but fails on (a truncated weights file, mismatched
    tensors): the converter's own message, first line only (-v logs the traceback)."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return SaroError(
        f"{folder}: CTranslate2 could not convert this model (architecture {_architecture(folder)}: "
        f"{type(e).__name__}: {first}); use backend: hf"
    )


def _check_architecture(folder: Path) -> None:
    """Fail fast (before hashing the weights) on a configuration the converter has no loader for; the
    converter's own error stays the authority for anything this does not catch."""
    from ctranslate2.converters import transformers as converters
    from transformers import AutoConfig

    loaders = getattr(converters, "_MODEL_LOADERS", None)
    try:
        name = type(AutoConfig.from_pretrained(str(folder))).__name__
    except (OSError, ValueError, KeyError) as e:
        raise SaroError(f"{folder}: cannot read its config.json ({str(e).splitlines()[0]})") from None
    if isinstance(loaders, dict) and name not in loaders:
        raise SaroError(
            f"{folder}: CTranslate2 cannot convert this model (architecture {_architecture(folder)}); "
            "use backend: hf"
        )


def _architecture(folder: Path) -> str:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    arch = (cfg.get("architectures") or [None])[0]
    return f"{arch or '?'}, model_type {cfg.get('model_type', '?')}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
