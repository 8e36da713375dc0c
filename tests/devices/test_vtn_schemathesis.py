"""Schemathesis against the emulated VTN, driven by the OpenADR 3.1.0 spec file.

Bounded: examples and fuzzing phases, 20 examples per operation, the implemented
operations only. The VTN runs in this test's event loop; the schemathesis CLI runs as a
subprocess against it with a BL token (a second run uses a VEN token for the report
operations BL may not write). Exclusions are defects of the published spec, see
devices/vtn/README.md.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from devices.vtn.config import ClientConfig, VtnConfig
from devices.vtn.server import VtnServer
from twin.openadr_conformance import SPEC_PATH

T0 = datetime(2021, 7, 1, 12, 0, tzinfo=UTC)

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
])

# No operation is excluded. The runs always carry a valid token: the spec declares no
# 401/403 for listAllNotifiers (only 200) and none for getAuthServerInfo, so token-less
# calls could not conform there (a defect of the published document, see the README);
# the 401/403 paths are exercised by test_vtn.py instead. BL lacks write_reports, so the
# report operations run a second time with a VEN token.
EXCLUDED: tuple[str, ...] = ()


async def _token(base: str, cid: str, secret: str) -> str:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/auth/token", data={"grant_type": "client_credentials",
                                                  "client_id": cid, "client_secret": secret})
        r.raise_for_status()
        return str(r.json()["access_token"])


PARAMETERS = """[parameters]
"path.programID" = "program-1"
"path.eventID" = "event-1"
"path.reportID" = "report-1"
"path.subscriptionID" = "subscription-1"
"path.venID" = "ven-1"
"path.resourceID" = "resource-1"
"""


def _seed(vtn: VtnServer) -> None:
    """One object of each type, so that by-id operations reach their logic."""
    vtn.create("PROGRAM", {"programName": "P"})
    vtn.create("EVENT", {"programID": "program-1", "intervals": []})
    vtn.create("VEN", {"objectType": "VEN", "clientID": "ven-1", "venName": "V"})
    vtn.create("RESOURCE", {"objectType": "RESOURCE", "clientID": "ven-1",
                            "resourceName": "R", "venID": "ven-1"})
    vtn.create("SUBSCRIPTION", {"clientID": "ven-1", "clientName": "V", "objectOperations": [
        {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": "http://127.0.0.1:9/x"}]})
    vtn.create("REPORT", {"clientID": "ven-1", "eventID": "event-1", "clientName": "V",
                          "resources": []})


async def _run(base: str, token: str, config: Path, *extra: str) -> tuple[int, str]:
    exe = Path(sys.executable).with_name("schemathesis")
    args = [
        str(exe), "--config-file", str(config), "run", str(SPEC_PATH), "--url", base,
        "--checks", CHECKS, "--phases", "examples,fuzzing", "--max-examples", "20",
        "--seed", "1", "--workers", "4", "--request-timeout", "5",
        "--header", f"Authorization: Bearer {token}", "--no-color",
        "--suppress-health-check", "all", "--max-failures", "20",
        *(a for op in EXCLUDED for a in ("--exclude-operation-id", op)),
        *extra,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=config.parent)  # its .schemathesis/ cache goes to the test's tmp dir
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.slow
async def test_schemathesis_against_the_spec(tmp_path: Path) -> None:
    cfg = VtnConfig(clients=[ClientConfig(id="bl", secret="bl-secret", role="BL"),
                             ClientConfig(id="ven-1", secret="ven-1-secret", role="VEN")],
                    mqtt_url="mqtt://127.0.0.1:1")  # advertised only: never connected
    vtn = VtnServer(cfg, T0)
    vtn.notifier.mqtt_url = None  # publish nowhere; /notifiers still lists MQTT
    vtn.notifier.echo_check = False
    await vtn.start()
    _seed(vtn)
    config = tmp_path / "schemathesis.toml"
    config.write_text(PARAMETERS, encoding="utf-8")
    try:
        bl = await _token(vtn.base_url, "bl", "bl-secret")
        ven = await _token(vtn.base_url, "ven-1", "ven-1-secret")
        (rc1, out1), (rc2, out2) = await asyncio.gather(
            _run(vtn.base_url, bl, config),
            _run(vtn.base_url, ven, config, "--include-tag", "reports"),
        )
        await vtn.drain()
    finally:
        await vtn.stop()
    assert rc1 == 0, out1[-6000:]
    assert rc2 == 0, out2[-6000:]
