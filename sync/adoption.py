"""Adopt a user's own Label Studio project: its images become the concept's pool.

``agile concept new NAME --from-project ID`` and the backend's ``/setup`` with extra params (through
the worker's ``agile.adopt_project`` task) both come here. Adoption

1. reads the project's label config (it needs an ``<Image>``; a Choices with a positive and a
   negative choice lets existing annotations count as ratings, see :mod:`label_config.source`);
2. resolves every task's image where Label Studio keeps it (:mod:`sync.label_studio_images`) and
   embeds each image once into the workspace's pool, mapping task id <-> pool id in the sync
   state. Images already in the pool under the same URI are mapped without being read again, so
   a second run (or a crash half-way) resumes; unreadable images are listed with the reason;
3. creates the concept (its phrases) and imports the project's existing annotations as labels,
   with their provenance (rater ``source-project:<id>:<user>``);
4. publishes the companion rating project, where the seed batch and every active-learning batch
   go: the source project's tasks and annotations are never changed (only ``agile concept apply``
   writes predictions onto them, see :mod:`sync.write_back`).

Tasks imported into the source project later are embedded by :func:`embed_new_tasks` (the
periodic sync and the ``TASKS_CREATED`` webhook).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from agile_modeling.concepts import Concept, slugify
from agile_modeling.errors import AgileError, ImageReadError
from agile_modeling.loop import LoopConfig
from agile_modeling.selection import DEFAULT_STRATEGY
from agile_modeling.store import EmbeddingStore
from label_config import RatingSchema
from label_config.source import SourceSchema, parse_source_config
from sync.client import TaskRecord
from sync.label_studio_images import LabelStudioImages
from sync.rounds import ConceptSync, latest_annotation, parse_timestamp
from sync.state import SOURCE, ProjectLink, UnknownProjectError

log = logging.getLogger(__name__)

# concurrent reads from Label Studio: on 2 cores 4 kept the model fed (12.6 images/s against 11.2 with 16,
# benchmarks/results/adoption_embedding_http.md) and ask less of the user's server
FETCH_WORKERS = 4
SOURCE_RATER = "source-project"  # rater of an imported annotation: source-project:<project id>:<user id>


class AdoptionError(AgileError):
    """A project cannot be adopted as asked (no phrases for a new concept, another concept owns it)."""


@dataclass
class EmbedReport:
    """What mapping a project's tasks to pool images did."""

    tasks: int = 0  # tasks looked at
    mapped: int = 0  # newly mapped to a pool image
    embedded: int = 0  # images read and embedded (the others were in the pool already)
    skipped: dict[int, str] = field(default_factory=dict)  # task id -> why its image could not be read


@dataclass
class AdoptionReport:
    concept: str
    project_id: int
    embedding: EmbedReport
    imported_labels: int
    why_no_labels: str | None
    rating_project_id: int | None

    def summary(self) -> str:
        e = self.embedding
        lines = [
            f"adopted Label Studio project {self.project_id} for {self.concept!r}: {e.tasks} tasks, "
            f"{e.mapped} newly mapped ({e.embedded} images embedded, the rest already in the pool), "
            f"{len(e.skipped)} skipped"
        ]
        if self.why_no_labels:
            lines.append(f"existing annotations not imported: {self.why_no_labels}")
        else:
            lines.append(f"{self.imported_labels} existing annotations imported as ratings")
        if self.rating_project_id is not None:
            lines.append(f"rating project: {self.rating_project_id}")
        lines += [f"  skipped task {t}: {why}" for t, why in sorted(self.embedding.skipped.items())[:20]]
        if len(self.embedding.skipped) > 20:
            lines.append(f"  ... and {len(self.embedding.skipped) - 20} more (agile concept status)")
        return "\n".join(lines)


def project_images(concepts: ConceptSync, project_id: int) -> LabelStudioImages:
    """The reader of the project's images, with the worker's Label Studio credentials and fetch policy."""
    return LabelStudioImages.for_project(concepts.settings, project_id)


def embed_tasks(
    concepts: ConceptSync,
    project_id: int,
    tasks: Sequence[TaskRecord],
    image_field: str,
    retry_skipped: bool = False,
    progress: bool = False,
) -> EmbedReport:
    """Map each task not mapped yet to its pool image, embedding images the pool lacks.

    Args:
        tasks: every task of the project now (those mapped before are passed over; mapped ones that
            are no longer there are forgotten).
        image_field: the task data key of the image.
        retry_skipped: read again the tasks skipped before (an explicit adoption does; the periodic
            sync does not, so a broken image costs one read, not one per sync).
    """
    state = concepts.state
    gone = state.known_source_tasks(project_id) - {t.id for t in tasks}
    if gone:  # deleted in Label Studio since the last look
        state.forget_source_tasks(project_id, gone)
    done = set(state.source_tasks(project_id)) if retry_skipped else state.known_source_tasks(project_id)
    todo = [t for t in tasks if t.id not in done]
    report = EmbedReport(tasks=len(tasks))
    if not todo:
        return report
    with project_images(concepts, project_id) as reader:  # its HTTP connections closed after the reads
        uri_of: dict[int, str] = {}
        for task in todo:
            try:
                uri_of[task.id] = reader.pool_uri(task.data.get(image_field))  # type: ignore[arg-type]
            except ImageReadError as exc:
                report.skipped[task.id] = str(exc)
        uris = list(dict.fromkeys(uri_of.values()))
        ws = concepts.workspace
        pool_ids: dict[str, int] = {}
        if (ws.root / "pool").exists():
            pool_ids = ws.store().ids_of_uris(uris)
        missing = [u for u in uris if u not in pool_ids]
        if missing:
            encoder = ws.image_encoder().with_runtime(device=concepts.settings.device)
            store: EmbeddingStore = ws.store(encoder.dim, encoder.name)
            added = store.add_images(missing, encoder, progress=progress, read=reader.read, fetch_workers=FETCH_WORKERS)
            pool_ids.update(added.ids)
            report.embedded = len(added.added_ids)
            why = dict(added.skipped)
            for task_id, uri in uri_of.items():
                if uri not in pool_ids:
                    report.skipped[task_id] = f"{uri[:120]}: {why.get(uri, 'not embedded')}"
    mapped = {t: pool_ids[u] for t, u in uri_of.items() if u in pool_ids}
    state.record_source_tasks(project_id, mapped, report.skipped)
    report.mapped = len(mapped)
    for task_id, reason in list(report.skipped.items())[:5]:
        log.warning("project %d: task %d not in the pool: %s", project_id, task_id, reason)
    return report


def import_annotations(
    concepts: ConceptSync, concept_name: str, project_id: int, tasks: Sequence[TaskRecord], schema: RatingSchema
) -> int:
    """Record the source project's existing annotations as the concept's ratings (each task's latest
    annotation that says positive or negative); a repeated import records nothing new."""
    session = concepts.workspace.sessions.open(concept_name)
    pool_id = concepts.state.source_tasks(project_id)
    recorded = 0
    for task in tasks:
        annotation = latest_annotation(task)
        if annotation is None or task.id not in pool_id:
            continue
        value, _ = schema.label_of(annotation.result)
        if value is None:
            continue
        recorded += session.record_label(
            pool_id[task.id],
            value,
            rater=f"{SOURCE_RATER}:{project_id}:{annotation.completed_by}",
            external_id=f"{SOURCE_RATER}:{project_id}:{annotation.id}:{annotation.updated_at}",
            created=parse_timestamp(annotation.updated_at),
        )
    return recorded


def check_adoptable(concepts: ConceptSync, slug: str, project_id: int) -> None:
    """Before any work: the project is not another concept's (or one of our own projects), and the
    concept has adopted no other project."""
    try:
        other = concepts.state.for_project(project_id)
    except UnknownProjectError:
        other = None
    if other is not None and (other.concept, other.purpose) != (slug, SOURCE):
        what = "adopted by" if other.purpose == SOURCE else f"the {other.purpose} project of"
        raise AdoptionError(
            f"Label Studio project {project_id} is already {what} concept {other.concept!r}: adopt it under that "
            "name (a project feeds one concept), or pick another project"
        )
    mine = concepts.state.for_concept(slug, SOURCE)
    if mine is not None and mine.project_id != project_id:
        raise AdoptionError(
            f"concept {slug!r} already adopted Label Studio project {mine.project_id}; "
            "adopt another project under another concept name"
        )


def source_link(concepts: ConceptSync, slug: str, project_id: int) -> ProjectLink:
    """Link the project as the concept's source (once), after :func:`check_adoptable`."""
    check_adoptable(concepts, slug, project_id)
    return concepts.state.link(ProjectLink(slug, SOURCE, project_id))


def adopt_project(
    concepts: ConceptSync,
    concept_name: str,
    project_id: int,
    positive: Sequence[str] = (),
    negative: Sequence[str] = (),
    description: str = "",
    positive_choice: str | None = None,
    negative_choice: str | None = None,
    seed_size: int = 100,
    batch_size: int = 100,
    strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    progress: bool = False,
) -> AdoptionReport:
    """Adopt the project for the concept (created if new: its name is a phrase, ``positive``/``negative``
    add more) and
    publish its companion rating project. Idempotent: a second call maps only what is new."""
    client = concepts.client
    schema: SourceSchema = parse_source_config(
        client.project_label_config(project_id), positive_choice, negative_choice
    )
    slug = slugify(concept_name)
    names = set(concepts.workspace.sessions.names())
    check_adoptable(concepts, slug, project_id)
    concept = Concept(concept_name, tuple(positive), tuple(negative), description)
    if slug not in names and concept_name not in names:  # a phrase that cannot be embedded: fail before the work
        concepts.workspace.text_encoder().encode_texts(list(concept.phrases))
    tasks = list(client.iter_tasks(project_id))
    embedding = embed_tasks(concepts, project_id, tasks, schema.image_field, retry_skipped=True, progress=progress)
    # linked only once its images are in: a failed adoption leaves no half-adopted project behind
    link = source_link(concepts, slug, project_id)
    concepts.state.set_source_choices(project_id, positive_choice, negative_choice)
    if slug not in names and concept_name not in names:
        concepts.workspace.sessions.create(concept)
    concepts.connect_backend(link)  # /predict on its tasks, and its TASKS_CREATED webhooks
    imported = import_annotations(concepts, concept_name, project_id, tasks, schema.ratings) if schema.ratings else 0
    concepts.workspace.loop(concept_name, LoopConfig(seed_size=seed_size, seed=seed)).start()
    rating = concepts.publish(
        concept_name,
        seed_size=seed_size,
        batch_size=batch_size,
        strategy=strategy,
        seed=seed,
        title=f"{concept_name} · rating ({client.project_title(project_id)})",
    )
    return AdoptionReport(slug, project_id, embedding, imported, schema.why_no_ratings, rating.project_id)


def source_config(concepts: ConceptSync, project_id: int) -> SourceSchema:
    """The adopted project's current config, read with the choice names it was adopted with."""
    return parse_source_config(
        concepts.client.project_label_config(project_id), *concepts.state.source_choices(project_id)
    )


def embed_new_tasks(concepts: ConceptSync, link: ProjectLink) -> EmbedReport:
    """Map the tasks imported into an adopted project since the last look (periodic sync, webhook)."""
    schema = source_config(concepts, link.project_id)
    tasks = list(concepts.client.iter_tasks(link.project_id))
    return embed_tasks(concepts, link.project_id, tasks, schema.image_field)
