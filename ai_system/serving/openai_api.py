"""The OpenAI API as far as this server speaks it: request schemas and the response and SSE shapes.

Enough for the official ``openai`` SDK and benchmark clients (AIPerf, GuideLLM) to work unmodified:
``/v1/completions`` and ``/v1/chat/completions`` with ``stream`` and ``stream_options.include_usage``,
``usage`` counts, and ``/v1/models``. Fields this server cannot honour are refused with a 400 that
names them when set to anything but their neutral value (``n`` other than 1, ``stop``, ``logprobs``,
``tools``, penalties, ...): answering as if they had been applied would be silently wrong. Fields
that change nothing here (``user``, ``metadata``, ``store``, ...) are ignored.

Differences from OpenAI, by design: ``temperature`` defaults to 0 (greedy, reproducible); a chat's
default ``max_tokens`` is what is left of the model's context; ``ignore_eos`` (as vLLM offers it)
lets benchmarks fix the output length.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ai_system.serving.chat_template import format_chat

DEFAULT_COMPLETION_TOKENS = 16


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False


UNSUPPORTED_FIELDS: dict[str, tuple[object, ...]] = {
    "n": (1,), "best_of": (1,), "echo": (False,), "suffix": ("",), "stop": ("", []), "logprobs": (False, 0),
    "top_logprobs": (0,), "logit_bias": ({},), "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0),
    "tools": ([],), "functions": ([],), "response_format": ({"type": "text"},),
}


class _GenerationRequest(_Strict):
    """What both endpoints share: sampling, streaming, the model name. Other fields are kept in
    ``model_extra`` so that ``unsupported`` can refuse the ones this server cannot honour."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    model: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    def unsupported(self) -> tuple[str, str] | None:
        """The first field set to a value this server cannot apply, and why, if any."""
        for name, neutral in UNSUPPORTED_FIELDS.items():
            value = (self.model_extra or {}).get(name)
            if value is not None and not any(value == v and type(value) is type(v) for v in neutral):
                allowed = " or ".join(json.dumps(v) for v in neutral)
                return name, (f"{name}={json.dumps(value)[:80]} is not supported by this server "
                              f"(leave it out, or send {allowed})")
        return None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_GenerationRequest):
    prompt: str
    max_tokens: int | None = None

    @property
    def output_budget(self) -> int:
        return self.max_tokens if self.max_tokens is not None else DEFAULT_COMPLETION_TOKENS


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None

    @property
    def prompt(self) -> str:
        return format_chat([(message.role, message.text) for message in self.messages])

    @property
    def output_budget(self) -> int | None:
        """``max_completion_tokens`` (OpenAI's current name) or else ``max_tokens``; None: the rest of the context."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class ResponseFormat:
    """How one endpoint's answers look, whole and streamed (OpenAI's ``text_completion`` shapes).

    A streamed token event is ``head + json.dumps(text) + tail``, pre-split once per request, so a
    token costs one small ``json.dumps``; ``choices`` comes last in every chunk.
    """

    object_name = "text_completion"
    chunk_object_name = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, request_id: int, model: str) -> None:
        self.id = f"{self.id_prefix}-{request_id}"
        self.model = model
        self.created = int(time.time())
        head, tail = json.dumps(self.chunk("\0", None)).split('"\\u0000"')
        self.token_head, self.token_tail = "data: " + head, tail + "\n\n"

    def _envelope(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}

    def chunk_choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return self.choice(text, finish_reason)

    def whole(self, text: str, finish_reason: str, counts: dict[str, int]) -> dict[str, Any]:
        return {**self._envelope(self.object_name), "usage": counts, "choices": [self.choice(text, finish_reason)]}

    def chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {**self._envelope(self.chunk_object_name), "choices": [self.chunk_choice(text, finish_reason)]}

    def opening(self) -> str:
        """Events sent before the first token."""
        return ""

    def token_event(self, text: str) -> str:
        return f"{self.token_head}{json.dumps(text)}{self.token_tail}"

    def closing(self, text: str, finish_reason: str, counts: dict[str, int] | None) -> str:
        """The last chunk (what the stream decoder still held, the finish reason), usage if asked, ``[DONE]``."""
        events = sse(self.chunk(text, finish_reason))
        if counts is not None:
            events += sse({**self._envelope(self.chunk_object_name), "usage": counts, "choices": []})
        return events + sse("[DONE]")


class ChatResponseFormat(ResponseFormat):
    """OpenAI's ``chat.completion`` and ``chat.completion.chunk`` shapes; the first chunk names the role."""

    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish_reason}

    def chunk_choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}

    def opening(self) -> str:
        first = self.chunk("", None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return sse(first)


def models_list(model: str, created: int, max_context: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, created, max_context)]}


def model_card(model: str, created: int, max_context: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "ai-system",
            "max_model_len": max_context}
