"""What a person watching `generate` sees: the two-line bar at 80 columns, and plain lines where there is no terminal."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from datagen.run import progress as progress_module
from datagen.run.prices import FLAGS, Prices, priced
from datagen.run.progress import ProgressDisplay

DATA = Path(__file__).resolve().parent.parent / "data"
LINE = re.compile(
    r"^generate: (\d+)/(\d+) \((\d+)%\) \| elapsed \d+:\d\d:\d\d \| ETA (\d+:\d\d:\d\d|\?) \| [\d,.]+ rec/s \| rejects (\d+) \| retries (\d+)"
    r" \| skipped (\d+) \| tokens [\d,]+( \| cost \$[\d,.]+ of ~\$[\d,.]+)?( \| limit \d+/\d+)?$"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeJob:
    """What a display is given by its job: the tokens so far and a teacher with retry counts and a limiter."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.usage = SimpleNamespace(prompt_tokens=0, completion_tokens=0)
        self.teacher = SimpleNamespace(stats=Counter(retries=0), limiter=SimpleNamespace(limit=64, max_concurrency=256))
        self.listener = lambda outcome: None

    def display(self, **options) -> ProgressDisplay:
        display = ProgressDisplay("generate", self.total, lambda: self.usage, [self.teacher], **options)
        self.listener = display.advance
        return display

    def on_progress(self, outcome: str) -> None:
        self.listener(outcome)


def fake_run(total: int = 158_000) -> FakeJob:
    return FakeJob(total)


def test_the_bar_fits_80_columns_and_shows_every_figure(monkeypatch) -> None:
    from rich.console import Console, Group

    monkeypatch.setattr(progress_module, "_console", lambda stream=None: Console(file=io.StringIO()))  # the live display, not looked at
    console = Console(width=80, file=io.StringIO(), force_terminal=True, record=True)
    run, clock = fake_run(), Clock()
    with run.display(enabled=True, costing=priced(Prices(2.5, 10.0, FLAGS), lambda: run.usage), clock=clock) as display:
        run.teacher.stats["retries"] = 42
        for outcome in ["written"] * 12_340 + ["rejected"] * 7 + ["skipped"] * 3:
            clock.now += 0.01
            run.usage.prompt_tokens += 1500
            run.usage.completion_tokens += 300
            run.on_progress(outcome)
        console.print(Group(*display._progress.get_renderables()))
    shown = console.export_text()
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    assert "12,350/158,000" in shown or "12350/158000" in shown, shown
    assert "ETA" in shown and re.search(r"ETA\s+\d+:\d\d:\d\d", shown), shown
    for figure in ("rejects 7", "retries 42", "skipped 3", "limit 64/256", "rec/s"):
        assert figure in shown, (figure, shown)
    # 12,350 items of 1,500 prompt and 300 completion tokens at $2.50/$10 per million: $77.19 spent, and the same per item for the rest.
    spent = 12_350 * (1500 * 2.5 + 300 * 10.0) / 1e6
    assert f"cost ${spent:,.4f} of ~${spent / 12_350 * 158_000:,.4f}" in shown, shown


def test_plain_lines_every_interval_with_eta() -> None:
    run, clock = fake_run(total=10), Clock()
    printed: list[str] = []
    display = run.display(enabled=False, log_every=30.0, clock=clock)
    display._print_line = lambda: (printed.append(display.line()), setattr(display, "_last_line", clock()))  # type: ignore[method-assign]
    with display:
        for _ in range(5):
            clock.now += 10.0  # one item every 10 s: a line at the 3rd item (30 s), none at the 4th and 5th
            run.on_progress("written")
    assert len(printed) == 2 and printed[1].startswith("generate: 5/10 (50%) | elapsed 0:00:50 | ETA 0:00:50 |")  # and one at the end
    match = LINE.match(printed[0])
    assert match, printed[0]
    assert match.group(1, 2, 3, 4) == ("3", "10", "30", "0:01:10")  # 7 left at 10 s each


def test_a_terminal_bar_prints_no_plain_lines() -> None:
    display = fake_run().display(enabled=True, log_every=30.0)
    assert display.log_every == 0.0


@pytest.mark.slow
def test_generate_into_a_pipe_prints_greppable_lines(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "datagen.cli", "generate", "--teacher", "mock", "--captions", str(DATA / "captions.json"),
            "--instances", str(DATA / "instances.json"), "--out", str(tmp_path / "out"), "--price-in", "2.5", "--price-out", "10"]
    every_item = subprocess.run([*args, "--log-every", "0.000001"], capture_output=True, text=True, timeout=120)
    assert every_item.returncode == 0, every_item.stderr
    lines = [line for line in every_item.stderr.splitlines() if line.startswith("generate: ")]
    assert len(lines) >= 60 and all(LINE.match(line) for line in lines), lines[:3]
    assert lines[-1].startswith("generate: 66/66 (100%)") and "cost $" in lines[-1]
    # A rerun over the finished folder has nothing left: its end line says so; --no-progress prints none.
    quiet = subprocess.run([*args, "--no-progress"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and not [line for line in quiet.stderr.splitlines() if line.startswith("generate: ")], quiet.stderr
    default = subprocess.run(args, capture_output=True, text=True, timeout=120)
    ended = [line for line in default.stderr.splitlines() if line.startswith("generate: ")]
    assert len(ended) == 1 and ended[0].startswith("generate: 0/0 (100%)") and LINE.match(ended[0]), default.stderr
