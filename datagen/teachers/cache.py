"""Response cache: SQLite in WAL mode, keyed by the request hash, beneath the teacher interface.

Every reply is stored, including ones validation refuses, so a rerun with changed rules re-validates
without a request, and a killed run never pays twice for an answer it already received.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from datagen.errors import InputError
from datagen.teachers.ratelimit import RateLimiter
from datagen.files.storage_errors import cache_failure
from datagen.teachers.teacher import ChatReply, ChatRequest, Teacher


class ResponseCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a committed row survives a killed process (not a power cut), without an fsync per answer.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorname", "") == "SQLITE_FULL":
                raise cache_failure(path, error) from None
            raise InputError(f"--cache {path}: cannot open as a SQLite cache ({error}); pass another path or --no-cache") from None

    # The file is checked when opened, but it can be damaged (or its disk fill up) while the run goes.

    def get(self, key: str) -> ChatReply | None:
        try:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as error:
            raise cache_failure(self.path, error) from None
        try:
            return ChatReply.model_validate_json(row[0]) if row else None
        except ValueError as error:  # a row that is not a stored reply: the file was written over
            raise cache_failure(self.path, error) from None

    def put(self, key: str, reply: ChatReply) -> None:
        try:
            self._db.execute("INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)", (key, reply.model_dump_json()))
        except sqlite3.Error as error:
            raise cache_failure(self.path, error) from None

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as error:
            raise cache_failure(self.path, error) from None


class CachingTeacher:
    """A teacher that answers from the cache when it can and stores whatever the inner teacher answers."""

    def __init__(self, inner: Teacher, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.info = inner.info
        self.stats: Counter[str] = inner.stats

    # Provenance, the last error and the limiter belong to the teacher beneath; the manifest reads them here.
    @property
    def base_url(self) -> str | None:
        return self.inner.base_url

    @property
    def last_error(self) -> str | None:
        return self.inner.last_error

    @property
    def limiter(self) -> RateLimiter | None:
        return self.inner.limiter

    async def complete(self, request: ChatRequest) -> ChatReply:
        key = request.key()
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached
        reply = await self.inner.complete(request)
        self.cache.put(key, reply)
        return reply

    async def aclose(self) -> None:
        await self.inner.aclose()
        self.cache.close()
