"""Which Label Studio project belongs to which concept, and the loop settings it was published with.

A small SQLite file in the workspace (``label_studio.sqlite``), beside the core's sessions: it is
Label Studio knowledge, so the core engine never sees it. The server stays the source of truth
for tasks and annotations; this table only names projects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agile_modeling.database import Database
from agile_modeling.errors import AgileError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    concept TEXT NOT NULL, purpose TEXT NOT NULL, project_id INTEGER NOT NULL UNIQUE,
    label_config TEXT NOT NULL, seed_size INTEGER NOT NULL, batch_size INTEGER NOT NULL,
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, created REAL NOT NULL, last_sync REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (concept, purpose));
CREATE TABLE IF NOT EXISTS pushed_images (
    project_id INTEGER NOT NULL, image_id INTEGER NOT NULL, round INTEGER, recorded REAL NOT NULL,
    PRIMARY KEY (project_id, image_id));
"""

RATING = "rating"


class UnknownProjectError(AgileError):
    """A Label Studio project that no concept of this workspace published."""


@dataclass(frozen=True)
class ProjectLink:
    """One concept's project and the loop settings it runs with."""

    concept: str  # the concept's slug
    purpose: str
    project_id: int
    label_config: str
    seed_size: int
    batch_size: int
    strategy: str
    seed: int
    last_sync: float = 0.0
    last_error: str | None = None  # why the latest sync failed (cleared by the next good one)


class SyncState:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = Database(self.path, _SCHEMA)  # per-thread connections, WAL, one busy timeout (agile_modeling.database)

    _COLUMNS = "concept, purpose, project_id, label_config, seed_size, batch_size, strategy, seed, last_sync, last_error"

    def link(self, link: ProjectLink) -> ProjectLink:
        """Record a concept's project; if one is already recorded, that one is returned."""
        self.db.execute(
            "INSERT OR IGNORE INTO projects (concept, purpose, project_id, label_config, seed_size, batch_size, strategy,"
            " seed, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (link.concept, link.purpose, link.project_id, link.label_config, link.seed_size, link.batch_size,
             link.strategy, link.seed, time.time()),
        )
        return self.for_concept(link.concept, link.purpose)

    def for_concept(self, concept: str, purpose: str = RATING) -> ProjectLink | None:
        row = self.db.execute(f"SELECT {self._COLUMNS} FROM projects WHERE concept = ? AND purpose = ?",
                              (concept, purpose)).fetchone()
        return ProjectLink(*row) if row else None

    def for_project(self, project_id: int) -> ProjectLink:
        row = self.db.execute(f"SELECT {self._COLUMNS} FROM projects WHERE project_id = ?", (int(project_id),)).fetchone()
        if not row:
            raise UnknownProjectError(
                f"Label Studio project {project_id} belongs to no concept of this workspace; "
                "publish one with `agile concept new ...` (or check AGILE_WORKSPACE)")
        return ProjectLink(*row)

    def links_of(self, concept: str) -> list[ProjectLink]:
        """Every project of a concept (rating, crowd, evaluation, ...), oldest first."""
        return [ProjectLink(*r) for r in self.db.execute(
            f"SELECT {self._COLUMNS} FROM projects WHERE concept = ? ORDER BY created", (concept,))]

    def all(self) -> list[ProjectLink]:
        return [ProjectLink(*r) for r in self.db.execute(f"SELECT {self._COLUMNS} FROM projects ORDER BY created")]

    def mark_synced(self, project_id: int, started: float) -> None:
        self.db.execute("UPDATE projects SET last_sync = MAX(last_sync, ?), last_error = NULL WHERE project_id = ?",
                        (started, project_id))

    def record_error(self, project_id: int, message: str) -> None:
        self.db.execute("UPDATE projects SET last_error = ? WHERE project_id = ?", (message, project_id))

    # --- which images were ever in a project: tells "deleted by the user" from "never pushed" --------
    def record_pushed(self, project_id: int, images: Iterable[tuple[int, int | None]]) -> None:
        """Record ``(image_id, round)`` pairs as having (had) a task in the project: imported by us,
        or seen on the server. Idempotent."""
        now = time.time()
        self.db.executemany("INSERT OR IGNORE INTO pushed_images VALUES (?, ?, ?, ?)",
                            [(int(project_id), int(i), r, now) for i, r in images])

    def pushed_images(self, project_id: int) -> set[int]:
        """Images that had a task in the project at some point (see :meth:`record_pushed`)."""
        return {int(r[0]) for r in self.db.execute("SELECT image_id FROM pushed_images WHERE project_id = ?",
                                                   (int(project_id),))}
