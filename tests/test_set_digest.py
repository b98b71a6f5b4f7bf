"""The set digest: pure, in the domain layer, a hash of the members' key lines.

Processing names a report's package set by this digest, and two reports with the same builds in
any order and with repeats must name one set.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.set_digest import package_set_digest
from patchwatch.domain.set_digest import set_digest

ROOT = Path(__file__).resolve().parent.parent


def _pkg(name: str, version: str, arch: str = "amd64") -> Package:
    return Package(name, "", version, "1", arch, PackageKind.DEB)


def test_digest_is_sha256_of_the_sorted_key_lines_not_of_ids() -> None:
    packages = [_pkg("zlib1g", "1.2.13"), _pkg("bash", "5.2.15"), _pkg("bash", "5.2.15")]
    # an independent oracle: the documented bytes, built field by field
    lines = sorted(
        "\x1f".join(("deb", p.name, p.epoch, p.version, p.release, p.arch)) for p in set(packages)
    )
    expected = hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()
    assert package_set_digest(packages) == expected
    assert set_digest(reversed(packages)) == (expected, 2)
    assert package_set_digest([]) == hashlib.sha256(b"").hexdigest()


def test_the_receiver_neither_digests_nor_stores_package_sets() -> None:
    """The receiver stores a report's body and answers; naming and storing its package
    set is processing's (``patchwatch.store.package_sets``), so no receiver module
    imports the set storage or the digest."""
    for path in (ROOT / "receiver").rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "patchwatch.store.package_sets" not in modules, path
        assert "patchwatch.domain.set_digest" not in modules, path


def test_a_listing_digest_is_the_lists_as_sent_under_the_parsing_rules() -> None:
    """What names a report's lists before they are parsed: the arrays written back as
    JSON after the rules' tag, so that new parsing rules never meet an old listing."""
    import orjson

    from patchwatch.domain.set_digest import LISTING_RULES
    from patchwatch.domain.set_digest import listing_digest

    packages = [{"name": "bash", "version": "5.2.15", "arch": "amd64", "type": "deb"}]
    raw = LISTING_RULES + orjson.dumps([packages, None])
    assert listing_digest(packages, None) == hashlib.sha256(raw).hexdigest()
    assert listing_digest(packages, []) != listing_digest(packages, None)
    reordered = [dict(reversed(packages[0].items()))]
    assert listing_digest(reordered, None) != listing_digest(packages, None)
    assert listing_digest([{"name": "\ud800"}], None) is None  # cannot be written back
