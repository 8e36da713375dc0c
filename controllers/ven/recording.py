"""Exchange records of the VEN's HTTP traffic (see :mod:`controllers.exchange`).

:class:`RecordingAsyncClient` is the VEN's ``httpx.AsyncClient`` when an ``on_exchange``
hook is set: it wraps ``send``, the one method every request goes through (the VEN's own
requests and the token manager's discovery and token requests), so each request and its
answer (or failure) becomes one record. Secrets are redacted (:func:`redact_text`) and
headers are not recorded (they carry the bearer token and the client credentials).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from controllers.exchange import ExchangeTap, clip

__all__ = ["SECRET_KEYS", "RecordingAsyncClient", "http_operation", "redact_text"]

#: JSON or form keys whose values never go into a record
SECRET_KEYS = frozenset(
    {
        "client_secret",
        "access_token",
        "refresh_token",
        "id_token",
        "password",
        "bearerToken",
        "token",
        "secret",
    }
)


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: ("***" if k in SECRET_KEYS else _redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj


def redact_text(text: str, content_type: str = "") -> str:
    """``text`` (a JSON or form body) with the values of :data:`SECRET_KEYS` as ``***``.

    A body that is neither JSON nor a form is kept as it is; the result is clipped.
    """
    if not text:
        return text
    if "x-www-form-urlencoded" in content_type:
        pairs = parse_qsl(text, keep_blank_values=True)
        return clip(urlencode([(k, "***" if k in SECRET_KEYS else v) for k, v in pairs], safe="*"))
    if text[:1] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            return clip(text)
        return clip(json.dumps(_redact(data), separators=(",", ":")))
    return clip(text)


def http_operation(base_url: str, method: str, url: httpx.URL) -> tuple[str, str]:
    """``(peer, operation)`` of a request: the VTN base URL and ``"GET /events"``.

    A request outside the base (a token endpoint elsewhere) has its origin as the peer
    and its full path in the operation.
    """
    base = urlsplit(base_url)
    base_path = base.path.rstrip("/")
    path = url.path
    same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.hostname, base.port)
    if same_origin and (not base_path or path == base_path or path.startswith(base_path + "/")):
        return base_url.rstrip("/"), f"{method} {path[len(base_path) :] or '/'}"
    return f"{url.scheme}://{url.netloc.decode()}", f"{method} {path}"


class RecordingAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that records every ``send`` on ``tap`` (module docstring)."""

    def __init__(self, tap: ExchangeTap, base_url_for_records: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tap = tap
        self._records_base = base_url_for_records

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send as ``httpx.AsyncClient.send`` does, and record the exchange."""
        tap = self._tap
        peer, operation = http_operation(self._records_base, request.method, request.url)
        content_type = request.headers.get("content-type", "")
        try:
            body = request.content.decode("utf-8", "replace")
        except httpx.RequestNotRead:  # a streamed upload: not read here
            body = "<stream>"
        record_request: dict[str, Any] = {"method": request.method, "url": str(request.url)}
        if request.url.query:
            record_request["query"] = request.url.query.decode()
        if body:
            record_request["body"] = redact_text(body, content_type)
        started = tap.start()
        try:
            response = await super().send(request, **kwargs)
        except BaseException as exc:
            tap.record(operation, record_request, None, started=started, error=exc, peer=peer)
            raise
        if kwargs.get("stream"):
            answer: dict[str, Any] = {"status_code": response.status_code}
        else:
            answer = {
                "status_code": response.status_code,
                "body": redact_text(response.text, response.headers.get("content-type", "")),
            }
        tap.record(operation, record_request, answer, started=started, peer=peer)
        return response
