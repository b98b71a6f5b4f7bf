"""Scrape shards: ``/metrics?shard=I&shards=N`` carries the hosts whose name hashes to I.

Every host is in exactly one shard, with the same series it has in the unsharded
scrape; the fleet-level series come once, in shard 0; each backend computes the hash in
SQL and agrees with the pure function. That the pure function is Prometheus's own
``hashmod`` is checked against a real Prometheus in tests/test_monitoring_e2e.py.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from prometheus_client import parser as text_parser

from patchwatch.domain.shards import MAX_SHARDS
from patchwatch.domain.shards import Shard
from patchwatch.domain.shards import ShardError
from patchwatch.domain.shards import parse_shard
from patchwatch.domain.shards import shard_of
from patchwatch.exporter.app import make_app
from patchwatch.store import rdns
from patchwatch.store.db import database
from patchwatch.store.host_counts import recount
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import Repository
from patchwatch.store.queries import load_host_tags
from patchwatch.store.queries import load_host_tuples
from patchwatch.store.shards import in_shard
from patchwatch.store.shards import shard_hosts

HOSTS = 120


def _names(count: int) -> list[str]:
    """Host names of every shape a report may carry: FQDNs, digits, non-ASCII."""
    rng = random.Random(24)
    shapes = ["web-{}.example.com", "db{}", "h{}.müller.example", "X{}", "ноутбук-{}"]
    return [shapes[i % len(shapes)].format(rng.randrange(10**9)) + str(i) for i in range(count)]


def seed_fleet() -> list[str]:
    """Hosts with updates, tags and reverse DNS answers, plus a mirror and a job run."""
    now = time.time()
    names = _names(HOSTS)
    pkgs = [
        Package.create(kind="deb", name="p", version=f"1.{i}", release="1", arch="amd64")
        for i in range(4)
    ]
    for i, name in enumerate(names):
        host = Host.create(
            name=name, created_at=now, updates_complete=True, updates_computed_at=now - 30,
            inputs_changed_at=now - 40, updates_inputs_at=now - 40, last_report_at=now - i,
            tags="prod web" if i % 3 else "", reverse_dns_check=bool(i % 2),
            reverse_dns_status=rdns.MATCH if i % 4 else rdns.MISMATCH,
        )  # fmt: skip
        for j in range(i % 3):
            HostUpdate.create(host=host, installed=pkgs[j], available=pkgs[3],
                              security=bool(j), first_seen_at=now - i)  # fmt: skip
    recount(database)  # written directly: counted as the update computation counts them
    repo = Repository.create(kind="deb", key="deb main", name="deb-main", created_at=now)
    Mirror.create(repository=repo, url="http://deb.example/debian", last_attempt_at=now)
    JobRun.create(job="refresh_mirrors", started_at=now - 2, finished_at=now,
                  duration_seconds=2.0, outcome="success")  # fmt: skip
    return names


# --------------------------------------------------------------------------- pure


def test_parse_shard_takes_both_or_neither() -> None:
    assert parse_shard({}) is None
    assert parse_shard({"other": ["1"]}) is None
    assert parse_shard({"shard": ["0"], "shards": ["1"]}) == Shard(0, 1)
    assert parse_shard({"shard": ["3"], "shards": ["4"]}) == Shard(3, 4)
    assert parse_shard({"shard": ["0"], "shards": [str(MAX_SHARDS)]}) == Shard(0, MAX_SHARDS)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"shard": ["0"]}, "both"),
        ({"shards": ["2"]}, "both"),
        ({"shard": ["2"], "shards": ["2"]}, "below"),
        ({"shard": ["0"], "shards": ["0"]}, "from 1"),
        ({"shard": ["0"], "shards": [str(MAX_SHARDS + 1)]}, "from 1"),
        ({"shard": ["-1"], "shards": ["2"]}, "whole number"),
        ({"shard": ["1.0"], "shards": ["2"]}, "whole number"),
        ({"shard": [""], "shards": ["2"]}, "whole number"),
        ({"shard": ["٣"], "shards": ["4"]}, "whole number"),  # a digit, not ASCII
        ({"shard": ["0"], "shards": ["9" * 5000]}, "whole number"),
        ({"shard": ["0", "1"], "shards": ["2"]}, "exactly once"),
    ],
)
def test_parse_shard_refuses_what_is_not_a_shard(params: dict[str, list[str]], says: str) -> None:
    with pytest.raises(ShardError, match=says):
        parse_shard(params)


def test_shards_spread_hosts_about_evenly() -> None:
    """Not a promise of balance, but a hash that sent most hosts to one shard would be
    no use for splitting a scrape."""
    counts = [0] * 4
    for name in _names(4000):
        counts[shard_of(name, 4)] += 1
    assert all(800 < c < 1200 for c in counts), counts


# -------------------------------------------------------------------------- store


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_database_computes_the_same_shard_as_the_pure_function(db, count: int) -> None:
    names = seed_fleet()
    for index in range(count):
        query = Host.select(Host.name).where(in_shard(Host.name, Shard(index, count)))
        got = {name for (name,) in query.tuples()}
        assert got == {n for n in names if shard_of(n, count) == index}, (index, count)


def test_shard_reads_partition_the_hosts_exactly(db) -> None:
    """Each host in exactly one shard, with the same row (counts included) as in the
    whole-fleet read; tags and reverse DNS rows likewise."""
    seed_fleet()
    whole = load_host_tuples()
    tags, matches = load_host_tags(), rdns.match_rows()
    assert len(whole) == HOSTS and tags and matches
    for count in (1, 2, 5):
        selections = [shard_hosts(Shard(i, count)) for i in range(count)]
        parts = [load_host_tuples(hosts) for hosts in selections]
        assert sorted(row for part in parts for row in part) == sorted(whole)
        assert sum(len(part) for part in parts) == len(whole)
        for i, part in enumerate(parts):
            assert all(shard_of(row[0], count) == i for row in part)
        tag_parts = [load_host_tags(hosts) for hosts in selections]
        assert sorted(t for part in tag_parts for t in part) == sorted(tags)
        match_parts = [rdns.match_rows(hosts) for hosts in selections]
        assert sorted(m for part in match_parts for m in part) == sorted(matches)
    assert not database.is_closed()


# ------------------------------------------------------------------------ exporter


def _get(app: Any, query: str, method: str = "GET") -> tuple[str, bytes]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/metrics", "QUERY_STRING": query}
    answer: list[str] = []
    body = b"".join(app(environ, lambda status, _headers: answer.append(status)))
    return answer[0], body


def _samples(body: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_parser.text_string_to_metric_families(body.decode())
        for s in family.samples
    ]


FLEET_FAMILIES = {
    "patchwatch_build_info",
    "patchwatch_mirror_last_refresh_attempt_timestamp_seconds",
    "patchwatch_job_last_run_success",
    "patchwatch_reports_stored",
}
PER_SCRAPE = {"patchwatch_database_up", "patchwatch_scrape_collect_duration_seconds"}


def test_scrape_shards_partition_host_series_and_carry_fleet_series_once(db) -> None:
    """The union of the shards' series is the unsharded scrape's, each host series in
    the shard of its host and only there; the fleet-level series (build info, mirrors,
    jobs, reports, process) in shard 0 only; every shard says whether the database was
    up and how long it took."""
    names = seed_fleet()
    app = make_app(db)  # type: ignore[arg-type]
    status, body = _get(app, "")
    assert status == "200 OK"
    whole = [s for s in _samples(body) if s[0] not in PER_SCRAPE]
    volatile = {s[0] for s in whole if s[0].startswith(("process_", "python_"))}
    count = 3
    seen: list[tuple[str, tuple[tuple[str, str], ...], float]] = []
    for index in range(count):
        status, body = _get(app, f"shard={index}&shards={count}")
        assert status == "200 OK"
        samples = _samples(body)
        assert [s[2] for s in samples if s[0] == "patchwatch_database_up"] == [1.0]
        assert [s[0] for s in samples].count("patchwatch_scrape_collect_duration_seconds") == 1
        samples = [s for s in samples if s[0] not in PER_SCRAPE]
        hosts = {dict(s[1])["host"] for s in samples if "host" in dict(s[1])}
        assert hosts == {n for n in names if shard_of(n, count) == index}
        fleet = {s[0] for s in samples if "host" not in dict(s[1])}
        if index == 0:
            assert fleet >= FLEET_FAMILIES
            assert volatile <= fleet
        else:
            assert fleet == set()
        seen += samples
    stable = [s for s in seen if s[0] not in volatile]
    assert sorted(stable) == sorted(s for s in whole if s[0] not in volatile)
    assert len(stable) == len(set(stable))  # nothing twice


@pytest.mark.parametrize(
    "query",
    [
        "shard=0",
        "shards=2",
        "shard=2&shards=2",
        "shard=-1&shards=2",
        "shard=&shards=2",
        "shard=a&shards=b",
        "shard=0&shard=1&shards=2",
        f"shard=0&shards={MAX_SHARDS + 1}",
        "shard=0&shards=2&name[]=patchwatch_host_info",
    ],
)
def test_bad_shard_parameters_get_a_400_saying_why(db, query: str) -> None:
    status, body = _get(make_app(db), query)  # type: ignore[arg-type]
    assert status == "400 Bad Request"
    assert b"shard" in body and b"patchwatch_host_info" not in body


def test_shards_are_scraped_with_get_only(db) -> None:
    status, _body = _get(make_app(db), "shard=0&shards=2", method="POST")  # type: ignore[arg-type]
    assert status == "405 Method Not Allowed"


def test_a_shard_without_hosts_is_an_empty_shard_not_an_error(db) -> None:
    """No host hashes to it (an empty store here): the shard still answers, with the
    database up and no host series, on both backends."""
    status, body = _get(make_app(db), "shard=1&shards=3")  # type: ignore[arg-type]
    assert status == "200 OK"
    samples = _samples(body)
    assert [s[2] for s in samples if s[0] == "patchwatch_database_up"] == [1.0]
    assert not [s for s in samples if "host" in dict(s[1])]
