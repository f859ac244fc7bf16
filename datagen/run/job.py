"""The resumable job core: `generate`, `judge` and any later pass over items (filters, rewriting) run through it.

A job is a set of items, each done once it has a line in the job's output folder. `run_job` holds the folder's
lock, opens the job (claims the folder, reads what is done, opens its writers and the response cache), puts its
pending items through a pool of workers, and ends by writing the job's own record of the run (a manifest, a
summary) with one of these statuses, whatever stopped it:

    status        exit  meaning
    completed     0     every item has its line (a record or a reject), or was skipped for good (no caption...)
    incomplete    3     some items got no answer (live retries spent, a batch or results file without them); rerun
    failed        1     nothing usable came back (every request failed, no record passed); the line says why
    interrupted   130   Ctrl-C
    interrupted   143   SIGTERM (timeout, docker stop, Kubernetes, Slurm): handled as Ctrl-C is
    -             2     bad input, a refused key or model: one line naming the flag or file, before any item

A disk that fills, a broken cache or a teacher that cannot go on ends the job with one line too; the job's record
is written with the true counts wherever the disk still allows. A kill -9 loses nothing: each item's line is
appended whole, the response cache holds the answers in flight, and a rerun resumes exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from datagen.errors import INCOMPLETE_EXIT, TERMINATED_EXIT, TeacherFatalError, Terminated, leading_error, on_sigterm
from datagen.files.lock import lock_folder
from datagen.files.storage_errors import StorageError

Result = TypeVar("Result")

EXIT_CODES = {"completed": 0, "failed": 1, "incomplete": INCOMPLETE_EXIT, "interrupted": 130}
__all__ = ["EXIT_CODES", "TERMINATED_EXIT", "Job", "job_folder", "run_job"]


class Job(ABC, Generic[Result]):
    """One pass over items into one output folder; `run_job` drives it."""

    out: Path
    command: str  # names the holder of the folder's lock: generate, judge, ...
    concurrency: int

    @abstractmethod
    def open(self) -> None:
        """Claim the folder (refusing other settings), read the items it holds, open the writers and the cache."""

    def started(self) -> None:
        """Called once open, before the first item: record that the run is under way (a `running` manifest)."""

    @abstractmethod
    def pending(self) -> Iterator[Any]:
        """The items not yet done, one at a time: workers pull the next when free."""

    @abstractmethod
    async def process(self, item: Any) -> None:
        """Do one item: ask, check, append its line, count it. Transient failures are counted, not raised."""

    @abstractmethod
    async def close(self) -> None:
        """Close the writers, the cache and the teachers; called however the items ended."""

    @abstractmethod
    def verdict(self) -> tuple[str, str | None]:
        """The status of a run whose items all ended (completed, incomplete or failed) and why, if not completed."""

    @abstractmethod
    def finish(self, status: str, failure: str | None) -> Result:
        """Write the job's record of the run (its manifest, its summary) and return it."""

    def progress(self) -> contextlib.AbstractContextManager[Any]:
        """What a person watching sees while the items run; nothing by default."""
        return contextlib.nullcontext()


_held: set[Path] = set()


@contextlib.contextmanager
def job_folder(out: Path, command: str) -> Iterator[None]:
    """The folder's lock (a second writer is refused at once) and SIGTERM handled as Ctrl-C, for a whole command:
    `generate` holds it over a batch's wait or a results file's ingest too, and `run_job` inside takes it no more."""
    key = out.resolve()
    if key in _held:
        yield
        return
    with lock_folder(out, command), on_sigterm(_termination.handle):
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)


class _Termination:
    """SIGTERM ends the job as Ctrl-C does: while items run, the main task is cancelled (the workers stop, the
    writers close, the record is written), and the run ends in `Terminated`; before or after, it is raised at once."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.requested = False

    def handle(self, signum: int, frame: object) -> None:
        task = self.task
        if task is not None and not task.done() and not self.requested:
            self.requested = True
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        raise Terminated()


_termination = _Termination()


@contextlib.contextmanager
def collector_for_a_long_run() -> Iterator[None]:
    """The cyclic garbage collector set for the run's event loop, and as it was afterwards.

    What was built before the first request (the annotations above all) lives as long as the run: frozen, the
    collector stops walking it on every full collection. A thousand requests in flight keep many young objects
    alive, which the default thresholds walk every 700 allocations; at 10,000 most have died by then. At
    concurrency 1,024 this took the collector's share of the client's CPU from 15% to 6%.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextlib.asynccontextmanager
async def _watched() -> AsyncIterator[None]:
    _termination.task, _termination.requested = asyncio.current_task(), False
    try:
        yield
    finally:
        _termination.task = None


async def _work(job: Job) -> None:
    items = job.pending()

    async def worker() -> None:
        for item in items:  # one shared iterator: workers pull the next item when free
            await job.process(item)

    async with _watched():
        try:
            with job.progress():
                async with asyncio.TaskGroup() as group:
                    for _ in range(max(1, job.concurrency)):
                        group.create_task(worker())
        except ExceptionGroup as group:
            raise leading_error(group) from None
        finally:
            await job.close()


def run_job(job: Job[Result]) -> Result:
    """Do `job`'s pending items and write its record of the run, whatever stops it (module docstring)."""
    with job_folder(job.out, job.command):
        job.open()
        job.started()
        status, failure = "failed", None
        try:
            with collector_for_a_long_run():
                try:
                    asyncio.run(_work(job))
                except asyncio.CancelledError:
                    if not _termination.requested:
                        raise
                    raise Terminated() from None
                finally:
                    terminated, _termination.requested = _termination.requested, False
                if terminated:  # a SIGTERM that came as the last item ended: the run still stops here
                    raise Terminated()
            status, failure = job.verdict()
        finally:
            error = sys.exc_info()[1]
            if isinstance(error, KeyboardInterrupt):
                status = "interrupted"
            if isinstance(error, TeacherFatalError):
                failure = str(error)
            try:
                result = job.finish(status, failure)
            except (OSError, sqlite3.Error, StorageError):
                if error is None:
                    raise
                # The disk that stopped the run may refuse the record too: it stays as it was, and the error that
                # stopped the run is the one reported.
        return result
