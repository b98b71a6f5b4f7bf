"""Read the store at scrape time and turn it into metric families.

Nothing is cached between scrapes: what Prometheus sees is what the database holds at
that moment. A database that cannot be read gives ``patchwatch_database_up 0`` and no
other store-derived series, rather than a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from peewee import Database
from peewee import PeeweeException
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import patchwatch

log = logging.getLogger(__name__)


class StoreCollector(Collector):
    """Collect patchwatch's state from the database on each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        info = GaugeMetricFamily(
            "patchwatch_build_info", "patchwatch version, always 1.", labels=["version"]
        )
        info.add_metric([patchwatch.__version__], 1)
        yield info
        up = GaugeMetricFamily(
            "patchwatch_database_up", "1 when the store could be read in this scrape."
        )
        try:
            with self.db.connection_context():
                self.db.execute_sql("SELECT 1").fetchone()
            up.add_metric([], 1)
        except (PeeweeException, OSError) as exc:
            log.warning("store unreadable during scrape: %s", type(exc).__name__)
            up.add_metric([], 0)
        yield up
        duration = GaugeMetricFamily(
            "patchwatch_scrape_collect_duration_seconds",
            "Time spent reading the store for this scrape.",
        )
        duration.add_metric([], time.perf_counter() - started)
        yield duration
