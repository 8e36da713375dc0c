"""HTTP Basic authentication of stations (OCPP security profile 1), hashed passwords.

OCPP 2.0.1 Part 2 section A (security profile 1): the station sends
``Authorization: Basic base64(<station id>:<password>)`` on the WebSocket upgrade. The
CSMS keeps only scrypt hashes (RFC 7914) and compares in constant time.
"""

import base64
import binascii
import hashlib
import hmac
import secrets

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash a password with scrypt.

    Args:
        password: the plain password.
        salt: 16 random bytes by default (give one only for reproducible tests).

    Returns:
        ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.
    """
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def is_hashed(value: str) -> bool:
    """True when ``value`` looks like the output of :func:`hash_password`."""
    return value.startswith("scrypt$") and value.count("$") == 5


def verify_password(stored: str, password: str) -> bool:
    """Check a password against a stored hash in constant time; False on a bad hash."""
    try:
        _, n, r, p, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(digest, expected)


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """Decode an ``Authorization: Basic`` header into (user, password); None if invalid."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
