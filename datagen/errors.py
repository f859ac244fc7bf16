"""The ways a run ends early on purpose; the CLI turns each into one line and an exit code."""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from datagen.files.storage_errors import StorageError

# A run that finished but left items unanswered (status "incomplete"): distinct from 1, so a script can rerun it.
INCOMPLETE_EXIT = 3
# A run ended by SIGTERM (timeout, docker stop, Kubernetes, Slurm), as a shell reports a process it killed: 128 + 15.
TERMINATED_EXIT = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (datagen/run/job.py): the run stops, its record says `interrupted`."""


@contextlib.contextmanager
def on_sigterm(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` answers SIGTERM while the block runs, and the handler before it is put back after. Off the main
    thread, which signals do not reach, nothing is set: an embedding caller's thread keeps its own handling."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt(take_over: bool = False) -> Iterator[None]:
    """SIGTERM (timeout, docker stop, Kubernetes, Slurm) raises Terminated, so a command unwinds as on Ctrl-C: files
    closed, a lock released, one line. Unless `take_over` (the command line, which owns its process), left alone
    where a handler is already set: a job's own, which cancels its workers first, or an embedding program's."""
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None) and not take_over:
        yield
        return
    with on_sigterm(_terminate):
        yield


class InputError(Exception):
    """A file, flag or setting the user gave is wrong; the message names it and the fix (exit code 2)."""


class RunFailed(Exception):
    """A run that ended without what it was for (nothing could be paired, every request failed, no answer passed
    the checks); what the folder holds is kept, and `result` (from the Python API) says what was counted."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class TeacherFatalError(Exception):
    """The teacher refused in a way no retry can fix (bad key, unknown model, malformed request)."""

    exit_code = 2


class ServerUnavailable(TeacherFatalError):
    """The server gave no answer for a whole window (dead, hanging or only rate-limiting): the run stops, and a
    rerun resumes once it answers again. Not the user's input, so exit code 1."""

    exit_code = 1

    def __init__(self, message: str, silent: bool = True) -> None:
        super().__init__(message)
        self.silent = silent  # no answer at all, as opposed to nothing but rate limits


def leading_error(group: BaseExceptionGroup) -> BaseException:
    """The one failure worth reporting from a TaskGroup's group: the first that explains itself (a fatal teacher
    answer, bad input, a failed disk), else the first; the others are mostly its echoes in sibling tasks."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        else:
            leaves.append(error)
    explained = (TeacherFatalError, InputError, StorageError, OSError)
    return next((error for error in leaves if isinstance(error, explained)), leaves[0])
