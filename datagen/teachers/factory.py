"""Building a teacher from command-line settings: shared by `generate` (the teacher) and `judge` (the judge).

Both choose among the same providers (datagen/teachers/providers/registry.py), so the HTTP clients, their
retries and rate limits are configured in one place; each command brings its own offline mock backends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from pydantic import BaseModel

from datagen.teachers.endpoints import HTTP_TEACHERS, resolve_endpoint
from datagen.errors import InputError
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY, RateLimiter
from datagen.teachers.health import DEFAULT_GIVE_UP_AFTER
from datagen.teachers.providers.registry import PROVIDERS
from datagen.teachers.teacher import DEFAULT_MAX_REPLY_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Teacher


class BackendSettings(BaseModel):
    kind: str = "openai"
    model: str | None = None
    base_url: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    rpm: float | None = None
    tpm: float | None = None
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES


def check_kind(kind: str, mocks: Mapping[str, Callable[[], Teacher]], kind_flag: str = "--teacher") -> None:
    """An unknown backend is named with every one this command knows: its HTTP kinds and its own offline mocks."""
    if kind not in mocks and kind not in HTTP_TEACHERS:
        raise InputError(f"{kind_flag} {kind}: unknown backend; use {', '.join([*HTTP_TEACHERS, *mocks])}")


def build_teacher(
    settings: BackendSettings,
    mocks: Mapping[str, Callable[[], Teacher]],
    kind_flag: str = "--teacher",
    model_flag: str = "--model",
    environ: Mapping[str, str] = os.environ,
) -> Teacher:
    """`settings.kind` names a provider of the registry or one of `mocks` (offline backends, each labelled mock by itself)."""
    check_kind(settings.kind, mocks, kind_flag)
    if settings.kind in mocks:
        return mocks[settings.kind]()
    base_url, api_key = resolve_endpoint(settings.kind, settings.model, settings.base_url, environ, kind_flag=kind_flag, model_flag=model_flag)
    assert settings.model is not None and api_key is not None  # resolve_endpoint refuses either missing
    return PROVIDERS[settings.kind](
        model=settings.model,
        api_key=api_key,
        base_url=base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        concurrency=settings.concurrency,
        limiter=RateLimiter(rpm=settings.rpm, tpm=settings.tpm, concurrency=settings.concurrency),
        give_up_after=settings.give_up_after,
        max_reply_bytes=settings.max_reply_bytes,
    )
