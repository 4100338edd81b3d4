"""Running the app: ``serve`` (the ``saro serve`` command, in the foreground) and a background server thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import uvicorn

from saro.serve.app import create_app
from saro.serve.schema import API_KEY_ENV, DEFAULT_MAX_TOKENS

log = logging.getLogger(__name__)


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    hide_reasoning: bool = False,
    reasoning_budget: int | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 50.0,
    max_prompt_tokens: int | None = None,
    model_name: str | None = None,
    dtype: str = "auto",
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_dir: str | None = None,
    backend: str = "hf",
    compute_type: str = "float32",
) -> None:
    """Load ``model`` (folder, "embedded" or hub id) and serve it until interrupted (``saro serve``)."""
    if not logging.getLogger("saro").handlers:
        from saro.console import setup_logging

        setup_logging()
    key = (api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")).strip() or None
    if host not in ("127.0.0.1", "localhost", "::1") and not key:
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use the model", host
        )
    app = create_app(
        model,
        model_name=model_name,
        api_key=key or "",
        hide_reasoning=hide_reasoning,
        reasoning_budget=reasoning_budget,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_prompt_tokens=max_prompt_tokens,
        default_max_tokens=default_max_tokens,
        dtype=dtype,
        batch_dir=batch_dir,
        backend=backend,
        compute_type=compute_type,
    )
    name = app.state.settings.model_name
    log.info("OpenAI-compatible API at http://%s:%d/v1 (model name '%s')", host, port, name)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    app.state.engine.generator.close()


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a daemon thread on a loopback port (tests, benchmarks, local chat).

    The socket is bound before the thread starts (port 0 picks a free one), so ``url`` is valid at once.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        """The API base URL (ends in ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
