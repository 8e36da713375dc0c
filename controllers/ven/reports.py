"""Build OpenADR 3 reports (``ReportRequest``) from an event's ``reportDescriptors``.

Implemented (User Guide 7.5): report on all intervals (``startInterval = numIntervals =
-1``, historical or forecast) and on a contiguous subset (``startInterval``,
``numIntervals``); ``aggregate`` (7.7: one resource named ``AGGREGATED_REPORT``, values
summed; a state of charge is averaged); ``reportIntervals = INTERVALS`` (report interval
ids and periods are the event's). A report-only event without intervals reports the
interval ids the caller measured. Not implemented: ``frequency``/``repeat`` scheduling
(the caller decides when to report), sub-intervals, open intervals, targets filtering.

Payload types answered: ``USAGE`` (kWh over the interval), ``DEMAND`` (kW, mean over the
interval), ``STORAGE_CHARGE_LEVEL`` (percent, Definition: "0% is empty") when a BESS state
of charge is given. Without descriptors on the event, USAGE and DEMAND (and the charge
level when given) are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controllers.ven.oadr3_models import (
    Event,
    Interval,
    IntervalPeriod,
    ReportDescriptor,
    ReportPayloadDescriptor,
    ReportRequest,
    Resource,
    ValuesMap,
)

AGGREGATED = "AGGREGATED_REPORT"
DEFAULT_UNITS = {"USAGE": "KWH", "DEMAND": "KW", "STORAGE_CHARGE_LEVEL": "PERCENT"}
SUPPORTED = tuple(DEFAULT_UNITS)


@dataclass(frozen=True)
class IntervalReading:
    """What a resource did over one event interval."""

    usage_kwh: float | None = None
    demand_kw: float | None = None
    soc: float | None = None
    """BESS state of charge, 0..1 (reported as percent)."""

    def value(self, payload_type: str) -> float | None:
        """The reading for an OpenADR report payload type, in its default unit."""
        if payload_type == "USAGE":
            return self.usage_kwh
        if payload_type == "DEMAND":
            return self.demand_kw
        if payload_type == "STORAGE_CHARGE_LEVEL":
            return None if self.soc is None else round(self.soc * 100.0, 6)
        return None


Measurements = Mapping[str, Mapping[int, IntervalReading]]
"""resource name -> event interval id -> reading."""


def _descriptors(event: Event, measurements: Measurements) -> list[ReportDescriptor]:
    if event.reportDescriptors:
        return list(event.reportDescriptors)
    wanted = ["USAGE", "DEMAND"]
    if any(r.soc is not None for per in measurements.values() for r in per.values()):
        wanted.append("STORAGE_CHARGE_LEVEL")
    return [ReportDescriptor(payloadType=p) for p in wanted]


def _interval_ids(event: Event, descriptor: ReportDescriptor, measured: list[int]) -> list[int]:
    ids = [i.id for i in event.intervals] if event.intervals else sorted(set(measured))
    start = descriptor.startInterval if descriptor.startInterval not in (None, -1) else 0
    count = descriptor.numIntervals if descriptor.numIntervals not in (None, -1) else None
    chosen = ids[start:] if count is None else ids[start : start + count]
    return [i for i in chosen if i in set(measured)]


def build_report(
    event: Event,
    measurements: Measurements,
    *,
    client_name: str,
    report_name: str | None = None,
) -> tuple[ReportRequest, list[str]]:
    """The report an event asks for, and warnings for what could not be answered."""
    warnings: list[str] = []
    periods: dict[int, IntervalPeriod | None] = {
        i.id: i.intervalPeriod for i in (event.intervals or [])
    }
    # resource name -> interval id -> payload type -> value
    table: dict[str, dict[int, dict[str, float]]] = {}
    payload_descriptors: list[ReportPayloadDescriptor] = []
    measured_ids = [i for per in measurements.values() for i in per]
    for d in _descriptors(event, measurements):
        ptype = d.payloadType
        if ptype not in SUPPORTED:
            warnings.append(f"report payload type {ptype!r} not supported; not reported")
            continue
        ids = _interval_ids(event, d, measured_ids)
        rows: dict[str, dict[int, float]] = {}
        for resource, per in measurements.items():
            for iid in ids:
                reading = per.get(iid)
                value = None if reading is None else reading.value(ptype)
                if value is not None:
                    rows.setdefault(resource, {})[iid] = value
        if not rows:
            warnings.append(f"no measurement for {ptype}; not reported")
            continue
        if d.aggregate:
            combined: dict[int, list[float]] = {}
            for per_id in rows.values():
                for iid, v in per_id.items():
                    combined.setdefault(iid, []).append(v)
            mean = ptype == "STORAGE_CHARGE_LEVEL"
            rows = {
                AGGREGATED: {
                    iid: (sum(vs) / len(vs) if mean else sum(vs)) for iid, vs in combined.items()
                }
            }
        for resource, per_id in rows.items():
            for iid, v in per_id.items():
                table.setdefault(resource, {}).setdefault(iid, {})[ptype] = v
        payload_descriptors.append(
            ReportPayloadDescriptor(
                objectType="REPORT_PAYLOAD_DESCRIPTOR",
                payloadType=ptype,
                readingType=d.readingType.root if d.readingType else "DIRECT_READ",
                units=d.units.root if d.units and d.units.root else DEFAULT_UNITS[ptype],
            )
        )
    resources = [
        Resource(
            resourceName=name,
            intervalPeriod=event.intervalPeriod,
            intervals=[
                Interval(
                    id=iid,
                    intervalPeriod=periods.get(iid),
                    payloads=[ValuesMap(type=t, values=[v]) for t, v in payloads.items()],
                )
                for iid, payloads in sorted(per.items())
            ],
        )
        for name, per in sorted(table.items())
    ]
    report = ReportRequest(
        eventID=event.id,
        clientName=client_name,
        reportName=report_name or f"{event.eventName or event.id.root}-report",
        payloadDescriptors=payload_descriptors or None,
        resources=resources,
    )
    return report, warnings
