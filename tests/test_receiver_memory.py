"""Load: what hostile reports cost a real receiver worker, measured from /proc.

One gunicorn worker (``patchwatch serve``, SQLite), so that every request lands in
the process measured. Its peak (``VmHWM``) and resident (``VmRSS``) memory are read
from /proc after each case:

- a million tiny packages (2.5 MB of gzip): refused before parsing;
- reports of 60,000 distinct packages one after another: the worker's memory levels
  off (the package memo and id caches are bounded) instead of growing with each;
- eight such reports at once: taken one at a time, the others answered 503 with
  Retry-After once they waited the bound, and the peak stays that of one;
- a worker left above ``worker_max_memory_bytes`` is replaced by a fresh one;
- the processing process, which parses and applies those reports, takes the large
  ones one at a time too: eight cost it what one did.

Before these bounds the same cases took the worker to 0.5-1 GB.
"""

from __future__ import annotations

import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from patchwatch.store.db import open_database
from patchwatch.store.models import Report
from tests.support.reports import native_doc
from tests.support.web import post_report

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def children(srv) -> dict[int, list[bytes]]:
    """The children of ``srv`` and their command lines."""
    out = {}
    pids = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
    for pid in map(int, pids):
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
    return out


def worker_pids(srv) -> list[int]:
    """The gunicorn workers of ``srv`` (its children, less the scheduler and the
    processing process)."""
    return [pid for pid, cmd in children(srv).items()
            if b"scheduler" not in cmd and b"processor" not in cmd]  # fmt: skip


def processor_pid(srv) -> int:
    """The processing process ``serve`` started."""
    (pid,) = [pid for pid, cmd in children(srv).items() if b"processor" in cmd]
    return pid


def reset_peak(pid: int) -> None:
    """Start a new peak (``VmHWM``) from the current resident size (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory(pid: int) -> tuple[int, int]:
    """(resident, peak resident since :func:`reset_peak`) bytes of a process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def post(base: str, token: str, body: bytes, timeout: float = 120) -> tuple[int, dict, dict]:
    return post_report(base, token, body, timeout, encoding="gzip")


def distinct_report(host: str, tag: str, n: int) -> bytes:
    doc = native_doc(host, n=0)
    doc["packages"] = [{"name": f"{tag}-{i}", "epoch": "", "version": f"1.{i}", "release": "1",
                        "arch": "amd64", "type": "deb"} for i in range(n)]  # fmt: skip
    return gzip.compress(json.dumps(doc).encode(), 6)


def wait_processed(srv, timeout: float = 120) -> None:
    db = open_database(srv.database_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.connection_context():
            if not Report.select().where(Report.state == "pending").exists():
                return
        time.sleep(0.2)
    raise AssertionError("reports still pending")


def test_hostile_reports_leave_a_worker_bounded(server_factory) -> None:
    srv = server_factory({"PATCHWATCH_WORKERS": "1", "PATCHWATCH_PROCESS_WORKERS": "1"})
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    (worker,) = worker_pids(srv)
    start_rss, _ = memory(worker)
    figures = [f"start: {start_rss / MIB:.0f} MiB"]

    doc = native_doc("tiny.example.com", n=0)
    doc["packages"] = [{"name": f"p{i}", "version": "1", "arch": "x", "type": "deb"}
                       for i in range(1_000_000)]  # fmt: skip
    tiny = gzip.compress(json.dumps(doc).encode(), 6)
    del doc
    reset_peak(worker)
    code, body, _ = post(srv.base, token, tiny)
    assert code == 413 and "max_report_values" in body["error"]
    rss, peak = memory(worker)
    figures.append(f"1M tiny packages refused: peak {peak / MIB:.0f} MiB")
    assert peak < start_rss + 200 * MIB  # 50 MB of JSON: parsed, ~470 MB

    processor = processor_pid(srv)
    processor_start, _ = memory(processor)
    sequential_peaks = []
    processor_peaks = []
    for k in range(6):
        reset_peak(worker)
        reset_peak(processor)
        code, _, _ = post(srv.base, token, distinct_report(f"seq{k}.example.com", f"s{k}", 60_000))
        assert code == 202
        wait_processed(srv)
        rss, peak = memory(worker)
        sequential_peaks.append(peak)
        processor_peaks.append(memory(processor)[1])
    peaks = ", ".join(f"{p / MIB:.0f}" for p in sequential_peaks)
    figures.append(f"6 x 60,000 distinct packages: rss {rss / MIB:.0f}, peaks {peaks} MiB")
    # the memory levels off: the last three reports raise the peak by less than one did
    first_cost = sequential_peaks[0] - start_rss
    assert sequential_peaks[-1] - sequential_peaks[2] < first_cost, figures
    assert rss < start_rss + 300 * MIB, figures

    processing_cost = processor_peaks[0] - processor_start
    figures.append(f"processing them: from {processor_start / MIB:.0f} MiB, peaks "
                   + ", ".join(f"{p / MIB:.0f}" for p in processor_peaks) + " MiB")  # fmt: skip

    bodies = [distinct_report(f"par{k}.example.com", f"p{k}", 60_000) for k in range(8)]
    before, _ = memory(worker)
    processor_before, _ = memory(processor)
    reset_peak(worker)
    reset_peak(processor)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: post(srv.base, token, b), bodies))
    codes = sorted(code for code, _, _ in results)
    assert set(codes) <= {202, 503}, codes
    assert 202 in codes
    for code, _, headers in results:
        if code == 503:
            assert headers["Retry-After"].isdigit()
    wait_processed(srv)
    rss, peak = memory(worker)
    figures.append(f"8 at once ({codes.count(202)} accepted, {codes.count(503)} to retry): "
                   f"from rss {before / MIB:.0f}: peak {peak / MIB:.0f} MiB, "
                   f"rss {rss / MIB:.0f} MiB")  # fmt: skip
    # one large report at a time: eight at once cost one report (plus the bounded partial
    # bodies of those waiting for the slot), not eight. Measured from the resident size
    # the phase starts at: the sequential peaks above wander by 50 MiB with heap
    # fragmentation, too much to serve as the baseline of a one-report margin. Since the
    # worker no longer processes reports, one costs it only its decoding (118 MiB from
    # 50 here), and what eight threads at once cost besides (their malloc arenas, the
    # bodies read while waiting) weighs more: within three, not eight.
    assert peak - before < 3 * first_cost, figures
    _, processor_peak = memory(processor)
    figures.append(f"processing the {codes.count(202)}: from {processor_before / MIB:.0f}: "
                   f"peak {processor_peak / MIB:.0f} MiB")  # fmt: skip
    assert processor_peak - processor_before < 2 * processing_cost, figures
    print("\n" + "\n".join(figures))
    assert worker_pids(srv) == [worker]  # under the default limit: never replaced
    assert "Traceback" not in srv.log()


def test_a_worker_above_its_memory_limit_is_replaced(server_factory) -> None:
    # a worker starts at about 50 MiB and, since it no longer processes reports, holds
    # 56-58 MiB after a report of 60,000 packages once freed memory is handed back
    srv = server_factory({"PATCHWATCH_WORKERS": "1",
                          "PATCHWATCH_WORKER_MAX_MEMORY_BYTES": str(54 * MIB)})  # fmt: skip
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    (worker,) = worker_pids(srv)
    code, _, _ = post(srv.base, token, distinct_report("big.example.com", "b", 60_000))
    assert code == 202
    deadline = time.monotonic() + 60
    pids = worker_pids(srv)
    while time.monotonic() < deadline and (len(pids) != 1 or pids == [worker]):
        time.sleep(0.2)
        pids = worker_pids(srv)
    (fresh,) = pids
    assert fresh != worker
    assert f"worker {worker} holds" in srv.log()
    rss, _ = memory(fresh)
    assert rss < 64 * MIB
    code, _, _ = post(srv.base, token, gzip.compress(json.dumps(native_doc("small")).encode()))
    assert code == 202  # the fresh worker serves
    wait_processed(srv)
