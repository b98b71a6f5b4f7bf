"""Listings: a native report's package list named by its digest as sent, and the set it made.

A report whose list equals one processed before (an unchanged re-report, a host that did
not drift from its image) is processed without turning its list into records; one whose
list differs in anything that makes a record or a source must never be given the other's
set. Each case checks the host's set against the set the report's own packages make,
parsed independently.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable

import pytest

from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.reports import native
from patchwatch.domain.reports import parse_native
from patchwatch.domain.set_digest import listing_digest
from patchwatch.domain.set_digest import package_set_digest
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import raw_sql
from patchwatch.store.models import Host
from patchwatch.store.models import PackageListing
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetMember
from patchwatch.store.package_sets import sets_of_listings
from patchwatch.store.sets import forget_cached_ids
from patchwatch.store.vuln_models import PackageSource


def _doc(host: str, packages: int = 6) -> dict:
    return {
        "version": 1, "host": host, "kernel": "6.1.0-1", "arch": "x86_64",
        "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12"},
        "packages": [
            {"name": f"p{i}", "version": f"1.{i}", "release": "1", "arch": "amd64",
             "epoch": "", "type": "deb"}
            for i in range(packages)
        ],
        "sources": [
            {"name": "p0", "version": "1.0", "release": "1", "arch": "amd64", "source": "src0",
             "source_version": "1.0-1"},
        ],
        "held": [{"name": "p1", "arch": "amd64"}],
    }  # fmt: skip


@pytest.fixture
def lists_read(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """The lengths of the package lists the native parser turned into records."""
    seen: Counter[int] = Counter()
    real = native._native_packages

    def counting(value: object) -> object:
        seen[len(value) if isinstance(value, list) else -1] += 1
        return real(value)

    monkeypatch.setattr(native, "_native_packages", counting)
    return seen


def _process(doc: dict, at: float) -> Host:
    store_report(doc["host"], NATIVE, doc, at)
    assert process_pending(at + 0.5) == {"processed": 1}
    return Host.get(Host.name == doc["host"])


def _own_set(doc: dict) -> int:
    """The stored set the document's packages make, found by their set digest."""
    digest = package_set_digest(parse_native(copy.deepcopy(doc)).packages)
    return PackageSet.get(PackageSet.digest == digest).id


def test_a_list_sent_again_is_not_read_and_names_the_same_set(db, lists_read) -> None:
    first = _process(_doc("a"), 1.0)
    assert lists_read == {6: 1}
    assert PackageListing.select().count() == 1
    again = _process(_doc("a"), 2.0)
    other = _process(_doc("b"), 3.0)  # another host, the same image

    assert lists_read == {6: 1, 0: 2}  # the two later lists were not read
    assert first.package_set_id == again.package_set_id == other.package_set_id
    assert other.package_set_id == _own_set(_doc("b"))
    assert PackageListing.select().count() == 1
    assert (other.held, other.kernel) == (first.held, "6.1.0-1")


def _set(path: str, value: object) -> Callable[[dict], None]:
    """A change to one field of the document (``packages.3.version``)."""

    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        target: object = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]  # type: ignore[index]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value  # type: ignore[index]

    return change


def _add_package(doc: dict) -> None:
    doc["packages"].append(dict(doc["packages"][0], name="extra"))


def _drop_package(doc: dict) -> None:
    del doc["packages"][2]


def _reorder_keys(doc: dict) -> None:
    doc["packages"][4] = dict(reversed(doc["packages"][4].items()))


def _duplicate_package(doc: dict) -> None:
    doc["packages"].append(dict(doc["packages"][1]))


CHANGES = {
    "version": _set("packages.3.version", "1.3+deb12u1"),
    "release": _set("packages.3.release", "2"),
    "arch": _set("packages.3.arch", "i386"),
    "epoch": _set("packages.3.epoch", "1"),
    "name": _set("packages.3.name", "q3"),
    "type": _set("packages.3.type", "rpm"),
    "added": _add_package,
    "removed": _drop_package,
    "repeated": _duplicate_package,  # the same set: another listing, parsed
    "keys in another order": _reorder_keys,  # likewise
    "source name": _set("sources.0.source", "src-other"),
    "source version": _set("sources.0.source_version", "1.0-2"),
    "source entry removed": _set("sources", []),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_list_that_differs_is_read_and_gets_its_own_set(db, lists_read, change: str) -> None:
    first = _process(_doc("a"), 1.0)
    doc = _doc("b")
    CHANGES[change](doc)
    assert listing_digest(doc["packages"], doc["sources"]) != listing_digest(
        _doc("b")["packages"], _doc("b")["sources"]
    )

    host = _process(doc, 2.0)

    assert lists_read[len(doc["packages"])] >= 1 and lists_read[0] == 0  # read whole
    assert host.package_set_id == _own_set(doc)
    same_set = change in ("repeated", "keys in another order") or change.startswith("source")
    assert (host.package_set_id == first.package_set_id) == same_set
    assert PackageListing.select().count() == 2
    if change.startswith("source"):  # the sources this report names are stored
        stored = {(s.source, s.version) for s in PackageSource.select()}
        wanted = {(s["source"], s["source_version"]) for s in doc["sources"]}
        assert wanted <= stored


def test_held_packages_are_read_from_a_report_whose_list_is_known(db, lists_read) -> None:
    """Holds are the host's, not its set's: a report that changes only its holds takes
    the known set and still sets the holds it sends."""
    first = _process(_doc("a"), 1.0)
    doc = _doc("a")
    doc["held"] = [{"name": "p4", "arch": "amd64"}, {"name": "p5"}]
    host = _process(doc, 2.0)
    assert lists_read[0] == 1  # the list was not read
    assert host.package_set_id == first.package_set_id
    assert host.held != first.held
    none = _process(dict(_doc("a"), held=[]), 3.0)
    assert none.held != host.held and none.package_set_id == first.package_set_id


def test_reports_of_one_list_in_a_batch_share_one_parse(db, lists_read) -> None:
    for i, name in enumerate(("a", "b", "c")):
        store_report(name, NATIVE, _doc(name), 1.0 + i)
    changed = _doc("d")
    changed["packages"][0]["version"] = "9"
    store_report("d", NATIVE, changed, 4.0)

    assert process_pending(5.0) == {"processed": 4}

    assert lists_read == {6: 2, 0: 2}  # a's list for a, b and c; d's own
    hosts = {h.name: h.package_set_id for h in Host.select()}
    assert hosts["a"] == hosts["b"] == hosts["c"] == _own_set(_doc("a"))
    assert hosts["d"] == _own_set(changed) != hosts["a"]


def test_a_listing_whose_set_is_gone_is_read_whole_again(db, lists_read) -> None:
    """A set deleted (``dbcheck --fix``, a mirror's oversized rows) takes its listings
    with it: they name it by digest, so even an id given again names nothing here."""
    first = _process(_doc("a"), 1.0)
    Host.update(package_set=None).execute()
    PackageSetMember.delete().execute()
    PackageSet.delete().execute()
    forget_cached_ids()
    # another set under the old id (SQLite gives the highest id again)
    database.execute_sql(
        raw_sql('INSERT INTO "package_set" (id, digest, size, created_at) VALUES (?, ?, ?, ?)'),
        (first.package_set_id, "0" * 64, 0, 1.0),
    )
    listing = listing_digest(_doc("a")["packages"], _doc("a")["sources"])
    assert listing is not None and sets_of_listings([listing]) == {}

    host = _process(_doc("b"), 2.0)

    assert lists_read == {6: 2}
    assert host.package_set_id == _own_set(_doc("b")) != first.package_set_id
    assert sets_of_listings([listing]) == {listing: host.package_set_id}


def test_force_reads_every_list_it_has_not_read_in_this_batch(db, lists_read) -> None:
    """--force re-runs reports after a fix, perhaps to the parser: no stored listing is
    taken (two reports of one list in one batch still share this parse)."""
    _process(_doc("a"), 1.0)
    _process(_doc("a"), 2.0)
    assert lists_read == {6: 1, 0: 1}
    assert process_pending(3.0, host_name="a", force=True) == {"processed": 2}
    assert lists_read == {6: 2, 0: 2}


def test_a_report_that_does_not_parse_stores_no_listing(db, lists_read) -> None:
    doc = _doc("a")
    doc["packages"][2]["version"] = ""
    store_report("a", NATIVE, doc, 1.0)
    assert process_pending(2.0) == {"failed": 1}
    assert PackageListing.select().count() == 0
    store_report("a", NATIVE, doc, 3.0)  # the same list: read, and failing, again
    assert process_pending(4.0) == {"failed": 1}
    assert lists_read == {6: 2}
