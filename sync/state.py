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
    created REAL NOT NULL, last_sync REAL NOT NULL DEFAULT 0, last_error TEXT,
    PRIMARY KEY (concept, purpose));
CREATE TABLE IF NOT EXISTS rating_projects (
    project_id INTEGER PRIMARY KEY REFERENCES projects (project_id), label_config TEXT NOT NULL,
    seed_size INTEGER NOT NULL, batch_size INTEGER NOT NULL, strategy TEXT NOT NULL, seed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS crowd_projects (
    project_id INTEGER PRIMARY KEY REFERENCES projects (project_id), annotators INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS source_projects (
    project_id INTEGER PRIMARY KEY REFERENCES projects (project_id), positive_choice TEXT, negative_choice TEXT);
CREATE TABLE IF NOT EXISTS source_tasks (
    project_id INTEGER NOT NULL, task_id INTEGER NOT NULL, image_id INTEGER, skipped TEXT, recorded REAL NOT NULL,
    PRIMARY KEY (project_id, task_id));
CREATE TABLE IF NOT EXISTS written_predictions (
    project_id INTEGER NOT NULL, model_version TEXT NOT NULL, task_id INTEGER NOT NULL, written REAL NOT NULL,
    PRIMARY KEY (project_id, model_version, task_id));
CREATE TABLE IF NOT EXISTS writing_predictions (
    project_id INTEGER NOT NULL, model_version TEXT NOT NULL, task_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, model_version, task_id));
CREATE TABLE IF NOT EXISTS pushed_images (
    project_id INTEGER NOT NULL, image_id INTEGER NOT NULL, round INTEGER, recorded REAL NOT NULL,
    PRIMARY KEY (project_id, image_id));
"""

RATING = "rating"
CROWD = "crowd"
EVALUATION = "evaluation"  # agile_modeling.quality.EVALUATION: the label source of its ratings
# a user's own project adopted as a concept's pool: its tasks and annotations are read, never changed;
# only predictions are written onto them (`agile concept apply`)
SOURCE = "source"


class UnknownProjectError(AgileError):
    """A Label Studio project that no concept of this workspace published."""


class ProjectConflictError(AgileError):
    """A new project's id is already linked to another concept (Label Studio's ids started again)."""


@dataclass(frozen=True)
class RoundSettings:
    """How a rating project's rounds run: what ``concept publish`` was given."""

    label_config: str  # the labeling interface's name (label_config/<name>.xml)
    seed_size: int
    batch_size: int
    strategy: str  # a selection strategy of agile_modeling.selection
    seed: int


@dataclass(frozen=True)
class ProjectLink:
    """One concept's project for one purpose (rating, crowd, evaluation, a deliberation stage), with
    the settings of that purpose: ``rounds`` for the rating project, ``annotators`` (ratings wanted
    per image) for the crowd project; the other purposes have none."""

    concept: str  # the concept's slug
    purpose: str
    project_id: int
    rounds: RoundSettings | None = None
    annotators: int | None = None
    last_sync: float = 0.0
    last_error: str | None = None  # why the latest sync failed (cleared by the next good one)

    def __post_init__(self) -> None:
        if (self.purpose == RATING) != (self.rounds is not None):
            raise ValueError(
                f"a {self.purpose} project link {'needs' if self.purpose == RATING else 'has no'} round settings"
            )
        if (self.purpose == CROWD) != (self.annotators is not None):
            raise ValueError(
                f"a {self.purpose} project link {'needs' if self.purpose == CROWD else 'has no'} number of annotators"
            )

    @property
    def label_config(self) -> str:
        """The name of the labeling interface the project was created with (``label_config/<name>.xml``):
        the rating project's own; crowd and evaluation projects rate with ``rating``; a deliberation
        stage's interface is named after its purpose."""
        if self.rounds is not None:
            return self.rounds.label_config
        return "rating" if self.purpose in (CROWD, EVALUATION) else self.purpose

    @property
    def round_settings(self) -> RoundSettings:
        """``rounds`` of a rating project (an error for the other purposes)."""
        if self.rounds is None:
            raise ValueError(f"project {self.project_id} is a {self.purpose} project: it has no rounds")
        return self.rounds


class SyncState:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = Database(
            self.path, _SCHEMA
        )  # per-thread connections, WAL, one busy timeout (agile_modeling.database)
        self._migrate()

    def _migrate(self) -> None:
        """A state file written before each purpose had its own settings kept them in the columns of
        ``projects`` (the crowd's annotators in ``batch_size``, "majority" in ``strategy``, a
        deliberation's purpose in ``label_config``): move them to their tables, keep the rest."""
        with self.db.transaction():
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(projects)")}
            if "label_config" not in columns:
                return
            self.db.execute(
                "INSERT OR IGNORE INTO rating_projects SELECT project_id, label_config, seed_size, "
                "batch_size, strategy, seed FROM projects WHERE purpose = ?",
                (RATING,),
            )
            self.db.execute(
                "INSERT OR IGNORE INTO crowd_projects SELECT project_id, batch_size FROM projects WHERE purpose = ?",
                (CROWD,),
            )
            self.db.execute(
                "CREATE TABLE projects_new (concept TEXT NOT NULL, purpose TEXT NOT NULL, project_id "
                "INTEGER NOT NULL UNIQUE, created REAL NOT NULL, last_sync REAL NOT NULL DEFAULT 0, "
                "last_error TEXT, PRIMARY KEY (concept, purpose))"
            )
            self.db.execute(
                "INSERT INTO projects_new SELECT concept, purpose, project_id, created, last_sync, "
                "last_error FROM projects"
            )
            self.db.execute("DROP TABLE projects")
            self.db.execute("ALTER TABLE projects_new RENAME TO projects")

    _SELECT = (
        "SELECT p.concept, p.purpose, p.project_id, r.label_config, r.seed_size, r.batch_size, r.strategy, "
        "r.seed, c.annotators, p.last_sync, p.last_error FROM projects p "
        "LEFT JOIN rating_projects r ON r.project_id = p.project_id "
        "LEFT JOIN crowd_projects c ON c.project_id = p.project_id"
    )

    @staticmethod
    def _link(row: tuple) -> ProjectLink:
        concept, purpose, project_id, label_config, seed_size, batch_size, strategy, seed, annotators, *sync = row
        rounds = RoundSettings(label_config, seed_size, batch_size, strategy, seed) if purpose == RATING else None
        return ProjectLink(concept, purpose, project_id, rounds, annotators if purpose == CROWD else None, *sync)

    def link(self, link: ProjectLink) -> ProjectLink:
        """Record a concept's project; if one is already recorded, that one is returned."""
        with self.db.transaction():
            added = self.db.execute(
                "INSERT OR IGNORE INTO projects (concept, purpose, project_id, created) VALUES (?, ?, ?, ?)",
                (link.concept, link.purpose, link.project_id, time.time()),
            ).rowcount
            if added and link.rounds is not None:
                r = link.rounds
                self.db.execute(
                    "INSERT INTO rating_projects VALUES (?, ?, ?, ?, ?, ?)",
                    (link.project_id, r.label_config, r.seed_size, r.batch_size, r.strategy, r.seed),
                )
            if added and link.annotators is not None:
                self.db.execute("INSERT INTO crowd_projects VALUES (?, ?)", (link.project_id, link.annotators))
        found = self.for_concept(link.concept, link.purpose)
        if found is None:  # the project id is recorded for another concept or purpose
            other = self.for_project(link.project_id)
            raise ProjectConflictError(
                f"Label Studio project {link.project_id} is already linked to the {other.purpose} project of "
                f"{other.concept!r} in this workspace: was Label Studio's database reset? Use a fresh workspace "
                "(AGILE_WORKSPACE) for a new Label Studio, or the Label Studio that made these projects"
            )
        return found

    def for_concept(self, concept: str, purpose: str = RATING) -> ProjectLink | None:
        row = self.db.execute(f"{self._SELECT} WHERE p.concept = ? AND p.purpose = ?", (concept, purpose)).fetchone()
        return self._link(row) if row else None

    def for_project(self, project_id: int) -> ProjectLink:
        row = self.db.execute(f"{self._SELECT} WHERE p.project_id = ?", (int(project_id),)).fetchone()
        if not row:
            raise UnknownProjectError(
                f"Label Studio project {project_id} belongs to no concept of this workspace; "
                "publish one with `agile concept new ...` (or check AGILE_WORKSPACE)"
            )
        return self._link(row)

    def links_of(self, concept: str) -> list[ProjectLink]:
        """Every project of a concept (rating, crowd, evaluation, ...), oldest first."""
        return [
            self._link(r) for r in self.db.execute(f"{self._SELECT} WHERE p.concept = ? ORDER BY p.created", (concept,))
        ]

    def all(self) -> list[ProjectLink]:
        return [self._link(r) for r in self.db.execute(f"{self._SELECT} ORDER BY p.created")]

    def mark_synced(self, project_id: int, started: float) -> None:
        self.db.execute(
            "UPDATE projects SET last_sync = MAX(last_sync, ?), last_error = NULL WHERE project_id = ?",
            (started, project_id),
        )

    def record_error(self, project_id: int, message: str) -> None:
        self.db.execute("UPDATE projects SET last_error = ? WHERE project_id = ?", (message, project_id))

    # --- which images were ever in a project: tells "deleted by the user" from "never pushed" --------
    def record_pushed(self, project_id: int, images: Iterable[tuple[int, int | None]]) -> None:
        """Record ``(image_id, round)`` pairs as having (had) a task in the project: imported by us,
        or seen on the server. Idempotent."""
        now = time.time()
        self.db.executemany(
            "INSERT OR IGNORE INTO pushed_images VALUES (?, ?, ?, ?)",
            [(int(project_id), int(i), r, now) for i, r in images],
        )

    def pushed_images(self, project_id: int) -> set[int]:
        """Images that had a task in the project at some point (see :meth:`record_pushed`)."""
        return {
            int(r[0])
            for r in self.db.execute("SELECT image_id FROM pushed_images WHERE project_id = ?", (int(project_id),))
        }

    # --- an adopted project's tasks: which pool image each task shows ------------------------------
    def set_source_choices(self, project_id: int, positive: str | None, negative: str | None) -> None:
        """The adopted project's choices that mean positive and negative (None: the default names)."""
        self.db.execute(
            "INSERT OR REPLACE INTO source_projects VALUES (?, ?, ?)", (int(project_id), positive, negative)
        )

    def source_choices(self, project_id: int) -> tuple[str | None, str | None]:
        row = self.db.execute(
            "SELECT positive_choice, negative_choice FROM source_projects WHERE project_id = ?", (int(project_id),)
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def record_source_tasks(self, project_id: int, mapped: dict[int, int], skipped: dict[int, str]) -> None:
        """Record ``{task id: pool image id}`` and ``{task id: why its image could not be read}``; a task
        mapped later replaces its skip."""
        now = time.time()
        with self.db.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO source_tasks VALUES (?, ?, ?, NULL, ?)",
                [(int(project_id), int(t), int(i), now) for t, i in mapped.items()],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO source_tasks VALUES (?, ?, NULL, ?, ?)",
                [(int(project_id), int(t), why, now) for t, why in skipped.items()],
            )

    def forget_source_tasks(self, project_id: int, task_ids: Iterable[int]) -> None:
        """Tasks deleted from the adopted project: no longer mapped, nothing written onto them."""
        gone = [(int(project_id), int(t)) for t in task_ids]
        with self.db.transaction():
            self.db.executemany("DELETE FROM source_tasks WHERE project_id = ? AND task_id = ?", gone)
            self.db.executemany("DELETE FROM written_predictions WHERE project_id = ? AND task_id = ?", gone)
            self.db.executemany("DELETE FROM writing_predictions WHERE project_id = ? AND task_id = ?", gone)

    def source_tasks(self, project_id: int) -> dict[int, int]:
        """``{task id: pool image id}`` of every task of the project whose image is in the pool."""
        return dict(
            self.db.execute(
                "SELECT task_id, image_id FROM source_tasks WHERE project_id = ? AND image_id IS NOT NULL",
                (int(project_id),),
            ).fetchall()
        )

    def source_image_ids(self, project_id: int, task_ids: Iterable[int]) -> dict[int, int]:
        """``{task id: pool image id}`` for those of ``task_ids`` whose image is in the pool (asked of the
        database for these tasks only: ``/predict`` calls it for every batch of a 50,000-task project)."""
        return self._pairs_in(
            "SELECT task_id, image_id FROM source_tasks WHERE project_id = ? AND image_id IS NOT NULL "
            "AND task_id IN ({})",
            [int(project_id)],
            task_ids,
        )

    def source_projects_of(self, image_ids: Iterable[int]) -> dict[int, int]:
        """``{pool image id: adopted project id}`` for the images some adopted project shows."""
        return self._pairs_in("SELECT image_id, project_id FROM source_tasks WHERE image_id IN ({})", [], image_ids)

    def _pairs_in(self, sql: str, first: list[int], values: Iterable[int]) -> dict[int, int]:
        """``{a: b}`` of the ``(a, b)`` rows of ``sql``, whose ``{}`` is filled with ``values`` in chunks
        of SQLite's bound-parameter limit (after the parameters ``first``)."""
        wanted = [int(v) for v in values]
        found: dict[int, int] = {}
        for start in range(0, len(wanted), 900):
            part = wanted[start : start + 900]
            rows = self.db.execute(sql.format(",".join("?" * len(part))), [*first, *part])
            found.update({int(a): int(b) for a, b in rows})
        return found

    def skipped_source_tasks(self, project_id: int) -> dict[int, str]:
        """``{task id: why}`` for the tasks whose image could not be read."""
        return dict(
            self.db.execute(
                "SELECT task_id, skipped FROM source_tasks WHERE project_id = ? AND image_id IS NULL",
                (int(project_id),),
            ).fetchall()
        )

    def known_source_tasks(self, project_id: int) -> set[int]:
        """Task ids already looked at (mapped or skipped)."""
        rows = self.db.execute("SELECT task_id FROM source_tasks WHERE project_id = ?", (int(project_id),))
        return {int(r[0]) for r in rows}

    # --- predictions written onto an adopted project's tasks --------------------------------------
    def record_writing(self, project_id: int, task_ids: Iterable[int], model_version: str) -> None:
        """A chunk of ``model_version``'s predictions is about to be sent: if the process dies before
        :meth:`record_written`, the next write-back asks Label Studio whether it took them."""
        self.db.executemany(
            "INSERT OR REPLACE INTO writing_predictions VALUES (?, ?, ?)",
            [(int(project_id), model_version, int(t)) for t in task_ids],
        )

    def writing(self, project_id: int, model_version: str) -> set[int]:
        """Tasks whose ``model_version`` prediction was sent and not confirmed (an interrupted write-back)."""
        rows = self.db.execute(
            "SELECT task_id FROM writing_predictions WHERE project_id = ? AND model_version = ?",
            (int(project_id), model_version),
        )
        return {int(r[0]) for r in rows}

    def record_written(self, project_id: int, task_ids: Iterable[int], model_version: str) -> None:
        now = time.time()
        rows = [(int(project_id), model_version, int(t)) for t in task_ids]
        with self.db.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO written_predictions VALUES (?, ?, ?, ?)", [(*r, now) for r in rows]
            )
            self.db.executemany(
                "DELETE FROM writing_predictions WHERE project_id = ? AND model_version = ? AND task_id = ?", rows
            )

    def writing_versions(self, project_id: int) -> set[str]:
        """The model versions with a chunk sent and not confirmed (an interrupted write-back)."""
        rows = self.db.execute(
            "SELECT DISTINCT model_version FROM writing_predictions WHERE project_id = ?", (int(project_id),)
        )
        return {str(r[0]) for r in rows}

    def forget_writing(self, project_id: int, model_version: str) -> None:
        """Label Studio did not take the interrupted chunk: it is sent again."""
        self.db.execute(
            "DELETE FROM writing_predictions WHERE project_id = ? AND model_version = ?",
            (int(project_id), model_version),
        )

    def written_versions(self, project_id: int) -> set[str]:
        """The model versions whose predictions we wrote onto the project (and did not delete)."""
        rows = self.db.execute(
            "SELECT DISTINCT model_version FROM written_predictions WHERE project_id = ?", (int(project_id),)
        )
        return {str(r[0]) for r in rows}

    def forget_written(self, project_id: int, model_version: str) -> None:
        """The predictions of ``model_version`` were deleted from the project."""
        self.db.execute(
            "DELETE FROM written_predictions WHERE project_id = ? AND model_version = ?",
            (int(project_id), model_version),
        )

    def written_with(self, project_id: int, model_version: str) -> set[int]:
        """Tasks that already carry ``model_version``'s prediction (written by us)."""
        rows = self.db.execute(
            "SELECT task_id FROM written_predictions WHERE project_id = ? AND model_version = ?",
            (int(project_id), model_version),
        )
        return {int(r[0]) for r in rows}
