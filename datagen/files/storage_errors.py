"""Failures of the disk beneath a run (full, read-only, a folder where a file belongs, a damaged SQLite file)
as one line naming the path and the fix, with the exit code the CLI ends with."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

_RESUME = "then rerun the same command to resume (records already written are kept)"

# errno -> (what happened, the fix, exit code): 1 when the machine is at fault, 2 when the path given is.
_EXPLAINED: dict[int, tuple[str, str, int]] = {
    errno.ENOSPC: ("no space left on the device", f"free some space, {_RESUME}", 1),
    errno.EDQUOT: ("disk quota exceeded", f"free some space or raise the quota, {_RESUME}", 1),
    errno.EIO: ("input/output error", f"check the disk, {_RESUME}", 1),
    errno.EACCES: ("permission denied", "make it writable for this user or pick another path", 2),
    errno.EPERM: ("operation not permitted", "make it writable for this user or pick another path", 2),
    errno.EROFS: ("read-only file system", "pick a path on a writable file system", 2),
    errno.EISDIR: ("is a folder where a file is expected", "move the folder away or pick another path", 2),
    errno.ENOTDIR: ("part of the path is a file where a folder is expected", "fix the path or move that file away", 2),
    errno.ENOENT: ("not found", "check the path", 2),
    errno.ENAMETOOLONG: ("name too long", "pick a shorter path", 2),
}


class StorageError(Exception):
    """The disk or a file beneath the run failed; the message names the path and the fix."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def explain_os_error(error: OSError) -> StorageError:
    path = error.filename if error.filename is not None else "(a file of the run)"
    what, fix, code = _EXPLAINED.get(error.errno or 0, (error.strerror or str(error), "check the path and the disk", 1))
    also = f" (and {error.filename2})" if error.filename2 is not None else ""
    return StorageError(f"{path}{also}: {what}; {fix}", code)


def cache_failure(path: Path, error: sqlite3.Error | ValueError) -> StorageError:
    detail = (str(error).splitlines() or [type(error).__name__])[0]
    if getattr(error, "sqlite_errorname", "") == "SQLITE_FULL":
        return StorageError(f"--cache {path}: no space left for the response cache ({detail}); free some space, {_RESUME}", 1)
    return StorageError(
        f"--cache {path}: the response cache failed ({detail}); move the file aside (or pass --no-cache), {_RESUME}", 1
    )


def with_path(error: OSError, path: Path) -> OSError:
    """`error` naming `path` when the call that raised it (os.write on a descriptor) could not."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror, str(path))
