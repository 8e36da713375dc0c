"""OCPP security profiles 1-3: who may open a station's WebSocket, and over what.

Sources: OCPP 2.0.1 Part 2 section A00 "Security" (A00.FR.2xx basic authentication,
A00.FR.3xx TLS with basic authentication, A00.FR.4xx TLS with client certificates) and
Part 4 (OCPP-J) section 3; OCPP 1.6 Security Whitepaper (edition 3) section 2.

=======  =========  ==================================  =================================
profile  transport  the station proves itself with      the CSMS proves itself with
=======  =========  ==================================  =================================
0        ws://      nothing (or HTTP Basic for the      nothing
                    stations that have a password:
                    the behaviour before profiles)
1        ws://      HTTP Basic                          nothing
2        wss://     HTTP Basic                          server certificate
3        wss://     client certificate (subject CN =    server certificate
                    station id)
=======  =========  ==================================  =================================

HTTP Basic: ``Authorization: Basic base64(<station id>:<password>)`` on the upgrade
request; the user must be the station id (the last URL path segment). OCPP 2.0.1 makes
the password a ``passwordString`` of 16 to 40 characters; the 1.6 whitepaper's
``AuthorizationKey`` is a hex string of the raw key (the whitepaper's example: 20 bytes,
any byte values), hence passwords are handled as bytes here and can be hashed from either
form (:func:`hash_password`). Only scrypt hashes are stored (RFC 7914, per-password random
salt, format ``scrypt$n$r$p$salt_b64$hash_b64``), compared in constant time.

TLS (profiles 2 and 3): TLS 1.2 or later; for TLS 1.2 the cipher suites of 2.0.1
A00.FR.318/319 and the 1.6 whitepaper (ECDHE with AES-GCM, ECDSA or RSA server keys).
Profile 3: the client certificate must chain to ``tls_ca_file`` (checked by OpenSSL during
the handshake: a station without one, or with one from another CA, never reaches HTTP);
its subject common name must equal the station id in the URL (checked here, HTTP 403).
A failed TLS handshake never reaches HTTP, so no station id is known then:
:func:`report_handshake_failures` hands its reason (another CA, no certificate, a client
that does not trust the server) to the CSMS, which emits ``security.tls_failed``.

Refusals are HTTP responses at the handshake (websockets ``process_request``): 401 with a
``WWW-Authenticate: Basic`` challenge for missing or wrong Basic credentials or a station
without a stored password, 403 for a client certificate of another station. The reason
given to the caller (for the ``security.auth_failed`` event and the log) never contains
the password.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from controllers.csms.auth import is_hashed

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32  # scrypt cost, as controllers.csms.auth

PASSWORD_MIN_CHARS = 16
PASSWORD_MAX_CHARS = 40
"""OCPP 2.0.1 ``passwordString`` length (also the bound applied to 1.6 raw keys, in bytes)."""

TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
    )
)
"""TLS 1.2 suites of OCPP 2.0.1 A00.FR.318/319 (OpenSSL names); TLS 1.3 keeps its defaults."""

BASIC_CHALLENGE = 'Basic realm="OCPP", charset="UTF-8"'

__all__ = [
    "BASIC_CHALLENGE",
    "PASSWORD_MAX_CHARS",
    "PASSWORD_MIN_CHARS",
    "TLS12_CIPHERS",
    "AuthRefusal",
    "StationAuthenticator",
    "common_name",
    "hash_password",
    "is_hashed",
    "parse_basic_credentials",
    "report_handshake_failures",
    "server_ssl_context",
    "verify_password",
]


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # maxmem: n=2**14, r=8 needs 16 MiB, OpenSSL's default limit is 32 MiB
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=2**26)


def hash_password(password: str | bytes, *, salt: bytes | None = None) -> str:
    """Hash a station password for the CSMS's password store (scrypt, random salt).

    Args:
        password: OCPP 2.0.1 ``BasicAuthPassword`` (a string of 16 to 40 characters,
            hashed as UTF-8), or the raw bytes of an OCPP 1.6 ``AuthorizationKey``
            (``bytes.fromhex(key)``, 16 to 40 bytes).
        salt: 16 random bytes by default (give one only for reproducible tests).

    Returns:
        ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` (the format of
        :func:`controllers.csms.auth.hash_password`).

    Raises:
        ValueError: the password is shorter than 16 or longer than 40.
    """
    size = len(password)
    if not PASSWORD_MIN_CHARS <= size <= PASSWORD_MAX_CHARS:
        unit = "characters" if isinstance(password, str) else "bytes"
        raise ValueError(
            f"an OCPP station password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} "
            f"{unit}, got {size}"
        )
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _scrypt(raw, salt, _N, _R, _P, _DKLEN)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: str, password: str | bytes) -> bool:
    """Check a password (text, or raw bytes) against a stored hash, in constant time.

    False on a malformed hash. The scrypt work is the same whether the password is right
    or wrong.
    """
    raw = password.encode("utf-8") if isinstance(password, str) else password
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        if scheme != "scrypt" or not expected:
            return False
        digest = _scrypt(raw, salt, int(n), int(r), int(p), len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(digest, expected)


def parse_basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    """Decode ``Authorization: Basic ...`` into (user, raw password bytes); None if invalid.

    The password stays bytes: a 1.6 ``AuthorizationKey`` may hold any byte values
    (RFC 7617 leaves the charset to the server; the user, the station id, is UTF-8).
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (ValueError, binascii.Error):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def server_ssl_context(
    cert_file: str, key_file: str, client_ca_file: str | None = None
) -> ssl.SSLContext:
    """The CSMS's TLS context: TLS 1.2+, OCPP cipher suites, optional client certificates.

    Args:
        cert_file: PEM server certificate (chain), for profiles 2 and 3.
        key_file: PEM private key of the certificate.
        client_ca_file: PEM CA bundle the station certificates must chain to; given, a
            client certificate is required (profile 3, ``CERT_REQUIRED``).

    Raises:
        OSError / ssl.SSLError: a file is missing or not a usable certificate / key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca_file)
    return context


def report_handshake_failures(context: ssl.SSLContext, report: Callable[[str], None]) -> None:
    """Call ``report(reason)`` whenever a TLS handshake on ``context`` fails.

    OpenSSL refuses a station's certificate (another CA, none at profile 3) inside the
    handshake, before any HTTP request names the station; asyncio drops such a connection
    without a word. ``SSLContext.sslobject_class`` (the documented hook for the objects of
    ``wrap_bio``, which asyncio uses) sees the failure: ``reason`` is OpenSSL's, e.g.
    ``CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate``.
    """

    class _Reporting(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as err:
                report(_handshake_reason(err))
                raise

    context.sslobject_class = _Reporting


def _handshake_reason(err: ssl.SSLError) -> str:
    """``REASON: detail`` of an OpenSSL error, without its ``[SSL: ...]`` and source line."""
    detail = getattr(err, "verify_message", None) or err.strerror or str(err)
    detail = re.sub(r"^\[SSL: [A-Z0-9_]+\] | \(_ssl\.c:\d+\)$", "", str(detail))
    return f"{err.reason}: {detail}" if err.reason else detail


def common_name(peercert: dict[str, Any] | None) -> str | None:
    """Subject CN of a verified peer certificate (``SSLSocket.getpeercert()`` form).

    None without a certificate or without exactly one CN.
    """
    if not peercert:
        return None
    names = [
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    return names[0] if len(names) == 1 else None


@dataclass(frozen=True)
class AuthRefusal:
    """Why a station's upgrade request is refused.

    Attributes:
        status: HTTP status of the response (401 or 403).
        reason: for the log and the ``security.auth_failed`` event; never the password.
        challenge: add ``WWW-Authenticate: Basic`` to the response (a 401).
    """

    status: HTTPStatus
    reason: str
    challenge: bool


class StationAuthenticator:
    """Checks the credentials a station presents on its WebSocket upgrade.

    Args:
        profile: OCPP security profile 0..3 (see the module docstring).
        password_hashes: station id -> scrypt hash (:func:`hash_password`). Profiles 1
            and 2 refuse a station without one; profile 0 asks for Basic only from the
            stations listed; profile 3 ignores them.
    """

    def __init__(self, profile: int, password_hashes: dict[str, str]) -> None:
        if profile not in (0, 1, 2, 3):
            raise ValueError(f"security profile must be 0..3, got {profile}")
        bad = sorted(sid for sid, h in password_hashes.items() if not is_hashed(h))
        if bad:
            raise ValueError(f"password store holds non-hashed entries for {bad}")
        self.profile = profile
        self._hashes = dict(password_hashes)

    def needs_password_check(self, station_id: str) -> bool:
        """Whether :meth:`check_basic` applies to this station."""
        return self.profile in (1, 2) or (self.profile == 0 and station_id in self._hashes)

    def check_basic(self, station_id: str, authorization: str | None) -> AuthRefusal | None:
        """Check HTTP Basic credentials (blocking: scrypt; run it in a thread).

        Args:
            station_id: the station id from the URL.
            authorization: the ``Authorization`` header, if any.

        Returns:
            None when the credentials are right, else the refusal (401).
        """
        credentials = parse_basic_credentials(authorization)
        stored = self._hashes.get(station_id)
        if credentials is None:
            why = (
                "HTTP Basic credentials required"
                if not authorization
                else ("malformed HTTP Basic credentials")
            )
            return AuthRefusal(HTTPStatus.UNAUTHORIZED, why, True)
        user, password = credentials
        if stored is None:
            # still spend the scrypt time: no timing hint on which ids exist
            verify_password(_DUMMY_HASH, password)
            return AuthRefusal(HTTPStatus.UNAUTHORIZED, "no password stored for station", True)
        if not hmac.compare_digest(user.encode(), station_id.encode()):
            verify_password(stored, password)
            return AuthRefusal(HTTPStatus.UNAUTHORIZED, "user is not the station id", True)
        if not verify_password(stored, password):
            return AuthRefusal(HTTPStatus.UNAUTHORIZED, "wrong password", True)
        return None

    def check_certificate(
        self, station_id: str, peercert: dict[str, Any] | None
    ) -> AuthRefusal | None:
        """Profile 3: the verified client certificate's subject CN must be the station id.

        Returns:
            None when it is (or the profile is not 3), else the refusal (403).
        """
        if self.profile != 3:
            return None
        cn = common_name(peercert)
        if cn is None:
            return AuthRefusal(HTTPStatus.FORBIDDEN, "no client certificate common name", False)
        if cn != station_id:
            return AuthRefusal(
                HTTPStatus.FORBIDDEN, f"client certificate is for station {cn!r}", False
            )
        return None


_DUMMY_HASH = hash_password("not-a-station-password", salt=b"\0" * 16)
