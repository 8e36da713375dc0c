"""Tolerant reading of what real OpenADR 3 VTNs send, before schema validation.

Real VTNs deviate from the 3.1.0 OpenAPI document in ways listed in
``/work/shared/FIELD-NOTES.md`` (section "OpenADR 3"): webhook bodies as double-encoded
JSON strings with snake_case keys, MQTT payloads in snake_case, timestamps like
``2026-11-22 02:10:09`` (no ``T``, no zone), ``scope`` as an array, problem ``status`` as
a string. :func:`normalise` repairs these into the spec's camelCase form and reports every
repair as a warning, so the result can then be validated with
``controllers.ven.oadr3_models`` and the repairs logged.

The key table comes from the property names of the OpenAPI document
``controllers/ven/spec/openadr3-3.1.0.patched.yaml`` (read once, on first use): a key
is matched to a spec property by its letters and digits regardless of case and
underscores (``program_id``, ``programId`` -> ``programID``). The one collision in the
spec, ``client_id`` (OAuth2 token request, RFC 6749) against ``clientID`` (report), is
resolved by context: an object holding an OAuth2 marker key (``grant_type``,
``access_token``, ``token_type``, ``client_secret``, ``error_description``) keeps its
snake_case keys; elsewhere the camelCase spelling wins. Unknown keys are kept as they are.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MalformedObjectError", "normalise", "spec_key_table"]

SPEC_PATH = Path(__file__).resolve().parent / "spec" / "openadr3-3.1.0.patched.yaml"

#: Keys that mark an OAuth2 message (RFC 6749), whose snake_case keys are normative.
OAUTH_MARKERS: frozenset[str] = frozenset(
    {"grant_type", "access_token", "token_type", "client_secret", "error_description"}
)
#: Spec properties holding a date-time (``#/components/schemas/dateTime``); see
#: :func:`spec_key_table`. Fallback used if the document lists none.
_DATETIME_KEYS_DEFAULT = frozenset({"createdDateTime", "modificationDateTime", "start"})
_MAX_DECODE_DEPTH = 4

_TIMESTAMP_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:(?P<sep>[ Tt])"
    r"(?P<time>\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*(?P<zone>.*))?$"
)


class MalformedObjectError(ValueError):
    """The input is not JSON, or not a JSON object."""


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


@functools.cache
def spec_key_table() -> tuple[dict[str, str], frozenset[str]]:
    """Return the key table and the date-time keys derived from the OpenAPI document.

    The table maps a folded key (lower case, no underscores) to the spec's spelling;
    for the ``client_id``/``clientID`` collision it holds the camelCase one.

    Raises:
        OSError: the bundled spec file cannot be read.
    """
    with SPEC_PATH.open(encoding="utf-8") as fh:
        doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    names: set[str] = set()
    datetime_keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name, schema in props.items():
                    names.add(str(name))
                    if isinstance(schema, dict) and (
                        str(schema.get("$ref", "")).endswith("/dateTime")
                        or schema.get("format") == "date-time"
                    ):
                        datetime_keys.add(str(name))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    table: dict[str, str] = {}
    for name in sorted(names):
        folded = _fold(name)
        current = table.get(folded)
        if current is None or "_" in current:  # camelCase wins a collision
            table[folded] = name
    return table, frozenset(datetime_keys) or _DATETIME_KEYS_DEFAULT


def _decode(raw: str | bytes | Mapping[str, Any], warnings: list[str]) -> dict[str, Any]:
    obj: Any = raw
    if isinstance(obj, bytes | bytearray):
        try:
            obj = bytes(obj).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MalformedObjectError(f"body is not UTF-8: {exc}") from exc
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise MalformedObjectError(f"body is not JSON: {exc}") from exc
        depth = 0
        while isinstance(obj, str):
            depth += 1
            if depth > _MAX_DECODE_DEPTH:
                raise MalformedObjectError("body is JSON text encoded too many times")
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as exc:
                raise MalformedObjectError(
                    f"body is a JSON string whose content is not JSON: {exc}"
                ) from exc
            warnings.append("$: double-encoded JSON (a JSON string holding JSON) decoded")
    if not isinstance(obj, Mapping):
        raise MalformedObjectError(f"body is not a JSON object but {type(obj).__name__}")
    return dict(obj)


def _fix_timestamp(value: Any, path: str, warnings: list[str]) -> Any:
    """RFC 3339 form for a date-time value: ``T`` separator and a zone (UTC if absent)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            warnings.append(f"{path}: date-time {value.isoformat()!r} without zone; UTC assumed")
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, date):
        warnings.append(f"{path}: date {value.isoformat()!r} without time; midnight UTC assumed")
        return f"{value.isoformat()}T00:00:00Z"
    if not isinstance(value, str):
        return value
    m = _TIMESTAMP_RE.match(value.strip())
    if m is None:
        return value
    if m["time"] is None:
        warnings.append(f"{path}: date {value!r} without time; midnight UTC assumed")
        return f"{m['date']}T00:00:00Z"
    time = m["time"].replace(",", ".")
    if len(time) == len("00:00"):
        time += ":00"
    zone = m["zone"].strip()
    fixed = []
    if m["sep"] != "T":
        fixed.append(f"separator {m['sep']!r} replaced by 'T'")
    if not zone:
        zone = "Z"
        fixed.append("no time zone, UTC assumed")
    elif zone in ("z", "UTC", "GMT"):
        fixed.append(f"zone {zone!r} written as 'Z'")
        zone = "Z"
    out = f"{m['date']}T{time}{zone}"
    if out != value and not fixed:
        fixed.append("written in RFC 3339 form")
    if fixed:
        warnings.append(f"{path}: date-time {value!r} -> {out!r} ({'; '.join(fixed)})")
    return out


def _walk(node: Any, path: str, warnings: list[str]) -> Any:
    if isinstance(node, Mapping):
        return _walk_object(node, path, warnings)
    if isinstance(node, list | tuple):
        return [_walk(v, f"{path}[{i}]", warnings) for i, v in enumerate(node)]
    return node


def _walk_object(node: Mapping[str, Any], path: str, warnings: list[str]) -> dict[str, Any]:
    table, datetime_keys = spec_key_table()
    oauth = any(k in OAUTH_MARKERS for k in node)
    out: dict[str, Any] = {}
    for raw_key, raw_value in node.items():
        key = str(raw_key)
        spec_key = (
            key if oauth and key in OAUTH_MARKERS | {"client_id"} else table.get(_fold(key), key)
        )
        if spec_key != key:
            warnings.append(f"{path}.{key}: key renamed to {spec_key!r}")
        if spec_key in out:
            warnings.append(f"{path}.{spec_key}: duplicate key after renaming; last one kept")
        where = f"{path}.{spec_key}"
        value = _walk(raw_value, where, warnings)
        if spec_key in datetime_keys:
            value = _fix_timestamp(value, where, warnings)
        elif spec_key == "scope" and isinstance(value, list):
            joined = " ".join(str(v) for v in value)
            warnings.append(f"{where}: array {value!r} joined into {joined!r}")
            value = joined
        elif spec_key == "objectType" and isinstance(value, str) and value != value.upper():
            warnings.append(f"{where}: {value!r} upper-cased")
            value = value.upper()
        elif (
            spec_key == "status"
            and isinstance(value, str)
            and value.strip().isdigit()
            and ("title" in node or "detail" in node or "type" in node)
        ):
            warnings.append(f"{where}: problem status {value!r} given as string; integer used")
            value = int(value.strip())
        out[spec_key] = value
    return out


def normalise(raw: str | bytes | Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Repair a VTN message into the spec's camelCase form, listing every repair.

    ``raw`` is a body as received (JSON text or bytes, possibly double-encoded) or an
    already-decoded mapping. Repairs (FIELD-NOTES "OpenADR 3"): double-encoded JSON
    decoded; keys matched to the OpenAPI property names (snake_case or other case ->
    camelCase, recursively); date-time values (``createdDateTime``,
    ``modificationDateTime``, ``start``) without zone get UTC, a space separator becomes
    ``T``, a date alone becomes midnight UTC; ``scope`` given as an array is joined with
    spaces; ``objectType`` upper-cased; a problem's ``status`` string made an integer.
    Unknown keys are kept. The input is not modified.

    Returns:
        The repaired object and one warning per repair, each starting with the JSON path
        (``$.object.intervalPeriod.start: ...``); no warnings for a valid camelCase object.

    Raises:
        MalformedObjectError: the input is not (UTF-8) JSON or not a JSON object.
    """
    warnings: list[str] = []
    obj = _decode(raw, warnings)
    return _walk_object(obj, "$", warnings), warnings
