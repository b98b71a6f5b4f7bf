"""The handoff to processing: reports prepared once, a report whose package set is stored
read without its packages, and a stale shortcut redone from the stored body only when needed."""

from __future__ import annotations

from collections import Counter

import pytest

from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.reports import parse_native
from patchwatch.domain.set_digest import package_set_digest
from patchwatch.pipeline import prepared
from patchwatch.pipeline import processing
from patchwatch.pipeline.prepared import prepare
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from patchwatch.store.package_sets import stored_package_sets
from patchwatch.store.sets import forget_cached_ids
from patchwatch.store.sets import remember_id


def _doc(host: str, packages: int = 4, kernel: str = "6.1.0-1") -> dict:
    return {
        "version": 1, "host": host, "kernel": kernel, "arch": "x86_64",
        "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12"},
        "packages": [
            {"name": f"p{i}", "version": f"1.{i}", "release": "1", "arch": "amd64", "type": "deb"}
            for i in range(packages)
        ],
    }  # fmt: skip


def _store(doc: dict, at: float) -> Report:
    """Store a report with the digest of its packages (the set shortcut of processing)."""
    digest = package_set_digest(parse_native(doc).packages)
    return store_report(doc["host"], NATIVE, doc, at, packages_digest=digest)


def _set_of(doc: dict) -> int | None:
    """The stored set holding exactly the document's packages."""
    digest = package_set_digest(parse_native(doc).packages)
    return stored_package_sets([digest]).get(digest)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How often each stored report's body is decoded (by size: the bodies differ)."""
    seen: Counter[int] = Counter()
    real = prepared.decode_body

    def counting(body: bytes) -> object:
        seen[len(body)] += 1
        return real(body)

    monkeypatch.setattr(prepared, "decode_body", counting)
    monkeypatch.setattr(processing, "decode_body", counting)
    return seen


def test_a_report_whose_set_is_stored_is_prepared_without_its_packages(db, decodes) -> None:
    first = _store(_doc("a"), 1.0)
    assert process_pending(2.0) == {"processed": 1}
    again = Report.get_by_id(_store(_doc("bb"), 3.0).id)  # the same packages
    set_id = Host.get(Host.name == "a").package_set_id

    item = prepare(again, set_id)
    assert item.record is not None and item.record.packages == ()
    assert not item.packages_read
    assert len(item.whole().packages) == 4  # parsed again, whole, when needed
    assert decodes[len(again.body)] == 2
    whole = prepare(Report.get_by_id(first.id))
    assert whole.whole() is whole.record  # read whole already: no second parse


@pytest.mark.parametrize("same_packages", [True, False])
def test_a_stale_cached_id_is_written_again_and_parses_again_only_if_it_must(
    db, decodes, same_packages: bool
) -> None:
    """An id the worker cached was deleted meanwhile (``dbcheck --fix``): the report is
    written again from the rows, parsed again only when its package list was skipped."""
    assert process_pending(1.0, host_name=_store(_doc("a"), 1.0).host_name) == {"processed": 1}
    forget_cached_ids()
    doc = _doc("b", packages=4 if same_packages else 7, kernel="6.1.0-9")
    row = _store(doc, 2.0)
    os_name = parse_native(doc).os.name
    remember_id("os-release", os_name, 10**9)  # a row that is gone

    assert process_pending(3.0) == {"processed": 1}

    host = Host.get(Host.name == "b")
    assert (host.kernel, host.os_release.name) == ("6.1.0-9", os_name)
    assert _set_of(doc) == host.package_set_id
    assert decodes[len(row.body)] == (2 if same_packages else 1)
