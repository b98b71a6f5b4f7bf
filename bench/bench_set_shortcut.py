"""What the listing shortcut of processing saves: unchanged re-reports processed with
their package lists' listings stored (as processing stores them) and with the
listings forgotten, in-process on a fresh SQLite store.

Reports are built from a real Debian index (bookworm main amd64, downloaded from the
mirror in this machine's apt sources, or ``--packages PATH``) as in ``bench_ack.py``:
``--hosts`` hosts over 20 images. Their first reports are processed once, then the
same reports again, round after round, as sent ("listing": found) and with each
report's package list rotated by a number of places its own ("none": the same
packages and sets, listings not seen before, each list parsed), interleaved; CPU and
wall time per report of ``process_pending``. Rotations stay distinct while
``hosts x rounds`` is under the 1,500 packages of a report. ``--protocol patchman1``
or ``patchman2`` sends the same hosts as a Patchman client would (protocol 1: the
form, its packages as quoted lines; protocol 2: the JSON), to compare the listings of
those protocols with a tree without them (run this script there with that tree's
interpreter: it imports the tree it sits in). See docs/performance.md, "Processing a
fleet's first reports".

Usage:
  .venv/bin/python bench/bench_set_shortcut.py [--hosts 300] [--rounds 3] [--packages PATH]
      [--protocol native|patchman1|patchman2]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ack import MIRROR  # noqa: E402
from bench_ingest import load_index  # noqa: E402
from bench_ingest import make_images  # noqa: E402
from bench_ingest import report  # noqa: E402
from bench_parse_apt import download  # noqa: E402

from patchwatch.domain.protocols import NATIVE  # noqa: E402
from patchwatch.domain.protocols import PATCHMAN1  # noqa: E402
from patchwatch.domain.protocols import PATCHMAN2  # noqa: E402
from patchwatch.pipeline.processing import process_pending  # noqa: E402
from patchwatch.pipeline.processing import store_report  # noqa: E402
from patchwatch.store.db import database  # noqa: E402
from patchwatch.store.db import make_database  # noqa: E402
from patchwatch.store.migrations import migrate  # noqa: E402


def _listed_anew(doc: dict, shift: int) -> dict:
    """The same report with its package list rotated by ``shift`` places: the same
    packages, a listing no other report has (everything else of the store as warm)."""
    packages = doc["packages"]
    shift %= len(packages)
    return {**doc, "packages": packages[shift:] + packages[:shift]}


_REPO = f"{MIRROR}/dists/bookworm/main/binary-amd64"
_PROTOCOLS = {"native": NATIVE, "patchman1": PATCHMAN1, "patchman2": PATCHMAN2}


def _as_sent(protocol: str, doc: dict) -> dict:
    """The native report ``doc`` as a Patchman client sends the same host."""
    keys = ("name", "epoch", "version", "release", "arch", "type")
    packages = [{k: p.get(k, "") for k in keys} for p in doc["packages"]]
    if protocol == PATCHMAN1:
        lines = "".join(" ".join(f"'{p[k]}'" for k in keys) + "\n" for p in packages)
        return {
            "host": doc["host"], "os": "Debian GNU/Linux 12 (bookworm)",
            "kernel": doc["kernel"], "arch": doc["arch"], "tags": "bench", "protocol": "1",
            "reboot": "False", "packages": lines, "repos": f"'deb' 'bookworm' '500' '{_REPO}'\n",
        }  # fmt: skip
    if protocol == PATCHMAN2:
        return {
            "protocol": 2, "hostname": doc["host"], "os": "Debian GNU/Linux 12 (bookworm)",
            "kernel": doc["kernel"], "arch": doc["arch"], "tags": ["bench"],
            "packages": packages,
            "repos": [{"type": "deb", "name": "bookworm", "priority": 500, "urls": [_REPO]}],
        }  # fmt: skip
    return doc


def _rotated(protocol: str, doc: dict, shift: int) -> dict:
    """:func:`_listed_anew` for a report as ``protocol`` sends it."""
    if protocol != PATCHMAN1:
        return _listed_anew(doc, shift)
    lines = doc["packages"].splitlines(keepends=True)
    shift %= len(lines)
    return {**doc, "packages": "".join(lines[shift:] + lines[:shift])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=Path, help="Packages(.xz) of bookworm main amd64")
    ap.add_argument("--hosts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocol", choices=sorted(_PROTOCOLS), default="native")
    args = ap.parse_args()
    protocol = _PROTOCOLS[args.protocol]
    with tempfile.TemporaryDirectory() as tmp:
        index = load_index(args.packages or download(Path(tmp)))
    images = make_images(index, 20, 1500)
    docs = [report(f"host{i:05d}.example.com", images[i % 20]) for i in range(args.hosts)]
    for doc in docs:
        doc["repositories"][0]["urls"] = [MIRROR]
    docs = [_as_sent(protocol, doc) for doc in docs]
    hosts = [doc.get("host") or doc["hostname"] for doc in docs]
    n = len(docs)
    with tempfile.TemporaryDirectory() as tmp:
        db = make_database(f"sqlite:///{tmp}/store.db")
        database.initialize(db)
        db.connect()
        migrate(db)
        now = time.time()
        for host, doc in zip(hosts, docs, strict=True):
            store_report(host, protocol, doc, now)
        cpu = time.process_time()
        process_pending(now + 1, limit=n)
        print(f"first reports: {1000 * (time.process_time() - cpu) / n:.2f} ms CPU each")
        for round_ in range(args.rounds):
            for label in ("listing", "none"):
                now += 10
                for i, doc in enumerate(docs):
                    if label == "none":  # unique listings: no report shares another's parse
                        doc = _rotated(protocol, doc, 1 + round_ * n + i)
                    store_report(hosts[i], protocol, doc, now)
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                outcome = process_pending(now + 1, limit=n)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(f"round {round_} {label:6s}: {1000 * cpu / n:.2f} ms CPU, "
                      f"{1000 * wall / n:.2f} ms wall per report {dict(outcome)}")  # fmt: skip


if __name__ == "__main__":
    main()
