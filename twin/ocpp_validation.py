"""Compiled OCPP schema validation for the `ocpp` package.

The `ocpp` package validates every incoming and outgoing message against the official
OCPP JSON schemas (1.6, 2.0.1, 2.1) with `jsonschema`'s Draft 4 validator, by default in
a thread pool. That costs ~87 µs a message on this machine (FIELD-NOTES.md) and is the
largest single cost of a twin step. :func:`install` keeps validation on, against the same
schema files, but compiles each schema once with `fastjsonschema` (~6 µs a message) and
runs it inline:

* a payload the compiled schema accepts is accepted;
* a payload it rejects is re-checked by the library's own Draft 4 validator, which raises
  the same ``jsonschema.ValidationError`` the library maps to the OCPP CALLERROR codes
  (TypeConstraintViolation, FormatViolation, ProtocolError ...), so replies to bad frames
  are exactly the library's.

The result of validation is therefore always the reference validator's verdict; only the
happy path is faster. The runtime (twin, hil) installs this once per process; controllers
and devices do not depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft4Validator
from ocpp import messages

_installed = False

# OCPP 1.6 messages the library re-parses with Decimal floats before validating (the
# schemas use multipleOf 0.1); they keep the library's own Decimal-aware validator.
_DECIMAL_SCHEMAS_16 = frozenset(
    {"SetChargingProfile", "RemoteStartTransaction", "GetCompositeScheduleResponse"}
)


class CompiledValidator:
    """A Draft 4 validator with a compiled fast path.

    Args:
        path: the official OCPP JSON schema file shipped with the `ocpp` package.

    The schema is read and compiled on first use (compiling all 384 schemas of three
    OCPP versions up front takes ~3 s). ``validate(payload)`` returns None when valid and
    raises ``jsonschema.ValidationError`` (from the reference validator) when not.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._reference: Draft4Validator | None = None
        self._fast: Any = None

    def _compile(self) -> Draft4Validator:
        with self._path.open(encoding="utf-8-sig") as f:
            schema = json.load(f)
        self._reference = Draft4Validator(schema)
        # fastjsonschema reads "$schema" to choose the draft; OCPP 2.0.1 files name
        # draft-06 although the library validates them as Draft 4.
        fast_schema = {k: v for k, v in schema.items() if k != "$schema"}
        self._fast = fastjsonschema.compile(fast_schema, use_default=False)
        return self._reference

    def validate(self, payload: Any) -> None:
        """Validate ``payload``; raise ``jsonschema.ValidationError`` when invalid."""
        reference = self._reference or self._compile()
        try:
            self._fast(payload)
        except fastjsonschema.JsonSchemaException:
            reference.validate(payload)


def _schema_dir() -> Path:
    return Path(messages.__file__).parent


def install() -> None:
    """Install compiled validators for every OCPP 1.6, 2.0.1 and 2.1 schema (idempotent).

    Also turns off the library's thread-pool validation: compiled validation is cheaper
    than the hop to a worker thread, and inline validation keeps a lock-step run
    deterministic. Call once per process before any station or CSMS starts.
    """
    global _installed
    if _installed:
        return
    for version, folder in (("1.6", "v16"), ("2.0.1", "v201"), ("2.1", "v21")):
        schema_dir = _schema_dir() / folder / "schemas"
        if not schema_dir.is_dir():
            continue
        for path in sorted(schema_dir.glob("*.json")):
            if version == "1.6" and path.stem in _DECIMAL_SCHEMAS_16:
                continue
            cache_key = f"{path.stem}_{version}"
            messages._validators[cache_key] = CompiledValidator(path)
    messages.ASYNC_VALIDATION = False
    _installed = True
