"""Session state of concepts in SQLite: rounds and their batches, every label, model versions.

Every write is its own committed transaction (WAL, synchronous=FULL), so a crash loses no label
that was recorded, and a session reopened after a crash resumes from what is on disk: the open
round's batch minus the images already labeled.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agile_modeling.concepts import Concept, slugify
from agile_modeling.database import Database
from agile_modeling.errors import SessionError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS concepts (
    slug TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
    positives TEXT NOT NULL, negatives TEXT NOT NULL, example_ids TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    concept TEXT NOT NULL REFERENCES concepts(slug), round INTEGER NOT NULL, strategy TEXT NOT NULL,
    created REAL NOT NULL, model_version TEXT, PRIMARY KEY (concept, round));
CREATE TABLE IF NOT EXISTS batch_items (
    concept TEXT NOT NULL, round INTEGER NOT NULL, image_id INTEGER NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (concept, image_id));
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY, concept TEXT NOT NULL, image_id INTEGER NOT NULL, value INTEGER NOT NULL,
    rater TEXT NOT NULL, source TEXT NOT NULL, round INTEGER, created REAL NOT NULL, note TEXT,
    external_id TEXT, lead_time REAL, UNIQUE (concept, source, external_id));
CREATE INDEX IF NOT EXISTS labels_by_image ON labels(concept, image_id);
CREATE TABLE IF NOT EXISTS withdrawn_images (
    concept TEXT NOT NULL, image_id INTEGER NOT NULL, round INTEGER, reason TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (concept, image_id));
CREATE TABLE IF NOT EXISTS model_versions (
    concept TEXT NOT NULL, name TEXT NOT NULL, round INTEGER NOT NULL, created REAL NOT NULL,
    num_labels INTEGER NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (concept, name));
"""

USER = "user"
#: held-out ratings (an evaluation set): they score model versions and are never trained on or selected
EVALUATION = "evaluation"
WITHDRAWN = -1


@dataclass(frozen=True)
class Label:
    """One rating of one image by one rater."""

    image_id: int
    value: int  # 1 positive, 0 negative, WITHDRAWN (-1): the rater took the rating back
    rater: str
    source: str  # "user", "crowd", "import", "simulated-user", ...
    round: int | None
    created: float
    note: str | None = None
    lead_time: float | None = None  # seconds the rater spent on it, when the labeling tool says


@dataclass(frozen=True)
class RoundInfo:
    round: int
    strategy: str
    created: float
    model_version: str | None
    batch: tuple[int, ...]
    labeled: int
    withdrawn: int = 0  # images of the batch the rater took out ("not this image"): never to rate


class SessionStore:
    """All concept sessions of one workspace (one SQLite file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = Database(
            self.path, _SCHEMA
        )  # per-thread connections, WAL, one busy timeout (agile_modeling.database)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a sessions file written by an older version up to the current schema."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(labels)")}
        if "lead_time" not in columns:
            self.db.execute("ALTER TABLE labels ADD COLUMN lead_time REAL")

    def create(self, concept: Concept) -> Session:
        """Start a session for a new concept (an existing concept of that name is an error)."""
        try:
            self.db.execute(
                "INSERT INTO concepts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    concept.slug,
                    concept.name,
                    concept.description,
                    json.dumps(concept.positives),
                    json.dumps(concept.negatives),
                    json.dumps(list(concept.example_ids)),
                    time.time(),
                ),
            )
        except sqlite3.IntegrityError:
            raise SessionError(f"a concept named {concept.name!r} exists already; open it instead") from None
        return Session(self, concept.slug)

    def open(self, name: str) -> Session:
        slug = slugify(name)
        if not self.db.execute("SELECT 1 FROM concepts WHERE slug = ?", (slug,)).fetchone():
            known = ", ".join(self.names()) or "none yet"
            raise SessionError(f"no concept {name!r} in {self.path} (known: {known})")
        return Session(self, slug)

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM concepts ORDER BY created")]

    def close(self) -> None:
        self.db.close()


class Session:
    """The state of one concept. Cheap to construct; every read goes to the database."""

    def __init__(self, store: SessionStore, slug: str) -> None:
        self.store = store
        self.db = store.db
        self.slug = slug

    @property
    def concept(self) -> Concept:
        name, desc, pos, neg, ex = self.db.execute(
            "SELECT name, description, positives, negatives, example_ids FROM concepts WHERE slug = ?", (self.slug,)
        ).fetchone()
        return Concept(name, tuple(json.loads(pos)), tuple(json.loads(neg)), desc, tuple(json.loads(ex)))

    # --- rounds ------------------------------------------------------------------------------
    def start_round(self, round_index: int, strategy: str, image_ids: Sequence[int]) -> None:
        """Record the batch of ``round_index``. Idempotent: starting a recorded round again is a no-op."""
        with self._transaction():
            if self.db.execute(
                "SELECT 1 FROM rounds WHERE concept = ? AND round = ?", (self.slug, round_index)
            ).fetchone():
                return
            expected = self.current_round() + 1
            if round_index != expected:
                raise SessionError(f"round {round_index} cannot start: the next round of {self.slug} is {expected}")
            self.db.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?, NULL)", (self.slug, round_index, strategy, time.time())
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO batch_items VALUES (?, ?, ?, ?)",
                [(self.slug, round_index, int(i), pos) for pos, i in enumerate(image_ids)],
            )

    def current_round(self) -> int:
        """Index of the newest round, ``-1`` before the seed batch."""
        row = self.db.execute("SELECT MAX(round) FROM rounds WHERE concept = ?", (self.slug,)).fetchone()
        return -1 if row[0] is None else int(row[0])

    def batch(self, round_index: int) -> list[int]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT image_id FROM batch_items WHERE concept = ? AND round = ? ORDER BY position",
                (self.slug, round_index),
            )
        ]

    def queued_ids(self) -> list[int]:
        """Every image ever put in a batch of this concept."""
        return [r[0] for r in self.db.execute("SELECT image_id FROM batch_items WHERE concept = ?", (self.slug,))]

    def pending(self, round_index: int | None = None, source: str = USER) -> list[int]:
        """Images that ``source`` has not labeled yet and that were not withdrawn
        (:meth:`withdraw_image`): of one round's batch, or (``None``) of every round, oldest
        first. A round is usually fully rated before the next starts; with a next batch prepared
        ahead (``LoopConfig.prefetch``) the end of the previous round is still open."""
        done = set(self.labels(source)) | set(self.withdrawn_images())
        if round_index is None:
            rows = self.db.execute(
                "SELECT image_id FROM batch_items WHERE concept = ? ORDER BY round, position", (self.slug,)
            )
            return [r[0] for r in rows if r[0] not in done]
        return [i for i in self.batch(round_index) if i not in done]

    def rounds(self) -> list[RoundInfo]:
        labeled = set(self.labels())
        withdrawn = set(self.withdrawn_images())
        out = []
        for r, strategy, created, version in self.db.execute(
            "SELECT round, strategy, created, model_version FROM rounds WHERE concept = ? ORDER BY round", (self.slug,)
        ).fetchall():
            batch = tuple(self.batch(r))
            out.append(
                RoundInfo(
                    r,
                    strategy,
                    created,
                    version,
                    batch,
                    sum(i in labeled for i in batch),
                    sum(i in withdrawn for i in batch),
                )
            )
        return out

    def withdraw_image(self, image_id: int, reason: str) -> bool:
        """Take a batch image out of rating: the rater said "not this image" (in Label Studio, by
        deleting its task). It stays in its round's batch (history, and never selected again) but is
        no longer pending, so the round can complete without it. Idempotent; returns whether it was
        newly withdrawn.

        Raises:
            SessionError: the image is in no batch of this concept.
        """
        row = self.db.execute(
            "SELECT round FROM batch_items WHERE concept = ? AND image_id = ?", (self.slug, int(image_id))
        ).fetchone()
        if row is None:
            raise SessionError(f"image {image_id} is in no batch of {self.slug}: there is nothing to withdraw")
        cur = self.db.execute(
            "INSERT OR IGNORE INTO withdrawn_images VALUES (?, ?, ?, ?, ?)",
            (self.slug, int(image_id), row[0], reason, time.time()),
        )
        return cur.rowcount == 1

    def withdrawn_images(self) -> dict[int, str]:
        """``{image_id: reason}``: batch images the rater took out of rating (see :meth:`withdraw_image`)."""
        return {
            int(i): r
            for i, r in self.db.execute("SELECT image_id, reason FROM withdrawn_images WHERE concept = ?", (self.slug,))
        }

    # --- labels ------------------------------------------------------------------------------
    def record_label(
        self,
        image_id: int,
        value: int | bool,
        rater: str = USER,
        source: str = USER,
        round_index: int | None = None,
        note: str | None = None,
        external_id: str | None = None,
        created: float | None = None,
        lead_time: float | None = None,
    ) -> bool:
        """Store one rating (committed before returning).

        ``external_id`` (an annotation id from a labeling tool) makes a repeated delivery a no-op.
        Returns whether a new label was stored.
        """
        if int(value) not in (0, 1):
            raise ValueError("a label is 1 (positive) or 0 (negative)")
        if round_index is None:
            row = self.db.execute(
                "SELECT round FROM batch_items WHERE concept = ? AND image_id = ?", (self.slug, int(image_id))
            ).fetchone()
            round_index = row[0] if row else None
        cur = self.db.execute(
            "INSERT OR IGNORE INTO labels (concept, image_id, value, rater, source, round, created, note, external_id,"
            " lead_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.slug,
                int(image_id),
                int(value),
                rater,
                source,
                round_index,
                created if created is not None else time.time(),
                note,
                external_id,
                float(lead_time) if lead_time is not None else None,
            ),
        )
        return cur.rowcount == 1

    def record_labels(self, labels: Iterable[tuple[int, int]], rater: str = USER, source: str = USER) -> int:
        """Store many ``(image_id, value)`` ratings; returns how many were stored."""
        return sum(self.record_label(i, v, rater=rater, source=source) for i, v in labels)

    def withdraw_label(self, image_id: int, rater: str, source: str = USER, external_id: str | None = None) -> bool:
        """Record that the image's current rating from ``source`` was taken back (e.g. an annotation
        deleted in the labeling tool). History keeps both rows; :meth:`labels` drops the image.
        Returns whether there was a rating to withdraw."""
        if int(image_id) not in self.labels(source):
            return False
        cur = self.db.execute(
            "INSERT OR IGNORE INTO labels (concept, image_id, value, rater, source, round, created, note, external_id) "
            "VALUES (?, ?, ?, ?, ?, NULL, ?, NULL, ?)",
            (self.slug, int(image_id), WITHDRAWN, rater, source, time.time(), external_id),
        )
        return cur.rowcount == 1

    def latest_labels(self, source: str = USER) -> dict[int, Label]:
        """``{image_id: Label}``: each image's most recent rating from ``source`` (withdrawn ones included)."""
        rows = self.db.execute(
            "SELECT image_id, value, rater, source, round, created, note, lead_time FROM labels WHERE concept = ? AND source = ? "
            "ORDER BY created, id",
            (self.slug, source),
        )
        return {int(r[0]): Label(*r) for r in rows}

    def labels(self, source: str = USER) -> dict[int, int]:
        """``{image_id: value}`` from ``source``: each image's most recent rating, unless withdrawn."""
        return {i: int(label.value) for i, label in self.latest_labels(source).items() if label.value != WITHDRAWN}

    def label_history(self) -> list[Label]:
        return [
            Label(*r)
            for r in self.db.execute(
                "SELECT image_id, value, rater, source, round, created, note, lead_time FROM labels WHERE concept = ? ORDER BY id",
                (self.slug,),
            )
        ]

    # --- models ------------------------------------------------------------------------------
    def record_model(self, name: str, round_index: int, num_labels: int, metrics: dict[str, Any] | None = None) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?)",
                (self.slug, name, round_index, time.time(), num_labels, json.dumps(metrics or {}, default=float)),
            )
            self.db.execute(
                "UPDATE rounds SET model_version = ? WHERE concept = ? AND round = ?", (name, self.slug, round_index)
            )

    def update_model_metrics(self, name: str, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into a recorded model version's (e.g. a quality estimate computed later).

        Raises:
            SessionError: no model version of that name.
        """
        with self._transaction():
            row = self.db.execute(
                "SELECT metrics FROM model_versions WHERE concept = ? AND name = ?", (self.slug, name)
            ).fetchone()
            if row is None:
                raise SessionError(f"no model version {name!r} of {self.slug}")
            merged = {**json.loads(row[0]), **metrics}
            self.db.execute(
                "UPDATE model_versions SET metrics = ? WHERE concept = ? AND name = ?",
                (json.dumps(merged, default=float), self.slug, name),
            )

    def models(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "round": r, "created": c, "num_labels": k, "metrics": json.loads(m)}
            for n, r, c, k, m in self.db.execute(
                "SELECT name, round, created, num_labels, metrics FROM model_versions WHERE concept = ? ORDER BY created",
                (self.slug,),
            )
        ]

    def _transaction(self) -> AbstractContextManager[Database]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``) on this thread's connection."""
        return self.db.transaction()
