"""What the listing shortcut of processing saves: unchanged re-reports processed with
their package lists' listings stored (as processing stores them) and with the
listings forgotten, in-process on a fresh SQLite store.

Reports are built from a real Debian index (bookworm main amd64, downloaded from the
mirror in this machine's apt sources, or ``--packages PATH``) as in ``bench_ack.py``:
``--hosts`` hosts over 20 images. Their first reports are processed once, then the
same reports again, round after round, as sent ("listing": found) and with each
package object's keys in another order, a new one each round ("none": the same
packages, listings not seen before), interleaved; CPU and wall time per report of
``process_pending``. A batch still shares one parse among reports of one list, so
"none" measures the 20 images' lists parsed once per batch of 100. See
docs/performance.md, "Processing a fleet's first reports".

Usage:
  .venv/bin/python bench/bench_set_shortcut.py [--hosts 300] [--rounds 3] [--packages PATH]
"""

from __future__ import annotations

import argparse
import gc
import itertools
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
from patchwatch.pipeline.processing import process_pending  # noqa: E402
from patchwatch.pipeline.processing import store_report  # noqa: E402
from patchwatch.store.db import database  # noqa: E402
from patchwatch.store.db import make_database  # noqa: E402
from patchwatch.store.migrations import migrate  # noqa: E402

KEYS = ("name", "version", "arch", "release", "epoch", "type")


def _listed_anew(doc: dict, round_: int) -> dict:
    """The same report with its package objects' keys in an order of this round's: the
    same packages, a listing not seen before (everything else of the store as warm)."""
    order = list(itertools.permutations(KEYS))[round_ + 1]
    packages = [{key: item[key] for key in order if key in item} for item in doc["packages"]]
    return {**doc, "packages": packages}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=Path, help="Packages(.xz) of bookworm main amd64")
    ap.add_argument("--hosts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = load_index(args.packages or download(Path(tmp)))
    images = make_images(index, 20, 1500)
    docs = [report(f"host{i:05d}.example.com", images[i % 20]) for i in range(args.hosts)]
    for doc in docs:
        doc["repositories"][0]["urls"] = [MIRROR]
    n = len(docs)
    with tempfile.TemporaryDirectory() as tmp:
        db = make_database(f"sqlite:///{tmp}/store.db")
        database.initialize(db)
        db.connect()
        migrate(db)
        now = time.time()
        for doc in docs:
            store_report(doc["host"], NATIVE, doc, now)
        cpu = time.process_time()
        process_pending(now + 1, limit=n)
        print(f"first reports: {1000 * (time.process_time() - cpu) / n:.2f} ms CPU each")
        for round_ in range(args.rounds):
            for label in ("listing", "none"):
                now += 10
                for doc in docs:
                    if label == "none":
                        doc = _listed_anew(doc, round_)
                    store_report(doc["host"], NATIVE, doc, now)
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                outcome = process_pending(now + 1, limit=n)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(f"round {round_} {label:6s}: {1000 * cpu / n:.2f} ms CPU, "
                      f"{1000 * wall / n:.2f} ms wall per report {dict(outcome)}")  # fmt: skip


if __name__ == "__main__":
    main()
