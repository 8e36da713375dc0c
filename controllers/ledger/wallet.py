"""Export of ledger entries to an external wallet (no blockchain here).

:class:`WalletAdapter` is the interface a wallet integration implements;
:class:`JsonLinesWalletAdapter` is the reference implementation: one JSON object per
journal entry appended to a file, each event exported at most once (the adapter skips
event ids already in the file, so re-exporting after a crash or a replay is harmless).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from controllers.ledger.ledger import JournalEntry


@dataclass(frozen=True)
class ExportReceipt:
    """What an export did: event ids written and skipped, and a digest of what was written."""

    exported: tuple[str, ...]
    skipped: tuple[str, ...]
    sha256: str


@runtime_checkable
class WalletAdapter(Protocol):
    """Exports journal entries to an external wallet; must be idempotent on event id."""

    def export(self, entries: Sequence[JournalEntry]) -> ExportReceipt:
        """Export ``entries``; entries already exported are skipped, not duplicated."""
        ...


def entry_to_json(entry: JournalEntry) -> dict[str, Any]:
    """A JSON-ready dict of ``entry`` (amounts as decimal strings, times as ISO 8601 UTC)."""
    return {
        "event_id": entry.event_id,
        "txn_id": entry.txn_id,
        "kind": str(entry.kind),
        "session_id": entry.session_id,
        "rule_id": entry.rule_id,
        "actor": entry.actor,
        "memo": entry.memo,
        "created_at": entry.created_at.isoformat(),
        "postings": [
            {
                "account_kind": str(p.account.kind),
                "owner": p.account.owner,
                "code": p.account.code,
                "amount": str(p.amount),
            }
            for p in entry.postings
        ],
    }


class JsonLinesWalletAdapter:
    """Appends entries as JSON lines to ``path``, skipping event ids already present."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def exported_ids(self) -> set[str]:
        """Event ids already in the file (a torn last line from a crash is ignored)."""
        if not self.path.exists():
            return set()
        ids: set[str] = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                ids.add(json.loads(line)["event_id"])
            except (ValueError, KeyError, TypeError):
                continue
        return ids

    def export(self, entries: Sequence[JournalEntry]) -> ExportReceipt:
        """Append the entries not exported yet, fsync, and return the receipt."""
        done = self.exported_ids()
        lines: list[str] = []
        exported: list[str] = []
        skipped: list[str] = []
        for e in entries:
            if e.event_id in done:
                skipped.append(e.event_id)
                continue
            done.add(e.event_id)
            exported.append(e.event_id)
            lines.append(json.dumps(entry_to_json(e), sort_keys=True, separators=(",", ":")))
        blob = "".join(line + "\n" for line in lines).encode()
        if blob:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as f:
                if f.tell() > 0 and not self._ends_with_newline():
                    f.write(b"\n")  # terminate a torn line left by a crash
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        return ExportReceipt(tuple(exported), tuple(skipped), hashlib.sha256(blob).hexdigest())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
