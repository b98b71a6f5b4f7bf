"""The server processes: ``serve`` (all in one), ``receiver``, ``scheduler``, ``exporter``,
``processor``.

``serve`` is the embedded default: it migrates the store, starts the scheduler and,
with ``process_inline`` on, the processing processes (``patchwatch.pipeline.processor``)
as child processes and runs gunicorn with the receiver and ``/metrics`` on one port;
the workers wake the processing processes through pipes created before they are
forked. A processing process that dies (a crash, the kernel's OOM killer) is started
again on the same pipe (:class:`ProcessorSupervisor`), counted in
``patchwatch_processor_restarts_total`` and logged. Stopping it (SIGTERM, Ctrl-C)
stops gunicorn gracefully and then the children.

prometheus_client decides at import time whether counters are shared between processes
(``PROMETHEUS_MULTIPROC_DIR``), so everything that imports it is imported lazily, after
that variable is set.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playhouse.pool import PooledDatabase

from patchwatch.cli.gunicorn_app import EmbeddedGunicorn
from patchwatch.cli.gunicorn_app import gunicorn_options
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processor import make_pipe
from patchwatch.store.db import PRIVATE_DIR_MODE
from patchwatch.store.db import open_database
from patchwatch.store.migrations import migrate

log = logging.getLogger("patchwatch.serve")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, handler, text in (
        ("serve", cmd_serve, "run receiver, scheduler and exporter together (embedded default)"),
        ("receiver", cmd_receiver, "run only the receiver (scale-out: several behind a balancer)"),
        ("scheduler", cmd_scheduler, "run only the scheduler (one works; others wait)"),
        ("exporter", cmd_exporter, "run only the Prometheus exporter"),
        ("processor", cmd_processor, "run only the report processing loop (serve starts one)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--data-dir", dest="data_dir", default=argparse.SUPPRESS,
            help="data folder (setting data_dir)",
        )  # fmt: skip
        if name not in ("scheduler", "processor"):
            p.add_argument("--bind", help="host:port to listen on (setting bind)")
            p.add_argument("--workers", type=int, help="gunicorn workers (setting workers)")
        if name == "processor":
            # the read end of serve's wake-up pipe, inherited, and which share of the
            # queue this process takes (not for operators)
            p.add_argument("--wake-fd", dest="wake_fd", type=int, help=argparse.SUPPRESS)
            p.add_argument("--share", default="0/1", help=argparse.SUPPRESS)
        p.set_defaults(handler=handler)


def bind_first(bind: str) -> str:
    """Take the listening address before anything else; return gunicorn's ``fd://N``.

    A server started on a busy port used to migrate the store and start the
    scheduler before gunicorn found the port taken (and retried for 5 s). The
    address is bound here first, so a busy or invalid one fails at once and
    touches nothing; gunicorn then listens on the bound socket (it takes the file
    descriptor over).

    :raises PatchwatchError: when the address cannot be bound.
    """
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, ValueError) as exc:
        raise PatchwatchError(f"cannot listen on {bind}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PatchwatchError(f"cannot listen on {bind}: {exc.strerror or exc}") from None
    return f"fd://{sock.detach()}"


def prepare_data_dir(settings: Settings) -> Path:
    """Create the data folder private to its owner (0700, whatever the umask).

    One that exists keeps its mode (the operator chose it), with a warning at start-up
    when others may enter it: the store holds every host's inventory.
    """
    data_dir = Path(settings.data_dir).resolve()
    try:
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=PRIVATE_DIR_MODE, exist_ok=True)
            os.chmod(data_dir, PRIVATE_DIR_MODE)
        elif data_dir.stat().st_mode & 0o007:
            log.warning(
                "data folder %s is open to other users (mode %o): chmod 700 it",
                data_dir, data_dir.stat().st_mode & 0o777,
            )  # fmt: skip
    except OSError as exc:
        raise PatchwatchError(f"cannot create data folder {data_dir}: {exc.strerror}") from None
    return data_dir


def bind_is_loopback(bind: str) -> bool:
    """Whether ``host:port`` listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    host = bind.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def warn_open_metrics(settings: Settings) -> bool:
    """Warn when ``/metrics`` (with every host's state) is served beyond loopback unguarded.

    The host series name each host with its OS, kernel and pending security updates:
    a map of the fleet's weak points for whoever reaches the port. Returns whether it
    warned.
    """
    if settings.metrics_token or bind_is_loopback(settings.bind):
        return False
    log.warning(
        "bind %s is not a loopback address and metrics_token is not set: /metrics shows "
        "every host's name, OS, kernel and pending security updates to anyone who can "
        "reach it; set metrics_token, or bind to loopback behind a proxy (docs/deploy.md)",
        settings.bind,
    )
    return True


def prepare_database(settings: Settings) -> None:
    db = open_database(settings.resolved_database_url)
    try:
        with db.connection_context():
            applied = migrate(db)
    except Exception as exc:  # boundary: any driver error becomes one clear line
        raise PatchwatchError(f"cannot open the database: {type(exc).__name__}: {exc}") from None
    finally:
        # nothing of the master's crosses gunicorn's fork: a pooled PostgreSQL
        # connection would otherwise sit in every worker's copy of the pool
        if isinstance(db, PooledDatabase):
            db.close_all()
    if applied:
        log.info("database schema migrated to version %d", applied[-1])


def fresh_metrics_dir(data_dir: Path, name: str) -> Path:
    """Empty the shared-counter folder: counters restart with the server, as usual."""
    path = data_dir / "run" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _mark_worker_dead(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def make_server_app(
    settings: Settings,
    with_receiver: bool = True,
    store_metrics: bool = True,
    server_pid: int | None = None,
    wake_fds: tuple[int, ...] = (),
) -> Any:
    """Build the WSGI app one gunicorn worker serves (called in the worker).

    ``server_pid`` is gunicorn's master: ``process_*`` describe it and every process
    under it, not only the worker that answers a scrape. ``wake_fds``: the write ends
    of the processing processes' wake-up pipes (``serve``).
    """
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from patchwatch.exporter.app import make_app as make_exporter
    from patchwatch.pipeline.processor import Waker
    from patchwatch.receiver.app import create_app

    if not with_receiver:
        return make_exporter(
            open_database(settings.resolved_database_url), token=settings.metrics_token,
            server_pid=server_pid,
        )  # fmt: skip
    app = create_app(settings, processor=Waker(wake_fds) if wake_fds else None)
    from patchwatch.store.db import database

    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        {
            "/metrics": make_exporter(
                database.obj,
                include_store=store_metrics,
                token=settings.metrics_token,
                server_pid=server_pid,
            )
        },
    )
    return app


def start_scheduler_child(
    settings: Settings,
    args: argparse.Namespace,
    verb: str = "scheduler",
    wake_fd: int | None = None,
    share: tuple[int, int] = (0, 1),
) -> subprocess.Popen[bytes]:
    """Start ``patchwatch <verb>`` (the scheduler, or a processing process with the
    read end of its wake-up pipe and its share) as a child with this command's settings."""
    env = dict(os.environ)
    env["PATCHWATCH_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    if verb != "processor":
        # a processing process keeps the server's metrics folder: its processing-time
        # histogram is served with the receiver's counters
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "patchwatch"]
    if args.config:
        cmd += ["--config", args.config]
    if args.verbose:
        cmd.append("-v")
    cmd.append(verb)
    if wake_fd is None:
        return subprocess.Popen(cmd, env=env)
    cmd += ["--wake-fd", str(wake_fd), "--share", f"{share[0]}/{share[1]}"]
    return subprocess.Popen(cmd, env=env, pass_fds=(wake_fd,))


def stop_child(child: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("child %d did not stop in %.0f s; killing it", child.pid, timeout)
        child.kill()
        child.wait()


# how often serve looks for a dead processing process, and the longest it waits before
# starting one again (doubling from 1 s while they keep dying within a minute)
SUPERVISE_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 60.0
STAYED_UP_SECONDS = 60.0


class ProcessorSupervisor:
    """The processing processes of ``serve``, each started again when it dies.

    Each keeps its pipe: ``serve`` holds the read end (as the workers hold the write
    ends), so that a new process reads the wake-ups the dead one left, and its share
    of the queue. Why restart: without a processing process its share of the reports
    waits for the scheduler's straggler job (30 s and more), and one killed for its
    memory would otherwise stay gone until the server is restarted.

    gunicorn's arbiter reaps every child of this process (its ``waitpid(-1)``), so an
    exit status is not always known; a process found gone while the server is not
    stopping is restarted whatever its status. A stop of the server (its signals,
    which the processing processes get too from a terminal or systemd) is noted
    first, so that processes stopping with it are not started again.
    """

    def __init__(self, settings: Settings, args: argparse.Namespace, count: int) -> None:
        self.settings = settings
        self.args = args
        self.count = count
        self.read_fds: list[int] = []
        self.write_fds: list[int] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.started_at: list[float] = []
        self.failures: list[int] = []
        self.not_before: list[float] = []
        self.restarts = 0
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for k in range(self.count):
            read_fd, write_fd = make_pipe()
            self.read_fds.append(read_fd)
            self.write_fds.append(write_fd)
            self.children.append(self._spawn(k))
            self.started_at.append(time.monotonic())
            self.failures.append(0)
            self.not_before.append(0.0)
        if self.count:
            self._thread = threading.Thread(target=self._watch, name="processors", daemon=True)
            self._thread.start()

    def _spawn(self, k: int) -> subprocess.Popen[bytes]:
        return start_scheduler_child(
            self.settings, self.args, "processor", self.read_fds[k], (k, self.count)
        )

    def _watch(self) -> None:
        while not self.stopping.wait(SUPERVISE_SECONDS):
            self.check()

    def check(self) -> int:
        """Start again every processing process found gone (once its wait is over);
        return how many were started."""
        started = 0
        for k, child in enumerate(self.children):
            if child.poll() is None or self.stopping.is_set():
                continue
            now = time.monotonic()
            if not self.not_before[k]:
                lived = now - self.started_at[k]
                self.failures[k] = 0 if lived >= STAYED_UP_SECONDS else self.failures[k] + 1
                wait = min(RESTART_BACKOFF_MAX_SECONDS, 2.0 ** self.failures[k] - 1)
                self.not_before[k] = now + wait
                log.warning(
                    "processing process %d (share %d of %d) is gone (exit status %s, after "
                    "%.0f s); starting another%s",
                    child.pid, k, self.count, child.returncode, lived,
                    f" in {wait:.0f} s" if wait else "",
                )  # fmt: skip
            if now < self.not_before[k]:
                continue
            self.children[k] = self._spawn(k)
            self.started_at[k] = now
            self.not_before[k] = 0.0
            self.restarts += 1
            started += 1
            _count_restart()
        return started

    def stop(self) -> None:
        self.stopping.set()
        for child in self.children:
            stop_child(child)


def _count_restart() -> None:
    from patchwatch.receiver.metrics import PROCESSOR_RESTARTS

    PROCESSOR_RESTARTS.inc()


def _note_stop_on_signals(
    supervisor: ProcessorSupervisor, ready: Callable[[Any], None] | None
) -> Callable[[Any], None]:
    """A ``when_ready`` hook that marks the supervisor stopping on the arbiter's stop
    signals (before gunicorn's own handlers, which it keeps), then runs ``ready``."""

    def when_ready(server: Any) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            previous = signal.getsignal(signum)

            def noted(number: int, frame: Any, previous: Any = previous) -> None:
                supervisor.stopping.set()
                if callable(previous):
                    previous(number, frame)

            signal.signal(signum, noted)
        if ready is not None:
            ready(server)

    return when_ready


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    listener = bind_first(settings.bind)
    warn_open_metrics(settings)
    data_dir = prepare_data_dir(settings)
    prepare_database(settings)
    fresh_metrics_dir(data_dir, "metrics")
    children = [start_scheduler_child(settings, args)]
    processors = ProcessorSupervisor(
        settings, args, settings.process_workers if settings.process_inline else 0
    )
    processors.start()
    log.info(
        "patchwatch serving on http://%s (data in %s, database %s)",
        settings.bind,
        data_dir,
        "PostgreSQL" if settings.database_url.startswith("postgres") else "SQLite",
    )

    def on_exit(_server: Any) -> None:
        processors.stop()
        for child in children:
            stop_child(child)

    options = gunicorn_options(
        listener,
        settings.workers,
        settings.log_level,
        on_exit=on_exit,
        child_exit=_mark_worker_dead,
        threads=settings.threads,
        read_timeout=settings.client_read_timeout_seconds,
        max_memory=settings.worker_max_memory_bytes,
    )
    options["when_ready"] = _note_stop_on_signals(processors, options.get("when_ready"))
    try:
        _serve_app(settings, options, wake_fds=tuple(processors.write_fds))
    finally:
        processors.stop()
        for child in children:
            stop_child(child)
    return 0


def _serve_app(settings: Settings, options: dict[str, Any], **app_options: Any) -> None:
    """Run gunicorn's arbiter in this process, each worker building the server app with
    ``app_options`` and this process's id (the arbiter's) as ``server_pid``."""
    master = os.getpid()
    EmbeddedGunicorn(
        lambda: make_server_app(settings, server_pid=master, **app_options), options
    ).run()


def cmd_receiver(settings: Settings, args: argparse.Namespace) -> int:
    listener = bind_first(settings.bind)
    data_dir = prepare_data_dir(settings)
    prepare_database(settings)
    fresh_metrics_dir(data_dir, f"metrics-receiver-{os.getpid()}")
    options = gunicorn_options(
        listener,
        settings.workers,
        settings.log_level,
        child_exit=_mark_worker_dead,
        threads=settings.threads,
        read_timeout=settings.client_read_timeout_seconds,
        max_memory=settings.worker_max_memory_bytes,
    )
    _serve_app(settings, options, store_metrics=False)
    return 0


def cmd_exporter(settings: Settings, args: argparse.Namespace) -> int:
    listener = bind_first(settings.bind)
    warn_open_metrics(settings)
    prepare_data_dir(settings)
    prepare_database(settings)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    options = gunicorn_options(listener, settings.workers, settings.log_level)
    _serve_app(settings, options, with_receiver=False)
    return 0


def _stop_on_signals(what: str) -> threading.Event:
    """An event SIGTERM and SIGINT set: the loops of the scheduler and the processing
    processes finish their step and return, instead of dying mid-transaction."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s got signal %d; stopping", what, signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from patchwatch.scheduler.runner import default_jobs
    from patchwatch.scheduler.runner import run_forever

    # first, so that a stop during start-up (migrations, a slow database) is orderly
    stop = _stop_on_signals("scheduler")
    prepare_data_dir(settings)
    prepare_database(settings)
    db = open_database(settings.resolved_database_url)
    log.info("scheduler started")
    run_forever(db, default_jobs(settings), stop, lease_ttl=settings.scheduler_lease_seconds)
    return 0


def cmd_processor(settings: Settings, args: argparse.Namespace) -> int:
    """Process reports as they arrive (``patchwatch.pipeline.processor``): woken through
    ``--wake-fd`` under ``serve``, looking every second when run alone."""
    from patchwatch.pipeline.processor import run_processor

    stop = _stop_on_signals("processing process")
    prepare_data_dir(settings)
    prepare_database(settings)
    open_database(settings.resolved_database_url)
    k, _, n = args.share.partition("/")
    try:
        share = (int(k), int(n))
    except ValueError:
        raise PatchwatchError(f"--share must be K/N, not {args.share!r}") from None
    if not 0 <= share[0] < share[1]:
        raise PatchwatchError(f"--share must be K/N with 0 <= K < N, not {args.share!r}")
    from patchwatch.receiver.metrics import PROCESSING_SECONDS

    run_processor(stop, args.wake_fd, share, observe=PROCESSING_SECONDS.observe)
    return 0
