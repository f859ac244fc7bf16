"""A fault-injecting OpenAI-compatible server answering with the mock teacher.

It speaks enough of the OpenAI HTTP API (chat completions, models, files and batches) for the
official SDK and our pipeline to run against it offline, and injects the failures real servers
produce (rate limits, 5xx, hangs, dropped connections, broken JSON, truncation, refusals) at chosen
rates, so retry and validation logic can be tested and benchmarked reproducibly. Quirks (`QUIRKS`, in mock_server_config.py) switch
on the ways real endpoints differ from OpenAI's own: content as parts, structured refusals, errors inside
a 200, context-length and size limits, content filters, missing usage, reasoning-model parameter rules,
and Azure's deployment paths.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import itertools
import json
import random
import signal
import threading
import time
import uuid
from typing import Optional

from aiohttp import web

from datagen.files.jsonl import json_line
from datagen.formats.batch_lines import CHAT_URL, read_batch_lines
from datagen.teachers.mock import mock_answer
from datagen.tasks.structured import json_reply, schema_of
from datagen.testing.mock_server_config import QUIRKS, MockServerConfig
from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.vision import estimate_content_tokens

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
CHAT_ENDPOINT = CHAT_URL
AZURE_CHAT_ENDPOINT = "/openai/deployments/{deployment}/chat/completions"

_TRANSIENT_QUIRKS = frozenset({"error200"})

# Every outcome a chat request can have; /_stats always lists them, zeros included.
OUTCOMES = ("ok", "length", "refusal", "429", "500", "hang", "drop", "malformed", "401", "400", "404", "413", *QUIRKS)

_BROKEN_JSON = b'{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'
_SERVER_ERRORS = (500, 502, 503)
_ERROR_TEXT = {
    400: ("invalid_request_error", None, "The request body is not a valid chat completion request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    404: ("invalid_request_error", "not_found", "The requested resource does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
}
_SERVER_ERROR_TEXT = ("server_error", None, "The server had an error while processing your request. Sorry about that!")
_FILE_PURPOSES = frozenset({"batch", "batch_output", "fine-tune", "assistants", "vision", "user_data"})


def _fault_table(rates: dict[str, float]) -> list[tuple[float, str]]:
    """Cumulative thresholds so that one uniform draw picks at most one fault."""
    table, upper = [], 0.0
    for outcome, rate in rates.items():
        if rate > 0:
            upper += rate
            table.append((upper, outcome))
    return table


def _json_response(payload: object, status: int = 200, headers: Optional[dict] = None) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), status=status, headers=headers, content_type="application/json")


def _error_payload(message: str, code: Optional[str] = None, param: Optional[str] = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, code: Optional[str] = None, param: Optional[str] = None, kind: str = "invalid_request_error") -> web.Response:
    return _json_response(_error_payload(message, code, param, kind), status=status)


def _error_body(status: int) -> dict:
    kind, code, message = _ERROR_TEXT.get(status, _SERVER_ERROR_TEXT)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _identity(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _truncate(text: str, max_chars: int) -> str:
    """Cut at a word boundary, as a token limit would, keeping at least one character."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > 0 else max(1, max_chars)]


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class MockBackend:
    """The aiohttp application and all its state; runs on whatever event loop starts it."""

    def __init__(self, config: MockServerConfig) -> None:
        self.config = config
        self.base_url = ""
        self._chat_faults = _fault_table(config.fault_rates())
        # Connection-level faults make no sense inside a batch; those lines only fail or get cut.
        self._batch_faults = _fault_table({k: v for k, v in config.fault_rates().items() if k in ("500", "length", "refusal")})
        self._retry_headers = {"Retry-After": f"{config.retry_after:g}", "retry-after-ms": str(int(config.retry_after * 1000))}
        self._ids = itertools.count(1)
        self._files: dict[str, tuple[dict, bytes]] = {}
        self._batches: dict[str, dict] = {}
        self._batch_tasks: set[asyncio.Task] = set()
        self._runner: Optional[web.AppRunner] = None
        self._closing: Optional[asyncio.Event] = None
        self.reset()

    # --- counters ---

    def reset(self) -> None:
        """Zero the counters and restart the fault sequence (RNG and --fail-first countdown)."""
        self.counts = dict.fromkeys(("total",) + OUTCOMES, 0)
        # The last chat requests as received (path, query, how the key came, body), for tests to check.
        self.requests: collections.deque[dict] = collections.deque(maxlen=2000)
        self._body_hashes: set[bytes] = set()
        self._rng = random.Random(self.config.seed)
        self._failures_left = self.config.fail_first
        self._throttle_until: Optional[float] = None

    def stats(self) -> dict:
        """Chat requests in total and by outcome, and how many distinct request bodies were seen."""
        return {**self.counts, "unique_bodies": len(self._body_hashes)}

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    # --- lifecycle ---

    def app(self) -> web.Application:
        middlewares = [self._json_errors] + ([self._require_api_key] if self.config.api_key is not None else [])
        app = web.Application(middlewares=middlewares, client_max_size=256 * 1024**2)
        app.router.add_post(CHAT_ENDPOINT, self.chat_completions)
        app.router.add_post(AZURE_CHAT_ENDPOINT, self.azure_chat_completions)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.retrieve_model)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files/{file_id}", self.retrieve_file)
        app.router.add_delete("/v1/files/{file_id}", self.delete_file)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel_batch)
        app.router.add_get("/_stats", self.stats_endpoint)
        app.router.add_get("/_requests", self.requests_endpoint)
        app.router.add_post("/_reset", self.reset_endpoint)
        return app

    @web.middleware
    async def _json_errors(self, request: web.Request, handler):
        # Unknown routes and wrong methods answer as the API does, in JSON, not aiohttp's plain-text pages.
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
        except web.HTTPMethodNotAllowed as error:
            allowed = ", ".join(sorted(error.allowed_methods))
            return _json_response(
                {"error": {"message": f"{request.method} is not allowed on {request.path}; use {allowed}.", "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}},
                status=405,
                headers={"Allow": allowed},
            )

    async def start(self) -> str:
        self._closing = asyncio.Event()
        # handler_cancellation frees handlers (hung ones above all) whose client went away.
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.config.host}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        for task in self._batch_tasks:
            task.cancel()
        await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- chat completions ---

    @web.middleware
    async def _require_api_key(self, request: web.Request, handler):
        # Azure deployments take the key in an `api-key` header; OpenAI's API as a bearer token.
        if request.path.startswith("/openai/"):
            given = request.headers.get("api-key")
        elif request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        else:
            return await handler(request)
        if given != self.config.api_key:
            if request.path.endswith("/chat/completions"):
                self._count("total")
                self._count("401")
            return _json_response(_error_body(401), status=401)
        return await handler(request)

    async def azure_chat_completions(self, request: web.Request) -> web.StreamResponse:
        if "api-version" not in request.query:
            self._count("total")
            self._count("404")
            return _error(404, "Resource not found", code="404")
        deployment = request.match_info["deployment"]
        if not self.config.accept_any_model and deployment not in self.config.models:
            self._count("total")
            self._count("404")
            return _error(404, "The API deployment for this resource does not exist.", code="DeploymentNotFound")
        return await self.chat_completions(request, deployment=deployment)

    def _record(self, request: web.Request, body: object) -> None:
        if "api-key" in request.headers:
            auth = "api-key"
        elif request.headers.get("Authorization", "").startswith("Bearer "):
            auth = "bearer"
        else:
            auth = None
        self.requests.append({"path": request.path, "query": dict(request.query), "auth": auth, "body": body})

    def _applies(self, quirk: str, identity: bytes) -> bool:
        rate = self.config.quirks.get(quirk, 0.0)
        if rate <= 0.0:
            return False
        if quirk in _TRANSIENT_QUIRKS:
            return self._rng.random() < rate
        digest = hashlib.blake2b(quirk.encode() + b"\0" + identity, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < rate

    def _refusal(self, body: dict, messages: list) -> Optional[tuple[int, dict]]:
        """(status, error body) when this server refuses the request as a whole: a field it does not take
        (stream, a reasoning model's max_tokens or temperature, seed) or, with context_length, its size."""
        if body.get("stream"):
            self._count("400")
            return 400, _error_payload("This mock server does not stream; send stream=false.", code="unsupported_parameter", param="stream")
        if "reasoning" in self.config.quirks:
            if "max_tokens" in body:
                self._count("reasoning")
                message = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
                return 400, _error_payload(message, code="unsupported_parameter", param="max_tokens")
            if body.get("temperature", 1) != 1:
                self._count("reasoning")
                message = f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. Only the default (1) value is supported."
                return 400, _error_payload(message, code="unsupported_value", param="temperature")
        if "no_seed" in self.config.quirks and "seed" in body:
            self._count("no_seed")
            return 400, _error_payload("Unrecognized request argument supplied: seed", param="seed")
        if "no_response_format" in self.config.quirks and "response_format" in body:
            self._count("no_response_format")
            return 400, _error_payload("Unrecognized request argument supplied: response_format", param="response_format")
        if "response_format_500" in self.config.quirks and (body.get("response_format") or {}).get("type") == "json_schema":
            self._count("response_format_500")
            message = "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}"
            return 500, _error_payload(message, kind="internal_server_error")
        if "context_length" in self.config.quirks:
            prompt = sum(estimate_content_tokens(m.get("content")) for m in messages)
            wanted = prompt + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
            if wanted > self.config.context_window:
                self._count("context_length")
                # vLLM's wording, with OpenAI's code.
                message = (
                    f"This model's maximum context length is {self.config.context_window} tokens. However, you requested {wanted}"
                    f" tokens ({prompt} in the messages, {wanted - prompt} in the completion). Please reduce the length of the messages or completion."
                )
                return 400, _error_payload(message, code="context_length_exceeded", param="messages")
        return None

    async def chat_completions(self, request: web.Request, deployment: Optional[str] = None) -> web.StreamResponse:
        self.counts["total"] += 1
        raw = await request.read()
        self._body_hashes.add(hashlib.blake2b(raw, digest_size=16).digest())
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if self._failures_left > 0:
            self._failures_left -= 1
            return self._failure(self.config.fail_status)
        if self.config.echo_key is not None:
            return self._echo_key(request)
        if self._in_throttle_burst():
            return self._failure(429)
        if 0 < self.config.die_after < self.counts["total"]:
            return self._failure(500)
        if "too_large" in self.config.quirks and len(raw) > self.config.max_body_bytes:
            self._count("413")
            self._count("too_large")
            page = b"<html><head><title>413 Request Entity Too Large</title></head><body><center><h1>413 Request Entity Too Large</h1></center></body></html>"
            return web.Response(body=page, status=413, content_type="text/html")
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            self._count("400")
            return _json_response(_error_body(400), status=400)
        self._record(request, body)
        # Per-item quirks hash the body's content, not its bytes: the same request picks the same quirks
        # however a client serialises it (our canonical JSON, a batch engine's).
        identity = _identity(body) if self.config.quirks else b""
        model = deployment or body.get("model") or self.config.models[0]
        if deployment is None and not self.config.accept_any_model and model not in self.config.models:
            self._count("404")
            return _json_response(_error_body(404), status=404)
        refused = self._refusal(body, messages)
        if refused is not None:
            return _json_response(refused[1], status=refused[0])
        if self._applies("html200", identity):
            self._count("html200")
            page = b"<!DOCTYPE html><html><head><title>Sign in - Corporate Proxy</title></head><body><form>...</form></body></html>"
            return web.Response(body=page, status=200, content_type="text/html")
        if self._applies("error200", identity):
            self._count("error200")
            return _error(200, "The engine is currently overloaded.\nPlease try again later.", kind="server_error", code="overloaded")

        outcome = self._draw(self._chat_faults)
        if outcome == "429":
            return self._failure(429)
        if outcome == "500":
            return self._failure(self._rng.choice(_SERVER_ERRORS))
        if outcome == "hang":
            self._count("hang")
            await self._closing.wait()
            return self._abort(request)
        if outcome == "drop":
            self._count("drop")
            return self._abort(request)
        if outcome == "malformed":
            self._count("malformed")
            return web.Response(body=_BROKEN_JSON, content_type="application/json")
        completion, outcome = self._completion(body, messages, model, outcome, structured=not self._applies("off_schema", identity))
        self._count(outcome)
        self._apply_answer_quirks(completion, identity, messages)
        return _json_response(completion)

    def _apply_answer_quirks(self, completion: dict, identity: bytes, messages: list) -> None:
        choice = completion["choices"][0]
        message = choice["message"]
        content = message["content"]
        if self._applies("content_filter", identity):
            self._count("content_filter")
            message["content"] = content = _truncate(content, max(1, len(content) // 2))
            choice["finish_reason"] = "content_filter"
        if self._applies("refusal", identity):
            self._count("refusal")
            message["content"], message["refusal"] = None, "I'm sorry, I can't help with that request."
        elif self._applies("parts", identity):
            self._count("parts")
            cut = content.find(" ", len(content) // 2)
            cut = cut if cut > 0 else len(content)
            message["content"] = [{"type": "text", "text": content[:cut]}, {"type": "text", "text": content[cut:]}]
        if self._applies("null_finish", identity):
            self._count("null_finish")
            choice["finish_reason"] = None
        if self._applies("cached", identity):
            self._count("cached")
            cached = sum(estimate_content_tokens(m.get("content")) for m in messages[:-1])
            completion["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
        if self._applies("no_usage", identity):
            self._count("no_usage")
            del completion["usage"]

    def _in_throttle_burst(self) -> bool:
        if self.config.throttle_seconds <= 0 or self.counts["total"] <= self.config.throttle_after:
            return False
        if self._throttle_until is None:
            self._throttle_until = time.monotonic() + self.config.throttle_seconds
        return time.monotonic() < self._throttle_until

    def _echo_key(self, request: web.Request) -> web.Response:
        """An error body quoting the client's Authorization header in form `echo_key` (ECHO_FORMS)."""
        header = f"Authorization: {request.headers.get('Authorization', '')}"
        key = header.removeprefix("Authorization: Bearer ")
        status = self.config.echo_status
        self._count("500" if status >= 500 else str(status))

        def wrapped(text: str, width: int) -> str:
            return "\n".join(text[start : start + width] for start in range(0, len(text), width))

        form = self.config.echo_key
        if form in ("json", "json_60"):
            message = f"Invalid request from {header}; check the key."
            return _error(status, wrapped(message, 60) if form == "json_60" else message, kind="server_error")
        if form == "plain_60":
            text = wrapped(f"Upstream refused the request sent with the key {key} as invalid", 60)
        elif form == "base64_76":
            text = "Request headers (base64):\n" + wrapped(base64.b64encode(f"Host: x\n{header}\n".encode()).decode(), 76)
        else:  # cut_24: a log line that lost the key's first 24 characters
            text = f"invalid api key ...{key[24:]} (request rejected)"
        return web.Response(text=text, status=status, content_type="text/plain")

    def _draw(self, table: list[tuple[float, str]]) -> str:
        if not table:
            return "ok"
        draw = self._rng.random()
        for upper, outcome in table:
            if draw < upper:
                return outcome
        return "ok"

    def _failure(self, status: int) -> web.Response:
        self._count("500" if status >= 500 else str(status))
        headers = self._retry_headers if status == 429 else None
        return _json_response(_error_body(status), status=status, headers=headers)

    @staticmethod
    def _abort(request: web.Request) -> web.Response:
        # Closing the transport before any byte is written is what a crashed upstream looks like:
        # the client sees the connection end without a response.
        if request.transport is not None:  # None once the client has gone already
            request.transport.close()
        return web.Response(status=204)

    def _completion(self, body: dict, messages: list, model: str, outcome: str, structured: bool = True) -> tuple[dict, str]:
        """The chat.completion object for `body` and the outcome it ends up with (ok, length, refusal); JSON of the
        schema when the body asks for structured output (`response_format`) and `structured` holds."""
        finish_reason = "stop"
        if outcome == "refusal":
            content = REFUSAL_TEXT
        else:
            content = mock_answer(messages, body.get("seed"))
            schema = schema_of(body.get("response_format"))
            if schema is not None:
                if structured:
                    content = json_reply(schema, content)
                else:
                    self._count("off_schema")
            if outcome == "length":
                content = _truncate(content, len(content) // 2)
                finish_reason = "length"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and estimate_tokens(content) > limit:
            content = _truncate(content, int(limit) * 4)
            finish_reason, outcome = "length", "length"
        if self.config.reply_bytes > len(content):
            # A runaway or hostile server: an answer far beyond the token limit it was given.
            content += " and so on" * ((self.config.reply_bytes - len(content)) // 10 + 1)
        prompt_tokens = sum(estimate_content_tokens(m.get("content")) for m in messages)
        completion_tokens = estimate_tokens(content)
        completion = {
            "id": f"chatcmpl-mock{next(self._ids):012d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "mock",
        }
        return completion, outcome

    async def list_models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "datagen"} for name in self.config.models]
        return _json_response({"object": "list", "data": data})

    async def retrieve_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self.config.models and not self.config.accept_any_model:
            return _error(404, f"The model '{name}' does not exist or you do not have access to it.", code="model_not_found", param="model")
        return _json_response({"id": name, "object": "model", "created": 0, "owned_by": "datagen"})

    async def list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        data = [meta for meta, _ in self._files.values() if purpose is None or meta["purpose"] == purpose]
        return _json_response({"object": "list", "data": data, "has_more": False})

    async def delete_file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if self._files.pop(file_id, None) is None:
            return _json_response(_error_body(404), status=404)
        return _json_response({"id": file_id, "object": "file", "deleted": True})

    async def list_batches(self, request: web.Request) -> web.Response:
        data = list(self._batches.values())
        return _json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                               "last_id": data[-1]["id"] if data else None, "has_more": False})

    # --- files ---

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict:
        meta = {
            "id": _new_id("file-"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        self._files[meta["id"]] = (meta, content)
        return meta

    async def create_file(self, request: web.Request) -> web.Response:
        content, filename, purpose = None, "upload.jsonl", None
        async for part in await request.multipart():
            if part.name == "file":
                content = await part.read()
                filename = part.filename or filename
            elif part.name == "purpose":
                purpose = await part.text()
        if content is None or purpose not in _FILE_PURPOSES:
            return _json_response(_error_body(400), status=400)
        return _json_response(self._store_file(content, filename, purpose))

    async def retrieve_file(self, request: web.Request) -> web.Response:
        stored = self._files.get(request.match_info["file_id"])
        if stored is None:
            return _json_response(_error_body(404), status=404)
        return _json_response(stored[0])

    async def file_content(self, request: web.Request) -> web.Response:
        stored = self._files.get(request.match_info["file_id"])
        if stored is None:
            return _json_response(_error_body(404), status=404)
        return web.Response(body=stored[1], content_type="application/octet-stream")

    # --- batches ---

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            input_file_id = body["input_file_id"]
        except (ValueError, KeyError, TypeError):
            return _json_response(_error_body(400), status=400)
        if input_file_id not in self._files:
            return _json_response(_error_body(404), status=404)
        if body.get("endpoint") != CHAT_ENDPOINT or body.get("completion_window") != "24h":
            return _json_response(_error_body(400), status=400)
        now = int(time.time())
        batch = {
            "id": _new_id("batch_"),
            "object": "batch",
            "endpoint": CHAT_ENDPOINT,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 24 * 3600,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "model": None,
        }
        self._batches[batch["id"]] = batch
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        return _json_response(batch)

    async def retrieve_batch(self, request: web.Request) -> web.Response:
        batch = self._batches.get(request.match_info["batch_id"])
        if batch is None:
            return _json_response(_error_body(404), status=404)
        return _json_response(batch)

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batches.get(request.match_info["batch_id"])
        if batch is None:
            return _json_response(_error_body(404), status=404)
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
            batch["cancelling_at"] = int(time.time())
        return _json_response(batch)

    async def _run_batch(self, batch: dict) -> None:
        await asyncio.sleep(self.config.batch_delay_s)
        requests, problems = self._validate_batch_input(self._files[batch["input_file_id"]][1])
        if batch["status"] == "cancelling":
            requests = []
        elif problems:
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": problems})
            return
        else:
            batch.update(status="in_progress", in_progress_at=int(time.time()))
            batch["model"] = requests[0]["body"].get("model") if requests else None
        counts = batch["request_counts"]
        counts["total"] = len(requests)
        await asyncio.sleep(self.config.batch_delay_s)
        outputs, errors = [], []
        for done, item in enumerate(requests):
            if batch["status"] == "cancelling":
                break
            line, ok = self._batch_line(item)
            (outputs if ok else errors).append(line)
            counts["completed" if ok else "failed"] += 1
            if done % 256 == 255:
                await asyncio.sleep(0)  # keep the server answering while a large batch runs
        batch.update(status="finalizing", finalizing_at=int(time.time()))
        if outputs:
            batch["output_file_id"] = self._store_jsonl(outputs, f"{batch['id']}_output.jsonl")["id"]
        if errors:
            batch["error_file_id"] = self._store_jsonl(errors, f"{batch['id']}_error.jsonl")["id"]
        if batch["cancelling_at"] is not None:
            batch.update(status="cancelled", cancelled_at=int(time.time()))
        else:
            batch.update(status="completed", completed_at=int(time.time()))

    def _store_jsonl(self, lines: list[dict], filename: str) -> dict:
        content = "".join(map(json_line, lines)).encode()
        return self._store_file(content, filename, "batch_output")

    @staticmethod
    def _validate_batch_input(content: bytes) -> tuple[list[dict], list[dict]]:
        requests, problems, seen = [], [], set()
        for line in read_batch_lines(content):
            number, item = line.number, line.value
            try:
                valid = line.problem is None and (
                    isinstance(item["custom_id"], str)
                    and item.get("method", "POST") == "POST"
                    and item["url"] == CHAT_ENDPOINT
                    and isinstance(item["body"].get("messages"), list)
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                valid = False
            if not valid:
                problems.append({"code": "invalid_request", "message": "Not a valid chat completions batch line.", "param": None, "line": number})
            elif item["custom_id"] in seen:
                problems.append({"code": "duplicate_custom_id", "message": "custom_id values must be unique.", "param": "custom_id", "line": number})
            else:
                seen.add(item["custom_id"])
                requests.append(item)
        return requests, problems

    def _batch_line(self, item: dict) -> tuple[dict, bool]:
        body = item["body"]
        outcome = self._draw(self._batch_faults)
        refused = self._refusal(body, body["messages"])
        if refused is not None:
            status, response_body = refused
        elif outcome == "500":
            status, response_body = 500, _error_body(500)
        else:
            status = 200
            response_body, _ = self._completion(body, body["messages"], body.get("model") or self.config.models[0], outcome)
            identity = _identity(body) if self.config.quirks else b""
            self._apply_answer_quirks(response_body, identity, body["messages"])
        line = {
            "id": _new_id("batch_req_"),
            "custom_id": item["custom_id"],
            "response": {"status_code": status, "request_id": _new_id("req_"), "body": response_body},
            "error": None,
        }
        return line, status == 200

    # --- test hooks ---

    async def stats_endpoint(self, request: web.Request) -> web.Response:
        return _json_response(self.stats())

    async def requests_endpoint(self, request: web.Request) -> web.Response:
        return _json_response(list(self.requests))

    async def reset_endpoint(self, request: web.Request) -> web.Response:
        self.reset()
        return _json_response(self.stats())


class MockServer:
    """The mock server on a background thread with its own event loop, for tests and benchmarks.

    Listens on 127.0.0.1 and an ephemeral port unless the config says otherwise:

        with MockServer(MockServerConfig(p429=0.1)) as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="x")
    """

    def __init__(self, config: Optional[MockServerConfig] = None) -> None:
        self.config = config or MockServerConfig()
        self.backend = MockBackend(self.config)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return self.backend.base_url

    def stats(self) -> dict:
        return self.backend.stats()

    def reset(self) -> None:
        self.backend.reset()

    def start(self) -> MockServer:
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.backend.start())
            except BaseException as exc:  # reported to the starting thread, which re-raises it
                failure.append(exc)
                loop.close()
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
                loop.run_until_complete(self.backend.stop())
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="mock-openai-server", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


async def serve(config: MockServerConfig) -> None:
    """Run until SIGINT or SIGTERM, printing the base URL once listening."""
    backend = MockBackend(config)
    await backend.start()
    print(f"mock OpenAI-compatible server on {backend.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await backend.stop()
