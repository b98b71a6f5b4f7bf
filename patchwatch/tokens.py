"""API tokens: created, checked and revoked here; only a hash of the secret is stored.

A token reads ``pw_<prefix>_<secret>``. The prefix (public, unique) finds the row; the
secret is compared by SHA-256 in constant time. The secret has 256 bits of entropy, so a
fast hash is enough (no password stretching needed), and a leaked database does not
leak usable tokens.

Kinds: ``host`` writes one named host; ``enroll`` writes new hosts and binds each to
itself on first report; ``admin`` reads the API and manages the server, and does not
write reports.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from peewee import IntegrityError

from patchwatch.db import write_transaction
from patchwatch.errors import AuthError
from patchwatch.errors import NotFoundError
from patchwatch.models import HostCredential
from patchwatch.models import Token

KINDS = ("host", "enroll", "admin")
PREFIX_BYTES = 6
SECRET_BYTES = 32


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    kind: str,
    now: float,
    host_name: str | None = None,
    comment: str = "",
    expires_at: float | None = None,
) -> tuple[Token, str]:
    """Create a token and return it with its plaintext (shown once, never stored).

    A host token becomes the host's only credential, replacing any earlier one.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    if (kind == "host") != bool(host_name):
        raise ValueError("a host token needs a host name, and only a host token has one")
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with write_transaction():
        token = Token.create(
            prefix=prefix,
            secret_hash=_hash(secret),
            kind=kind,
            host_name=host_name,
            comment=comment,
            created_at=now,
            expires_at=expires_at,
        )
        if host_name:
            HostCredential.delete().where(HostCredential.host_name == host_name).execute()
            HostCredential.create(host_name=host_name, token=token, bound_at=now)
    return token, f"pw_{prefix}_{secret}"


def authenticate(plaintext: str, now: float) -> Token:
    """Return the live token for ``plaintext``.

    :raises AuthError: 401 for a malformed, unknown, revoked or expired token.
    """
    parts = plaintext.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "pw" or not parts[1] or not parts[2]:
        raise AuthError("malformed token")
    token = Token.get_or_none(Token.prefix == parts[1])
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


def authorize_host_write(token: Token, host_name: str, now: float) -> None:
    """Allow ``token`` to write reports of ``host_name``, binding a new host if enrolling.

    :raises AuthError: 403 when the host belongs to another credential.
    """
    if token.kind == "admin":
        raise AuthError("admin tokens do not send reports; use a host or enroll token", 403)
    binding = HostCredential.get_or_none(HostCredential.host_name == host_name)
    if binding is not None:
        if binding.token_id != token.id:
            raise AuthError(f"this token may not write host {host_name!r}", 403)
        return
    if token.kind == "host":  # its binding was replaced by a newer host token
        raise AuthError(f"this token may not write host {host_name!r}", 403)
    try:
        with write_transaction():
            HostCredential.create(host_name=host_name, token=token, bound_at=now)
    except IntegrityError:  # another request enrolled the host first
        binding = HostCredential.get_or_none(HostCredential.host_name == host_name)
        if binding is None or binding.token_id != token.id:
            raise AuthError(f"this token may not write host {host_name!r}", 403) from None


def host_has_credential(host_name: str) -> bool:
    """Tell whether a host is bound to a token (then credential-less protocol 1 is refused)."""
    return HostCredential.select().where(HostCredential.host_name == host_name).exists()


def require_admin(token: Token) -> None:
    """:raises AuthError: 403 unless ``token`` is an admin token."""
    if token.kind != "admin":
        raise AuthError("this endpoint needs an admin token", 403)


def revoke_token(prefix: str, now: float) -> Token:
    """Revoke a token by prefix; its hosts can then be enrolled or bound again."""
    token = Token.get_or_none(Token.prefix == prefix)
    if token is None:
        raise NotFoundError(f"no token with prefix {prefix!r}")
    with write_transaction():
        Token.update(revoked_at=now).where(Token.id == token.id).execute()
        HostCredential.delete().where(HostCredential.token == token).execute()
    return Token.get_by_id(token.id)


def list_tokens() -> list[Token]:
    """All tokens, newest first (secrets are not stored, so none is shown)."""
    return list(Token.select().order_by(Token.created_at.desc(), Token.id.desc()))
