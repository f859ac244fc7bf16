"""What a person watching `generate` sees: a live bar while it runs, a summary table when it ends."""

from __future__ import annotations

from functools import cache
from typing import Any

from datagen.formats.manifest import Manifest


@cache
def _console():
    # rich is imported on first use: a run without the bar (no terminal) reaches its first request ~50 ms sooner.
    from rich.console import Console

    return Console(stderr=True)


class ProgressDisplay:
    """The live bar of a `generate` job (run/pipeline.py's GenerateJob): it hears each item's end from the tally."""

    def __init__(self, job, enabled: bool = True) -> None:
        self.job = job
        self.enabled = enabled
        self.rejects = 0
        self.skipped = 0
        self._progress: Any = None  # a rich Progress once entered, imported only when shown
        self._bar: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]generate"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=_console(),
                refresh_per_second=4,
            )
            self._progress.__enter__()
            self._bar = self._progress.add_task("generate", total=self.job.remaining(), rate="", status="")
        self.job.tally.listener = self.advance
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def advance(self, outcome: str) -> None:
        if outcome == "skipped":
            self.skipped += 1
        elif outcome == "rejected":
            self.rejects += 1
        if not self.enabled:
            return
        bar = self._progress.tasks[self._bar]
        usage = self.job.tally.usage
        limiter = self.job.teacher.limiter
        limit = f" | limit {limiter.limit}/{limiter.max_concurrency}" if limiter is not None else ""
        speed = bar.speed or 0.0
        self._progress.update(
            self._bar,
            advance=1,
            rate=f"{speed:,.1f} rec/s",
            status=f"tokens {usage.prompt_tokens + usage.completion_tokens:,} | rejects {self.rejects} | skipped {self.skipped}{limit}",
        )


def show_summary(manifest: Manifest) -> None:
    """The table a finished `generate` prints: per task what was requested, written, rejected and skipped."""
    from rich.table import Table

    console = _console()
    table = Table(title=f"datagen generate: {manifest.status} ({'MOCK teacher' if manifest.teacher.mock else manifest.teacher.model})")
    for column in ("task", "requested", "written", "rejected", "skipped"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task, counts in manifest.counts.items():
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items())) or "0"
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.skipped.items())) or "0"
        table.add_row(task, str(counts.requested), str(counts.written), rejected, skipped)
    console.print(table)
    usage = manifest.usage
    cached = f" ({usage.cached_tokens:,} cached)" if usage.cached_tokens else ""
    unreported = f" | {usage.unreported} answers without usage" if usage.unreported else ""
    console.print(
        f"tokens: {usage.prompt_tokens:,} prompt{cached} + {usage.completion_tokens:,} completion{unreported}"
        f" | requests sent {manifest.requests_sent} | cache hits {manifest.cache_hits}",
        markup=False,
    )
    if manifest.last_error:
        console.print(f"teacher's last error: {manifest.last_error}", markup=False, soft_wrap=True)  # one line, however long
    if manifest.source.hard_cases:
        handled = ", ".join(f"{case.replace('_', ' ')} {n}" for case, n in manifest.source.hard_cases.items())
        console.print(f"source: {manifest.source.images:,} images; handled {handled}")
