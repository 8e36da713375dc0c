"""One process serving the read API at ``/api`` and the Dash dashboard at ``/``.

The FastAPI app (``dashboards.api``) answers ``/api/...`` (OpenAPI docs at
``/api/docs``); everything else goes to the Dash app (a Flask WSGI app) through
``a2wsgi``. :class:`DashboardServer` runs it with uvicorn in a background thread, so
``migrid run --dash`` can serve the live view of the run it is writing.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from a2wsgi import WSGIMiddleware
from fastapi import FastAPI

from dashboards.api import create_api
from dashboards.app import create_dash
from dashboards.catalog import RunCatalog


def create_server_app(catalog: RunCatalog) -> FastAPI:
    """The combined ASGI app: read API under ``/api``, Dash at ``/``."""
    api = create_api(catalog)
    dash_app = create_dash(catalog)
    api.mount("/", WSGIMiddleware(dash_app.server))  # type: ignore[arg-type]
    return api


class DashboardServer:
    """uvicorn serving :func:`create_server_app` in a daemon thread.

    Args:
        catalog: the runs to serve.
        host: interface to bind (default loopback).
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    """

    def __init__(self, catalog: RunCatalog, host: str = "127.0.0.1", port: int = 8050) -> None:
        config = uvicorn.Config(
            create_server_app(catalog), host=host, port=port, log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="dashboard")
        self.host = host
        self.port = port

    def start(self, timeout_s: float = 15.0) -> str:
        """Start serving; return the base URL.

        Raises:
            RuntimeError: the server did not come up within ``timeout_s`` (e.g. the port
                is taken).
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard server did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        sockets = self._server.servers[0].sockets if self._server.servers else []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.url

    @property
    def url(self) -> str:
        """Base URL of the dashboard."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        """Ask the server to stop and wait for its thread (bounded)."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
