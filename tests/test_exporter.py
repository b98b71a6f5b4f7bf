"""The exporter reads the store at scrape time: zeros for quiet hosts, nothing for
unknown ones, no stale cache."""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pytest
from peewee import SqliteDatabase
from prometheus_client import make_wsgi_app
from prometheus_client import parser as text_parser
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.openmetrics.exposition import generate_latest

from patchwatch.exporter.collector import StoreCollector
from patchwatch.exporter.exposition import RowFamily
from patchwatch.exporter.exposition import negotiate
from patchwatch.exporter.exposition import render
from patchwatch.store.db import database
from patchwatch.store.host_counts import recount
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Report
from patchwatch.store.models import Repository
from patchwatch.store.queries import HOST_TUPLE_FIELDS
from patchwatch.store.queries import HostRow
from patchwatch.store.queries import load_host_rows
from patchwatch.store.queries import load_host_tuples
from tests.support.metrics import registry_for


def _pkg(name: str, version: str) -> Package:
    return Package.create(kind="deb", name=name, version=version, release="1", arch="amd64")


def _known(name: str, now: float, **fields: Any) -> Host:
    """A host whose updates were computed with every repository's data."""
    computed = {"updates_complete": True, "updates_computed_at": now - 30,
                "inputs_changed_at": now - 40, "updates_inputs_at": now - 40}  # fmt: skip
    return Host.create(name=name, created_at=now, **{**computed, **fields})


def test_host_metrics_follow_the_store(db) -> None:
    now = time.time()
    a = _known("a", now, kernel="6.1", arch="x86_64", last_report_at=now - 5,
               packages_without_repository=4, reboot_reported=False)  # fmt: skip
    _known("b", now, reboot_reported=True)
    old, new = _pkg("openssl", "3.0.1"), _pkg("openssl", "3.0.2")
    HostUpdate.create(host=a, installed=old, available=new, security=True, first_seen_at=now - 99)
    old2, new2 = _pkg("vim", "9.0"), _pkg("vim", "9.1")
    HostUpdate.create(host=a, installed=old2, available=new2, security=False, first_seen_at=now)
    recount(db)  # written directly: counted as the update computation counts them
    reg = registry_for(db)
    get = reg.get_sample_value
    assert get("patchwatch_database_up") == 1
    assert get("patchwatch_host_updates_pending", {"host": "a", "kind": "security"}) == 1
    assert get("patchwatch_host_updates_pending", {"host": "a", "kind": "other"}) == 1
    assert get("patchwatch_host_updates_pending", {"host": "b", "kind": "security"}) == 0
    assert get("patchwatch_host_reboot_required", {"host": "b"}) == 1
    assert get("patchwatch_host_reboot_required", {"host": "a"}) == 0
    assert (
        get("patchwatch_host_oldest_security_update_first_seen_timestamp_seconds", {"host": "a"})
        == now - 99
    )
    assert (
        get("patchwatch_host_oldest_security_update_first_seen_timestamp_seconds", {"host": "b"})
        is None
    )
    assert get("patchwatch_host_last_report_timestamp_seconds", {"host": "a"}) == now - 5
    assert get("patchwatch_host_packages_without_repository", {"host": "a"}) == 4
    assert get("patchwatch_host_packages_without_repository", {"host": "b"}) is None

    HostUpdate.delete().execute()  # read at scrape time: the next scrape sees the change
    recount(db)
    assert get("patchwatch_host_updates_pending", {"host": "a", "kind": "security"}) == 0


def test_host_row_columns_are_declared_once(db) -> None:
    """HostRow's fields are the one declaration of a host row: each says what the query
    selects for it, the tuples the exporter reads come in their order, and a row is its
    tuple converted field by field (flags as bools whatever the driver gives)."""
    now = time.time()
    a = _known("a", now, kernel="6.1", arch="x86_64", last_report_at=now - 5,
               packages_without_repository=4, reboot_reported=False, tags="db web")  # fmt: skip
    HostUpdate.create(host=a, installed=_pkg("vim", "9.0"), available=_pkg("vim", "9.1"),
                      security=True, first_seen_at=now - 9)  # fmt: skip
    recount(db)
    declared = fields(HostRow)
    assert all(f.metadata.get("select") is not None for f in declared)
    assert tuple(f.name for f in declared) == HOST_TUPLE_FIELDS
    (raw,) = load_host_tuples()
    (row,) = load_host_rows()
    assert len(raw) == len(declared)
    by_name = dict(zip(HOST_TUPLE_FIELDS, raw, strict=True))
    assert by_name["name"] == "a" and by_name["tags"] == "db web"
    assert by_name["security"] == 1 and by_name["oldest_security_first_seen"] == now - 9
    assert by_name["packages_without_repository"] == 4
    for f in declared:
        assert getattr(row, f.name) == by_name[f.name], f.name
    assert row.reboot_reported is False and row.reboot_kernel is None
    assert row.updates_complete is True and row.check_updates is True


def test_held_updates_are_their_own_kind_and_never_the_oldest_security_update(db) -> None:
    """Held updates count as kind="held" only: the sum stays all updates, and a held
    security update feeds neither the security count nor the patch-age series that
    the security alerts read."""
    now = time.time()
    a = _known("a", now)
    b = _known("b", now)
    ssl_old, ssl_new = _pkg("openssl", "3.0.1"), _pkg("openssl", "3.0.2")
    vim_old, vim_new = _pkg("vim", "9.0"), _pkg("vim", "9.1")
    for host, first in ((a, now - 900), (b, now - 50)):
        HostUpdate.create(host=host, installed=ssl_old, available=ssl_new, security=True,
                          first_seen_at=first, held=host is a)  # fmt: skip
        HostUpdate.create(host=host, installed=vim_old, available=vim_new, security=False,
                          first_seen_at=first, held=True)  # fmt: skip
    recount(db)
    get = registry_for(db).get_sample_value
    pending = "patchwatch_host_updates_pending"
    assert {k: get(pending, {"host": "a", "kind": k}) for k in ("security", "other", "held")} == {
        "security": 0, "other": 0, "held": 2,
    }  # fmt: skip
    assert {k: get(pending, {"host": "b", "kind": k}) for k in ("security", "other", "held")} == {
        "security": 1, "other": 0, "held": 1,
    }  # fmt: skip
    oldest = "patchwatch_host_oldest_security_update_first_seen_timestamp_seconds"
    assert get(oldest, {"host": "a"}) is None  # its only security update is held
    assert get(oldest, {"host": "b"}) == now - 50


def test_reports_and_jobs_are_exposed(db) -> None:
    now = time.time()
    Report.create(host_name="a", protocol="x", received_at=now, body=b"", size=0, state="failed")
    JobRun.create(job="refresh", started_at=now - 3, finished_at=now, duration_seconds=3,
                  outcome="success")  # fmt: skip
    JobRun.create(job="refresh", started_at=now, finished_at=now + 1, duration_seconds=1,
                  outcome="failure")  # fmt: skip
    get = registry_for(db).get_sample_value
    assert get("patchwatch_reports_stored", {"state": "failed"}) == 1
    assert get("patchwatch_reports_stored", {"state": "pending"}) == 0
    assert get("patchwatch_job_last_run_success", {"name": "refresh"}) == 0
    assert get("patchwatch_job_last_success_timestamp_seconds", {"name": "refresh"}) == now


def test_reports_stored_has_only_the_states_reports_can_be_in(db) -> None:
    """No ``processing`` series: nothing writes that state (the docs list the three)."""
    Report.create(host_name="a", protocol="x", received_at=1.0, body=b"", size=0)
    families = {m.name: m for m in StoreCollector(db).collect()}
    states = {s.labels["state"]: s.value for s in families["patchwatch_reports_stored"].samples}
    assert states == {"failed": 0, "pending": 1, "processed": 0}


def test_unreadable_store_gives_database_down_not_a_failed_scrape(tmp_path) -> None:
    broken = SqliteDatabase(str(tmp_path / "missing" / "nope.db"))
    reg = registry_for(broken)
    text = generate_latest(reg).decode()
    assert "patchwatch_database_up 0.0" in text
    assert "patchwatch_host_info" not in text


def test_metrics_token_protects_metrics_but_not_health(db) -> None:
    import base64

    from werkzeug.test import Client

    from patchwatch.exporter.app import make_app

    client = Client(make_app(db, registry=registry_for(db), token="s3cret"))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and b"patchwatch_database_up" in ok.data
    basic = base64.b64encode(b"prometheus:s3cret").decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/healthz").status_code == 200


# --- the fast writer against prometheus_client's own ---------------------------------------

# Label values the text formats must escape (backslash, double quote, newline), alone,
# together and at the edges, and non-ASCII text that must pass through as UTF-8.
AWKWARD = [
    'quo"te',
    "back\\slash",
    "new\nline",
    'all\\"\n"\\of them',
    "trailing\\",
    '"',
    "\\n is not a newline",
    "ünïcødé-ホスト.example",
    "emoji-\U0001f600 and tab\t",
]
PROMETHEUS_ACCEPT = (  # Debian 12's Prometheus 2.42: negotiates OpenMetrics
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
FORMATS = [
    pytest.param(None, id="text-0.0.4"),
    pytest.param(PROMETHEUS_ACCEPT, id="openmetrics-prometheus"),
    pytest.param("application/openmetrics-text", id="openmetrics-no-version"),
    pytest.param("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8", id="om-utf8"),
    pytest.param("text/plain;version=1.0.0;escaping=allow-utf-8", id="text-1.0.0-utf8"),
    pytest.param("text/plain;version=1.0.0;escaping=underscores", id="text-1.0.0-underscores"),
]


class Families:
    """A collector serving families already collected, so both writers see the same."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def parsed(text: str, openmetrics_format: bool) -> list[tuple[Any, ...]]:
    """Families as prometheus_client's parser reads them, sample by sample; values as
    ``repr`` so that NaN equals NaN and -0.0 differs from 0.0."""
    parser = openmetrics_parser if openmetrics_format else text_parser
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [(s.name, s.labels, repr(float(s.value))) for s in family.samples],
        )
        for family in parser.text_string_to_metric_families(text)
    ]


def assert_same_exposition(fast: bytes, reference: bytes, openmetrics_format: bool) -> None:
    """Sample by sample first (a readable failure), then byte for byte."""
    fast_families = parsed(fast.decode(), openmetrics_format)
    reference_families = parsed(reference.decode(), openmetrics_format)
    assert [f[0] for f in fast_families] == [f[0] for f in reference_families]
    for mine, theirs in zip(fast_families, reference_families, strict=True):
        assert mine[:3] == theirs[:3]
        assert len(mine[3]) == len(theirs[3]), mine[0]
        for sample, expected in zip(mine[3], theirs[3], strict=True):
            assert sample == expected
    assert fast == reference


def seed_awkward_fleet() -> float:
    """Hosts whose every label (name, OS, family, arch, kernel, tags) needs escaping."""
    now = time.time()
    old, new = _pkg("openssl", "3.0.1"), _pkg("openssl", "3.0.2")
    old2, new2 = _pkg("vim", "9.0"), _pkg("vim", "9.1")
    for i, odd in enumerate(AWKWARD):
        release = OSRelease.create(name=f"OS {odd} {i}", family=f"fam{odd}")
        size = PackageSet.create(digest=f"{i:064x}", size=1000 + i, created_at=now)
        host = Host.create(
            name=f"h{i}-{odd}", os_release=release, kernel=f"6.1-{odd}", arch=odd,
            tags=f"web {odd} prod", reboot_reported=[None, True, False][i % 3],
            reboot_kernel=[None, False, True, None][i % 4], package_set=size,
            created_at=now, last_report_at=now - 1234.5678 * i,
            maintenance_until=now + 3600 if i % 3 == 0 else None,
            packages_without_repository=i * 7 if i % 4 else None,
            updates_complete=i % 5 != 0, updates_computed_at=now - 60.25 * i,
            inputs_changed_at=now - 1200.125 * i if i % 6 else None,
        )  # fmt: skip
        HostUpdate.create(host=host, installed=old, available=new, security=i % 2 == 1,
                          first_seen_at=now - 86400.25 * i)  # fmt: skip
        if i % 3:
            HostUpdate.create(host=host, installed=old2, available=new2, security=True,
                              first_seen_at=now - 99.5 * i)  # fmt: skip
    Host.create(name="bare", created_at=now)  # no OS, no package set, never reported
    recount(database)
    return now


@pytest.mark.parametrize("accept", FORMATS)
def test_fast_writer_writes_what_prometheus_client_writes(db, accept: str | None) -> None:
    """The per-host families as the exporter writes them, against prometheus_client's
    rendering of the very same families, in every format the app serves itself."""
    seed_awkward_fleet()
    families = list(StoreCollector(db).collect())
    assert sum(isinstance(f, RowFamily) for f in families) == 16  # 4 of them vulnerabilities
    encoder, _content_type, openmetrics_format = negotiate(accept)
    assert openmetrics_format is not None
    fast = render(families, encoder, openmetrics_format)
    reference = encoder(Families(families))  # type: ignore[arg-type]
    assert_same_exposition(fast, reference, openmetrics_format)

    # Escaped correctly, not merely the same: every awkward value reads back as stored.
    by_name = {f[0]: f[3] for f in parsed(fast.decode(), openmetrics_format)}
    info = [labels for _name, labels, _value in by_name["patchwatch_host_info"]]
    assert {labels["host"] for labels in info} == {"bare"} | {
        f"h{i}-{odd}" for i, odd in enumerate(AWKWARD)
    }
    assert {labels["arch"] for labels in info} == {""} | set(AWKWARD)
    tags = {f"web {odd} prod".replace(" ", ",") for odd in AWKWARD}  # as the collector writes
    assert {labels["tags"] for labels in info} == {""} | tags
    assert ("patchwatch_host_info", {"host": "bare", "os": "", "os_family": "", "arch": "",
            "kernel": "", "tags": ""}, "1.0") in by_name["patchwatch_host_info"]  # fmt: skip


def test_row_family_writes_every_shape_like_prometheus_client() -> None:
    """No labels to many, values of every kind floatToGoString distinguishes, a HELP
    text that needs escaping in both formats: byte for byte and sample by sample."""
    values: list[float] = [
        0, 1, True, False, 7, 2**53 + 1, 10**20, 0.1, 1e-7, 123456.5, 1234567.5,
        1.7e9 + 0.123, 17e15, -3.25, -0.0, math.inf, -math.inf, math.nan,
    ]  # fmt: skip
    doc = 'Help with a back\\slash, a "quote",\na newline and ünïcødé.'
    shapes = [[], ["host"], ["host", "kind"], ["kind", "host"], ["z", "host", "a", "m"]]
    for labelnames in shapes:
        name = f"test_shape_{len(labelnames)}_{'_'.join(labelnames) or 'none'}"
        rows = []
        for n, value in enumerate(values if labelnames else values[:1]):
            labels = tuple(
                f"{AWKWARD[(n + k) % len(AWKWARD)]}{k}.{n}" for k in range(len(labelnames))
            )
            rows.append((labels, value))
        fast_family = RowFamily(name, doc, labelnames, rows)
        reference_family = GaugeMetricFamily(name, doc, labels=labelnames)
        for labels, value in rows:
            reference_family.add_metric(list(labels), value)
        assert fast_family.samples == reference_family.samples  # the generic path
        assert fast_family == reference_family
        for openmetrics_format, encoder in ((False, generate_text), (True, generate_latest)):
            fast = render([fast_family], encoder, openmetrics_format)
            reference = encoder(Families([reference_family]))  # type: ignore[arg-type]
            assert_same_exposition(fast, reference, openmetrics_format)


def test_row_family_refuses_names_that_would_need_escaping() -> None:
    with pytest.raises(ValueError):
        RowFamily("patchwatch:host", "doc", ["host"], [])
    with pytest.raises(ValueError):
        RowFamily("patchwatch_host", "doc", ["host.name"], [])


def _wsgi_get(app: Any, headers: dict[str, str], query: str = "") -> tuple[str, dict, bytes]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": query}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(response_headers))

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def _without_timing(text: str, openmetrics_format: bool) -> list[tuple[Any, ...]]:
    """Parsed families minus the one sample that differs between two scrapes (its name
    maybe rewritten by the ``dots`` escaping)."""
    return [
        f for f in parsed(text, openmetrics_format)
        if f[0].replace("__", "_") != "patchwatch_scrape_collect_duration_seconds"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "accept",
    [*FORMATS, pytest.param("text/plain;version=1.0.0;escaping=dots", id="dots-generic")],
)
def test_metrics_app_answers_as_prometheus_clients_app_would(db, accept: str | None) -> None:
    """Same status, headers and samples as prometheus_client's own WSGI app on the same
    registry, compressed or not; escaping schemes that rewrite names go to it."""
    from patchwatch.exporter.app import make_metrics_app

    seed_awkward_fleet()
    registry = registry_for(db)
    ours, theirs = make_metrics_app(registry), make_wsgi_app(registry)
    headers = {"Accept": accept} if accept else {}
    status, sent, body = _wsgi_get(ours, headers)
    ref_status, ref_sent, ref_body = _wsgi_get(theirs, headers)
    assert (status, sent) == (ref_status, ref_sent)
    openmetrics_format = sent["Content-Type"].startswith("application/openmetrics-text")
    if "escaping=dots" in sent["Content-Type"]:
        assert b"patchwatch__host__info" in body  # prometheus_client's own rewriting
    else:
        assert b"# HELP patchwatch_host_info " in body
    assert _without_timing(body.decode(), openmetrics_format) == _without_timing(
        ref_body.decode(), openmetrics_format
    )
    status, sent, zipped = _wsgi_get(ours, {**headers, "Accept-Encoding": "gzip"})
    assert status == "200 OK" and sent["Content-Encoding"] == "gzip"
    assert _without_timing(gzip.decompress(zipped).decode(), openmetrics_format) == (
        _without_timing(body.decode(), openmetrics_format)
    )


def test_metrics_app_leaves_filtering_and_other_methods_to_prometheus_client(db) -> None:
    from patchwatch.exporter.app import make_metrics_app
    from patchwatch.exporter.app import make_registry

    seed_awkward_fleet()
    registry = make_registry(db)  # described: name[] can find the store's families
    ours, theirs = make_metrics_app(registry), make_wsgi_app(registry)
    query = "name[]=patchwatch_host_reboot_required&name[]=patchwatch_build_info"
    status, _sent, body = _wsgi_get(ours, {}, query)
    assert status == "200 OK"
    assert {f[0] for f in parsed(body.decode(), False)} == {
        "patchwatch_host_reboot_required",
        "patchwatch_build_info",
    }
    assert body == _wsgi_get(theirs, {}, query)[2]
    for method in ("POST", "HEAD", "OPTIONS"):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": "/metrics", "QUERY_STRING": ""}
        got: list[str] = []
        ours(environ, lambda status, _headers, got=got: got.append(status))
        theirs(environ, lambda status, _headers, got=got: got.append(status))
        assert got[0] == got[1]


# --- unknown is never 0 ---------------------------------------------------------------------


def test_updates_never_computed_or_computed_without_every_repository_are_absent(db) -> None:
    """A host whose updates are unknown has no update series at all, where a fully
    patched host has its zeros: "nothing pending" and "unknown" cannot be confused."""
    now = time.time()
    _known("patched", now)
    Host.create(name="new", created_at=now, inputs_changed_at=now - 7)  # never computed
    partial = Host.create(
        name="partial", created_at=now, updates_complete=False, updates_computed_at=now - 3,
        inputs_changed_at=now - 9, updates_inputs_at=now - 9,
    )  # fmt: skip
    old, new = _pkg("openssl", "3.0.1"), _pkg("openssl", "3.0.2")
    # what the repositories it could read offer: real, but not all there is
    HostUpdate.create(host=partial, installed=old, available=new, security=True,
                      first_seen_at=now - 99)  # fmt: skip
    recount(db)
    get = registry_for(db).get_sample_value
    for kind in ("security", "other"):
        assert get("patchwatch_host_updates_pending", {"host": "patched", "kind": kind}) == 0
        assert get("patchwatch_host_updates_pending", {"host": "new", "kind": kind}) is None
        assert get("patchwatch_host_updates_pending", {"host": "partial", "kind": kind}) is None
    oldest = "patchwatch_host_oldest_security_update_first_seen_timestamp_seconds"
    assert get(oldest, {"host": "partial"}) is None
    computed = "patchwatch_host_updates_computed_timestamp_seconds"
    assert get(computed, {"host": "patched"}) == now - 30
    assert get(computed, {"host": "new"}) is None
    assert get(computed, {"host": "partial"}) is None
    changed = "patchwatch_host_updates_inputs_changed_timestamp_seconds"
    assert get(changed, {"host": "patched"}) == now - 40
    assert get(changed, {"host": "new"}) == now - 7
    Host.create(name="off", created_at=now, inputs_changed_at=now - 7, check_updates=False)
    assert get(changed, {"host": "off"}) is None  # checks off: no computation is ever due
    assert get("patchwatch_host_updates_pending", {"host": "off", "kind": "other"}) is None
    assert get("patchwatch_host_info", {"host": "new", "os": "", "os_family": "", "arch": "",
                                        "kernel": "", "tags": ""}) == 1  # fmt: skip

    Host.update(updates_complete=True).where(Host.name == "partial").execute()
    assert get("patchwatch_host_updates_pending", {"host": "partial", "kind": "security"}) == 1
    assert get(oldest, {"host": "partial"}) == now - 99
    assert get(computed, {"host": "partial"}) == now - 3


def test_stale_updates_keep_their_numbers_and_show_newer_inputs(db) -> None:
    """A report changed the inputs after the computation: the last numbers stay, and the
    two timestamps tell PromQL they are stale."""
    now = time.time()
    _known("web", now, inputs_changed_at=now - 5)  # computed at now - 30 from older inputs
    get = registry_for(db).get_sample_value
    assert get("patchwatch_host_updates_pending", {"host": "web", "kind": "security"}) == 0
    computed = get("patchwatch_host_updates_computed_timestamp_seconds", {"host": "web"})
    changed = get("patchwatch_host_updates_inputs_changed_timestamp_seconds", {"host": "web"})
    assert changed is not None and computed is not None and changed > computed


@pytest.mark.parametrize(
    ("reported", "newer_kernel", "exported"),
    [
        (None, None, None),  # nothing says anything: absent, never 0
        (False, None, 0),
        (None, False, 0),
        (False, False, 0),
        (True, None, 1),
        (None, True, 1),
        (False, True, 1),  # the kernel says so, whatever the host's own signal
        (True, False, 1),
    ],
)
def test_reboot_required_is_absent_when_nothing_says_anything(
    db, reported: bool | None, newer_kernel: bool | None, exported: int | None
) -> None:
    Host.create(name="h", created_at=time.time(), reboot_reported=reported,
                reboot_kernel=newer_kernel)  # fmt: skip
    get = registry_for(db).get_sample_value
    assert get("patchwatch_host_reboot_required", {"host": "h"}) == exported


def test_mirror_packages_are_absent_until_the_mirror_succeeded(db) -> None:
    now = time.time()
    repo = Repository.create(kind="deb", key="deb x", created_at=now)
    never = Mirror.create(repository=repo, url="http://never.example/", last_attempt_at=now,
                          failures_total=2, consecutive_failures=2)  # fmt: skip
    Mirror.create(repository=repo, url="http://empty.example/", last_attempt_at=now,
                  last_success_at=now, package_count=0)  # fmt: skip
    get = registry_for(db).get_sample_value
    labels = {"repository": "deb x", "mirror": never.url}
    assert get("patchwatch_mirror_packages", labels) is None
    assert get("patchwatch_mirror_consecutive_failures", labels) == 2
    empty = {"repository": "deb x", "mirror": "http://empty.example/"}
    assert get("patchwatch_mirror_packages", empty) == 0  # read, and really empty
