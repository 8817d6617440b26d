"""The one error type for bad input: the CLI prints it as one line and exits with code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input, named by where it is (a config field path or a file) and what was expected.

    The message is one line, also when it quotes a library's error that spans several.

    Example:
        >>> str(InputError("task.data.path", "no such file: data.csv"))
        'task.data.path: no such file: data.csv'
        >>> InputError("task.data.path", "cannot read: Expected 2 fields,\\n saw 3\\n").message
        'cannot read: Expected 2 fields, saw 3'
    """

    def __init__(self, where: str, message: str) -> None:
        message = " ".join(message.split())
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
