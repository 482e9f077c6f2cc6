"""The user-facing error type.

Anything a user can fix (a bad flag, a bad data row, a missing file) is raised as `LmforgeError`
with one readable line; the CLI prints that line and exits with status 2, never a traceback.
Internal invariants use `assert` and are allowed to crash loudly.
"""


class LmforgeError(Exception):
    """A mistake the user can fix; the message is one line that says what and where."""


class DataError(LmforgeError):
    """A bad input row: the message names file:line, the field and what was expected."""

    def __init__(self, path: str, line: int | None, field: str, expected: str, got: str = ""):
        where = f"{path}:{line}" if line is not None else str(path)
        msg = f'{where}: "{field}" {expected}'
        if got:
            msg += f"; got {got}"
        super().__init__(msg)
        self.path, self.line, self.field, self.expected, self.got = path, line, field, expected, got
