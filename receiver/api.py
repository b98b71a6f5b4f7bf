"""The three ways reports come in, and one path to the store.

- ``POST /api/v1/reports``: the native JSON report (``Authorization: Bearer``).
- ``POST /api/report/``: Patchman protocol 2 (``Authorization: Api-Key``), same answers
  as Patchman's server so its client sees no difference.
- ``POST /reports/upload/``: Patchman protocol 1 (form fields, no credentials): off
  unless the client's network is listed in ``protocol1_networks``, and never for a host
  that has its own token.

Every report is authenticated, bounded and decoded (JSON, or protocol 1's form), and
only the fields routing needs are checked before it is stored: the protocol and the
host name its credential must be allowed to write (``patchwatch.domain.reports.routing``).
A body that is not JSON, too large, or whose host name is wrong gets a 4xx naming the
field and nothing is written; a large one waits for the worker's large-report slot
(``patchwatch.receiver.gate``). The report is then stored in one short transaction together with
its authorisation (a gzip body as the agent sent it, since it is already compressed),
and acknowledged: a 2xx means stored. Processing parses it whole, right behind the
receiver when ``process_inline`` is on (``patchwatch.receiver.feed``), otherwise from the
scheduler; a report that proves invalid then is ``failed`` with the parser's reason,
and the native agent is told in the answer to its next report (``previous_report``).
Why not parse before answering: the full parse was the largest part of answering, and
processing did it again (docs/performance.md, "Acknowledging reports"). The report
that enrolls a host gets the host's own token in the answer (``patchwatch.store.tokens``).

What tells the three apart is one table row each (:class:`Adapter`): the protocol
(also the counter label), the authorisation scheme, how the body is read, the router,
the acknowledgement and the shape of a rejection; :func:`_ingest` is the one path.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
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
from patchwatch.domain.reports import route_native
from patchwatch.domain.reports import route_protocol1
from patchwatch.domain.reports import route_protocol2
from patchwatch.domain.settings import Settings
from patchwatch.receiver.errors import json_answer
from patchwatch.receiver.feed import FEED
from patchwatch.receiver.gate import LARGE_REPORT_BYTES
from patchwatch.receiver.gate import LARGE_REPORT_VALUES
from patchwatch.receiver.gate import Busy
from patchwatch.receiver.gate import ReportSlot
from patchwatch.receiver.ingest import address_allowed
from patchwatch.receiver.ingest import authenticate_request
from patchwatch.receiver.ingest import client_address
from patchwatch.receiver.ingest import discard_body
from patchwatch.receiver.ingest import read_body_and_sent
from patchwatch.receiver.metrics import REPORT_BYTES
from patchwatch.receiver.metrics import REPORTS_RECEIVED
from patchwatch.receiver.ratelimit import HostLimits
from patchwatch.receiver.ratelimit import RateLimited
from patchwatch.store.group_commit import GROUP
from patchwatch.store.models import Token
from patchwatch.store.report_queue import compress_body
from patchwatch.store.report_queue import insert_report
from patchwatch.store.report_queue import previous_failure
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


@dataclass(frozen=True, slots=True)
class Received:
    """A report as read from the request: the decoded document (or protocol 1's form),
    its size (decompressed), and the body to store with its size (see
    :func:`patchwatch.store.report_queue.insert_report`)."""

    doc: Any
    size: int
    stored: tuple[bytes, int]


def _read_report(slot: ReportSlot) -> Received:
    """Read, bound and decode a JSON report body, taking the large-report slot if it
    proves large (``patchwatch.receiver.gate``) before it is decoded. The body is stored as it
    came (gzip) or compressed once; the decoded document is read for routing only."""
    settings = _settings()
    body, sent = read_body_and_sent(request, settings, slot.take)
    values = count_values(body)
    if values > LARGE_REPORT_VALUES and values <= settings.max_report_values:
        slot.take()
    doc = decode_json(body, settings.max_report_values, values)
    stored = sent if sent is not None else compress_body(body)
    return Received(doc, len(body), (stored, len(body)))


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


@dataclass(frozen=True, slots=True)
class Accepted:
    """A stored report: its id, the host's own token when this report enrolled the
    host, and the host's previous report when it failed processing (told to the
    native agent in the answer)."""

    report_id: int
    issued: str | None = None
    previous_failed: dict[str, object] | None = None


def _accept(
    protocol: str,
    host: str,
    received: Received,
    token: Token | None,
    enrollment_key: str | None = None,
) -> Accepted:
    """Store the report (authorising ``token`` in the same transaction); the host's
    own token is issued only with a stored report (see ``patchwatch.store.tokens``).
    A native agent is also told whether its previous report failed processing: the
    receiver does not parse a report whole before answering, so this is where the
    host learns that its last one was invalid.

    The transaction is shared with other requests' (``patchwatch.store.group_commit``)
    and this returns once it is committed.

    :raises AuthError: 403 when the token may not write the host.
    """
    now = time.time()
    remote_addr = client_address(request, _settings())
    user_agent = request.headers.get("User-Agent", "")

    def write() -> Accepted:
        issued = None
        if token is not None:
            issued = authorize_host_write(
                token, host, now, enrollment_key, can_keep_token=protocol == NATIVE
            )
        body, size = received.stored
        token_id = token.id if token is not None else None
        report_id = insert_report(
            host, protocol, token_id, now, remote_addr, user_agent, body, size
        )
        previous = previous_failure(host, report_id) if protocol == NATIVE else None
        return Accepted(report_id, issued, previous)

    accepted = GROUP.run(write)
    REPORTS_RECEIVED.labels(protocol, "accepted").inc()
    log.info("accepted %s report %d for %s%s", protocol, accepted.report_id, host,
             "; enrolled it with its own token" if accepted.issued else "")  # fmt: skip
    return accepted


def _process_after(response: Response, report_id: int) -> Response:
    """When ``process_inline`` is on, tell the processing process that a report was
    stored (``patchwatch.pipeline.processor``, under ``serve``), or else hand it to the
    worker's own processing feed (``patchwatch.receiver.feed``); otherwise the
    scheduler takes it up.

    A large report the worker processes itself keeps its slot
    (``patchwatch.receiver.gate``) until it is processed: its records are in memory then.
    """
    if not _settings().process_inline:
        return response
    processor = current_app.config.get("PATCHWATCH_PROCESSOR")
    if processor is not None:
        processor.wake()
        return response
    slot = g.get("report_slot")
    if slot is not None and slot.held:
        g.slot_handed_over = True
        FEED.add(report_id, slot)
    else:
        FEED.add(report_id)
    return response


# what rejects a report (and is counted as such); anything else is the application's
REJECTED = (AuthError, TooLargeError, ParseError, Busy, RateLimited)
Rejection = AuthError | TooLargeError | ParseError | Busy | RateLimited

Reader = Callable[[ReportSlot], Received]
Answer = Callable[[str, Any, Accepted], Response]
ErrorShape = Callable[[Rejection], tuple[Response, int]]


@dataclass(frozen=True)
class Adapter:
    """How one protocol comes in: the row of the table that tells the three ingest
    endpoints apart, so that they share one path from request to stored report.

    ``scheme`` is the ``Authorization`` scheme, or None for a protocol sent without
    credentials (protocol 1: allowed by network, never for a host that has a token).
    ``read`` gives the decoded document, its size and the body to store, taking the
    large-report slot when it proves large; ``route`` checks the fields routing needs
    and gives the host name (processing parses the rest); ``answer`` is
    the acknowledgement; ``errors`` the shape of a rejection, whose counter label is
    :func:`rejection`. ``enrolls``: the report may carry an enrollment key and get
    the host's own token back.
    """

    protocol: str
    scheme: str | None
    read: Reader
    route: Callable[[Any], str]
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
    if isinstance(exc, RateLimited):
        return "rate_limited"
    return "malformed"


def _read_form(slot: ReportSlot) -> Received:
    """Protocol 1's form fields, taking the large-report slot before they are stored."""
    form = {key: request.form.get(key, "") for key in request.form}
    size = sum(map(len, form.values()))
    if size > LARGE_REPORT_BYTES:
        slot.take()
    try:
        raw = orjson.dumps(form)  # a tenth of json.dumps's time
    except orjson.JSONEncodeError:  # a lone surrogate: kept, for the parser to name
        text = json.dumps(form, separators=(",", ":"), ensure_ascii=False)
        raw = text.encode("utf-8", "surrogatepass")
    return Received(form, size, (compress_body(raw), len(raw)))


def _native_answer(host: str, _doc: Any, accepted: Accepted) -> Response:
    answer: dict[str, object] = {"status": "accepted", "report": accepted.report_id}
    if accepted.issued:
        # the host's own token from now on: shown this once, never stored in clear
        answer.update(host_token=accepted.issued, host=host)
    if accepted.previous_failed:
        answer["previous_report"] = accepted.previous_failed
    response = jsonify(answer)
    response.status_code = 202
    response.headers["Cache-Control"] = "no-store"
    return response


def _patchman2_answer(_host: str, _doc: Any, accepted: Accepted) -> Response:
    response = jsonify(
        status="accepted", report_id=accepted.report_id, message="Report queued for processing"
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


def _patchman1_answer(_host: str, form: dict[str, str], _accepted: Accepted) -> Response:
    if form.get("report", "").strip().lower() == "true":
        return Response(_echo(form), status=200, mimetype="text/plain")
    return Response(status=204)


NATIVE_IN = Adapter(NATIVE, "Bearer", _read_report, route_native, _native_answer, json_answer,
                    enrolls=True)  # fmt: skip
PATCHMAN2_IN = Adapter(
    PATCHMAN2, "Api-Key", _read_report, route_protocol2, _patchman2_answer, _patchman2_errors
)
PATCHMAN1_IN = Adapter(PATCHMAN1, None, _read_form, route_protocol1, _patchman1_answer, json_answer)


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
    """Authenticate, read, bound and route one report, store it, answer; count the outcome.

    A rejection (4xx, or 503 when the large-report slot stays taken) stores nothing.
    """
    settings = _settings()
    limits: HostLimits = current_app.config["PATCHWATCH_HOST_LIMITS"]
    now = time.time()
    try:
        token = _authenticate(adapter, settings, now)
        # a host token's host is known before its body is read: a flood costs no decoding
        early = token is not None and token.kind == "host" and bool(token.host_name)
        if early:
            limits.take(f"host:{token.host_name}", token.host_name)  # type: ignore[union-attr]
        header = request.headers.get(ENROLLMENT_KEY_HEADER)
        enrollment_key = check_enrollment_key(header) if adapter.enrolls else None
        received = adapter.read(_slot())
        host = adapter.route(received.doc)
        if not early:
            limits.take(f"host:{host}", host)
        if token is None and host_has_credential(host):
            raise AuthError(
                f"host {host!r} has a token; it must report with it (protocol 2 "
                "or the patchwatch agent)",
                403,
            )
        if token is not None and token.id is None:
            raise AuthError("admin tokens do not send reports", 403)
        accepted = _accept(adapter.protocol, host, received, token, enrollment_key)
    except REJECTED as exc:
        REPORTS_RECEIVED.labels(adapter.protocol, rejection(exc)).inc()
        if isinstance(exc, RateLimited):
            discard_body(request)  # read, so that the client reads the answer
        return adapter.errors(exc)
    REPORT_BYTES.observe(received.size)
    response = adapter.answer(host, received.doc, accepted)
    return _process_after(response, accepted.report_id)


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
