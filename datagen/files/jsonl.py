"""The output folder: append-only JSONL files that survive `kill -9`, and atomic JSON writes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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


def iter_numbered_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed line) for each non-blank line; a line that is not UTF-8 JSON is an InputError naming it."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except UnicodeDecodeError:
                raise InputError(f"{path} line {number}: not UTF-8 text; delete that line and rerun (its item is redone)") from None
            except ValueError:
                raise InputError(f"{path} line {number}: not valid JSON; delete that line and rerun (its item is redone)") from None


def iter_input_objects(path: Path, label: str, kind: str, needs: str) -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line of a JSONL file the user gave; a missing file, text that is not
    UTF-8 and a line that is not a JSON object are one InputError each, naming `label path` (and the line) and
    saying it takes a `kind` whose lines need `needs`."""
    if not path.is_file():
        raise InputError(f"{label} {path}: file not found; pass {kind}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{label} {path}: not UTF-8 text; pass {kind}") from None
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{label} {path} line {number}"
        try:
            line = json.loads(raw)
        except ValueError:
            raise InputError(f"{where}: not valid JSON; fix or remove that line") from None
        if not isinstance(line, dict):
            raise InputError(f"{where}: not a JSON object; each line needs {needs}")
        yield where, line


def iter_jsonl(path: Path) -> Iterator[Any]:
    """Each line's JSON value, whatever it is: callers check what they need of it."""
    for _, row in iter_numbered_jsonl(path):
        yield row


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
