"""Agile Deliberation in Label Studio: a scoping project (keep / flip / discard each candidate
sub-concept, seeing its representative images) and a deliberation project (borderline batches,
labels with reasons). The current definition is the deliberation project's instructions, rewritten
with every new version.

Like the rating loop, every step reads the server and the session first, so repeats, lost webhooks
and restarts never duplicate a task or a label.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from agile_modeling.concepts import slugify
from agile_modeling.deliberation import Deliberation
from agile_modeling.deliberation.history import DefinitionVersion, DeliberationRound
from agile_modeling.errors import AgileError
from label_config.deliberation import deliberation_label, load_deliberation_config, scoping_decision
from sync.client import TaskRecord
from sync.rounds import IMAGE_ID, ROUND, ConceptSync, latest_annotation
from sync.state import ProjectLink

log = logging.getLogger(__name__)

SCOPING, DELIBERATION = "scoping", "deliberation"
POSITION = "agile_scoping_position"
DECISION = "agile_decision"


@dataclass(frozen=True)
class DeliberationReport:
    concept: str
    project_id: int
    recorded: int  # labels (or scoping decisions) recorded by this sync
    definition_version: int | None
    round: int
    pushed: int  # tasks imported by this sync

    def summary(self) -> str:
        v = "no definition yet" if self.definition_version is None else f"definition v{self.definition_version}"
        return (
            f"{self.concept}: {v}, borderline round {self.round}, {self.recorded} new answers, "
            f"{self.pushed} tasks pushed (project {self.project_id})"
        )


def definition_html(version: DefinitionVersion, history: list[DefinitionVersion]) -> str:
    """The project instructions: the current definition, then what changed in each version and why."""
    changes = "".join(
        f"<li><b>v{v.version}</b> ({v.author}): {html.escape(v.change[:400])}</li>" for v in reversed(history)
    )
    return (
        f"<h3>Current definition (v{version.version})</h3><pre>{html.escape(version.definition.render())}</pre>"
        f"<h4>History</h4><ul>{changes}</ul>"
    )


class DeliberationSync:
    """Args:
    sync: the workspace's Label Studio connection (shared with the rating loop).
    provider: ``"offline"`` or ``"gemini"`` (see :meth:`Workspace.deliberation`); default the
        settings' ``AGILE_PROVIDER``. Gemini's key and models come from the same settings.
    """

    def __init__(self, sync: ConceptSync, provider: str | None = None) -> None:
        self.sync = sync
        self.client = sync.client
        self.state = sync.state
        self.provider = provider or sync.settings.provider

    def deliberation(self, concept: str) -> Deliberation:
        gemini = self.sync.settings.gemini() if self.provider == "gemini" else None
        return self.sync.workspace.deliberation(concept, self.provider, gemini=gemini)

    # --- stage 1 -------------------------------------------------------------------------------
    def publish_scoping(self, concept: str, description: str = "") -> DeliberationReport:
        """Propose the scoping (once) and push one task per candidate sub-concept (only missing ones)."""
        slug = slugify(concept)
        delib = self.deliberation(concept)
        with self.sync.concept_lock(slug):
            items = delib.scope(description)
            link = self._link(
                slug,
                SCOPING,
                f"{delib.session.concept.name} - scoping",
                "Agile Deliberation, stage 1: keep, flip or discard each candidate sub-concept.",
            )
            present = {t.data.get(POSITION) for t in self.client.iter_tasks(link.project_id)}
            tasks = []
            for it in items:
                if it.position in present:
                    continue
                urls = self.sync.image_urls(list(it.image_ids))
                examples = "".join(
                    f'<img src="{html.escape(u)}" style="height:140px;margin:3px" alt="example"/>' for u in urls
                )
                tasks.append(
                    {
                        "data": {
                            "concept": delib.session.concept.name,
                            "unit": it.unit,
                            "name": it.name,
                            "side_text": "IN SCOPE" if it.side == "in" else "OUT OF SCOPE",
                            "description": it.description or f"Typical pool images for '{it.name}':",
                            "examples_html": f"<div>{examples}</div>",
                            POSITION: it.position,
                        }
                    }
                )
            self.client.import_tasks(link.project_id, tasks)
        return DeliberationReport(slug, link.project_id, 0, None, -1, len(tasks))

    def pull_scoping(self, concept: str) -> tuple[int, int]:
        """Record the scoping decisions made in Label Studio; returns ``(decided, candidates)``."""
        slug = slugify(concept)
        link = self._require(slug, SCOPING)
        delib = self.deliberation(concept)
        decisions = {}
        for task in self.client.iter_tasks(link.project_id):
            ann = latest_annotation(task)
            position = task.data.get(POSITION)
            if ann is None or not isinstance(position, int):
                continue
            decision = scoping_decision(ann.result)
            if decision:
                decisions[position] = decision
        with self.sync.concept_lock(slug):
            if delib.history.current() is None:  # decisions freeze once d0 exists
                delib.decide_scoping(decisions)
        return len(decisions), len(delib.history.scoping())

    def start(self, concept: str) -> DeliberationReport:
        """d0 from the scoping decisions, the deliberation project, and the first borderline batch."""
        self.pull_scoping(concept)
        slug = slugify(concept)
        delib = self.deliberation(concept)
        with self.sync.concept_lock(slug):
            delib.finish_scoping()
            link = self._link(slug, DELIBERATION, f"{delib.session.concept.name} - deliberation", "")
            self._show_definition(link, delib)
        return self.sync_deliberation(concept)

    # --- stage 2 -------------------------------------------------------------------------------
    def sync_deliberation(self, concept: str) -> DeliberationReport:
        """Record labels and reasons; when the batch is complete, refine the definition, show it, and
        push the next borderline batch. Idempotent."""
        slug = slugify(concept)
        link = self._require(slug, DELIBERATION)
        delib = self.deliberation(concept)
        with self.sync.concept_lock(slug):
            tasks = list(self.client.iter_tasks(link.project_id))
            recorded = self._record(delib, tasks)
            pushed = 0
            if delib.history.current_round() >= 0 and not delib.pending():
                before = delib.history.require_current().version
                version = delib.refine()
                if version.version != before:
                    self._show_definition(link, delib)
            if delib.history.current_round() < 0 or not delib.pending():
                pushed = self._push(link, delib, delib.next_batch(), tasks)
            else:  # a crash between recording a batch and pushing it: push what is missing
                pushed = self._push(link, delib, delib.history.round(delib.history.current_round()), tasks)
        current = delib.history.require_current()
        return DeliberationReport(
            slug, link.project_id, recorded, current.version, delib.history.current_round(), pushed
        )

    def _record(self, delib: Deliberation, tasks: Iterable[TaskRecord]) -> int:
        shown = delib.history.shown_ids()
        new = 0
        for task in tasks:
            image_id, decision = task.data.get(IMAGE_ID), task.data.get(DECISION)
            ann = latest_annotation(task)
            if ann is None or image_id not in shown or decision not in (0, 1):
                continue
            parsed = deliberation_label(ann.result, decision)
            if parsed is None:
                continue
            label, comment = parsed
            new += delib.record(image_id, label, comment, external_id=f"ls-{ann.id}-{ann.updated_at}")
        return new

    def _push(
        self, link: ProjectLink, delib: Deliberation, batch: DeliberationRound, tasks: Iterable[TaskRecord]
    ) -> int:
        present = {t.data.get(IMAGE_ID) for t in tasks}
        items = [it for it in batch.items if it.image_id not in present]
        if not items:
            return 0
        urls = self.sync.image_urls([it.image_id for it in items])
        payload = [
            {
                "data": {
                    "image": url,
                    "concept": delib.session.concept.name,
                    "decision_text": "IN SCOPE" if it.decision else "OUT OF SCOPE",
                    "rationale": f"Why: {it.rationale}",
                    "ambiguity": f"This batch: {batch.explanation} This image: {it.summary}",
                    "definition_version": batch.definition_version,
                    IMAGE_ID: it.image_id,
                    ROUND: batch.round,
                    DECISION: it.decision,
                }
            }
            for it, url in zip(items, urls)
        ]
        self.client.import_tasks(link.project_id, payload)
        return len(payload)

    def _show_definition(self, link: ProjectLink, delib: Deliberation) -> None:
        current = delib.history.require_current()
        self.client.update_project(
            link.project_id,
            expert_instruction=definition_html(current, delib.history.versions()),
            show_instruction=True,
            description=f"Definition v{current.version}:\n{current.definition.render()}"[:1000],
        )

    # --- links ---------------------------------------------------------------------------------
    def _link(self, slug: str, purpose: str, title: str, description: str) -> ProjectLink:
        link = self.state.for_concept(slug, purpose)
        if link is None:
            project_id = self.client.create_project(
                title=title[:50],
                label_config=load_deliberation_config(purpose),
                description=description,
                show_skip_button=False,
            )
            link = self.state.link(ProjectLink(slug, purpose, project_id))
            log.info("created the %s project %d for %s", purpose, project_id, slug)
        return link

    def _require(self, slug: str, purpose: str) -> ProjectLink:
        link = self.state.for_concept(slug, purpose)
        if link is None:
            step = "agile deliberate scope" if purpose == SCOPING else "agile deliberate start"
            raise AgileError(f"{slug} has no {purpose} project yet: run `{step} {slug}` first")
        return link
