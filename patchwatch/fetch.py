"""HTTP for the mirror refresh: one session, timeouts, retries, byte caps, temporary files.

Mirrors are not trusted and not always up. Every download here is streamed into a file
the caller names, hashed on the way, and stopped as soon as it passes the caller's byte
cap, so a mirror that sends too much costs at most that many bytes of disk and none of
memory. Transient trouble (connection errors, timeouts, a cut-off body, HTTP 5xx, 429,
408) is retried with exponential backoff; anything else (404, 403, a certificate that
does not verify) fails at once, because asking again would get the same answer.

Proxies come from the environment (``http_proxy``, ``https_proxy``, ``no_proxy``), which
``requests`` reads for us. Conditional requests (``If-None-Match``,
``If-Modified-Since``) are sent when the caller passes the validators it stored; a 304
answer writes no file.

This module does not parse, decompress or touch the database, and it does not decide
what a good file is: it reports the size and digest of what arrived, and the refresh
(``patchwatch.refresh``) compares them with what the signed metadata promised. Tests
replace :class:`HttpFetcher` by anything that satisfies :class:`Fetcher`.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import requests
import urllib3.exceptions

from patchwatch import __version__
from patchwatch.errors import FetchError
from patchwatch.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "Download",
    "Fetcher",
    "HttpFetcher",
    "HttpStatusError",
]

USER_AGENT = f"patchwatch/{__version__} (+mirror refresh)"
CHUNK_BYTES = 1 << 16
#: Statuses worth asking again for: the server says it is busy or broken right now.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class HttpStatusError(FetchError):
    """The server answered with an HTTP error status (kept, so 404 can mean "absent")."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(url, f"HTTP {status} {reason}".rstrip())
        self.status = status


@dataclass(frozen=True, slots=True)
class Download:
    """What one GET produced: a file on disk and what is known about it.

    ``digest`` is the hex ``hash_name`` digest of the bytes as received (before any
    decompression the caller does). When ``not_modified`` is true the server answered
    304 to a conditional request: nothing was written and ``path`` is None.
    """

    url: str  # the final URL, after redirects
    path: Path | None
    size: int
    hash_name: str
    digest: str
    etag: str = ""
    last_modified: str = ""
    content_type: str = ""
    not_modified: bool = False


class Fetcher(Protocol):
    """Download one URL into ``dest`` (see :class:`HttpFetcher.fetch`)."""

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int,
        hash_name: str = "sha256",
        etag: str = "",
        last_modified: str = "",
    ) -> Download: ...


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait  # the server's Retry-After, when it gave one


class HttpFetcher:
    """The production :class:`Fetcher`: one ``requests.Session`` for a whole refresh run.

    ``timeout`` bounds connecting and each wait for data (a mirror that accepts the
    connection and then says nothing fails after it); ``max_seconds`` bounds one whole
    attempt, so a mirror that trickles a byte at a time cannot hold the refresh forever.
    ``retries`` extra attempts follow a transient failure, ``backoff * 2**n`` seconds
    apart (with jitter, capped at ``max_backoff``).
    """

    def __init__(
        self,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_seconds: float | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_seconds = max_seconds if max_seconds is not None else max(60.0, 10 * timeout)
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Files are hashed as stored on the mirror; a transparently gzipped transfer
        # would only cost CPU, and a broken server could mangle the bytes on the way.
        self.session.headers["Accept-Encoding"] = "identity"
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpFetcher:
        """Build the fetcher the scheduler and the CLI use, from the HTTP settings."""
        return cls(timeout=settings.http_timeout_seconds, retries=settings.http_retries)

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session's pooled connections."""
        self.session.close()

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int,
        hash_name: str = "sha256",
        etag: str = "",
        last_modified: str = "",
    ) -> Download:
        """GET ``url`` into the file ``dest`` (replaced), refusing more than ``max_bytes``.

        ``etag``/``last_modified`` make the request conditional. On failure ``dest`` is
        removed and :class:`FetchError` (:class:`HttpStatusError` for an HTTP error
        status) says why, after the retries for transient failures are spent.
        """
        attempts = self.retries + 1
        last: _Retry | None = None
        for attempt in range(attempts):
            if last is not None:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: many schedulers, one mirror
                if last.wait is not None:
                    delay = min(self.max_backoff, max(delay, last.wait))
                log.debug("retrying %s in %.1f s: %s", url, delay, last.reason)
                self._sleep(delay)
            try:
                return self._attempt(url, dest, max_bytes, hash_name, etag, last_modified)
            except _Retry as exc:
                dest.unlink(missing_ok=True)
                last = exc
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
        assert last is not None
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise FetchError(url, f"{last.reason} (gave up after {tries})")

    def _attempt(
        self,
        url: str,
        dest: Path,
        max_bytes: int,
        hash_name: str,
        etag: str,
        last_modified: str,
    ) -> Download:
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        started = time.monotonic()
        try:
            response = self.session.get(
                url, headers=headers, stream=True, timeout=(self.timeout, self.timeout)
            )
        except requests.exceptions.SSLError as exc:
            raise FetchError(url, f"TLS error: {_short(exc)}") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise FetchError(url, f"unusable URL: {_short(exc)}") from None
        except requests.exceptions.TooManyRedirects:
            raise FetchError(url, "too many redirects") from None
        except requests.exceptions.Timeout:
            raise _Retry(f"timed out after {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise _Retry(f"connection failed: {_short(exc)}") from None
        with response:
            status = response.status_code
            if status == 304 and (etag or last_modified):
                return Download(
                    url=response.url, path=None, size=0, hash_name=hash_name, digest="",
                    etag=response.headers.get("ETag", etag),
                    last_modified=response.headers.get("Last-Modified", last_modified),
                    content_type=response.headers.get("Content-Type", ""), not_modified=True,
                )  # fmt: skip
            if status in RETRY_STATUSES:
                reason = f"HTTP {status} {response.reason or ''}".rstrip()
                raise _Retry(reason, _retry_after(response.headers.get("Retry-After")))
            if status != 200:
                raise HttpStatusError(url, status, response.reason or "")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(
                    url, f"is {int(declared)} bytes, more than the limit of {max_bytes} bytes"
                )
            digest = hashlib.new(hash_name)
            size = 0
            try:
                with dest.open("wb") as out:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchError(url, f"sent more than the limit of {max_bytes} bytes")
                        if time.monotonic() - started > self.max_seconds:
                            raise FetchError(
                                url, f"download took longer than {self.max_seconds:g} s"
                            )
                        digest.update(chunk)
                        out.write(chunk)
            except requests.exceptions.Timeout:
                raise _Retry(f"timed out after {self.timeout:g} s waiting for data") from None
            except (
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ConnectionError,
            ) as exc:
                if exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError):
                    # requests reports a read timeout inside the body as ConnectionError
                    raise _Retry(f"timed out after {self.timeout:g} s waiting for data") from None
                raise _Retry(f"connection broken after {size} bytes: {_short(exc)}") from None
            return Download(
                url=response.url,
                path=dest,
                size=size,
                hash_name=hash_name,
                digest=digest.hexdigest(),
                etag=response.headers.get("ETag", ""),
                last_modified=response.headers.get("Last-Modified", ""),
                content_type=response.headers.get("Content-Type", ""),
            )


def _retry_after(value: str | None) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 error chain, one line."""
    text = str(exc)
    reason = getattr(exc, "args", ())
    if reason and isinstance(reason[0], Exception):
        inner = reason[0]
        text = str(getattr(inner, "reason", None) or inner)
    return " ".join(text.split())[:300]
