"""What a person watching `generate` sees: a live bar while it runs, a summary table when it ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, TextIO

from datagen.formats.manifest import Manifest
from datagen.formats.metrics import figures
from datagen.run.prices import Costing, cost_line


def _console(stream: TextIO | None = None):
    """rich's console on stderr, or on `stream` (where `ray` keeps our lines while Ray's own output fills fd 2)."""
    # rich is imported on first use: a run without the bar (no terminal) reaches its first request ~50 ms sooner.
    from rich.console import Console

    return _stderr_console() if stream is None else Console(file=stream)


@cache
def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _clock_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _packed(parts: list[str], width: int) -> list[str]:
    """Figures joined by " | " into lines of at most `width`, breaking only between figures, never inside one."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " | " + part
        else:
            lines.append(part)
    return lines


def _two_line_progress(console, clock, label: str):
    """rich's Progress with the status figures on a line of their own under the bar, so neither is cut."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Figures:
        text = ""

        def __rich_console__(self, console, options):
            yield Text("\n".join(_packed(self.text.split(" | "), options.max_width)))

    class TwoLineProgress(Progress):
        def __init__(self, *columns, **options) -> None:
            self.figures = Figures()  # before rich's __init__, which renders once
            super().__init__(*columns, **options)

        def get_renderables(self):
            yield self.make_tasks_table(self.tasks)
            yield self.figures

    return TwoLineProgress(
        TextColumn(f"[bold]{label}"),
        BarColumn(bar_width=28),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        refresh_per_second=4,
        expand=False,
        get_time=clock,
    )


class ProgressDisplay:
    """The progress of a job (`generate`, `judge`, `eval ...`), which calls `advance` as each item ends.

    A live two-line bar in a terminal; elsewhere (CI logs, nohup, Slurm) a plain line every `log_every` seconds.

    Both show the same figures: done/total, rate, ETA, rejects, retries, skipped, the metrics shown in progress,
    tokens, and the cost so far and projected when prices are known (where they come from is said once, as the
    display starts). Two lines, so nothing is cut at 80 columns.
    """

    def __init__(
        self, label: str, total: int, usage: Callable[[], Any] | None, teachers: Sequence[Any], enabled: bool = True, log_every: float = 0.0,
        costing: Costing | None = None, clock=time.monotonic, metrics: Callable[[], Mapping[str, Any]] = dict, stream: TextIO | None = None,
    ) -> None:
        """`usage` gives the tokens so far (prompt_tokens, completion_tokens); `teachers` are asked for their retries
        (`stats`) and the first one's concurrency `limiter`; `costing` what the tokens so far cost; `metrics` the
        run's metrics so far, by name, as the manifest keeps them (formats/metrics.py). A job that asks no teacher
        (an eval's model answering) passes no usage and no teachers: its lines show neither. `stream`: where the
        bar and lines go instead of stderr."""
        self.label = label
        self.total = total
        self.usage = usage
        self.metrics = metrics
        self.teachers = teachers
        self.enabled = enabled
        self.log_every = log_every if not enabled else 0.0
        self.costing = costing
        self.clock = clock
        self.stream = stream
        self.rejects = 0
        self.skipped = 0
        self.done = 0
        self._started = 0.0
        self._last_line = 0.0
        self._cost_at_start = 0.0
        self._progress: Any = None  # a rich Progress once entered, imported only when shown
        self._bar: Any = None

    def __enter__(self) -> ProgressDisplay:
        self._started = self._last_line = self.clock()
        self._cost_at_start = self._cost() or 0.0
        if self.costing is not None and (self.enabled or self.log_every):
            self._say(f"{self.label} prices: {self.costing.source}", self.enabled)  # not "LABEL: ", which the progress lines alone start with
        if self.enabled:
            self._progress = _two_line_progress(_console(self.stream), self.clock, self.label)
            self._progress.__enter__()
            self._bar = self._progress.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        if self.log_every and exc[0] is None:
            self._print_line()

    def advance(self, outcome: str) -> None:
        self.done += 1
        if outcome == "skipped":
            self.skipped += 1
        elif outcome == "rejected":
            self.rejects += 1
        if self.enabled:
            self._progress.figures.text = self.status()
            self._progress.update(self._bar, advance=1)
        elif self.log_every and self.clock() - self._last_line >= self.log_every:
            self._print_line()

    def _cost(self) -> float | None:
        return self.costing.spent() if self.costing is not None else None

    def spent(self) -> tuple[float, float] | None:
        """USD spent by this run and by the folder's runs in all; None without prices."""
        cost = self._cost()
        return (cost - self._cost_at_start, cost) if cost is not None else None

    def cost_line(self) -> str | None:
        """The run's cost for its summary (prices.cost_line); None without prices."""
        spent = self.spent()
        return cost_line(*spent, self.costing.source) if spent is not None and self.costing is not None else None

    def status(self) -> str:
        """rate, rejects, retries, skipped, the metrics shown in progress, tokens, cost and the concurrency limit: the bar's second line."""
        elapsed = self.clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{rate:,.1f} rec/s", f"rejects {self.rejects}"]
        if self.teachers:
            parts.append(f"retries {sum(teacher.stats['retries'] for teacher in self.teachers)}")
        parts.append(f"skipped {self.skipped}")
        parts += figures("progress", self.metrics())
        if self.usage is not None:
            usage = self.usage()
            parts.append(f"tokens {usage.prompt_tokens + usage.completion_tokens:,}")
        cost = self._cost()
        if cost is not None:
            spent_here = cost - self._cost_at_start
            projected = cost + spent_here / self.done * (self.total - self.done) if self.done else cost
            parts.append(f"cost ${cost:,.4f} of ~${projected:,.4f}")
        limiter = self.teachers[0].limiter if self.teachers else None
        if limiter is not None:
            parts.append(f"limit {limiter.limit}/{limiter.max_concurrency}")
        return " | ".join(parts)

    def line(self) -> str:
        """One greppable line: `generate: DONE/TOTAL (P%) | ETA H:MM:SS | ...` with the status figures."""
        elapsed = self.clock() - self._started
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "100%"
        eta = _clock_time(elapsed / self.done * (self.total - self.done)) if self.done else "?"
        return f"{self.label}: {self.done}/{self.total} ({share}) | elapsed {_clock_time(elapsed)} | ETA {eta} | {self.status()}"

    def _print_line(self) -> None:
        self._last_line = self.clock()
        self._say(self.line(), terminal=False)

    def _say(self, line: str, terminal: bool) -> None:
        if terminal:
            _console(self.stream).print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream or sys.stderr, flush=True)


def show_summary(manifest: Manifest, retries: int = 0, cost: str | None = None) -> None:
    """The table a finished `generate` prints: per task what was requested, written, rejected and skipped; then
    tokens, requests, retries and `cost` (ProgressDisplay.cost_line) where prices are known."""
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
        + "".join(f" | {figure}" for figure in figures("summary", manifest.metrics))
        + (f" | retries {retries}" if retries else ""),
        markup=False,
    )
    if cost is not None:
        console.print(cost, markup=False, soft_wrap=True)
    if manifest.last_error:
        console.print(f"teacher's last error: {manifest.last_error}", markup=False, soft_wrap=True)  # one line, however long
    if manifest.source.hard_cases:
        handled = ", ".join(f"{case.replace('_', ' ')} {n}" for case, n in manifest.source.hard_cases.items())
        console.print(f"source: {manifest.source.images:,} images; handled {handled}")
