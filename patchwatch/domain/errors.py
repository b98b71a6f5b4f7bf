"""One exception family for the domain, so each process maps errors to output in one place.

The receiver turns these into JSON with a 4xx status, the CLI into a message and an exit
code, the scheduler into a failed job run. Each carries enough context (field, line,
setting, URL) for the message to say what to fix.
"""

from __future__ import annotations


class PatchwatchError(Exception):
    """Base of every error patchwatch raises on purpose."""


class ConfigError(PatchwatchError):
    """A setting has a value that cannot be used."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class VersionError(PatchwatchError, ValueError):
    """A version string is not valid for its package family."""


class ParseError(PatchwatchError, ValueError):
    """Input (a report, a repository index) does not have the expected shape.

    ``where`` names the field path or line so that a client or operator can find it.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where


class TooLargeError(PatchwatchError):
    """Input is larger than the configured limit (also after decompression)."""


class FetchError(PatchwatchError):
    """A mirror could not be read or its content did not verify."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.message = message


class AuthError(PatchwatchError):
    """A token is missing, unknown, revoked, or not allowed to do this."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(PatchwatchError):
    """A named object (host, repository, token) does not exist."""


class AmbiguousError(PatchwatchError):
    """A name or pattern that must pick one object matches several."""


class ConflictError(PatchwatchError):
    """The store's current state does not allow the operation (linking unlike repositories)."""


class BoundError(PatchwatchError):
    """A host is bound to a live token that a new one would replace (use ``force``)."""
