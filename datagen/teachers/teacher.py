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
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, PrivateAttr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from datagen.teachers.endpoints import DEFAULT_BASE_URL
from datagen.errors import TeacherFatalError
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY, RateLimiter
from datagen.formats.records import TeacherInfo, Usage
from datagen.redaction import one_line, redact_secrets, redact_url
from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.request_shape import RequestShape, fix_for_refused_field
from datagen.teachers.vision import estimate_content_tokens


# The client's defaults, shared by `generate` (datagen/run/options.py) and anything else that builds a teacher.
DEFAULT_TIMEOUT = 120.0  # seconds per request before it is retried
DEFAULT_MAX_RETRIES = 6  # per request, on 429, 5xx, timeouts and dropped connections


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
        return body

    def encoded(self) -> bytes:
        """The body as sent: canonical JSON (sorted keys, compact, UTF-8), serialised once per request."""
        return self._canonical()[0]

    def key(self) -> str:
        """Cache key: the sha256 of the canonical body, in which each image stands as its own sha256."""
        return self._canonical()[1]

    def _canonical(self) -> tuple[bytes, str]:
        if self._encoded is None:
            data = _canonical_json(self.body())
            has_images = any(not isinstance(message.get("content"), str) for message in self.messages)
            material = _canonical_json({**self.body(), "messages": _images_as_hashes(self.messages)}) if has_images else data
            self._encoded = (data, hashlib.sha256(material).hexdigest())
        return self._encoded

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> ChatRequest:
        copied = super().model_copy(update=update, deep=deep)
        copied._encoded = None  # pydantic copies private attributes too; the copy serialises itself afresh
        return copied


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


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
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestRefused(Exception):
    """The server refused this one request (too long, too large...) after it had accepted the run's first one."""


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


def _server_delay(error: RetryableError) -> float | None:
    if error.retry_after is None:
        return None
    # The server said when; waiting less earns another 429, waiting much more wastes the window.
    return min(error.retry_after, 120.0) + random.uniform(0, 0.25)


# Full-jitter exponential backoff; tenacity's attempt 1 is the request's second (see _complete_with_retries).
_BACKOFF = wait_random_exponential(multiplier=1, max=20)


def _wait_for(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    delay = _server_delay(error) if isinstance(error, RetryableError) else None
    return _BACKOFF(state) if delay is None else delay


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
        raise RetryableError(f"HTTP 200 with an error body: {one_line(_message_of(data))}")
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
    ) -> None:
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
        self._concurrency = concurrency
        self.limiter = limiter or RateLimiter(concurrency=concurrency)
        self._session = None
        self._verified = asyncio.Event()
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
        if not self._verified.is_set():
            # One request goes first: a wrong key or model then costs one request, not `concurrency` of them.
            # Only an answer verifies; an item refused for its size leaves the next request to go first.
            async with self._probe_lock:
                if self._fatal is not None:
                    raise self._fatal
                if not self._verified.is_set():
                    try:
                        reply = await self._complete_with_retries(request)
                    except RetryableError as error:
                        # No answer at all yet, after every retry: the server is down, still loading its model, or
                        # not where --base-url points. Going on would only skip every item the same way.
                        self._fatal = self._unreachable(error)
                        raise self._fatal from None
                    except TeacherFatalError as error:
                        self._fatal = error
                        self.last_error = str(error)
                        raise
                    self._verified.set()
                    return reply
        return await self._complete_with_retries(request)

    async def _complete_with_retries(self, request: ChatRequest) -> ChatReply:
        # Nearly every request succeeds at once; tenacity is set up only after a failure, since its per-call
        # set-up cost ~10% of a record's CPU on the hot path.
        try:
            return await self._send(request)
        except RetryableError as error:
            if self._max_retries == 0:
                raise
            delay = _server_delay(error)
            await asyncio.sleep(random.uniform(0, 0.5) if delay is None else delay)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries),
            wait=_wait_for,
            retry=retry_if_exception_type(RetryableError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                self.stats["retries"] += 1
                return await self._send(request)
        raise AssertionError("unreachable: tenacity returns the reply or reraises the last error")

    def _unreachable(self, error: RetryableError) -> TeacherFatalError:
        tries = self._max_retries + 1
        return TeacherFatalError(
            f"the teacher at {redact_url(self.base_url)} gave no answer to the run's first request ({tries} tr{'y' if tries == 1 else 'ies'}; "
            f"last: {one_line(str(error), 200)}); start the server or wait until it has loaded the model (or fix --base-url), then rerun"
        )

    def _transient(self, message: str, retry_after: float | None = None) -> RetryableError:
        self.last_error = message
        return RetryableError(message, retry_after)

    async def _send(self, request: ChatRequest) -> ChatReply:
        import aiohttp

        text_chars = sum(len(message["content"]) for message in request.messages if isinstance(message["content"], str))
        # Content parts (an image the teacher is shown) count by their own estimate, images by OpenAI's tile formula.
        parts = sum(estimate_content_tokens(message["content"]) for message in request.messages if not isinstance(message["content"], str))
        estimated_tokens = request.max_tokens + text_chars // 4 + parts
        async with self.limiter.slot(estimated_tokens) as outcome:
            self.stats["requests"] += 1
            try:
                async with self._client().post(self.chat_url, data=request.encoded()) as response:
                    status = response.status
                    raw = await response.read()
                    headers = response.headers
            except (TimeoutError, aiohttp.ClientError) as error:
                self.stats["connection_errors"] += 1
                raise self._transient(f"{type(error).__name__}: {error}") from None
            self.stats[f"http_{status}"] += 1
            if status == 200:
                reply = self._parse(raw)
                outcome.ok = True
                return reply
            outcome.throttled = status == 429
            message, code, param = self._error_details(raw)
        if status in (408, 409, 429) or status >= 500:
            raise self._transient(f"HTTP {status}: {message}", parse_retry_after(headers))
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
            raise RequestRefused(self.last_error)
        fix = fix_for_refused_field(message, param, request.shape)
        raise TeacherFatalError(f"the teacher at {where} refused the request (HTTP {status}): {message}" + (f"; {fix}" if fix else ""))

    def _parse(self, raw: bytes) -> ChatReply:
        try:
            return parse_completion(json.loads(raw))
        except ValueError:
            self.stats["malformed"] += 1
            raise self._transient("malformed response body") from None
        except RetryableError as error:
            self.stats["error_body" if str(error).startswith("HTTP 200") else "malformed"] += 1
            raise self._transient(self._hide_key(str(error))) from None

    def _error_details(self, raw: bytes) -> tuple[str, str | None, object]:
        """The error's message (one line, the key hidden), code and param, from a JSON error body or plain text."""
        code = param = None
        try:
            data = json.loads(raw)
            message = _message_of(data)
            if isinstance(data.get("error"), dict):
                code, param = data["error"].get("code"), data["error"].get("param")
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace")
        return self._hide_key(message), code if isinstance(code, str) else None, param

    def _hide_key(self, message: str) -> str:
        # Some servers echo the key or the headers they were given: mask the whole text, then fold and cut it.
        return redact_secrets(message, [self._api_key], limit=300, fold=True)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
