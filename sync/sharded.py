"""Scale-out over Celery: pool scoring and image embedding split into tasks, one per pool shard or
chunk of images, run by any number of workers (``docker compose up --scale worker=N``, or
``agile worker`` on several machines sharing the broker and the workspace's files).

Scoring: each task reads only its piece of a shard's file and returns that piece's best candidates;
the merge is exact (:mod:`agile_modeling.sharded`). No task ever waits for another: the sync task
launches a chord of shard tasks and returns; the chord's callback (``agile.finish_selection``)
merges the candidates and continues the round from what the session and :class:`SelectionLedger`
recorded; should a shard task fail, the chord's error callback (``agile.selection_failed``) ends the
launch at once so the next sync relaunches it. So N concurrent rounds on N workers of concurrency 1 cannot deadlock. Embedding: each task embeds a chunk and appends it to
the pool under the store's write lock; images already in the pool are skipped, so a stopped run
resumes where it was.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from celery import Celery, chord
from tqdm import tqdm

from agile_modeling.database import Database
from agile_modeling.errors import AgileError
from agile_modeling.loop import AgileLoop, SelectionRequest
from agile_modeling.sharded import ShardCandidates, merge_candidates, positives_wanted
from agile_modeling.workspace import Workspace
from sync.rounds import ConceptSync, SyncReport
from sync.settings import Settings
from sync.state import ProjectLink

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0


class ScaleOutError(AgileError):
    """Workers did not answer in time, or a shard task failed."""


_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS selections_in_flight (
    concept TEXT PRIMARY KEY, round INTEGER NOT NULL, version TEXT NOT NULL, token TEXT NOT NULL,
    started REAL NOT NULL);
"""


@dataclass(frozen=True)
class InFlight:
    """One concept's selection running on the workers: round ``round`` from model ``version``."""

    concept: str
    round: int
    version: str
    token: str  # names this launch; its callback carries it
    started: float

    def stale(self, timeout: float, now: float | None = None) -> bool:
        """True once it has run longer than ``timeout`` seconds (``AGILE_SELECTION_TIMEOUT``: a shard task
        takes seconds; a worker SIGKILLed mid-chord must not hold the round for long): its chord is
        taken for lost."""
        return (now if now is not None else time.time()) - self.started > timeout


class SelectionLedger:
    """The selections in flight, one row per concept, in the workspace's Label Studio state file.

    The sync task writes a row when it launches a chord; the chord's callback deletes it once the
    batch is recorded, its error callback (``agile.selection_failed``) as soon as a shard task fails. A periodic sync that finds a fresh row for the same round and model leaves
    the round alone; a stale one (or one for an older model) is replaced by a new launch.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = Database(self.path, _LEDGER_SCHEMA)  # the one SQLite policy (agile_modeling.database)

    def get(self, concept: str) -> InFlight | None:
        row = self.db.execute(
            "SELECT concept, round, version, token, started FROM selections_in_flight WHERE concept = ?", (concept,)
        ).fetchone()
        return InFlight(*row) if row else None

    def begin(self, concept: str, round_index: int, version: str) -> InFlight:
        """Record a new launch (replacing any earlier one of the concept)."""
        entry = InFlight(concept, int(round_index), version, uuid.uuid4().hex, time.time())
        self.db.execute(
            "INSERT OR REPLACE INTO selections_in_flight VALUES (?, ?, ?, ?, ?)",
            (entry.concept, entry.round, entry.version, entry.token, entry.started),
        )
        return entry

    def end(self, concept: str, round_index: int) -> None:
        """The round's batch is recorded: whatever launch selected it, it is no longer in flight."""
        self.db.execute(
            "DELETE FROM selections_in_flight WHERE concept = ? AND round <= ?", (concept, int(round_index))
        )

    def cancel(self, concept: str, token: str) -> bool:
        """The launch ``token`` failed: forget it, unless a newer launch replaced it. True if it was removed."""
        cur = self.db.execute("DELETE FROM selections_in_flight WHERE concept = ? AND token = ?", (concept, token))
        return cur.rowcount > 0

    def close(self) -> None:
        self.db.close()


def shard_pieces(shards: Sequence[tuple[Path, int, int]], rows: int) -> list[tuple[Path, int, list[int]]]:
    """``(shard file, global id of the piece's first row, [start, stop) rows of the file)`` for every
    piece of at most ``rows`` rows: a pool stored in one big shard still spreads over the workers."""
    return [
        (Path(path), int(offset) + start, [start, min(start + rows, int(n))])
        for path, offset, n in shards
        for start in range(0, int(n), rows)
    ]


def score_signatures(
    app: Celery,
    models_root: Path,
    version: str,
    pieces: Sequence[tuple[Path, int, list[int]]],
    k: int,
    k_pos: int,
    exclude: np.ndarray,
) -> list:
    """One ``agile.score_shard`` signature per piece; each gets only the excluded ids in its range."""
    exclude = np.asarray(exclude, dtype=np.int64)
    sigs = []
    for path, first, (start, stop) in pieces:
        mine = exclude[(exclude >= first) & (exclude < first + stop - start)]
        sigs.append(
            app.signature(
                "agile.score_shard",
                args=(
                    str(models_root),
                    version,
                    str(path),
                    int(first),
                    int(k),
                    int(k_pos),
                    [int(i) for i in mine],
                    [start, stop],
                ),
            )
        )
    return sigs


def launch_selection(
    app: Celery,
    ledger: SelectionLedger,
    concept: str,
    request: SelectionRequest,
    version: str,
    models_root: Path,
    shards: Sequence[tuple[Path, int, int]],
    shard_rows: int,
) -> InFlight:
    """Record the selection as in flight and send ``chord(score_shard pieces)(agile.finish_selection)``.

    Nothing waits for it: the callback, on whichever worker, merges the candidates and records and
    pushes the batch. Returns the ledger entry of this launch.
    """
    k_pos = positives_wanted(request.strategy, request.k)
    entry = ledger.begin(concept, request.round, version)
    header = score_signatures(
        app, models_root, version, shard_pieces(shards, shard_rows), request.k, k_pos, request.exclude
    )
    callback = app.signature(
        "agile.finish_selection",
        kwargs=dict(
            concept=concept, round_index=request.round, version=version, token=entry.token, k=request.k, k_pos=k_pos
        ),
    )
    # a failed shard task (or callback) ends this launch at once, not after AGILE_SELECTION_TIMEOUT
    callback.on_error(app.signature("agile.selection_failed", kwargs=dict(concept=concept, token=entry.token)))
    chord(header)(callback)
    log.info(
        "%s: selection of round %d from %s launched as %d shard tasks", concept, request.round, version, len(header)
    )
    return entry


def merge_parts(parts: Sequence[dict], k: int, k_pos: int) -> np.ndarray:
    """The batch from the shard tasks' results (exactly the single-process selection)."""
    return merge_candidates([ShardCandidates.from_dict(p) for p in parts], k, k_pos)


def default_app(settings: Settings) -> Celery:
    """The Celery app a sync with ``settings`` launches its chords with (:func:`sync.celery_app.app_for`)."""
    from sync.celery_app import app_for

    return app_for(settings)


def fan_out_embedding(
    workspace_root: Path,
    uris: Sequence[str],
    app: Celery,
    chunk: int = 256,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> dict:
    """Embed ``uris`` into the workspace's pool with one task per ``chunk`` images, showing progress.

    ``app`` sends the tasks (the broker the workers of that workspace listen on). Returns totals
    ``{"added", "already_present", "skipped": [(uri, reason), ...]}``. Run it again after an
    interruption: what was embedded is skipped by content hash.
    """
    chunks = [list(uris[i : i + chunk]) for i in range(0, len(uris), chunk)]
    results = [app.send_task("agile.embed_images", args=(str(workspace_root), c)) for c in chunks]
    totals: dict[str, Any] = {"added": 0, "already_present": 0, "skipped": []}
    bar = tqdm(total=len(uris), desc="embedding", unit="image", disable=not progress)
    deadline = time.monotonic() + timeout
    pending = dict(enumerate(results))
    try:
        while pending:
            for i, res in list(pending.items()):
                if res.ready():
                    out = res.get(propagate=True)
                    totals["added"] += out["added"]
                    totals["already_present"] += out["already_present"]
                    totals["skipped"] += [tuple(s) for s in out["skipped"]]
                    bar.update(len(chunks[i]))
                    res.forget()
                    del pending[i]
            if pending and time.monotonic() > deadline:
                raise ScaleOutError(
                    f"{len(pending)} of {len(chunks)} embedding tasks did not finish in {timeout:.0f} s; "
                    "run the same command again to resume"
                )
            time.sleep(0.05)
    finally:
        bar.close()
    return totals


# --- the round, continued around the chord -------------------------------------------------------
def ledger_of(sync: ConceptSync) -> SelectionLedger:
    """The ledger beside the sync's state (one per workspace)."""
    return SelectionLedger(sync.workspace.root / "label_studio.sqlite")


def start_sharded_selection(
    sync: ConceptSync, link: ProjectLink, loop: AgileLoop, version: str, app: Celery | None = None
) -> InFlight | None:
    """Launch the next round's sharded selection unless one is already in flight (called under the
    concept lock by the sync, once the round is fully rated and ``version`` trained on its labels).

    A fresh launch for the same round and model is left to finish (a periodic sync in between, a
    repeated webhook); a stale one, or one from an older model, is relaunched. Returns the ledger
    entry now in flight (None when the round still has images to rate).
    """
    request = loop.selection_request()
    if request is None:
        return None
    ledger = ledger_of(sync)
    try:
        entry = ledger.get(link.concept)
        if entry is not None and entry.round == request.round and entry.version == version:
            if not entry.stale(sync.settings.selection_timeout):
                log.info(
                    "%s: selection of round %d from %s in flight since %.0f s",
                    link.concept,
                    entry.round,
                    version,
                    time.time() - entry.started,
                )
                return entry
            log.warning(
                "%s: selection of round %d from %s launched %.0f s ago never finished (timeout %.0f s, "
                "AGILE_SELECTION_TIMEOUT): launching it again",
                link.concept,
                entry.round,
                version,
                time.time() - entry.started,
                sync.settings.selection_timeout,
            )
        shards = sync.workspace.store().shard_files()
        return launch_selection(
            app or default_app(sync.settings),
            ledger,
            link.concept,
            request,
            version,
            loop.registry.root,
            shards,
            sync.settings.shard_rows,
        )
    finally:
        ledger.close()


def selection_in_flight(sync: ConceptSync, link: ProjectLink, round_index: int) -> bool:
    """Whether a launch of round ``round_index``'s selection is running (recorded and not stale)."""
    ledger = ledger_of(sync)
    try:
        entry = ledger.get(link.concept)
        return entry is not None and entry.round == round_index and not entry.stale(sync.settings.selection_timeout)
    finally:
        ledger.close()


def finish_selection(
    sync: ConceptSync,
    parts: Sequence[dict],
    concept: str,
    round_index: int,
    version: str,
    token: str,
    k: int,
    k_pos: int,
) -> SyncReport:
    """The chord's callback: merge the shards' candidates, record round ``round_index``'s batch and
    push its tasks with ``version``'s predictions. Idempotent: a duplicate callback, or one whose
    round was meanwhile recorded, only pushes what is missing; one superseded by a newer launch (a
    newer model, or the session moved on) records nothing. Returns a :class:`sync.rounds.SyncReport`.
    """

    link = sync.state.for_concept(concept)
    if link is None:
        raise ScaleOutError(f"selection of round {round_index} finished for {concept!r}, which has no project")
    ledger = ledger_of(sync)
    try:
        with sync.concept_lock(concept):
            loop = sync.loop(link)
            session = loop.session
            entry = ledger.get(concept)
            current = session.current_round()
            if current < round_index:
                request = loop.selection_request(k)
                ids = merge_parts(parts, k, k_pos)
                if (
                    entry is None
                    or entry.round != round_index
                    or entry.version != version
                    or request is None
                    or request.round != round_index
                    or np.isin(ids, request.exclude).any()
                ):
                    log.info(
                        "%s: selection %s of round %d from %s is superseded (now in flight: %s); nothing recorded",
                        concept,
                        token[:8],
                        round_index,
                        version,
                        entry,
                    )
                    return SyncReport(concept, link.project_id, current, 0, len(session.pending()), 0)
                loop.record_batch(request, ids)
                log.info(
                    "%s: round %d selected over %d shard pieces (%d images)", concept, round_index, len(parts), len(ids)
                )
            ledger.end(concept, round_index)
            if session.current_round() != round_index:
                return SyncReport(concept, link.project_id, session.current_round(), 0, len(session.pending()), 0)
            model_version = loop.registry.get(version)
            schema = sync.schema_of(link)
            tasks = list(sync.client.iter_tasks(link.project_id))
            pushed = sync._push_missing(link, session, tasks, (model_version, model_version.load()), schema)
            sync.show_progress(link, session)
            return SyncReport(concept, link.project_id, round_index, 0, len(session.pending()), len(pushed))
    finally:
        ledger.close()


def fail_selection(sync: ConceptSync, concept: str, token: str, reason: str) -> bool:
    """The chord of launch ``token`` failed (a shard task raised, or its callback did): end its
    ledger entry so that the next sync launches the selection again at once, and keep ``reason``
    as the rating project's ``last_error`` (``agile concept status``). A launch already replaced
    by a newer one changes nothing. Returns True if the launch was still in flight."""
    with sync.concept_lock(concept):
        ledger = ledger_of(sync)
        try:
            entry = ledger.get(concept)
            if entry is None or entry.token != token or not ledger.cancel(concept, token):
                log.info(
                    "%s: selection %s failed (%s), but it had already ended or been replaced (now in flight: %s); "
                    "nothing to do",
                    concept,
                    token[:8],
                    reason,
                    entry,
                )
                return False
        finally:
            ledger.close()
        message = (
            f"the selection of round {entry.round} from {entry.version} failed on the workers: {reason}; "
            "the next sync launches it again"
        )
        link = sync.state.for_concept(concept)
        if link is not None:
            sync.state.record_error(link.project_id, message)
    log.error("%s: %s", concept, message)
    return True


def concept_sync(settings: Settings, workspace: Workspace | None = None) -> ConceptSync:
    """The sync of ``settings``' workspace, its rounds selected by a chord on the workers when
    ``settings.sharded_scoring`` is on, else in the calling process (the composition of the worker
    and the CLI)."""
    if not settings.sharded_scoring:
        return ConceptSync(settings, workspace)
    return ConceptSync(
        settings, workspace, launch_selection=start_sharded_selection, selection_in_flight=selection_in_flight
    )
