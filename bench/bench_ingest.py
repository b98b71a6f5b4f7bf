"""Ingest and processing throughput on realistic reports built from a real Debian index.

Reports carry about 1,500 packages drawn from bookworm main amd64 (downloaded from the
mirror in this machine's apt sources, or given with --packages PATH to a Packages(.xz)
file). Hosts come from a number of distinct images, as fleets do.

Prints:
- processing: reports per second through ``process_pending`` on SQLite, for a fleet
  of distinct images (each report a new package set) and for repeats (unchanged sets);
- ingest: reports acknowledged per second by ``patchwatch serve`` (gunicorn) with 50
  concurrent senders, with processing deferred to the scheduler and inline.

Usage: .venv/bin/python bench/bench_ingest.py [--packages PATH] [--reports 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_parse_apt import download  # noqa: E402

from patchwatch.domain.repodata.apt import parse_packages  # noqa: E402
from patchwatch.domain.repodata.compression import open_decompressed  # noqa: E402


def load_index(path: Path) -> list[dict[str, str]]:
    kind = "xz" if path.suffix == ".xz" else "plain"
    with path.open("rb") as raw:
        stream = open_decompressed(raw, kind, 1 << 30)
        pkgs = [a.package for a in parse_packages(stream)]
    return [
        {"name": p.name, "epoch": p.epoch, "version": p.version, "release": p.release,
         "arch": p.arch, "type": "deb"}
        for p in pkgs if p.arch in ("amd64", "all")
    ]  # fmt: skip


def make_images(index: list[dict[str, str]], images: int, size: int) -> list[list[dict]]:
    rng = random.Random(42)
    base = rng.sample(index, size)
    out = []
    for _ in range(images):
        img = list(base)
        for i in rng.sample(range(size), size // 20):  # 5 % of each image differs
            img[i] = rng.choice(index)
        out.append(img)
    return out


def report(host: str, packages: list[dict]) -> dict:
    return {
        "version": 1, "host": host,
        "os": {"id": "debian", "version_id": "12", "version_codename": "bookworm"},
        "kernel": "6.1.0-28-amd64", "arch": "x86_64", "tags": ["bench"],
        "reboot_required": False, "packages": packages,
        "repositories": [{"type": "deb", "id": "http://deb.debian.org/debian bookworm main",
                          "urls": ["http://deb.debian.org/debian"], "suite": "bookworm",
                          "component": "main", "arch": "amd64", "priority": 500}],
    }  # fmt: skip


def bench_processing(docs: list[dict], label: str) -> None:
    from patchwatch.pipeline.processing import NATIVE
    from patchwatch.pipeline.processing import process_pending
    from patchwatch.pipeline.processing import store_report
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate

    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(f"sqlite:///{tmp}/bench.db")
        db.connect()
        migrate(db)
        for d in docs:
            store_report(d["host"], NATIVE, d, time.time())
        started = time.perf_counter()
        outcome = process_pending(time.time(), limit=len(docs))
        elapsed = time.perf_counter() - started
        db.close()
    print(f"processing {label}: {len(docs)} reports in {elapsed:.2f} s = "
          f"{len(docs) / elapsed:.0f} reports/s ({dict(outcome)})")  # fmt: skip


def bench_ingest(docs: list[dict], inline: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = 18000 + random.randrange(1000)
        env = {**os.environ, "PATCHWATCH_PROCESS_INLINE": "true" if inline else "false",
               "PATCHWATCH_WORKERS": "4", "PATCHWATCH_LOG_LEVEL": "WARNING",
               "PATCHWATCH_FOLLOW_REPORTS": "false", "HOME": tmp}  # fmt: skip
        data = f"{tmp}/data"
        proc = subprocess.Popen(
            [sys.executable, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{port}",
             "--data-dir", data], cwd=ROOT, env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            token = subprocess.run(
                [sys.executable, "-m", "patchwatch", "token", "create", "--enroll"],
                cwd=ROOT, env={**env, "PATCHWATCH_DATA_DIR": data},
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            bodies = [gzip.compress(json.dumps(d).encode()) for d in docs]

            def send(body: bytes) -> int:
                req = urllib.request.Request(
                    base + "/api/v1/reports", data=body, method="POST",
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json", "Content-Encoding": "gzip"},
                )  # fmt: skip
                with urllib.request.urlopen(req, timeout=120) as resp:
                    return resp.status

            started = time.perf_counter()
            with ThreadPoolExecutor(50) as pool:
                codes = list(pool.map(send, bodies))
            elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(30)
    mode = "inline processing" if inline else "processing deferred"
    print(f"ingest ({mode}): {len(docs)} reports, 50 senders, {elapsed:.2f} s = "
          f"{len(docs) / elapsed:.0f} acknowledged/s; statuses {sorted(set(codes))}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=Path, help="Packages or Packages.xz of bookworm main")
    ap.add_argument("--reports", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1500, help="packages per report")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.packages or download(Path(tmp))
        index = load_index(path)
    print(f"index: {len(index):,} packages")
    distinct = make_images(index, args.reports, args.size)
    docs = [report(f"host{i:05d}.example.com", distinct[i]) for i in range(args.reports)]
    raw = sum(len(json.dumps(d)) for d in docs[:20]) / 20
    print(f"report size: {raw / 1024:.0f} KiB raw, {args.size} packages")
    bench_processing(docs, "every report a new package set")
    images = make_images(index, 20, args.size)
    fleet = [report(f"host{i:05d}.example.com", images[i % 20]) for i in range(args.reports)]
    bench_processing(fleet, "20 images, first reports of each host")
    bench_ingest(fleet, inline=False)
    bench_ingest(fleet, inline=True)


if __name__ == "__main__":
    main()
