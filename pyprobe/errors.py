"""Errors a user can act on: the CLI prints them as one line and exits 2."""


class PyprobeError(Exception):
    """A problem with the environment or the input, with its fix in the message."""

    exit_code = 2
