"""The output folder: append-only JSONL files that survive `kill -9`, and atomic JSON writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from datagen.errors import InputError


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


def iter_jsonl(path: Path) -> Iterator[dict]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path} line {number}: not valid JSON; delete that line and rerun (its item is redone)") from None


class JsonlAppender:
    """One line per `os.write` on an O_APPEND descriptor: a kill leaves whole lines plus at most one torn tail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        repair_torn_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: BaseModel) -> None:
        data = (record.model_dump_json(by_alias=True) + "\n").encode()
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        os.close(self._fd)


def write_json_atomic(path: Path, data: object, indent: int | None = 2) -> None:
    """Write beside the target and rename over it, so a reader or a kill never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")
    os.replace(temporary, path)
