"""One writer per output folder: an advisory `flock` on a lock file inside it.

The kernel drops a flock when its process dies, however it dies, so `kill -9` never leaves a stale lock;
the file itself only names a holder (PID and command) for the refusal message and is removed on release.
Readers (`export`, the shards of a `merge`) take the lock shared: they exclude writers, not each other.

    with lock_folder(out, "generate"):          # creates `out` if needed; FolderBusyError if held
        ...
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from datagen.errors import InputError
from datagen.files.storage_errors import with_path

LOCK_FILE = ".datagen.lock"


class FolderBusyError(InputError):
    """Another process holds the folder; the message names the folder and its PID (exit code 2)."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode("utf-8", "replace").split()
    if len(text) >= 2 and text[0].isdigit():
        return f"`datagen {' '.join(text[1:])}`, PID {text[0]}"
    return "another datagen process"


def _open_locked(path: Path, folder: Path, what: str, shared: bool, kind: str = "folder") -> int | None:
    """An fd holding the lock on the file now at `path` (not on one a releasing holder just unlinked); None for
    a reader of a folder it cannot write to (a read-only copy of a dataset), which it reads unlocked."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if shared and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return None
            raise
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{folder}: in use by {holder}; wait for it to finish (or stop it), or pick another {kind}"
            ) from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return fd
        os.close(fd)  # the holder removed that file as we locked it; lock the one there now


@contextlib.contextmanager
def lock_folder(folder: Path, what: str, shared: bool = False) -> Iterator[Path]:
    """Hold `folder` for the block: exclusive for writers, `shared` for readers (the folder must exist).
    A writer creates a missing folder, and removes it again if it is still empty at the end, so a refused
    command leaves nothing behind."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a folder; pass a folder path")
    created = not folder.exists()
    if created and shared:
        raise InputError(f"{folder}: not found; pass the folder of an earlier datagen run")
    folder.mkdir(parents=True, exist_ok=True)
    with _held(folder / LOCK_FILE, folder, what, shared, created=folder if created else None):
        yield folder


@contextlib.contextmanager
def lock_file(target: Path, what: str) -> Iterator[Path]:
    """Hold one file for the block (exclusive) through `.NAME.lock` beside it, so the file itself may be
    replaced whole while held; its folder must exist. FolderBusyError, naming the file, if held."""
    target = Path(target)
    with _held(target.parent / f".{target.name}.lock", target, what, shared=False, kind="file"):
        yield target


@contextlib.contextmanager
def _held(path: Path, name: Path, what: str, shared: bool, created: Path | None = None, kind: str = "folder") -> Iterator[None]:
    """The lock file at `path` held for the block, naming this process; `created`, a folder to remove at the
    end if it is empty then."""
    fd = _open_locked(path, name, what, shared, kind)
    if fd is None:
        yield
        return
    try:
        # A shared holder overwrites another reader's line; any live holder is a fair name for the refusal.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        except OSError as error:  # a full disk, already
            raise with_path(error, path) from None
        yield
    finally:
        try:
            # Removed only by a holder that is alone (an exclusive lock), and while still holding it: a process
            # that opened the old file then sees it is gone (the inode check above) and locks the new one.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
            if created is not None:
                with contextlib.suppress(OSError):
                    created.rmdir()  # only if empty
        except (BlockingIOError, OSError):
            pass  # other readers still hold it; the last one out removes the file
        finally:
            os.close(fd)
