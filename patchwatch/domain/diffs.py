"""Compare two hosts' inventories: records in, a diff record and its text out.

Why two hosts differ is the first question when one of a pair of "identical" machines
has updates the other has not. The comparison is pure so that the CLI, the API and the
tests share it; loading the two hosts from the store is ``patchwatch.inventory.hosts``'s job.

Packages are compared per (name, architecture). A host can hold several versions of
one name (rpm kernels, ``gpg-pubkey``), so a name whose single version differs on each
side is one *changed* entry, and anything else that differs is listed as only on one
side. Nothing here reads a database, the clock or the network.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

PackageEntry = tuple[str, str, str]  # (name, arch, version string)


@dataclass(frozen=True)
class HostInventory:
    """What a host diff compares: the host's identity, its packages, its repositories."""

    name: str
    os: str
    arch: str
    kernel: str
    packages: tuple[PackageEntry, ...]
    repositories: tuple[str, ...]  # repository keys


@dataclass(frozen=True)
class VersionChange:
    """A package both hosts have in one different version each."""

    name: str
    arch: str
    version_a: str
    version_b: str


@dataclass(frozen=True)
class HostDiff:
    """How host ``b`` differs from host ``a`` (``a`` is the "-" side, as in diff(1))."""

    a: str
    b: str
    attributes: tuple[tuple[str, str, str], ...]  # (os|arch|kernel, value on a, value on b)
    only_a: tuple[PackageEntry, ...]
    only_b: tuple[PackageEntry, ...]
    changed: tuple[VersionChange, ...]
    repositories_only_a: tuple[str, ...]
    repositories_only_b: tuple[str, ...]

    @property
    def identical(self) -> bool:
        """Tell whether the two hosts have nothing that differs (their names aside)."""
        return not (
            self.attributes
            or self.only_a
            or self.only_b
            or self.changed
            or self.repositories_only_a
            or self.repositories_only_b
        )


def _versions(packages: tuple[PackageEntry, ...]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, arch, version in packages:
        out[(name, arch)].add(version)
    return out


def compute_host_diff(a: HostInventory, b: HostInventory) -> HostDiff:
    """Return what differs between two hosts' OS, architecture, kernel, packages, repos."""
    attributes = tuple(
        (label, va, vb)
        for label, va, vb in (("os", a.os, b.os), ("arch", a.arch, b.arch),
                              ("kernel", a.kernel, b.kernel))
        if va != vb
    )  # fmt: skip
    va, vb = _versions(a.packages), _versions(b.packages)
    only_a: list[PackageEntry] = []
    only_b: list[PackageEntry] = []
    changed: list[VersionChange] = []
    for key in sorted(va.keys() | vb.keys()):
        name, arch = key
        left, right = va.get(key, set()), vb.get(key, set())
        extra_a, extra_b = sorted(left - right), sorted(right - left)
        if len(extra_a) == 1 and len(extra_b) == 1:
            changed.append(VersionChange(name, arch, extra_a[0], extra_b[0]))
            continue
        only_a.extend((name, arch, v) for v in extra_a)
        only_b.extend((name, arch, v) for v in extra_b)
    repos_a, repos_b = set(a.repositories), set(b.repositories)
    return HostDiff(
        a=a.name, b=b.name, attributes=attributes, only_a=tuple(only_a),
        only_b=tuple(only_b), changed=tuple(changed),
        repositories_only_a=tuple(sorted(repos_a - repos_b)),
        repositories_only_b=tuple(sorted(repos_b - repos_a)),
    )  # fmt: skip


def format_host_diff(diff: HostDiff) -> list[str]:
    """Render a diff the way diff(1) reads: ``-`` lines are host a's, ``+`` host b's.

    Packages are listed in name order with changed versions as a ``-``/``+`` pair, so
    the text can be read top to bottom or grepped (``grep '^+ '``).
    """
    lines = [f"--- {diff.a}", f"+++ {diff.b}"]
    if diff.identical:
        lines.append("no differences")
        return lines
    for label, va, vb in diff.attributes:
        lines += [f"@@ {label} @@", f"- {va or '(none)'}", f"+ {vb or '(none)'}"]
    if diff.only_a or diff.only_b or diff.changed:
        summary = (
            f"{len(diff.only_a)} only on -, {len(diff.only_b)} only on +, "
            f"{len(diff.changed)} in another version"
        )
        lines.append(f"@@ packages: {summary} @@")
        entries: list[tuple[str, str, int, str]] = []
        for name, arch, version in diff.only_a:
            entries.append((name, arch, 0, f"- {name} {version} {arch}"))
        for name, arch, version in diff.only_b:
            entries.append((name, arch, 1, f"+ {name} {version} {arch}"))
        for c in diff.changed:
            entries.append((c.name, c.arch, 0, f"- {c.name} {c.version_a} {c.arch}"))
            entries.append((c.name, c.arch, 1, f"+ {c.name} {c.version_b} {c.arch}"))
        lines += [text for *_key, text in sorted(entries)]
    else:
        lines.append("@@ packages: no differences @@")
    if diff.repositories_only_a or diff.repositories_only_b:
        lines.append("@@ repositories @@")
        lines += [f"- {key}" for key in diff.repositories_only_a]
        lines += [f"+ {key}" for key in diff.repositories_only_b]
    else:
        lines.append("@@ repositories: no differences @@")
    return lines


def host_diff_dict(diff: HostDiff) -> dict[str, object]:
    """Return the diff as JSON-able data (the API's and ``--format json``'s shape)."""

    def pkgs(entries: tuple[PackageEntry, ...]) -> list[dict[str, str]]:
        return [{"name": n, "arch": a, "version": v} for n, a, v in entries]

    return {
        "a": diff.a,
        "b": diff.b,
        "identical": diff.identical,
        "attributes": [{"attribute": k, "a": va, "b": vb} for k, va, vb in diff.attributes],
        "packages": {
            "only_a": pkgs(diff.only_a),
            "only_b": pkgs(diff.only_b),
            "changed": [
                {"name": c.name, "arch": c.arch, "a": c.version_a, "b": c.version_b}
                for c in diff.changed
            ],
        },
        "repositories": {
            "only_a": list(diff.repositories_only_a),
            "only_b": list(diff.repositories_only_b),
        },
    }
