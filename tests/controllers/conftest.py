"""Fixtures for the controller tests (helpers live in csms_testkit.py)."""

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from csms_testkit import NOW, Harness, MakeHarness, kw_for_a

from controllers.csms import Csms, CsmsConfig, EvseConfig, SiteConfig


@pytest.fixture
async def harness() -> AsyncIterator[MakeHarness]:
    made: list[Harness] = []

    async def make(
        grid_limit_kw: float = kw_for_a(40),
        *,
        evses: dict[str, list[EvseConfig]] | None = None,
        **config: Any,
    ) -> Harness:
        events: list[tuple[Any, ...]] = []
        site = config.pop("site", SiteConfig(grid_limit_kw=grid_limit_kw))
        csms = Csms(
            CsmsConfig(site=site, evses=evses or {}, **config),
            on_event=lambda *e: events.append(e),
            perf_counter=time.perf_counter,
        )
        csms.set_now(NOW)
        csms.set_non_ev_load(0.0, NOW)
        port = await csms.start()
        h = Harness(csms, port, events)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.close()
