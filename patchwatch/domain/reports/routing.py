"""The few fields the receiver reads before it stores a report: its host, its protocol.

Why not the whole report: answering is the path a fleet reporting from one cron minute
meets, and a full parse there (every package line into a record) was the largest part
of a protocol-1 upload's handling, done again by processing. The receiver therefore
checks only what it needs to route the report (the protocol the endpoint speaks, and
the host name its credential must be allowed to write), stores the body, and answers;
processing parses it whole (``patchwatch.pipeline.prepared``). A report that then
proves invalid is ``failed`` with the parser's reason, shown on the report, in
``patchwatch_reports_stored{state="failed"}``, and to a native agent in the answer to
its next report.

Each function applies the same rules as its protocol's full parser to these fields,
with the same ``ParseError`` (field named), so what the receiver refuses now is what
it refused before, for these fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from patchwatch.domain.errors import ParseError
from patchwatch.domain.reports.fields import MAX_HOST
from patchwatch.domain.reports.fields import parse_hostname
from patchwatch.domain.reports.fields import storable
from patchwatch.domain.reports.protocol1 import protocol1_host


def route_native(doc: object) -> str:
    """The host name of a decoded native report (``version`` and ``host`` checked).

    :raises ParseError: not an object, version other than 1, host missing or invalid.
    """
    if not isinstance(doc, dict):
        raise ParseError("a report must be a JSON object")
    for key in ("version", "host"):
        if key not in doc:
            raise ParseError("is required", key)
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int | float) or version != 1:
        raise ParseError("unsupported report version; this server reads version 1", "version")
    return parse_hostname(doc["host"], "host")[0]


def route_protocol2(doc: object) -> str:
    """The host name of a decoded Patchman protocol-2 report (``protocol``, ``hostname``).

    :raises ParseError: as :func:`patchwatch.domain.reports.parse_protocol2` would for them.
    """
    if not isinstance(doc, dict):
        raise ParseError("must be an object")
    protocol = doc.get("protocol", 2)
    if protocol is not None and (isinstance(protocol, bool) or protocol not in (2, "2")):
        raise ParseError("protocol must be 2 on this endpoint", "protocol")
    name = doc.get("hostname")
    if name is None:
        raise ParseError("is required", "hostname")
    if not isinstance(name, str):
        raise ParseError("must be a string", "hostname")
    if not name.strip():
        raise ParseError("must not be empty", "hostname")
    if len(name) > MAX_HOST:
        raise ParseError(f"longer than {MAX_HOST} characters", "hostname")
    storable(name, "hostname")
    return parse_hostname(name.strip(), "hostname")[0]


def route_protocol1(form: Mapping[str, str]) -> str:
    """The host name of a Patchman protocol-1 form (``protocol``, ``host``).

    :raises ParseError: as :func:`patchwatch.domain.reports.parse_protocol1` would for them.
    """
    return protocol1_host(form)[0]
