"""Refresh repository mirrors: fetch, verify, parse, and store each mirror's index.

A mirror's stored package set is its *last good data*: the update computation
(``patchwatch.pipeline.hostupdates``) reads it, so a refresh replaces it only with data that
verified end to end, and a failure of any kind leaves it as it was and is counted on
the mirror (``failures_total``, ``consecutive_failures``, ``last_error``), which the
exporter serves. Nothing here disables a mirror: the next refresh tries again, and the
first one that works resets ``consecutive_failures``.

The package presents the entry points other layers call; each step lives in its own
module: ``run`` (which mirrors, when, side by side: ``refresh_all``,
``refresh_mirror``), ``apt``, ``rpmmd``, ``alpm`` and ``apk`` (fetch and verify one
format), ``fetched`` (what a fetch hands on, the conditional download of a top index
and the checks every format shares), ``security_feeds`` (the Arch and Alpine feeds a
pacman or apk refresh reads) and ``storing`` (one transaction per mirror's outcome).

Only mirrors an operator approved or whose URL matches ``mirror_url_patterns`` are read
(``patchwatch.store.approval``); each is read inside a fetch scope with its URL as origin and
its time box (``mirror_refresh_max_seconds``), so redirects, ``xml:base`` and the
entries of its mirrorlist or metalink are held to the fetch policy
(``patchwatch.domain.mirror_policy``) and a slow mirror ends in time. ``refresh_all`` reads
``refresh_concurrency`` mirrors side by side within the run's own time box.

Network I/O happens before any write transaction; each mirror's result is stored in one
transaction of its own, so a refresh never holds the database while it downloads and a
failing mirror never undoes another's work. Not done here: rpm ``modules`` metadata,
repomd signatures (``repo_gpgcheck``), metalink hashes of repomd.xml, and apt
``Packages.diff`` (pdiffs); see docs/mirrors.md.
"""

from patchwatch.pipeline.refresh.apt import deb_architectures
from patchwatch.pipeline.refresh.apt import trusted_keyrings
from patchwatch.pipeline.refresh.run import RefreshResult
from patchwatch.pipeline.refresh.run import refresh_all
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.pipeline.refresh.run import select_mirrors
from patchwatch.pipeline.refresh.run import summarize_results

__all__ = [
    "RefreshResult",
    "deb_architectures",
    "refresh_all",
    "refresh_mirror",
    "select_mirrors",
    "summarize_results",
    "trusted_keyrings",
]
