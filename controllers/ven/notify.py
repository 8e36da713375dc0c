"""Notification receivers for the VEN: a webhook callback server and an MQTT listener.

Both hand each raw notification body to a synchronous ``sink`` the moment it arrives; the
VEN applies it there, so a notification counts as in flight only while it is handled.

Webhook (Definition, webhook security): the VTN checks the callback URL with a GET that
carries a query parameter ``echo``; the VEN answers 200 with that value as the body. Real
VTNs also probe ``{callbackUrl}/echo`` (FIELD-NOTES); both are answered. Notifications are
POSTed to the callback URL with ``Authorization: Bearer <subscription bearerToken>``;
others are refused with 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from controllers.exchange import ExchangeTap, clip

NotificationSink = Callable[[bytes, str], None]
"""``(body, channel)`` where channel is ``"webhook"`` or ``"mqtt"``."""


class WebhookServer:
    """A small HTTP server on ``host:port`` (0: ephemeral) receiving VTN notifications.

    With a ``tap`` every request received (echo checks and notifications, refused ones
    included) is an exchange record (direction ``in``, peer: the sender's address).
    """

    PATH = "/openadr3/notifications"

    def __init__(
        self,
        sink: NotificationSink,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        tap: ExchangeTap | None = None,
    ) -> None:
        self._sink = sink
        self._tap = tap
        self._host = host
        self._port = port
        self._public_url = public_url
        self.bearer_token: str | None = None
        self.echo_checks = 0
        self.refused = 0
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        callback: Callable[[Request], Awaitable[Response]] = self._callback
        echo: Callable[[Request], Awaitable[Response]] = self._echo
        if tap is not None:
            callback, echo = self._recorded(callback), self._recorded(echo)
        app = Starlette(
            routes=[
                Route(self.PATH, callback, methods=["GET", "POST"]),
                Route(self.PATH + "/echo", echo, methods=["GET", "POST"]),
            ]
        )
        self._app = app

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    @property
    def callback_url(self) -> str:
        """The URL the VTN should POST notifications to."""
        if self._public_url:
            return self._public_url.rstrip("/")
        return f"http://{self._host}:{self.port}{self.PATH}"

    async def start(self) -> None:
        """Bind and start serving (no waiting on a clock: the socket listens at once)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        config = uvicorn.Config(self._app, lifespan="off", log_level="warning", access_log=False)
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])

    async def close(self) -> None:
        """Stop serving and release the socket."""
        if self._server is not None and self._socket is not None:
            await self._server.shutdown(sockets=[self._socket])
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._socket = None

    # ------------------------------------------------------------------ handlers
    def _recorded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` with an exchange record of each request it answers."""
        tap = self._tap
        assert tap is not None

        async def wrapped(request: Request) -> Response:
            started = tap.start()
            body = await request.body()  # cached: the handler reads it again
            record: dict[str, Any] = {"method": request.method, "url": str(request.url)}
            if request.url.query:
                record["query"] = request.url.query
            if body:
                record["body"] = clip(body.decode("utf-8", "replace"))
            peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
            operation = f"{request.method} {request.url.path}"
            try:
                response = await handler(request)
            except Exception as exc:
                tap.record(operation, record, None, started=started, error=exc, peer=peer,
                           direction="in")
                raise
            answer: dict[str, Any] = {"status_code": response.status_code}
            if response.body:
                answer["body"] = clip(bytes(response.body).decode("utf-8", "replace"))
            tap.record(operation, record, answer, started=started, peer=peer, direction="in")
            return response

        return wrapped

    async def _echo(self, request: Request) -> Response:
        self.echo_checks += 1
        params = request.query_params
        return PlainTextResponse(params.get("echo") or params.get("challenge", ""))

    async def _callback(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._echo(request)
        if self.bearer_token is not None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.bearer_token.encode()
            ):
                self.refused += 1
                return PlainTextResponse("unauthorized", status_code=401)
        body = await request.body()
        self._sink(body, "webhook")
        return Response(status_code=200)


@dataclass
class MqttSettings:
    """How to reach the VTN's broker, from its ``/notifiers`` answer."""

    uri: str
    topics: list[str]
    username: str | None = None
    password: str | None = None
    identifier: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class MqttListener:
    """Subscribes to the VTN's notification topics and feeds each message to ``sink``."""

    def __init__(
        self, settings: MqttSettings, sink: NotificationSink, tap: ExchangeTap | None = None
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._tap = tap
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.error: BaseException | None = None
        self.received = 0

    @property
    def failed(self) -> bool:
        """Whether the listener has stopped on an error."""
        return self._task is not None and self._task.done() and self.error is not None

    async def start(self) -> None:
        """Connect and subscribe; raise if the broker cannot be reached."""
        self._task = asyncio.create_task(self._run())
        waiter = asyncio.create_task(self._subscribed.wait())
        done, _ = await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            err = self.error or RuntimeError("MQTT listener stopped")
            raise err

    async def _run(self) -> None:
        s = self._settings
        parts = urlsplit(s.uri)
        secure = parts.scheme in ("mqtts", "ssl", "tls", "wss")
        tls_context: ssl.SSLContext | None = None
        if secure:
            tls_context = ssl.create_default_context(cafile=s.ca_file)
            if not s.verify_tls:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        port = parts.port or (8883 if secure else 1883)
        try:
            async with aiomqtt.Client(
                parts.hostname or "127.0.0.1",
                port,
                identifier=s.identifier,
                username=s.username,
                password=s.password,
                tls_context=tls_context,
            ) as client:
                for topic in s.topics:
                    await client.subscribe(topic, qos=1)
                self._subscribed.set()
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, str):
                        body = payload.encode()
                    elif isinstance(payload, bytes | bytearray):
                        body = bytes(payload)
                    else:
                        body = str(payload).encode()
                    self.received += 1
                    tap = self._tap
                    if tap is None:
                        self._sink(body, "mqtt")
                        continue
                    started = tap.start()
                    self._sink(body, "mqtt")
                    tap.record(
                        f"PUBLISH {message.topic}",
                        {"topic": str(message.topic), "qos": message.qos,
                         "body": clip(body.decode("utf-8", "replace"))},
                        None,
                        started=started,
                        peer=s.uri,
                        direction="in",
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc

    async def close(self) -> None:
        """Disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
