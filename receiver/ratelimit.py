"""Per-host report limits: one host's flood cannot starve the other hosts' reports.

A host's agent sends a report an hour or a day, and a handful at once after an outage
(its spool); a host sending hundreds a second is broken or hostile, and every report it
sends costs the others a share of the worker. Each host (the host a host token writes,
known before the body is read; otherwise the host name the report names) has a token
bucket: ``report_burst_per_host`` reports at once, then ``report_rate_per_host``
a minute. A report over the limit gets 429 with ``Retry-After`` (the seconds until the
host may send again), which the agent obeys, and is counted as
``patchwatch_reports_received_total{result="rate_limited"}``.

Memory is bounded: at most :data:`MAX_HOSTS` buckets per worker process, the least
recently used dropped first (a dropped host starts again with a full burst, so many
hosts can only ever be limited less, never more). Each gunicorn worker process keeps
its own buckets, so a host may get up to ``workers`` times the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_HOSTS = 100_000  # about 150 bytes each: 15 MB at most per worker


class RateLimited(Exception):
    """A host sent more reports than its limit: answer 429 with ``Retry-After``."""

    status = 429

    def __init__(self, host: str, retry_after: int) -> None:
        super().__init__(
            f"too many reports from {host!r}: send again in {retry_after} s "
            "(settings report_burst_per_host, report_rate_per_host)"
        )
        self.retry_after = retry_after


class HostLimits:
    """Token buckets by key (see the module docstring); thread-safe."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        max_keys: int = MAX_HOSTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.per_second = per_minute / 60.0
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.burst > 0 and self.per_second > 0

    def take(self, key: str, host: str) -> None:
        """Count one report for ``key``. :raises RateLimited: when it has none left."""
        if not self.enabled:
            return
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.per_second
                raise RateLimited(host, max(1, math.ceil(wait)))
            self._buckets[key] = (tokens - 1.0, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
