"""Errors that the command line reports as a one-line message with a non-zero exit."""


class PesError(Exception):
    """Base class for user-facing errors: the message names what is wrong and what is expected."""
