"""JSONL and JSON files: the one JSONL reader (through jsonlines) and writer, append-only JSONL files that survive
`kill -9`, and atomic JSON writes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jsonlines
from pydantic import BaseModel

from datagen.errors import InputError
from datagen.files.storage_errors import with_path


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line left half-written by a killed process; True when something was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        # Walk back to the last newline; everything after it is the torn line.
        position, chunk = size, 1 << 16
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            block = handle.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return True
            position = start
        handle.truncate(0)
        return True


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file: its 1-based number, its bytes as written, and its value, or the
    `problem` that keeps it from having one ("not UTF-8 text", "not valid JSON", ...)."""

    number: int
    raw: bytes
    value: Any = None
    problem: str | None = None


def _refuse_constant(name: str) -> float:
    # Python's json reads NaN and Infinity, JSON does not have them: a score or a box of NaN is no number.
    raise ValueError(f"{name} is not a JSON number")


def _loads(text: str | bytes) -> Any:
    return json.loads(text, parse_constant=_refuse_constant)


def _problem(error: jsonlines.InvalidLineError) -> str:
    cause = error.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(cause, ValueError) and "is not a JSON number" in str(cause):
        return f"not valid JSON ({cause})"
    return "not valid JSON"


def read_lines(lines: Iterable[bytes]) -> Iterator[JsonLine]:
    """Each non-blank line of an open binary file (or of `io.BytesIO(data)`), read by jsonlines.

    Lines end at a line feed only (a carriage return before it is blank space to JSON), so U+2028, U+2029 and U+0085 inside a string,
    which `ensure_ascii=False` writes as they are, stay inside their line; a leading UTF-8 BOM is skipped. A
    `null` line is a value like any other: the caller says what it needs of each line."""
    last: list[tuple[int, bytes]] = []

    def remembered() -> Iterator[bytes]:
        for number, raw in enumerate(lines, 1):
            last[:] = [(number, raw)]
            yield raw

    reader = jsonlines.Reader(remembered(), loads=_loads)
    while True:
        try:
            value = reader.read(skip_empty=True, allow_none=True)
        except EOFError:
            return
        except jsonlines.InvalidLineError as error:
            yield JsonLine(last[0][0], last[0][1], problem=_problem(error))
            continue
        yield JsonLine(last[0][0], last[0][1], value)


def iter_numbered_jsonl(
    path: Path, where: str | None = None, fix: str = "delete that line and rerun (its item is redone)"
) -> Iterator[tuple[int, Any]]:
    """(line number, parsed line) for each non-blank line; a line without a JSON value is an InputError naming
    `where` (the path by default) and the line, and saying `fix`."""
    with path.open("rb") as handle:
        for line in read_lines(handle):
            if line.problem is not None:
                raise InputError(f"{where or path} line {line.number}: {line.problem}; {fix}")
            yield line.number, line.value


def iter_input_objects(path: Path, label: str, kind: str, needs: str) -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line of a JSONL file the user gave; a missing file, a line that is
    not UTF-8 JSON and one that is not a JSON object are one InputError each, naming `label path` (and the
    line) and saying it takes a `kind` whose lines need `needs`."""
    if not path.is_file():
        raise InputError(f"{label} {path}: " + ("not a regular file" if path.exists() else "file not found") + f"; pass {kind}")
    for number, line in iter_numbered_jsonl(path, f"{label} {path}", f"fix or remove that line; pass {kind}"):
        where = f"{label} {path} line {number}"
        if not isinstance(line, dict):
            raise InputError(f"{where}: not a JSON object; each line needs {needs}")
        yield where, line


def iter_jsonl(path: Path) -> Iterator[Any]:
    """Each line's JSON value, whatever it is: callers check what they need of it."""
    for _, row in iter_numbered_jsonl(path):
        yield row


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def json_line(value: object) -> str:
    """One JSONL line, as jsonlines writes it: non-ASCII text as it is, no NaN (JSON has none), ending in a line feed."""
    return _dumps(value) + "\n"


def write_jsonl(handle: IO[str], rows: Iterable[object]) -> None:
    """Rows one per line through jsonlines, in json_line's form."""
    jsonlines.Writer(handle, dumps=_dumps, flush=False).write_all(rows)


class JsonlAppender:
    """One line per `os.write` on an O_APPEND descriptor: a kill leaves whole lines plus at most one torn tail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        repair_torn_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: BaseModel) -> None:
        data = (record.model_dump_json(by_alias=True) + "\n").encode()
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as error:  # disk full mid-line: the torn tail is cut by the next run's repair
            raise with_path(error, self.path) from None

    def close(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file written beside `path` and renamed over it when the block ends, so a reader or a kill never sees
    half a file; when the block or the write fails (a full disk) the partial file is removed and `path` is
    left as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # named after the file being written, not its temporary twin
            raise type(error)(error.errno, error.strerror, str(path)) from None
        raise


def write_json_atomic(path: Path, data: object, indent: int | None = 2) -> None:
    with atomic_file(path) as handle:
        json.dump(data, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")
