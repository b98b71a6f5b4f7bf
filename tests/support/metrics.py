"""The exporter's collector on a registry of its own, as a scrape sees it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from patchwatch.exporter.collector import StoreCollector


def registry_for(db) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(db))
    return registry
