"""Errors the toolchain reports to users as one line (the CLI prints ``error: <message>``)."""


class OdrecError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_code = 1


class DataError(OdrecError):
    """Session data that cannot be read or is empty after filtering."""


class CheckpointError(OdrecError):
    """A checkpoint that is missing, truncated, tampered with or not tensor-only."""


class UsageError(OdrecError):
    """An option value the toolchain does not know."""

    exit_code = 2
