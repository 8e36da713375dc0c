"""The site energy controller against the real emulators, over real sockets.

Meter, PV inverter and BESS are the project's SunSpec Modbus TCP servers, the transformer
its OPC UA server; the controller reaches them only through their endpoints. A small
stand-in for the CSMS (pure bookkeeping: what the DLM would be told) takes its outputs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Client, ua

from controllers.site_control import BessLimits, SiteControlConfig
from controllers.site_energy import SiteEnergyController, TransformerNodes
from controllers.site_io import Backoff, OpcUaClient, SunSpecClient
from devices.sunspec.serve import make_device
from devices.transformer.server import NAMESPACE_URI, TransformerServer, TransformerSpec

T0 = datetime(2019, 9, 11, 19, 0, tzinfo=UTC)  # noon in Pasadena: the sun is up
NODES = TransformerNodes(
    limit_kw=f"nsu={NAMESPACE_URI};s=Transformer.SiteImportLimit",
    loading_pct=f"nsu={NAMESPACE_URI};s=YPTR1.Loading",
    hot_spot_c=f"nsu={NAMESPACE_URI};s=YPTR1.HotSpotTemp",
)


class CsmsSide:
    """What the CSMS is told (stand-in for the EV side in a unit test of the site side)."""

    def __init__(self, ev_kw: float = 20.0, ev_min_kw: float = 4.1) -> None:
        self.ev_kw = ev_kw
        self.ev_min_kw = ev_min_kw
        self.non_ev: list[float | None] = []
        self.limits: list[float | None] = []

    def ev_power_kw(self) -> float:
        return self.ev_kw

    def ev_minimum_kw(self) -> float:
        return self.ev_min_kw

    def set_non_ev_load(self, power_kw: float | None, measured_at: datetime) -> None:
        self.non_ev.append(power_kw)

    def set_external_limit(self, power_kw: float | None, valid_until=None) -> None:
        self.limits.append(power_kw)


@pytest.fixture
async def site():
    meter = make_device("meter", T0, {"power_w": [30_000, 30_000, 30_000]})
    pv = make_device("pv", T0, {"rated_kw": 50, "utc_offset_h": -8})
    bess = make_device("bess", T0, {"capacity_kwh": 100, "max_charge_kw": 40,
                                     "max_discharge_kw": 40, "soc": 0.5})
    ports = {name: await d.start("127.0.0.1", 0)
             for name, d in (("meter", meter), ("pv", pv), ("bess", bess))}
    tr = TransformerServer(TransformerSpec(rated_power_kva=160, site_import_limit_kw=150))
    endpoint = await tr.start()
    await tr.advance(T0, (130.0, 130.0, 130.0), 25.0)

    def client(name: str) -> SunSpecClient:
        return SunSpecClient("127.0.0.1", ports[name], backoff=Backoff())

    devices = {"meter": meter, "pv": pv, "bess": bess, "transformer": tr,
               "endpoint": endpoint, "client": client}
    yield devices
    for d in (meter, pv, bess):
        await d.close()
    await tr.stop()


def controller(site, *, with_bess: bool = True, **cfg) -> SiteEnergyController:
    limits = BessLimits(capacity_kwh=100, max_charge_kw=40, max_discharge_kw=40)
    config = SiteControlConfig(
        grid_limit_kw=200, peak_shave_kw=60, measurement_timeout_s=90,
        bess=limits if with_bess else None, **cfg,
    )
    transformer = OpcUaClient(site["endpoint"], NODES.all(), limit_node_id=NODES.limit_kw,
                              subscribe=False)
    return SiteEnergyController(
        config, meter=site["client"]("meter"), pv=site["client"]("pv"),
        bess=site["client"]("bess") if with_bess else None, transformer=transformer,
        transformer_nodes=NODES, pv_rated_kw=50,
    )


async def advance_all(site, t: datetime) -> None:
    for name in ("meter", "pv", "bess"):
        await site[name].advance(t)
    await site["transformer"].advance(t, (130.0, 130.0, 130.0), 25.0)


async def test_reads_decides_and_commands_the_bess_over_modbus(site) -> None:
    ctl = controller(site)
    csms = CsmsSide(ev_kw=20)
    try:
        await advance_all(site, T0)
        d = await ctl.step(T0, 60, csms)
        # 90 kW at the meter: 70 kW besides the EVs; 30 kW above the 60 kW threshold
        assert ctl.measured["site_import_kw"].value == pytest.approx(90.0, abs=0.1)
        assert d.bess_setpoint_kw == pytest.approx(30.0, abs=0.1)
        assert site["bess"].image.get("704.WSet") == pytest.approx(30_000, abs=1)
        assert site["bess"].image.get("704.WSetEna") == 1
        # the discharge is no headroom for the EVs: non-EV load stays 70 kW
        assert csms.non_ev[-1] == pytest.approx(70.0, abs=0.1)
        # the transformer's limit came over OPC UA
        assert d.site_limit_kw == pytest.approx(150.0)
        # the BESS delivers over the next minute; its SoC falls
        t1 = T0 + timedelta(minutes=1)
        await advance_all(site, t1)
        assert site["bess"].bess.power_kw == pytest.approx(30.0, abs=0.1)
        await ctl.step(t1, 60, csms)
        assert ctl.measured["bess_power_kw"].value == pytest.approx(30.0, abs=0.1)
        assert ctl.measured["bess_soc"].value < 0.5
    finally:
        await ctl.close()


async def test_operator_lowers_the_transformer_limit_over_opc_ua(site) -> None:
    ctl = controller(site)
    csms = CsmsSide()
    try:
        await advance_all(site, T0)
        await ctl.step(T0, 60, csms)
        assert csms.limits[-1] == pytest.approx(150.0)
        async with Client(site["endpoint"]) as operator:
            idx = await operator.get_namespace_index(NAMESPACE_URI)
            node = operator.get_node(f"ns={idx};s=Transformer.SiteImportLimit")
            await node.write_value(ua.DataValue(ua.Variant(100.0, ua.VariantType.Double)))
        t1 = T0 + timedelta(minutes=1)
        await advance_all(site, t1)
        d = await ctl.step(t1, 60, csms)
        assert d.site_limit_kw == pytest.approx(100.0)
        assert csms.limits[-1] == pytest.approx(100.0)
    finally:
        await ctl.close()


async def test_export_limit_curtails_the_inverter_over_modbus(site) -> None:
    ctl = controller(site, with_bess=False, export_limit_kw=0.0)  # nothing to store it
    site["meter"].set_power_w(-10_000, -10_000, -10_000)  # 30 kW exported
    csms = CsmsSide(ev_kw=0)
    try:
        await advance_all(site, T0)
        pv_kw = site["pv"].pv.power_kw
        assert pv_kw > 35  # a sunny September noon
        d = await ctl.step(T0, 60, csms)
        assert d.pv_limit_kw is not None
        pct = site["pv"].image.get("704.WMaxLimPct")
        assert pct == pytest.approx(d.pv_limit_kw / 50 * 100, abs=0.1)
        assert site["pv"].pv.limit_pct == pytest.approx(pct)
    finally:
        await ctl.close()


async def test_dead_meter_is_fail_safe_and_stops_the_bess(site) -> None:
    ctl = controller(site)
    csms = CsmsSide(ev_kw=20)
    try:
        await advance_all(site, T0)
        await ctl.step(T0, 60, csms)
        assert site["bess"].image.get("704.WSet") != 0
        await site["meter"].close()  # the meter's link is lost
        t = T0
        for _ in range(3):  # 3 minutes > the 90 s timeout
            t += timedelta(minutes=1)
            await advance_all(site, t)
            d = await ctl.step(t, 60, csms)
        assert d.fail_safe
        assert csms.non_ev[-1] is None  # unknown, never zero
        assert site["bess"].image.get("704.WSet") == 0  # no discharge
    finally:
        await ctl.close()


async def test_frozen_meter_is_detected_and_fail_safe(site) -> None:
    """The meter keeps answering, its registers stop: energy counters give it away."""
    ctl = controller(site)
    csms = CsmsSide(ev_kw=20)
    events: list[tuple[str, dict]] = []
    ctl.on_event = lambda source, kind, payload: events.append((kind, payload))
    try:
        t = T0
        for _ in range(2):  # the energy registers count (0 reads as not implemented)
            await advance_all(site, t)
            d = await ctl.step(t, 60, csms)
            t += timedelta(minutes=1)
        assert not d.fail_safe
        site["meter"].frozen = True  # the physics goes on, the registers do not
        for _ in range(3):  # 120 s and more > the 90 s timeout
            await advance_all(site, t)
            d = await ctl.step(t, 60, csms)
            t += timedelta(minutes=1)
        assert d.fail_safe and csms.non_ev[-1] is None
        assert [k for k, _ in events].count("site.meter_frozen") == 1
        site["meter"].frozen = False
        await advance_all(site, t)
        d = await ctl.step(t, 60, csms)
        assert not d.fail_safe and "site.meter_unfrozen" in [k for k, _ in events]
    finally:
        await ctl.close()
