"""Anthropic's Messages API (POST {base}/v1/messages), natively: no OpenAI-compatible layer in between.

The canonical request becomes a Messages body: system messages join into the top-level `system`, `max_tokens` is
always sent (the API requires it, whichever token-limit field the request shape names), `seed` is left out (the
API has none), image parts become base64 or URL image blocks. The cache key stays the canonical request's, so a
cached or resumed run finds its answers whichever provider first fetched them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from datagen.formats.records import Usage
from datagen.redaction import server_message
from datagen.teachers.interface import ChatReply, ChatRequest, canonical_json
from datagen.teachers.providers.base import HTTPTeacher, chat_content_text, message_of, token_count
from datagen.teachers.providers.retry import RetryableError

ANTHROPIC_VERSION = "2023-06-01"
# Why the model stopped, in the words the rest of datagen reads (OpenAI's finish_reason); others pass as they are.
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


class AnthropicTeacher(HTTPTeacher):
    kind = "anthropic"
    key_variable = "ANTHROPIC_API_KEY"
    default_base_url = "https://api.anthropic.com"
    base_url_variable = "ANTHROPIC_BASE_URL"
    reply_noun = "a Messages API reply"
    base_url_hint = "the API's root, https://api.anthropic.com by default, without /v1"
    # 529: the API is overloaded. Like a 429 it asks for patience, not another try at once: waited out by time.
    throttle_statuses = frozenset({429, 529})

    def _request_url(self, base_url: str) -> str:
        parts = urlsplit(base_url)
        return parts._replace(path=parts.path.rstrip("/") + "/v1/messages").geturl()

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key, "anthropic-version": ANTHROPIC_VERSION}

    def _encode(self, request: ChatRequest) -> bytes:
        return canonical_json(messages_body(request))

    def _reply(self, data: Any) -> ChatReply:
        return parse_message(data)

    def _not_found(self, where: str, message: str) -> str:
        line = super()._not_found(where, message)
        if urlsplit(self.base_url).path.rstrip("/").endswith("/v1"):
            # Requests go to BASE/v1/messages: a base ending in /v1 asks for /v1/v1/messages.
            return f"{line} (the base URL takes no /v1: try --base-url {where.rstrip('/').removesuffix('/v1')})"
        return line


def messages_body(request: ChatRequest) -> dict[str, Any]:
    """The Messages API body for a canonical request."""
    system = [message["content"] for message in request.messages if message["role"] == "system"]
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [
            {"role": message["role"], "content": _content(message["content"])} for message in request.messages if message["role"] != "system"
        ],
    }
    if system:
        body["system"] = "\n\n".join(chat_content_text(content) for content in system)
    if "temperature" not in request.shape.omit:
        body["temperature"] = request.temperature
    body.update(request.shape.extra_body)
    return body


def _content(content: object) -> object:
    """A message's content: text as it is; OpenAI content parts as Anthropic blocks (image_url -> image)."""
    if not isinstance(content, list):
        return content
    return [_block(part) for part in content]


def _block(part: object) -> object:
    if not (isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict)):
        return part  # text parts are the same in both formats
    url = str(part["image_url"].get("url", ""))
    media_type, marker, data = url.removeprefix("data:").partition(";base64,")
    if url.startswith("data:") and marker:
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def parse_usage(usage: object) -> Usage:
    """Messages usage as ours: input_tokens leaves out the tokens read from or written to the prompt cache, so the
    prompt's total adds them back, and those read from it are our cached_tokens; unreported stays None."""
    if not isinstance(usage, dict):
        return Usage()
    fresh = token_count(usage.get("input_tokens"))
    read = token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    return Usage(
        prompt_tokens=None if fresh is None else fresh + (read or 0) + (written or 0),
        completion_tokens=token_count(usage.get("output_tokens")),
        cached_tokens=read,
    )


def parse_message(data: Any) -> ChatReply:
    """A Messages API reply (`{"type": "message", "content": [blocks], "stop_reason": ..., "usage": ...}`) as ours."""
    if isinstance(data, dict) and data.get("type") == "error":
        raise RetryableError(f"HTTP 200 with an error body: {server_message(message_of(data), [], first_line=False)}")
    try:
        if data["type"] != "message":
            raise TypeError("not a message")
        stop_reason = data.get("stop_reason")
        return ChatReply(
            text=chat_content_text(data["content"]),
            finish_reason=STOP_REASONS.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None,
            usage=parse_usage(data.get("usage")),
        )
    except (KeyError, TypeError, AttributeError):
        raise RetryableError("malformed response body") from None
