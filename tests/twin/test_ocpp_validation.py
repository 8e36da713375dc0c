"""Compiled OCPP validation gives the library's own verdict and CALLERROR class."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from jsonschema import ValidationError as SchemaValidationError
from ocpp import messages
from ocpp.messages import Call

from twin import ocpp_validation

SCHEMAS = Path(messages.__file__).parent / "v201" / "schemas"
VALID = {
    "MeterValues": {"evseId": 1, "meterValue": [
        {"timestamp": "2019-09-10T07:00:00Z", "sampledValue": [{"value": 1.5}]}]},
    "BootNotification": {"reason": "PowerUp",
                         "chargingStation": {"model": "M", "vendorName": "V"}},
    "Heartbeat": {},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def reference_outcome(action: str, payload: object) -> str:
    with (SCHEMAS / f"{action}Request.json").open(encoding="utf-8-sig") as f:
        ref = Draft4Validator(json.load(f))
    try:
        ref.validate(payload)
    except SchemaValidationError as e:
        return e.validator
    return "valid"


def compiled_outcome(action: str, payload: object) -> str:
    ocpp_validation.install()
    try:
        messages._validate_payload(Call("1", action, payload), "2.0.1")
    except messages.OCPPError as e:
        return type(e).__name__
    return "valid"


MAPPING = {"valid": "valid", "type": "TypeConstraintViolationError",
           "additionalProperties": "FormatViolationError", "required": "ProtocolError",
           "maxLength": "TypeConstraintViolationError"}


@pytest.mark.parametrize("action", sorted(VALID))
def test_valid_payloads_pass(action: str) -> None:
    assert compiled_outcome(action, VALID[action]) == "valid"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.text(max_size=10), json_values)
def test_same_verdict_as_the_reference_for_mutated_payloads(action, key, value) -> None:
    payload = json.loads(json.dumps(VALID[action]))
    if payload and key in ("", "x"):
        payload.pop(next(iter(payload)))
    else:
        payload[key or "evseId"] = value
    expected = reference_outcome(action, payload)
    assert compiled_outcome(action, payload) == MAPPING.get(expected, "FormatViolationError")
