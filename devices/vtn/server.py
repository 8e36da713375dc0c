"""The emulated VTN as a running HTTP server (uvicorn, in the caller's event loop).

Usage::

    vtn = VtnServer(VtnConfig(clients=[...], mqtt_url="mqtt://127.0.0.1:1883"), now=t0)
    await vtn.start()              # port 0: a free port; vtn.base_url = "http://127.0.0.1:N"
    vtn.load_grid_events(file)     # optional replay
    await vtn.advance(t1)          # publishes due events, fires notifications
    await vtn.drain()              # until every webhook/MQTT message is handled
    await vtn.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime

import uvicorn

from devices.vtn.app import create_app
from devices.vtn.config import VtnConfig
from devices.vtn.core import VtnCore

__all__ = ["VtnServer"]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the host process owns Ctrl-C)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class VtnServer(VtnCore):
    """A :class:`~devices.vtn.core.VtnCore` served over HTTP.

    Args:
        config: clients, broker, options (``config.host`` is the listen address).
        now: initial time (UTC).
        port: TCP port (0: any free port; read :attr:`port` / :attr:`base_url` after
            :meth:`start`).

    """

    def __init__(self, config: VtnConfig, now: datetime, *, port: int = 0) -> None:
        super().__init__(config, now)
        self.port = port
        self.app = create_app(self)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (no trailing slash)."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Connect the notifier (MQTT broker) and listen.

        Raises:
            aiomqtt.MqttError: broker unreachable.
            OSError: the port cannot be bound.

        """
        await self.notifier.start()
        cfg = uvicorn.Config(
            self.app, host=self.config.host, port=self.port, log_level="warning",
            lifespan="off", access_log=False, ws="none",
        )
        server = _Server(cfg)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            if self._task.done():
                await self._task
                raise OSError(f"VTN could not listen on {self.config.host}:{self.port}")
            await asyncio.sleep(0.005)
        sock = server.servers[0].sockets[0]
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, drain notifications, disconnect."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = None
        self._task = None
        await self.notifier.stop()
