"""The two ways a run ends early on purpose; the CLI turns both into one line and an exit code."""


class InputError(Exception):
    """A file, flag or setting the user gave is wrong; the message names it and the fix (exit code 2)."""


class TeacherFatalError(Exception):
    """The teacher refused in a way no retry can fix (bad key, unknown model, malformed request)."""
