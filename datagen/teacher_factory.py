"""Building a teacher from command-line settings: shared by `generate` (the teacher) and `judge` (the judge).

Both speak to the same kinds of backend through the same layer, so the OpenAI-compatible client, its
retries and rate limits are configured in one place; each command brings its own offline mock backends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from pydantic import BaseModel

from datagen.errors import InputError
from datagen.ratelimit import RateLimiter
from datagen.teacher import DEFAULT_BASE_URL, OpenAITeacher, Teacher


class BackendSettings(BaseModel):
    kind: str = "openai"
    model: str | None = None
    base_url: str | None = None
    concurrency: int = 16
    timeout: float = 120.0
    max_retries: int = 6
    rpm: float | None = None
    tpm: float | None = None


def build_teacher(
    settings: BackendSettings,
    mocks: Mapping[str, Callable[[], Teacher]],
    kind_flag: str = "--teacher",
    model_flag: str = "--model",
    environ: Mapping[str, str] = os.environ,
) -> Teacher:
    """`settings.kind` is "openai" or one of `mocks` (offline backends, each labelled mock by itself)."""
    if settings.kind in mocks:
        return mocks[settings.kind]()
    if settings.kind != "openai":
        raise InputError(f"{kind_flag} {settings.kind}: unknown backend; use openai or {' / '.join(mocks)}")
    if not settings.model:
        raise InputError(f"{model_flag} is required with {kind_flag} openai; pass the model name your endpoint serves")
    api_key = environ.get("OPENAI_API_KEY")
    if not api_key:
        raise InputError(
            f"OPENAI_API_KEY is not set; export it (local servers that ignore keys accept any value), or use {kind_flag} mock for an offline run"
        )
    return OpenAITeacher(
        model=settings.model,
        api_key=api_key,
        base_url=settings.base_url or environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        concurrency=settings.concurrency,
        limiter=RateLimiter(rpm=settings.rpm, tpm=settings.tpm, concurrency=settings.concurrency),
    )
