"""The teacher: one small interface (`complete`), with the mock and OpenAI-compatible backends beneath it.

Retries, backoff, rate limits and the first-request probe live here, invisible to the task code.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from datagen.teachers.endpoints import DEFAULT_BASE_URL
from datagen.errors import ServerUnavailable, TeacherFatalError
from datagen.teachers.health import DEFAULT_GIVE_UP_AFTER, ServerWatch
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY, RateLimiter
from datagen.formats.records import RejectReason, TeacherInfo, Usage
from datagen.redaction import one_line, redact_url, server_message
from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.request_shape import RequestShape, fix_for_refused_field
from datagen.teachers.vision import estimate_content_tokens


# The client's defaults, shared by `generate` (datagen/run/options.py) and anything else that builds a teacher.
DEFAULT_TIMEOUT = 120.0  # seconds per request before it is retried
DEFAULT_MAX_RETRIES = 6  # per request, on 5xx, timeouts and dropped connections (429s are waited out by time)
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024  # a chat completion of --max-tokens is a few KB; more is not an answer
# No tokenizer spends more characters on a token than this, on average over a whole answer: an answer longer
# than `max_tokens * MAX_CHARS_PER_TOKEN` (plus a margin) did not come from a request with that limit.
MAX_CHARS_PER_TOKEN = 32


class ChatRequest(BaseModel):
    # Frozen: the serialised form below is kept, so a changed request must be a new one (model_copy).
    model_config = ConfigDict(frozen=True)

    model: str
    # Content is a string, or a list of OpenAI content parts when the teacher is shown the image (datagen/teachers/vision.py).
    messages: list[dict[str, Any]]
    temperature: float
    max_tokens: int  # the token limit, sent under the field name the shape says
    seed: int
    shape: RequestShape = RequestShape()
    # Structured output (generate --structured, datagen/tasks/structured.py); when None the field is not sent, so the
    # body and cache key stay what they always were.
    response_format: dict[str, Any] | None = None
    _encoded: tuple[bytes, str] | None = PrivateAttr(default=None)

    def body(self) -> dict:
        """The JSON body as sent; the default shape gives the fields (hence the cache keys) datagen always sent."""
        body: dict[str, object] = {"model": self.model, "messages": self.messages}
        if "temperature" not in self.shape.omit:
            body["temperature"] = self.temperature
        body[self.shape.token_limit_field] = self.max_tokens
        if "seed" not in self.shape.omit:
            body["seed"] = self.seed
        body.update(self.shape.extra_body)
        if self.response_format is not None:
            body["response_format"] = self.response_format
        return body

    def encoded(self) -> bytes:
        """The body as sent: canonical JSON (sorted keys, compact, UTF-8), serialised once per request."""
        return self._canonical()[0]

    def key(self) -> str:
        """Cache key: the sha256 of the canonical body, in which each image stands as its own sha256."""
        return self._canonical()[1]

    def _canonical(self) -> tuple[bytes, str]:
        if self._encoded is None:
            has_images = any(not isinstance(message.get("content"), str) for message in self.messages)
            # With images, the key hashes the body with each image as its hash: the body as sent is not hashed.
            data, digest = _canonical_json(self.body(), hashed=not has_images)
            if has_images:
                digest = _canonical_json({**self.body(), "messages": _images_as_hashes(self.messages)})[1]
            assert digest is not None
            self._encoded = (data, digest)
        return self._encoded

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> ChatRequest:
        copied = super().model_copy(update=update, deep=deep)
        copied._encoded = None  # pydantic copies private attributes too; the copy serialises itself afresh
        return copied


def request_from_body(body: object) -> ChatRequest:
    """The request whose body() is `body`, as a requests file holds it (ValueError naming what does not fit)."""
    if not isinstance(body, dict):
        raise ValueError("its body is not a JSON object")
    fields = dict(body)
    model, messages = fields.pop("model", None), fields.pop("messages", None)
    if not isinstance(model, str) or not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        raise ValueError("its body lacks a model name or a list of messages")
    limit_field = "max_completion_tokens" if "max_completion_tokens" in fields else "max_tokens"
    limit = fields.pop(limit_field, None)
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise ValueError("its body has no integer max_tokens")
    omitted = tuple(name for name in ("seed", "temperature") if name not in fields)
    # An omitted field is never sent, so the value standing in for it here is never seen.
    temperature, seed = fields.pop("temperature", 0.0), fields.pop("seed", 0)
    shape = RequestShape(token_limit_field=limit_field, omit=omitted, extra_body=fields)
    try:
        return ChatRequest(model=model, messages=messages, temperature=temperature, max_tokens=limit, seed=seed, shape=shape)
    except ValidationError as error:
        raise ValueError(f"its body's {error.errors()[0]['loc'][0]} is not a {error.errors()[0]['type']}") from None


def _canonical_json(value: object, hashed: bool = True) -> tuple[bytes, str | None]:
    """Sorted keys, compact, UTF-8, and the sha256 of that (None unless `hashed`).

    A request body is put together from its messages' encodings, since all the requests of a task repeat the same
    system message and shots (most of the body): those are encoded once, and the body up to its last message is
    hashed once, so that each request hashes only its own message and the fields after it."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list) and value["messages"] and all(isinstance(key, str) for key in value):
        before: list[str] = []
        after: list[str] = []
        for key in sorted(value):
            if key != "messages":
                (before if key < "messages" else after).append(f"{_json(key)}:{_json(value[key])}")
        messages = [_message_json(message) for message in value["messages"]]
        head_data, head_digest = _body_head("".join(member + "," for member in before), tuple(messages[:-1]))
        tail = (messages[-1] + "]" + "".join("," + member for member in after) + "}").encode()
        if not hashed:
            return head_data + tail, None
        digest = head_digest.copy()
        digest.update(tail)
        return head_data + tail, digest.hexdigest()
    data = _json(value).encode()
    return data, hashlib.sha256(data).hexdigest() if hashed else None


@lru_cache(maxsize=64)
def _body_head(fields_before: str, messages: tuple[str, ...]) -> tuple[bytes, Any]:
    """A body's start, up to its last message, and the sha256 state after it: the same for every request of a task."""
    data = ("{" + fields_before + '"messages":[' + "".join(message + "," for message in messages)).encode()
    return data, hashlib.sha256(data)


# One encoder for every body: json.dumps with options of its own builds a new encoder on each call.
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_json = _ENCODER.encode


def _message_json(message: object) -> str:
    if isinstance(message, dict) and len(message) == 2 and isinstance(message.get("role"), str) and isinstance(message.get("content"), str):
        return _text_message_json(message["role"], message["content"])
    return _json(message)


@lru_cache(maxsize=1024)
def _text_message_json(role: str, content: str) -> str:
    # The pack's strings are the same objects in every request, so the lookup's hash is cached on them.
    return _json({"content": content, "role": role})


def _image_hash(url: str) -> str:
    """sha256 of a data URL's image bytes (as records' meta.image_sha256 gives it), or of any other URL."""
    _, base64_marker, payload = url.partition(";base64,")
    data = base64.b64decode(payload) if url.startswith("data:") and base64_marker else url.encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _images_as_hashes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each image part's data URL replaced by its sha256: what a cache key is made of."""
    hashed = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {**part, "image_url": {**part["image_url"], "url": _image_hash(part["image_url"]["url"])}}
                if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict)
                else part
                for part in content
            ]
        hashed.append({**message, "content": content})
    return hashed


class ChatReply(BaseModel):
    text: str
    finish_reason: str | None
    usage: Usage
    refusal: str | None = None  # a structured refusal (`message.refusal`); `text` is then usually empty


class Teacher(Protocol):
    """What the pipeline asks of a backend, and all that provenance and progress read from it.

    Offline backends subclass it for the defaults below; a wrapper (the response cache) exposes its inner
    teacher's values as its own, so nothing reaches through it.
    """

    info: TeacherInfo
    stats: Counter[str]  # "requests" sent and "cache_hits", for the manifest

    @property
    def base_url(self) -> str | None:
        """The endpoint the answers come from, None offline; the manifest stores it redacted."""
        return None

    @property
    def last_error(self) -> str | None:
        """The last request's error message, for the manifest and a failed run's one line."""
        return None

    @property
    def limiter(self) -> RateLimiter | None:
        """The client-side rate limiter, whose current limit the progress line shows."""
        return None

    async def complete(self, request: ChatRequest) -> ChatReply: ...

    async def aclose(self) -> None: ...


class MockTeacher(Teacher):
    """Offline, deterministic answers built only from the context; labelled mock everywhere it appears."""

    def __init__(self, variant: str = "default") -> None:
        # A variant is a second offline teacher with its own name, so two-teacher comparisons run offline too.
        self.variant = variant
        self.info = TeacherInfo(kind="mock", model="mock" if variant == "default" else f"mock-{variant}", mock=True)
        self.stats: Counter[str] = Counter()

    async def complete(self, request: ChatRequest) -> ChatReply:
        from datagen.teachers.mock import mock_answer

        self.stats["requests"] += 1
        text = mock_answer(request.messages, request.body().get("seed"), self.variant)
        if request.response_format is not None:
            from datagen.tasks.structured import json_reply, schema_of

            if (schema := schema_of(request.response_format)) is not None:
                text = json_reply(schema, text)
        finish_reason = "stop"
        completion_tokens = estimate_tokens(text)
        if completion_tokens > request.max_tokens:
            # Mirror a real server: cut the answer and say so, so truncation handling is exercised offline too.
            text, finish_reason, completion_tokens = text[: request.max_tokens * 4], "length", request.max_tokens
        prompt_tokens = sum(estimate_content_tokens(message["content"]) for message in request.messages)
        return ChatReply(text=text, finish_reason=finish_reason, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))

    async def aclose(self) -> None:
        return None


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None, throttled: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled  # a 429: waited out by time, not counted against --max-retries
        self.status = status  # the HTTP status, None for a dropped connection or a timeout


class RequestRefused(Exception):
    """The server refused this one request (too long, too large...) after it had accepted the run's first one,
    or answered it with something no request of this size can produce; `reason` is the reject reason."""

    def __init__(self, message: str, reason: RejectReason = "request_refused", status: int | None = None) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason
        self.status = status


# A 4xx that names this item's size, not the request's shape: refusing the item lets the run go on.
_ITEM_TOO_BIG = re.compile(r"context.length|context.window|maximum context|too many tokens|too long|too large|exceeds the", re.IGNORECASE)


def parse_retry_after(headers) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _retry_delay(error: RetryableError, attempt: int) -> float:
    """How long to wait before another try of a request that failed `attempt` times (of this kind) so far."""
    if error.retry_after is not None:
        # The server said when; waiting less earns another 429, waiting much more wastes the window. A 5xx's
        # Retry-After is capped like the backoff, so a dead server is noticed within the watch's window.
        return min(error.retry_after, 120.0 if error.throttled else 20.0) + random.uniform(0, 0.25)
    # Full-jitter exponential backoff (1, 2, 4... s at most), the first retry almost at once.
    return random.uniform(0, 0.5 if attempt <= 1 else min(20.0, 2.0 ** (attempt - 2)))


def _token_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_usage(usage: object) -> Usage:
    """Usage as reported; what the server left out stays unknown (None) rather than becoming 0."""
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    return Usage(
        prompt_tokens=_token_count(usage.get("prompt_tokens")),
        completion_tokens=_token_count(usage.get("completion_tokens")),
        cached_tokens=_token_count(details.get("cached_tokens")) if isinstance(details, dict) else None,
    )


def _content_text(content: object) -> str:
    """`content` as a string, or as a list of parts (gateways, reasoning models): the text parts joined."""
    if isinstance(content, list):
        return "".join(part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str))
    if content is None or isinstance(content, str):
        return content or ""
    raise TypeError("content is neither text nor a list of parts")


def parse_completion(data: Any) -> ChatReply:
    """A chat.completion object, live or from a Batch API output line, as a reply."""
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        # Some servers and gateways answer HTTP 200 with an error object: a transient failure, not an answer.
        raise RetryableError(f"HTTP 200 with an error body: {server_message(_message_of(data), [], first_line=False)}")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        refusal = message.get("refusal")
        return ChatReply(
            text=_content_text(message.get("content")),
            finish_reason=choice.get("finish_reason"),
            usage=parse_usage(data.get("usage")),
            refusal=refusal if isinstance(refusal, str) and refusal.strip() else None,
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RetryableError("malformed response body") from None


def _message_of(data: object) -> str:
    """The message of an OpenAI-style error object (`{"error": {"message": ...}}`, or a bare string)."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return str(error if error is not None else data)


class OpenAITeacher:
    """Chat completions over a lean aiohttp transport, configured the way the openai client is.

    The openai SDK spends ~4 ms of CPU per request on this machine, our whole per-record budget; the wire
    format is the same, so we send the request ourselves and keep the SDK for the Batch API's file calls.
    `kind="azure"` sends the key in an `api-key` header, as Azure OpenAI deployments expect.
    """

    def __init__(
        self,
        model: str,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        concurrency: int = DEFAULT_CONCURRENCY,
        limiter: RateLimiter | None = None,
        kind: str = "openai",
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        verified: bool = False,
    ) -> None:
        """`verified`: the endpoint already answered this run's requests elsewhere (another worker of a
        `datagen ray` run), so no probe goes first and a 4xx refuses the item alone."""
        self.info = TeacherInfo(kind=kind, model=model, mock=False)
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(base_url)
        # The query string stays a query string (Azure's api-version lives there), after the added path.
        self.chat_url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))
        self._api_key = api_key
        self._key_header = {"api-key": api_key} if kind == "azure" else {"Authorization": f"Bearer {api_key}"}
        self._key_variable = "AZURE_OPENAI_API_KEY" if kind == "azure" else "OPENAI_API_KEY"
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_reply_bytes = max_reply_bytes
        self._concurrency = concurrency
        self.limiter = limiter or RateLimiter(concurrency=concurrency)
        self.watch = ServerWatch(redact_url(self.base_url), give_up_after)
        self._session = None
        self._verified = asyncio.Event()
        if verified:
            self._verified.set()
        self._probe_lock = asyncio.Lock()
        self._fatal: TeacherFatalError | None = None
        self.stats: Counter[str] = Counter()
        self.last_error: str | None = None

    def _client(self):
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={**self._key_header, "Content-Type": "application/json"},
                json_serialize=json.dumps,
            )
        return self._session

    async def complete(self, request: ChatRequest) -> ChatReply:
        return (await self.exchange(request))[0]

    async def exchange(self, request: ChatRequest) -> tuple[ChatReply, Any]:
        """The reply and the response body it was parsed from, for a caller that passes the server's answer on whole."""
        self.watch.check()
        if not self._verified.is_set():
            # One request goes first: a wrong key or model then costs one request, not `concurrency` of them.
            # Only an answer verifies; an item refused for its size leaves the next request to go first.
            async with self._probe_lock:
                if self._fatal is not None:
                    raise self._fatal
                if not self._verified.is_set():
                    try:
                        answer = await self._complete_with_retries(request)
                    except (RetryableError, ServerUnavailable) as error:
                        # No answer at all yet, after every retry (or the watch's whole window): the server is down,
                        # still loading its model, or not where --base-url points. Going on would only skip every
                        # item the same way. A server that only rate-limits is alive: the watch's line says so.
                        if isinstance(error, ServerUnavailable) and not error.silent:
                            self._fatal = error
                            raise
                        self._fatal = self._unreachable(self.last_error or str(error))
                        raise self._fatal from None
                    except TeacherFatalError as error:
                        self._fatal = error
                        self.last_error = str(error)
                        raise
                    self._verified.set()
                    return answer
        return await self._complete_with_retries(request)

    async def _complete_with_retries(self, request: ChatRequest) -> tuple[ChatReply, Any]:
        failures = throttles = 0
        while True:
            try:
                return await self._send(request)
            except RetryableError as error:
                if self._max_retries == 0:
                    raise
                # A 429 is waited out by time (the watch ends a run that only ever gets them), not by count:
                # a burst longer than the retries would otherwise leave items unanswered for no reason.
                if error.throttled:
                    throttles += 1
                    attempt = throttles
                else:
                    failures += 1
                    if failures > self._max_retries:
                        raise
                    attempt = failures
                await asyncio.sleep(_retry_delay(error, attempt))
                self.watch.check()  # another request may have found the server dead meanwhile
                self.stats["retries"] += 1

    def _unreachable(self, last_error: str) -> TeacherFatalError:
        tries = self._max_retries + 1
        return TeacherFatalError(
            f"the teacher at {redact_url(self.base_url)} gave no answer to the run's first request ({tries} tr{'y' if tries == 1 else 'ies'}; "
            f"last: {one_line(last_error, 200)}); start the server or wait until it has loaded the model (or fix --base-url), then rerun"
        )

    def _failure(self, started: float, message: str, timed_out: bool = False, status: int | None = None) -> RetryableError:
        """A failed attempt: counted by the watch (which may stop the run), remembered, and retried."""
        self.last_error = message
        self.watch.failed(started, message, timed_out)
        return RetryableError(message, status=status)

    async def _send(self, request: ChatRequest) -> tuple[ChatReply, Any]:
        import aiohttp

        text_chars = sum(len(message["content"]) for message in request.messages if isinstance(message["content"], str))
        # Content parts (an image the teacher is shown) count by their own estimate, images by OpenAI's tile formula.
        parts = sum(estimate_content_tokens(message["content"]) for message in request.messages if not isinstance(message["content"], str))
        estimated_tokens = request.max_tokens + text_chars // 4 + parts
        async with self.limiter.slot(estimated_tokens) as outcome:
            self.stats["requests"] += 1
            started = time.monotonic()
            try:
                async with self._client().post(self.chat_url, data=request.encoded()) as response:
                    status = response.status
                    # An error's message is in its first bytes; an answer may be longer, up to the cap.
                    raw = await _read_capped(response, self._max_reply_bytes if status == 200 else 65536)
                    headers = response.headers
            except TimeoutError:
                self.stats["connection_errors"] += 1
                raise self._failure(started, f"no answer within --timeout {self._timeout:g} s", timed_out=True) from None
            except aiohttp.ClientError as error:
                self.stats["connection_errors"] += 1
                raise self._failure(started, f"{type(error).__name__}: {error}") from None
            self.stats[f"http_{status}"] += 1
            if status == 200:
                answer = self._parse(raw, headers, request, started)
                outcome.ok = True
                self.watch.answered()
                return answer
            outcome.throttled = status == 429
            message, code, param = self._error_details(raw or b"")
        if status == 429:
            self.last_error = f"HTTP 429: {message}"
            self.watch.throttled(started, self.last_error)
            raise RetryableError(self.last_error, parse_retry_after(headers), throttled=True, status=429)
        if status >= 500 and request.response_format is not None and not self._verified.is_set() and "response_format" in message:
            # llama-cpp-python answers a response_format it cannot read with a 500 (its validation error): no retry mends it.
            fix = fix_for_refused_field(message, None, request.shape)
            raise TeacherFatalError(f"the teacher at {redact_url(self.base_url)} refused the request (HTTP {status}): {one_line(message)}; {fix}")
        if status in (408, 409) or status >= 500:
            failed = self._failure(started, f"HTTP {status}: {message}", status=status)
            failed.retry_after = parse_retry_after(headers)
            raise failed
        self.watch.answered()  # a 4xx is the server's considered answer: it is alive
        where = redact_url(self.base_url)
        if status in (401, 403):
            raise TeacherFatalError(
                f"the teacher at {where} rejected the API key (HTTP {status}); set {self._key_variable} to a valid key for it"
            )
        if status == 404:
            what = "deployment" if self.info.kind == "azure" else "model"
            raise TeacherFatalError(
                f"the teacher at {where} answered 404 for {what} {self.info.model!r}: {message}; check --model and --base-url"
            )
        if self._verified.is_set() or status == 413 or code == "context_length_exceeded" or _ITEM_TOO_BIG.search(message):
            # After the run's first answer the request's shape is known good: this item alone is at fault.
            self.stats["refused"] += 1
            self.last_error = f"HTTP {status}: {message}"
            raise RequestRefused(self.last_error, status=status)
        fix = fix_for_refused_field(message, param, request.shape)
        raise TeacherFatalError(f"the teacher at {where} refused the request (HTTP {status}): {message}" + (f"; {fix}" if fix else ""))

    def _parse(self, raw: bytes | None, headers: Mapping[str, str], request: ChatRequest, started: float) -> tuple[ChatReply, Any]:
        if raw is None:
            self.stats["oversized"] += 1
            self.watch.answered()  # the server is alive; this one answer is not usable
            raise RequestRefused(
                f"a reply body over {self._max_reply_bytes} bytes (--max-reply-bytes); not read further", reason="oversized_reply"
            )
        try:
            data = json.loads(raw)
            reply = parse_completion(data)
        except ValueError:
            self.stats["malformed"] += 1
            what = _not_json(raw, headers.get("Content-Type", ""), [self._api_key])
            if not self._verified.is_set() and what is not None:
                # A web page where completions should be (a wrong --base-url, a proxy's login page) will not
                # turn into one on a retry: stop before every item tries it.
                raise TeacherFatalError(
                    f"the teacher at {redact_url(self.base_url)} answered HTTP 200 with {what}, not a chat completion;"
                    " check --base-url (the server's OpenAI-compatible root, usually ending in /v1)"
                ) from None
            raise self._failure(started, "malformed response body" + (f": {what}" if what else ""), status=200) from None
        except RetryableError as error:
            self.stats["error_body" if str(error).startswith("HTTP 200") else "malformed"] += 1
            raise self._failure(started, self._hide_key(str(error)), status=200) from None
        limit = request.max_tokens * MAX_CHARS_PER_TOKEN + 4096
        if len(reply.text) > limit:
            self.stats["oversized"] += 1
            raise RequestRefused(
                f"an answer of {len(reply.text)} characters, far more than --max-tokens {request.max_tokens} can produce",
                reason="oversized_reply",
            )
        return reply, data

    def _error_details(self, raw: bytes) -> tuple[str, str | None, object]:
        """The error's message (one line, no secret), code and param, from a JSON error body or plain text."""
        code = param = None
        try:
            data = json.loads(raw)
            message = self._hide_key(_message_of(data), first_line=False)
            if isinstance(data.get("error"), dict):
                code, param = data["error"].get("code"), data["error"].get("param")
        except (ValueError, AttributeError):
            message = _page_words(raw, [self._api_key])
        return message, code if isinstance(code, str) else None, param

    def _hide_key(self, message: str, first_line: bool = True) -> str:
        # Servers echo the key or the headers they were given, whole, wrapped, cut or encoded: quote only the words.
        return server_message(message, [self._api_key], first_line=first_line)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_capped(response, cap: int) -> bytes | None:
    """The body, or None when it is longer than `cap` (then not read further: memory stays bounded)."""
    length = response.content_length
    if length is not None and length <= cap:
        return await response.read()
    if length is not None:
        return None
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _page_words(raw: bytes, secrets: list[str], limit: int = 200) -> str:
    """A text body's first words, an HTML page by its title (a gateway's 502 page, a proxy's sign-in page)."""
    head = raw[:4096].lstrip()
    title = _TITLE.search(head)
    text = (title.group(1) if title else head).decode("utf-8", "replace")
    return server_message(_TAG.sub(" ", text), secrets, limit=limit)


def _not_json(raw: bytes, content_type: str, secrets: list[str]) -> str | None:
    """What came back instead of JSON, in a few words ("a text/html page: 'Sign in - Corp Proxy'"), when it
    is a page or text rather than a cut-off JSON body; None for broken JSON."""
    kind = content_type.split(";")[0].strip() or "no content type"
    if raw.lstrip().startswith((b"{", b"[")) and "json" in kind:
        return None
    words = _page_words(raw, secrets, limit=80)
    return f"a {kind} page: {words!r}" if words else f"a {kind} body"
