"""The import ledger: which files (by content, under which mapping) were imported completely.

A shortcut, not the guarantee: a file is entered only after the broker acknowledged all of its
records, and skipping it again saves the work; correctness rests on stable event ids, so a
re-import without the ledger (another machine, --force) still changes nothing downstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from connectors.sources.base import InvalidSourceConfig

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: the same export under another name is the same file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ImportLedger:
    """A JSON file of completed imports, keyed by (source, kind, file digest, mapping digest)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @staticmethod
    def key(source: str, kind: str, file_sha256: str, mapping_digest: str) -> str:
        # A changed mapping (say, a SKU code added) may turn rejected rows into good ones.
        return f"{source}:{kind}:{file_sha256}:{mapping_digest[:16]}"

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def record(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            entries = self._read()
            entries[key] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename: a crash leaves the old ledger, never half a file.
            fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise InvalidSourceConfig(f"import ledger {self.path} is unreadable: {error}") from None
        if not isinstance(data, dict):
            raise InvalidSourceConfig(f"import ledger {self.path} is not a JSON object")
        return data
