"""The runs a dashboard or API process serves.

Every run folder under a root plus any folders named on the command line, addressed by a
run id (the folder name).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twin.run_folder import RunFolder, RunFolderError, RunInfo, is_run_folder, list_runs


class UnknownRunError(KeyError):
    """No run with that id; ``str()`` lists what is known."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown run"


class RunCatalog:
    """Run folders under ``root`` (default ``runs/``) and ``extra`` folders.

    The folder list is read again on every call, so runs that appear while the server
    is up (a new ``migrid run``) are listed. Run ids are folder names; an extra folder
    whose name clashes with one under the root gets its parent's name as a prefix.
    """

    def __init__(self, root: str | Path = "runs", extra: Sequence[str | Path] = ()) -> None:
        self.root = Path(root)
        self.extra = [Path(p) for p in extra]
        for p in self.extra:
            if not is_run_folder(p):
                raise RunFolderError(f"{p}: not a run folder")

    def _paths(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for info in list_runs(self.root) if self.root.is_dir() else []:
            found[info.name] = info.path
        for p in self.extra:
            clash = p.name in found and found[p.name] != p
            rid = f"{p.parent.name}.{p.name}" if clash else p.name
            found[rid] = p
        return found

    def ids(self) -> list[str]:
        """Known run ids, sorted newest name first."""
        return sorted(self._paths(), reverse=True)

    def infos(self) -> list[tuple[str, RunInfo]]:
        """(run id, summary) of every known run; unreadable folders are skipped."""
        out = []
        for rid, path in sorted(self._paths().items(), reverse=True):
            try:
                out.append((rid, RunFolder(path).info()))
            except (OSError, ValueError):
                continue
        return out

    def get(self, run_id: str) -> RunFolder:
        """The reader of run ``run_id``.

        Raises:
            UnknownRunError: no such run (message lists up to ten known ids).
        """
        path = self._paths().get(run_id)
        if path is None:
            known = ", ".join(self.ids()[:10]) or "none"
            raise UnknownRunError(f"no run {run_id!r}; known: {known}")
        return RunFolder(path)
