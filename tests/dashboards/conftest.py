"""Two small real runs (real Caltech sessions, real OCPP exchanges) for the dashboard tests.

Run A and run B are the same six morning hours of 10 Sep 2019 on 8 AC EVSEs; B has a
tighter grid limit, so their traces and KPIs differ.
"""

import asyncio
from pathlib import Path

import pytest
import yaml

from twin.session_run import run_scenario


def _scenario(name: str, limit_kw: float, strategy: str) -> dict:
    return {
        "name": name,
        "site": {"grid_limit_kw": limit_kw, "safety_margin_kw": 1,
                 "timezone": "America/Los_Angeles",
                 "base_load": {"kind": "constant", "power_kw": 3}},
        "stations": [{"prefix": "CA", "count": 6, "kind": "ac_22kw", "ocpp_version": "2.0.1"},
                     {"prefix": "CB", "count": 2, "kind": "ac_11kw", "ocpp_version": "1.6"}],
        "sessions": {"dataset": "acn_caltech"},
        "prices": {"dataset": "nl_day_ahead", "align": "local_clock"},
        "controllers": {"dlm": {"strategy": strategy}},
        "run": {"start": "2019-09-10T14:00:00Z", "duration_h": 6, "step_s": 60, "seed": 3},
    }


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """A runs/ folder holding run A (40 kW, llf) and run B (25 kW, equal)."""
    root = tmp_path_factory.mktemp("runs")
    for name, limit, strategy in (("morning_a", 40.0, "llf"), ("morning_b", 25.0, "equal")):
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_scenario(name, limit, strategy)))
        asyncio.run(run_scenario(path, out=root / name))
    return root


@pytest.fixture(scope="session")
def run_a(runs_root: Path) -> Path:
    return runs_root / "morning_a"


@pytest.fixture(scope="session")
def run_b(runs_root: Path) -> Path:
    return runs_root / "morning_b"
