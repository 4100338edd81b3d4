"""The ``openai_batch`` teacher backend: the OpenAI Batch API, about half the price of synchronous requests.

One round writes the pending requests as JSONL (one ``custom_id`` per conversation sample), uploads it with purpose
``batch``, creates a batch on ``/v1/chat/completions`` with a 24h completion window, polls it with backoff and
downloads the output and error files. Before waiting, the batch id and the request hashes are saved in
``state_dir``, so a killed process polls the same batch on restart instead of paying for a second one; answers are
appended to ``state_dir/batch_results.jsonl`` keyed by request hash. Failed items (error file, non-200 response,
malformed line, a ``failed``/``expired`` batch, an answer ``validate`` rejects) go into a new batch, at most
``max_rounds`` rounds; what is left is returned with status "error" (or "rejected") and the reason.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.models.cache import request_key
from saro.models.generate import (
    Conversation,
    Generation,
    Generator,
    GenStatus,
    SamplingParams,
    register_backend,
)

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")
STATE = "batch_state.json"
RESULTS = "batch_results.jsonl"


class OpenAIBatchGenerator(Generator):
    """Chat completions through the OpenAI Batch API, resumable by batch id across a killed process."""

    name = "openai_batch"

    def __init__(
        self,
        model: str,
        base_url: str = "",
        state_dir: str | Path | None = None,
        api_key_env: str | None = None,
        poll_interval: float = 10.0,
        poll_max: float = 300.0,
        max_rounds: int = 3,
        max_retries: int = 5,
        timeout: float = 120.0,
        validate: Callable[[str], str | None] | None = None,
        label: str | None = None,
        **_: Any,
    ) -> None:
        if not model or not base_url.startswith(("http://", "https://")):
            raise SaroError(f"openai_batch backend: needs a model and an http(s) base_url, got {base_url!r}")
        if state_dir is None:
            raise SaroError("openai_batch backend: needs state_dir (the stage folder keeps the batch id)")
        if max_rounds < 1 or poll_interval <= 0:
            raise SaroError("openai_batch backend: max_rounds >= 1 and poll_interval > 0")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.state_dir = Path(state_dir)
        self.headers = {"User-Agent": "saro"}
        if api_key_env is not None:
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                raise SaroError(f"environment variable {api_key_env} is not set; it must hold the API key")
            self.headers["Authorization"] = f"Bearer {key}"
        self.poll_interval, self.poll_max = poll_interval, poll_max
        self.max_rounds, self.max_retries, self.timeout = max_rounds, max_retries, timeout
        self.validate = validate
        self.label = label or model
        self.stats: dict[str, int] = {"batches": 0, "polls": 0, "failed_items": 0, "malformed_lines": 0}

    # --------------------------------------------------------------------------------------------- HTTP

    def _http(self, method: str, path: str, **kw: Any) -> Any:
        """One API call, retried with backoff on 429/5xx/connection errors; another 4xx is a SaroError."""
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                resp = httpx.request(
                    method, self.base_url + path, headers=self.headers, timeout=self.timeout, **kw
                )
            except httpx.TransportError as e:
                reason = type(e).__name__
            else:
                if resp.status_code < 300:
                    return resp
                if resp.status_code != 429 and resp.status_code < 500:
                    raise SaroError(f"openai_batch: {method} {path} -> HTTP {resp.status_code}")
                reason = f"HTTP {resp.status_code}"
            log.warning("openai_batch: %s %s failed (%s), attempt %d", method, path, reason, attempt + 1)
            time.sleep(min(self.poll_max, 0.05 * 2**attempt))
        raise SaroError(
            f"openai_batch: {method} {path} kept failing ({reason}) after {self.max_retries} retries"
        )

    def _submit(self, requests: list[dict[str, Any]]) -> str:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
        up = self._http("POST", "/files", data={"purpose": "batch"}, files={"file": ("batch.jsonl", lines)})
        body = {"input_file_id": up.json()["id"], "endpoint": ENDPOINT, "completion_window": "24h"}
        batch = self._http("POST", "/batches", json=body).json()
        self.stats["batches"] += 1
        return str(batch["id"])

    def _wait(self, batch_id: str) -> dict[str, Any]:
        delay = self.poll_interval
        while True:
            batch = self._http("GET", f"/batches/{batch_id}").json()
            self.stats["polls"] += 1
            if batch.get("status") in DONE:
                return batch
            time.sleep(delay)
            delay = min(self.poll_max, delay * 1.5)

    def _lines(self, file_id: str | None) -> list[str]:
        if not file_id:
            return []
        return self._http("GET", f"/files/{file_id}/content").text.splitlines()

    # --------------------------------------------------------------------------------------------- state

    def _load_results(self) -> dict[str, dict[str, Any]]:
        path = self.state_dir / RESULTS
        out: dict[str, dict[str, Any]] = {}
        if path.exists():
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    row = json.loads(line)
                    out[row["hash"]] = row
                except (ValueError, KeyError, TypeError):  # a line cut by a kill: asked again
                    log.warning("%s line %d: unreadable, that request is asked again", path, n)
        return out

    def _save_state(self, state: dict[str, Any] | None) -> None:
        path = self.state_dir / STATE
        if state is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)

    # --------------------------------------------------------------------------------------------- rounds

    def _requests(self, convs: Sequence[Conversation], params: SamplingParams) -> dict[str, dict[str, Any]]:
        """Request hash -> batch request line, for every (conversation, sample)."""
        out: dict[str, dict[str, Any]] = {}
        for i, conv in enumerate(convs):
            for k in range(params.n):
                body: dict[str, Any] = {
                    "model": self.model,
                    "messages": [dict(m) for m in conv],
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "max_tokens": params.max_new_tokens,
                    "seed": params.seed + k,
                }
                h = request_key(self.model, body["messages"], {**body, "messages": None}, k, "batch")
                out[h] = {"custom_id": h, "method": "POST", "url": ENDPOINT, "body": body, "index": (i, k)}
        return out

    def _collect(
        self, batch: dict[str, Any], hashes: set[str]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Answers (rows for the results file) and failures (hash -> reason) of a finished batch."""
        rows: list[dict[str, Any]] = []
        failed = {h: f"batch {batch.get('status')}" for h in hashes}
        for line in self._lines(batch.get("output_file_id")) + self._lines(batch.get("error_file_id")):
            try:
                item = json.loads(line)
                h = item["custom_id"]
                resp = item.get("response") or {}
                if item.get("error") or resp.get("status_code") != 200:
                    err = (
                        item.get("error") or (resp.get("body") or {}).get("error") or resp.get("status_code")
                    )
                    failed[h] = f"batch item error: {str(err)[:200]}"
                    continue
                choice = resp["body"]["choices"][0]
                text = _text(choice["message"])
            except (ValueError, KeyError, IndexError, TypeError):
                self.stats["malformed_lines"] += 1
                log.warning("openai_batch: malformed line in the results of batch %s", batch.get("id"))
                continue
            if h not in hashes:
                continue
            problem = self.validate(text) if self.validate is not None else None
            if problem:
                failed[h] = f"rejected: {problem}"
                continue
            tokens = int((resp["body"].get("usage") or {}).get("completion_tokens", 0))
            rows.append(
                {"hash": h, "text": text, "finished": choice.get("finish_reason") == "stop", "tokens": tokens}
            )
            failed.pop(h, None)
        return rows, failed

    def _round(self, pending: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        state = self._load_state()
        if state is not None:
            log.info("openai_batch: resuming batch %s (%d requests)", state["batch_id"], len(state["hashes"]))
        else:
            reqs = [{k: v for k, v in r.items() if k != "index"} for r in pending.values()]
            state = {"batch_id": self._submit(reqs), "hashes": sorted(pending)}
            self._save_state(state)  # before waiting: a killed process polls this batch again
            log.info("openai_batch: submitted batch %s (%d requests)", state["batch_id"], len(reqs))
        batch = self._wait(state["batch_id"])
        rows, failed = self._collect(batch, set(state["hashes"]))
        with open(self.state_dir / RESULTS, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._save_state(None)
        self.stats["failed_items"] += len(failed)
        return rows, failed

    def _load_state(self) -> dict[str, Any] | None:
        path = self.state_dir / STATE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(state.get("batch_id"), str) and isinstance(state.get("hashes"), list):
                return state
        except ValueError:
            pass
        raise SaroError(f"{path}: unreadable batch state; delete it to submit a new batch")

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        """All conversations in one chunk, once the batch rounds are over (a batch has no partial results)."""
        if not conversations:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        reqs = self._requests(conversations, params)
        failed: dict[str, str] = {}
        for _ in range(self.max_rounds):
            done = self._load_results()
            pending = {h: r for h, r in reqs.items() if h not in done}
            if not pending and self._load_state() is None:
                break
            _, failed = self._round(pending)
        done = self._load_results()
        out: list[list[Generation]] = [[] for _ in conversations]
        for h, r in reqs.items():
            i, _k = r["index"]
            if h in done:
                row = done[h]
                out[i].append(Generation(row["text"], bool(row["finished"]), int(row["tokens"])))
            else:
                reason = failed.get(h, "not answered")
                status: GenStatus = "rejected" if reason.startswith("rejected") else "error"
                out[i].append(Generation("", False, 0, status=status, error=reason))
        log.info("%s: %d requests, %s", self.label, len(reqs), self.stats)
        yield list(range(len(conversations))), out


def _text(message: dict[str, Any]) -> str:
    """The answer text, with a separate reasoning field folded back into a ``<think>`` block."""
    from saro.models.openai_backend import join_reasoning

    reasoning = message.get("reasoning") or message.get("reasoning_content")
    return join_reasoning(message.get("content"), reasoning)


@register_backend("openai_batch")
def _openai_batch(model: str, base_url: str = "", **kw: Any) -> Generator:
    return OpenAIBatchGenerator(model=model, base_url=base_url, **kw)
