"""The three ways reports come in, and one path to the store.

- ``POST /api/v1/reports``: the native JSON report (``Authorization: Bearer``).
- ``POST /api/report/``: Patchman protocol 2 (``Authorization: Api-Key``), same answers
  as Patchman's server so its client sees no difference.
- ``POST /reports/upload/``: Patchman protocol 1 (form fields, no credentials): off
  unless the client's network is listed in ``protocol1_networks``, and never for a host
  that has its own token.

Every report is bounded and parsed before it is stored (so a malformed one gets a 400
naming the field and nothing is written; a large one waits for the worker's
large-report slot, ``receiver.gate``), stored in one short transaction together with
its authorisation, then acknowledged. The report that enrolls a host gets the host's
own token in the answer (``patchwatch.store.tokens``). Processing runs after the answer is
sent when ``process_inline`` is on.
"""

from __future__ import annotations

import logging
import time
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
from patchwatch.domain.records import HostReport
from patchwatch.domain.reports import parse_native
from patchwatch.domain.reports import parse_protocol1
from patchwatch.domain.reports import parse_protocol2
from patchwatch.domain.set_digest import package_set_digest
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import PATCHMAN1
from patchwatch.pipeline.processing import PATCHMAN2
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Report
from patchwatch.store.models import Token
from patchwatch.store.tokens import authorize_host_write
from patchwatch.store.tokens import check_enrollment_key
from patchwatch.store.tokens import host_has_credential
from receiver.gate import LARGE_REPORT_BYTES
from receiver.gate import LARGE_REPORT_VALUES
from receiver.gate import RETRY_AFTER_SECONDS
from receiver.gate import Busy
from receiver.gate import ReportSlot
from receiver.ingest import address_allowed
from receiver.ingest import authenticate_request
from receiver.ingest import client_address
from receiver.ingest import read_body
from receiver.metrics import PROCESSING_SECONDS
from receiver.metrics import REPORT_BYTES
from receiver.metrics import REPORTS_RECEIVED

log = logging.getLogger(__name__)

bp = Blueprint("ingest", __name__)

# sent by an enrolling agent: a secret of its own, kept before sending, that lets it
# ask for its host token again if the answer to its enrollment was lost
ENROLLMENT_KEY_HEADER = "X-Patchwatch-Enrollment-Key"


def _settings() -> Settings:
    return current_app.config["PATCHWATCH_SETTINGS"]  # type: ignore[no-any-return]


def _read_report(slot: ReportSlot) -> Any:
    """Read, bound and decode a JSON report body, taking the large-report slot if it
    proves large (``receiver.gate``) before it is parsed."""
    settings = _settings()
    body = read_body(request, settings, slot.take)
    values = count_values(body)
    if values > LARGE_REPORT_VALUES and values <= settings.max_report_values:
        slot.take()
    doc = decode_json(body, settings.max_report_values, values)
    g.report_size = len(body)
    return doc


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


def _busy(exc: Busy) -> tuple[Response, int, dict[str, str]]:
    return jsonify(error=str(exc)), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}


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


def _process_after(
    response: Response, host_name: str, report_id: int, report: HostReport
) -> Response:
    """Process the host's queued reports once the answer has gone out.

    A large report keeps its slot (``receiver.gate``) until it is processed: its
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
                process_pending(
                    time.time(),
                    host_name=host_name,
                    parsed={report_id: report},
                    claim_timeout=settings.report_claim_timeout_seconds,
                )
        except Exception:  # boundary: the report is stored; the scheduler will retry
            log.exception("inline processing failed for %s; left queued", host_name)
        finally:
            if slot is not None:
                slot.release()
        PROCESSING_SECONDS.observe(time.perf_counter() - started)

    if slot is not None:
        g.slot_handed_over = True
    response.call_on_close(run)
    return response


def _reject(protocol: str, result: str) -> None:
    REPORTS_RECEIVED.labels(protocol, result).inc()


@bp.post("/api/v1/reports")
def native_report() -> Response | tuple[Response, int]:
    settings = _settings()
    now = time.time()
    slot = _slot()
    try:
        token = authenticate_request(request, settings, "Bearer", now)
        enrollment_key = check_enrollment_key(request.headers.get(ENROLLMENT_KEY_HEADER))
        doc = _read_report(slot)
        report = parse_native(doc)
        if token.id is None:
            raise AuthError("admin tokens do not send reports", 403)
        report_id, issued = _accept(NATIVE, report, doc, token, enrollment_key)  # type: ignore[arg-type]
    except AuthError as exc:
        _reject(NATIVE, "unauthorized" if exc.status == 401 else "forbidden")
        return _auth_error(exc, "Bearer")
    except TooLargeError as exc:
        _reject(NATIVE, "too_large")
        return jsonify(error=str(exc)), 413
    except ParseError as exc:
        _reject(NATIVE, "malformed")
        return jsonify(error=exc.message, where=exc.where), 400
    except Busy as exc:
        _reject(NATIVE, "busy")
        return _busy(exc)
    REPORT_BYTES.observe(g.report_size)
    answer: dict[str, object] = {"status": "accepted", "report": report_id}
    if issued:
        # the host's own token from now on: shown this once, never stored in clear
        answer.update(host_token=issued, host=report.hostname)
    response = jsonify(answer)
    response.status_code = 202
    response.headers["Cache-Control"] = "no-store"
    return _process_after(response, report.hostname, report_id, report)


@bp.post("/api/report/")
def patchman2_report() -> Response | tuple[Response, int]:
    settings = _settings()
    now = time.time()
    slot = _slot()
    try:
        token = authenticate_request(request, settings, "Api-Key", now)
        doc = _read_report(slot)
        report = parse_protocol2(doc)
        if token.id is None:
            raise AuthError("admin tokens do not send reports", 403)
        report_id, _ = _accept(PATCHMAN2, report, doc, token)  # type: ignore[arg-type]
    except AuthError as exc:
        _reject(PATCHMAN2, "unauthorized" if exc.status == 401 else "forbidden")
        return jsonify(detail=str(exc)), 403  # Patchman answers 403 for any key problem
    except TooLargeError as exc:
        _reject(PATCHMAN2, "too_large")
        return jsonify(status="error", errors={"body": [str(exc)]}), 413
    except ParseError as exc:
        _reject(PATCHMAN2, "malformed")
        return jsonify(status="error", errors={exc.where or "body": [exc.message]}), 400
    except Busy as exc:
        _reject(PATCHMAN2, "busy")
        return _busy(exc)
    REPORT_BYTES.observe(g.report_size)
    response = jsonify(
        status="accepted", report_id=report_id, message="Report queued for processing"
    )
    response.status_code = 202
    return _process_after(response, report.hostname, report_id, report)


@bp.post("/reports/upload/")
def patchman1_report() -> Response | tuple[Response, int]:
    settings = _settings()
    addr = client_address(request, settings)
    if not address_allowed(addr, settings.protocol1_networks):
        _reject(PATCHMAN1, "forbidden")
        return jsonify(
            error="Patchman protocol 1 is not allowed from this address "
            "(setting protocol1_networks)"
        ), 403
    slot = _slot()
    try:
        form = {key: request.form.get(key, "") for key in request.form}
        if sum(map(len, form.values())) > LARGE_REPORT_BYTES:
            slot.take()  # before the fields are parsed into records
        report = parse_protocol1(form)
        if host_has_credential(report.hostname):
            raise AuthError(
                f"host {report.hostname!r} has a token; it must report with it (protocol 2 "
                "or the patchwatch agent)",
                403,
            )
    except AuthError as exc:
        _reject(PATCHMAN1, "forbidden")
        return jsonify(error=str(exc)), exc.status
    except ParseError as exc:
        _reject(PATCHMAN1, "malformed")
        return jsonify(error=exc.message, where=exc.where), 400
    except TooLargeError as exc:
        _reject(PATCHMAN1, "too_large")
        return jsonify(error=str(exc)), 413
    except Busy as exc:
        _reject(PATCHMAN1, "busy")
        return _busy(exc)
    REPORT_BYTES.observe(sum(len(v) for v in form.values()))
    report_id, _ = _accept(PATCHMAN1, report, form, None)
    if form.get("report", "").strip().lower() == "true":
        response = Response(_echo(form), status=200, mimetype="text/plain")
    else:
        response = Response(status=204)
    return _process_after(response, report.hostname, report_id, report)


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


def _auth_error(exc: AuthError, scheme: str) -> tuple[Response, int]:
    response = jsonify(error=str(exc))
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = f'{scheme} realm="patchwatch"'
    return response, exc.status
