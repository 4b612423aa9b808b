"""Errors that are the user's to fix: the CLI prints them as one message, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, options or files.

    Args:
        message: what is wrong, naming the file, line and value where there is one.
        exit_code: the process exit status the CLI uses (2: bad usage or missing input; 1: the work
            itself failed, for example an export refused for losing accuracy).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
