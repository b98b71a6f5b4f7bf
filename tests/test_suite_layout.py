"""The suite's own shape: test modules share through tests/support and conftest only.

A test module that imports another (or conftest) couples the two: moving or deleting
one breaks the other, and a fixture imported by name is silently shadowed. Helpers
belong in tests/support/, fixtures in tests/conftest.py.
"""

from __future__ import annotations

import ast

from tests.support.paths import ROOT

TESTS = ROOT / "tests"


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_test_module_imports_another_or_conftest() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in [*TESTS.glob("*.py"), *TESTS.glob("support/*.py")]
        for name in imported_modules(path)
        if name.split(".")[:2] == ["tests", "conftest"]
        or name.split(".")[-1].startswith("test_")
        or (name.startswith("tests.") and not name.startswith("tests.support"))
    }
    assert offenders == set()
