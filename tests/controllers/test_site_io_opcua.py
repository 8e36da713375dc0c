"""OPC UA client against a small asyncua server over real sockets (port 0)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from asyncua import Server, ua

from controllers.site_io import Backoff, OpcUaClient, SiteIoUnavailableError, is_stale

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

# one server for the module (an asyncua server takes ~2 s to start and 1 s to stop)
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A small OPC UA server: site power, transformer top-oil temperature, import limit."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/migrid/"
        self.server = Server()
        self.nodes: dict[str, str] = {}

    async def start(self, power_kw: float = 50.0) -> None:
        await self.server.init()
        self.server.set_endpoint(self.url)
        ns = await self.server.register_namespace("urn:migrid:test:site")
        site = await self.server.nodes.objects.add_object(ns, "Site")
        p = await site.add_variable(f"ns={ns};s=Site.P", "P", power_kw, ua.VariantType.Double)
        t = await site.add_variable(f"ns={ns};s=YPTR.TopOilTmp", "TopOil", 40.0)
        lim = await site.add_variable(f"ns={ns};s=Site.ImportLimit", "Limit", 100.0)
        ro = await site.add_variable(f"ns={ns};s=Site.ReadOnly", "ReadOnly", 1.0)
        await lim.set_writable()
        self.nodes = {
            "p": p.nodeid.to_string(),
            "t": t.nodeid.to_string(),
            "lim": lim.nodeid.to_string(),
            "ro": ro.nodeid.to_string(),
        }
        await self.server.start()

    async def set(self, key: str, value: float, ts: datetime) -> None:
        await self.server.write_attribute_value(
            ua.NodeId.from_string(self.nodes[key]),
            ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=ts),
        )

    async def get(self, key: str) -> float:
        node = self.server.get_node(self.nodes[key])
        return float(await node.read_value())

    async def stop(self) -> None:
        await self.server.stop()


async def _until(cond, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def _client(site: Site, limit: str | None = None) -> OpcUaClient:
    return OpcUaClient(
        site.url,
        [site.nodes["p"], site.nodes["t"]],
        limit_node_id=limit or site.nodes["lim"],
        units={site.nodes["p"]: "kW", site.nodes["t"]: "degC"},
        publishing_interval_ms=20,
        timeout_s=1.0,
        backoff=Backoff(timedelta(seconds=1), timedelta(seconds=8)),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site():
    s = Site(_free_port())
    await s.start()
    yield s
    await s.stop()


async def test_subscription_delivers_values_and_changes(site: Site) -> None:
    client = _client(site)
    await client.connect(T0)
    assert client.connected and client.busy == 0
    await _until(lambda: client.reading(site.nodes["p"]) is not None)
    first = client.reading(site.nodes["p"])
    assert first is not None and first.value == 50.0 and first.unit == "kW"
    assert first.measured_at <= T0  # never later than the injected now

    client.set_now(T0 + timedelta(seconds=10))
    await site.set("p", 72.5, T0 + timedelta(seconds=9))
    await _until(lambda: client.reading(site.nodes["p"]).value == 72.5)
    r = client.reading(site.nodes["p"])
    assert r.measured_at == T0 + timedelta(seconds=9)  # the source timestamp
    assert not is_stale(r, T0 + timedelta(seconds=10), timedelta(seconds=5))
    assert is_stale(r, T0 + timedelta(seconds=15), timedelta(seconds=5))
    # a source timestamp ahead of injected time is clamped to now
    await site.set("t", 55.0, T0 + timedelta(hours=1))
    await _until(lambda: client.reading(site.nodes["t"]).value == 55.0)
    assert client.reading(site.nodes["t"]).measured_at == T0 + timedelta(seconds=10)
    await client.drain()
    await client.close()


async def test_write_import_limit(site: Site) -> None:
    client = _client(site)
    assert await client.step(T0)
    await client.write_import_limit(80.5, T0)
    assert await site.get("lim") == 80.5
    assert client.busy == 0
    await client.close()


async def test_write_refused_is_a_protocol_error(site: Site) -> None:
    from controllers.site_io import SiteIoProtocolError

    client = _client(site, limit=site.nodes["ro"])
    await client.connect(T0)
    with pytest.raises(SiteIoProtocolError, match=r"BadUserAccessDenied|BadNotWritable"):
        await client.write_import_limit(10.0, T0)
    assert client.connected  # a refused write keeps the session
    await client.close()


async def test_server_down_then_back_reconnects_after_backoff() -> None:
    port = _free_port()
    site = Site(port)
    await site.start(power_kw=50.0)
    client = _client(site)
    await client.connect(T0)
    await _until(lambda: client.reading(site.nodes["p"]) is not None)
    await site.stop()
    await _until(lambda: not client.connected)

    t = T0 + timedelta(seconds=10)
    assert not await client.step(t)  # noticed: torn down, back-off starts
    assert client.backoff.next_attempt_at == t + timedelta(seconds=1)
    with pytest.raises(SiteIoUnavailableError):
        await client.write_import_limit(10.0, t)
    assert not await client.step(t + timedelta(seconds=1))  # still down: back-off doubles
    assert client.backoff.next_attempt_at == t + timedelta(seconds=3)
    # the cached reading survives and goes stale
    old = client.reading(site.nodes["p"])
    assert old is not None and is_stale(old, t + timedelta(seconds=3), timedelta(seconds=5))

    site2 = Site(port)
    await site2.start(power_kw=61.0)
    try:
        assert not await client.step(t + timedelta(seconds=2))  # back-off still running
        assert await client.step(t + timedelta(seconds=3))  # reconnected, subscribed again
        await _until(lambda: client.reading(site2.nodes["p"]).value == 61.0)
        await client.write_import_limit(42.0, t + timedelta(seconds=3))
        assert await site2.get("lim") == 42.0
        assert client.backoff.failures == 0 and client.busy == 0
    finally:
        await client.close()
        await site2.stop()


async def test_busy_counts_write_in_flight(site: Site) -> None:
    client = _client(site)
    await client.connect(T0)
    task = asyncio.create_task(client.write_import_limit(12.0, T0))
    await asyncio.sleep(0)
    assert client.busy == 1
    await client.drain()
    assert client.busy == 0 and task.done()
    await task
    assert await site.get("lim") == 12.0
    await client.close()


async def test_unknown_node_is_a_clear_error(site: Site) -> None:
    from controllers.site_io import SiteIoProtocolError

    client = OpcUaClient(site.url, ["ns=2;s=NoSuchNode"], timeout_s=1.0)
    with pytest.raises(SiteIoProtocolError, match="NoSuchNode"):
        await client.connect(T0)
    assert not client.connected
    await client.close()
    client = OpcUaClient(site.url, ["nsu=urn:nowhere;s=X"], timeout_s=1.0)
    with pytest.raises(SiteIoProtocolError, match="urn:nowhere"):
        await client.connect(T0)
    await client.close()


async def test_against_the_transformer_emulator() -> None:
    """Node ids by namespace URI, values with the emulator's timestamps, limit writes."""
    from controllers.site_io import SiteIoProtocolError
    from devices.transformer.server import NAMESPACE_URI, TransformerServer

    tr = TransformerServer()
    url = await tr.start()
    top = f"nsu={NAMESPACE_URI};s=YPTR1.TopOilTemp"
    power = f"nsu={NAMESPACE_URI};s=MMXU1.TotW"
    client = OpcUaClient(
        url,
        [top, power],
        limit_node_id=f"nsu={NAMESPACE_URI};s=Transformer.SiteImportLimit",
        units={top: "degC", power: "W"},
        publishing_interval_ms=20,
    )
    try:
        t1 = T0 + timedelta(minutes=1)
        await tr.advance(T0, [0.0, 0.0, 0.0], 20.0)
        await client.connect(T0)
        await tr.advance(t1, [400.0, 400.0, 400.0], 20.0)
        client.set_now(t1)
        await _until(lambda: (r := client.reading(power)) is not None and r.measured_at == t1)
        assert client.reading(power).value > 0 and client.reading(power).unit == "W"
        assert client.reading(top).measured_at == t1
        await client.write_import_limit(321.5, t1)
        assert tr.site_import_limit_kw == 321.5
        with pytest.raises(SiteIoProtocolError, match="BadOutOfRange"):
            await client.write_import_limit(-1.0, t1)
        assert tr.site_import_limit_kw == 321.5 and client.connected
    finally:
        await client.close()
        await tr.stop()
