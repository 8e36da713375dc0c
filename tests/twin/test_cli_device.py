"""`migrid device serve`: each emulator as its own process, read by independent peers."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from asyncua import Client

MIGRID = [sys.executable, "-c", "from twin.cli import app; app()"]


def _start(args: list[str], pattern: str) -> tuple[subprocess.Popen, re.Match]:
    proc = subprocess.Popen([*MIGRID, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(pattern, "".join(lines))
        if m:
            return proc, m
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("".join(lines))


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.parametrize("kind", ["meter", "pv", "bess", "building"])
def test_sunspec_device_serves_suns_to_mbpoll(kind: str) -> None:
    proc, m = _start(["device", "serve", kind, "--port", "0"], r"Modbus TCP at [0-9.]+:(\d+)")
    try:
        out = subprocess.run(["mbpoll", "-m", "tcp", "-p", m.group(1), "-a", "1", "-r", "40000",
                              "-c", "2", "-0", "-1", "-t", "4:hex", "127.0.0.1"],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stdout + out.stderr
        registers = out.stdout.upper()
        assert "0X5375" in registers and "0X6E53" in registers  # "SunS"
    finally:
        _stop(proc)


def test_transformer_serves_opc_ua() -> None:
    proc, m = _start(["device", "serve", "transformer", "--port", "0"],
                     r"OPC UA at (opc\.tcp://\S+)")

    async def read() -> float:
        async with Client(m.group(1), timeout=10) as client:
            idx = await client.get_namespace_index("urn:migrid:transformer")
            node = client.get_node(f"ns={idx};s=YPTR1.HotSpotTemp")
            return float(await node.read_value())

    try:
        assert 0 < asyncio.run(read()) < 200
    finally:
        _stop(proc)


def test_unknown_kind_is_refused() -> None:
    out = subprocess.run([*MIGRID, "device", "serve", "toaster"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "unknown device kind" in out.stdout
