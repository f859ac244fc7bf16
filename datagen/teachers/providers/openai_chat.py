"""OpenAI chat completions: OpenAI itself and every OpenAI-compatible server (vLLM, llama.cpp, Ollama, gateways).

The openai SDK spends ~4 ms of CPU per request on this machine, our whole per-record budget; the wire format is
the same, so the request goes out over the base's aiohttp transport, and the SDK is kept for the Batch API's
file calls. The body sent is the request's canonical encoding, byte for byte (its cache key is made from it).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from datagen.formats.records import Usage
from datagen.redaction import server_message
from datagen.teachers.interface import ChatReply, ChatRequest
from datagen.teachers.providers.base import HTTPTeacher, chat_content_text, message_of, token_count
from datagen.teachers.providers.retry import RetryableError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAITeacher(HTTPTeacher):
    kind = "openai"
    key_variable = "OPENAI_API_KEY"
    default_base_url = DEFAULT_BASE_URL
    base_url_variable = "OPENAI_BASE_URL"
    key_hint = " (local servers that ignore keys accept any value)"
    reply_noun = "a chat completion"
    base_url_hint = "the server's OpenAI-compatible root, usually ending in /v1"
    root_ends_in_v1: ClassVar[bool] = True

    def _request_url(self, base_url: str) -> str:
        parts = urlsplit(base_url)
        # The query string stays a query string (Azure's api-version lives there), after the added path.
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def _encode(self, request: ChatRequest) -> bytes:
        return request.encoded()

    def _reply(self, data: Any) -> ChatReply:
        return parse_completion(data)

    def _not_found(self, where: str, message: str) -> str:
        line = super()._not_found(where, message)
        if not self.root_ends_in_v1 or urlsplit(self.base_url).path.rstrip("/").endswith("/v1"):
            return line
        # A root without /v1 makes every route a 404, which reads as if the model were unknown.
        return f"{line} (OpenAI-compatible roots usually end in /v1: try --base-url {where.rstrip('/')}/v1)"


def parse_usage(usage: object) -> Usage:
    """Usage as reported; what the server left out stays unknown (None) rather than becoming 0."""
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    return Usage(
        prompt_tokens=token_count(usage.get("prompt_tokens")),
        completion_tokens=token_count(usage.get("completion_tokens")),
        cached_tokens=token_count(details.get("cached_tokens")) if isinstance(details, dict) else None,
    )


def parse_completion(data: Any) -> ChatReply:
    """A chat.completion object, live or from a Batch API output line, as a reply."""
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        # Some servers and gateways answer HTTP 200 with an error object: a transient failure, not an answer.
        raise RetryableError(f"HTTP 200 with an error body: {server_message(message_of(data), [], first_line=False)}")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        refusal = message.get("refusal")
        return ChatReply(
            text=chat_content_text(message.get("content")),
            finish_reason=choice.get("finish_reason"),
            usage=parse_usage(data.get("usage")),
            refusal=refusal if isinstance(refusal, str) and refusal.strip() else None,
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RetryableError("malformed response body") from None
