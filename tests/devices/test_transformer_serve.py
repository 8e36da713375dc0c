import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua as _ua
from asyncua.client.client import Client

from devices.transformer.serve import ServeConfig, constant_load, serve
from devices.transformer.server import TransformerServer

ua: Any = _ua


async def test_serve_on_the_wall_clock() -> None:
    ready: asyncio.Future[TransformerServer] = asyncio.get_running_loop().create_future()
    cfg = ServeConfig(step_s=0.05, load=constant_load((500.0, 500.0, 500.0), 30.0))
    task = asyncio.create_task(serve(0, cfg, started=ready.set_result))
    try:
        tr = await asyncio.wait_for(ready, 10)
        async with Client(tr.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index("urn:migrid:transformer")
            node = client.get_node(f"ns={ns};s=YPTR1.HotSpotTemp")
            first: Any = await node.read_data_value()
            await asyncio.sleep(0.3)
            later: Any = await node.read_data_value()
            assert later.SourceTimestamp > first.SourceTimestamp
            assert abs(later.SourceTimestamp - datetime.now(UTC)) < timedelta(seconds=5)
            assert later.Value.Value > first.Value.Value >= 30.0  # heating up under load
            amps = await client.get_node(f"ns={ns};s=MMXU1.A.phsB").read_value()
            assert amps == 500.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
