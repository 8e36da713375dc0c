"""``migrid device check``: read each site device once, over its real protocol.

Before a bench run (or after wiring a new meter), this answers "can the controllers talk to
that device, and what does it say?": for every device of a file's ``site_devices`` section
it connects as the controllers would (:mod:`controllers.site_io`), lists the SunSpec models
found and reads the points the site energy control uses, in engineering units:

- meter (SunSpec 203): ``power_kw`` (site import positive: ``import_positive`` applied),
  ``power_kw_l1``/``_l2``/``_l3`` (same sign), ``frequency_hz``, ``energy_import_kwh`` and
  ``energy_export_kwh`` (the site's import and export: for a meter mounted the other way
  round, ``import_positive: false``, its ``TotWhExp`` is the site's import);
- pv (701, 704): ``power_kw`` (AC output), ``power_limit_pct`` (704 ``WMaxLimPct``, when
  the inverter has model 704);
- bess (802, 701): ``soc`` (0..1), ``power_kw`` (SunSpec DER sign: positive discharges);
- building (203): ``power_kw``;
- transformer (OPC UA): its configured ``node_ids`` by name (``limit_kw``,
  ``loading_pct``, ``hot_spot_c``).

A value the device reports as not implemented is ``None``. Devices are checked concurrently
and independently: one that is unreachable or answers with an error is recorded as such
(``ok=False``, ``error``), never raised, and the others are still read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from controllers.site_io import (
    OpcUaClient,
    Reading,
    SiteIoError,
    SiteIoProtocolError,
    SiteIoUnavailableError,
    SunSpecClient,
    SunSpecModelError,
)
from controllers.site_io.sunspec_client import DEFAULT_BASES
from twin.scenario import ScenarioError, format_errors, read_yaml
from twin.scenario_site import ModbusDevice, SiteDevices, SiteMeter, Transformer

__all__ = ["EMULATED", "DeviceCheck", "check_devices", "load_site_devices"]

#: ``address`` of a device that was not checked because it is emulated.
EMULATED = "emulated"

#: Timeout of one OPC UA request [s] (the transformer section has no timeout of its own).
OPCUA_TIMEOUT_S = 5.0

Value = float | int | str | None


@dataclass(frozen=True)
class DeviceCheck:
    """The outcome of checking one device.

    Attributes:
        name: device name in ``site_devices`` (``meter``, ``building``, ``pv``, ``bess``,
            ``transformer``).
        kind: ``"sunspec"`` (Modbus TCP) or ``"opcua"``.
        address: ``host:port unit N [base B]``, the OPC UA endpoint URL, or ``"emulated"``
            for an emulated device that was skipped.
        ok: the device answered every read (a skipped device counts as ok).
        models: SunSpec model ids found on the device, in chain order (empty for OPC UA).
        values: what was read, keys carrying their unit (``power_kw``, ``soc``, ...);
            ``None`` where the device reports the point as not implemented.
        error: why the check failed (``None`` when ``ok``).
    """

    name: str
    kind: Literal["sunspec", "opcua"]
    address: str
    ok: bool
    models: list[int] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)
    error: str | None = None

    @property
    def skipped(self) -> bool:
        """Whether the device was not contacted (emulated)."""
        return self.address == EMULATED


# ----------------------------------------------------------------------------- loading
def load_site_devices(path: str | Path) -> SiteDevices:
    """Read the ``site_devices`` section of a scenario or bench file.

    Any YAML mapping with a ``site_devices`` mapping will do; other top-level keys are
    ignored (a scenario's ``site``, ``run``, ... are not validated here).

    Raises:
        ScenarioError: file missing or unreadable, YAML syntax error, no ``site_devices``
            mapping, or invalid fields (one ``site_devices.<path>: reason`` line each).
    """
    p = Path(path)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: expected a mapping with site_devices, got {type(data).__name__}")
    section = data.get("site_devices")
    if not isinstance(section, dict):
        what = "missing" if section is None else f"a mapping, got {type(section).__name__}"
        raise ScenarioError(f"{p}: invalid site devices\n  site_devices: {what}")
    try:
        return SiteDevices.model_validate(section)
    except ValidationError as err:
        lines = format_errors(err, ("site_devices",))
        raise ScenarioError(f"{p}: invalid site devices\n{lines}") from None


# ---------------------------------------------------------------------------- checking
def _modbus_address(dev: ModbusDevice) -> str:
    address = f"{dev.host}:{dev.port} unit {dev.unit}"
    return address if dev.base is None else f"{address} base {dev.base}"


def _has_address(dev: ModbusDevice | Transformer) -> bool:
    if isinstance(dev, Transformer):
        return bool(dev.endpoint and dev.node_ids)
    return dev.host is not None and dev.port is not None


def _number(reading: Reading, scale: float) -> Value:
    value = reading.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) * scale
    return value


def _error(exc: BaseException) -> str:
    """A one-line reason: ``unreachable: ...``, ``protocol error: ...``, ``model error: ...``."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, SiteIoUnavailableError | OSError | TimeoutError):
        return f"unreachable: {text or type(exc).__name__}"
    if isinstance(exc, SiteIoProtocolError):
        return f"protocol error: {text}"
    if isinstance(exc, SunSpecModelError):
        return f"model error: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _read_sunspec(
    name: str, dev: ModbusDevice, client: SunSpecClient, now: datetime
) -> dict[str, Value]:
    """Read the points of ``name``'s kind; raises on I/O or model errors."""
    models = client.models
    values: dict[str, Value] = {}

    async def points(model_id: int, names: list[str]) -> dict[str, Reading]:
        if model_id not in models:
            raise SunSpecModelError(
                f"model {model_id} not on the device (found {list(models)}); "
                f"the site control reads {model_id} from the {name}"
            )
        return await client.read_points(model_id, names, now)

    if name in ("meter", "building"):
        sign = -1.0 if isinstance(dev, SiteMeter) and not dev.import_positive else 1.0
        r = await points(203, ["W", "WphA", "WphB", "WphC", "Hz", "TotWhImp", "TotWhExp"])
        values["power_kw"] = _number(r["W"], sign / 1000.0)
        if name == "meter":
            for phase, point in (("l1", "WphA"), ("l2", "WphB"), ("l3", "WphC")):
                values[f"power_kw_{phase}"] = _number(r[point], sign / 1000.0)
            values["frequency_hz"] = _number(r["Hz"], 1.0)
            imp, exp = ("TotWhImp", "TotWhExp") if sign > 0 else ("TotWhExp", "TotWhImp")
            values["energy_import_kwh"] = _number(r[imp], 1 / 1000.0)
            values["energy_export_kwh"] = _number(r[exp], 1 / 1000.0)
    elif name == "pv":
        r = await points(701, ["W"])
        values["power_kw"] = _number(r["W"], 1 / 1000.0)
        if 704 in models:
            r = await points(704, ["WMaxLimPct"])
            values["power_limit_pct"] = _number(r["WMaxLimPct"], 1.0)
    elif name == "bess":
        r = await points(802, ["SoC"])
        values["soc"] = _number(r["SoC"], 1 / 100.0)
        r = await points(701, ["W"])
        values["power_kw"] = _number(r["W"], 1 / 1000.0)
    return values


async def _check_sunspec(name: str, dev: ModbusDevice, now: datetime) -> DeviceCheck:
    address = _modbus_address(dev)
    assert dev.host is not None and dev.port is not None
    client = SunSpecClient(
        dev.host,
        dev.port,
        device_id=dev.unit,
        bases=DEFAULT_BASES if dev.base is None else (dev.base,),
        timeout_s=dev.timeout_s,
    )
    models: list[int] = []
    values: dict[str, Value] = {}
    try:
        found = await client.connect(now)
        # chain order: the first instance's address of each model
        models = sorted(found, key=lambda m: found[m][0][0])
        if dev.base is None and client.base is not None:
            address = f"{address} base {client.base}"
        values = await _read_sunspec(name, dev, client, now)
    except (SiteIoError, SunSpecModelError, OSError, TimeoutError) as exc:
        return DeviceCheck(name, "sunspec", address, False, models, values, _error(exc))
    finally:
        await client.close()
    return DeviceCheck(name, "sunspec", address, True, models, values)


async def _check_opcua(dev: Transformer, now: datetime) -> DeviceCheck:
    assert dev.endpoint is not None
    units = {"limit_kw": "kW", "loading_pct": "%", "hot_spot_c": "degC"}
    client = OpcUaClient(
        dev.endpoint,
        list(dev.node_ids.values()),
        units={node: units[key] for key, node in dev.node_ids.items()},
        timeout_s=OPCUA_TIMEOUT_S,
        subscribe=False,
    )
    values: dict[str, Value] = {}
    try:
        readings = await client.read(now)
    except (SiteIoError, OSError, TimeoutError) as exc:
        return DeviceCheck("transformer", "opcua", dev.endpoint, False, error=_error(exc))
    finally:
        await client.close()
    missing = []
    for key, node in dev.node_ids.items():
        reading = readings.get(node)
        values[key] = None if reading is None else reading.value
        if values[key] is None:
            missing.append(f"{key} ({node})")
    if missing:
        error = f"no value (unknown node or bad status): {', '.join(missing)}"
        return DeviceCheck("transformer", "opcua", dev.endpoint, False, values=values, error=error)
    return DeviceCheck("transformer", "opcua", dev.endpoint, True, values=values)


def _deadline_s(dev: ModbusDevice | Transformer) -> float:
    """Upper bound of one device's check [s]: connect, discovery and a few reads."""
    per_request = dev.timeout_s if isinstance(dev, ModbusDevice) else OPCUA_TIMEOUT_S
    return 10 * per_request + 5.0


async def _check_one(name: str, dev: ModbusDevice | Transformer, now: datetime) -> DeviceCheck:
    kind: Literal["sunspec", "opcua"] = "opcua" if isinstance(dev, Transformer) else "sunspec"
    address = (dev.endpoint or "") if isinstance(dev, Transformer) else _modbus_address(dev)
    deadline_s = _deadline_s(dev)
    try:
        async with asyncio.timeout(deadline_s):
            if isinstance(dev, Transformer):
                return await _check_opcua(dev, now)
            return await _check_sunspec(name, dev, now)
    except TimeoutError:
        error = f"unreachable: no answer within {deadline_s} s"
        return DeviceCheck(name, kind, address, False, error=error)
    except Exception as exc:  # a field device's odd answer must not end the other checks
        return DeviceCheck(name, kind, address, False, error=_error(exc))


async def check_devices(
    devices: SiteDevices, now: datetime, *, only_physical: bool = True
) -> list[DeviceCheck]:
    """Connect to each device once and read its key values (see the module docstring).

    Args:
        devices: the ``site_devices`` section (:func:`load_site_devices`).
        now: tz-aware UTC time the readings are stamped with.
        only_physical: skip emulated devices (listed with ``address="emulated"``, ok).
            ``False`` also checks emulated devices that have an address (an emulator
            served with ``migrid device serve``); one without an address is skipped.

    Returns:
        One :class:`DeviceCheck` per configured device, in the order meter, building, pv,
        bess, transformer. Never raises for I/O errors: they are recorded in the checks.
    """
    named = devices.named()
    tasks: dict[str, asyncio.Task[DeviceCheck]] = {}
    async with asyncio.TaskGroup() as group:
        for name, dev in named.items():
            if (only_physical and dev.binding != "physical") or not _has_address(dev):
                continue
            tasks[name] = group.create_task(_check_one(name, dev, now))
    out = []
    for name, dev in named.items():
        if name in tasks:
            out.append(tasks[name].result())
        else:
            kind: Literal["sunspec", "opcua"] = (
                "opcua" if isinstance(dev, Transformer) else "sunspec"
            )
            out.append(DeviceCheck(name, kind, EMULATED, True))
    return out
