"""API tokens: created, checked and revoked here; only a hash of the secret is stored.

A token reads ``pw_<prefix>_<secret>``. The prefix (public, unique) finds the row; the
secret is compared by SHA-256 in constant time. The secret has 256 bits of entropy, so a
fast hash is enough (no password stretching needed), and a leaked database does not
leak usable tokens.

Kinds: ``host`` writes one named host; ``enroll`` enrolls new hosts; ``admin`` reads
the API and manages the server, and does not write reports; ``viewer`` reads (the web
console and the read API) and changes nothing.

One credential per host. Every host of a fleet holds the enrollment token, so a host
bound to it could be overwritten, its pending security updates hidden, by any other
host. Instead, the report that enrolls a host gets the host its own token in the
answer (:func:`authorize_host_write` returns it), and from then on only that token
writes the host. The binding (``HostCredential``) outlives revocation:

- revoking an enrollment token stops new enrollments and nothing else;
- revoking a host token leaves the host bound to it (its reports are refused, and
  neither an enrollment token nor credential-less protocol 1 can take the host)
  until an operator releases it (:func:`release_host`) or gives it a new token.

An agent that lost the answer to its enrollment (a timeout after the commit) may ask
again with the enrollment token and the *enrollment key* it sent the first time (a
secret it kept before sending): a host whose token was not revoked is then given a
fresh one, the old one revoked. Hosts bound to an enrollment token before this
scheme keep reporting with it until their agent sends an enrollment key, which swaps
the binding for a token of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from peewee import IntegrityError

from patchwatch.domain.errors import AuthError
from patchwatch.domain.errors import BoundError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.store.db import database
from patchwatch.store.db import raw_sql
from patchwatch.store.db import write_transaction
from patchwatch.store.models import HostCredential
from patchwatch.store.models import Token

KINDS = ("host", "enroll", "admin", "viewer")
CONSOLE_KINDS = ("admin", "viewer")  # the kinds that sign in to the web console
PREFIX_BYTES = 6
SECRET_BYTES = 32
MIN_ENROLLMENT_KEY = 32  # characters; the agent sends 43 (32 random bytes, base64)
MAX_ENROLLMENT_KEY = 128


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_live(token: Token, now: float) -> bool:
    """Neither revoked nor expired."""
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


def describe_token(token: Token) -> str:
    """``host token 3f2a... (web1)`` for messages: kind, prefix, state, never the secret."""
    state = " (revoked)" if token.revoked_at is not None else ""
    return f"{token.kind} token {token.prefix}{state}"


def _new_token(
    kind: str, now: float, host_name: str | None, comment: str, expires_at: float | None
) -> tuple[Token, str]:
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    token = Token.create(
        prefix=prefix,
        secret_hash=_hash(secret),
        kind=kind,
        host_name=host_name,
        comment=comment,
        created_at=now,
        expires_at=expires_at,
    )
    return token, f"pw_{prefix}_{secret}"


def _bind(host_name: str, token: Token, now: float, key_hash: str = "") -> None:
    """Make ``token`` the host's one credential (replacing the binding, if any)."""
    HostCredential.delete().where(HostCredential.host_name == host_name).execute()
    HostCredential.create(host_name=host_name, token=token, bound_at=now, enroll_key_hash=key_hash)


def _revoke_host_token(token: Token, now: float) -> None:
    if token.kind == "host" and token.revoked_at is None:
        Token.update(revoked_at=now).where(Token.id == token.id).execute()


def create_token(
    kind: str,
    now: float,
    host_name: str | None = None,
    comment: str = "",
    expires_at: float | None = None,
    *,
    force: bool = False,
) -> tuple[Token, str]:
    """Create a token and return it with its plaintext (shown once, never stored).

    A host token becomes the host's only credential. When the host is bound to a
    live token already, its agent would be refused from now on: that takes ``force``
    (the replaced host token is then revoked).

    :raises BoundError: the host has a live credential and ``force`` is false.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    if (kind == "host") != bool(host_name):
        raise ValueError("a host token needs a host name, and only a host token has one")
    with write_transaction():
        if host_name:
            binding = current_binding(host_name)
            if binding is not None and is_live(binding.token, now) and not force:
                raise BoundError(
                    f"host {host_name} is bound to {describe_token(binding.token)}; a new "
                    "token would refuse its agent's next reports (pass --force to replace "
                    "it: the old host token is revoked)"
                )
            if binding is not None:
                _revoke_host_token(binding.token, now)
        token, plaintext = _new_token(kind, now, host_name, comment, expires_at)
        if host_name:
            _bind(host_name, token, now)
    return token, plaintext


def current_binding(host_name: str) -> HostCredential | None:
    """The host's binding with its token, or None when no credential writes it yet."""
    return (
        HostCredential.select(HostCredential, Token)
        .join(Token)
        .where(HostCredential.host_name == host_name)
        .first()
    )


# Each report's credential is read, and its host's binding, before it is stored: one
# statement each, written once here, because building them as peewee queries (with a
# model per row) cost several times SQLite's own work (docs/performance.md,
# "Acknowledging reports")
_T = Token._meta.table_name
_HC = HostCredential._meta.table_name
_TOKEN_FIELDS = tuple(Token._meta.sorted_field_names)
_TOKEN_BY_PREFIX = (
    f"SELECT {', '.join(Token._meta.fields[f].column_name for f in _TOKEN_FIELDS)} FROM {_T} "
    f"WHERE {Token.prefix.column_name} = ?"
)
_BOUND_TOKEN = (
    f"SELECT {HostCredential.token.column_name} FROM {_HC} "
    f"WHERE {HostCredential.host_name.column_name} = ?"
)


def _token_by_prefix(prefix: str) -> Token | None:
    row = database.execute_sql(raw_sql(_TOKEN_BY_PREFIX), (prefix,)).fetchone()
    if row is None:
        return None
    token = Token(**dict(zip(_TOKEN_FIELDS, row, strict=True)))
    token._dirty.clear()  # as read: saving it would write nothing
    return token


def authenticate(plaintext: str, now: float) -> Token:
    """Return the live token for ``plaintext``.

    :raises AuthError: 401 for a malformed, unknown, revoked or expired token.
    """
    parts = plaintext.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "pw" or not parts[1] or not parts[2]:
        raise AuthError("malformed token")
    token = _token_by_prefix(parts[1])
    expected = token.secret_hash if token else _hash("x")  # same work either way
    if not hmac.compare_digest(_hash(parts[2]), expected) or token is None:
        raise AuthError("unknown token")
    if token.revoked_at is not None:
        raise AuthError("token revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise AuthError("token expired")
    if token.last_used_at is None or now - token.last_used_at > 60:
        Token.update(last_used_at=now).where(Token.id == token.id).execute()
    return token


def check_enrollment_key(key: str | None) -> str | None:
    """The enrollment key as given, or None; :raises ParseError: for a malformed one."""
    if key is None or key == "":
        return None
    if not MIN_ENROLLMENT_KEY <= len(key) <= MAX_ENROLLMENT_KEY or not key.isascii():
        raise ParseError(
            f"an enrollment key is {MIN_ENROLLMENT_KEY} to {MAX_ENROLLMENT_KEY} ASCII characters",
            "headers",
        )
    return key


def authorize_host_write(
    token: Token,
    host_name: str,
    now: float,
    enrollment_key: str | None = None,
    can_keep_token: bool = True,
) -> str | None:
    """Allow ``token`` to write reports of ``host_name``; enroll the host if it is new.

    Returns the plaintext of a host token issued by this call (the host was enrolled,
    or its agent asked again with its enrollment key), else None. Call it inside the
    transaction that stores the report, so that a token is issued only with a stored
    report. ``can_keep_token``: false for Patchman's protocol 2, whose client cannot
    keep a token handed to it: it cannot enroll.

    :raises AuthError: 403 when the host belongs to another credential.
    """
    if token.kind in CONSOLE_KINDS:
        raise AuthError(f"{token.kind} tokens do not send reports; use a host or enroll token", 403)
    if not (token.kind == "enroll" and enrollment_key):
        # the usual report: the host's own token writing it (checked by one statement)
        bound = database.execute_sql(raw_sql(_BOUND_TOKEN), (host_name,)).fetchone()
        if bound is not None and bound[0] == token.id:
            return None
    binding = current_binding(host_name)
    if binding is None:
        if token.kind != "enroll":  # released, or replaced by a newer host token
            raise AuthError(f"this token may not write host {host_name!r}", 403)
        if not can_keep_token:
            raise AuthError(
                "an enrollment token cannot enroll a Patchman client (it cannot keep the "
                f"host's own token): create one with 'patchwatch token create --host "
                f"{host_name}'",
                403,
            )
        return _enroll(token, host_name, now, enrollment_key)
    bound = binding.token
    if bound.id == token.id:
        if token.kind == "enroll" and enrollment_key and can_keep_token:
            # bound to the enrollment token before hosts had their own: swap it now
            return _enroll(token, host_name, now, enrollment_key)
        return None
    if (
        token.kind == "enroll"
        and enrollment_key
        and binding.enroll_key_hash
        and hmac.compare_digest(_hash(enrollment_key), binding.enroll_key_hash)
        and bound.kind == "host"
        and bound.revoked_at is None
    ):
        return _enroll(token, host_name, now, enrollment_key)  # the answer was lost
    if bound.kind == "host" and bound.revoked_at is not None:
        raise AuthError(
            f"host {host_name!r} is bound to a revoked token: an operator must release it "
            f"('patchwatch token release {host_name}') or give it a new token",
            403,
        )
    if token.kind == "enroll" and bound.kind == "host":
        raise AuthError(
            f"host {host_name!r} is enrolled and reports with its own token; this "
            "enrollment token may not write it",
            403,
        )
    raise AuthError(f"this token may not write host {host_name!r}", 403)


def _enroll(token: Token, host_name: str, now: float, enrollment_key: str | None) -> str:
    """Issue the host its own token, bound to it in place of any earlier one."""
    with write_transaction():
        binding = current_binding(host_name)
        if binding is not None:
            _revoke_host_token(binding.token, now)
        host_token, plaintext = _new_token(
            "host", now, host_name, f"enrolled with {token.prefix}", None
        )
        try:
            _bind(host_name, host_token, now, _hash(enrollment_key) if enrollment_key else "")
        except IntegrityError:  # another request enrolled the host first (PostgreSQL)
            raise AuthError(f"host {host_name!r} was enrolled by another request", 403) from None
    return plaintext


def host_has_credential(host_name: str) -> bool:
    """Tell whether a host is bound to a token (then credential-less protocol 1 is refused).

    A revoked token still binds: only :func:`release_host` frees a host.
    """
    return HostCredential.select().where(HostCredential.host_name == host_name).exists()


def require_admin(token: Token) -> None:
    """:raises AuthError: 403 unless ``token`` is an admin token."""
    if token.kind != "admin":
        raise AuthError("this endpoint needs an admin token", 403)


def require_reader(token: Token) -> None:
    """:raises AuthError: 403 unless ``token`` may read the fleet (admin or viewer)."""
    if token.kind not in CONSOLE_KINDS:
        raise AuthError("this endpoint needs an admin or viewer token", 403)


def console_token_exists(now: float) -> bool:
    """Whether any live token can sign in to the web console (admin or viewer)."""
    return bool(
        Token.select(Token.id)
        .where(
            Token.kind.in_(CONSOLE_KINDS)
            & Token.revoked_at.is_null()
            & (Token.expires_at.is_null() | (Token.expires_at > now))
        )
        .exists()
    )


def live_token(token_id: int, now: float) -> Token | None:
    """The token with this id while it is neither revoked nor expired, else None."""
    token = Token.get_or_none(Token.id == token_id)
    return token if token is not None and is_live(token, now) else None


def revoke_token(prefix: str, now: float) -> Token:
    """Revoke a token by prefix. Hosts stay bound to it: see :func:`release_host`."""
    token = Token.get_or_none(Token.prefix == prefix)
    if token is None:
        raise NotFoundError(f"no token with prefix {prefix!r}")
    with write_transaction():
        Token.update(revoked_at=now).where(Token.id == token.id).execute()
    return Token.get_by_id(token.id)


def release_host(host_name: str, now: float) -> Token:
    """Unbind a host from its credential (revoking it if it is a host token); return it.

    The host can then be enrolled again, be given a new token, or (from a network in
    ``protocol1_networks``) report with Patchman's protocol 1.

    :raises NotFoundError: when no credential is bound to the host.
    """
    with write_transaction():
        binding = current_binding(host_name)
        if binding is None:
            raise NotFoundError(f"host {host_name} is not bound to any token")
        _revoke_host_token(binding.token, now)
        HostCredential.delete().where(HostCredential.host_name == host_name).execute()
    return Token.get_by_id(binding.token.id)


def list_tokens() -> list[Token]:
    """All tokens, newest first (secrets are not stored, so none is shown)."""
    return list(Token.select().order_by(Token.created_at.desc(), Token.id.desc()))
