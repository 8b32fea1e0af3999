"""Errors that the CLI turns into exit codes with a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input (unknown name, missing file, malformed data). The CLI prints the message and exits 2.

    The message must name the offending input and say how to fix it.
    """


class CheckFailed(Exception):
    """A check or run found a failure (e.g. a significant regression). The CLI exits 1."""
