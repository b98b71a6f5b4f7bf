"""Per-host report limits: 429 with Retry-After, counted, bounded in memory, and one
host's flood leaves the other hosts' reports alone."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from patchwatch.domain.settings import Settings
from patchwatch.receiver.app import create_app
from patchwatch.receiver.metrics import REPORTS_RECEIVED
from patchwatch.receiver.ratelimit import HostLimits
from patchwatch.receiver.ratelimit import RateLimited
from patchwatch.store.models import Report
from patchwatch.store.tokens import create_token
from tests.support.reports import native_doc


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limits = HostLimits(burst=3, per_minute=6, clock=clock)  # one every 10 s
    for _ in range(3):
        limits.take("host:a", "a")
    with pytest.raises(RateLimited) as refused:
        limits.take("host:a", "a")
    assert refused.value.retry_after == 10
    limits.take("host:b", "b")  # another host is not touched
    clock.now += 4
    with pytest.raises(RateLimited) as refused:
        limits.take("host:a", "a")
    assert refused.value.retry_after == 6
    clock.now += 6
    limits.take("host:a", "a")
    clock.now += 3600  # refilled up to the burst, not beyond
    for _ in range(3):
        limits.take("host:a", "a")
    with pytest.raises(RateLimited):
        limits.take("host:a", "a")


def test_memory_is_bounded_by_dropping_the_least_recently_used() -> None:
    limits = HostLimits(burst=1, per_minute=1, max_keys=100, clock=Clock())
    for i in range(1000):
        limits.take(f"host:h{i}", f"h{i}")
    assert len(limits) == 100
    limits.take("host:h0", "h0")  # dropped: starts again with a full burst
    with pytest.raises(RateLimited):
        limits.take("host:h999", "h999")  # kept: its burst is spent


def test_off_when_the_burst_is_zero() -> None:
    limits = HostLimits(burst=0, per_minute=6, clock=Clock())
    for _ in range(100):
        limits.take("host:a", "a")
    assert len(limits) == 0


def _rate_limited(protocol: str) -> float:
    return REPORTS_RECEIVED.labels(protocol, "rate_limited")._value.get()


def test_a_flooding_host_gets_429_and_the_others_go_through(db, tmp_path) -> None:
    settings = Settings(data_dir=str(tmp_path), process_inline=False, report_burst_per_host=5,
                        report_rate_per_host=1.0, protocol1_networks=("127.0.0.0/8",))  # fmt: skip
    client = create_app(settings, db=db).test_client()
    _, flood = create_token("host", time.time(), "flood.example.com")
    _, other = create_token("host", time.time(), "other.example.com")
    before = _rate_limited("patchwatch/1")
    codes = []
    for _ in range(40):
        r = client.post("/api/v1/reports", json=native_doc("flood.example.com"),
                        headers={"Authorization": f"Bearer {flood}"})  # fmt: skip
        codes.append(r.status_code)
        if r.status_code == 429:
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert "report_burst_per_host" in r.get_json()["error"]
    assert codes[:5] == [202] * 5 and set(codes[5:]) == {429}
    assert _rate_limited("patchwatch/1") - before == 35
    assert b'result="rate_limited"' in generate_latest(REPORTS_RECEIVED)
    r = client.post("/api/v1/reports", json=native_doc("other.example.com"),
                    headers={"Authorization": f"Bearer {other}"})  # fmt: skip
    assert r.status_code == 202
    assert Report.select().where(Report.host_name == "flood.example.com").count() == 5
    # hosts without their own token are limited by the host name they report
    form = {"host": "p1.example.com", "os": "Debian GNU/Linux 12 (bookworm)",
            "kernel": "6.1.0-28-amd64", "arch": "x86_64", "protocol": "1"}  # fmt: skip
    codes = [client.post("/reports/upload/", data=form).status_code for _ in range(7)]
    assert codes == [204] * 5 + [429] * 2
