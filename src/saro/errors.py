"""User-facing errors: one line, exit code 2, never a traceback."""

from __future__ import annotations


class SaroError(Exception):
    """A mistake in the user's input (recipe, file, argument). The CLI prints it as one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(SaroError):
    """Malformed data in a file: the message names the file and line."""

    def __init__(self, path: object, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
