"""Tags as a series a matcher can select: ``patchwatch_host_tag{host,tag}``."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest

from patchwatch.exporter.collector import StoreCollector
from patchwatch.exporter.exposition import negotiate
from patchwatch.exporter.exposition import render
from patchwatch.store.models import Host


def test_one_series_per_tag_of_each_host(db) -> None:
    now = time.time()
    Host.create(name="web1.example.com", tags="prod web", created_at=now)
    Host.create(name="db1.example.com", tags='db "quoted\\\\', created_at=now)
    Host.create(name="bare.example.com", created_at=now)
    registry = CollectorRegistry()
    registry.register(StoreCollector(db))
    samples = {
        (s.labels["host"], s.labels["tag"]): s.value
        for family in registry.collect() if family.name == "patchwatch_host_tag"
        for s in family.samples
    }  # fmt: skip
    assert samples == {("db1.example.com", '"quoted\\\\'): 1, ("db1.example.com", "db"): 1,
                       ("web1.example.com", "prod"): 1, ("web1.example.com", "web"): 1}  # fmt: skip
    # the fast writer and prometheus_client's agree on the awkward label value
    encoder, _type, om = negotiate(None)

    def tag_lines(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if b"patchwatch_host_tag" in line]

    fast = tag_lines(render(registry.collect(), encoder, bool(om)))
    assert fast == tag_lines(generate_latest(registry)) and len(fast) == 6
