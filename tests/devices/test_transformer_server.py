import asyncio
import json
import math
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua as _ua
from asyncua.client.client import Client

from devices.transformer.server import NAMESPACE_URI, NODE_IDS, TransformerServer, TransformerSpec
from devices.transformer.thermal import initial_state, load_factor, step

ua: Any = _ua  # asyncua does not re-export its names for mypy
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
PEER_DIR = Path(__file__).parent / "opcua_peer"
CURRENTS = (700.0, 650.0, 720.0)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


@pytest.fixture
async def tr() -> AsyncIterator[TransformerServer]:
    events: list[tuple[Any, ...]] = []
    server = TransformerServer(
        TransformerSpec(tap_writable=True), on_event=lambda *e: events.append(e)
    )
    server.events = events  # type: ignore[attr-defined]
    await server.start()
    yield server
    await server.stop()


async def drive(tr: TransformerServer, minutes: int = 30) -> None:
    await tr.advance(at(0), (0.0, 0.0, 0.0), 25.0)
    for m in range(1, minutes + 1):
        await tr.advance(at(60 * m), CURRENTS, 25.0)
        assert not tr.busy
    await tr.drain()


def expected_thermal(tr: TransformerServer, minutes: int = 30) -> tuple[float, float]:
    s = initial_state(25.0)
    k = load_factor(CURRENTS, tr.spec.rated_current_a)
    for _ in range(minutes):
        s = step(s, k, 25.0, 60.0, tr.spec.thermal)
    return s.top_oil_c, s.hot_spot_c


async def test_asyncua_client_reads_every_node(tr: TransformerServer) -> None:
    await drive(tr)
    oil, hot = expected_thermal(tr)
    async with Client(tr.endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        assert ns == tr.namespace_index == 2
        got = {}
        for key, ident in NODE_IDS.items():
            dv: Any = await client.get_node(f"ns={ns};s={ident}").read_data_value()
            assert dv.StatusCode.is_good()
            got[key] = dv.Value.Value
            if key != "site_import_limit_kw":
                assert dv.SourceTimestamp == at(1800)
                assert dv.ServerTimestamp == at(1800)
        # browse path Objects/Transformer/YPTR1/HotSpotTemp_C
        node = await client.nodes.objects.get_child(
            [f"{ns}:Transformer", f"{ns}:YPTR1", f"{ns}:HotSpotTemp_C"]
        )
        assert node.nodeid.Identifier == "YPTR1.HotSpotTemp"
    expected = tr.values()
    for key, value in got.items():
        assert value == pytest.approx(expected[key]), key
    assert got["current_a_phsA"] == 700.0 and got["current_a_phsC"] == 720.0
    assert got["top_oil_c"] == pytest.approx(oil, abs=1e-9)
    assert got["hot_spot_c"] == pytest.approx(hot, abs=1e-9)
    assert got["loading_pct"] == pytest.approx(100 * 720.0 / tr.spec.rated_current_a)
    assert got["power_w"] == pytest.approx(sum(CURRENTS) * 400 / math.sqrt(3))
    assert got["tap_position"] == 0
    assert got["hot_spot_c"] > got["top_oil_c"] > 25.0
    assert 0 < got["ageing_rate"] < 1 and got["loss_of_life_h"] > 0


async def test_limit_write_validated_and_server_keeps_serving(tr: TransformerServer) -> None:
    await drive(tr, 2)
    async with Client(tr.endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        limit = client.get_node(f"ns={ns};s=Transformer.SiteImportLimit")
        await limit.write_value(ua.Variant(320.5, ua.VariantType.Double))
        assert await limit.read_value() == 320.5
        assert tr.site_import_limit_kw == 320.5
        for bad in (-1.0, math.nan, math.inf):
            with pytest.raises(ua.UaStatusCodeError) as err:
                await limit.write_value(ua.Variant(bad, ua.VariantType.Double))
            assert err.value.code == ua.StatusCodes.BadOutOfRange
        with pytest.raises(ua.UaStatusCodeError) as err:
            await limit.write_value(ua.Variant("lots", ua.VariantType.String))
        assert err.value.code == ua.StatusCodes.BadTypeMismatch
        assert await limit.read_value() == 320.5
        assert tr.site_import_limit_kw == 320.5
        # a multi-item write: the bad item is rejected, the good one applies
        tap = client.get_node(f"ns={ns};s=ATCC1.TapPos")
        params = ua.WriteParameters(
            NodesToWrite=[
                ua.WriteValue(
                    NodeId=limit.nodeid,
                    AttributeId=ua.AttributeIds.Value,
                    Value=ua.DataValue(ua.Variant(-5.0, ua.VariantType.Double)),
                ),
                ua.WriteValue(
                    NodeId=tap.nodeid,
                    AttributeId=ua.AttributeIds.Value,
                    Value=ua.DataValue(ua.Variant(1, ua.VariantType.Int32)),
                ),
            ]
        )
        results = await client.uaclient.write(params)
        assert [r.value for r in results] == [ua.StatusCodes.BadOutOfRange, ua.StatusCodes.Good]
        assert tr.tap_position == 1
        with pytest.raises(ua.UaStatusCodeError) as err:
            await tap.write_value(ua.Variant(3, ua.VariantType.Int32))
        assert err.value.code == ua.StatusCodes.BadOutOfRange
        # read-only values stay read-only
        with pytest.raises(ua.UaStatusCodeError):
            await client.get_node(f"ns={ns};s=YPTR1.HotSpotTemp").write_value(1.0)
        # the server still serves, and the next advance publishes the tapped voltage
        await tr.advance(at(180), CURRENTS, 25.0)
        v = await client.get_node(f"ns={ns};s=MMXU1.PhV.phsA").read_value()
        assert v == pytest.approx(400 / math.sqrt(3) * 1.025)
        assert await limit.read_value() == 320.5
    kinds = [e[2] for e in tr.events]  # type: ignore[attr-defined]
    assert kinds.count("opcua.write_rejected") == 5
    assert "opcua.limit_written" in kinds and "opcua.tap_written" in kinds


async def test_tap_read_only_by_default() -> None:
    server = TransformerServer()
    await server.start()
    try:
        async with Client(server.endpoint, timeout=5) as client:
            tap = client.get_node(f"ns={server.namespace_index};s=ATCC1.TapPos")
            with pytest.raises(ua.UaStatusCodeError):
                await tap.write_value(ua.Variant(1, ua.VariantType.Int32))
        assert server.tap_position == 0
    finally:
        await server.stop()


async def test_advance_rejects_bad_input(tr: TransformerServer) -> None:
    await tr.advance(at(0), (1.0, 2.0, 3.0), 20.0)
    with pytest.raises(ValueError):
        await tr.advance(at(-1), (1.0, 2.0, 3.0), 20.0)
    with pytest.raises(ValueError):
        await tr.advance(at(1), (1.0, 2.0), 20.0)
    with pytest.raises(ValueError):
        await tr.advance(at(1), (1.0, math.nan, 2.0), 20.0)
    with pytest.raises(ValueError):
        await tr.advance(datetime(2025, 1, 1), (1.0, 2.0, 3.0), 20.0)


def _npm_ready() -> str | None:
    """Install node-opcua into tests/devices/opcua_peer once; return a skip reason or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not on PATH"
    if (PEER_DIR / "node_modules" / "node-opcua").is_dir():
        return None
    cmd = ["npm", "ci"] if (PEER_DIR / "package-lock.json").exists() else ["npm", "install"]
    try:
        subprocess.run(
            [*cmd, "--no-audit", "--no-fund"],
            cwd=PEER_DIR,
            check=True,
            timeout=float(os.environ.get("MIGRID_NPM_TIMEOUT_S", "180")),
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"npm install of node-opcua in {PEER_DIR} failed: {exc}"
    return None


async def test_node_opcua_peer_reads_values(tr: TransformerServer) -> None:
    reason = await asyncio.to_thread(_npm_ready)
    if reason:
        pytest.skip(reason)
    await drive(tr)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(PEER_DIR / "read_transformer.js"),
        tr.endpoint,
        NAMESPACE_URI,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, out.decode() + err.decode()
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert "Transformer" in result["objects"]
    assert result["namespaceIndex"] == tr.namespace_index
    assert result["HotSpotTemp"]["status"] == "Good"
    assert result["HotSpotTemp"]["value"] == tr.state.hot_spot_c
    assert result["Loading"]["value"] == pytest.approx(tr.loading_pct, rel=1e-12)
    assert result["Loading"]["value"] == pytest.approx(100 * 720.0 / tr.spec.rated_current_a)
    _, hot = expected_thermal(tr)
    assert result["HotSpotTemp"]["value"] == pytest.approx(hot, abs=1e-9)
    # the peer wrote a limit of 250 kW and a bad one (-1) that was rejected
    assert result["writeGood"] == "Good"
    assert result["writeBad"] == "BadOutOfRange"
    assert tr.site_import_limit_kw == 250.0
