"""Check an APKINDEX signature as apk does: RSA PKCS#1 v1.5 by a key the host trusts.

apk reads the signature member's name (``.SIGN.RSA.<key file name>`` over SHA-1,
``.SIGN.RSA256.<key file name>`` over SHA-256), looks up the public key of that file
name in its trusted keys (``/etc/apk/keys``) and checks the signature over the index
member's compressed bytes; an index whose signature names no trusted key, or does not
verify, is untrusted. Pure: the keys are passed in as PEM bytes by file name
(:func:`load_keys` reads them for the caller).

Why ``cryptography`` rather than the ``openssl`` tool: one process per index and
mirror would be forked from the refresh's worker threads, and the check is a few
microseconds in the library.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from patchwatch.domain.errors import ParseError
from patchwatch.domain.repodata.apkindex import ApkSignature

__all__ = ["MAX_KEY_BYTES", "load_keys", "parse_public_key", "verify_apk_signature"]

MAX_KEY_BYTES = 64 * 1024  # an RSA public key in PEM is under 1 KiB
_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


def parse_public_key(pem: bytes, where: str) -> RSAPublicKey:
    """An RSA public key from PEM (``-----BEGIN PUBLIC KEY-----``), as Alpine ships them."""
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ParseError(f"not a PEM public key ({exc})", where) from None
    if not isinstance(key, RSAPublicKey):
        raise ParseError("not an RSA public key", where)
    return key


def load_keys(paths: Iterable[str]) -> dict[str, bytes]:
    """Read trusted keys: each path a key file or a folder of ``*.pub`` files.

    Keys are named by file name, as apk names them in signatures. A path that does not
    exist, or a file over :data:`MAX_KEY_BYTES`, is left out; the caller says which.
    """
    keys: dict[str, bytes] = {}
    for text in paths:
        path = Path(text)
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and file.stat().st_size <= MAX_KEY_BYTES:
                keys[file.name] = file.read_bytes()
    return keys


def verify_apk_signature(signatures: Iterable[ApkSignature], keys: Mapping[str, bytes]) -> str:
    """Return the name of the trusted key whose signature verifies the index.

    :raises ParseError: saying why when none does: unsigned, signed only by keys not
        in ``keys``, or a signature that does not verify.
    """
    signatures = tuple(signatures)
    if not signatures:
        raise ParseError("the index is not signed", "APKINDEX.tar.gz")
    unknown: list[str] = []
    for signature in signatures:
        pem = keys.get(signature.key_name)
        if pem is None:
            unknown.append(signature.key_name)
            continue
        key = parse_public_key(pem, signature.key_name)
        try:
            key.verify(
                signature.signature,
                signature.signed,
                padding.PKCS1v15(),
                _HASHES[signature.digest](),
            )
        except InvalidSignature:
            raise ParseError(
                f"the signature by {signature.key_name} does not verify (index altered "
                "or signed with another key)",
                "APKINDEX.tar.gz",
            ) from None
        return signature.key_name
    raise ParseError(
        f"signed by {', '.join(unknown)}, which is not among the trusted keys (apk_keys)",
        "APKINDEX.tar.gz",
    )
