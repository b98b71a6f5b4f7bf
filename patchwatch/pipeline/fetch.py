"""HTTP for the mirror refresh: one session, the fetch policy, deadlines, retries, caps.

Mirrors are not trusted and not always up. Every download here is streamed into a file
the caller names, hashed on the way, and stopped as soon as it passes the caller's byte
cap, so a mirror that sends too much costs at most that many bytes of disk and none of
memory. Transient trouble (connection errors, timeouts, a cut-off body, HTTP 5xx, 429,
408) is retried with exponential backoff; anything else (404, 403, a certificate that
does not verify) fails at once, because asking again would get the same answer.

**Where requests may go** (``patchwatch.domain.mirror_policy``): every URL, every redirect
(followed here, one hop at a time, never by ``requests``) and every address connected
to is checked against the :class:`MirrorPolicy`. Addresses are checked on what the
name resolved to, inside the connection itself, right before ``connect()``: a refused
address is never connected to, and DNS rebinding cannot slip past the check. Inside a
:func:`fetch_scope` opened for one mirror, URLs are held to that mirror's origin, so
``xml:base`` and mirrorlist/metalink entries, which reach this module as plain URLs,
follow the same rule as redirects.

**Deadlines**: ``timeout`` bounds connecting and each wait for data; ``max_seconds``
bounds one whole attempt (connect, headers and body together) with a watchdog thread
that shuts the attempt's sockets down when it passes, so a mirror that drips its
headers one byte at a time is cut off there too, not only one that drips its body. A
scope adds a deadline for everything in it (a mirror's time box, a refresh run's) and
a stop event (the scheduler stops, or lost its lease): set, it ends the requests in
flight at once (:class:`FetchStopped`).

Proxies come from the environment (``http_proxy``, ``https_proxy``, ``no_proxy``), which
``requests`` reads for us. Through a proxy the proxy resolves names, so only hosts
written as addresses are checked here: give the proxy the same egress rules.
Conditional requests (``If-None-Match``, ``If-Modified-Since``) are sent when the
caller passes the validators it stored; a 304 answer writes no file.

This module does not parse, decompress or touch the database, and it does not decide
what a good file is: it reports the size and digest of what arrived, and the refresh
(``patchwatch.pipeline.refresh``) compares them with what the signed metadata promised. Tests
use :class:`HttpFetcher` too, against real servers on loopback: it is the only fetcher.
"""

from __future__ import annotations

import contextvars
import email.utils
import hashlib
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from typing import TypeAlias
from urllib.parse import urljoin

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.connection

from patchwatch import __version__
from patchwatch.domain.errors import FetchError
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "Download",
    "FetchScope",
    "FetchStopped",
    "Fetcher",
    "HttpFetcher",
    "HttpStatusError",
    "current_scope",
    "fetch_scope",
]

USER_AGENT = f"patchwatch/{__version__} (+mirror refresh)"
CHUNK_BYTES = 1 << 16
#: Statuses worth asking again for: the server says it is busy or broken right now.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: How often a request in flight looks at its scope's stop event, in seconds.
STOP_POLL_SECONDS = 0.2


class HttpStatusError(FetchError):
    """The server answered with an HTTP error status (kept, so 404 can mean "absent")."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(url, f"HTTP {status} {reason}".rstrip())
        self.status = status


class FetchStopped(FetchError):
    """The scope's stop event was set: the work was stopped, the mirror did nothing wrong."""


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


# ----------------------------------------------------------------------------- scopes


@dataclass(frozen=True, slots=True)
class FetchScope:
    """What every request made inside :func:`fetch_scope` is held to.

    ``origin``: the mirror's URL; requested URLs and redirects must stay with it (see
    ``MirrorPolicy.url_refusal``). ``deadline`` (``time.monotonic()``): every request
    ends by then; ``limit`` says which limit that is, for the error. ``stop``: when set,
    requests end at once with :class:`FetchStopped`.
    """

    origin: str | None = None
    deadline: float | None = None
    limit: str = ""
    stop: threading.Event | None = None

    def stopped(self) -> bool:
        """Whether the scope's stop event is set."""
        return self.stop is not None and self.stop.is_set()


_NO_SCOPE = FetchScope()
_SCOPE: contextvars.ContextVar[FetchScope | None] = contextvars.ContextVar(
    "patchwatch_fetch_scope", default=None
)


def current_scope() -> FetchScope:
    """The scope requests made now are held to (an empty one outside any)."""
    return _SCOPE.get() or _NO_SCOPE


@contextmanager
def fetch_scope(
    *,
    origin: str | None = None,
    seconds: float | None = None,
    limit: str = "",
    stop: threading.Event | None = None,
) -> Iterator[FetchScope]:
    """Hold the requests made inside to ``origin``, a deadline ``seconds`` away, a stop.

    Scopes nest: the inner one keeps the outer one's deadline when that is sooner, and
    its origin and stop event unless it names its own. A context variable, so each
    thread (and each ``contextvars.copy_context().run``) has its own.
    """
    outer = current_scope()
    deadline, label = outer.deadline, outer.limit
    if seconds is not None:
        mine = time.monotonic() + seconds
        if deadline is None or mine < deadline:
            deadline, label = mine, limit or f"{seconds:g} s"
    scope = FetchScope(
        origin=origin if origin is not None else outer.origin,
        deadline=deadline,
        limit=label,
        stop=stop if stop is not None else outer.stop,
    )
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


# ------------------------------------------------------------------ one attempt, guarded


class _Attempt:
    """One request attempt: its deadline, the sockets it uses, and why it was cut off.

    A watchdog thread waits for the deadline (and polls the stop event); when either
    comes first it shuts down every socket the attempt registered, which wakes any
    read blocked on them, including one in the middle of the status line or the
    headers. It shuts down duplicates of the sockets' descriptors: the same connection,
    whatever TLS wrapping did to the original object, and never a descriptor number
    that another thread may have reused.
    """

    def __init__(self, deadline: float, limit: str, stop: threading.Event | None) -> None:
        self.deadline = deadline
        self.limit = limit
        self.stop = stop
        self.cut: str = ""  # "deadline" or "stopped" once the watchdog fired
        self.refusal: str = ""  # set by the connection when the policy refused an address
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fetch-watchdog", daemon=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def __enter__(self) -> _Attempt:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        with self._lock:
            for dup in self._socks:
                dup.close()
            self._socks.clear()

    def watch(self, sock: socket.socket | None) -> None:
        """Cut ``sock`` off with the rest of the attempt (at once, if already cut)."""
        if sock is None:
            return
        try:  # fromfd, not dup(): a TLS socket cannot dup(), its descriptor can
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):
            return  # closed already: nothing to cut
        with self._lock:
            self._socks.append(dup)
            if self.cut:
                _shutdown(dup)

    def _watch(self) -> None:
        while True:
            remaining = self.remaining()
            if remaining <= 0:
                self._fire("deadline")
                return
            wait = remaining if self.stop is None else min(remaining, STOP_POLL_SECONDS)
            if self._done.wait(wait):
                return
            if self.stop is not None and self.stop.is_set():
                self._fire("stopped")
                return

    def _fire(self, why: str) -> None:
        with self._lock:
            if self.cut:
                return
            self.cut = why
            for dup in self._socks:
                _shutdown(dup)

    def check(self) -> None:
        """Mark the attempt cut if its time is up or its stop is set (between reads)."""
        if self.cut:
            return
        if self.stop is not None and self.stop.is_set():
            self._fire("stopped")
        elif self.remaining() <= 0:
            self._fire("deadline")


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or already gone


class _Guard:
    """The policy and the attempt of the current thread, for the guarded connections."""

    def __init__(self, policy: MirrorPolicy) -> None:
        self.policy = policy
        self._local = threading.local()
        http_conn = type(
            "GuardedHTTPConnection",
            (_GuardedMixin, urllib3.connection.HTTPConnection),
            {"guard": self},
        )
        https_conn = type(
            "GuardedHTTPSConnection",
            (_GuardedMixin, urllib3.connection.HTTPSConnection),
            {"guard": self},
        )
        self.pools = {
            "http": type(
                "GuardedHTTPPool",
                (urllib3.connectionpool.HTTPConnectionPool,),
                {"ConnectionCls": http_conn},
            ),
            "https": type(
                "GuardedHTTPSPool",
                (urllib3.connectionpool.HTTPSConnectionPool,),
                {"ConnectionCls": https_conn},
            ),
        }

    @property
    def attempt(self) -> _Attempt | None:
        return getattr(self._local, "attempt", None)

    @contextmanager
    def active(self, attempt: _Attempt) -> Iterator[_Attempt]:
        self._local.attempt = attempt
        try:
            with attempt:
                yield attempt
        finally:
            self._local.attempt = None

    def install(self, manager: Any) -> None:
        """Make a urllib3 pool manager build guarded connections."""
        manager.pool_classes_by_scheme = dict(self.pools)

    def connect(self, conn: urllib3.connection.HTTPConnection) -> socket.socket:
        """Resolve, keep the addresses the policy allows, connect to the first that answers.

        The same resolution is used to check and to connect, so a name cannot change
        its address between the two (DNS rebinding).
        """
        attempt = self.attempt
        host = conn._dns_host.strip("[]")
        timeout = conn.timeout
        if attempt is not None and isinstance(timeout, int | float):
            timeout = max(0.001, min(float(timeout), attempt.remaining()))
        family = urllib3.util.connection.allowed_gai_family()
        infos = socket.getaddrinfo(host, conn.port, family, socket.SOCK_STREAM)
        refused: list[str] = []
        error: OSError | None = None
        for af, socktype, proto, _name, address in infos:
            refusal = self.policy.address_refusal(str(address[0]))
            if refusal is not None:
                refused.append(refusal)
                continue
            sock = socket.socket(af, socktype, proto)
            try:
                for option in conn.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(timeout, int | float):
                    sock.settimeout(timeout)
                if conn.source_address:
                    sock.bind(conn.source_address)
                sock.connect(address)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        if error is not None:
            raise error
        reason = f"refused to connect to {host}: " + "; ".join(dict.fromkeys(refused))
        if attempt is not None:
            attempt.refusal = reason
        raise _Refused(reason)


class _Refused(OSError):
    """The policy refused every address a host resolved to: no connection was made."""


class _GuardedMixin:
    """An urllib3 connection that connects through :class:`_Guard` and is watched."""

    guard: _Guard

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        if conn.proxy is not None:
            # the operator's proxy, from the environment: connecting to it is allowed,
            # and it resolves the mirror's name itself
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        else:
            try:
                sock = self.guard.connect(conn)
            except socket.gaierror as exc:
                raise urllib3.exceptions.NameResolutionError(conn.host, conn, exc) from exc
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(
                    conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
                ) from exc
            except OSError as exc:
                raise urllib3.exceptions.NewConnectionError(
                    conn, f"Failed to establish a new connection: {exc}"
                ) from exc
            sys.audit("http.client.connect", conn, conn.host, conn.port)
        attempt = self.guard.attempt
        if attempt is not None:
            attempt.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = self.guard.attempt
        sock = getattr(self, "sock", None)
        if attempt is not None and sock is not None:  # a kept-alive connection, reused
            attempt.watch(sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose pools (direct and through http proxies) are guarded."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._guard.install(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS brings its own connections
            self._guard.install(manager)
        return manager


@dataclass(frozen=True, slots=True)
class _Request:
    """What :meth:`HttpFetcher.fetch` was asked for, handed to each attempt."""

    url: str
    dest: Path
    max_bytes: int
    hash_name: str
    etag: str
    last_modified: str


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait  # the server's Retry-After, when it gave one


class HttpFetcher:
    """The fetcher: one ``requests.Session`` per thread, guarded.

    ``timeout`` bounds connecting and each wait for data (a mirror that accepts the
    connection and then says nothing fails after it); ``max_seconds`` bounds one whole
    attempt, connect, headers and body together, so a mirror that trickles a byte at
    a time cannot hold the refresh. ``retries`` extra attempts follow a transient
    failure, ``backoff * 2**n`` seconds apart (with jitter, capped at ``max_backoff``).
    ``policy`` says where requests may go; the default is the default settings' one:
    public addresses and the distributions' mirror networks only.

    One fetcher may serve several threads at once (the refresh reads mirrors side by
    side): each thread gets its own session, and :meth:`close` closes them all.
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
        policy: MirrorPolicy | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_seconds = max_seconds if max_seconds is not None else max(60.0, 10 * timeout)
        self.policy = policy if policy is not None else Settings().mirror_policy
        self._guard = _Guard(self.policy)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._shared = self._prepare(session) if session is not None else None
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, policy: MirrorPolicy | None = None) -> HttpFetcher:
        """Build the fetcher the scheduler and the CLI use, from the HTTP settings;
        ``policy`` instead of the mirrors' one (the feeds' own origins)."""
        return cls(
            timeout=settings.http_timeout_seconds,
            retries=settings.http_retries,
            max_seconds=settings.http_request_max_seconds,
            policy=policy if policy is not None else settings.mirror_policy,
        )

    @property
    def session(self) -> requests.Session:
        """This thread's session (created on first use)."""
        if self._shared is not None:
            return self._shared
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._prepare(requests.Session())
            self._local.session = session
        return session

    def _prepare(self, session: requests.Session) -> requests.Session:
        session.headers["User-Agent"] = USER_AGENT
        # Files are hashed as stored on the mirror; a transparently gzipped transfer
        # would only cost CPU, and a broken server could mangle the bytes on the way.
        session.headers["Accept-Encoding"] = "identity"
        for prefix in ("http://", "https://"):
            session.mount(prefix, _GuardedAdapter(self._guard))
        with self._lock:
            self._sessions.append(session)
        return session

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
        """Close every session's pooled connections."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

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
        status, :class:`FetchStopped` when the scope was stopped) says why, after the
        retries for transient failures are spent. A URL the policy refuses fails at
        once, before any connection.
        """
        scope = current_scope()
        request = _Request(url, dest, max_bytes, hash_name, etag, last_modified)
        attempts = self.retries + 1
        last: _Retry | None = None
        for attempt in range(attempts):
            if last is not None:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: many schedulers, one mirror
                if last.wait is not None:
                    delay = min(self.max_backoff, max(delay, last.wait))
                self._check_scope(url, scope, last.reason, delay)
                log.debug("retrying %s in %.1f s: %s", url, delay, last.reason)
                self._sleep(delay)
            self._check_scope(url, scope, last.reason if last else "", 0.0)
            try:
                return self._attempt(request, scope)
            except _Retry as exc:
                dest.unlink(missing_ok=True)
                last = exc
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
        assert last is not None
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise FetchError(url, f"{last.reason} (gave up after {tries})")

    @staticmethod
    def _check_scope(url: str, scope: FetchScope, last: str, delay: float) -> None:
        """Fail before another attempt when the scope is stopped or out of time."""
        if scope.stopped():
            raise FetchStopped(url, "stopped before it finished")
        if scope.deadline is not None and time.monotonic() + delay >= scope.deadline:
            after = f" after: {last}" if last else ""
            raise FetchError(url, f"no time left within {scope.limit}{after}")

    def _attempt(self, request: _Request, scope: FetchScope) -> Download:
        deadline, limit = time.monotonic() + self.max_seconds, f"{self.max_seconds:g} s"
        if scope.deadline is not None and scope.deadline < deadline:
            deadline, limit = scope.deadline, scope.limit
        with self._guard.active(_Attempt(deadline, limit, scope.stop)) as attempt:
            try:
                return self._get(request, scope, attempt)
            except (_Retry, FetchError, requests.exceptions.RequestException, OSError):
                attempt.check()
                if attempt.cut:
                    raise _cut_error(request.url, attempt) from None
                raise

    def _get(self, request: _Request, scope: FetchScope, attempt: _Attempt) -> Download:
        """Follow redirects one checked hop at a time, then receive the answer."""
        url = request.url
        headers: dict[str, str] = {}
        if request.etag:
            headers["If-None-Match"] = request.etag
        if request.last_modified:
            headers["If-Modified-Since"] = request.last_modified
        origin = scope.origin if scope.origin is not None else url
        current, previous = url, None
        for _hop in range(MAX_REDIRECTS + 1):
            refusal = self.policy.url_refusal(current, origin, previous)
            if refusal is not None:
                what = "redirect to " + current if previous is not None else "request"
                raise FetchError(url, f"{what} refused by the mirror policy: {refusal}")
            response = self._send(current, headers, attempt)
            if response.status_code not in REDIRECT_STATUSES or "Location" not in response.headers:
                break
            response.close()
            try:
                previous, current = current, urljoin(current, response.headers["Location"])
            except ValueError:
                raise FetchError(url, "redirect to an unusable Location") from None
        else:
            raise FetchError(url, f"more than {MAX_REDIRECTS} redirects")
        with response:
            return self._receive(response, current, request, attempt)

    def _send(self, url: str, headers: dict[str, str], attempt: _Attempt) -> requests.Response:
        connect = max(0.001, min(self.timeout, attempt.remaining()))
        try:
            return self.session.get(
                url, headers=headers, stream=True, timeout=(connect, self.timeout),
                allow_redirects=False,
            )  # fmt: skip
        except requests.exceptions.SSLError as exc:
            raise FetchError(url, f"TLS error: {_short(exc)}") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise FetchError(url, f"unusable URL: {_short(exc)}") from None
        except requests.exceptions.Timeout:
            raise _Retry(f"timed out after {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            if attempt.refusal:  # the policy refused every address: no connection was made
                raise FetchError(url, attempt.refusal) from None
            raise _Retry(f"connection failed: {_short(exc)}") from None

    def _receive(
        self, response: requests.Response, url: str, request: _Request, attempt: _Attempt
    ) -> Download:
        hash_name, max_bytes = request.hash_name, request.max_bytes
        etag, last_modified = request.etag, request.last_modified
        status = response.status_code
        if status == 304 and (etag or last_modified):
            return Download(
                url=url, path=None, size=0, hash_name=hash_name, digest="",
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
            with request.dest.open("wb") as out:
                for chunk in response.iter_content(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(url, f"sent more than the limit of {max_bytes} bytes")
                    attempt.check()
                    if attempt.cut:
                        raise _cut_error(url, attempt)
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
        attempt.check()
        if attempt.cut:  # a body without a length ends at the shutdown: not a whole body
            raise _cut_error(url, attempt)
        return Download(
            url=url,
            path=request.dest,
            size=size,
            hash_name=hash_name,
            digest=digest.hexdigest(),
            etag=response.headers.get("ETag", ""),
            last_modified=response.headers.get("Last-Modified", ""),
            content_type=response.headers.get("Content-Type", ""),
        )


#: What the refresh, the follow-up and the feeds are handed. One class, no protocol: a
#: second signature to keep in step would serve no caller.
Fetcher: TypeAlias = HttpFetcher


def _cut_error(url: str, attempt: _Attempt) -> FetchError:
    """The error for an attempt the watchdog cut off (not retried: the time is spent)."""
    if attempt.cut == "stopped":
        return FetchStopped(url, "stopped before it finished")
    return FetchError(url, f"download took longer than {attempt.limit} (the deadline for "
                      "connecting, headers and body together)")  # fmt: skip


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
