"""The receiver's own counters (shared across gunicorn workers in multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client import Histogram

REPORTS_RECEIVED = Counter(
    "patchwatch_reports_received_total",
    "Reports answered by the receiver, by protocol and result (accepted, or why rejected).",
    ["protocol", "result"],
    registry=None,
)
REPORT_BYTES = Histogram(
    "patchwatch_report_size_bytes",
    "Size of accepted reports after decompression.",
    buckets=(1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 4e6, 16e6, 64e6),
    registry=None,
)
PROCESSING_SECONDS = Histogram(
    "patchwatch_report_processing_duration_seconds",
    "Time to turn one stored report into host state.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)
PROCESSOR_RESTARTS = Counter(
    "patchwatch_processor_restarts_total",
    "Processing processes serve started again after one died (a crash, the OOM killer).",
    registry=None,
)
