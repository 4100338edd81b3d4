"""What the server accepts and answers: request models, the OpenAI error body, and the server settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

API_KEY_ENV = "SARO_API_KEY"
DEFAULT_MAX_TOKENS = 1024  # when a request gives neither max_tokens nor max_completion_tokens
MAX_N = 16
MAX_STOP = 4
MAX_LOGPROBS = 20  # top-k alternatives per token in /v1/completions (OpenAI allows at most 5; vLLM 20)


class ApiError(Exception):
    """An error answered with an OpenAI-style body ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        """The OpenAI error object (also sent as a server-sent event when a stream fails)."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


@dataclass
class Settings:
    """The server-wide settings every request is checked against."""

    model_name: str
    api_key: str | None
    hide_reasoning: bool
    reasoning_budget: int | None
    max_prompt_tokens: int | None
    context_length: int | None
    default_max_tokens: int


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of a chat request (text only; a list of text parts is joined)."""

    model_config = ConfigDict(extra="allow")  # e.g. reasoning or name on earlier turns: ignored
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` that the server reads; other fields are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    include_reasoning: bool | None = None  # saro / vLLM extension (extra_body)
    reasoning_budget: int | None = Field(None, ge=1)  # saro extension (extra_body)
    tools: list[Any] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(BaseModel):
    """The fields of the legacy ``POST /v1/completions`` that the server reads; other fields are ignored.

    ``prompt`` is a string, a list of strings, a list of token ids or a list of token-id lists (what lm-eval's
    ``local-completions`` sends). ``logprobs`` is the number of top alternatives per token; ``echo`` returns the
    prompt's tokens (and their logprobs) before the completion.
    """

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)


def validation_error(e: ValidationError) -> ApiError:
    """The first validation problem as a 400 naming the field (``messages.0.role``)."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    return ApiError(
        400, f"{loc}: {err.get('msg', 'invalid value')}" if loc else str(err.get("msg")), loc or None
    )


def parse_stops(stop: str | list[str] | None) -> list[str]:
    """The request's stop sequences as a list (at most ``MAX_STOP``, none empty)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP:
        raise ApiError(400, f"stop: at most {MAX_STOP} sequences", "stop")
    if any(not s for s in stops):
        raise ApiError(400, "stop: sequences must not be empty", "stop")
    return stops


def check_model(requested: str, settings: Settings) -> None:
    """404 unless the request names the served model."""
    if requested != settings.model_name:
        raise ApiError(
            404,
            f"the model '{requested}' does not exist (this server has '{settings.model_name}')",
            "model",
            "model_not_found",
        )
