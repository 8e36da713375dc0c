"""The SunSpec image: layout from the official definitions, encode/decode, writes."""

from __future__ import annotations

import pytest
import sunspec2.device as sdev
from hypothesis import given
from hypothesis import strategies as st

from devices.sunspec.image import (
    IllegalAddressError,
    IllegalValueError,
    SunSpecImage,
    decode,
    encode,
    unimplemented,
)

MODELS = [1, 203, 701, 702, 704, 713, 802]


def _walk(group, prefix, out):
    for name, point in group.points.items():
        out[f"{prefix}.{name}"] = point
    for name, sub in group.groups.items():
        if isinstance(sub, list):
            for i, g in enumerate(sub):
                _walk(g, f"{prefix}.{name}[{i}]", out)
        else:
            _walk(sub, f"{prefix}.{name}", out)


def test_layout_matches_pysunspec2_model_classes() -> None:
    img = SunSpecImage(MODELS)
    assert img.registers[:2] == [0x5375, 0x6E53]
    assert img.registers[-2:] == [0xFFFF, 0]
    addr = 40002
    for layout, mid in zip(img.models, MODELS, strict=True):
        model = sdev.Model(mid)
        assert layout.address == addr
        assert layout.length == model.len - 2
        assert img.read(addr, 2) == [mid, layout.length]
        points: dict = {}
        _walk(model, str(mid), points)
        for key, point in points.items():
            spec = img.points[key]
            assert spec.address == layout.address + point.offset, key
            assert spec.size == point.len, key
        addr += layout.length + 2
    assert img.end == addr + 2


def test_model_length_equals_definition_l() -> None:
    img = SunSpecImage(MODELS)
    for layout in img.models:
        assert layout.length == img.get(f"{layout.model_id}.L")
        fixed = sdev.get_model_def(layout.model_id)["group"]["points"][1].get("value")
        assert fixed in (None, layout.length)


def test_unimplemented_values() -> None:
    img = SunSpecImage([701])
    assert img.registers_of("701.W") == [0x8000]
    assert img.registers_of("701.WL1") == [0x8000]
    assert img.registers_of("701.TotWhInj") == [0xFFFF] * 4  # uint64 in 701
    assert img.get("701.W") is None
    assert unimplemented("uint16", 1) == [0xFFFF]
    assert unimplemented("acc32", 2) == [0, 0]
    assert unimplemented("int32", 2) == [0x8000, 0]


def test_scale_factors_applied() -> None:
    img = SunSpecImage([701], scale_factors={"701.W_SF": 1, "701.Hz_SF": -2})
    img.set("701.W", 85000)
    assert img.get_raw("701.W") == 8500
    assert img.get("701.W") == 85000
    img.set("701.Hz", 50.01)
    assert img.get_raw("701.Hz") in (5001,)
    with pytest.raises(IllegalValueError):
        img.set("701.W", 850000)  # 85000 raw does not fit int16


def test_sf_resolved_in_sub_group() -> None:
    img = SunSpecImage([704])
    assert img.points["704.PFWInj.PF"].sf == "704.PF_SF"
    assert img.points["704.WMaxLimPct"].sf == "704.WMaxLimPct_SF"


_TYPES = {
    "int16": st.integers(-0x7FFF, 0x7FFF),
    "uint16": st.integers(0, 0xFFFE),
    "int32": st.integers(-0x7FFFFFFF, 0x7FFFFFFF),
    "uint32": st.integers(0, 0xFFFFFFFE),
    "acc32": st.integers(1, 0xFFFFFFFF),
    "enum16": st.integers(0, 0xFFFE),
    "bitfield32": st.integers(0, 0xFFFFFFFE),
    "sunssf": st.integers(-10, 10),
    "uint64": st.integers(0, 2**64 - 2),
}


@given(st.sampled_from(sorted(_TYPES)).flatmap(lambda t: st.tuples(st.just(t), _TYPES[t])))
def test_encode_decode_round_trip(case: tuple[str, int]) -> None:
    ptype, value = case
    regs = encode(ptype, value)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(ptype, regs) == value


@given(st.floats(-1e6, 1e6, allow_nan=False, width=32))
def test_float32_round_trip(value: float) -> None:
    assert decode("float32", encode("float32", value)) == value


@given(st.text(alphabet="abcXYZ 0123-_", max_size=32))
def test_string_round_trip(text: str) -> None:
    regs = encode("string", text, 16)
    assert len(regs) == 16
    assert decode("string", regs) == (text.rstrip("\0") or None)


def test_big_endian() -> None:
    assert encode("uint32", 0x12345678) == [0x1234, 0x5678]
    assert encode("int16", -2) == [0xFFFE]
    assert encode("string", "SunS", 2) == [0x5375, 0x6E53]


def test_decode_write() -> None:
    img = SunSpecImage([1, 704], scale_factors={"704.WMaxLimPct_SF": 0})
    spec = img.points["704.WMaxLimPct"]
    assert img.decode_write(spec.address, [50]) == {"704.WMaxLimPct": 50}
    ena = img.points["704.WMaxLimPctEna"]
    with pytest.raises(IllegalValueError):
        img.decode_write(ena.address, [7])  # not a symbol
    assert img.decode_write(ena.address, [1]) == {"704.WMaxLimPctEna": 1}
    with pytest.raises(IllegalAddressError):
        img.decode_write(img.points["704.PFWInjRvrtRem"].address, [0, 0])  # read-only
    with pytest.raises(IllegalAddressError):
        img.decode_write(img.points["704.PFWInjRvrtTms"].address + 1, [0])  # half a uint32
    with pytest.raises(IllegalAddressError):
        img.decode_write(img.points["1.Mn"].address, [0x4142])


def test_repeating_group_count_is_configurable() -> None:
    img = SunSpecImage([160], group_counts={"160.module": 3})
    layout = img.models[0]
    model = sdev.Model(160, model_len=layout.length)
    assert len(model.groups["module"]) == 3
    assert img.get("160.N") == 3
    for i, group in enumerate(model.groups["module"]):
        for name, point in group.points.items():
            assert img.points[f"160.module[{i}].{name}"].address == layout.address + point.offset
    assert img.registers[-2:] == [0xFFFF, 0]
