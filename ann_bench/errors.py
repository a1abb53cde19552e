"""Exceptions the CLI turns into one clear line and exit code 2."""


class InputError(ValueError):
    """Bad input from the user: a file, a parameter, a value. The message says what and how to fix it."""
