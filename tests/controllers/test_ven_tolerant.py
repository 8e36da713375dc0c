"""Tests of controllers.ven.tolerant: repairs of what real VTNs send (FIELD-NOTES)."""

import copy
import json
from typing import Any

import pytest

from controllers.ven.intervals import expand_event
from controllers.ven.oadr3_models import Event, Notification
from controllers.ven.tolerant import MalformedObjectError, normalise, spec_key_table

VALID_EVENT: dict[str, Any] = {
    "id": "ev-1",
    "createdDateTime": "2026-03-01T00:00:00Z",
    "modificationDateTime": "2026-03-01T00:05:00.000Z",
    "objectType": "EVENT",
    "programID": "prog-1",
    "eventName": "prices",
    "priority": 1,
    "payloadDescriptors": [
        {
            "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
            "payloadType": "PRICE",
            "units": "KWH",
            "currency": "EUR",
        }
    ],
    "intervalPeriod": {
        "start": "2026-03-01T00:00:00+00:00",
        "duration": "PT1H",
        "randomizeStart": "PT0S",
    },
    "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.17, 0.2]}]}],
}


def snake_notification() -> dict[str, Any]:
    return {
        "object_type": "event",
        "operation": "CREATE",
        "object": {
            "id": "ev-7",
            "created_date_time": "2026-11-22 02:10:09",
            "modification_date_time": "2026-11-22T02:10:09",
            "object_type": "event",
            "program_id": "prog-1",
            "event_name": "shed",
            "payload_descriptors": [
                {"object_type": "event_payload_descriptor", "payload_type": "SIMPLE"}
            ],
            "interval_period": {
                "start": "2026-11-22 03:00:00",
                "duration": "PT2H",
                "randomize_start": "PT5M",
            },
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
        },
    }


def test_valid_camelcase_event_round_trips_unchanged() -> None:
    original = copy.deepcopy(VALID_EVENT)
    for raw in (VALID_EVENT, json.dumps(VALID_EVENT), json.dumps(VALID_EVENT).encode()):
        out, warnings = normalise(raw)
        assert out == VALID_EVENT
        assert warnings == []
    assert original == VALID_EVENT  # input untouched
    Event.model_validate(out)


def test_double_encoded_snake_case_notification_is_model_valid() -> None:
    body = json.dumps(json.dumps(snake_notification()))
    out, warnings = normalise(body)
    note = Notification.model_validate(out)
    assert isinstance(note.object, Event)
    assert note.object.programID.root == "prog-1"
    assert note.object.intervalPeriod is not None
    assert note.object.intervalPeriod.randomizeStart is not None
    assert note.object.intervalPeriod.randomizeStart.root == "PT5M"
    assert any("double-encoded" in w for w in warnings)
    assert any("program_id" in w and "'programID'" in w for w in warnings)
    # the repaired event expands
    (iv,) = expand_event(out["object"], note.object.createdDateTime.root)
    assert iv.program_id == "prog-1"


def test_double_encoded_bytes() -> None:
    out, warnings = normalise(json.dumps(json.dumps({"programName": "x"})).encode())
    assert out == {"programName": "x"}
    assert warnings == ["$: double-encoded JSON (a JSON string holding JSON) decoded"]


@pytest.mark.parametrize(
    ("snake", "camel"),
    [
        ("program_id", "programID"),
        ("created_date_time", "createdDateTime"),
        ("interval_period", "intervalPeriod"),
        ("randomize_start", "randomizeStart"),
        ("object_type", "objectType"),
        ("payload_descriptors", "payloadDescriptors"),
        ("ven_id", "venID"),
        ("event_id", "eventID"),
        ("client_id", "clientID"),
        ("resource_name", "resourceName"),
        ("callback_url", "callbackUrl"),
        ("token_url", "tokenURL"),
        ("programId", "programID"),
    ],
)
def test_snake_case_key_renamed_with_warning(snake: str, camel: str) -> None:
    out, warnings = normalise({"outer": [{snake: "V"}]})
    assert out == {"outer": [{camel: "V"}]}
    assert warnings == [f"$.outer[0].{snake}: key renamed to {camel!r}"]


def test_key_table_comes_from_openapi_document() -> None:
    table, datetime_keys = spec_key_table()
    assert {"programID", "venID", "eventID", "clientID", "resourceName"} <= set(table.values())
    assert table["clientid"] == "clientID"
    assert {"createdDateTime", "modificationDateTime", "start"} <= datetime_keys


def test_oauth_bodies_keep_their_snake_case() -> None:
    body = {"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"}
    out, warnings = normalise(body)
    assert out == body and warnings == []


def test_unknown_keys_kept() -> None:
    out, warnings = normalise({"vendor_extension": {"some_key": 1}, "programName": "p"})
    assert out == {"vendor_extension": {"some_key": 1}, "programName": "p"}
    assert warnings == []


@pytest.mark.parametrize(
    ("given", "expected", "fragment"),
    [
        ("2026-11-22 02:10:09", "2026-11-22T02:10:09Z", "no time zone, UTC assumed"),
        ("2026-11-22T02:10:09", "2026-11-22T02:10:09Z", "no time zone, UTC assumed"),
        ("2026-11-22 02:10:09+01:00", "2026-11-22T02:10:09+01:00", "separator ' '"),
        ("2026-11-22 02:10:09.250", "2026-11-22T02:10:09.250Z", "separator ' '"),
        ("0001-01-01", "0001-01-01T00:00:00Z", "midnight UTC assumed"),
    ],
)
def test_timestamp_repaired_with_warning(given: str, expected: str, fragment: str) -> None:
    out, warnings = normalise({"intervalPeriod": {"start": given}})
    assert out == {"intervalPeriod": {"start": expected}}
    assert len(warnings) == 1
    assert warnings[0].startswith("$.intervalPeriod.start:") and fragment in warnings[0]


def test_timestamp_with_zone_untouched() -> None:
    out, warnings = normalise({"createdDateTime": "2026-11-22T02:10:09.5Z"})
    assert out == {"createdDateTime": "2026-11-22T02:10:09.5Z"} and warnings == []


def test_scope_list_joined() -> None:
    out, warnings = normalise({"scope": ["read_all", "write_reports"]})
    assert out == {"scope": "read_all write_reports"}
    assert len(warnings) == 1 and "$.scope" in warnings[0] and "joined" in warnings[0]


def test_object_type_upper_cased() -> None:
    out, warnings = normalise({"objectType": "program"})
    assert out == {"objectType": "PROGRAM"}
    assert warnings == ["$.objectType: 'program' upper-cased"]


def test_problem_status_string_made_int() -> None:
    out, warnings = normalise({"title": "Not Found", "status": "404"})
    assert out == {"title": "Not Found", "status": 404}
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1, 2]", "42", json.dumps("plain text"), b"\xff\xfe\x00", "null", 42],
)
def test_malformed_input_raises(raw: Any) -> None:
    with pytest.raises(MalformedObjectError):
        normalise(raw)
