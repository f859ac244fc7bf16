"""An output folder's records (`<task>.jsonl`) and rejects (`rejects.jsonl`), read back: every command reads them here.

A line no command can read (not JSON, not UTF-8, not a JSON object) stops the reading with one line naming the
file and the line. Whether a line is a whole record (an `id`, a `meta` object with an integer `image_id` and the
answer's `usage`, the `conversations`) or a whole reject (the same, with its `task` and `reason` instead of the
conversations) is checked once, here: the commands that build on the lines (resume, export, merge, dedup,
filter, judge) take `checked_records` and are refused at the first hand-edited line that is not whole; report
and show, which only look, take `record_lines` and count or show what such a line still holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from datagen.errors import InputError
from datagen.files.jsonl import read_lines
from datagen.formats.records import Usage

FIX = "restore it, or delete the line and rerun `datagen generate` (its item is redone)"


class RecordLine(NamedTuple):
    """One line of a task file or of the rejects file: where it is, its bytes as written, its JSON object, and
    the `problem` that keeps it from being a whole record (or reject), None when it is one."""

    path: Path
    number: int
    raw: bytes
    data: dict[str, Any]
    reject: bool
    problem: str | None
    usage: Usage | None  # meta.usage, read where the line is whole

    @property
    def image_id(self) -> int:
        """A whole line's COCO image id."""
        return self.data["meta"]["image_id"]

    def refusal(self, problem: str | None = None) -> InputError:
        """The one line that refuses this line for `problem` (by default its own): file, line, what, the fix."""
        return InputError(f"{self.path} line {self.number}: not a datagen {'reject' if self.reject else 'record'} ({problem or self.problem}); {FIX}")


def _field(row: dict, *names: str) -> object:
    value: object = row
    for depth, name in enumerate(names):
        if not isinstance(value, dict):
            raise ValueError(f"{'.'.join(names[:depth])} is a JSON {type(value).__name__}, not an object")
        if name not in value:
            raise ValueError(f"no {'.'.join(names[: depth + 1])}")
        value = value[name]
    return value


def _whole(row: dict, reject: bool) -> Usage:
    """The line's usage when it is a whole record (or reject); else ValueError saying what it lacks."""
    image_id = _field(row, "meta", "image_id")
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise ValueError("meta.image_id is not an integer")
    try:
        usage = Usage.model_validate(_field(row, "meta", "usage"))
    except ValidationError as error:
        raise ValueError(f"meta.usage: {error.errors()[0]['msg']}") from None
    if not isinstance(_field(row, "id"), str):
        raise ValueError("id is not a string")
    if reject:
        if not isinstance(_field(row, "task"), str) or not isinstance(_field(row, "reason"), str):
            raise ValueError("task and reason must be strings")
    elif not isinstance(_field(row, "conversations"), list):
        raise ValueError("conversations is not a list")
    return usage


def record_lines(path: Path, reject: bool = False) -> Iterator[RecordLine]:
    """Each non-blank line of a task file (or, with `reject`, of the rejects file), whole or not; nothing when
    there is no such file. A line that is not a JSON object is an InputError."""
    if not path.is_file():
        return
    with path.open("rb") as handle:
        for line in read_lines(handle):
            if line.problem is not None or not isinstance(line.value, dict):
                unread = line.problem or f"a JSON {type(line.value).__name__ if line.value is not None else 'null'}, not an object"
                raise InputError(f"{path} line {line.number}: {unread}; {FIX}")
            usage: Usage | None = None
            problem: str | None = None
            try:
                usage = _whole(line.value, reject)
            except ValueError as error:
                problem = str(error)
            yield RecordLine(path, line.number, line.raw, line.value, reject, problem, usage)


def checked_records(path: Path, reject: bool = False) -> Iterator[RecordLine]:
    """record_lines, each one whole: the first that is not is refused (RecordLine.refusal)."""
    for line in record_lines(path, reject):
        if line.problem is not None:
            raise line.refusal()
        yield line
