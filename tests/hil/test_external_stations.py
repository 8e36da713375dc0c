"""Stations no one here wrote, attached to a bench as if they were physical chargers.

Each test runs ``migrid bench``'s runtime (:func:`hil.session.run_bench`, CSMS on
127.0.0.1 port 0, wall clock) with the stations listed as physical, then starts the
stations as separate OS processes that connect on their own:

- ``test-ocpp`` (PyPI, its command line): OCPP 1.6 and 2.0.1 BootNotification and
  Heartbeat over ``wss://``, security profile 2 (HTTP Basic) and 3 (client certificate);
- ``em-ocpp-chargepoint-simulator`` (npm, OCPP 1.6, scripted by
  ``ocpp16_peer/charge_point.js``): boot, status, authorize, a transaction with meter
  values, SetChargingProfile answered; profile 3 with a client certificate;
- the project's own emulator, ``python -m hil.station``, over ``wss://`` at profiles 2
  and 3, with wrong credentials beside the right ones.

A CA, the CSMS's server certificate and the station certificates are made in the test
(``testpki.py`` beside this file). What is asserted is what the CSMS saw (the run
folder's ``events.parquet``) and the stations' own output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from testpki import Pki, make_pki

from controllers.csms.security import hash_password
from hil.runtime import BenchRuntime
from hil.session import run_bench

ROOT = Path(__file__).resolve().parents[2]
TEST_OCPP = Path(sys.executable).with_name("test-ocpp")
PEER_DIR = Path(__file__).resolve().parent / "ocpp16_peer"
EM_SIMULATOR = PEER_DIR / "node_modules" / "em-ocpp-chargepoint-simulator" / "build" / "src"

PW_A = "station-a-password-0123"  # OCPP 2.0.1 passwordString: 16..40 characters
PW_B = "station-b-password-4567"
PW_WRONG = "not-the-password-890123"

STATIONS = ("TO-201", "TO-16", "EM-16", "PROC-A", "PROC-B")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), clients=STATIONS, rogue_cn="PROC-B")


def _security(pki: Pki, profile: int, passwords: dict[str, str] | None = None) -> dict:
    sec: dict[str, Any] = {"profile": profile, "tls_cert_file": pki.server_cert,
                           "tls_key_file": pki.server_key}
    if profile == 3:
        sec["tls_ca_file"] = pki.ca
    if passwords:
        sec["passwords"] = {sid: hash_password(pw) for sid, pw in passwords.items()}
    return sec


def _bench(name: str, stations: list[dict], security: dict, grid_limit_kw: float = 10) -> dict:
    return {
        "name": name,
        "site": {"grid_limit_kw": grid_limit_kw},
        "csms": {"host": "127.0.0.1", "port": 0, "security": security},
        "stations": stations,
        "run": {"step_s": 0.5, "record_frames": True, "ocpp_response_timeout_s": 5},
    }


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, doc: dict) -> AsyncIterator[BenchRuntime]:
    """A bench running in this event loop until the block ends (run folder tmp_path/run)."""
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[BenchRuntime] = loop.create_future()
    task = asyncio.create_task(run_bench(path, out=tmp_path / "run", stop=stop,
                                         on_ready=ready.set_result))
    await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises the bench's error
    runtime = ready.result()
    try:
        yield runtime
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _events(tmp_path: Path) -> pd.DataFrame:
    events = pd.read_parquet(tmp_path / "run" / "events.parquet")
    events["data"] = events.payload.map(json.loads)
    return events


def _of(events: pd.DataFrame, kind: str, **match: Any) -> list[dict[str, Any]]:
    rows = events[events.kind == kind].data
    return [p for p in rows if all(p.get(k) == v for k, v in match.items())]


def _frames(events: pd.DataFrame, station: str, direction: str) -> list[list[Any]]:
    return [json.loads(p["frame"]) for p in _of(events, "ocpp.frame", station=station,
                                                direction=direction)]


def _calls(frames: list[list[Any]]) -> list[str]:
    """Actions of the CALLs, sorted (frames of one step share a time: no order kept)."""
    return sorted(f[2] for f in frames if f[0] == 2)


def _answers(events: pd.DataFrame, station: str, direction: str) -> dict[str, Any]:
    """Action -> CALLRESULT payload, of the CALLs going the other way."""
    back = "out" if direction == "in" else "in"
    results = {f[1]: f[2] for f in _frames(events, station, back) if f[0] == 3}
    return {f[2]: results.get(f[1]) for f in _frames(events, station, direction) if f[0] == 2}


async def _run(*cmd: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
               limit_s: float = 15) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})}, cwd=cwd)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


# ======================================================================= test-ocpp


async def _test_ocpp(runtime: BenchRuntime, station: str, version: str,
                     *options: str) -> tuple[int, str]:
    base = f"wss://localhost:{runtime.port}"
    return await _run(str(TEST_OCPP), base, station, "--ocpp", version, "--timeout", "8",
                      *options)


async def test_test_ocpp_boots_over_tls_with_basic_auth(tmp_path: Path, pki: Pki) -> None:
    """Profile 2: test-ocpp 1.6 and 2.0.1 with passwords, one with a wrong password."""
    sec = _security(pki, 2, {"TO-201": PW_A, "TO-16": PW_B})
    doc = _bench("ext-test-ocpp-p2", [{"id": "TO-201"}, {"id": "TO-16"}], sec)
    async with _running(tmp_path, doc) as runtime:
        assert runtime.bench.physical_stations == ["TO-201", "TO-16"]
        results = await asyncio.gather(
            _test_ocpp(runtime, "TO-201", "2.0.1", "--password", PW_A, "--ca", pki.ca),
            _test_ocpp(runtime, "TO-16", "1.6", "--password", PW_B, "--ca", pki.ca),
        )
        wrong = await _test_ocpp(runtime, "TO-16", "1.6", "--password", PW_WRONG,
                                 "--ca", pki.ca)
        untrusting = await _test_ocpp(runtime, "TO-201", "2.0.1", "--password", PW_A)
        await asyncio.sleep(1.0)  # let the CSMS finish with the closed connections
    for (rc, out), proto in zip(results, ("ocpp2.0.1", "ocpp1.6"), strict=True):
        assert rc == 0, out
        assert f"Negotiated subprotocol: {proto}" in out
        assert "TLS: TLSv1.3" in out or "TLS: TLSv1.2" in out
        assert "BootNotification status: Accepted" in out and "SUCCESS" in out
    assert wrong[0] == 1 and "HTTP 401" in wrong[1], wrong[1]
    assert untrusting[0] == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusting[1], untrusting[1]

    events = _events(tmp_path)
    connected = {p["station"]: p["version"] for p in _of(events, "station.connected")}
    assert connected == {"TO-201": "2.0.1", "TO-16": "1.6"}
    booted = _of(events, "station.booted")
    assert {(p["station"], p["vendor"], p["model"]) for p in booted} == {
        ("TO-201", "TestVendor", "TestModel"), ("TO-16", "TestVendor", "TestModel")}
    for sid in ("TO-201", "TO-16"):
        # the boot and heartbeat reached the CSMS and were answered
        assert _calls(_frames(events, sid, "in")) == ["BootNotification", "Heartbeat"]
        answers = _answers(events, sid, "in")
        assert answers["BootNotification"]["status"] == "Accepted"
        assert "currentTime" in answers["Heartbeat"]
    # the CSMS sent each its TxDefaultProfile; test-ocpp, which has no handler for it,
    # answered NotImplemented, and the CSMS took that (no retry, a warning, an event)
    for sid in ("TO-201", "TO-16"):
        assert _calls(_frames(events, sid, "out")) == ["SetChargingProfile"]
    assert {(p["station"], p["status"]) for p in _of(events, "station.default_profile")} == {
        ("TO-201", "NotImplemented"), ("TO-16", "NotImplemented")}
    assert {(p["station"], p["code"]) for p in _of(events, "ocpp.callerror")} == {
        ("TO-201", "NotImplemented"), ("TO-16", "NotImplemented")}
    # the wrong password was refused and reported, without the password
    assert _of(events, "security.auth_failed") == [
        {"station": "TO-16", "reason": "wrong password", "profile": 2, "http_status": 401}]
    assert PW_WRONG not in events.payload.str.cat() and PW_A not in events.payload.str.cat()
    assert {p["station"] for p in _of(events, "station.disconnected")} == {"TO-201", "TO-16"}


async def test_test_ocpp_client_certificates_profile3(tmp_path: Path, pki: Pki) -> None:
    """Profile 3: test-ocpp with its certificate; with another station's; from another CA."""
    doc = _bench("ext-test-ocpp-p3", [{"id": "TO-201"}, {"id": "TO-16"}], _security(pki, 3))
    async with _running(tmp_path, doc) as runtime:
        cert, key = pki.clients["TO-201"]
        ok = await _test_ocpp(runtime, "TO-201", "2.0.1", "--cert", cert, "--key", key,
                              "--ca", pki.ca)
        other_cert, other_key = pki.clients["TO-201"]
        impostor = await _test_ocpp(runtime, "TO-16", "1.6", "--cert", other_cert,
                                    "--key", other_key, "--ca", pki.ca)
        rogue = await _test_ocpp(runtime, "TO-16", "1.6", "--cert", pki.rogue[0],
                                 "--key", pki.rogue[1], "--ca", pki.ca)
        await asyncio.sleep(1.0)
    assert ok[0] == 0 and "BootNotification status: Accepted" in ok[1], ok[1]
    assert impostor[0] == 1 and "HTTP 403" in impostor[1], impostor[1]
    assert rogue[0] == 1, rogue[1]
    events = _events(tmp_path)
    assert [p["station"] for p in _of(events, "station.connected")] == ["TO-201"]
    assert _of(events, "security.auth_failed") == [{
        "station": "TO-16", "reason": "client certificate is for station 'TO-201'",
        "profile": 3, "http_status": 403}]
    # another CA's certificate never reaches HTTP: the CSMS reports the TLS refusal
    tls = _of(events, "security.tls_failed")
    assert tls and tls[0]["reason"].startswith("CERTIFICATE_VERIFY_FAILED")
    assert _calls(_frames(events, "TO-201", "in")) == ["BootNotification", "Heartbeat"]


# ============================================================ em-ocpp-chargepoint-simulator


def _npm_ready() -> str | None:
    """Install the simulator into ocpp16_peer once; return a skip reason or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not on PATH"
    if EM_SIMULATOR.is_dir():
        return None
    try:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True,
                       timeout=float(os.environ.get("MIGRID_NPM_TIMEOUT_S", "180")),
                       capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"npm ci in {PEER_DIR} failed: {exc}"
    return None


def _results(out: str) -> list[dict[str, Any]]:
    return [json.loads(ln.removeprefix("RESULT ")) for ln in out.splitlines()
            if ln.startswith("RESULT ")]


async def _em_charge_point(url: str, env: dict[str, str]) -> tuple[int, str]:
    return await _run("node", str(EM_SIMULATOR / "main.js"), "charge_point.js",
                      env={"CSMS_URL": url, "WAIT_PROFILE_S": "8", **env}, cwd=PEER_DIR)


async def test_em_ocpp_simulator_transaction_gets_charging_profile(
    tmp_path: Path, pki: Pki
) -> None:
    """Profile 3, OCPP 1.6: the npm simulator's scripted session gets a TxProfile."""
    reason = await asyncio.to_thread(_npm_ready)
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the npm simulator (.ci/run installs it): {reason}")
    if reason:
        pytest.skip(reason)
    doc = _bench("ext-em-16", [{"id": "EM-16", "kind": "ac_22kw"}], _security(pki, 3))
    cert, key = pki.clients["EM-16"]
    tls_env = {"NODE_EXTRA_CA_CERTS": pki.ca,
               "SSL_CLIENT_KEYSTORE": json.dumps([{"id": "EM-16", "cert": cert, "key": key}])}
    async with _running(tmp_path, doc) as runtime:
        url = runtime.station_urls()["EM-16"].replace("127.0.0.1", "localhost")
        rc, out = await _em_charge_point(url, tls_env)
        # without its certificate: refused in the TLS handshake
        rc_nocert, out_nocert = await _em_charge_point(url, {"NODE_EXTRA_CA_CERTS": pki.ca})
        await asyncio.sleep(0.5)
    got = _results(out)
    assert rc == 0, out[-3000:]
    kinds = [g["kind"] for g in got]
    assert kinds[:2] == ["connected", "BootNotification"]
    by_kind = {g["kind"]: g["payload"] for g in got}
    assert by_kind["BootNotification"]["status"] == "Accepted"
    assert by_kind["Authorize"]["idTagInfo"]["status"] == "Accepted"
    assert by_kind["StartTransaction"]["idTagInfo"]["status"] == "Accepted"
    tx_id = by_kind["StartTransaction"]["transactionId"]
    profiles = [g["payload"] for g in got if g["kind"] == "SetChargingProfile"]
    purposes = [p["csChargingProfiles"]["chargingProfilePurpose"] for p in profiles]
    assert "TxDefaultProfile" in purposes and "TxProfile" in purposes
    tx_profile = by_kind["TxProfile"]["csChargingProfiles"]
    assert tx_profile["transactionId"] == tx_id
    limit = tx_profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
    assert 0 < limit < 32  # A per phase: 10 kW site limit < the 22 kW station
    assert rc_nocert == 1 and _results(out_nocert)[-1]["kind"] == "error"

    events = _events(tmp_path)
    assert _of(events, "station.connected") == [{"station": "EM-16", "version": "1.6"}]
    assert _of(events, "station.booted")[0]["vendor"] == "em-simulator"
    started = _of(events, "transaction.started", station="EM-16")
    assert [(p["evse"], p["id_token"], p["meter_start_wh"]) for p in started] == [
        (1, "EM-TAG-1", 1000)]
    ended = _of(events, "transaction.ended", station="EM-16")
    assert ended and ended[0]["meter_stop_wh"] == 1100
    setpoints = _of(events, "dlm.setpoint", station="EM-16")
    assert setpoints, "the DLM sent no set-point"
    # the TxProfile went out and the simulator's answer came back Accepted
    out_frames = _frames(events, "EM-16", "out")
    sent = [f for f in out_frames if f[0] == 2 and f[2] == "SetChargingProfile"
            and f[3]["csChargingProfiles"]["chargingProfilePurpose"] == "TxProfile"]
    assert sent
    answers = {f[1]: f[2] for f in _frames(events, "EM-16", "in") if f[0] == 3}
    assert answers[sent[0][1]] == {"status": "Accepted"}
    in_calls = _calls(_frames(events, "EM-16", "in"))
    assert {"Heartbeat", "StatusNotification", "Authorize", "MeterValues",
            "StartTransaction", "StopTransaction"} <= set(in_calls)
    assert _of(events, "security.tls_failed")  # the one without a certificate


# ================================================== the project's emulator, as processes


async def _station_process(url: str, station: dict, plugs: list[dict],
                           ca_file: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.station", "--url", url, "--station", json.dumps(station),
        "--plugs", json.dumps(plugs), "--step-s", "0.5", "--ca-file", ca_file,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)


async def _until(proc: asyncio.subprocess.Process, kinds: set[str],
                 lines: list[dict[str, Any]], want: str = "TxProfile") -> None:
    """Read the process's JSON lines until one of ``kinds`` (a profile: with ``want``)."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        lines.append(json.loads(line))
        kind = lines[-1]["kind"]
        if kind in kinds and (kind != "profile.installed" or want in line.decode()):
            return


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0


@pytest.mark.parametrize("profile", [2, 3])
async def test_station_processes_over_tls(tmp_path: Path, pki: Pki, profile: int) -> None:
    """Two ``python -m hil.station`` processes over wss:// get a TxProfile; a third with a
    wrong password (profile 2) or a certificate from another CA (profile 3) is refused and
    the CSMS reports it."""
    passwords = {"PROC-A": PW_A, "PROC-B": PW_B} if profile == 2 else None
    doc = _bench(f"ext-proc-p{profile}", [{"id": "PROC-A"}, {"id": "PROC-B"}],
                 _security(pki, profile, passwords), grid_limit_kw=12)

    def station(sid: str, good: bool = True) -> dict:
        st: dict[str, Any] = {"id": sid, "kind": "ac_22kw", "meter_interval_s": 1}
        if profile == 2:
            st["password"] = (PW_A if sid == "PROC-A" else PW_B) if good else PW_WRONG
        else:
            st["tls_cert_file"], st["tls_key_file"] = (
                pki.clients[sid] if good else pki.rogue)
        return st

    lines: dict[str, list[dict[str, Any]]] = {"PROC-A": [], "PROC-B": [], "bad": []}
    async with _running(tmp_path, doc) as runtime:
        url = runtime.local_url
        assert url.startswith("wss://127.0.0.1:")
        bad = await _station_process(url, station("PROC-B", good=False), [], pki.ca)
        try:
            await asyncio.wait_for(
                _until(bad, {"ocpp.connect_failed", "ocpp.connected"}, lines["bad"]), 10)
        finally:
            await _stop(bad)
        procs = {sid: await _station_process(url, station(sid), [
            {"evse": f"{sid}/1", "plug_in_s": 0.5}], pki.ca) for sid in ("PROC-A", "PROC-B")}
        try:
            await asyncio.wait_for(asyncio.gather(*(
                _until(p, {"profile.installed"}, lines[sid]) for sid, p in procs.items())), 15)
        finally:
            for p in procs.values():
                await _stop(p)
    assert lines["bad"][-1]["kind"] == "ocpp.connect_failed", lines["bad"]
    for sid in ("PROC-A", "PROC-B"):
        kinds = [e["kind"] for e in lines[sid]]
        assert "ocpp.connected" in kinds and "transaction.started" in kinds
        profile_event = lines[sid][-1]
        assert profile_event["kind"] == "profile.installed"
        assert profile_event["payload"]["purpose"] == "TxProfile"
        assert profile_event["payload"]["evse_id"] == 1
        assert 0 < profile_event["payload"]["limits"][0] < 32  # A: 12 kW for two 22 kW

    events = _events(tmp_path)
    connected = _of(events, "station.connected")
    assert sorted(p["station"] for p in connected) == ["PROC-A", "PROC-B"]
    assert {p["station"] for p in _of(events, "dlm.setpoint")} == {"PROC-A", "PROC-B"}
    assert {p["station"] for p in _of(events, "transaction.started")} == {"PROC-A", "PROC-B"}
    if profile == 2:
        assert "HTTP 401" in lines["bad"][-1]["payload"]["error"]
        assert _of(events, "security.auth_failed") == [{
            "station": "PROC-B", "reason": "wrong password", "profile": 2,
            "http_status": 401}]
        assert PW_WRONG not in events.payload.str.cat()
    else:
        assert not _of(events, "security.auth_failed")
        tls = _of(events, "security.tls_failed")
        assert [t["reason"] for t in tls] == [
            "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"]
