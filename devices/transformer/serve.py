"""Run the transformer emulator on its own, on the wall clock, for a test bench.

This entry point is the one place in ``devices.transformer`` that reads the wall clock and
sleeps: it plays the runtime's part, calling ``advance(datetime.now(UTC), ...)`` every
``step_s`` seconds. Everything else in the package takes time as an argument.

    python -m devices.transformer.serve --port 4840 --currents 400 380 410 --ambient 18

Loads come from ``ServeConfig.load``: a function of the time returning the three phase
currents (A) and the ambient temperature (degC); by default constant values.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from devices.transformer.server import TransformerServer, TransformerSpec

__all__ = ["LoadFunction", "ServeConfig", "constant_load", "main", "serve"]

LoadFunction = Callable[[datetime], tuple[tuple[float, float, float], float]]
"""``load(now) -> ((i_a, i_b, i_c), ambient_c)``."""


def constant_load(
    currents_a: tuple[float, float, float] = (0.0, 0.0, 0.0), ambient_c: float = 20.0
) -> LoadFunction:
    """A load function that always returns the same currents and ambient."""

    def load(now: datetime) -> tuple[tuple[float, float, float], float]:
        return currents_a, ambient_c

    return load


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What the standalone transformer serves.

    Attributes:
        spec: rating and behaviour of the transformer.
        host: address to listen on (127.0.0.1; 0.0.0.0 to reach it from a bench network).
        step_s: wall-clock seconds between two ``advance`` calls.
        load: phase currents and ambient as a function of the time.

    """

    spec: TransformerSpec = field(default_factory=TransformerSpec)
    host: str = "127.0.0.1"
    step_s: float = 1.0
    load: LoadFunction = field(default_factory=constant_load)


async def serve(
    port: int,
    config: ServeConfig | None = None,
    *,
    started: Callable[[TransformerServer], None] | None = None,
) -> None:
    """Serve until cancelled: advance on the wall clock every ``config.step_s`` seconds.

    Args:
        port: TCP port (0 picks a free one; ``started`` receives the server to learn it).
        config: what to serve; defaults of :class:`ServeConfig` if omitted.
        started: called once the server listens and holds its first values.

    """
    cfg = config or ServeConfig()
    if not cfg.step_s > 0:
        raise ValueError(f"step_s must be > 0, got {cfg.step_s!r}")
    currents, ambient = cfg.load(datetime.now(UTC))
    tr = TransformerServer(cfg.spec, host=cfg.host, port=port, ambient_c=ambient)
    await tr.start()
    try:
        await tr.advance(datetime.now(UTC), currents, ambient)
        if started is not None:
            started(tr)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += cfg.step_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = datetime.now(UTC)
            currents, ambient = cfg.load(now)
            await tr.advance(now, currents, ambient)
    finally:
        await tr.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve one transformer with constant load until interrupted."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4840)
    p.add_argument("--rated-kva", type=float, default=630.0)
    p.add_argument("--limit-kw", type=float, default=500.0)
    p.add_argument("--currents", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar="A")
    p.add_argument("--ambient", type=float, default=20.0)
    p.add_argument("--step", type=float, default=1.0)
    a = p.parse_args(argv)
    cfg = ServeConfig(
        spec=TransformerSpec(rated_power_kva=a.rated_kva, site_import_limit_kw=a.limit_kw),
        host=a.host,
        step_s=a.step,
        load=constant_load(tuple(a.currents), a.ambient),
    )

    def announce(tr: TransformerServer) -> None:
        print(f"transformer on {tr.endpoint} (namespace {tr.namespace_index})", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.port, cfg, started=announce))


if __name__ == "__main__":
    main()
