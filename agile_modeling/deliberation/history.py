"""The deliberation's persistent state, in the concept's sessions database (same SQLite file):

- every definition version, append-only, with the edits from its parent, what changed and why
  (which feedback led to it) -- replayable from the first version;
- the scoping proposal and the user's decision on each candidate sub-concept;
- each borderline batch: its images, the definition's decision and rationale shown for each, the
  cluster it came from and the ambiguity it explores.

Labels and comments themselves are session labels of source ``"deliberation"`` (the comment is
the label's note), so they share the session's crash-safety and de-duplication.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agile_modeling.deliberation.definition import Definition
from agile_modeling.deliberation.edits import Edit, apply_edits
from agile_modeling.errors import DefinitionError, SessionError
from agile_modeling.session import Session

SOURCE = "deliberation"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (
    concept TEXT NOT NULL, version INTEGER NOT NULL, parent INTEGER, created REAL NOT NULL,
    definition TEXT NOT NULL, edits TEXT NOT NULL, change TEXT NOT NULL, reason TEXT NOT NULL,
    author TEXT NOT NULL, scores TEXT NOT NULL, PRIMARY KEY (concept, version));
CREATE TRIGGER IF NOT EXISTS definitions_append_only BEFORE UPDATE ON definitions
    BEGIN SELECT RAISE(ABORT, 'definition history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS definitions_no_delete BEFORE DELETE ON definitions
    BEGIN SELECT RAISE(ABORT, 'definition history is append-only'); END;
CREATE TABLE IF NOT EXISTS scoping_proposals (
    concept TEXT PRIMARY KEY, definition TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scoping (
    concept TEXT NOT NULL, position INTEGER NOT NULL, unit TEXT NOT NULL, side TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL, image_ids TEXT NOT NULL, decision TEXT,
    PRIMARY KEY (concept, position));
CREATE TABLE IF NOT EXISTS deliberation_rounds (
    concept TEXT NOT NULL, round INTEGER NOT NULL, definition_version INTEGER NOT NULL, cluster INTEGER,
    explanation TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (concept, round));
CREATE TABLE IF NOT EXISTS deliberation_items (
    concept TEXT NOT NULL, round INTEGER NOT NULL, position INTEGER NOT NULL, image_id INTEGER NOT NULL,
    decision INTEGER NOT NULL, score REAL NOT NULL, rationale TEXT NOT NULL, summary TEXT NOT NULL,
    PRIMARY KEY (concept, image_id));
"""

SCOPING_DECISIONS = ("keep", "flip", "discard")


@dataclass(frozen=True)
class DefinitionVersion:
    version: int
    parent: int | None
    created: float
    definition: Definition
    edits: tuple[Edit, ...]
    change: str  # what changed, for people
    reason: dict[str, Any]  # why: {"round": r, "feedback": [{"image_id", "label", "comment", "rationale"}], ...}
    author: str  # "scoping", "refinement", "user"
    scores: dict[str, Any]  # e.g. {"f1_batch": .., "f1_all": ..} of the chosen candidate


@dataclass(frozen=True)
class ScopingItem:
    position: int
    unit: str
    side: str  # proposed side: "in" or "out"
    name: str
    description: str
    image_ids: tuple[int, ...]
    decision: str | None  # "keep", "flip", "discard" or None (undecided)


@dataclass(frozen=True)
class BatchItem:
    image_id: int
    decision: int  # the definition's decision shown to the user (1 in scope, 0 out)
    score: float
    rationale: str
    summary: str  # the ambiguity this image shows


@dataclass(frozen=True)
class DeliberationRound:
    round: int
    definition_version: int
    cluster: int | None
    explanation: str
    items: tuple[BatchItem, ...]


class DeliberationHistory:
    """Reads and appends the deliberation state of one concept session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.db = session.db
        self.slug = session.slug
        self.db.executescript(_SCHEMA)

    # --- definitions -------------------------------------------------------------------------
    def append(
        self,
        definition: Definition,
        edits: list[Edit] | tuple[Edit, ...],
        change: str,
        *,
        reason: dict[str, Any] | None = None,
        author: str = "refinement",
        scores: dict[str, Any] | None = None,
    ) -> DefinitionVersion:
        """Record a new version whose parent is the current one. ``edits`` must turn the parent into
        ``definition`` (checked), which is what makes the history replayable."""
        parent = self.current()
        base = parent.definition if parent else None
        if base is None and not (len(edits) == 1 and edits[0].op == "replace"):
            raise DefinitionError("the first definition is recorded as one 'replace' edit")
        rebuilt = apply_edits(base, edits) if base is not None else Definition.from_dict(edits[0].definition)
        if rebuilt != definition:
            raise DefinitionError("the edits do not produce the definition being recorded")
        version = (parent.version + 1) if parent else 0
        with self.session._transaction():
            self.db.execute(
                "INSERT INTO definitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.slug,
                    version,
                    parent.version if parent else None,
                    time.time(),
                    json.dumps(definition.as_dict()),
                    json.dumps([e.as_dict() for e in edits]),
                    change,
                    json.dumps(reason or {}),
                    author,
                    json.dumps(scores or {}),
                ),
            )
        return self.version(version)

    def versions(self) -> list[DefinitionVersion]:
        return [
            self._row(r)
            for r in self.db.execute("SELECT * FROM definitions WHERE concept = ? ORDER BY version", (self.slug,))
        ]

    def version(self, number: int) -> DefinitionVersion:
        row = self.db.execute(
            "SELECT * FROM definitions WHERE concept = ? AND version = ?", (self.slug, number)
        ).fetchone()
        if row is None:
            raise SessionError(f"{self.slug} has no definition version {number}")
        return self._row(row)

    def current(self) -> DefinitionVersion | None:
        row = self.db.execute(
            "SELECT * FROM definitions WHERE concept = ? ORDER BY version DESC LIMIT 1", (self.slug,)
        ).fetchone()
        return self._row(row) if row else None

    def require_current(self) -> DefinitionVersion:
        current = self.current()
        if current is None:
            raise SessionError(f"{self.slug} has no definition yet: finish scoping first (`agile deliberate scope`)")
        return current

    def replay(self) -> list[Definition]:
        """Every version rebuilt from the first by its recorded edits; raises if any stored version
        differs from its replay (a tampered or inconsistent history)."""
        out: list[Definition] = []
        for v in self.versions():
            rebuilt = apply_edits(out[-1], v.edits) if out else Definition.from_dict(v.edits[0].definition)
            if rebuilt != v.definition:
                raise DefinitionError(f"definition v{v.version} of {self.slug} does not follow from its edits")
            out.append(rebuilt)
        return out

    def _row(self, r: Sequence[Any]) -> DefinitionVersion:
        return DefinitionVersion(
            version=r[1],
            parent=r[2],
            created=r[3],
            definition=Definition.from_dict(json.loads(r[4])),
            edits=tuple(Edit.from_dict(e) for e in json.loads(r[5])),
            change=r[6],
            reason=json.loads(r[7]),
            author=r[8],
            scores=json.loads(r[9]),
        )

    # --- scoping -------------------------------------------------------------------------------
    def save_scoping(self, proposal: Definition, items: list[ScopingItem]) -> None:
        """Record the scoping proposal once (a repeated call keeps the first proposal and its decisions)."""
        with self.session._transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO scoping_proposals VALUES (?, ?, ?)",
                (self.slug, json.dumps(proposal.as_dict()), time.time()),
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO scoping VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                [
                    (self.slug, it.position, it.unit, it.side, it.name, it.description, json.dumps(list(it.image_ids)))
                    for it in items
                ],
            )

    def proposal(self) -> Definition | None:
        row = self.db.execute("SELECT definition FROM scoping_proposals WHERE concept = ?", (self.slug,)).fetchone()
        return Definition.from_dict(json.loads(row[0])) if row else None

    def scoping(self) -> list[ScopingItem]:
        return [
            ScopingItem(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6])
            for r in self.db.execute(
                "SELECT position, unit, side, name, description, image_ids, decision FROM scoping WHERE concept = ? "
                "ORDER BY position",
                (self.slug,),
            )
        ]

    def decide_scoping(self, position: int, decision: str) -> None:
        if decision not in SCOPING_DECISIONS:
            raise DefinitionError(f"a scoping decision is one of {SCOPING_DECISIONS}, not {decision!r}")
        cur = self.db.execute(
            "UPDATE scoping SET decision = ? WHERE concept = ? AND position = ?", (decision, self.slug, position)
        )
        if cur.rowcount != 1:
            raise SessionError(f"{self.slug} has no scoping candidate #{position}")

    # --- borderline rounds ---------------------------------------------------------------------
    def start_round(
        self, definition_version: int, cluster: int | None, explanation: str, items: list[BatchItem]
    ) -> DeliberationRound:
        """Record the next borderline batch (one transaction)."""
        r = self.current_round() + 1
        with self.session._transaction():
            self.db.execute(
                "INSERT INTO deliberation_rounds VALUES (?, ?, ?, ?, ?, ?)",
                (self.slug, r, definition_version, cluster, explanation, time.time()),
            )
            self.db.executemany(
                "INSERT INTO deliberation_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (self.slug, r, pos, int(it.image_id), int(it.decision), float(it.score), it.rationale, it.summary)
                    for pos, it in enumerate(items)
                ],
            )
        return self.round(r)

    def current_round(self) -> int:
        row = self.db.execute("SELECT MAX(round) FROM deliberation_rounds WHERE concept = ?", (self.slug,)).fetchone()
        return -1 if row[0] is None else int(row[0])

    def round(self, number: int) -> DeliberationRound:
        head = self.db.execute(
            "SELECT definition_version, cluster, explanation FROM deliberation_rounds WHERE concept = ? AND round = ?",
            (self.slug, number),
        ).fetchone()
        if head is None:
            raise SessionError(f"{self.slug} has no borderline round {number}")
        items = tuple(
            BatchItem(*r)
            for r in self.db.execute(
                "SELECT image_id, decision, score, rationale, summary FROM deliberation_items WHERE concept = ? AND round = ? "
                "ORDER BY position",
                (self.slug, number),
            )
        )
        return DeliberationRound(number, head[0], head[1], head[2], items)

    def rounds(self) -> list[DeliberationRound]:
        return [self.round(r) for r in range(self.current_round() + 1)]

    def shown_ids(self) -> set[int]:
        return {
            r[0] for r in self.db.execute("SELECT image_id FROM deliberation_items WHERE concept = ?", (self.slug,))
        }

    def round_of(self, image_id: int) -> int | None:
        """The borderline round that showed ``image_id`` (None if none did)."""
        row = self.db.execute(
            "SELECT round FROM deliberation_items WHERE concept = ? AND image_id = ?", (self.slug, int(image_id))
        ).fetchone()
        return int(row[0]) if row else None

    def shown_decisions(self) -> dict[int, int]:
        """``{image_id: decision shown}`` over every borderline batch so far."""
        return {
            r[0]: r[1]
            for r in self.db.execute(
                "SELECT image_id, decision FROM deliberation_items WHERE concept = ?", (self.slug,)
            )
        }
