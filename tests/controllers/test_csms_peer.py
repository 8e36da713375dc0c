"""An independent OCPP station (PyPI ``test-ocpp``) against the CSMS, as a subprocess.

``test-ocpp`` negotiates the subprotocol, sends BootNotification and Heartbeat with its
own JSON framing (no ocpp library), prints every frame and answers CALLs of the server
with NotImplemented.
"""

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from csms_testkit import MakeHarness

TEST_OCPP = shutil.which("test-ocpp", path=str(Path(sys.executable).parent)) or shutil.which(
    "test-ocpp"
)


@pytest.mark.skipif(TEST_OCPP is None, reason="test-ocpp is not installed")
@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
async def test_independent_station_boots_without_callerror(
    harness: MakeHarness, version: str
) -> None:
    h = await harness(known_stations=["PEER-1"])
    assert TEST_OCPP is not None
    proc = await asyncio.create_subprocess_exec(
        TEST_OCPP,
        f"ws://127.0.0.1:{h.port}/ocpp",
        "PEER-1",
        "--ocpp",
        version,
        "--timeout",
        "10",
        "--vendor",
        "PeerVendor",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(30):
            out_bytes, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = out_bytes.decode()
    assert proc.returncode == 0, out
    assert "SUCCESS" in out
    assert f"Negotiated subprotocol: ocpp{version}" in out
    assert "BootNotification status: Accepted" in out
    received = [line for line in out.splitlines() if line.startswith("<-- ")]
    assert not [line for line in received if line.startswith("<-- [4,")], out
    await h.csms.drain()
    station = h.csms.registry.stations["PEER-1"]
    assert (station.vendor, station.model, station.ocpp_version) == (
        "PeerVendor",
        "TestModel",
        version,
    )
    assert not [e for e in h.kinds("ocpp.callerror") if e["direction"] == "sent"]
