"""A SunSpec register image built from the official model definitions in pysunspec2.

Layout: ``"SunS"`` (0x5375, 0x6E53) at ``base`` (40000), then each model as ID, L and its
points in definition order (repeating groups ``count`` times), then the end model
(0xFFFF, 0). Offsets come from the JSON model definitions shipped with pysunspec2
(``sunspec2/models/json/model_<id>.json``); nothing is hand-typed.

Points are keyed ``"<model id>.<point>"``; points in groups add the group path, with an
index for repeating groups: ``"704.PFWInj.PF"``, ``"160.module[0].DCA"``.

Engineering values carry scale factors: ``value = raw x 10**SF``. A point not set reads as
the SunSpec "not implemented" value (0x8000 int16, 0xFFFF uint16/enum16, 0 acc32, ...).
Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "SUNS",
    "IllegalAddressError",
    "IllegalValueError",
    "ModelLayout",
    "PointSpec",
    "SunSpecImage",
    "decode",
    "encode",
    "model_definition",
    "unimplemented",
]

SUNS = (0x5375, 0x6E53)
END_MODEL_ID = 0xFFFF

_SIZE = {
    "int16": 1, "uint16": 1, "count": 1, "acc16": 1, "enum16": 1, "bitfield16": 1,
    "pad": 1, "sunssf": 1, "int32": 2, "uint32": 2, "acc32": 2, "enum32": 2,
    "bitfield32": 2, "ipaddr": 2, "float32": 2, "int64": 4, "uint64": 4, "acc64": 4,
    "float64": 4, "eui48": 4, "ipv6addr": 8,
}  # fmt: skip
_STRUCT = {
    "int16": ">h", "uint16": ">H", "count": ">H", "acc16": ">H", "enum16": ">H",
    "bitfield16": ">H", "pad": ">H", "sunssf": ">h", "int32": ">i", "uint32": ">I",
    "acc32": ">I", "enum32": ">I", "bitfield32": ">I", "ipaddr": ">I", "int64": ">q",
    "uint64": ">Q", "acc64": ">Q", "float32": ">f", "float64": ">d",
}  # fmt: skip
# raw (integer) "not implemented" value of each type, as register bits
_UNIMPL_BITS = {
    "int16": 0x8000, "sunssf": 0x8000, "pad": 0x8000, "uint16": 0xFFFF, "count": 0xFFFF,
    "enum16": 0xFFFF, "bitfield16": 0xFFFF, "acc16": 0, "int32": 0x80000000,
    "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF, "acc32": 0,
    "ipaddr": 0, "int64": 0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF, "acc64": 0,
    "float32": 0x7FC00000, "float64": 0x7FF8000000000000, "eui48": 0xFFFFFFFFFFFF,
    "ipv6addr": 0,
}  # fmt: skip
_INT_RANGE = {
    ">h": (-0x8000, 0x7FFF), ">H": (0, 0xFFFF), ">i": (-0x80000000, 0x7FFFFFFF),
    ">I": (0, 0xFFFFFFFF), ">q": (-(2**63), 2**63 - 1), ">Q": (0, 2**64 - 1),
}  # fmt: skip


class IllegalAddressError(ValueError):
    """A write touches a register that is not (wholly) a writable point: Modbus exception 2."""


class IllegalValueError(ValueError):
    """A write carries a value the model does not allow: Modbus exception 3."""


@cache
def model_definition(model_id: int) -> dict[str, Any]:
    """The official JSON definition of a model, as shipped with pysunspec2."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyError(f"no SunSpec model definition for model {model_id}") from exc
    data: dict[str, Any] = json.loads(text)
    return data


def unimplemented(ptype: str, size: int) -> list[int]:
    """The registers of a point that is not implemented."""
    if ptype == "string":
        return [0] * size
    bits = _UNIMPL_BITS[ptype]
    return [(bits >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def encode(ptype: str, raw: int | float | str | None, size: int | None = None) -> list[int]:
    """Encode a raw (unscaled) value big-endian; ``None`` encodes "not implemented".

    Raises:
        IllegalValueError: the value does not fit the type.
    """
    n = size if size is not None else _SIZE.get(ptype, 1)
    if raw is None:
        return unimplemented(ptype, n)
    if ptype == "string":
        data = str(raw).encode("utf-8")
        if len(data) > 2 * n:
            raise IllegalValueError(f"string {raw!r} longer than {2 * n} bytes")
        data = data.ljust(2 * n, b"\0")
        return [int.from_bytes(data[2 * i : 2 * i + 2], "big") for i in range(n)]
    fmt = _STRUCT.get(ptype)
    if fmt is None:
        raise IllegalValueError(f"point type {ptype} is not supported")
    if fmt in (">f", ">d"):
        data = struct.pack(fmt, float(raw))
    else:
        if isinstance(raw, float):
            if not raw.is_integer():
                raise IllegalValueError(f"{raw} is not an integer for {ptype}")
            raw = int(raw)
        if not isinstance(raw, int):
            raise IllegalValueError(f"{raw!r} is not an integer for {ptype}")
        lo, hi = _INT_RANGE[fmt]
        if not lo <= raw <= hi:
            raise IllegalValueError(f"{raw} out of range for {ptype}")
        data = struct.pack(fmt, raw)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def decode(ptype: str, regs: Iterable[int]) -> int | float | str | None:
    """Decode registers to a raw value; ``None`` for the "not implemented" value."""
    words = list(regs)
    if ptype == "string":
        data = b"".join(w.to_bytes(2, "big") for w in words).rstrip(b"\0")
        return data.decode("utf-8", errors="replace") or None
    if ptype != "pad" and words == unimplemented(ptype, len(words)):
        return None
    data = b"".join(w.to_bytes(2, "big") for w in words)
    value: int | float = struct.unpack(_STRUCT[ptype], data)[0]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class PointSpec:
    """Where a point lives and how it is encoded.

    Attributes:
        key: ``"<model id>.<group path>.<name>"``.
        model_id: the model it belongs to.
        address: absolute Modbus address of its first register.
        size: registers.
        type: SunSpec point type (``int16``, ``string`` ...).
        sf: key of its scale-factor point, or ``None`` (an integer SF literal in the model
            definition is carried in ``sf_fixed``).
        sf_fixed: a constant scale factor from the definition.
        writable: access ``RW``.
        mandatory: ``M`` in the definition.
        symbols: enum/bitfield symbol names and values.
        fixed: the value fixed by the definition (ID, L).
    """

    key: str
    model_id: int
    address: int
    size: int
    type: str
    sf: str | None = None
    sf_fixed: int | None = None
    writable: bool = False
    mandatory: bool = False
    symbols: Mapping[str, int] = field(default_factory=dict)
    fixed: int | None = None


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """One model in the image: ``address`` of its ID register and its length ``L``."""

    model_id: int
    address: int
    length: int


class SunSpecImage:
    """A SunSpec register image: the registers, the point map and encode/decode helpers.

    Args:
        models: model ids in image order (e.g. ``[1, 701, 702, 704]``); each at most once.
        base: address of ``"SunS"``.
        group_counts: repetitions of repeating groups, keyed ``"<model id>.<group path>"``
            (default 1); a group whose count is a point gets that point set to it.
        scale_factors: ``{"701.W_SF": 1, ...}``; SFs are static and fixed here.
        values: initial engineering values (scale factors applied).
    """

    def __init__(
        self,
        models: Iterable[int],
        *,
        base: int = 40000,
        group_counts: Mapping[str, int] | None = None,
        scale_factors: Mapping[str, int] | None = None,
        values: Mapping[str, int | float | str | None] | None = None,
    ) -> None:
        self.base = base
        self.points: dict[str, PointSpec] = {}
        self.models: list[ModelLayout] = []
        self.registers: list[int] = list(SUNS)
        self._counts = dict(group_counts or {})
        self._by_address: dict[int, PointSpec] = {}
        self._count_points: dict[str, int] = {}
        for model_id in models:
            if any(m.model_id == model_id for m in self.models):
                raise ValueError(f"model {model_id} appears twice")
            self._add_model(model_id)
        self.registers += [END_MODEL_ID, 0]
        for key, count in self._count_points.items():
            self.set_raw(key, count)
        for key, sf in (scale_factors or {}).items():
            if self.points[key].type != "sunssf":
                raise KeyError(f"{key} is not a scale factor")
            self.set_raw(key, sf)
        for key, value in (values or {}).items():
            self.set(key, value)

    @property
    def end(self) -> int:
        """One past the last register (the end model included)."""
        return self.base + len(self.registers)

    def _add_model(self, model_id: int) -> None:
        mdef = model_definition(model_id)
        start = self.base + len(self.registers)
        self.registers += [model_id, 0]  # L patched below
        self._pending_sf: list[tuple[str, str, list[str]]] = []
        self._add_group(model_id, mdef["group"], [str(model_id)], top=True)
        for key, sf_name, path in self._pending_sf:
            spec = replace(self.points[key], sf=self._resolve_sf(sf_name, path))
            self.points[key] = spec
            for i in range(spec.size):
                self._by_address[spec.address + i] = spec
        length = self.base + len(self.registers) - start - 2
        self.registers[start - self.base + 1] = length
        self.models.append(ModelLayout(model_id, start, length))
        for name, value in (("ID", model_id), ("L", length)):
            key = f"{model_id}.{name}"
            self.points[key] = PointSpec(key, model_id, start + (name == "L"), 1, "uint16",
                                         mandatory=True, fixed=value)  # fmt: skip

    def _add_group(self, model_id: int, gdef: dict[str, Any], path: list[str], top: bool) -> None:
        for pdef in gdef.get("points", []):
            name = pdef["name"]
            if top and name in ("ID", "L"):
                continue
            ptype = pdef["type"]
            size = int(pdef.get("size", _SIZE.get(ptype, 1)))
            key = ".".join([*path, name])
            sf = pdef.get("sf")
            sf_key: str | None = None
            sf_fixed: int | None = None
            if sf is not None:
                try:
                    sf_fixed = int(sf)
                except ValueError:
                    self._pending_sf.append((key, sf, path))
            spec = PointSpec(
                key=key,
                model_id=model_id,
                address=self.base + len(self.registers),
                size=size,
                type=ptype,
                sf=sf_key,
                sf_fixed=sf_fixed,
                writable=pdef.get("access") == "RW",
                mandatory=pdef.get("mandatory") == "M",
                symbols={s["name"]: int(s["value"]) for s in pdef.get("symbols", [])},
            )
            self.points[key] = spec
            for i in range(size):
                self._by_address[spec.address + i] = spec
            self.registers += unimplemented(ptype, size)
        for sub in gdef.get("groups", []):
            gpath = ".".join([*path, sub["name"]])
            count_def = sub.get("count", 1)
            if isinstance(count_def, int):
                # 0: repeated as many times as the model length says; the parent's one
                # "count" point (e.g. 160 N), if it has one, reports the repetitions
                count = self._counts.get(gpath, count_def if count_def else 1)
                counters = [p["name"] for p in gdef.get("points", []) if p["type"] == "count"]
                if count_def == 0 and len(counters) == 1:
                    self._count_points[".".join([*path, counters[0]])] = count
            else:
                count = self._counts.get(gpath, 1)
                self._count_points[self._resolve_sf(str(count_def), path)] = count
            if count == 1 and isinstance(count_def, int):
                self._add_group(model_id, sub, [*path, sub["name"]], top=False)
            else:
                for i in range(count):
                    self._add_group(model_id, sub, [*path, f"{sub['name']}[{i}]"], top=False)

    def _resolve_sf(self, name: str, path: list[str]) -> str:
        # a scale factor or count point lives in the point's group or one of its parents;
        # resolved once the whole model is laid out
        for depth in range(len(path), 0, -1):
            key = ".".join([*path[:depth], name])
            if key in self.points:
                return key
        raise KeyError(f"{name} not found for {'.'.join(path)}")

    # --- raw access -------------------------------------------------------------------
    def _slice(self, spec: PointSpec) -> slice:
        i = spec.address - self.base
        return slice(i, i + spec.size)

    def registers_of(self, key: str) -> list[int]:
        """The registers of a point."""
        return self.registers[self._slice(self.points[key])]

    def set_raw(self, key: str, raw: int | float | str | None) -> tuple[int, list[int]]:
        """Write a raw value; returns ``(address, registers)`` written."""
        spec = self.points[key]
        regs = encode(spec.type, raw, spec.size)
        self.registers[self._slice(spec)] = regs
        return spec.address, regs

    def get_raw(self, key: str) -> int | float | str | None:
        """The raw value of a point (``None``: not implemented)."""
        spec = self.points[key]
        return decode(spec.type, self.registers_of(key))

    def scale_factor(self, key: str) -> int:
        """The scale factor in force for a point (0 when it has none)."""
        spec = self.points[key]
        if spec.sf_fixed is not None:
            return spec.sf_fixed
        if spec.sf is None:
            return 0
        sf = self.get_raw(spec.sf)
        if sf is None:
            raise ValueError(f"scale factor {spec.sf} of {key} is not set")
        return int(sf)

    # --- engineering values -------------------------------------------------------------
    def to_raw(self, key: str, value: int | float | str | None) -> int | float | str | None:
        """Engineering value to raw value (scale factor applied, rounded)."""
        spec = self.points[key]
        if value is None or spec.type in ("string", "float32", "float64"):
            return value
        if isinstance(value, str):
            if value in spec.symbols:
                return spec.symbols[value]
            raise IllegalValueError(f"{value!r} is not a symbol of {key}")
        sf = self.scale_factor(key)
        return round(value / 10.0**sf) if sf else round(value)

    def to_engineering(self, key: str, raw: int | float | str | None) -> int | float | str | None:
        """Raw value to engineering value (scale factor applied)."""
        if raw is None or isinstance(raw, str):
            return raw
        sf = self.scale_factor(key)
        return raw * 10.0**sf if sf else raw

    def set(self, key: str, value: int | float | str | None) -> tuple[int, list[int]]:
        """Write an engineering value; returns ``(address, registers)`` written.

        Raises:
            IllegalValueError: it does not fit the point with its scale factor.
        """
        try:
            return self.set_raw(key, self.to_raw(key, value))
        except IllegalValueError as exc:
            raise IllegalValueError(f"{key}={value!r}: {exc}") from exc

    def get(self, key: str) -> int | float | str | None:
        """The engineering value of a point (``None``: not implemented)."""
        return self.to_engineering(key, self.get_raw(key))

    def read(self, address: int, count: int) -> list[int]:
        """Registers ``[address, address + count)``.

        Raises:
            IllegalAddressError: outside the image.
        """
        if address < self.base or address + count > self.end or count < 1:
            raise IllegalAddressError(f"{address}+{count} outside the image")
        i = address - self.base
        return self.registers[i : i + count]

    # --- writes from a client -----------------------------------------------------------
    def decode_write(self, address: int, regs: list[int]) -> dict[str, int | float | str | None]:
        """Check a client's write against the models; returns the raw values per point.

        A write must cover whole writable points. Enumerations must be one of the symbols;
        other values must not be the "not implemented" value.

        Raises:
            IllegalAddressError: a register is outside the image, not writable or the write
                cuts a point in two.
            IllegalValueError: a value the model does not allow.
        """
        out: dict[str, int | float | str | None] = {}
        a = address
        end = address + len(regs)
        while a < end:
            spec = self._by_address.get(a)
            if spec is None or not spec.writable:
                raise IllegalAddressError(f"register {a} is not a writable point")
            if spec.address != a or a + spec.size > end:
                raise IllegalAddressError(f"the write cuts {spec.key} in two")
            words = regs[a - address : a - address + spec.size]
            raw = decode(spec.type, words)
            if raw is None and spec.type != "string":
                raise IllegalValueError(f"{spec.key}: not-implemented value written")
            if spec.type in ("enum16", "enum32") and spec.symbols:
                if raw not in spec.symbols.values():
                    raise IllegalValueError(f"{spec.key}: {raw} is not a symbol")
            out[spec.key] = raw
            a += spec.size
        return out

    def write_registers(self, address: int, regs: list[int]) -> None:
        """Store registers (already validated) in the image."""
        i = address - self.base
        self.registers[i : i + len(regs)] = regs
