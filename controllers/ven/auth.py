"""OAuth2 client-credentials tokens for the VEN, on injected time.

The token URL comes from ``GET /auth/server`` (``tokenURL``, absolute or relative to the
VTN base URL). Client authentication at the token endpoint is sent in the form body
(``client_id``/``client_secret``), by HTTP Basic, or ``auto``: body first, then Basic on a
400/401, remembering what worked (FIELD-NOTES: real VTNs accept only one of the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
from pydantic import ValidationError

from controllers.ven.config import VenConfig
from controllers.ven.oadr3_models import AuthServerInfo, ClientCredentialResponse


class AuthError(Exception):
    """The VTN's authorisation server refused or could not be reached."""


@dataclass
class Token:
    """A bearer token and when it stops being usable (None: until a 401 says so)."""

    access_token: str
    expires_at: datetime | None


class TokenManager:
    """Fetches, caches and refreshes the VEN's bearer token."""

    def __init__(self, config: VenConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http
        self.token_url: str | None = None
        self.token: Token | None = None
        self.auth_method: str | None = None if config.client_auth == "auto" else config.client_auth
        self.fetches = 0

    def needs_refresh(self, now: datetime) -> bool:
        """Whether the cached token is missing or within the refresh margin of expiry."""
        if self.token is None:
            return True
        if self.token.expires_at is None:
            return False
        margin = timedelta(seconds=self._config.token_refresh_margin_s)
        return now >= self.token.expires_at - margin

    def invalidate(self) -> None:
        """Forget the token (after a 401)."""
        self.token = None

    async def bearer(self, now: datetime) -> str:
        """A valid access token at ``now``, fetching one when needed."""
        if self.needs_refresh(now):
            await self.fetch(now)
        assert self.token is not None
        return self.token.access_token

    async def discover(self) -> str:
        """Find the token URL through ``GET /auth/server``."""
        base = self._config.vtn_url + "/"
        try:
            resp = await self._http.get(urljoin(base, "auth/server"))
        except httpx.HTTPError as exc:
            raise AuthError(f"GET /auth/server failed: {exc!r}") from exc
        if resp.status_code != 200:
            raise AuthError(f"GET /auth/server answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise AuthError("GET /auth/server answered non-JSON") from exc
        raw = body.get("tokenURL") or body.get("token_url") if isinstance(body, dict) else None
        if not isinstance(raw, str) or not raw:
            raise AuthError(f"GET /auth/server answered no tokenURL: {body!r}")
        url = urljoin(base, raw)
        try:
            AuthServerInfo.model_validate({"tokenURL": url})
        except ValidationError as exc:
            raise AuthError(f"bad tokenURL {raw!r}") from exc
        self.token_url = url
        return url

    async def fetch(self, now: datetime) -> Token:
        """Fetch a new token; try body then Basic client authentication in ``auto`` mode."""
        if self.token_url is None:
            await self.discover()
        methods = [self.auth_method] if self.auth_method else ["body", "basic"]
        last = ""
        for method in methods:
            assert method is not None
            resp = await self._post_token(method)
            if resp.status_code == 200:
                token = self._parse(resp, now)
                self.auth_method = method
                self.token = token
                self.fetches += 1
                return token
            last = f"{method}: {resp.status_code} {resp.text[:200]}"
            if resp.status_code not in (400, 401):
                break
        raise AuthError(f"token request refused ({last})")

    async def _post_token(self, method: str) -> httpx.Response:
        assert self.token_url is not None
        secret = self._config.client_secret.get_secret_value()
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self._config.scope:
            form["scope"] = self._config.scope
        kwargs: dict[str, Any] = {}
        if method == "body":
            form |= {"client_id": self._config.client_id, "client_secret": secret}
        else:
            kwargs["auth"] = httpx.BasicAuth(self._config.client_id, secret)
        try:
            return await self._http.post(self.token_url, data=form, **kwargs)
        except httpx.HTTPError as exc:
            raise AuthError(f"token request failed: {exc!r}") from exc

    @staticmethod
    def _parse(resp: httpx.Response, now: datetime) -> Token:
        try:
            body = resp.json()
        except ValueError as exc:
            raise AuthError("token endpoint answered non-JSON") from exc
        if isinstance(body, dict) and isinstance(body.get("token_type"), str):
            body["token_type"] = (
                "Bearer" if body["token_type"].lower() == "bearer" else body["token_type"]
            )
        if isinstance(body, dict) and isinstance(body.get("expires_in"), str):
            try:
                body["expires_in"] = int(float(body["expires_in"]))
            except ValueError:
                body.pop("expires_in")
        try:
            parsed = ClientCredentialResponse.model_validate(body)
        except ValidationError as exc:
            raise AuthError(f"bad token response: {exc.errors()[:2]}") from exc
        expires = (
            now + timedelta(seconds=parsed.expires_in) if parsed.expires_in is not None else None
        )
        return Token(parsed.access_token, expires)
