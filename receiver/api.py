"""The three ways reports come in, and one path to the store.

- ``POST /api/v1/reports``: the native JSON report (``Authorization: Bearer``).
- ``POST /api/report/``: Patchman protocol 2 (``Authorization: Api-Key``), same answers
  as Patchman's server so its client sees no difference.
- ``POST /reports/upload/``: Patchman protocol 1 (form fields, no credentials): off
  unless the client's network is listed in ``protocol1_networks``, and never for a host
  that has its own token.

Every report is bounded and parsed before it is stored (so a malformed one gets a 400
naming the field and nothing is written; a large one waits for the worker's
large-report slot, ``patchwatch.receiver.gate``), stored in one short transaction together with
its authorisation, then acknowledged. The report that enrolls a host gets the host's
own token in the answer (``patchwatch.store.tokens``). Processing runs after the answer is
sent when ``process_inline`` is on, from the record parsed here
(``patchwatch.pipeline.prepared.ReceivedReport``).

What tells the three apart is one table row each (:class:`Adapter`): the protocol
(also the counter label), the authorisation scheme, how the body is read, the parser,
the acknowledgement and the shape of a rejection; :func:`_ingest` is the one path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import g
from flask import jsonify
from flask import request

from patchwatch.domain.errors import AuthError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.jsondoc import count_values
from patchwatch.domain.jsondoc import decode_json
from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.domain.protocols import PATCHMAN2
from patchwatch.domain.records import HostReport
from patchwatch.domain.reports import parse_native
from patchwatch.domain.reports import parse_protocol1
from patchwatch.domain.reports import parse_protocol2
from patchwatch.domain.set_digest import package_set_digest
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.prepared import ReceivedReport
from patchwatch.pipeline.processing import process_received
from patchwatch.pipeline.processing import store_report
from patchwatch.receiver.errors import json_answer
from patchwatch.receiver.gate import LARGE_REPORT_BYTES
from patchwatch.receiver.gate import LARGE_REPORT_VALUES
from patchwatch.receiver.gate import Busy
from patchwatch.receiver.gate import ReportSlot
from patchwatch.receiver.ingest import address_allowed
from patchwatch.receiver.ingest import authenticate_request
from patchwatch.receiver.ingest import client_address
from patchwatch.receiver.ingest import read_body
from patchwatch.receiver.metrics import PROCESSING_SECONDS
from patchwatch.receiver.metrics import REPORT_BYTES
from patchwatch.receiver.metrics import REPORTS_RECEIVED
from patchwatch.store.db import database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Report
from patchwatch.store.models import Token
from patchwatch.store.tokens import authorize_host_write
from patchwatch.store.tokens import check_enrollment_key
from patchwatch.store.tokens import host_has_credential

log = logging.getLogger(__name__)

bp = Blueprint("ingest", __name__)

# sent by an enrolling agent: a secret of its own, kept before sending, that lets it
# ask for its host token again if the answer to its enrollment was lost
ENROLLMENT_KEY_HEADER = "X-Patchwatch-Enrollment-Key"


def _settings() -> Settings:
    return current_app.config["PATCHWATCH_SETTINGS"]


def _read_report(slot: ReportSlot) -> tuple[Any, int]:
    """Read, bound and decode a JSON report body (and its size), taking the
    large-report slot if it proves large (``patchwatch.receiver.gate``) before it is parsed."""
    settings = _settings()
    body = read_body(request, settings, slot.take)
    values = count_values(body)
    if values > LARGE_REPORT_VALUES and values <= settings.max_report_values:
        slot.take()
    return decode_json(body, settings.max_report_values, values), len(body)


def _slot() -> ReportSlot:
    """This request's claim on the large-report slot, released at the latest at teardown."""
    slot = ReportSlot()
    g.report_slot = slot
    return slot


@bp.teardown_app_request
def _release_slot(_exc: BaseException | None) -> None:
    slot = g.get("report_slot")
    if slot is not None and not g.get("slot_handed_over"):
        slot.release()


def _accept(
    protocol: str,
    report: HostReport,
    doc: object,
    token: Token | None,
    enrollment_key: str | None = None,
) -> tuple[int, str | None]:
    """Store the report (authorising ``token`` in the same transaction); return its id
    and the host's own token when this report enrolled the host (see
    ``patchwatch.store.tokens``), so that a token is issued only with a stored report.

    :raises AuthError: 403 when the token may not write the host.
    """
    now = time.time()
    digest = package_set_digest(report.packages) if protocol == NATIVE else ""
    try:
        row, issued = _store(protocol, report, doc, token, enrollment_key, now, digest)
    except RecursionError:  # decoded near the parser's depth, deeper than storing goes
        raise ParseError("body is nested too deeply", "body") from None
    REPORTS_RECEIVED.labels(protocol, "accepted").inc()
    log.info("accepted %s report %d for %s%s", protocol, row.id, report.hostname,
             "; enrolled it with its own token" if issued else "")  # fmt: skip
    return int(row.id), issued


def _store(
    protocol: str,
    report: HostReport,
    doc: object,
    token: Token | None,
    enrollment_key: str | None,
    now: float,
    digest: str,
) -> tuple[Report, str | None]:
    issued = None
    with write_transaction():
        if token is not None:
            issued = authorize_host_write(
                token, report.hostname, now, enrollment_key, can_keep_token=protocol == NATIVE
            )
        row = store_report(
            report.hostname,
            protocol,
            doc,
            now,
            token_id=token.id if token is not None else None,
            remote_addr=client_address(request, _settings()),
            user_agent=request.headers.get("User-Agent", ""),
            # only native reports are read without their package list (process_pending)
            packages_digest=digest,
        )
    return row, issued


def _process_after(response: Response, received: ReceivedReport) -> Response:
    """Process the host's queued reports once the answer has gone out.

    A large report keeps its slot (``patchwatch.receiver.gate``) until it is processed: its
    records are still in memory until then.
    """
    settings = _settings()
    slot = g.get("report_slot")
    if not settings.process_inline:
        return response

    def run() -> None:
        started = time.perf_counter()
        try:
            with database.connection_context():
                process_received(received, time.time())
        except Exception:  # boundary: the report is stored; the scheduler will retry
            log.exception("inline processing failed for %s; left queued", received.host_name)
        finally:
            if slot is not None:
                slot.release()
        PROCESSING_SECONDS.observe(time.perf_counter() - started)

    if slot is not None:
        g.slot_handed_over = True
    response.call_on_close(run)
    return response


# what rejects a report (and is counted as such); anything else is the application's
REJECTED = (AuthError, TooLargeError, ParseError, Busy)
Rejection = AuthError | TooLargeError | ParseError | Busy

Reader = Callable[[ReportSlot], tuple[Any, int]]
Answer = Callable[[HostReport, Any, int, str | None], Response]
ErrorShape = Callable[[Rejection], tuple[Response, int]]


@dataclass(frozen=True)
class Adapter:
    """How one protocol comes in: the row of the table that tells the three ingest
    endpoints apart, so that they share one path from request to stored report.

    ``scheme`` is the ``Authorization`` scheme, or None for a protocol sent without
    credentials (protocol 1: allowed by network, never for a host that has a token).
    ``read`` gives the decoded document and its size, taking the large-report slot
    when it proves large; ``parse`` turns the document into a record; ``answer`` is
    the acknowledgement; ``errors`` the shape of a rejection, whose counter label is
    :func:`rejection`. ``enrolls``: the report may carry an enrollment key and get
    the host's own token back.
    """

    protocol: str
    scheme: str | None
    read: Reader
    parse: Callable[[Any], HostReport]
    answer: Answer
    errors: ErrorShape
    enrolls: bool = False


def rejection(exc: Rejection) -> str:
    """The ``result`` label of ``patchwatch_reports_received_total`` for a rejection."""
    if isinstance(exc, AuthError):
        return "unauthorized" if exc.status == 401 else "forbidden"
    if isinstance(exc, TooLargeError):
        return "too_large"
    if isinstance(exc, Busy):
        return "busy"
    return "malformed"


def _read_form(slot: ReportSlot) -> tuple[dict[str, str], int]:
    """Protocol 1's form fields, taking the large-report slot before they are parsed."""
    form = {key: request.form.get(key, "") for key in request.form}
    size = sum(map(len, form.values()))
    if size > LARGE_REPORT_BYTES:
        slot.take()
    return form, size


def _native_answer(report: HostReport, _doc: Any, report_id: int, issued: str | None) -> Response:
    answer: dict[str, object] = {"status": "accepted", "report": report_id}
    if issued:
        # the host's own token from now on: shown this once, never stored in clear
        answer.update(host_token=issued, host=report.hostname)
    response = jsonify(answer)
    response.status_code = 202
    response.headers["Cache-Control"] = "no-store"
    return response


def _patchman2_answer(
    _report: HostReport, _doc: Any, report_id: int, _issued: str | None
) -> Response:
    response = jsonify(
        status="accepted", report_id=report_id, message="Report queued for processing"
    )
    response.status_code = 202
    return response


def _patchman2_errors(exc: Rejection) -> tuple[Response, int]:
    """Patchman's server's answers, so that its client sees no difference."""
    if isinstance(exc, AuthError):
        return jsonify(detail=str(exc)), 403  # Patchman answers 403 for any key problem
    if isinstance(exc, TooLargeError):
        return jsonify(status="error", errors={"body": [str(exc)]}), 413
    if isinstance(exc, ParseError):
        return jsonify(status="error", errors={exc.where or "body": [exc.message]}), 400
    return json_answer(exc)


def _patchman1_answer(
    _report: HostReport, form: dict[str, str], _report_id: int, _issued: str | None
) -> Response:
    if form.get("report", "").strip().lower() == "true":
        return Response(_echo(form), status=200, mimetype="text/plain")
    return Response(status=204)


NATIVE_IN = Adapter(NATIVE, "Bearer", _read_report, parse_native, _native_answer, json_answer,
                    enrolls=True)  # fmt: skip
PATCHMAN2_IN = Adapter(
    PATCHMAN2, "Api-Key", _read_report, parse_protocol2, _patchman2_answer, _patchman2_errors
)
PATCHMAN1_IN = Adapter(PATCHMAN1, None, _read_form, parse_protocol1, _patchman1_answer, json_answer)


def _authenticate(adapter: Adapter, settings: Settings, now: float) -> Token | None:
    """The token the request carries (the static admin token too: refused once the
    report is parsed); None for protocol 1 from an allowed network."""
    if adapter.scheme is not None:
        return authenticate_request(request, settings, adapter.scheme, now)  # type: ignore[return-value]
    if not address_allowed(client_address(request, settings), settings.protocol1_networks):
        raise AuthError(
            "Patchman protocol 1 is not allowed from this address (setting protocol1_networks)",
            403,
        )
    return None


def _ingest(adapter: Adapter) -> Response | tuple[Response, int]:
    """Authenticate, read, bound and parse one report, store it, answer; count the outcome.

    A rejection (4xx, or 503 when the large-report slot stays taken) stores nothing.
    """
    settings = _settings()
    now = time.time()
    try:
        token = _authenticate(adapter, settings, now)
        header = request.headers.get(ENROLLMENT_KEY_HEADER)
        enrollment_key = check_enrollment_key(header) if adapter.enrolls else None
        doc, size = adapter.read(_slot())
        report = adapter.parse(doc)
        if token is None and host_has_credential(report.hostname):
            raise AuthError(
                f"host {report.hostname!r} has a token; it must report with it (protocol 2 "
                "or the patchwatch agent)",
                403,
            )
        if token is not None and token.id is None:
            raise AuthError("admin tokens do not send reports", 403)
        report_id, issued = _accept(adapter.protocol, report, doc, token, enrollment_key)
    except REJECTED as exc:
        REPORTS_RECEIVED.labels(adapter.protocol, rejection(exc)).inc()
        return adapter.errors(exc)
    REPORT_BYTES.observe(size)
    response = adapter.answer(report, doc, report_id, issued)
    return _process_after(response, ReceivedReport(report_id, report.hostname, report))


@bp.post("/api/v1/reports")
def native_report() -> Response | tuple[Response, int]:
    return _ingest(NATIVE_IN)


@bp.post("/api/report/")
def patchman2_report() -> Response | tuple[Response, int]:
    return _ingest(PATCHMAN2_IN)


@bp.post("/reports/upload/")
def patchman1_report() -> Response | tuple[Response, int]:
    return _ingest(PATCHMAN1_IN)


def _echo(form: dict[str, str]) -> str:
    """The text Patchman's server echoes when the client asks for ``report=true``."""
    lines = [f"{key}: {form.get(key, '')}" for key in
             ("host", "os", "kernel", "report", "tags", "protocol", "reboot")]  # fmt: skip
    for title, key in (("repos", "repos"), ("modules", "modules")):
        lines.append(f"{title}:")
        lines += [f" {line}" for line in form.get(key, "").splitlines() if line.strip()]
    lines.append("packages:")
    for line in form.get("packages", "").splitlines():
        if line.strip():
            lines.append(" " + " | ".join(line.replace("'", "").split(" ")))
    for title, key in (("security updates", "sec_updates"), ("bugfix updates", "bug_updates")):
        lines.append(f"{title}:")
        lines += [f" {line}" for line in form.get(key, "").splitlines() if line.strip()]
    return "\n".join(lines) + "\n"
