"""What a sync does with each kind of Label Studio project, by the project's *purpose*.

A concept can have several projects (:class:`sync.state.ProjectLink`): the user's ``rating``
project (the agile loop), a ``crowd`` project (several annotators, majority vote), an
``evaluation`` project (ratings that measure and never train), and the Agile Deliberation
``scoping`` and ``deliberation`` projects. Each purpose has its own :class:`PurposeHandler`, listed
in the explicit registry :data:`HANDLERS`; the periodic sync (:func:`sync_all`) and the
webhook-driven one (:func:`sync_project`) both go through it, and a purpose missing
from it raises :class:`UnknownPurposeError`: a project is never handled as some other kind.
(Before, every purpose that was not a rating or deliberation one fell through to a plain pull, so
the beat recorded a crowd task's latest single vote as its ``crowd`` label, ties included.)

Every sync through :func:`sync_link` or :func:`handle_event` leaves its outcome in the sync state:
success sets ``last_sync`` and clears ``last_error``; any failure sets ``last_error`` (shown by
``agile concept status``) and is raised again.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Protocol

from agile_modeling.errors import AgileError
from agile_modeling.session import EVALUATION
from sync.adoption import embed_new_tasks
from sync.crowd import CROWD, pull_crowd
from sync.deliberation import DELIBERATION, SCOPING, DeliberationSync
from sync.rounds import ConceptSync
from sync.state import RATING, SOURCE, ProjectLink

log = logging.getLogger(__name__)


class UnknownPurposeError(AgileError):
    """A project whose purpose no handler knows (a newer version's project, or a corrupt state file)."""


class Report(Protocol):
    """What one sync of one project did, in a sentence (logged by the worker)."""

    def summary(self) -> str: ...


@dataclass(frozen=True)
class PullReport:
    """A project whose answers are only recorded (evaluation ratings, scoping decisions)."""

    concept: str
    purpose: str
    project_id: int
    recorded: int
    skipped: bool = False

    def summary(self) -> str:
        if self.skipped:
            return f"{self.concept}: {self.purpose} project {self.project_id} already synced"
        return f"{self.concept}: {self.purpose} project {self.project_id}, {self.recorded} answers recorded"


@dataclass(frozen=True)
class FailedSync:
    """A project whose sync failed: the periodic sync records it and goes on with the next one."""

    concept: str
    purpose: str
    project_id: int
    error: str

    def summary(self) -> str:
        return f"{self.concept}: {self.purpose} project {self.project_id} not synced ({self.error})"


class PurposeHandler(ABC):
    """How the sync treats the projects of one purpose."""

    purpose: ClassVar[str]

    @abstractmethod
    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        """Reconcile the project with the session from the server's whole state (idempotent)."""

    def full_sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        """:meth:`sync`, then the project is marked synced as of its start (``last_sync``, and
        ``last_error`` cleared): only a sync that read the whole project may claim that."""
        started = time.time()
        report = self.sync(concepts, link)
        concepts.state.mark_synced(link.project_id, started)
        return report

    def on_event(
        self, concepts: ConceptSync, link: ProjectLink, event: dict | None, requested_at: float | None
    ) -> Report:
        """A webhook said the project changed (``event``: its annotation, when it carried one).

        This default reads the whole project (a single annotation decides nothing for these
        purposes), once per burst: a sync that started after the event already saw it.
        """
        if requested_at is not None and concepts.state.for_project(link.project_id).last_sync > requested_at:
            return PullReport(link.concept, link.purpose, link.project_id, 0, skipped=True)
        return self.full_sync(concepts, link)


class RatingHandler(PurposeHandler):
    """The user's project: record ratings, push missing tasks, retrain and push the next round."""

    purpose = RATING

    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        return concepts.sync(link.concept)

    def on_event(
        self, concepts: ConceptSync, link: ProjectLink, event: dict | None, requested_at: float | None
    ) -> Report:
        """The event's annotation is recorded from its payload while the round still has images to
        rate; a full sync runs when the round looks complete or the payload cannot be used."""
        if event is not None:
            report = concepts._apply_event(link, event)
            if report is not None:
                return report
        return concepts.sync(link.concept, requested_at)


class CrowdHandler(PurposeHandler):
    """Several annotators per task: only a majority of enough distinct annotators becomes a label."""

    purpose = CROWD

    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        return pull_crowd(concepts, link.concept)


class EvaluationHandler(PurposeHandler):
    """The stratified evaluation set: its ratings are recorded under ``evaluation`` and train nothing."""

    purpose = EVALUATION

    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        return PullReport(link.concept, link.purpose, link.project_id, concepts.pull(link))


def _deliberation(concepts: ConceptSync) -> DeliberationSync:
    return DeliberationSync(concepts)  # the provider of the worker's settings (AGILE_PROVIDER)


class ScopingHandler(PurposeHandler):
    """Agile Deliberation stage 1: record the keep / flip / discard decisions."""

    purpose = SCOPING

    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        decided, _ = _deliberation(concepts).pull_scoping(link.concept)
        return PullReport(link.concept, link.purpose, link.project_id, decided)


class DeliberationHandler(PurposeHandler):
    """Agile Deliberation stage 2: labels and reasons, refinement, the next borderline batch."""

    purpose = DELIBERATION

    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        return _deliberation(concepts).sync_deliberation(link.concept)


class SourceHandler(PurposeHandler):
    """A user's own project adopted as the concept's pool: tasks imported since the last look are
    embedded and mapped (its annotations and tasks are never changed)."""

    purpose = SOURCE

    def sync(self, concepts: ConceptSync, link: ProjectLink) -> Report:
        report = embed_new_tasks(concepts, link)
        return PullReport(link.concept, link.purpose, link.project_id, report.mapped)


HANDLERS: Mapping[str, PurposeHandler] = MappingProxyType(
    {
        h.purpose: h
        for h in (
            RatingHandler(),
            CrowdHandler(),
            EvaluationHandler(),
            ScopingHandler(),
            DeliberationHandler(),
            SourceHandler(),
        )
    }
)


def handler_for(purpose: str) -> PurposeHandler:
    """The registered handler of ``purpose``.

    Raises:
        UnknownPurposeError: no handler is registered for it.
    """
    try:
        return HANDLERS[purpose]
    except KeyError:
        raise UnknownPurposeError(
            f"no sync handler for projects of purpose {purpose!r} (known: {', '.join(HANDLERS)})"
        ) from None


def sync_link(concepts: ConceptSync, link: ProjectLink) -> Report:
    """Sync one whole project through its purpose's handler (a failure is kept as its ``last_error``)."""
    return _errors_recorded(concepts, link, lambda: handler_for(link.purpose).full_sync(concepts, link))


def handle_event(concepts: ConceptSync, link: ProjectLink, event: dict | None, requested_at: float | None) -> Report:
    """React to a webhook for one project through its purpose's handler (a failure is kept as its
    ``last_error``)."""
    return _errors_recorded(
        concepts, link, lambda: handler_for(link.purpose).on_event(concepts, link, event, requested_at)
    )


def _errors_recorded(concepts: ConceptSync, link: ProjectLink, run: Callable[[], Report]) -> Report:
    """Run one project's sync; on any failure keep the reason as the project's ``last_error``
    (until its next good full sync) and raise it again."""
    try:
        return run()
    except Exception as exc:  # every kind of failure is worth showing in `agile concept status`
        reason = str(exc) if isinstance(exc, AgileError) else f"{type(exc).__name__}: {exc}"
        concepts.state.record_error(link.project_id, reason)
        raise


def sync_project(
    concepts: ConceptSync, project_id: int, requested_at: float | None = None, event: dict | None = None
) -> Report:
    """React to a webhook for one project, through the handler of its purpose. For a rating
    project the event's annotation is recorded at once from the payload while the round still has
    images to rate; a full sync runs when the round looks complete, when the payload cannot be
    used, and periodically.

    Raises:
        UnknownProjectError: no concept of this workspace published the project.
        UnknownPurposeError: the project's purpose has no handler.
    """
    return handle_event(concepts, concepts.state.for_project(project_id), event, requested_at)


def sync_all(concepts: ConceptSync, skip_synced_within: float = 0.0) -> list[Report]:
    """Sync every published project through the handler of its purpose (the periodic safety net
    for lost webhooks).

    Each project is isolated: a failure (its project deleted in Label Studio, the server refusing
    a request, a bug) is logged, kept as the project's ``last_error`` (shown by ``agile concept
    status``) and reported, and the next project is synced all the same. A project fully synced
    less than ``skip_synced_within`` seconds ago (by a webhook) is skipped.
    """
    reports: list[Report] = []
    fresh_since = time.time() - skip_synced_within
    for link in concepts.state.all():
        if skip_synced_within > 0 and link.last_sync > fresh_since:
            continue
        try:
            reports.append(sync_link(concepts, link))
        except Exception as exc:  # isolation: one project's failure must not stop the others
            if isinstance(exc, AgileError):
                log.error("%s: sync of the %s project %d failed: %s", link.concept, link.purpose, link.project_id, exc)
            else:
                log.exception("%s: sync of the %s project %d failed", link.concept, link.purpose, link.project_id)
            reports.append(
                FailedSync(
                    link.concept,
                    link.purpose,
                    link.project_id,
                    concepts.state.for_project(link.project_id).last_error or str(exc),
                )
            )
    return reports
