"""How long a field may be, whichever door it came through: a host's report or a mirror.

Hosts and mirrors are both untrusted, and what either sends ends up in the same rows:
a package named by a mirror is the row a host's installed package is matched against.
So the bounds are stated once, here. ``patchwatch.domain.reports`` rejects a report that
breaks one (those of ``schemas/report-v1.json``); the repodata parsers skip and count
an index entry that breaks one (``patchwatch.domain.repodata.bounds``); ``patchwatch.store.models``
sizes the columns from them, so that a value that passed is one every database stores;
and ``dbcheck`` and a migration remove rows stored before the bounds held.

Why they matter beyond disk space: a package's fields are the key of the package
indexes, so one 50 MB name made every insert near it read 50 MB while holding the
write lock, a hundred times slower (docs/performance.md).
"""

from __future__ import annotations

# --- packages (reports and mirror indexes alike)
MAX_PACKAGE_NAME = 256
MAX_EPOCH = 16
MAX_VERSION = 256
MAX_RELEASE = 256
MAX_ARCH = 32

# --- repositories and mirrors
MAX_URL = 2048

# --- mirror index entries (what a refresh reads but a report never carries)
#: source package name (apt ``Source``) or source rpm file name
MAX_SOURCE = 1024
#: advisory (rpm-md updateinfo ``<update>``) fields, as stored
MAX_ADVISORY_ID = 255
MAX_ADVISORY_TYPE = 32
MAX_ADVISORY_SEVERITY = 32
MAX_ADVISORY_TITLE = 4096
MAX_ADVISORY_ISSUED = 64
MAX_CVE = 64
#: SUSE's kernel updates list a few hundred CVEs and a thousand or so packages
MAX_ADVISORY_CVES = 5_000
MAX_ADVISORY_PACKAGES = 20_000
#: the stored ``advisory.cves`` (the ids joined by spaces) is never longer than this
MAX_ADVISORY_CVES_TEXT = MAX_ADVISORY_CVES * (MAX_CVE + 1)
#: a single-line field of an apt Release file (Origin, Label, Suite, Description, ...)
MAX_RELEASE_FIELD = 8192
