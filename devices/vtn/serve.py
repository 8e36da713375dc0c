"""Run the emulated VTN on its own, on the wall clock, for a bench or an outside VEN.

This entry point is the one place in ``devices.vtn`` that reads the wall clock and sleeps:
it plays the runtime's part, calling ``advance(datetime.now(UTC))`` every ``step_s``
seconds. The grid-event file's times are moved by ``time_offset`` first (``auto``: the
first event is published at start), so a 2021 file replays "now".

    python -m devices.vtn.serve --port 8080 --config vtn.yaml
    migrid device serve vtn --port 8080 --config vtn.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from devices.vtn.config import VtnConfig
from devices.vtn.replay import load_grid_event_file, shift_file
from devices.vtn.server import VtnServer

__all__ = ["load_config", "main", "serve"]


def load_config(settings: dict[str, Any], base_dir: Path | None = None) -> VtnConfig:
    """A :class:`VtnConfig` from a parsed YAML mapping.

    A relative ``grid_events`` path resolves against ``base_dir`` (the config's folder).

    Raises:
        pydantic.ValidationError: a bad field (its path and the reason).

    """
    cfg = VtnConfig.model_validate(settings)
    if cfg.grid_events is not None and base_dir is not None and not cfg.grid_events.is_absolute():
        cfg = cfg.model_copy(update={"grid_events": base_dir / cfg.grid_events})
    return cfg


async def serve(
    port: int,
    config: VtnConfig,
    *,
    step_s: float = 1.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    started: Callable[[VtnServer], None] | None = None,
) -> None:
    """Serve until cancelled, advancing on ``clock`` every ``step_s`` seconds.

    Args:
        port: TCP port (0: a free one; ``started`` receives the server to learn it).
        config: the VTN's settings.
        step_s: wall-clock seconds between two ``advance`` calls.
        clock: the wall clock (replaceable in tests).
        started: called once the server listens and the programs exist.

    Raises:
        ValueError: ``step_s`` not positive, or an unreadable or bad grid-event file
            (pydantic's message names the bad field).

    """
    if not step_s > 0:
        raise ValueError(f"step_s must be > 0, got {step_s!r}")
    now = clock()
    vtn = VtnServer(config, now, port=port)
    if config.grid_events is not None:
        try:
            file = load_grid_event_file(config.grid_events)
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"grid_events {config.grid_events}: {err}") from None
        vtn.load_grid_events(shift_file(file, config.time_offset, now))
    await vtn.start()
    try:
        await vtn.advance(now)
        if started is not None:
            started(vtn)
        while True:
            await asyncio.sleep(step_s)
            await vtn.advance(clock())
    finally:
        await vtn.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the VTN of a YAML config until interrupted."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--config", type=Path, required=True)
    a = p.parse_args(argv)
    settings = yaml.safe_load(a.config.read_text(encoding="utf-8")) or {}
    cfg = load_config(settings, a.config.parent)

    def announce(vtn: VtnServer) -> None:
        print(f"VTN at {vtn.base_url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.port, cfg, started=announce))


if __name__ == "__main__":
    main()
