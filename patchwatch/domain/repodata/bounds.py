"""Which index entries a refresh keeps: those whose every field is within its bound.

A mirror is as untrusted as a host, and what it lists becomes shared package rows
(``patchwatch.domain.limits`` says why a long field there hurts every later report). The
parsers check each entry (an apt stanza, an rpm-md ``<package>`` or ``<update>``)
here; one with a field over its bound, or with a character no database stores (NUL),
is left out and counted in a :class:`Skipped`, rather than stored, or allowed to fail
the whole index: the rest of a mirror's data is still worth having, and the count is
served as a metric so that an operator learns of it. An entry that is malformed
(a required field missing, a version that is not one) still fails the index, as
before: that is a broken mirror, not one odd package.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_SOURCE
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind

__all__ = [
    "MAX_EXAMPLES",
    "Skipped",
    "bounded_package",
    "field_problem",
    "package_problem",
    "short",
]

#: reasons kept per index: enough to say what is wrong, never a copy of the index
MAX_EXAMPLES = 3


@dataclass
class Skipped:
    """Entries of one index left out, and why (the first :data:`MAX_EXAMPLES` of them)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        """Count one entry left out; ``where`` names it (bounded by the caller)."""
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def summary(self) -> str:
        """One line for logs and the refresh result: how many, and the first reasons."""
        if not self.count:
            return ""
        noun = "entry" if self.count == 1 else "entries"
        more = " ..." if self.count > len(self.examples) else ""
        return f"skipped {self.count} {noun} ({'; '.join(self.examples)}{more})"


def short(text: str, size: int = 60) -> str:
    """Return ``text`` cut for a message: a 50 MB name is named by its first characters."""
    return text if len(text) <= size else f"{text[:size]}...({len(text)} characters)"


def field_problem(label: str, value: str, limit: int) -> str | None:
    """Say why ``value`` cannot be stored as the field ``label``, or None when it can."""
    if len(value) > limit:
        return f"{label} longer than {limit} characters"
    if "\x00" in value:
        return f"{label} contains a NUL character"
    return None


def package_problem(
    name: str,
    epoch: str,
    version: str,
    release: str,
    arch: str,
    source: str = "",
    filename: str = "",
) -> str | None:
    """Say which field of a package entry breaks its bound, or None when all are within."""
    for label, value, limit in (
        ("name", name, MAX_PACKAGE_NAME),
        ("epoch", epoch, MAX_EPOCH),
        ("version", version, MAX_VERSION),
        ("release", release, MAX_RELEASE),
        ("architecture", arch, MAX_ARCH),
        ("source", source, MAX_SOURCE),
        ("file name", filename, MAX_URL),
    ):
        problem = field_problem(label, value, limit)
        if problem is not None:
            return problem
    return None


def bounded_package(
    where: str,
    skipped: Skipped,
    kind: PackageKind,
    name: str,
    epoch: str,
    version: str,
    release: str,
    arch: str,
    source: str,
    filename: str,
) -> AvailablePackage | None:
    """An index's package entry, or None (counted in ``skipped``) when a field breaks its
    bound: what the apt and rpm-md parsers keep of each entry."""
    problem = package_problem(name, epoch, version, release, arch, source, filename)
    if problem is not None:
        skipped.add(where, problem)
        return None
    return AvailablePackage(Package(name, epoch, version, release, arch, kind), source, filename)
