"""The sandbox gateway's fake upstreams: a KServe Hugging Face model server and a managed provider, with the
deterministic token counts both report.

Token counts (`predict_usage` is the formula; both fakes use it):

- chat/completions: input = for every message, MESSAGE_OVERHEAD_TOKENS (4) + the whitespace-separated words of
  its text (a string `content`, or the `text` of every `{"type": "text"}` part of a list `content`).
- completions and embeddings: input = the whitespace-separated words of `prompt` / `input` (a string or a list of
  strings), or the number of token ids when given token arrays.
- cached input (chat only): the tokens of the longest proper prefix of `messages` (at least one message, never
  the last) that the same upstream host served before, as vLLM's prefix cache would; a repeated request, or a
  conversation that continues an earlier one, is therefore partly cached. Cache creation tokens are 0 (OpenAI
  style servers do not report them).
- output = `max_completion_tokens`, else `max_tokens`, else DEFAULT_MAX_TOKENS (16), for chat and completions;
  embeddings have no output tokens. Reasoning tokens are 0. total = input + output.

The reply text is made of exactly `output` words, one token each. The response `model` is the model name the
upstream received (after the route's modelNameOverride).
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
OPERATIONS = (CHAT, COMPLETIONS, EMBEDDINGS)
MESSAGE_OVERHEAD_TOKENS = 4
DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIMENSIONS = 8
WORDS_PER_CHUNK = 4
_REPLY_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _content_words(content: object) -> int:
    if isinstance(content, str):
        return _words(content)
    if isinstance(content, list):
        return sum(
            _words(part.get("text")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return 0


def _message_tokens(messages: list[Any]) -> int:
    return sum(
        MESSAGE_OVERHEAD_TOKENS + _content_words(message.get("content") if isinstance(message, dict) else None)
        for message in messages
    )


def _prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, str):
        return _words(prompt)
    if isinstance(prompt, list):
        total = 0
        for item in prompt:
            if isinstance(item, str):
                total += _words(item)
            elif isinstance(item, int):
                total += 1
            elif isinstance(item, list):
                total += len(item)
        return total
    return 0


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


def prefix_hashes(messages: list[Any]) -> list[str]:
    """Hash of every prefix messages[:1] .. messages[:n], as the prefix cache remembers them."""
    hashes = []
    digest = hashlib.sha256()
    for message in messages:
        digest.update(json.dumps(message, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\x00")
        hashes.append(digest.copy().hexdigest())
    return hashes


def output_tokens(body: Mapping[str, Any], operation: str) -> int:
    if operation == EMBEDDINGS:
        return 0
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return DEFAULT_MAX_TOKENS


def usage_for(body: Mapping[str, Any], operation: str, seen_prefixes: frozenset[str] | set[str]) -> dict[str, int]:
    """The usage an upstream reports for `body`, given the prefix hashes it has already served."""
    if operation == CHAT:
        messages = _messages(body)
        input_tokens = _message_tokens(messages)
        cached = 0
        hashes = prefix_hashes(messages)
        for length in range(len(messages) - 1, 0, -1):
            if hashes[length - 1] in seen_prefixes:
                cached = _message_tokens(messages[:length])
                break
    else:
        input_tokens = _prompt_tokens(body.get("prompt" if operation == COMPLETIONS else "input"))
        cached = 0
    output = output_tokens(body, operation)
    return {
        "input_tokens": input_tokens,
        "cached_input_tokens": cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": output,
        "reasoning_tokens": 0,
        "total_tokens": input_tokens + output,
    }


def predict_usage(
    body: Mapping[str, Any], *, operation: str = CHAT, history: Iterable[Mapping[str, Any]] = ()
) -> dict[str, int]:
    """The token counts the sandbox upstream reports for `body` (see the module docstring), after the earlier
    request bodies in `history` were served by the same upstream host. Pure: tests call it to know what to expect."""
    seen: set[str] = set()
    for earlier in history:
        seen.update(prefix_hashes(_messages(earlier)))
    return usage_for(body, operation, seen)


def openai_usage(usage: Mapping[str, int], operation: str) -> dict[str, Any]:
    """The usage object in OpenAI's wire format (what the AI Gateway's OpenAI translator reads)."""
    if operation == EMBEDDINGS:
        return {"prompt_tokens": usage["input_tokens"], "total_tokens": usage["total_tokens"]}
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": usage["cached_input_tokens"]},
        "completion_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
    }


def reply_words(count: int) -> list[str]:
    return [_REPLY_WORDS[index % len(_REPLY_WORDS)] for index in range(count)]


def _embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((byte - 128) / 128, 6) for byte in digest[:EMBEDDING_DIMENSIONS]]


# ---------------------------------------------------------------------------------------------- responses


@dataclass
class UpstreamResponse:
    """What an upstream answered: a whole body, or SSE `chunks` for a streamed one."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: list[bytes] | None = None


@dataclass(frozen=True)
class UpstreamCall:
    """One request the gateway sent upstream (tests read these to see what a model server or provider got)."""

    host: str
    port: int
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int


def _json_response(status: int, payload: Any) -> UpstreamResponse:
    # FastAPI (the KServe server) and the providers answer compact JSON.
    return UpstreamResponse(
        status, {"content-type": "application/json"}, json.dumps(payload, separators=(",", ":")).encode()
    )


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _completion(
    body: Mapping[str, Any], operation: str, model: str, usage: dict[str, int], created: int
) -> UpstreamResponse:
    if operation == EMBEDDINGS:
        raw = body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        data = [
            {"object": "embedding", "index": index, "embedding": _embedding(json.dumps(item))}
            for index, item in enumerate(inputs)
        ]
        return _json_response(
            200, {"object": "list", "data": data, "model": model, "usage": openai_usage(usage, operation)}
        )
    words = reply_words(usage["output_tokens"])
    finish = "length" if any(key in body for key in ("max_completion_tokens", "max_tokens")) else "stop"
    stream = body.get("stream") is True
    include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage") is True
    if operation == CHAT:
        ident, kind = f"chatcmpl-{uuid.uuid4().hex[:24]}", "chat.completion"
    else:
        ident, kind = f"cmpl-{uuid.uuid4().hex[:24]}", "text_completion"
    if not stream:
        if operation == CHAT:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": " ".join(words), "logprobs": None, "finish_reason": finish}
        payload: dict[str, Any] = {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": openai_usage(usage, operation),
        }
        return _json_response(200, payload)
    chunk_kind = "chat.completion.chunk" if operation == CHAT else "text_completion"
    base = {"id": ident, "object": chunk_kind, "created": created, "model": model}
    chunks: list[bytes] = []
    if operation == CHAT:
        chunks.append(_sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    pieces = [" ".join(words[start : start + WORDS_PER_CHUNK]) for start in range(0, len(words), WORDS_PER_CHUNK)]
    for index, piece in enumerate(pieces or [""]):
        last = index == max(len(pieces), 1) - 1
        text = piece if index == 0 else " " + piece
        if operation == CHAT:
            delta: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": finish if last else None}
        else:
            delta = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish if last else None}
        chunks.append(_sse({**base, "choices": [delta]}))
    if include_usage:
        # OpenAI and vLLM send usage in one extra chunk with no choices when stream_options.include_usage is set.
        chunks.append(_sse({**base, "choices": [], "usage": openai_usage(usage, operation)}))
    chunks.append(b"data: [DONE]\n\n")
    return UpstreamResponse(200, {"content-type": "text/event-stream", "cache-control": "no-cache"}, chunks=chunks)


@dataclass
class PrefixCache:
    """Per upstream host, the prefix hashes of the chat requests it served (thread-safe)."""

    _seen: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, host: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._seen.get(host, ()))

    def remember(self, host: str, body: Mapping[str, Any]) -> None:
        hashes = prefix_hashes(_messages(body))
        with self._lock:
            self._seen.setdefault(host, set()).update(hashes)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def serve_model(
    *,
    host: str,
    path: str,
    body: Mapping[str, Any],
    served_models: tuple[str, ...],
    cache: PrefixCache,
    created: int,
    api_root: str = "/openai/v1",
) -> UpstreamResponse:
    """The KServe Hugging Face server (vLLM backend): OpenAI endpoints under /openai/v1, one served model name
    (`--model_name`), FastAPI's 404 for other paths and vLLM's 404 for another model. `vllm serve` itself (the llm-d
    model servers) answers the same under /v1 (vllm/entrypoints/openai/api_server.py)."""
    operation = next((op for op in OPERATIONS if path == f"{api_root}/{op}"), None)
    if operation is None:
        return _json_response(404, {"detail": "Not Found"})
    model = body.get("model")
    if not isinstance(model, str) or model not in served_models:
        return _json_response(
            404,
            {
                "object": "error",
                "message": f"The model `{model}` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
        )
    usage = usage_for(body, operation, cache.seen(host))
    response = _completion(body, operation, model, usage, created)
    if operation == CHAT:
        cache.remember(host, body)
    return response


# Header each provider schema's credential arrives in, as the AI Gateway's backend auth handlers set it
# (internal/backendauth: api_key.go "Authorization: Bearer", anthropicapikey.go "x-api-key", azureapikey.go
# "api-key"); AWS requests are SigV4-signed into Authorization.
PROVIDER_CREDENTIAL_HEADERS = {
    "OpenAI": "authorization",
    "Anthropic": "x-api-key",
    "GCPAnthropic": "authorization",
    "AzureOpenAI": "api-key",
    "AWSBedrock": "authorization",
    "AWSAnthropic": "authorization",
    "GCPVertexAI": "authorization",
    "Cohere": "authorization",
}


def serve_provider(
    *,
    host: str,
    path: str,
    schema: str,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    cache: PrefixCache,
    created: int,
) -> UpstreamResponse:
    """A managed provider. It refuses a request without its credential header (401, OpenAI's error shape) and
    otherwise answers in OpenAI's format whatever the schema: the sandbox does not model the AI Gateway's
    translation to Anthropic, Bedrock or Azure wire formats."""
    credential = headers.get(PROVIDER_CREDENTIAL_HEADERS.get(schema, "authorization"), "").strip()
    if credential in ("", "Bearer", "Bearer "):
        return _json_response(
            401,
            {
                "error": {
                    "message": "You didn't provide an API key.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )
    operation = next((op for op in OPERATIONS if path.endswith("/" + op)), CHAT)
    model = body.get("model")
    model_name = model if isinstance(model, str) else ""
    usage = usage_for(body, operation, cache.seen(host))
    response = _completion(body, operation, model_name, usage, created)
    if operation == CHAT:
        cache.remember(host, body)
    return response


def sse_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of SSE `data:` lines (skipping [DONE]), as the AI Gateway's stream parser reads them."""
    for chunk in chunks:
        for line in chunk.decode("utf-8", "replace").splitlines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if not data or data == "[DONE]":
                continue
            try:
                payload = json.loads(data)
            except ValueError:
                continue
            if isinstance(payload, dict):
                yield payload
