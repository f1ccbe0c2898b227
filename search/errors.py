"""The base class of errors caused by invalid input, which the CLI exits 2 on."""


class InputError(ValueError):
    """Raised for invalid user input: a study file, data file, flag or storage URL.

    The message is complete on its own: what failed, the value, and what to do.
    """
