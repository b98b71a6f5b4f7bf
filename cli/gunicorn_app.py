"""Run a WSGI application under gunicorn from inside our own process.

Embedding (rather than shelling out to the ``gunicorn`` script) keeps one command, one
set of settings and one logging format. gunicorn's arbiter owns signals: SIGTERM and
Ctrl-C stop the workers gracefully, and ``on_exit`` lets the caller stop what it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from patchwatch.receiver.gate import GATE
from patchwatch.receiver.gate import release_memory

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


HEADER_DEADLINE_SECONDS = 5.0
DEADLINE_TICK_SECONDS = 0.25  # how often late headers are looked for: the deadline's grain
_current = threading.local()


class HeaderDeadlines:
    """The connections of one worker process whose headers are still being read, each
    with its deadline, and one thread that cuts those past it.

    Why one thread for all: a timer per request (a thread started and cancelled per
    connection) was about a sixth of a worker's time answering reports
    (docs/performance.md, "Acknowledging reports"). Arming and disarming are now a
    dictionary entry each; the thread wakes every :data:`DEADLINE_TICK_SECONDS`, so a
    connection is cut at most that much after its deadline.
    """

    def __init__(self, tick: float = DEADLINE_TICK_SECONDS) -> None:
        self.tick = tick
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, Callable[[], None]]] = {}
        self._pid = 0

    def arm(self, key: int, deadline: float, cut: Callable[[], None]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first use in this (forked) worker
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="header-deadlines", daemon=True).start()
            self._due[key] = (deadline, cut)

    def disarm(self, key: int) -> None:
        with self._lock:
            self._due.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                late = [key for key, (deadline, _cut) in self._due.items() if deadline <= now]
                cuts = [self._due.pop(key)[1] for key in late]
            for cut in cuts:
                cut()


DEADLINES = HeaderDeadlines()


class GuardedThreadWorker(ThreadWorker):
    """gunicorn's threaded worker with a deadline for receiving a request's headers.

    gunicorn reads headers with blocking calls and no overall deadline, so a client
    trickling a byte now and then (slow-loris) could hold a thread for ever; enough of
    them starve every agent. The connection is cut if the headers are not complete
    within the deadline counted from when the connection was accepted (so that
    connections queued behind slow ones do not get a fresh allowance), by the
    worker's :class:`HeaderDeadlines`; ``pre_request``, called once headers are read,
    disarms it. Bodies have their own deadline in the receiver, and silence is bounded
    by ``SO_RCVTIMEO``.
    """

    def enqueue_req(self, conn: Any) -> None:
        if not conn.initialized and getattr(conn, "accepted_at", None) is None:
            conn.accepted_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        key = id(conn)
        _current.key = key
        started = getattr(conn, "accepted_at", None) or time.monotonic()
        conn.accepted_at = None  # a kept-alive next request starts its own clock

        def cut() -> None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

        DEADLINES.arm(key, started + HEADER_DEADLINE_SECONDS, cut)
        try:
            return super().handle(conn)
        finally:
            DEADLINES.disarm(key)
            _current.key = None


def _headers_received(_worker: Any, _req: Any) -> None:
    key = getattr(_current, "key", None)
    if key is not None:
        DEADLINES.disarm(key)


def resident_bytes() -> int:
    """This process's resident memory (RSS), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


MEMORY_CHECK_SECONDS = 1.0


def recycle_above(limit: int) -> Callable[[Any, Any, Any, Any], None]:
    """A ``post_request`` hook: replace a worker whose memory stays above ``limit`` bytes.

    Runs after a request that took the large-report slot (``patchwatch.receiver.gate``),
    after any other request at most every :data:`MEMORY_CHECK_SECONDS` (reading
    ``/proc`` after every small report was a noticeable part of answering it), and
    after each batch of the receiver's processing thread
    (``patchwatch.receiver.feed``), so inline processing is included. Freed memory is handed back
    first (``patchwatch.receiver.gate.release_memory``); if the worker is still above the limit,
    it stops taking connections, finishes the ones it has (gunicorn's graceful stop,
    as for ``max_requests``) and the arbiter starts a fresh one, so what a request
    left behind (fragmentation, caches) does not stay for the worker's life.
    """

    last = {"at": 0.0, "released": -1}

    def post_request(worker: Any, _req: Any, _environ: Any, _resp: Any) -> None:
        feed = sys.modules.get(
            "patchwatch.receiver.feed"
        )  # the receiver's processing thread, if any
        if feed is not None and feed.FEED.after_batch is None:
            feed.FEED.after_batch = lambda: check(worker)
        now = time.monotonic()
        if GATE.released == last["released"] and now - last["at"] < MEMORY_CHECK_SECONDS:
            return
        last["at"], last["released"] = now, GATE.released
        check(worker)

    def check(worker: Any) -> None:
        if resident_bytes() <= limit:
            return
        release_memory()
        rss = resident_bytes()
        if rss <= limit or not worker.alive:
            return
        log.warning(
            "worker %d holds %d MiB after a request (setting worker_max_memory_bytes: "
            "%d MiB); replacing it once its requests are done",
            os.getpid(), rss >> 20, limit >> 20,
        )  # fmt: skip
        worker.alive = False
        queue = getattr(worker, "method_queue", None)
        if queue is not None:  # wake the threaded worker's loop so that it stops now
            queue.defer(lambda: None)

    return post_request


class EmbeddedGunicorn(BaseApplication):
    def __init__(self, load_app: Callable[[], Any], options: dict[str, Any]) -> None:
        self._load_app = load_app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load_app()


def logging_config(log_level: str) -> dict[str, Any]:
    """One line per event on stderr, the same format for gunicorn and patchwatch."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": log_level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": log_level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def set_read_timeout(server: Any, seconds: float) -> None:
    """Give every listening socket a kernel receive timeout that accepted sockets inherit.

    gunicorn reads request headers and bodies with blocking calls and no deadline, so a
    client that sends a byte now and then could hold a thread for ever. ``SO_RCVTIMEO``
    makes such a read fail after ``seconds`` of silence and the connection is closed.
    """
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def gunicorn_options(
    bind: str,
    workers: int,
    log_level: str,
    on_exit: Callable[[Any], None] | None = None,
    child_exit: Callable[[Any, Any], None] | None = None,
    threads: int = 1,
    read_timeout: float | None = None,
    max_memory: int = 0,
) -> dict[str, Any]:
    """Return the gunicorn settings patchwatch always uses.

    ``max_memory``: replace a worker whose RSS stays above it after a request
    (:func:`recycle_above`); 0 never.
    """
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "patchwatch.cli.gunicorn_app.GuardedThreadWorker"
        if threads > 1
        else "sync",
        "pre_request": _headers_received,
        "threads": threads,
        "timeout": 120,
        "graceful_timeout": 20,
        "loglevel": log_level.lower(),
        "errorlog": "-",
        "accesslog": None,
        "control_socket_disable": True,  # gunicorn 27 would create ~/.gunicorn/gunicorn.ctl
        "proc_name": "patchwatch",
        "logconfig_dict": logging_config(log_level),
    }
    if on_exit:
        options["on_exit"] = on_exit
    if child_exit:
        options["child_exit"] = child_exit
    if read_timeout:
        options["when_ready"] = lambda server: set_read_timeout(server, read_timeout)
    if max_memory:
        options["post_request"] = recycle_above(max_memory)
    return options
