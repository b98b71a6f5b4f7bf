"""Turn a host report, in any of the three wire formats, into one ``HostReport``.

The receiver stores raw reports first and the scheduler may re-process them later
without Flask, so parsing lives here as pure functions, one module per protocol:
``native.parse_native`` (our JSON, ``schemas/report-v1.json``),
``protocol1.parse_protocol1`` (Patchman's multipart form with its quoted line
grammar) and ``protocol2.parse_protocol2`` (Patchman's JSON); ``fields`` holds the
limits and normalisations they share, ``patchman`` what the two Patchman protocols
share, ``memo`` the parsed-package memo, and ``routing`` the few fields the receiver
reads before storing a report (its host name), leaving the rest to processing. This
package presents the entry points other layers call.

Each parser either returns a complete record or raises ``ParseError`` whose ``where``
names the field (``packages[12].version``) or the line (``packages line 12``), so a
400 can tell the sender what to fix. Nothing else escapes, whatever the input: the
receiver must never answer 500 to a bad report.

Normalisations shared by all protocols (so one host reporting through two protocols
yields the same rows):

- host names are lower-cased, one trailing dot is dropped, and the domain (text after
  the first dot, "" when none) goes to ``extra["domain"]``;
- epochs are canonical numbers: dpkg prints none for epoch 0, rpm prints 0, so a deb
  package without epoch has ``epoch == ""`` and an rpm one ``epoch == "0"``; "007"
  becomes "7" because both package managers compare epochs as integers;
- package names keep their case (rpm names such as ``NetworkManager`` must match the
  repository metadata; Patchman lower-cases them and then cannot);
- identical packages, repositories or tags are reported once;
- strings that no database can store (NUL, lone surrogates) are rejected.

Patchman quirks fixed on the way in (reference section 12): an empty ``repos`` field
or list means "not collected" (``repositories is None``, the host keeps its previous
ones) instead of wiping them; ``%2b`` in protocol-2 package fields is a ``+``; apt's
two-token update lines are read, not misaligned; reported updates keep their package
format; unsupported package and repository types (Arch, Gentoo) are counted in
``extra`` instead of failing the report.

This package deliberately does not: decode bytes or JSON, decompress, authenticate,
look anything up, compare versions, or decide the host's final reboot flag.
"""

from patchwatch.domain.reports.fields import parse_hostname
from patchwatch.domain.reports.native import parse_native
from patchwatch.domain.reports.protocol1 import parse_protocol1
from patchwatch.domain.reports.protocol2 import parse_protocol2
from patchwatch.domain.reports.routing import route_native
from patchwatch.domain.reports.routing import route_protocol1
from patchwatch.domain.reports.routing import route_protocol2

__all__ = [
    "parse_hostname",
    "parse_native",
    "parse_protocol1",
    "parse_protocol2",
    "route_native",
    "route_protocol1",
    "route_protocol2",
]
