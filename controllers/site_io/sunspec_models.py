"""SunSpec model definitions read from pysunspec2's official JSON files (data only).

Offsets are computed from the definitions, never typed by hand. A point's offset is counted
from the model's ID register (ID at 0, L at 1, the first point after them at 2).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# Register values meaning "not implemented", per SunSpec type.
_NOT_IMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "acc16": 0,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "sunssf": 0x8000,
    "count": 0xFFFF,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "acc32": 0,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "ipaddr": 0,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "acc64": 0,
}
_SIGNED = {"int16", "sunssf", "int32", "int64"}
_FLOATS = {"float32": ("f", 2), "float64": ("d", 4)}


class SunSpecModelError(KeyError):
    """A model or point is not defined (or not writable) in the official definitions."""


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a model: its name (``Group.Point`` inside groups), offset and encoding."""

    name: str
    offset: int
    size: int
    type: str
    sf: str | int | None
    units: str | None
    access: str
    mandatory: bool
    symbols: dict[str, int]


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A model's fixed layout: points by name, in register order, and its fixed length."""

    model_id: int
    name: str
    points: dict[str, PointDef]
    length: int  # registers after ID and L, groups counted once


def _json_text(model_id: int) -> str:
    ref = resources.files("sunspec2").joinpath("models", "json", f"model_{model_id}.json")
    try:
        return ref.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SunSpecModelError(f"no official SunSpec definition for model {model_id}") from exc


def _group_size(group: dict[str, Any], counts: Mapping[str, int]) -> int:
    size = sum(int(p["size"]) for p in group.get("points", []))
    for g in group.get("groups", []):
        count = g.get("count", 1)
        n = counts.get(count, 0) if isinstance(count, str) else int(count)
        size += _group_size(g, counts) * n
    return size


def _add_group(
    group: dict[str, Any],
    prefix: str,
    offset: int,
    points: dict[str, PointDef],
    end: int | None,
    counts: Mapping[str, int],
) -> int:
    own = {q["name"] for q in group.get("points", [])}
    for p in group.get("points", []):
        name = prefix + p["name"]
        sf = p.get("sf")
        sf_name: str | int | None
        if isinstance(sf, str):
            # a scale factor in the same group, else at the model's top level
            sf_name = prefix + sf if sf in own else sf
        else:
            sf_name = sf
        points[name] = PointDef(
            name=name,
            offset=offset,
            size=int(p["size"]),
            type=p["type"],
            sf=sf_name,
            units=p.get("units"),
            access=p.get("access", "R"),
            mandatory=p.get("mandatory") == "M",
            symbols={s["name"]: int(s["value"]) for s in p.get("symbols", [])},
        )
        offset += int(p["size"])
    for g in group.get("groups", []):
        count_def = g.get("count", 1)
        if isinstance(count_def, str):
            count = counts.get(count_def, 0)  # a top-level point, e.g. "NCrv"
        elif count_def == 0:
            # variable: as many as the rest of the model's length holds
            size = _group_size(g, counts)
            count = max(0, (end - offset) // size) if end is not None and size else 0
        else:
            count = int(count_def)
        if count_def == 1:
            offset = _add_group(g, prefix + g["name"] + ".", offset, points, end, counts)
            continue
        for i in range(count):
            offset = _add_group(g, f"{prefix}{g['name']}[{i}].", offset, points, end, counts)
    return offset


def count_points(model_id: int) -> tuple[str, ...]:
    """Top-level points that give the repetitions of a group (e.g. ``NCrv``, ``NPt``)."""
    names: set[str] = set()

    def walk(group: dict[str, Any]) -> None:
        for g in group.get("groups", []):
            if isinstance(g.get("count"), str):
                names.add(g["count"])
            walk(g)

    walk(json.loads(_json_text(model_id))["group"])
    return tuple(sorted(names))


@cache
def model_def(
    model_id: int, length: int | None = None, counts: tuple[tuple[str, int], ...] = ()
) -> ModelDef:
    """The layout of model ``model_id`` from pysunspec2's ``model_<id>.json``.

    ``length`` is the model's L as the device reports it: it sets how many times a group
    of variable count (0) appears; ``counts`` gives the values of the top-level points that
    other groups' counts name (see :func:`count_points`). Repeating groups are named
    ``Group[i].Point``; without ``length`` / ``counts`` they are left out.
    """
    data = json.loads(_json_text(model_id))
    group = data["group"]
    points: dict[str, PointDef] = {}
    stop = None if length is None else length + 2
    end = _add_group(group, "", 0, points, stop, dict(counts))
    return ModelDef(model_id=model_id, name=group["name"], points=points, length=end - 2)


def device_model_def(model_id: int, length: int, regs: list[int]) -> ModelDef:
    """The layout of a model block as a device holds it (``regs`` starts at ID)."""
    names = count_points(model_id)
    if not names:
        return model_def(model_id, length)
    fixed = model_def(model_id)
    counts: list[tuple[str, int]] = []
    for name in names:
        p = fixed.points[name]
        raw = decode_raw(p, regs[p.offset : p.offset + p.size])
        counts.append((name, raw if isinstance(raw, int) and raw > 0 else 0))
    return model_def(model_id, length, tuple(counts))


def _raw_int(regs: list[int]) -> int:
    value = 0
    for r in regs:
        value = (value << 16) | (r & 0xFFFF)
    return value


def decode_raw(point: PointDef, regs: list[int]) -> int | float | str | None:
    """The unscaled value of ``point`` from its registers; ``None`` if not implemented."""
    t = point.type
    if t == "pad":
        return None
    if t == "string":
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        text = raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip()
        return text or None
    if t in _FLOATS:
        fmt, _ = _FLOATS[t]
        raw_b = b"".join(r.to_bytes(2, "big") for r in regs)
        f = float(struct.unpack(">" + fmt, raw_b)[0])
        return None if math.isnan(f) else f
    value = _raw_int(regs)
    if t in _NOT_IMPLEMENTED and value == _NOT_IMPLEMENTED[t]:
        return None
    if t in _SIGNED:
        bits = 16 * len(regs)
        if value >= 1 << (bits - 1):
            value -= 1 << bits
    return value


def encode_raw(point: PointDef, value: int) -> list[int]:
    """Registers holding the integer ``value`` for ``point`` (two's complement, big-endian)."""
    bits = 16 * point.size
    if point.type in _SIGNED:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if not lo <= value <= hi:
        raise ValueError(f"{point.name}: {value} out of range for {point.type}")
    value &= (1 << bits) - 1
    return [(value >> (16 * (point.size - 1 - i))) & 0xFFFF for i in range(point.size)]


Decoded = dict[str, tuple[float | int | str | None, str | None]]


def decode_model(mdef: ModelDef, regs: list[int]) -> Decoded:
    """All mapped points of a model block (``regs`` starts at the ID register), scaled.

    Returns ``{name: (value, unit)}``; a point whose scale factor is not implemented is
    ``None``. Scale-factor points themselves are returned unscaled.
    """
    raw: dict[str, int | float | str | None] = {}
    for p in mdef.points.values():
        if p.offset + p.size <= len(regs):
            raw[p.name] = decode_raw(p, regs[p.offset : p.offset + p.size])
    out: Decoded = {}
    for name, value in raw.items():
        p = mdef.points[name]
        if value is not None and p.sf is not None and isinstance(value, int):
            sf = p.sf if isinstance(p.sf, int) else raw.get(p.sf)
            if not isinstance(sf, int):
                value = None
            elif sf:
                value = value * 10.0**sf if sf < 0 else value * 10**sf
                if isinstance(value, float):
                    value = round(value, max(0, -sf))
        out[name] = (value, p.units)
    return out
