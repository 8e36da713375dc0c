"""SunSpec client against the SunSpec device server over real sockets (port 0)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controllers.site_io import (
    Backoff,
    ModbusExceptionError,
    Reading,
    SiteIoUnavailableError,
    SunSpecClient,
    SunSpecModelError,
    is_stale,
)
from controllers.site_io.sunspec_models import decode_raw, encode_raw, model_def
from devices.sunspec.image import SunSpecImage
from devices.sunspec.server import SunSpecServer

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _image(base: int = 40000) -> SunSpecImage:
    return SunSpecImage(
        [1, 203, 704],
        base=base,
        scale_factors={
            "203.A_SF": -2,
            "203.V_SF": -1,
            "203.Hz_SF": -2,
            "203.W_SF": 1,
            "203.TotWh_SF": 0,
            "704.WMaxLimPct_SF": -1,
            "704.WSet_SF": 0,
            "704.WSetPct_SF": 0,
            "704.PF_SF": -3,
        },
        values={
            "1.Mn": "MiGrid",
            "1.Md": "Meter-X",
            "1.SN": "SN0001",
            "203.A": 123.45,
            "203.PhV": 230.1,
            "203.Hz": 50.01,
            "203.W": 85000,
            "203.TotWhImp": 123456,
            "704.WMaxLimPct": 100.0,
            "704.WMaxLimPctEna": 0,
            "704.WSetEna": 0,
            "704.WSetMod": 0,  # W_MAX_PCT: the client switches it to WATTS
        },
    )


@pytest.fixture
async def server():
    srv = SunSpecServer(_image())
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.close()


def _client(srv: SunSpecServer) -> SunSpecClient:
    assert srv.port is not None
    return SunSpecClient(
        "127.0.0.1",
        srv.port,
        device_id=1,
        timeout_s=0.5,
        backoff=Backoff(timedelta(seconds=1), timedelta(seconds=8)),
    )


async def test_discovery_finds_models(server: SunSpecServer) -> None:
    client = _client(server)
    models = await client.connect(T0)
    assert client.base == 40000
    assert sorted(models) == [1, 203, 704]
    assert models[1][0] == (40002, 66)
    assert models[203][0][1] == model_def(203).length
    assert models[704][0][1] == model_def(704).length
    assert client.busy == 0
    await client.close()


async def test_read_with_scale_factors_and_not_implemented(server: SunSpecServer) -> None:
    client = _client(server)
    common = await client.read_model(1, T0)
    assert common["Mn"].value == "MiGrid"
    assert common["SN"].value == "SN0001"
    r = await client.read_model(203, T0 + timedelta(seconds=1))
    assert r["A"] == Reading(123.45, "A", T0 + timedelta(seconds=1))
    assert r["PhV"].value == pytest.approx(230.1)
    assert r["Hz"].value == pytest.approx(50.01)
    assert r["W"].value == 85000 and r["W"].unit == "W"
    assert r["TotWhImp"].value == 123456
    assert r["VA"].value is None  # not implemented
    assert r["AphB"].value is None
    # the twin changes the registers: the next read sees it
    await server.update({"203.W": -12340})
    pts = await client.read_points(203, ["W"], T0 + timedelta(seconds=2))
    assert pts["W"].value == -12340
    with pytest.raises(SunSpecModelError):
        await client.read_points(203, ["NoSuchPoint"], T0)
    with pytest.raises(SunSpecModelError):
        await client.read_model(702, T0)  # not on this device
    await client.drain()
    await client.close()


async def test_curtailment_and_setpoint_writes_land_in_registers(server: SunSpecServer) -> None:
    client = _client(server)
    await client.set_pv_curtailment(42.5, T0)
    assert server.image.get("704.WMaxLimPct") == pytest.approx(42.5)
    assert server.image.get_raw("704.WMaxLimPct") == 425
    assert server.image.get_raw("704.WMaxLimPctEna") == 1
    await client.set_power_setpoint(-15000, T0)
    assert server.image.get("704.WSet") == -15000
    assert server.image.get_raw("704.WSetEna") == 1
    assert server.image.get_raw("704.WSetMod") == 1  # WATTS
    back = await client.read_model(704, T0)
    assert back["WMaxLimPct"].value == pytest.approx(42.5)
    assert back["WSet"].value == -15000
    with pytest.raises(ValueError):
        await client.set_pv_curtailment(120, T0)
    with pytest.raises(SunSpecModelError):
        await client.write_points(704, {"WSetRvrtRem": 1}, T0)  # read-only
    await client.close()


async def test_illegal_address_surfaces_as_clear_error(server: SunSpecServer) -> None:
    client = _client(server)
    await client.connect(T0)
    end = server.image.end
    with pytest.raises(ModbusExceptionError) as info:
        await client.read_registers(end + 10, 4, T0)
    assert info.value.exception_code == 2
    assert "illegal data address" in str(info.value)
    assert str(end + 10) in str(info.value)
    # the connection survives an exception response
    assert client.connected
    regs = await client.read_registers(40000, 2, T0)
    assert regs == [0x5375, 0x6E53]
    await client.close()


async def test_server_down_then_back_reconnects_after_backoff() -> None:
    srv = SunSpecServer(_image())
    port = await srv.start("127.0.0.1", 0)
    client = _client(srv)
    t = T0
    assert (await client.read_model(203, t))["W"].value == 85000
    await srv.close()

    # server gone: a clean error, back-off starts at t
    t = T0 + timedelta(seconds=10)
    with pytest.raises(SiteIoUnavailableError):
        await client.read_model(203, t)
    assert not client.connected
    assert client.backoff.next_attempt_at == t + timedelta(seconds=1)
    # still down at the next attempt: back-off doubles
    with pytest.raises(SiteIoUnavailableError):
        await client.read_model(203, t + timedelta(seconds=1))
    assert client.backoff.next_attempt_at == t + timedelta(seconds=3)

    srv2 = SunSpecServer(_image())
    await srv2.start("127.0.0.1", port)
    await srv2.update({"203.W": 5000})
    try:
        # back, but back-off is still running on injected time: no attempt yet
        with pytest.raises(SiteIoUnavailableError, match="next attempt"):
            await client.read_model(203, t + timedelta(seconds=2))
        # after the back-off: reconnect, rediscover, read
        r = await client.read_model(203, t + timedelta(seconds=3))
        assert r["W"] == Reading(5000, "W", t + timedelta(seconds=3))
        assert client.connected and client.backoff.failures == 0
        assert client.busy == 0
    finally:
        await client.close()
        await srv2.close()


async def test_busy_counts_request_in_flight(server: SunSpecServer) -> None:
    import asyncio

    client = _client(server)
    await client.connect(T0)
    task = asyncio.create_task(client.read_model(203, T0))
    await asyncio.sleep(0)
    assert client.busy == 1
    await client.drain()
    assert client.busy == 0
    assert task.done()
    assert (await task)["W"].value == 85000
    await client.close()


def test_staleness() -> None:
    r = Reading(1.0, "W", T0)
    assert not is_stale(r, T0 + timedelta(seconds=5), timedelta(seconds=5))
    assert is_stale(r, T0 + timedelta(seconds=5, microseconds=1), timedelta(seconds=5))
    assert is_stale(None, T0, timedelta(seconds=5))
    assert is_stale(Reading(None, "W", T0), T0, timedelta(seconds=5))


def test_encode_decode_roundtrip() -> None:
    p = model_def(704).points["WSet"]
    assert p.offset == 2 + sum(
        q.size for q in model_def(704).points.values() if q.offset < p.offset and q.offset >= 2
    )
    for v in (-1, 0, 123456, -(2**31) + 1):
        assert decode_raw(p, encode_raw(p, v)) == v
    assert decode_raw(p, [0x8000, 0]) is None
    with pytest.raises(ValueError):
        encode_raw(p, 2**31)


@pytest.mark.parametrize("base", [0, 50000])
async def test_discovery_falls_back_to_other_bases(base: int) -> None:
    srv = SunSpecServer(_image(base))
    await srv.start()
    client = _client(srv)
    try:
        models = await client.connect(T0)
        assert client.base == base
        assert sorted(models) == [1, 203, 704]
        assert (await client.read_model(203, T0))["W"].value == 85000
    finally:
        await client.close()
        await srv.close()


def _pysunspec2_values(port: int) -> dict[int, dict[str, object]]:
    """Scaled values as pysunspec2's own (independent) Modbus client reads them."""
    from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

    dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        dev.scan()
        out: dict[int, dict[str, object]] = {}
        for mid in (1, 203, 704):
            model = dev.models[mid][0]
            vals: dict[str, object] = {}
            for name, point in model.points.items():
                vals[name] = point.cvalue
            for gname, group in model.groups.items():
                groups = group if isinstance(group, list) else [group]
                for g in groups:
                    for name, point in g.points.items():
                        vals[f"{gname}.{name}"] = point.cvalue
            out[mid] = vals
        return out
    finally:
        dev.close()


async def test_values_agree_with_pysunspec2_client(server: SunSpecServer) -> None:
    import asyncio

    await server.update({"704.WSet": -2500, "704.WMaxLimPct": 61.2, "704.PFWInj.PF": 0.95})
    assert server.port is not None
    theirs = await asyncio.to_thread(_pysunspec2_values, server.port)
    client = _client(server)
    try:
        for mid in (1, 203, 704):
            ours = await client.read_model(mid, T0)
            compared = 0
            for name, value in theirs[mid].items():
                if name not in ours or name in ("ID", "L", "Pad"):
                    continue
                mine = ours[name].value
                if isinstance(value, float) or isinstance(mine, float):
                    assert mine == pytest.approx(value), (mid, name)
                else:
                    assert mine == value, (mid, name)
                compared += 1
            assert compared >= len(ours) - 3, (mid, compared, len(ours))
    finally:
        await client.close()


async def test_silent_peer_times_out_cleanly() -> None:
    """A peer that accepts the connection and never answers: a clean error, back-off."""
    import asyncio

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    client = SunSpecClient("127.0.0.1", port, timeout_s=0.2)
    try:
        with pytest.raises(SiteIoUnavailableError):
            await client.connect(T0)
        assert not client.connected and client.busy == 0
        assert client.backoff.next_attempt_at == T0 + timedelta(seconds=1)
    finally:
        await client.close()
        for w in writers:
            w.close()
        srv.close()
        await srv.wait_closed()


async def test_wrong_unit_id_is_a_clear_error(server: SunSpecServer) -> None:
    from controllers.site_io import SiteIoProtocolError

    assert server.port is not None
    client = SunSpecClient("127.0.0.1", server.port, device_id=7, timeout_s=0.5)
    with pytest.raises(SiteIoProtocolError, match=r"no SunS marker.*unit 7.*exception"):
        await client.connect(T0)
    await client.close()


async def test_write_by_symbol_and_disable(server: SunSpecServer) -> None:
    client = _client(server)
    await client.write_points(704, {"WSetMod": "WATTS", "WSetEna": "ENABLED"}, T0)
    assert server.image.get_raw("704.WSetEna") == 1
    await client.set_pv_curtailment(100, T0, enable=False)
    assert server.image.get_raw("704.WMaxLimPctEna") == 0
    with pytest.raises(SunSpecModelError, match="not one of"):
        await client.write_points(704, {"WSetEna": "MAYBE"}, T0)
    await client.close()


_INT_TYPES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "acc32": 2, "int64": 4}


@pytest.mark.parametrize("ptype", sorted(_INT_TYPES))
def test_decode_agrees_with_image_encoding(ptype: str) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from controllers.site_io.sunspec_models import PointDef
    from devices.sunspec.image import encode

    size = _INT_TYPES[ptype]
    bits = 16 * size
    signed = ptype.startswith("int")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    point = PointDef("X", 2, size, ptype, None, None, "RW", False, {})

    @settings(max_examples=200, deadline=None)
    @given(st.integers(lo, hi))
    def check(v: int) -> None:
        regs = encode(ptype, v, size)
        assert encode_raw(point, v) == regs
        decoded = decode_raw(point, regs)
        not_impl = decode_raw(point, encode(ptype, None, size))
        assert not_impl is None
        if regs == encode(ptype, None, size):
            assert decoded is None
        else:
            assert decoded == v

    check()


def _layout_matches_image(img: SunSpecImage) -> None:
    import re

    from controllers.site_io.sunspec_models import device_model_def

    for m in img.models:
        regs = img.registers[m.address - img.base : m.address - img.base + m.length + 2]
        mdef = device_model_def(m.model_id, m.length, regs)
        assert mdef.length == m.length, m.model_id
        ours = {p.offset: p.size for p in mdef.points.values() if p.offset >= 2}
        theirs = {
            spec.address - m.address: spec.size
            for key, spec in img.points.items()
            if spec.model_id == m.model_id and key not in (f"{m.model_id}.ID", f"{m.model_id}.L")
        }
        assert ours == theirs, m.model_id
        for key, spec in img.points.items():
            if spec.model_id != m.model_id or key in (f"{m.model_id}.ID", f"{m.model_id}.L"):
                continue
            name = key.split(".", 1)[1]
            if name not in mdef.points:  # the image leaves a single repetition unindexed
                name = re.sub(r"^([\w-]+)\.", r"\1[0].", name)
            assert mdef.points[name].offset == spec.address - m.address, key


def test_layout_of_every_official_model_agrees_with_the_device_image() -> None:
    import glob
    import os
    import re

    import sunspec2

    folder = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")
    ids = sorted(
        int(re.search(r"model_(\d+)\.json$", f).group(1))  # type: ignore[union-attr]
        for f in glob.glob(os.path.join(folder, "model_*.json"))
    )
    assert len(ids) > 100
    for mid in ids:
        _layout_matches_image(SunSpecImage([mid]))


def test_nested_repeating_groups_follow_their_count_points() -> None:
    img = SunSpecImage(
        [705],
        group_counts={"705.Crv": 2, "705.Crv[0].Pt": 3, "705.Crv[1].Pt": 3},
    )
    _layout_matches_image(img)


async def test_bess_and_pv_devices_take_setpoints() -> None:
    """Against the emulated BESS and PV (devices.sunspec.devices): set-points take effect."""
    from devices.sunspec.devices import BessDevice, PvInverterDevice

    bess = BessDevice(T0, config={"capacity_kwh": 200, "max_charge_kw": 100,
                                  "max_discharge_kw": 100, "soc": 0.5})  # fmt: skip
    pv = PvInverterDevice(T0, config={"rated_kw": 50})
    bport, pport = await bess.start(), await pv.start()
    bc = SunSpecClient("127.0.0.1", bport, timeout_s=0.5)
    pc = SunSpecClient("127.0.0.1", pport, timeout_s=0.5)
    try:
        assert sorted(await bc.connect(T0)) == [1, 701, 702, 704, 713, 802]
        await bc.set_power_setpoint(40000, T0)  # discharge 40 kW
        assert bess.image.get("704.WSet") == 40000
        assert bess.image.get_raw("704.WSetEna") == 1
        t1 = T0 + timedelta(minutes=15)
        await bess.advance(t1)
        w = (await bc.read_points(701, ["W"], t1))["W"]
        assert w.value == pytest.approx(40000, rel=0.02) and w.measured_at == t1
        # a set-point beyond the device's limits is refused: exception 3, a clear error
        with pytest.raises(ModbusExceptionError) as info:
            await bc.set_power_setpoint(500000, t1)
        assert info.value.exception_code == 3

        await pc.set_pv_curtailment(30.0, T0)
        assert pv.image.get("704.WMaxLimPct") == pytest.approx(30.0)
        assert pv.image.get_raw("704.WMaxLimPctEna") == 1
    finally:
        for c in (bc, pc):
            await c.close()
        await bess.close()
        await pv.close()
