"""Fuzz all three ingest endpoints: any input gets a 2xx or a 4xx, never a 500, and
nothing is written unless the report was accepted."""

from __future__ import annotations

import copy
import gzip
import json
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.jsondoc import count_values
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processing import process_pending
from patchwatch.receiver.app import create_app
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from patchwatch.store.tokens import create_token
from tests.conftest import FIXTURES

NATIVE = json.loads((FIXTURES / "reports/native_deb.json").read_text())
P2 = json.loads((FIXTURES / "reports/patchman2-rocky9.json").read_text())
P1 = {
    f.name: f.read_text() for f in sorted(Path(FIXTURES / "reports/patchman1-debian12").iterdir())
}
ALLOWED = {200, 202, 204, 400, 401, 403, 413}

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=40),
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def mutate(doc: object, path_choices: list[int], value: object) -> object:
    """Replace one node (chosen by ``path_choices``) of a copy of ``doc`` with ``value``."""
    doc = copy.deepcopy(doc)
    node = doc
    for choice in path_choices:
        if isinstance(node, dict) and node:
            key = sorted(node)[choice % len(node)]
            if not isinstance(node[key], dict | list) or choice % 3 == 0:
                node[key] = value
                return doc
            node = node[key]
        elif isinstance(node, list) and node:
            idx = choice % len(node)
            if not isinstance(node[idx], dict | list) or choice % 3 == 0:
                node[idx] = value
                return doc
            node = node[idx]
        else:
            break
    return doc


@pytest.fixture
def fuzz_env(db, tmp_path):
    app = create_app(
        Settings(data_dir=str(tmp_path), process_inline=False, max_report_bytes=300_000,
                 max_report_decompressed_bytes=600_000, protocol1_networks=("127.0.0.0/8",)),
        db=db,
    )  # fmt: skip
    # the fixtures' own hosts, with their own tokens: an enrollment token would write
    # a host once, and every later example would only test that it may not any more
    tokens = {
        "native": create_token("host", time.time(), NATIVE["host"])[1],
        "p2": create_token("host", time.time(), P2["hostname"])[1],
        "enroll": create_token("enroll", time.time())[1],
    }
    return app.test_client(), tokens


FUZZ = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


def check(response, before: int) -> None:
    assert response.status_code in ALLOWED, (response.status_code, response.data[:300])
    after = Report.select().count()
    if response.status_code >= 400:
        assert after == before, "a rejected report was stored"
    else:
        assert after == before + 1
    outcome = process_pending(time.time())  # must not raise, whatever was accepted
    assert set(outcome) <= {"processed", "failed"}


@FUZZ
@given(path=st.lists(st.integers(0, 50), max_size=6), value=json_value, gz=st.booleans())
def test_native_endpoint_fuzz(fuzz_env, path, value, gz) -> None:
    client, tokens = fuzz_env
    token = tokens["native"]
    body = json.dumps(mutate(NATIVE, path, value)).encode()
    headers = {"Authorization": f"Bearer {token}"}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    before = Report.select().count()
    check(client.post("/api/v1/reports", data=body, headers=headers), before)


@FUZZ
@given(body=st.binary(max_size=2000), encoding=st.sampled_from(["", "gzip", "deflate", "br"]))
def test_native_endpoint_raw_bytes(fuzz_env, body, encoding) -> None:
    client, tokens = fuzz_env
    token = tokens["native"]
    headers = {"Authorization": f"Bearer {token}"}
    if encoding:
        headers["Content-Encoding"] = encoding
    before = Report.select().count()
    check(client.post("/api/v1/reports", data=body, headers=headers), before)


@FUZZ
@given(path=st.lists(st.integers(0, 50), max_size=6), value=json_value)
def test_patchman2_endpoint_fuzz(fuzz_env, path, value) -> None:
    client, tokens = fuzz_env
    token = tokens["p2"]
    body = json.dumps(mutate(P2, path, value))
    before = Report.select().count()
    response = client.post(
        "/api/report/", data=body,
        headers={"Authorization": f"Api-Key {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    check(response, before)


@FUZZ
@given(
    field=st.sampled_from(sorted(P1)),
    value=st.text(max_size=300),
    drop=st.booleans(),
)
def test_patchman1_endpoint_fuzz(fuzz_env, field, value, drop) -> None:
    client, _ = fuzz_env
    form = dict(P1)
    if drop:
        form.pop(field)
    else:
        form[field] = value
    before = Report.select().count()
    check(client.post("/reports/upload/", data=form), before)


def test_hosts_only_come_from_processed_reports(fuzz_env) -> None:
    client, tokens = fuzz_env
    token = tokens["enroll"]
    for junk in (b"{}", b"[]", b'{"version": 1}', b"\xff\xfe"):
        client.post("/api/v1/reports", data=junk, headers={"Authorization": f"Bearer {token}"})
    assert Report.select().count() == 0
    assert Host.select().count() == 0


# --- hostile shapes: nesting, value counts, enrollment keys ------------------------------


def nest(depth: int, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "array" else ('{"a":', "}")
    return opening * depth + "0" + closing * depth


@FUZZ
@given(
    path=st.lists(st.integers(0, 50), max_size=6),
    depth=st.integers(1, 50_000),
    kind=st.sampled_from(["array", "object"]),
    endpoint=st.sampled_from(["native", "p2"]),
)
def test_nesting_at_any_depth_anywhere_is_never_a_500(fuzz_env, path, depth, kind, endpoint):
    client, tokens = fuzz_env
    marker = "NESTED-HERE"
    doc = mutate(NATIVE if endpoint == "native" else P2, path, marker)
    body = json.dumps(doc).replace(json.dumps(marker), nest(depth, kind)).encode()
    before = Report.select().count()
    if endpoint == "native":
        headers = {"Authorization": f"Bearer {tokens['native']}"}
        response = client.post("/api/v1/reports", data=body, headers=headers)
    else:
        headers = {"Authorization": f"Api-Key {tokens['p2']}", "Content-Type": "application/json"}
        response = client.post("/api/report/", data=body, headers=headers)
    check(response, before)
    # deeper than the parser goes: the interpreter's recursion limit, which hypothesis
    # raises while a test runs (a server runs with the default, about 1,000 levels)
    if marker in json.dumps(doc) and depth > sys.getrecursionlimit():
        assert response.status_code in (400, 413), response.get_json()  # 413: too long


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(alphabet=st.sampled_from('ab,[]{}":\\ '), max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=5), inner, max_size=5)),
    max_leaves=40,
))  # fmt: skip
def test_the_value_count_before_parsing_is_never_below_the_real_count(value) -> None:
    """What refuses a body before it is parsed (``max_report_values``) never refuses one
    that fits: the byte count is an upper bound, whatever strings hold."""

    def real(v: object) -> int:
        if isinstance(v, list):
            return 1 + sum(map(real, v))
        if isinstance(v, dict):
            return 1 + sum(map(real, v.values()))
        return 1

    for text in (json.dumps(value), json.dumps(value, separators=(",", ":"), indent=1)):
        assert count_values(text.encode()) >= real(value)


@FUZZ
@given(key=st.text(max_size=200), enrolling=st.booleans())
def test_any_enrollment_key_header_gets_an_answer_not_a_500(fuzz_env, key, enrolling) -> None:
    client, tokens = fuzz_env
    token = tokens["enroll"] if enrolling else tokens["native"]
    doc = dict(NATIVE, host="fuzz-enroll.example.com") if enrolling else NATIVE
    before = Report.select().count()
    try:
        response = client.post("/api/v1/reports", json=doc, headers={
            "Authorization": f"Bearer {token}", "X-Patchwatch-Enrollment-Key": key})  # fmt: skip
    except ValueError:  # the test client itself refuses header values with line breaks
        return
    check(response, before)
