"""Hostile bodies and arguments get a clear 4xx, cost little, and lose nothing.

- JSON nested beyond any report's shape: 400 on every endpoint that reads JSON;
- millions of tiny values: 413 before they are parsed, with the memory that costs
  measured;
- ``page=nan``, ``per_page=inf``: 400;
- a maintenance end of 1e308 (or a century ahead): 400, and a stored one does not
  break the attention list;
- a protocol 1 field of millions of lines: refused before it is split.
"""

from __future__ import annotations

import gc
import gzip
import json
import time
import tracemalloc

import pytest

from patchwatch.domain.jsondoc import count_values
from patchwatch.domain.jsondoc import decode_json
from patchwatch.domain.settings import Settings
from patchwatch.inventory.hosts import MAX_MAINTENANCE_DAYS
from patchwatch.inventory.hosts import parse_maintenance_until
from patchwatch.pipeline.processing import process_pending
from patchwatch.receiver.app import create_app
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from patchwatch.store.tokens import create_token
from tests.test_receiver_ingest import native_doc


@pytest.fixture
def env(db, tmp_path):
    settings = Settings(
        data_dir=str(tmp_path), process_inline=False, protocol1_networks=("127.0.0.0/8",)
    )
    client = create_app(settings, db=db).test_client()
    _, host = create_token("host", time.time(), "web1.example.com")
    _, admin = create_token("admin", time.time())
    return client, host, {"Authorization": f"Bearer {admin}"}


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("levels", [100, 2_000, 200_000])
def test_deeply_nested_json_is_400_on_every_json_endpoint(env, levels) -> None:
    client, host, admin = env
    body = b'{"version": 1, "host": "web1.example.com", "os": ' + deep(levels) + b"}"
    r = client.post("/api/v1/reports", data=body, headers={"Authorization": f"Bearer {host}"})
    assert r.status_code == 400, r.get_json()
    r = client.post("/api/report/", data=body, headers={"Authorization": f"Api-Key {host}"})
    assert r.status_code == 400, r.get_json()
    assert Report.select().count() == 0
    assert client.post("/api/v1/reports", data=native_doc_bytes(),
                       headers={"Authorization": f"Bearer {host}"}).status_code == 202  # fmt: skip
    process_pending(time.time())
    r = client.patch("/api/v1/hosts/web1.example.com",
                     data=b'{"check_updates": ' + deep(levels) + b"}", headers=admin)  # fmt: skip
    assert r.status_code in (400, 413), r.get_json()
    assert "error" in r.get_json()


def test_nesting_around_the_parsers_limit_is_never_a_500(env) -> None:
    """Fields a report may carry unchecked (extra keys of ``agent``, unknown keys of
    protocol 2) hold nesting as deep as the decoder accepts; storing it goes a few
    calls deeper. Every depth around that limit is stored or refused, never a 500."""
    client, host, _ = env
    p2 = {"protocol": 2, "hostname": "web1.example.com", "arch": "x86_64", "kernel": "6.1.0",
          "os": "Debian GNU/Linux 12 (bookworm)", "packages": [], "repos": []}  # fmt: skip
    for depth in range(900, 1010, 3):
        nested = deep(depth).decode()
        native = json.dumps(native_doc("web1.example.com")).replace(
            '"kernel"', '"agent": {"x": ' + nested + '}, "kernel"', 1
        )
        r = client.post("/api/v1/reports", data=native, headers={"Authorization": f"Bearer {host}"})
        assert r.status_code in (202, 400), (depth, r.status_code)
        body = json.dumps(p2).replace('"arch"', '"extra": ' + nested + ', "arch"', 1)
        r = client.post("/api/report/", data=body, headers={"Authorization": f"Api-Key {host}"})
        assert r.status_code in (202, 400), (depth, r.status_code)
    assert process_pending(time.time()).keys() <= {"processed", "failed"}


def native_doc_bytes() -> bytes:
    return json.dumps(native_doc("web1.example.com")).encode()


def test_decode_json_names_depth_and_size() -> None:
    with pytest.raises(Exception) as info:
        decode_json(deep(100_000), 10**9)
    assert "nested too deeply" in str(info.value)
    assert count_values(b'{"a": [1, 2, {"b": []}], "c": "x,y"}') >= 7  # an upper bound
    assert decode_json(b"[1, 2]", 3) == [1, 2]


def test_a_million_tiny_packages_are_refused_before_they_are_parsed(env) -> None:
    """2.5 MB of gzip used to cost 470 MB before the package limit refused it: now the
    values are counted in the body and it is refused, costing what the body costs."""
    client, host, _ = env
    doc = native_doc("web1.example.com", n=0)
    doc["packages"] = [{"name": f"p{i}", "version": "1", "arch": "x", "type": "deb"}
                       for i in range(1_000_000)]  # fmt: skip
    text = json.dumps(doc).encode()
    body = gzip.compress(text, 6)
    del doc
    gc.collect()
    tracemalloc.start()
    try:
        r = client.post("/api/v1/reports", data=body, headers={
            "Authorization": f"Bearer {host}", "Content-Encoding": "gzip"})  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413, r.get_json()
    assert "max_report_values" in r.get_json()["error"]
    # the compressed body, its decompressed copy and little else (parsed: ~470 MB)
    assert peak < 3 * len(text), f"refusing cost {peak / 1e6:.0f} MB for {len(text) / 1e6:.0f} MB"
    print(f"\n1M tiny packages ({len(body) / 1e6:.1f} MB gzip, {len(text) / 1e6:.0f} MB JSON) "
          f"refused with a peak of {peak / 1e6:.0f} MB")  # fmt: skip
    assert Report.select().count() == 0


def test_the_value_limit_is_a_setting(db, tmp_path) -> None:
    client = create_app(
        Settings(data_dir=str(tmp_path), max_report_values=500), db=db
    ).test_client()
    _, host = create_token("host", time.time(), "web1.example.com")
    headers = {"Authorization": f"Bearer {host}"}
    small = native_doc("web1.example.com", n=5)
    assert client.post("/api/v1/reports", json=small, headers=headers).status_code == 202
    big = native_doc("web1.example.com", n=200)  # 200 packages, ~1,400 values
    assert client.post("/api/v1/reports", json=big, headers=headers).status_code == 413


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
@pytest.mark.parametrize("arg", ["page", "per_page"])
def test_non_finite_paging_is_400(env, arg, value) -> None:
    client, _, admin = env
    for path in ("/api/v1/hosts", "/api/v1/attention", "/api/v1/repositories"):
        r = client.get(f"{path}?{arg}={value}", headers=admin)
        assert r.status_code == 400, (path, r.status_code)
        assert r.get_json()["where"] == arg
    r = client.get("/api/v1/hosts?stale_days=nan", headers=admin)
    assert r.status_code == 400


def test_maintenance_end_is_bounded(env) -> None:
    client, host, admin = env
    client.post(
        "/api/v1/reports", data=native_doc_bytes(), headers={"Authorization": f"Bearer {host}"}
    )
    process_pending(time.time())
    for value in (1e308, "1e308", "99999999w", f"{MAX_MAINTENANCE_DAYS + 1}d", "9999-01-01T00:00Z"):
        r = client.patch("/api/v1/hosts/web1.example.com", json={"maintenance_until": value},
                         headers=admin)  # fmt: skip
        assert r.status_code == 400, (value, r.get_json())
        assert r.get_json()["where"] == "maintenance_until"
    r = client.patch(
        "/api/v1/hosts/web1.example.com", json={"maintenance_until": "3d"}, headers=admin
    )
    assert r.status_code == 200 and r.get_json()["in_maintenance"] is True
    now = time.time()
    assert parse_maintenance_until(f"{MAX_MAINTENANCE_DAYS - 1}d", now) > now
    # a value stored before the bound still lets the attention list be read
    Host.update(maintenance_until=1e308).execute()
    r = client.get("/api/v1/attention", headers=admin)
    assert r.status_code == 200
    assert any(i["issue"] == "in_maintenance" for i in r.get_json()["items"])


def test_protocol1_field_of_millions_of_lines_is_refused_before_it_is_split(env) -> None:
    client, _, _ = env
    form = {"host": "p1.example.com", "os": "Debian GNU/Linux 12 (bookworm)",
            "kernel": "6.1.0-28-amd64", "arch": "x86_64", "protocol": "1",
            "packages": "\n" * 3_000_000}  # fmt: skip
    r = client.post("/reports/upload/", data=form)
    assert r.status_code == 400
    assert r.get_json()["where"] == "packages"
    assert "lines" in r.get_json()["error"]
    assert Report.select().count() == 0


def large_doc(n: int = 20_000) -> dict:
    doc = native_doc("web1.example.com", n=0)
    doc["packages"] = [{"name": f"large{i}", "epoch": "", "version": "1", "release": "1",
                        "arch": "amd64", "type": "deb"} for i in range(n)]  # fmt: skip
    return doc


@pytest.fixture
def gate(monkeypatch):
    from patchwatch.receiver import gate as gate_module

    fresh = gate_module.LargeReportGate(wait_seconds=0.05)
    monkeypatch.setattr(gate_module, "GATE", fresh)
    return fresh


@pytest.mark.parametrize("inline", [False, True])
def test_a_large_report_waits_for_the_slot_and_small_ones_never_do(db, tmp_path, gate, inline):
    """While the worker's large-report slot is taken, another large report gets 503
    with Retry-After after a bounded wait, and a small report goes through at once.
    Every answer gives the slot back, refusals and inline processing included."""
    settings = Settings(data_dir=str(tmp_path), process_inline=inline)
    client = create_app(settings, db=db).test_client()
    _, host = create_token("host", time.time(), "web1.example.com")
    headers = {"Authorization": f"Bearer {host}"}
    big = json.dumps(large_doc()).encode()  # 20,000 packages: 140,000 values
    assert count_values(big) > 100_000
    assert gate.acquire()  # another large report is being handled
    r = client.post("/api/v1/reports", data=big, headers=headers)
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    r = client.post("/api/report/", data=big, headers={"Authorization": f"Api-Key {host}"})
    assert r.status_code == 503
    assert (
        client.post("/api/v1/reports", data=native_doc_bytes(), headers=headers).status_code == 202
    )
    gate.release()
    r = client.post("/api/v1/reports", data=big, headers=headers)
    assert r.status_code == 202
    if inline:
        assert not gate.acquire(), "the slot is held until the report is processed"
    r.close()  # as a server does once the answer is sent: inline processing runs now
    assert gate.acquire(), "the slot was not given back after the report"
    gate.release()
    bad = large_doc()
    bad["packages"][-1]["version"] = ""
    r = client.post("/api/v1/reports", json=bad, headers=headers)
    assert r.status_code == 400
    assert gate.acquire(), "the slot was not given back after a refusal"
    gate.release()
    # large by its decompressed size alone (one long string), read through gzip
    doc = native_doc("web1.example.com")
    doc["os"]["pretty_name"] = "x" * 1000
    doc["padding"] = " " * 5_000_000
    gz = gzip.compress(json.dumps(doc).encode())
    assert gate.acquire()
    r = client.post("/api/v1/reports", data=gz, headers={**headers, "Content-Encoding": "gzip"})
    assert r.status_code == 503
    gate.release()
    assert Report.select().count() == 2
