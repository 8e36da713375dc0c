"""OAuth2 client-credentials tokens of the emulated VTN: signed JWTs (HS256).

A token carries ``sub`` (client id), ``scope`` (space separated, RFC 6749 section 3.3),
``role`` (``BL``/``VEN``), ``iat`` and ``exp`` (seconds since the epoch, from the injected
``now``: expiry is checked against the VTN's clock, never the wall clock).

Scope check (:func:`scope_satisfies`): a required scope is met when the token holds it; a
``read_*`` scope is also met by ``read_all``. ``read_bl``, required by five MQTT topic
paths but never declared by the 3.1.0 document, is met by ``read_all`` or ``read_bl``
itself, and those five paths are BL-only (a VEN token gets 403).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote_plus

import jwt

from devices.vtn.config import ClientConfig

__all__ = ["Principal", "TokenError", "TokenIssuer", "parse_basic", "scope_satisfies"]


class TokenError(Exception):
    """A token or credential was refused.

    Attributes:
        status: HTTP status to answer (400, 401 or 403).
        error: RFC 6749 error code (token endpoint) or a short title.
        detail: human-readable reason.

    """

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from, decoded from its bearer token."""

    client_id: str
    role: str
    scopes: frozenset[str]

    @property
    def is_bl(self) -> bool:
        """True for a business-logic client (sees and may write everything)."""
        return self.role == "BL"


def scope_satisfies(held: Iterable[str], required: str) -> bool:
    """Whether scopes ``held`` meet ``required`` (``read_all`` covers every ``read_*``)."""
    have = set(held)
    if required in have:
        return True
    return required.startswith("read_") and "read_all" in have


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from an ``Authorization: Basic`` header, else None.

    Per RFC 6749 section 2.3.1 both parts are form-url-encoded before base64; they are
    decoded here.
    """
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in raw:
        return None
    cid, _, secret = raw.partition(":")
    return unquote_plus(cid), unquote_plus(secret)


class TokenIssuer:
    """Issues and checks the VTN's bearer tokens.

    Args:
        clients: the configured clients.
        ttl_s: token lifetime in seconds.
        secret: HS256 key; ``None``: 32 random bytes per issuer.

    """

    def __init__(
        self, clients: Iterable[ClientConfig], ttl_s: int = 3600, secret: str | None = None
    ) -> None:
        self._clients = {c.id: c for c in clients}
        self.ttl_s = ttl_s
        self._key = secret or secrets.token_hex(32)

    def add_client(self, client: ClientConfig) -> None:
        """Register (or replace) a client."""
        self._clients[client.id] = client

    def issue(
        self, client_id: str, client_secret: str, now: datetime, scope: str | None = None
    ) -> tuple[str, str]:
        """Check credentials and return ``(access_token, granted scope string)``.

        ``scope`` (optional, space separated) narrows the grant to those scopes; asking
        for a scope the client does not hold is ``invalid_scope`` (400).

        Raises:
            TokenError: 401 ``invalid_client`` for unknown id or wrong secret; 400
                ``invalid_scope``.

        """
        client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(
            client.secret.encode(), client_secret.encode()
        ):
            raise TokenError(401, "invalid_client", "unknown client or wrong secret")
        granted = list(client.granted())
        if scope:
            asked = scope.split()
            missing = [s for s in asked if s not in granted]
            if missing:
                raise TokenError(400, "invalid_scope", f"scope not granted: {' '.join(missing)}")
            granted = [s for s in granted if s in asked]
        scope_str = " ".join(granted)
        claims = {
            "sub": client.id,
            "scope": scope_str,
            "role": client.role,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_s)).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), scope_str

    def verify(self, authorization: str | None, now: datetime) -> Principal:
        """Decode an ``Authorization: Bearer`` header, checking signature and expiry.

        Raises:
            TokenError: 401 when the header is missing, malformed, badly signed, expired
                (against ``now``) or names an unknown client.

        """
        if not authorization or not authorization.lower().startswith("bearer "):
            raise TokenError(401, "Unauthorized", "missing bearer token")
        token = authorization[7:].strip()
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_iat": False, "require": ["sub", "exp"]},
            )
        except jwt.PyJWTError as err:
            raise TokenError(401, "Unauthorized", f"invalid token: {err}") from None
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now.timestamp():
            raise TokenError(401, "Unauthorized", "token expired")
        client = self._clients.get(str(claims["sub"]))
        if client is None:
            raise TokenError(401, "Unauthorized", "token of an unknown client")
        scope = claims.get("scope", "")
        scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
        return Principal(client.id, client.role, frozenset(scopes))
