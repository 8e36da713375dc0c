"""OpenADR 3.1.0 conformance of HTTP traffic: requests and responses against the spec.

Validates what a VEN sends and what a VTN answers with openapi-core against the OpenAPI
document in ``controllers/ven/spec/`` (the published 3.1.0 file with its defects fixed,
see its README). Used by the tests on both sides, and usable on traffic recorded on a
bench: a request or response that does not conform raises ``OpenAPIError`` with the
path and reason.

:class:`ValidatingTransport` wraps an httpx transport so that every exchange of a client
(the VEN) is checked on the way; failures are collected, not raised, so that the client
behaves as it would against a real VTN and the test asserts on the list afterwards.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = (
    Path(__file__).resolve().parents[1] / "controllers" / "ven" / "spec"
    / "openadr3-3.1.0.patched.yaml"
)


@cache
def spec_dict() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    data: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return data


@cache
def openapi() -> OpenAPI:
    """The openapi-core validator of the document (built once)."""
    return OpenAPI.from_file_path(str(SPEC_PATH))


class _Request:
    """An httpx request as openapi-core sees it, moved onto the spec's server URL."""

    def __init__(self, r: httpx.Request) -> None:
        server = urlsplit(spec_dict()["servers"][0]["url"])
        self.host_url = f"{server.scheme}://{server.netloc}"
        self.path = server.path + r.url.path
        self.method = r.method.lower()
        self.body: bytes | None = r.content or None
        self.content_type = r.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(r.url.params.multi_items())),
            header=Headers(dict(r.headers)),
            cookie=ImmutableMultiDict(),
        )


class _Response:
    def __init__(self, r: httpx.Response) -> None:
        self.data = r.content
        self.status_code = r.status_code
        self.content_type = r.headers.get("content-type", "")
        self.headers = Headers(dict(r.headers))


def check_request(request: httpx.Request) -> None:
    """Validate a request against the spec (raises ``OpenAPIError`` on a mismatch)."""
    openapi().validate_request(_Request(request))


def check_response(
    response: httpx.Response, request: httpx.Request | None = None
) -> httpx.Response:
    """Validate a response (with its request, by default ``response.request``); returns it."""
    openapi().validate_response(_Request(request or response.request), _Response(response))
    return response


def check_schema(name: str, instance: Any) -> None:
    """Validate a JSON value against ``#/components/schemas/{name}``.

    Raises:
        jsonschema.ValidationError: the value does not conform.
    """
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec_dict()["components"]}
    OAS30Validator(schema).validate(instance)


class ValidatingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every exchange against the spec.

    Args:
        inner: the transport that does the I/O (default: a plain ``AsyncHTTPTransport``).
        skip_paths: path prefixes not described by the spec (e.g. a token endpoint that
            is not under the API's base path) — checked by nothing.

    ``failures`` lists ``(method, path, reason)`` for every non-conforming request or
    response; ``checked`` counts the exchanges validated.
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, skip_paths: tuple[str, ...] = ()
    ) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.skip_paths = skip_paths
        self.failures: list[tuple[str, str, str]] = []
        self.checked = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send, then validate request and response (failures recorded, not raised)."""
        response = await self.inner.handle_async_request(request)
        if request.url.path.startswith(self.skip_paths):
            return response
        await response.aread()
        self.checked += 1
        for what, check in (("request", lambda: check_request(request)),
                            ("response", lambda: check_response(response, request))):
            try:
                check()
            except Exception as exc:  # openapi-core raises a family of errors
                self.failures.append((request.method, request.url.path, f"{what}: {exc!r}"))
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()
