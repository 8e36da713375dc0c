"""End to end with grid events: the ERCOT Uri scenario, short form, real sockets.

The emulated VTN serves OpenADR 3.1 over HTTP on loopback with OAuth2; the VEN
authenticates, registers and reads the PRICE program (real ERCOT prices) and the EEA
events; the DLM follows the grid signal; an uncontrolled run of the same hours is the
comparison.
"""

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from twin.kpis import VIOLATION_TOLERANCE_KW
from twin.session_run import run_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
EEA1 = pd.Timestamp("2021-02-15T06:15:00Z")
EEA2 = pd.Timestamp("2021-02-15T07:07:00Z")
EEA3 = pd.Timestamp("2021-02-15T07:25:00Z")


@pytest.fixture(scope="module")
def uri_run(tmp_path_factory, data_sets) -> Path:
    sc = yaml.safe_load((SCENARIOS / "ercot_uri_2021-02-15.yaml").read_text())
    sc["stations"] = [
        {"prefix": "CA", "count": 9, "kind": "ac_22kw", "ocpp_version": "2.0.1"},
        {"prefix": "CB", "count": 3, "kind": "ac_22kw", "ocpp_version": "1.6"},
    ]
    # the night of EEA1-3 plus the morning arrivals; no price ceiling, so that the
    # shed levels of the events themselves show
    sc["run"].update(duration_h=5)
    sc["grid"]["response"]["price_ceiling_per_mwh"] = None
    sc["sessions"]["replay_from"] = "2019-09-09T12:00:00Z"  # start with the morning
    tmp = tmp_path_factory.mktemp("uri")
    path = tmp / "uri.yaml"
    path.write_text(yaml.safe_dump(sc))
    out = tmp / "run"
    asyncio.run(run_scenario(path, out=out))
    return out


def signals(run: Path) -> pd.DataFrame:
    ev = pd.read_parquet(run / "events.parquet")
    sig = ev[ev.kind == "grid.signal"].copy()
    sig["p"] = sig.payload.map(json.loads)
    return sig


@pytest.mark.slow
def test_ven_gets_the_events_over_openadr(uri_run) -> None:
    ev = pd.read_parquet(uri_run / "events.parquet")
    kinds = ev.kind.value_counts()
    assert kinds.get("ven.registered", 0) == 1
    received = ev[ev.kind == "ven.event_received"].payload.map(json.loads)
    ids = {p["event_id"] for p in received}
    assert {"EEA1-2021-02-15", "EEA2-2021-02-15", "EEA3-2021-02-15"} <= ids
    assert "ERCOT-DAM-HB_HOUSTON-2021-02-15" in ids  # the day-ahead prices, published the eve
    # the site reported USAGE and DEMAND when the EEA1 and EEA2 intervals ended
    sent = ev[ev.kind == "ven.report_sent"]
    assert list(sent.time) == [EEA2, EEA3]
    assert all(json.loads(p).get("event_id") in ("EEA1-2021-02-15", "EEA2-2021-02-15")
               for p in sent.payload)


@pytest.mark.slow
def test_grid_signal_follows_the_eea_timeline(uri_run) -> None:
    sig = signals(uri_run).set_index("time")["p"]
    assert sig[EEA1]["simple_level"] == 1 and sig[EEA1]["ev_share"] == 0.75
    assert sig[EEA2]["import_limit_kw"] == 60 and sig[EEA2]["simple_level"] == 2
    assert sig[EEA3]["emergency"] and sig[EEA3]["import_limit_kw"] == 30
    # the real price of that hour came with the PRICE program
    assert sig[EEA3]["price_per_mwh"] > 1000


@pytest.mark.slow
def test_limits_hold_and_evs_are_shed_in_the_emergency(uri_run) -> None:
    kpis = json.loads((uri_run / "kpis.json").read_text())["kpis"]
    assert kpis["grid_limit_violations"]["value"] == 0
    traces = pd.read_parquet(uri_run / "traces.parquet")
    site = traces[traces.entity == "site"].pivot_table(index="time", columns="quantity",
                                                       values="value")
    limited = site["grid_event_limit_kw"].notna()
    assert limited.sum() > 200
    assert (site.loc[limited, "import_kw"]
            <= site.loc[limited, "grid_event_limit_kw"] + VIOLATION_TOLERANCE_KW).all()
    sp = traces[(traces.quantity == "setpoint_a") & (traces.time > EEA3 + pd.Timedelta("1min"))]
    assert len(sp) > 0
    assert set(sp.value.round(3)) <= {0.0, 6.0}  # minimum current or paused


@pytest.mark.slow
def test_compared_with_the_uncontrolled_day(uri_run) -> None:
    kpis = json.loads((uri_run / "kpis.json").read_text())["kpis"]
    base = json.loads((uri_run / "uncontrolled" / "kpis.json").read_text())["kpis"]
    assert "grid_event_steps" not in base  # no grid events there
    assert kpis["energy_cost"]["unit"] == "USD"
    assert float(kpis["energy_cost_saving"]["value"]) > 0
    moved = kpis["energy_moved_out_of_emergency_kwh"]["value"]
    assert moved == pytest.approx(kpis["emergency_ev_energy_uncontrolled_kwh"]["value"]
                                  - kpis["emergency_ev_energy_kwh"]["value"], abs=1e-6)
    assert moved > 0
