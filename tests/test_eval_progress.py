"""What a person watching `datagen eval ...` sees while the model answers: the bar at 80 columns in a terminal, and
greppable `eval COMMAND: DONE/TOTAL` lines elsewhere (the same display as generate's and judge's)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from datagen.eval.model import EvalProgress, answer_all
from datagen.run import progress as progress_module

LINE = re.compile(r"^eval bench: (\d+)/(\d+) \((\d+)%\) \| elapsed \d+:\d\d:\d\d \| ETA (\d+:\d\d:\d\d|\?) \| [\d,.]+ rec/s \| rejects 0 \| skipped 0$")


class EchoModel:
    """Answers each question with its own text, and keeps the batches it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[tuple[Path | None, str]]] = []

    def answer(self, batch: list[tuple[Path | None, str]], max_new_tokens: int) -> list[str]:
        self.asked.append(batch)
        return [question.upper() for _, question in batch]


def answered(shown: EvalProgress, count: int = 5) -> list[tuple[str, str]]:
    questions = [f"q{index}" for index in range(count)]
    return list(answer_all(EchoModel(), questions, 2, lambda question: question != "q2", lambda question: (None, question), 8, shown))


def test_every_item_gets_its_reply_and_a_plain_line(capsys) -> None:
    replies = answered(EvalProgress("eval bench", progress=False, log_every=1e-9))
    assert replies == [(f"q{index}", f"Q{index}") for index in range(5)]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6 and all(LINE.match(line) for line in lines), lines  # one per item, and one at the end
    assert [LINE.match(line).group(1, 2) for line in lines] == [(str(done), "5") for done in (1, 2, 3, 4, 5, 5)]  # type: ignore[union-attr]
    assert lines[-1].startswith("eval bench: 5/5 (100%)")


def test_no_progress_asked_prints_nothing(capsys) -> None:
    assert len(answered(EvalProgress())) == 5  # the Python API's default
    assert capsys.readouterr().err == ""


def test_the_eval_bar_fits_80_columns(monkeypatch) -> None:
    from rich.console import Console, Group

    monkeypatch.setattr(progress_module, "_console", lambda stream=None: Console(file=io.StringIO()))  # the live display, not looked at
    console = Console(width=80, file=io.StringIO(), force_terminal=True, record=True)
    now = [0.0]  # 2 answers a second: 3,007 left take 25 minutes
    with progress_module.ProgressDisplay("eval scienceqa", 4_241, None, [], enabled=True, clock=lambda: now[0]) as display:
        for _ in range(1_234):
            now[0] += 0.5
            display.advance("written")
        console.print(Group(*display._progress.get_renderables()))
    shown = console.export_text()
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    assert "eval scienceqa" in shown and ("1,234/4,241" in shown or "1234/4241" in shown) and re.search(r"ETA\s+0:25:0[34]", shown), shown
    assert "2.0 rec/s" in shown and "tokens" not in shown and "retries" not in shown  # an eval's model asks no teacher
