"""Listings of Patchman reports: protocol 1's ``packages`` text and protocol 2's
``packages`` array named by their digest as sent, and the set each made.

As for native reports (test_processing_listings.py): an unchanged re-report of a
Patchman client is processed without its list turned into records; a list that
differs in anything that makes a record must never be given another's set, nor may the
same packages sent through another protocol. Each case checks the host's set against
the set the report's own packages make, parsed independently. What a report carries
beside its list (holds, kernel, repositories) is read every time.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable

import pytest

from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.domain.protocols import PATCHMAN2
from patchwatch.domain.records import HeldPackage
from patchwatch.domain.reports import parse_native
from patchwatch.domain.reports import parse_protocol1
from patchwatch.domain.reports import parse_protocol2
from patchwatch.domain.reports import protocol1
from patchwatch.domain.reports import protocol2
from patchwatch.domain.set_digest import package_set_digest
from patchwatch.domain.updates import encode_holds
from patchwatch.pipeline.prepared import listing_of
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.models import Host
from patchwatch.store.models import PackageListing
from patchwatch.store.models import PackageSet
from tests.support.reports import BASE_P2
from tests.support.reports import load_form
from tests.support.reports import native_fixture

_PACKAGES = [
    # name, epoch, version, release, arch, type
    (f"p{i}", "1" if i == 2 else "", f"1.{i}", "1", "amd64", "deb")
    for i in range(6)
]


def _lines(packages: list[tuple[str, ...]] = _PACKAGES) -> str:
    return "".join(" ".join(f"'{f}'" for f in p) + "\n" for p in packages)


def _form(host: str, packages: str | None = None) -> dict[str, str]:
    form = load_form("patchman1-debian12")
    form["host"] = host
    form["packages"] = _lines() if packages is None else packages
    return form


def _json(host: str) -> dict:
    keys = ("name", "epoch", "version", "release", "arch", "type")
    return {
        **copy.deepcopy(BASE_P2),
        "hostname": host,
        "packages": [dict(zip(keys, p, strict=True)) for p in _PACKAGES],
    }


@pytest.fixture
def lists_read(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Which protocol's package lists the Patchman parsers turned into records."""
    seen: Counter[str] = Counter()
    for module, name, label in (
        (protocol1, "_protocol1_packages", "1"),
        (protocol2, "_protocol2_packages", "2"),
    ):
        real = getattr(module, name)

        def counting(*args: object, _real: Callable = real, _label: str = label) -> object:
            seen[_label] += 1
            return _real(*args)

        monkeypatch.setattr(module, name, counting)
    return seen


def _process(protocol: str, doc: dict, at: float) -> Host:
    host = doc.get("host") or doc.get("hostname")
    store_report(host, protocol, doc, at)
    assert process_pending(at + 0.5) == {"processed": 1}
    return Host.get(Host.name == host)


_PARSERS = {NATIVE: parse_native, PATCHMAN1: parse_protocol1, PATCHMAN2: parse_protocol2}


def _own_set(protocol: str, doc: dict) -> int:
    """The stored set the document's packages make, found by their set digest."""
    digest = package_set_digest(_PARSERS[protocol](copy.deepcopy(doc)).packages)
    return PackageSet.get(PackageSet.digest == digest).id


@pytest.mark.parametrize(
    ("protocol", "make"), [(PATCHMAN1, _form), (PATCHMAN2, _json)], ids=["protocol1", "protocol2"]
)
def test_a_patchman_list_sent_again_is_not_read_and_names_the_same_set(
    db, lists_read, protocol: str, make: Callable[[str], dict]
) -> None:
    label = protocol[-1]
    first = _process(protocol, make("a.example.com"), 1.0)
    assert lists_read == {label: 1}
    assert PackageListing.select().count() == 1
    again_doc = make("a.example.com")
    again_doc["kernel"] = "6.1.0-99-amd64"  # beside the list: still read
    again = _process(protocol, again_doc, 2.0)
    other = _process(protocol, make("b.example.com"), 3.0)  # another host, the same image

    assert lists_read == {label: 1}  # the two later lists were not read
    assert first.package_set_id == again.package_set_id == other.package_set_id
    assert other.package_set_id == _own_set(protocol, make("b.example.com"))
    assert PackageListing.select().count() == 1
    assert again.kernel == "6.1.0-99-amd64" != first.kernel


def _p1_line(index: int, field: int, value: str) -> Callable[[list[tuple[str, ...]]], None]:
    def change(packages: list[tuple[str, ...]]) -> None:
        fields = list(packages[index])
        fields[field] = value
        packages[index] = tuple(fields)

    return change


P1_CHANGES: dict[str, Callable[[list[tuple[str, ...]]], None]] = {
    "name": _p1_line(3, 0, "q3"),
    "epoch": _p1_line(3, 1, "1"),
    "epoch 0 written out": _p1_line(2, 1, "01"),  # the same package, another text
    "version": _p1_line(3, 2, "1.3+deb12u1"),
    "release": _p1_line(3, 3, "2"),
    "arch": _p1_line(3, 4, "i386"),
    "type": _p1_line(3, 5, "rpm"),
    "added": lambda ps: ps.append(("extra", "", "1", "1", "amd64", "deb")),
    "removed": lambda ps: ps.pop(2),
    "repeated": lambda ps: ps.append(ps[1]),
    "reordered": lambda ps: ps.reverse(),
    "category and repo": lambda ps: ps.__setitem__(4, (*ps[4], "admin", "main")),
}
P1_SAME_SET = {"epoch 0 written out", "repeated", "reordered", "category and repo"}


@pytest.mark.parametrize("change", sorted([*P1_CHANGES, "blank line", "spaces"]))
def test_a_protocol1_list_that_differs_is_read_and_gets_its_own_set(
    db, lists_read, change: str
) -> None:
    first = _process(PATCHMAN1, _form("a.example.com"), 1.0)
    packages = list(_PACKAGES)
    if change in P1_CHANGES:
        P1_CHANGES[change](packages)
    text = _lines(packages)
    if change == "blank line":
        text = "\n" + text
    elif change == "spaces":
        text = text.replace("' '", "'  '", 1)
    form = _form("b.example.com", text)
    assert listing_of(PATCHMAN1, form) != listing_of(PATCHMAN1, _form("b.example.com"))

    host = _process(PATCHMAN1, form, 2.0)

    assert lists_read == {"1": 2}  # read whole
    assert host.package_set_id == _own_set(PATCHMAN1, form)
    same_set = change in P1_SAME_SET or change in ("blank line", "spaces")
    assert (host.package_set_id == first.package_set_id) == same_set
    assert PackageListing.select().count() == 2


def _p2(index: int, key: str, value: object) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        doc["packages"][index][key] = value

    return change


P2_CHANGES: dict[str, Callable[[dict], None]] = {
    "name": _p2(3, "name", "q3"),
    "epoch": _p2(3, "epoch", "1"),
    "version": _p2(3, "version", "1.3+deb12u1"),
    "release": _p2(3, "release", "2"),
    "arch": _p2(3, "arch", "i386"),
    "type": _p2(3, "type", "rpm"),
    "plus encoded": _p2(3, "version", "1.3%2bdeb12u1"),
    "added": lambda d: d["packages"].append(dict(d["packages"][0], name="extra")),
    "removed": lambda d: d["packages"].pop(2),
    "repeated": lambda d: d["packages"].append(dict(d["packages"][1])),
    "keys in another order": lambda d: d["packages"].__setitem__(
        4, dict(reversed(d["packages"][4].items()))
    ),
    "category": _p2(4, "category", "admin"),
}
P2_SAME_SET = {"repeated", "keys in another order", "category"}


@pytest.mark.parametrize("change", sorted(P2_CHANGES))
def test_a_protocol2_list_that_differs_is_read_and_gets_its_own_set(
    db, lists_read, change: str
) -> None:
    first = _process(PATCHMAN2, _json("a.example.com"), 1.0)
    doc = _json("b.example.com")
    P2_CHANGES[change](doc)
    assert listing_of(PATCHMAN2, doc) != listing_of(PATCHMAN2, _json("b.example.com"))

    host = _process(PATCHMAN2, doc, 2.0)

    assert lists_read == {"2": 2}  # read whole
    assert host.package_set_id == _own_set(PATCHMAN2, doc)
    assert (host.package_set_id == first.package_set_id) == (change in P2_SAME_SET)
    assert PackageListing.select().count() == 2


def test_the_same_packages_in_three_protocols_share_a_set_never_a_listing(db, lists_read) -> None:
    keys = ("name", "epoch", "version", "release", "arch", "type")
    packages = [dict(zip(keys, p, strict=True)) for p in _PACKAGES]
    native = native_fixture(host="n.example.com", packages=packages)
    native.pop("sources", None)
    form = _form("one.example.com")
    doc = _json("two.example.com")
    docs = {NATIVE: native, PATCHMAN1: form, PATCHMAN2: doc}
    listings = {listing_of(protocol, d) for protocol, d in docs.items()}
    assert None not in listings and len(listings) == 3
    # a protocol 2 list whose JSON is a protocol 1 text hashes apart from that text
    assert listing_of(PATCHMAN2, {"packages": form["packages"]}) != listing_of(PATCHMAN1, form)

    hosts = [_process(protocol, d, 1.0 + i) for i, (protocol, d) in enumerate(docs.items())]

    assert lists_read == {"1": 1, "2": 1}  # each Patchman list read: no listing shared
    assert len({h.package_set_id for h in hosts}) == 1
    assert hosts[0].package_set_id == _own_set(PATCHMAN1, form)
    assert PackageListing.select().count() == 3


def _held_lines() -> str:
    packages: list[tuple[str, ...]] = list(_PACKAGES)
    packages[1] = (*packages[1], "hold ok installed")
    packages[4] = (*packages[4], "install ok installed")
    packages.append(("holdall", "", "1", "1", "amd64", "deb"))  # "hold" in a name only
    return _lines(packages)


def test_protocol1_holds_are_read_from_a_report_whose_list_is_known(db, lists_read) -> None:
    """Holds are the host's, not its set's: read from the same text every time."""
    form = _form("a.example.com", _held_lines())
    first = _process(PATCHMAN1, form, 1.0)
    assert first.held == encode_holds((HeldPackage("p1", "amd64"),))

    host = Host.get(Host.name == "a.example.com")
    Host.update(held="").where(Host.id == host.id).execute()  # forget them
    again = _process(PATCHMAN1, _form("a.example.com", _held_lines()), 2.0)
    other = _process(PATCHMAN1, _form("b.example.com", _held_lines()), 3.0)

    assert lists_read == {"1": 1}  # the later lists were not read, only their holds
    assert again.held == other.held == first.held
    assert again.package_set_id == other.package_set_id == first.package_set_id
    assert parse_protocol1(form, skip_packages=True).held == parse_protocol1(form).held


def test_a_stock_client_list_known_has_no_holds(db, lists_read) -> None:
    first = _process(PATCHMAN1, _form("a.example.com", _held_lines()), 1.0)
    plain = _process(PATCHMAN1, _form("b.example.com"), 2.0)
    again = _process(PATCHMAN1, _form("b.example.com"), 3.0)
    assert lists_read == {"1": 2}
    assert first.held and plain.held == again.held == encode_holds(())


def test_a_protocol1_report_that_does_not_parse_stores_no_listing(db, lists_read) -> None:
    form = _form("a.example.com", _lines() + "'broken' 'line'\n")
    store_report("a.example.com", PATCHMAN1, form, 1.0)
    assert process_pending(2.0) == {"failed": 1}
    store_report("a.example.com", PATCHMAN1, form, 3.0)
    assert process_pending(4.0) == {"failed": 1}
    assert lists_read == {"1": 2}
    assert PackageListing.select().count() == 0


def test_listing_of_a_list_that_is_not_one_is_none() -> None:
    assert listing_of(PATCHMAN1, {"packages": ["not text"]}) is None
    assert listing_of(PATCHMAN1, {"host": "a"}) is None
    assert listing_of(PATCHMAN2, {"packages": [{"name": "\ud800"}]}) is None
    assert listing_of(PATCHMAN2, ["packages"]) is None
