"""A local stand-in for Anthropic's Messages API (POST /v1/messages), answering with the mock teacher.

It checks what the real API checks that a client can get wrong (the x-api-key and anthropic-version headers,
`max_tokens` present, roles only user and assistant with the system prompt top-level, no fields the API does not
take, such as `seed`), answers in the Messages format (content blocks, stop_reason end_turn / max_tokens /
stop_sequence, usage input_tokens / output_tokens), and injects its failures: 429 rate limits and 529 overloads
with retry-after, 5xx, hangs and dropped connections, from the same MockServerConfig knobs as the OpenAI mock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

from aiohttp import web

from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.mock import mock_answer
from datagen.testing.mock_openai_server import MockBackend, MockServer, _new_id, _truncate
from datagen.testing.mock_server_config import MockServerConfig

MESSAGES_ENDPOINT = "/v1/messages"
# The body fields the Messages API takes (of those a text request uses); any other is refused, as the API does.
_FIELDS = frozenset({"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences", "metadata", "stream"})
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}
_ERROR_TEXT = {429: "Number of request tokens has exceeded your per-minute rate limit.", 529: "Overloaded"}


def _error(status: int, message: str, headers: Optional[dict] = None) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers, content_type="application/json")


def _text(content: object) -> str:
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict) and block.get("type") == "text")
    return content if isinstance(content, str) else ""


def _problem(body: object) -> Optional[str]:
    """Why the API would refuse this body (HTTP 400), in its own words, or None."""
    if not isinstance(body, dict):
        return "body: Input should be a valid dictionary"
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or isinstance(body.get("max_tokens"), bool) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant' (the system prompt goes in the top-level `system`)"
    if "system" in body and not isinstance(body["system"], (str, list)):
        return "system: Input should be a valid string"
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 1.0:
        return "temperature: Input should be less than or equal to 1"
    if body.get("stream"):
        return "stream: this mock server does not stream"
    return None


class AnthropicBackend(MockBackend):
    """The Messages route on the OpenAI mock's machinery: its counters, fault draws and test hooks."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._anthropic_errors], client_max_size=256 * 1024**2)
        app.router.add_post(MESSAGES_ENDPOINT, self.messages)
        app.router.add_get("/_stats", self.stats_endpoint)
        app.router.add_get("/_requests", self.requests_endpoint)
        app.router.add_post("/_reset", self.reset_endpoint)
        return app

    async def start(self) -> str:
        # Anthropic's base URL is the root: clients add /v1/messages themselves.
        self.base_url = (await super().start()).removesuffix("/v1")
        return self.base_url

    @web.middleware
    async def _anthropic_errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, "Not Found")
        except web.HTTPMethodNotAllowed:
            return _error(405, f"{request.method} is not allowed on {request.path}")

    def _answer_error(self, status: int, message: str) -> web.Response:
        self._count(str(status))
        throttled = status in (429, 529)
        return _error(status, message, headers=self._retry_headers if throttled else None)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.counts["total"] += 1
        raw = await request.read()
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if self.config.api_key is not None and request.headers.get("x-api-key") != self.config.api_key:
            return self._answer_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._answer_error(400, "anthropic-version: header is required")
        if self._failures_left > 0:
            self._failures_left -= 1
            status = self.config.fail_status
            return self._answer_error(status, _ERROR_TEXT.get(status, "Internal server error"))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer_error(400, "There was an issue with the JSON body of your request")
        problem = _problem(body)
        if problem is not None:
            return self._answer_error(400, problem)
        self.requests.append({"path": request.path, "version": request.headers.get("anthropic-version"), "body": body})
        model = body["model"]
        if not self.config.accept_any_model and model not in self.config.models:
            return self._answer_error(404, f"model: {model}")
        outcome = self._draw(self._chat_faults)
        if outcome == "429":
            return self._answer_error(429, _ERROR_TEXT[429])
        if outcome == "500":
            return self._answer_error(500, "Internal server error")
        if outcome == "hang":
            self._count("hang")
            assert self._closing is not None  # set when the server started
            await self._closing.wait()
            return self._abort(request)
        if outcome == "drop":
            self._count("drop")
            return self._abort(request)
        self._count("ok")
        return web.json_response(self._message(body))

    def _message(self, body: dict) -> dict:
        """The Messages API reply: the mock teacher's answer, cut at a stop sequence or at max_tokens as the API would."""
        system = _text(body.get("system"))
        conversation = [{"role": "system", "content": system}] if system else []
        conversation += [{"role": message["role"], "content": _text(message["content"])} for message in body["messages"]]
        text = mock_answer(conversation)
        stop_reason, stop_sequence = "end_turn", None
        for sequence in body.get("stop_sequences") or ():
            if sequence in text:
                text, stop_reason, stop_sequence = text[: text.index(sequence)], "stop_sequence", sequence
                break
        if estimate_tokens(text) > body["max_tokens"]:
            text, stop_reason, stop_sequence = _truncate(text, body["max_tokens"] * 4), "max_tokens", None
        return {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {"input_tokens": sum(estimate_tokens(message["content"]) for message in conversation), "output_tokens": estimate_tokens(text)},
        }


class MockAnthropicServer(MockServer):
    """The Messages mock on a background thread, on 127.0.0.1 and an ephemeral port; `base_url` is its root."""

    def __init__(self, config: Optional[MockServerConfig] = None) -> None:
        super().__init__(config)
        self.backend = AnthropicBackend(self.config)
