"""One key per repository, whoever reports it (pure).

A repository's key is how reports from different hosts, agents and Patchman clients
find the same stored repository. It must not depend on who reports it:

- apt: ``deb URL SUITE COMPONENT``. The architecture is not part of it: the agent
  reports a source line (architecture only when the line restricts it, ``[arch=...]``),
  the Patchman client one index per architecture (``.../binary-amd64``), and both
  read the same source. The architectures a repository is read for are kept apart,
  in ``Repository.arch`` (:func:`merge_arches`).
- rpm-md and zypper: ``KIND ID ARCH URL``, because the same id (``baseos``) names
  different repositories on different releases.

Empty parts are left out (a key never ends in a space), URLs are spelled one way
(:func:`normalise_url`).
"""

from __future__ import annotations

from urllib.parse import urlsplit
from urllib.parse import urlunsplit

MAX_KEY = 1024  # Repository.key's column size
MAX_ARCHES = 32  # Repository.arch's


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, drop a trailing slash: one mirror, one spelling."""
    url = url.strip()
    parts = urlsplit(url)
    if not parts.scheme:
        return url.rstrip("/")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def repository_key(
    kind: str, repo_id: str, suite: str, component: str, arch: str, first_url: str
) -> str:
    """The canonical key of a repository (see the module docstring), at most 1,024 long."""
    if kind == "deb":
        parts = (kind, normalise_url(first_url), suite, component)
    else:
        parts = (kind, repo_id, arch, normalise_url(first_url))
    return " ".join(p for p in parts if p)[:MAX_KEY]


def merge_arches(stored: str, reported: str) -> str:
    """The architectures an apt repository is read for, once another host reports it.

    ``""`` means "those of the hosts that use it" and wins over any list (a host
    that reports the source without a restriction needs whatever it has installed);
    otherwise the union, comma-separated as ``refresh.deb_architectures`` reads it.
    """
    if not stored.strip() or not reported.strip():
        return ""
    arches = ",".join(sorted({a.strip() for a in f"{stored},{reported}".split(",") if a.strip()}))
    return arches if len(arches) <= MAX_ARCHES else ""  # too many to list: the hosts' own
