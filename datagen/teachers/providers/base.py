"""What every HTTP provider shares, whatever its wire format: the transport (a lean aiohttp session, replies read
up to a cap), the first-request probe, retries (retry.py), the rate limiter and the dead-server watch (health.py),
and the way each HTTP status is taken (an answer, a throttle, a failure to retry, a fatal refusal, one item refused).

A provider subclass says only what differs on the wire: where requests go, the key's header, the body it sends
for a ChatRequest, how its answer becomes a ChatReply, and how it names what a 404 did not find.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from datagen.errors import ServerUnavailable, TeacherFatalError
from datagen.formats.records import TeacherInfo
from datagen.redaction import one_line, redact_url, server_message
from datagen.teachers.health import DEFAULT_GIVE_UP_AFTER, ServerWatch
from datagen.teachers.interface import ChatReply, ChatRequest
from datagen.teachers.providers.retry import RequestRefused, RetryableError, parse_retry_after, retried
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY, RateLimiter
from datagen.teachers.request_shape import fix_for_refused_field
from datagen.teachers.vision import estimate_content_tokens

# The client's defaults, shared by `generate` (datagen/run/options.py) and anything else that builds a teacher.
DEFAULT_TIMEOUT = 120.0  # seconds per request before it is retried
DEFAULT_MAX_RETRIES = 6  # per request, on 5xx, timeouts and dropped connections (429s are waited out by time)
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024  # a chat completion of --max-tokens is a few KB; more is not an answer
# No tokenizer spends more characters on a token than this, on average over a whole answer: an answer longer
# than `max_tokens * MAX_CHARS_PER_TOKEN` (plus a margin) did not come from a request with that limit.
MAX_CHARS_PER_TOKEN = 32

# A 4xx that names this item's size, not the request's shape: refusing the item lets the run go on.
_ITEM_TOO_BIG = re.compile(r"context.length|context.window|maximum context|too many tokens|too long|too large|exceeds the", re.IGNORECASE)


class HTTPTeacher(ABC):
    """A teacher behind an HTTP API; subclasses (one per wire format) fill in the class attributes and the hooks."""

    kind: ClassVar[str]  # the --teacher name, and the manifest's teacher.kind
    key_variable: ClassVar[str]  # the environment variable holding the API key
    default_base_url: ClassVar[str]
    base_url_variable: ClassVar[str | None] = None  # an environment variable that overrides the default base URL
    model_noun: ClassVar[str] = "model"  # what --model names on this API, in messages
    key_hint: ClassVar[str] = ""  # said after "export it" when the key variable is not set
    reply_noun: ClassVar[str]  # what a 200 should hold, named when it holds a web page instead
    base_url_hint: ClassVar[str]  # what --base-url should name, said with that web page
    # Statuses that mean "slow down" rather than "failed": waited out by time (the watch's longer patience), the
    # limiter halving its concurrency, not counted against --max-retries.
    throttle_statuses: ClassVar[frozenset[int]] = frozenset({429})

    def __init__(
        self,
        model: str,
        api_key: str,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        concurrency: int = DEFAULT_CONCURRENCY,
        limiter: RateLimiter | None = None,
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        verified: bool = False,
    ) -> None:
        """`verified`: the endpoint already answered this run's requests elsewhere (another worker of a
        `datagen ray` run), so no probe goes first and a 4xx refuses the item alone."""
        base_url = base_url or self.default_base_url
        self.info = TeacherInfo(kind=self.kind, model=model, mock=False)
        self.base_url = base_url.rstrip("/")
        self.request_url = self._request_url(base_url)
        self._api_key = api_key
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
        self._last_timed_out = False  # whether last_error is a timeout: only then is --timeout worth suggesting

    # -- what a provider says about itself -------------------------------------------------------------------

    @classmethod
    def endpoint(cls, model: str, base_url: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
        """The base URL for `model`, and where it came from (a flag or variable, named when it is wrong)."""
        if base_url:
            return base_url, "--base-url"
        if cls.base_url_variable and environ.get(cls.base_url_variable):
            return environ[cls.base_url_variable], cls.base_url_variable
        return cls.default_base_url, "the default base URL"

    @abstractmethod
    def _request_url(self, base_url: str) -> str:
        """Where requests are posted, from the base URL (its query string kept)."""

    @abstractmethod
    def _headers(self) -> dict[str, str]:
        """The key's header and any other the API requires on every request."""

    @abstractmethod
    def _encode(self, request: ChatRequest) -> bytes:
        """The body sent for `request`."""

    @abstractmethod
    def _reply(self, data: Any) -> ChatReply:
        """The answer in a 200's JSON body; RetryableError when it is none (an error object, a broken shape)."""

    def _not_found(self, where: str, message: str) -> str:
        return f"the teacher at {where} answered 404 for {self.model_noun} {self.info.model!r}: {message}; check --model and --base-url"

    # -- the teacher interface -------------------------------------------------------------------------------

    def _client(self):
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={**self._headers(), "Content-Type": "application/json"},
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
                    sent_before = self.stats["requests"]
                    try:
                        answer = await self._complete_with_retries(request)
                    except (RetryableError, ServerUnavailable) as error:
                        # No answer at all yet, after every retry (or the watch's whole window): the server is down,
                        # still loading its model, or not where --base-url points. Going on would only skip every
                        # item the same way. A server that only rate-limits is alive: the watch's line says so.
                        if isinstance(error, ServerUnavailable) and not error.silent:
                            self._fatal = error
                            raise
                        self._fatal = self._unreachable(self.last_error or str(error), self.stats["requests"] - sent_before)
                        raise self._fatal from None
                    except TeacherFatalError as error:
                        self._fatal = error
                        self.last_error = str(error)
                        raise
                    self._verified.set()
                    return answer
        return await self._complete_with_retries(request)

    async def _complete_with_retries(self, request: ChatRequest) -> tuple[ChatReply, Any]:
        try:
            return await self._send(request)
        except RetryableError as error:
            return await retried(lambda: self._send(request), error, self._max_retries, self._before_retry)

    def _before_retry(self) -> None:
        self.watch.check()  # another request may have found the server dead during the wait
        self.stats["retries"] += 1

    def _unreachable(self, last_error: str, tries: int) -> TeacherFatalError:
        # The tries counted are those this request made (the watch may stop it before --max-retries is spent).
        slow = ", or raise --timeout if the model takes longer to answer" if self._last_timed_out else ""
        return TeacherFatalError(
            f"the teacher at {redact_url(self.base_url)} gave no answer to the run's first request ({tries} tr{'y' if tries == 1 else 'ies'}; "
            f"last: {one_line(last_error, 200)}); start the server or wait until it has loaded the model (or fix --base-url){slow}, then rerun"
        )

    def _failure(self, started: float, message: str, timed_out: bool = False, status: int | None = None) -> RetryableError:
        """A failed attempt: counted by the watch (which may stop the run), remembered, and retried."""
        self.last_error = message
        self._last_timed_out = timed_out
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
                async with self._client().post(self.request_url, data=self._encode(request)) as response:
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
            outcome.throttled = status in self.throttle_statuses
            message, code, param = self._error_details(raw or b"")
        if status in self.throttle_statuses:
            self.last_error = f"HTTP {status}: {message}"
            self._last_timed_out = False
            self.watch.throttled(started, self.last_error)
            raise RetryableError(self.last_error, parse_retry_after(headers), throttled=True, status=status)
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
                f"the teacher at {where} rejected the API key (HTTP {status}); set {self.key_variable} to a valid key for it"
            )
        if status == 404:
            raise TeacherFatalError(self._not_found(where, message))
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
            reply = self._reply(data)
        except ValueError:
            self.stats["malformed"] += 1
            what = _not_json(raw, headers.get("Content-Type", ""), [self._api_key])
            if not self._verified.is_set() and what is not None:
                # A web page where answers should be (a wrong --base-url, a proxy's login page) will not
                # turn into one on a retry: stop before every item tries it.
                raise TeacherFatalError(
                    f"the teacher at {redact_url(self.base_url)} answered HTTP 200 with {what}, not {self.reply_noun};"
                    f" check --base-url ({self.base_url_hint})"
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
            message = self._hide_key(message_of(data), first_line=False)
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


def message_of(data: object) -> str:
    """The message of an error object as OpenAI and Anthropic both write it (`{"error": {"message": ...}}`), or a bare string."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return str(error if error is not None else data)


def token_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def chat_content_text(content: object) -> str:
    """`content` as a string, or as a list of parts (gateways, reasoning models, Anthropic's blocks): the text parts joined."""
    if isinstance(content, list):
        return "".join(part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str))
    if content is None or isinstance(content, str):
        return content or ""
    raise TypeError("content is neither text nor a list of parts")


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
