"""Error bodies of the emulated VTN: the OpenADR 3.1.0 ``problem`` schema.

Every error (400, 401, 403, 404, 409, 500) is a ``problem`` object
(``type``, ``title``, ``status`` as an integer, ``detail``). The spec declares these
responses as ``application/json``; the media type is configurable
(:attr:`devices.vtn.config.VtnConfig.problem_content_type`). Token-endpoint errors carry the
RFC 6749 ``error``/``error_description`` members as well, so one body satisfies both the
spec's ``problem`` (the response the spec declares for ``/auth/token``) and RFC 6749's
``authError``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ProblemError", "problem_response"]


class ProblemError(Exception):
    """Raised by a route to answer with a ``problem`` body.

    Attributes:
        status: HTTP status code.
        detail: human-readable explanation.
        extra: additional members (``error`` for the token endpoint).

    """

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    media_type: str = "application/json",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A ``problem`` JSON response (``type`` ``about:blank``, ``title`` the status phrase)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=media_type, headers=headers)
