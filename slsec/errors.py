"""Errors a user can cause: the CLI prints them on one line and exits 2."""


class UserError(Exception):
    """A mistake in the user's input (flag, config, data file): one clear line, exit 2."""


class DataError(UserError):
    """A data file is missing, unreadable or corrupt."""


class PeerError(RuntimeError):
    """A peer rank died, stalled past the timeout, or sent a malformed message."""
