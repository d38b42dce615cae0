"""The agile loop, driven through a Label Studio project.

:class:`ConceptSync` publishes a concept (project, ML backend, seed batch) and *syncs* it: it
reads the project's annotations from the server, records new ones as labels, pushes whatever
tasks of the current round are missing, and, once the round is fully rated, retrains, selects
the next batch by margin over the whole pool and pushes it with the new model's predictions.

Every step reads its state from the server and the session first, so a sync can run any number
of times, after lost or repeated webhooks or a worker killed half-way, and never duplicates a
task or a label. All the computing is the core engine's (``AgileLoop``); this module only moves
data between it and Label Studio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from agile_modeling.classifier import ConceptClassifier, ModelVersion
from agile_modeling.concepts import Concept, slugify
from agile_modeling.errors import AgileError
from agile_modeling.file_lock import file_lock
from agile_modeling.loop import AgileLoop, LoopConfig
from agile_modeling.selection import DEFAULT_STRATEGY
from agile_modeling.session import USER, WITHDRAWN, Label, Session
from agile_modeling.sharded import can_shard
from agile_modeling.workspace import Workspace
from label_config import RatingSchema, load_config, parse_rating_config
from sync.client import Annotation, LabelStudioClient, TaskRecord, annotation_from_payload
from sync.faults import fault_point
from sync.label_studio_images import is_cloud_uri, resolve_url
from sync.progress import progress_plot, project_texts
from sync.settings import Settings
from sync.state import RATING, ProjectLink, RoundSettings, SyncState

log = logging.getLogger(__name__)

TASK_DELETED = "its task was deleted in Label Studio"  # why an image is withdrawn from its round
UNSURE = "unsure: the rater skipped it in Label Studio"  # "I can't tell": never a label, never asked again
PUSH_CHUNK = 50  # tasks per import request

BACKEND_TITLE = "agile-modeling"  # our ML backend's title in every project
IMAGE_ID = "agile_image_id"
ROUND = "agile_round"
LABEL_STUDIO_RATER = "label-studio-user"
WEBHOOK_SECRET_HEADER = "X-Agile-Secret"


@dataclass(frozen=True)
class SyncReport:
    """What one sync did."""

    concept: str
    project_id: int
    round: int
    new_labels: int
    pending: int
    pushed: int
    trained: str | None = None
    refreshed: int = 0
    skipped: bool = False
    from_event: bool = False  # recorded from the webhook's payload, without reading the project

    def summary(self) -> str:
        if self.skipped:
            return f"{self.concept}: already synced"
        parts = [
            f"{self.concept}: round {self.round}, {self.new_labels} new labels, {self.pending} to rate"
            + (" (from the webhook)" if self.from_event else "")
        ]
        if self.trained:
            parts.append(f"trained {self.trained}")
        if self.pushed:
            parts.append(f"pushed {self.pushed} tasks")
        if self.refreshed:
            parts.append(f"refreshed {self.refreshed} predictions")
        return "; ".join(parts)


def parse_timestamp(value: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 time from the API, or None."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def latest_annotation(task: TaskRecord) -> Annotation | None:
    """The task's most recently updated annotation that was not skipped, or None."""
    live = [a for a in task.annotations if not a.was_cancelled]
    return max(live, key=lambda a: (a.updated_at, a.id)) if live else None


InFlightCheck = Callable[["ConceptSync", ProjectLink, int], bool]
SelectionLauncher = Callable[["ConceptSync", ProjectLink, AgileLoop, str], object]
"""``(sync, link, loop, model version) -> anything``: starts the next round's selection, which
records and pushes the batch itself later (it is called under the concept lock)."""


class ConceptSync:
    """Publishes and syncs concepts of one workspace with one Label Studio server."""

    def __init__(
        self,
        settings: Settings,
        workspace: Workspace | None = None,
        client: LabelStudioClient | None = None,
        launch_selection: SelectionLauncher | None = None,
        selection_in_flight: InFlightCheck | None = None,
    ) -> None:
        """``launch_selection``: how a fully rated round's next batch is selected elsewhere
        (:func:`sync.sharded.start_sharded_selection`, a chord on the workers); None selects it in
        this process. ``selection_in_flight(sync, link, round)``: whether such a launch of that
        round is still running (then ratings arriving meanwhile retrain nothing). Compose with
        :func:`sync.sharded.concept_sync`, which follows ``settings.sharded_scoring``."""
        self.settings = settings
        self.launch_selection = launch_selection
        self.selection_in_flight = selection_in_flight
        self.workspace = workspace or Workspace(settings.workspace)
        self.client = client or LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)
        self.state = SyncState(self.workspace.root / "label_studio.sqlite")

    # --- helpers -----------------------------------------------------------------------------
    @contextmanager
    def concept_lock(self, slug: str) -> Iterator[None]:
        """One sync per concept at a time, across worker processes sharing this workspace."""
        with file_lock(self.workspace.root / "locks" / f"{slug}.lock"):
            yield

    def loop(self, link: ProjectLink) -> AgileLoop:
        rounds = link.round_settings
        return self.workspace.loop(
            link.concept,
            LoopConfig(
                seed_size=rounds.seed_size,
                batch_size=rounds.batch_size,
                strategy=rounds.strategy,
                seed=rounds.seed,
                prefetch=self.settings.prefetch,
            ),
        )

    def image_urls(self, ids: Sequence[int]) -> list[str]:
        """URLs the browser can load: web and data URIs as they are, local files through our image route."""
        from sync.image_signing import NO_KEY, ImageSigner

        uris = self.workspace.store().uris(ids)
        base = self.settings.images_base_url
        signer = None if self.settings.images_unsigned else ImageSigner.from_settings(self.settings)
        cloud = [i for i, u in zip(ids, uris) if is_cloud_uri(u)]
        adopted_from = self.state.source_projects_of(cloud) if cloud and self.settings.label_studio_url else {}
        out = []
        for image_id, uri in zip(ids, uris):
            if uri.startswith(("http://", "https://", "data:")):
                out.append(uri)
            elif int(image_id) in adopted_from:  # an adopted project's cloud image: Label Studio resolves it
                out.append(resolve_url(str(self.settings.label_studio_url), adopted_from[int(image_id)], uri))
            elif base:  # signed: the browser loads it without credentials (sync/image_signing.py)
                if signer is None and not self.settings.images_unsigned:
                    raise AgileError(f"cannot put local pool images into tasks: {NO_KEY}")
                out.append(signer.url(base, image_id) if signer else f"{base}/{int(image_id)}")
            else:
                out.append(uri)
        return out

    def _task_payloads(
        self,
        session: Session,
        round_index: int,
        ids: Sequence[int],
        model: tuple[ModelVersion, ConceptClassifier] | None,
        schema: RatingSchema,
    ) -> list[dict]:
        concept = session.concept
        urls = self.image_urls(ids)
        probs = self._probabilities(model[1], ids) if model is not None else None
        tasks = []
        for n, (image_id, url) in enumerate(zip(ids, urls)):
            task: dict[str, Any] = {
                "data": {
                    schema.image_field: url,
                    "concept": concept.name,
                    "description": concept.description or _describe(concept),
                    IMAGE_ID: int(image_id),
                    ROUND: int(round_index),
                }
            }
            if probs is not None and model is not None:
                task["predictions"] = [schema.prediction_record(float(probs[n]), model[0].name)]
            tasks.append(task)
        return tasks

    def _probabilities(self, classifier: ConceptClassifier, ids: Sequence[int]) -> np.ndarray:
        x = self.workspace.store().vectors().take(np.asarray(ids, dtype=np.int64)).astype(np.float32)
        return classifier.predict_proba(x)

    def schema_of(self, link: ProjectLink) -> RatingSchema:
        """The rating schema of the project's current label config (validated on every call)."""
        return parse_rating_config(self.client.project_label_config(link.project_id))

    # --- publish -----------------------------------------------------------------------------
    def publish(
        self,
        concept_name: str,
        seed_size: int = 100,
        batch_size: int = 100,
        strategy: str = DEFAULT_STRATEGY,
        seed: int = 0,
        title: str | None = None,
    ) -> SyncReport:
        """Create the concept's project (once, titled ``title`` or the concept's name), connect our ML
        backend, and push the seed batch.

        The concept's session must exist (``agile concept new``). Calling it again only pushes
        what is missing.
        """
        session = self.workspace.sessions.open(concept_name)
        slug = session.slug
        with self.concept_lock(slug):
            link = self.state.for_concept(slug)
            if link is None:
                config = load_config(self.settings.label_config)
                parse_rating_config(config)  # our own file: fails loudly if edited badly
                project_id = self.client.create_project(
                    title=(title or session.concept.name)[:50],
                    label_config=config,
                    description=f"agile-modeling concept: {_describe(session.concept)}",
                    **rating_project_settings(self.settings),
                )
                link = self.state.link(
                    ProjectLink(
                        slug,
                        RATING,
                        project_id,
                        RoundSettings(self.settings.label_config, seed_size, batch_size, strategy, seed),
                    )
                )
                log.info("created Label Studio project %d for %s", project_id, slug)
            else:  # e.g. AGILE_PREFILL_PREDICTIONS changed since the project was created
                self.client.update_project(link.project_id, **rating_project_settings(self.settings))
            self.connect_backend(link)
        return self.sync(concept_name)

    def connect_backend(self, link: ProjectLink) -> None:
        """Connect our ML backend to the project (once), with the webhook's shared secret."""
        if not self.settings.backend_url:
            log.warning(
                "AGILE_BACKEND_URL is not set: project %d gets no ML backend (no /predict, no webhooks)",
                link.project_id,
            )
            return
        auth = None
        if self.settings.basic_auth_user and self.settings.basic_auth_pass:
            auth = (self.settings.basic_auth_user, self.settings.basic_auth_pass)
        self.client.connect_ml_backend(link.project_id, self.settings.backend_url, BACKEND_TITLE, auth)
        for stale in self.client.remove_other_backends(link.project_id, self.settings.backend_url, BACKEND_TITLE):
            log.info(
                "project %d: removed our ML backend at %s (the backend now runs at %s)",
                link.project_id,
                stale,
                self.settings.backend_url,
            )
        if self.settings.webhook_secret:
            found = self.client.set_webhook_headers(
                link.project_id,
                f"{self.settings.backend_url}/webhook",
                {WEBHOOK_SECRET_HEADER: self.settings.webhook_secret},
            )
            if not found:
                log.warning(
                    "project %d has no webhook to %s/webhook: only the periodic sync will see ratings",
                    link.project_id,
                    self.settings.backend_url,
                )

    # --- sync --------------------------------------------------------------------------------
    def sync(self, concept_name: str, requested_at: float | None = None, force_retrain: bool = False) -> SyncReport:
        """Bring the concept's session and project up to date with each other (idempotent).

        ``requested_at`` (an event's time) lets a burst of webhooks cost one sync: if a sync
        started after the event, it already saw it.
        """
        slug = slugify(concept_name)
        link = self.state.for_concept(slug)
        if link is None:
            return self.publish(concept_name)
        with self.concept_lock(slug):
            link = self.state.for_concept(slug)
            assert link is not None  # links are never removed
            if requested_at is not None and link.last_sync > requested_at and not force_retrain:
                return SyncReport(slug, link.project_id, -1, 0, 0, 0, skipped=True)
            started = time.time()
            try:
                report = self._sync_locked(link, force_retrain)
            except AgileError as exc:
                self.state.record_error(link.project_id, str(exc))
                raise
            self.state.mark_synced(link.project_id, started)
            return report

    def _apply_event(self, link: ProjectLink, event: dict) -> SyncReport | None:
        """Record the annotation of an ``ANNOTATION_CREATED/UPDATED`` payload; None means "do a full sync"."""
        try:
            raw = event["annotation"]
            task = TaskRecord(
                int(event["task_id"]),
                {IMAGE_ID: event["image_id"], ROUND: event.get("round")},
                annotations=(annotation_from_payload(raw, int(event["task_id"])),),
            )
        except (KeyError, TypeError, ValueError):
            return None
        schema = parse_rating_config(load_config(link.round_settings.label_config))
        if task.annotations[0].was_cancelled or schema.label_of(task.annotations[0].result)[0] is None:
            return None
        with self.concept_lock(link.concept):
            session = self.workspace.sessions.open(link.concept)
            if not isinstance(task.data[IMAGE_ID], int) or task.data[IMAGE_ID] not in session.queued_ids():
                return None
            new = self._record_annotations(session, [task], schema)
            pending = session.pending()
            if not pending or len(pending) <= int(self.settings.prefetch * link.round_settings.batch_size):
                return None  # the next batch is due: a full sync trains and selects it
            self.show_progress(link, session)
            return SyncReport(
                link.concept, link.project_id, session.current_round(), new, len(pending), 0, from_event=True
            )

    def _sync_locked(self, link: ProjectLink, force_retrain: bool) -> SyncReport:
        loop = self.loop(link)
        session = loop.session
        schema = self.schema_of(link)
        tasks = list(self.client.iter_tasks(link.project_id))
        new_labels = self._record_annotations(session, tasks, schema)

        if session.current_round() < 0:
            loop.start()
        model = self._current_model(loop)
        pushed = len(self._push_missing(link, session, tasks, model, schema))
        trained, refreshed = None, 0
        due = self._next_batch_due(link, loop)
        if force_retrain or due:
            model = self._model_for_labels(loop, force=force_retrain)
            trained = model[0].name
            if due and self.launch_selection is not None and can_shard(loop.strategy.name):
                # e.g. scored on the workers by a chord, whose callback records and pushes the batch
                self.launch_selection(self, link, loop, model[0].name)
            elif due:
                if self.launch_selection is not None:
                    log.info(
                        "%s: %s does not split by shard; this round is selected in this worker",
                        link.concept,
                        loop.strategy.name,
                    )
                loop.next_batch(model[1])
                log.info(
                    "%s: round %d selected (%d images)",
                    link.concept,
                    session.current_round(),
                    len(session.batch(session.current_round())),
                )
                pushed += len(self._push_missing(link, session, tasks, model, schema))
            refreshed = self._refresh_open_predictions(link, tasks, model, schema)
            self._estimate_quality(loop, model[0])
        self.show_progress(link, session)
        return SyncReport(
            link.concept,
            link.project_id,
            session.current_round(),
            new_labels,
            len(session.pending()),
            pushed,
            trained,
            refreshed,
        )

    def _next_batch_due(self, link: ProjectLink, loop: AgileLoop) -> bool:
        """Whether to train and select the next batch now: the open images are down to the prefetch
        share of a batch (:meth:`AgileLoop.next_batch_due`), and no selection of that round is
        already running on the workers (ratings arriving meanwhile would retrain for nothing)."""
        session = loop.session
        if not loop.next_batch_due() or not session.batch(session.current_round()):
            return False
        return not (
            self.selection_in_flight is not None and self.selection_in_flight(self, link, session.current_round() + 1)
        )

    def _record_annotations(
        self, session: Session, tasks: Iterable[TaskRecord], schema: RatingSchema, source: str = USER
    ) -> int:
        """Make the session's labels of ``source`` match the server: each task's latest annotation is
        recorded (a repeated one is a no-op); a rating whose annotations were all deleted is withdrawn.
        Returns how many labels changed."""
        new = 0
        current = session.latest_labels(source)
        for task in tasks:
            image_id = task.data.get(IMAGE_ID)
            if not isinstance(image_id, int):
                continue
            annotation = latest_annotation(task)
            if annotation is None and source == USER and any(a.was_cancelled for a in task.annotations):
                skip = max((a for a in task.annotations if a.was_cancelled), key=lambda a: (a.updated_at, a.id))
                new += self._record_unsure(session, image_id, current.get(image_id), f"{skip.id}:{skip.updated_at}")
                continue
            if annotation is None:
                label = current.get(image_id)
                if label is not None and label.value != WITHDRAWN and label.rater.startswith(LABEL_STUDIO_RATER):
                    new += session.withdraw_label(
                        image_id,
                        rater=label.rater,
                        source=source,
                        external_id=f"label-studio:withdrawn:{task.id}:{label.created}",
                    )
                continue
            value, note = schema.label_of(annotation.result)
            if value is None:
                continue
            new += session.record_label(
                image_id,
                value,
                rater=f"{LABEL_STUDIO_RATER}:{annotation.completed_by}",
                source=source,
                round_index=task.data.get(ROUND),
                note=note,
                external_id=f"label-studio:{annotation.id}:{annotation.updated_at}",
                created=parse_timestamp(annotation.updated_at),
                lead_time=annotation.lead_time if isinstance(annotation.lead_time, (int, float)) else None,
            )
        return new

    def _estimate_quality(self, loop: AgileLoop, version: ModelVersion) -> None:
        """Cross-validate the new version on the user's ratings (after its batch went out, so the
        rater does not wait for it) and redraw the progress plot."""
        if any("cv_auc_pr" in m["metrics"] for m in loop.session.models() if m["name"] == version.name):
            return  # estimated already (estimates live in the session; model.json is written once)
        estimate = loop.estimate_quality(version)
        if estimate is not None:
            log.info("%s: %s %s", loop.session.slug, version.name, estimate.summary())
            progress_plot(loop.session, self.workspace.root / "reports")

    def show_progress(self, link: ProjectLink, session: Session) -> None:
        """Put the loop's state (round, rated, positives, newest estimate) in the rating project's
        description and instructions. Cosmetic: a failure is logged, never fails the sync."""
        try:
            self.client.update_project(link.project_id, **project_texts(session, _describe(session.concept)))
        except AgileError as exc:
            log.warning("%s: could not show the progress in project %d: %s", link.concept, link.project_id, exc)

    @staticmethod
    def _record_unsure(session: Session, image_id: int, label: Label | None, event: str) -> int:
        """A skipped task: the rater could not tell. The image leaves its round unrated (withdrawn
        as :data:`UNSURE`, so it is never pushed or selected again) and a rating it had before the
        skip is taken back. Returns how many records changed."""
        if image_id not in session.queued_ids():
            return 0
        changed = int(session.withdraw_image(image_id, UNSURE))
        if label is not None and label.value != WITHDRAWN and label.rater.startswith(LABEL_STUDIO_RATER):
            changed += session.withdraw_label(
                image_id, rater=label.rater, external_id=f"label-studio:unsure:{image_id}:{event}:{label.created}"
            )
        return changed

    def _current_model(self, loop: AgileLoop) -> tuple[ModelVersion, ConceptClassifier] | None:
        version = loop.registry.latest()
        return (version, version.load()) if version else None

    def _model_for_labels(self, loop: AgileLoop, force: bool = False) -> tuple[ModelVersion, ConceptClassifier]:
        """The model trained on exactly the current labels: reused if a crash came after training."""
        latest = loop.registry.latest()
        if (
            not force
            and latest is not None
            and latest.info.get("labels_digest") == loop.labels_digest()
            and latest.info.get("round") == loop.session.current_round()
        ):
            return latest, latest.load()
        model = loop.train(progress=lambda epoch, loss: fault_point("training"))
        fault_point("after-train")
        return model

    def _push_missing(
        self,
        link: ProjectLink,
        session: Session,
        tasks: list[TaskRecord],
        model: tuple[ModelVersion, ConceptClassifier] | None,
        schema: RatingSchema,
    ) -> list[int]:
        """Import the current round's images that never had a task (so a crash mid-push resumes).

        ``tasks`` is the project's whole task list. An image whose task was pushed (or seen on the
        server) and is gone now was deleted by the user, who meant "not this image": it is
        withdrawn from its round (and its rating, if any) and never pushed again, so the round
        completes without it. The new tasks are appended to ``tasks`` (with the model version
        their prediction came from) and their ids returned.
        """
        round_index = session.current_round()
        present = self._note_present_tasks(link, tasks)
        self._withdraw_deleted_tasks(link, session, present)
        withdrawn = session.withdrawn_images()
        missing = [i for i in session.batch(round_index) if i not in present and i not in withdrawn]
        if not missing:
            return []
        payloads = self._task_payloads(session, round_index, missing, model, schema)
        task_ids = []
        for start in range(0, len(payloads), PUSH_CHUNK):  # chunks bound one request's size
            chunk = payloads[start : start + PUSH_CHUNK]
            task_ids += self.client.import_tasks(link.project_id, chunk)
            self.state.record_pushed(link.project_id, [(p["data"][IMAGE_ID], round_index) for p in chunk])
            fault_point("push")
        version = model[0].name if model else None
        tasks.extend(TaskRecord(tid, p["data"], prediction_version=version) for tid, p in zip(task_ids, payloads))
        log.info("%s: pushed %d tasks of round %d", link.concept, len(missing), round_index)
        return task_ids

    def _refresh_open_predictions(
        self,
        link: ProjectLink,
        tasks: Sequence[TaskRecord],
        model: tuple[ModelVersion, ConceptClassifier],
        schema: RatingSchema,
    ) -> int:
        """Attach the new model's prediction to every task still waiting for a rating."""
        open_tasks = [
            t
            for t in tasks
            if latest_annotation(t) is None
            and isinstance(t.data.get(IMAGE_ID), int)
            and t.prediction_version != model[0].name
        ]
        if not open_tasks:
            return 0
        probs = self._probabilities(model[1], [t.data[IMAGE_ID] for t in open_tasks])
        self.client.import_predictions(
            link.project_id,
            [{"task": t.id, **schema.prediction_record(float(p), model[0].name)} for t, p in zip(open_tasks, probs)],
        )
        return len(open_tasks)

    def retrain(self, concept_name: str) -> SyncReport:
        """Train now on every label so far, and refresh the predictions of open tasks."""
        return self.sync(concept_name, force_retrain=True)

    def pull(self, link: ProjectLink) -> int:
        """Record each task's latest annotation of a project whose ratings train nothing and that
        has one rater per task (an evaluation project): its purpose is the label source. Not for
        crowd projects (their label is a majority, :func:`sync.crowd.pull_crowd`). Returns how
        many labels changed."""
        session = self.workspace.sessions.open(link.concept)
        with self.concept_lock(link.concept):
            tasks = list(self.client.iter_tasks(link.project_id))
            return self._record_annotations(session, tasks, self.schema_of(link), source=link.purpose)

    def push_images(
        self, link: ProjectLink, image_ids: Sequence[int], round_index: int, extra: dict | None = None
    ) -> int:
        """Import the images that never had a task in the project (no predictions); returns how many.
        An image whose task the user deleted there is not pushed again."""
        session = self.workspace.sessions.open(link.concept)
        present = self._note_present_tasks(link, list(self.client.iter_tasks(link.project_id)))
        had_task = self.state.pushed_images(link.project_id)
        missing = [int(i) for i in image_ids if int(i) not in present and int(i) not in had_task]
        if missing:
            payloads = self._task_payloads(session, round_index, missing, None, self.schema_of(link))
            for p in payloads:
                p["data"].update(extra or {})
            self.client.import_tasks(link.project_id, payloads)
            self.state.record_pushed(link.project_id, [(i, round_index) for i in missing])
        return len(missing)

    def _note_present_tasks(self, link: ProjectLink, tasks: Iterable[TaskRecord]) -> set[int]:
        """The images that have a task in the project now; each is recorded as having had one (a
        task imported just before a crash is known from here on)."""
        present = {t.data[IMAGE_ID]: t.data.get(ROUND) for t in tasks if isinstance(t.data.get(IMAGE_ID), int)}
        known = self.state.pushed_images(link.project_id)
        self.state.record_pushed(
            link.project_id, [(i, r if isinstance(r, int) else None) for i, r in present.items() if i not in known]
        )
        return set(present)

    def _withdraw_deleted_tasks(self, link: ProjectLink, session: Session, present: set[int]) -> int:
        """Withdraw every batch image that had a task in the project and has none now (the user
        deleted it), with the rating it had from Label Studio. Returns how many were withdrawn."""
        queued = set(session.queued_ids())
        gone = (self.state.pushed_images(link.project_id) - present) & queued - set(session.withdrawn_images())
        if gone:  # the listing pages by offset: a deletion while it ran can hide a task; look again
            again = {
                t.data[IMAGE_ID]
                for t in self.client.iter_tasks(link.project_id)
                if isinstance(t.data.get(IMAGE_ID), int)
            }
            gone -= again
        withdrawn = 0
        for image_id in sorted(gone - set(session.withdrawn_images())):
            withdrawn += session.withdraw_image(image_id, TASK_DELETED)
            label = session.latest_labels(USER).get(image_id)
            if label is not None and label.value != WITHDRAWN and label.rater.startswith(LABEL_STUDIO_RATER):
                session.withdraw_label(image_id, rater=label.rater, external_id=f"label-studio:task-deleted:{image_id}")
        if withdrawn:
            log.info("%s: %d images withdrawn (%s)", link.concept, withdrawn, TASK_DELETED)
        return withdrawn


def rating_project_settings(settings: Settings) -> dict:
    """Project settings of a concept's rating project.

    Skipping is on and means "I can't tell" (:data:`UNSURE`); a skipped task is not served again.
    The model's guess is pre-selected only when ``settings.prefill_predictions``: pre-selection
    anchors the rater (the paper's raters saw only the image). The predictions are attached either
    way, so the Data Manager shows and sorts by the model's score. The instructions (the loop's
    state, :mod:`sync.progress`) open with the label stream and stay behind its Instructions button.
    """
    return dict(
        show_skip_button=True,
        skip_queue="IGNORE_SKIPPED",
        show_instruction=True,
        show_collab_predictions=settings.prefill_predictions,
    )


def _describe(concept: Concept) -> str:
    if concept.description:
        return concept.description
    text = f"positive: {', '.join(concept.positives)}"
    return text + (f"; not: {', '.join(concept.negatives)}" if concept.negatives else "")
