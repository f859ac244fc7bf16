"""The teacher: one small interface (`complete`), with the mock and OpenAI-compatible backends beneath it.

Retries, backoff, rate limits and the first-request probe live here, invisible to the task code.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import time
from collections import Counter
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, PrivateAttr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from datagen.errors import TeacherFatalError
from datagen.ratelimit import RateLimiter
from datagen.records import TeacherInfo, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class ChatRequest(BaseModel):
    # Frozen: the serialised form below is kept, so a changed request must be a new one (model_copy).
    model_config = ConfigDict(frozen=True)

    model: str
    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    seed: int
    _encoded: tuple[bytes, str] | None = PrivateAttr(default=None)

    def body(self) -> dict:
        return self.model_dump()

    def encoded(self) -> bytes:
        """The body as sent: canonical JSON (sorted keys, compact, UTF-8), serialised once per request."""
        return self._canonical()[0]

    def key(self) -> str:
        """Cache key: the sha256 of the canonical body."""
        return self._canonical()[1]

    def _canonical(self) -> tuple[bytes, str]:
        if self._encoded is None:
            body = {name: getattr(self, name) for name in type(self).model_fields}  # model_dump() would copy every message
            data = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
            self._encoded = (data, hashlib.sha256(data).hexdigest())
        return self._encoded

    def model_copy(self, *, update: dict | None = None, deep: bool = False) -> ChatRequest:
        copied = super().model_copy(update=update, deep=deep)
        copied._encoded = None  # pydantic copies private attributes too; the copy serialises itself afresh
        return copied


class ChatReply(BaseModel):
    text: str
    finish_reason: str | None
    usage: Usage


class Teacher(Protocol):
    info: TeacherInfo
    stats: Counter[str]

    async def complete(self, request: ChatRequest) -> ChatReply: ...

    async def aclose(self) -> None: ...


class MockTeacher:
    """Offline, deterministic answers built only from the context; labelled mock everywhere it appears."""

    def __init__(self, variant: str = "default") -> None:
        # A variant is a second offline teacher with its own name, so two-teacher comparisons run offline too.
        self.variant = variant
        self.info = TeacherInfo(kind="mock", model="mock" if variant == "default" else f"mock-{variant}", mock=True)
        self.stats: Counter[str] = Counter()

    async def complete(self, request: ChatRequest) -> ChatReply:
        from datagen.mock_teacher import estimate_tokens, mock_answer

        self.stats["requests"] += 1
        text = mock_answer(request.messages, request.seed, self.variant)
        finish_reason = "stop"
        completion_tokens = estimate_tokens(text)
        if completion_tokens > request.max_tokens:
            # Mirror a real server: cut the answer and say so, so truncation handling is exercised offline too.
            text, finish_reason, completion_tokens = text[: request.max_tokens * 4], "length", request.max_tokens
        prompt_tokens = sum(estimate_tokens(message["content"]) for message in request.messages)
        return ChatReply(text=text, finish_reason=finish_reason, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))

    async def aclose(self) -> None:
        return None


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def redact_url(url: str) -> str:
    """Drop user:password and the query string (Azure-style keys travel there) before a URL is logged or saved."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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


def parse_completion(data: object) -> ChatReply:
    """A chat.completion object, live or from a Batch API output line, as a reply."""
    try:
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return ChatReply(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=usage.get("prompt_tokens") or 0, completion_tokens=usage.get("completion_tokens") or 0),
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RetryableError("malformed response body") from None


class OpenAITeacher:
    """Chat completions over a lean aiohttp transport, configured the way the openai client is.

    The openai SDK spends ~4 ms of CPU per request on this machine, our whole per-record budget; the wire
    format is the same, so we send the request ourselves and keep the SDK for the Batch API's file calls.
    """

    def __init__(
        self,
        model: str,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 120.0,
        max_retries: int = 6,
        concurrency: int = 16,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.info = TeacherInfo(kind="openai", model=model, mock=False)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._max_retries = max_retries
        self._concurrency = concurrency
        self.limiter = limiter or RateLimiter(concurrency=concurrency)
        self._session = None
        self._verified = asyncio.Event()
        self._probe_lock = asyncio.Lock()
        self._fatal: TeacherFatalError | None = None
        self.stats: Counter[str] = Counter()

    def _client(self):
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
                json_serialize=json.dumps,
            )
        return self._session

    async def complete(self, request: ChatRequest) -> ChatReply:
        if not self._verified.is_set():
            # One request goes first: a wrong key or model then costs one request, not `concurrency` of them.
            async with self._probe_lock:
                if self._fatal is not None:
                    raise self._fatal
                if not self._verified.is_set():
                    try:
                        reply = await self._complete_with_retries(request)
                    except TeacherFatalError as error:
                        self._fatal = error
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

    async def _send(self, request: ChatRequest) -> ChatReply:
        import aiohttp

        estimated_tokens = request.max_tokens + sum(len(message["content"]) for message in request.messages) // 4
        async with self.limiter.slot(estimated_tokens) as outcome:
            self.stats["requests"] += 1
            try:
                async with self._client().post(self.base_url + "/chat/completions", data=request.encoded()) as response:
                    status = response.status
                    raw = await response.read()
                    headers = response.headers
            except (asyncio.TimeoutError, aiohttp.ClientError) as error:
                self.stats["connection_errors"] += 1
                raise RetryableError(f"{type(error).__name__}: {error}") from None
            self.stats[f"http_{status}"] += 1
            if status == 200:
                reply = self._parse(raw)
                outcome.ok = True
                return reply
            outcome.throttled = status == 429
            message = self._error_message(raw)
        if status in (408, 409, 429) or status >= 500:
            raise RetryableError(f"HTTP {status}: {message}", parse_retry_after(headers))
        where = redact_url(self.base_url)
        if status in (401, 403):
            raise TeacherFatalError(
                f"the teacher at {where} rejected the API key (HTTP {status}); set OPENAI_API_KEY to a valid key for it"
            )
        if status == 404:
            raise TeacherFatalError(
                f"the teacher at {where} answered 404 for model {self.info.model!r}: {message}; check --model and --base-url"
            )
        raise TeacherFatalError(f"the teacher at {where} refused the request (HTTP {status}): {message}")

    def _parse(self, raw: bytes) -> ChatReply:
        try:
            return parse_completion(json.loads(raw))
        except (ValueError, RetryableError):
            self.stats["malformed"] += 1
            raise RetryableError("malformed response body") from None

    def _error_message(self, raw: bytes) -> str:
        try:
            message = str(json.loads(raw)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = raw[:200].decode("utf-8", "replace")
        # Some servers quote part of the key they were given; never pass it on.
        return message.replace(self._api_key, "***") if self._api_key else message

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
