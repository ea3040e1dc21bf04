"""Errors that mean "the user gave bad input": the CLI prints them on one line and exits 2."""


class RcsInputError(ValueError):
    """Bad input from the user: a malformed file, a missing column, an unknown key, a NaN reward.

    The message is one line and names the file, row, field or key at fault. The CLI prints
    ``error: <message>`` and exits with code 2, without a traceback.
    """
