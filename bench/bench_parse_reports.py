#!/usr/bin/env python3
"""Benchmark parsing one host's report in each protocol: native JSON, Patchman 1 and 2.

Why: parsing is the largest part of processing a report whose package set is new; a
real host's report holds about 1,500 packages. The documents are the tests' own
(``tests.support.reports.synthetic_reports``: names and versions as a Debian host has),
so what is timed is what the suite checks parses to 1,500 packages.

Usage: ``bench/bench_parse_reports.py [--packages N] [--repeat N]``; prints the best of
``--repeat`` runs per protocol, in milliseconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchwatch.domain.reports import parse_native
from patchwatch.domain.reports import parse_protocol1
from patchwatch.domain.reports import parse_protocol2
from tests.support.reports import synthetic_reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    native, form, proto2 = synthetic_reports(args.packages)
    for label, parse, doc in (
        ("native", parse_native, native),
        ("protocol1", parse_protocol1, form),
        ("protocol2", parse_protocol2, proto2),
    ):
        assert len(parse(doc).packages) == args.packages
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            parse(doc)
            best = min(best, time.perf_counter() - start)
        print(f"{label}: {best * 1000:.2f} ms for {args.packages} packages (best of {args.repeat})")


if __name__ == "__main__":
    main()
