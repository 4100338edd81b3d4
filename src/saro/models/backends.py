"""A typed factory from a recipe ``BackendSpec`` to a generation backend.

The stage resolves what the spec refers to (a model folder for ``@train_sft``, the request cache folder, the
dtype) and passes it explicitly, so the model layer never reaches into a stage context.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saro.errors import SaroError
from saro.models.generate import Generator, make_generator

if TYPE_CHECKING:
    from collections.abc import Callable

    from saro.recipe import BackendSpec

log = logging.getLogger(__name__)

LOCAL_BACKENDS = ("hf", "ct2", "vllm")  # backends that load a model folder in this process


def backend_arguments(
    spec: BackendSpec,
    *,
    model_path: str | None = None,
    dtype: str = "auto",
    cache_dir: Path | None = None,
    validate: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """The keyword arguments ``make_generator`` gets for ``spec`` (``model_path``: the resolved local model)."""
    kw: dict[str, Any] = {"backend": spec.backend}
    if spec.backend in LOCAL_BACKENDS and not model_path:
        raise SaroError(f"a {spec.backend} backend needs a model (set `model:` in the recipe)")
    if spec.backend == "hf":
        kw.update(model=model_path, batch_size=spec.batch_size, dtype=dtype)
    elif spec.backend == "ct2":
        kw.update(model=model_path, batch_size=spec.batch_size, compute_type=spec.compute_type)
    elif spec.backend == "vllm":
        kw.update(
            model=model_path,
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
        )
    elif spec.backend == "openai":
        if not spec.model:
            raise SaroError("an openai backend needs `model:` (the served model name)")
        kw.update(
            base_url=spec.base_url,
            model=spec.model,
            api_key_env=spec.api_key_env,
            concurrency=spec.concurrency,
            timeout=spec.timeout,
            max_retries=spec.max_retries,
            malformed_retries=spec.malformed_retries,
            cache_dir=str(cache_dir) if spec.cache and cache_dir is not None else None,
        )
        if validate is not None:
            kw["validate"] = validate
    elif spec.backend == "openai_batch":
        if not spec.model or cache_dir is None:
            raise SaroError("an openai_batch backend needs `model:` and a stage folder for its batch state")
        kw.update(
            base_url=spec.base_url,
            model=spec.model,
            api_key_env=spec.api_key_env,
            timeout=spec.timeout,
            max_retries=spec.max_retries,
            state_dir=str(cache_dir / "openai_batch"),
        )
        if validate is not None:
            kw["validate"] = validate
    return kw


def make_backend(
    spec: BackendSpec,
    *,
    model_path: str | None = None,
    dtype: str = "auto",
    cache_dir: Path | None = None,
    validate: Callable[[str], str | None] | None = None,
) -> Generator:
    """A generator for ``spec``; ``offline`` is not a generation backend (a SaroError says so)."""
    if spec.backend == "offline":
        raise SaroError("the offline teacher composes text itself; it is not a generation backend")
    kw = backend_arguments(spec, model_path=model_path, dtype=dtype, cache_dir=cache_dir, validate=validate)
    return make_generator(**kw)


SERVE_BACKENDS = ("hf", "ct2")  # engines that run a model in this process, for saro serve and saro chat


def local_generator(
    source: str, backend: str = "hf", batch_size: int = 8, dtype: str = "auto", compute_type: str = "float32"
) -> Generator:
    """A generator that runs ``source`` (a folder, "embedded", a hub id) in this process: ``hf``
    (transformers, ``dtype``) or ``ct2`` (CTranslate2, ``compute_type``)."""
    if backend not in SERVE_BACKENDS:
        raise SaroError(
            f"unknown generation backend '{backend}' here (choose one of: {', '.join(SERVE_BACKENDS)})"
        )
    if backend == "ct2":
        return make_generator("ct2", model=source, batch_size=batch_size, compute_type=compute_type)
    return make_generator("hf", model=source, batch_size=batch_size, dtype=dtype)
