"""``process_*`` for the whole server: its master process and every process under it.

prometheus_client's process collector describes the process that answers the scrape.
Under gunicorn that is whichever worker took the connection, so one scrape showed one
worker's CPU time and the next another's (the counter went backwards), the start time
changed from scrape to scrape, and the scheduler (a child of ``patchwatch serve``)
was never counted. Here the server is the process tree under one root, the process
that started gunicorn (its master), and the series are summed over it:

- ``process_cpu_seconds_total``: user and system time of every live process of the
  tree, plus the time of its children that have exited (``cutime``/``cstime`` in
  ``/proc/PID/stat``: a restarted worker's time stays counted), so the counter only
  goes up while the server runs.
- ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_open_fds``: sums over the live processes (pages shared by forked workers
  count once per process, as ``ps`` shows them).
- ``process_start_time_seconds`` and ``process_max_fds``: the root's.
- ``patchwatch_server_processes``: how many processes the sums cover.

Linux only (``/proc``); elsewhere nothing is exported, rather than one worker's
numbers passed off as the server's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the process metrics need."""

    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    start_ticks: int  # since boot
    vsize: int
    rss_pages: int


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line (the command name may hold spaces and ``)``)."""
    pid = int(text[: text.index(" ")])
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14-17, starttime 22,
    # vsize 23, rss 24 (proc(5))
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        cpu_ticks=sum(int(f) for f in fields[11:15]),
        start_ticks=int(fields[19]),
        vsize=int(fields[20]),
        rss_pages=int(fields[21]),
    )


def read_stats(proc: Path, pids: list[str] | None = None) -> dict[int, ProcStat]:
    """The stat of ``pids`` (every process by default), by pid; processes that vanish
    while read are skipped."""
    out: dict[int, ProcStat] = {}
    for name in pids if pids is not None else os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            out[int(name)] = parse_stat((proc / name / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return out


def children_stats(proc: Path, root: int) -> dict[int, ProcStat] | None:
    """The stat of ``root`` and its descendants, found through ``/proc/PID/task/TID/
    children`` (a few small reads rather than one per process of the machine); None
    where the kernel does not offer those files."""
    if not (proc / str(root) / "task" / str(root) / "children").exists():
        return None
    found, todo = [str(root)], [str(root)]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(proc / pid / "task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = (proc / pid / "task" / tid / "children").read_text().split()
            except OSError:
                continue
            found += children
            todo += children
    return read_stats(proc, found)


def tree(root: int, stats: dict[int, ProcStat]) -> list[int]:
    """``root`` and all its descendants among ``stats``."""
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def _open_fds(proc: Path, pid: int) -> int:
    try:
        return len(os.listdir(proc / str(pid) / "fd"))
    except OSError:  # another user's process, or gone
        return 0


def _max_fds(proc: Path, pid: int) -> float | None:
    try:
        for line in (proc / str(pid) / "limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return float("inf") if soft == "unlimited" else float(soft)
    except OSError:
        return None
    return None


class ServerProcesses(Collector):
    """Collect the ``process_*`` series of the process tree under ``root_pid``."""

    def __init__(self, root_pid: int, proc: Path = Path("/proc")) -> None:
        self.root_pid = root_pid
        self.proc = proc

    def collect(self) -> Iterator[Metric]:
        try:
            stats = children_stats(self.proc, self.root_pid) or read_stats(self.proc)
            boot = _boot_time(self.proc)
        except (OSError, ValueError):
            return  # no /proc: nothing rather than one process's numbers
        pids = tree(self.root_pid, stats)
        if not pids:
            return
        live = [stats[p] for p in pids]
        root = stats[self.root_pid]
        cpu = CounterMetricFamily(
            "process_cpu_seconds_total",
            "CPU time of the server's processes (master, workers, scheduler) and of "
            "their children that have exited, in seconds.",
        )
        cpu.add_metric([], sum(s.cpu_ticks for s in live) / TICKS)
        yield cpu
        yield _gauge(
            "process_resident_memory_bytes",
            "Resident memory of the server's processes, summed, in bytes.",
            sum(s.rss_pages for s in live) * PAGE,
        )
        yield _gauge(
            "process_virtual_memory_bytes",
            "Virtual memory of the server's processes, summed, in bytes.",
            sum(s.vsize for s in live),
        )
        yield _gauge(
            "process_start_time_seconds",
            "When the server's master process started, in seconds since the epoch.",
            boot + root.start_ticks / TICKS,
        )
        yield _gauge(
            "process_open_fds",
            "Open file descriptors of the server's processes, summed.",
            sum(_open_fds(self.proc, p) for p in pids),
        )
        max_fds = _max_fds(self.proc, self.root_pid)
        if max_fds is not None:
            yield _gauge(
                "process_max_fds", "Open file descriptor limit of the master process.", max_fds
            )
        yield _gauge(
            "patchwatch_server_processes",
            "Processes the process_* series are summed over: the master, its workers and "
            "the scheduler (and their children).",
            len(pids),
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family
