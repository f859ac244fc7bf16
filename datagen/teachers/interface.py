"""The teacher interface: the canonical request (its body, bytes and cache key), the reply, and the Teacher protocol.

Every provider (datagen/teachers/providers/) turns a ChatRequest into its own wire format and its answer into a
ChatReply; the request's canonical form and key are the same whichever provider sends it, so the response cache and
a resume work alike for all of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from datagen.formats.records import TeacherInfo, Usage
from datagen.teachers.ratelimit import RateLimiter
from datagen.teachers.request_shape import RequestShape


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


def canonical_json(value: object) -> bytes:
    """`value` as datagen sends JSON: sorted keys, compact, UTF-8 (a provider's own body, made from the request)."""
    return _canonical_json(value, hashed=False)[0]


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
