"""A persistent cache of model calls, so that re-scoring a definition never pays twice.

Keyed by the SHA-256 of (model, task, prompt, image digests); stored in the concept's sessions
database (or any SQLite file), so it survives restarts and is shared by the worker and the CLI.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from agile_modeling.database import Database

_SCHEMA = """CREATE TABLE IF NOT EXISTS provider_cache (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, task TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL)"""


def call_key(model: str, task: str, prompt: str, images: Sequence[bytes] = ()) -> str:
    h = hashlib.sha256()
    for part in (model, task, prompt):
        h.update(part.encode())
        h.update(b"\x00")
    for img in images:
        h.update(hashlib.sha256(img).digest())
    return h.hexdigest()


class CallCache:
    """``get``/``put`` of a model's text answers by :func:`call_key`. ``path=None`` keeps them in memory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.db = Database(path, _SCHEMA)  # the connection policy of every SQLite file (agile_modeling.database)

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT response FROM provider_cache WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, task: str, response: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO provider_cache VALUES (?, ?, ?, ?, ?)", (key, model, task, response, time.time())
        )

    def __len__(self) -> int:
        count: int = self.db.execute("SELECT COUNT(*) FROM provider_cache").fetchone()[0]
        return count
