"""Request plumbing for ingest: bounded bodies, credentials and the client address."""

from __future__ import annotations

import hmac
import ipaddress
import time
import zlib
from collections.abc import Callable

from flask import Request
from werkzeug.exceptions import RequestTimeout

from patchwatch.domain.errors import AuthError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.settings import Settings
from patchwatch.receiver.gate import LARGE_REPORT_BYTES
from patchwatch.store.models import Token
from patchwatch.store.tokens import authenticate

BODY_DEADLINE_SECONDS = 60.0


def _read_stream(request: Request) -> bytes:
    """Read the body in chunks within an overall deadline.

    Flask enforces MAX_CONTENT_LENGTH (413) on the stream; a client trickling its body
    (or going silent: the socket has a receive timeout) gets a 408 instead of holding
    a thread.
    """
    started = time.monotonic()
    chunks = []
    try:
        while chunk := request.stream.read(65536):
            chunks.append(chunk)
            if time.monotonic() - started > BODY_DEADLINE_SECONDS:
                raise RequestTimeout("the request body arrived too slowly")
    except OSError:
        raise RequestTimeout("the client stopped sending the request body") from None
    return b"".join(chunks)


def _nothing() -> None:
    return None


def read_body(
    request: Request,
    settings: Settings,
    on_large: Callable[[], None] = _nothing,
    large: int = LARGE_REPORT_BYTES,
) -> bytes:
    """Return the request body, gunzipped, within the configured limits.

    ``on_large`` is called (and may raise) once the body as sent, or decompressed so
    far, is larger than ``large`` bytes: it takes the worker's large-report slot
    (``patchwatch.receiver.gate``), and decompression goes on only after it returns. The body
    as sent is read first (``max_report_bytes`` bounds it), so that a client sending
    slowly never holds the slot.

    :raises TooLargeError: body or decompressed body above its limit (413).
    :raises ParseError: a gzip body that is corrupt or truncated (400).
    """
    raw = _read_stream(request)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > settings.max_report_decompressed_bytes:
            raise TooLargeError("report body too large")
        if len(raw) > large:
            on_large()
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ParseError(f"unsupported Content-Encoding {encoding!r}", "headers")
    if len(raw) > large:
        on_large()
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    limit = settings.max_report_decompressed_bytes
    dec = zlib.decompressobj(wbits)
    try:
        out = dec.decompress(raw, min(large, limit) + 1)
        if len(out) > large and limit > large:
            on_large()
            out += dec.decompress(dec.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as exc:
        raise ParseError(f"body is not valid {encoding}: {exc}", "body") from None
    if len(out) > limit or dec.unconsumed_tail:
        raise TooLargeError(f"report is larger than {limit} bytes once decompressed")
    if not dec.eof:
        raise ParseError(f"{encoding} body is truncated", "body")
    return out


def credential(request: Request, scheme: str) -> str:
    """Return the credential of ``Authorization: <scheme> <value>``.

    :raises AuthError: 401 when it is missing or uses another scheme.
    """
    header = request.headers.get("Authorization", "")
    given, _, value = header.partition(" ")
    if not header:
        raise AuthError(f"missing Authorization header (expected '{scheme} <token>')")
    if given.lower() != scheme.lower() or not value.strip():
        raise AuthError(f"expected 'Authorization: {scheme} <token>'")
    return value.strip()


class StaticAdmin:
    """The operator-configured admin token (setting ``admin_token``), not in the database."""

    id = None
    kind = "admin"
    host_name = None
    prefix = "static-admin"


def authenticate_request(
    request: Request, settings: Settings, scheme: str, now: float
) -> Token | StaticAdmin:
    """Return the token (or the static admin) the request carries."""
    value = credential(request, scheme)
    if settings.admin_token and hmac.compare_digest(value.encode(), settings.admin_token.encode()):
        return StaticAdmin()
    return authenticate(value, now)


def client_address(request: Request, settings: Settings) -> str:
    """The client's address: the peer, or X-Forwarded-For's when the peer is a trusted proxy.

    The header is read right to left, skipping trusted proxies, so a client cannot
    choose its own address by sending a forged header.
    """
    peer = request.remote_addr or ""
    trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


def address_allowed(addr: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
