"""Write a concept's classifier back onto its adopted project: one prediction per task.

``agile concept apply NAME`` scores every mapped task's image with the chosen model version (the
newest by default) and imports the predictions into the source project in chunks with
``import_predictions``, ``model_version`` set, so the user sorts and filters the Data Manager by
score and accepts predictions. Each chunk is recorded once Label Studio took it: an interrupted
apply resumes where it stopped, and applying the same version again writes nothing. When a newer
version is applied, the predictions of the versions we wrote before are deleted once every task has
the new one, and the project's model version points at the new one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from agile_modeling.classifier import ModelVersion
from agile_modeling.concepts import slugify
from agile_modeling.errors import AgileError
from agile_modeling.file_lock import file_lock
from sync.adoption import source_config
from sync.faults import fault_point
from sync.rounds import ConceptSync
from sync.state import SOURCE, ProjectLink

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 1000  # predictions per import request: about 1 s of Label Studio's time on SQLite


class NoSourceProjectError(AgileError):
    """The concept has no adopted project to write predictions onto."""


class UnknownModelVersionError(AgileError):
    """A model version the concept does not have."""


@dataclass(frozen=True)
class ApplyReport:
    concept: str
    project_id: int
    model_version: str
    written: int  # predictions written by this call
    already: int  # tasks that had this version's prediction already
    unmapped: int  # tasks without a pool image (skipped at adoption)
    replaced: tuple[str, ...]  # older versions whose predictions were deleted
    seconds: float

    def summary(self) -> str:
        rate = f" ({self.written / self.seconds:.0f} tasks/s)" if self.written and self.seconds > 0 else ""
        text = (
            f"{self.concept}: {self.model_version} written onto {self.written} tasks of project {self.project_id}"
            f"{rate}, {self.already} had it already, {self.unmapped} without an image in the pool"
        )
        if self.replaced:
            text += f"; removed the predictions of {', '.join(self.replaced)}"
        return text


def source_project(concepts: ConceptSync, concept_name: str) -> ProjectLink:
    link = concepts.state.for_concept(slugify(concept_name), SOURCE)
    if link is None:
        raise NoSourceProjectError(
            f"concept {concept_name!r} has no adopted Label Studio project: adopt one with "
            f"`agile concept new {concept_name!r} --from-project ID` first"
        )
    return link


def model_version(concepts: ConceptSync, concept_name: str, name: str | None = None) -> ModelVersion:
    """The concept's version called ``name``, or its newest."""
    registry = concepts.workspace.registry(slugify(concept_name))
    versions = registry.versions()
    if not versions:
        raise UnknownModelVersionError(
            f"concept {concept_name!r} has no model yet: rate its seed batch in the rating project first"
        )
    if name is None:
        return versions[-1]
    for version in versions:
        if version.name == name:
            return version
    raise UnknownModelVersionError(
        f"concept {concept_name!r} has no model version {name!r}; it has {', '.join(v.name for v in versions)}"
    )


def apply_predictions(
    concepts: ConceptSync,
    concept_name: str,
    version_name: str | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = False,
) -> ApplyReport:
    """Write ``version_name``'s (default: the newest version's) prediction onto every mapped task.

    One write-back per concept at a time, across processes (the CLI, a worker after a round): a second
    one waits, then writes only what the first left to do."""
    link = source_project(concepts, concept_name)
    with file_lock(concepts.workspace.root / "locks" / "apply" / f"{link.concept}.lock"):
        return _apply(concepts, link, concept_name, version_name, chunk, progress)


def _apply(
    concepts: ConceptSync, link: ProjectLink, concept_name: str, version_name: str | None, chunk: int, progress: bool
) -> ApplyReport:
    started = time.perf_counter()
    version = model_version(concepts, concept_name, version_name)
    client, state = concepts.client, concepts.state
    pid = link.project_id
    schema = source_config(concepts, pid)
    existing = client.task_ids(pid)
    gone = state.known_source_tasks(pid) - existing
    if gone:  # deleted in Label Studio: Label Studio would refuse a whole chunk for one of them
        state.forget_source_tasks(pid, gone)
    mapped = state.source_tasks(pid)
    _confirm_interrupted_chunks(concepts, pid, existing)
    done = state.written_with(pid, version.name)
    todo = sorted(t for t in mapped if t not in done)
    classifier = version.load()
    vectors = concepts.workspace.store().vectors()
    bar = tqdm(total=len(todo), desc=f"writing {version.name}", unit="task", disable=not progress or None)
    try:
        for start in range(0, len(todo), chunk):
            tasks = todo[start : start + chunk]
            ids = np.asarray([mapped[t] for t in tasks], dtype=np.int64)
            probs = classifier.predict_proba(vectors.take(ids).astype(np.float32))
            records = [
                {"task": task, **schema.prediction_record(float(p), version.name)} for task, p in zip(tasks, probs)
            ]
            state.record_writing(pid, tasks, version.name)
            client.import_predictions(pid, records)
            fault_point("predictions-imported")
            state.record_written(pid, tasks, version.name)
            bar.update(len(tasks))
    finally:
        bar.close()
    replaced = (
        _replace_older(concepts, link, version.name)
        if len(state.written_with(pid, version.name)) == len(mapped)
        else ()
    )
    return ApplyReport(
        link.concept,
        pid,
        version.name,
        len(todo),
        len(done),
        len(state.skipped_source_tasks(pid)),
        replaced,
        time.perf_counter() - started,
    )


def _confirm_interrupted_chunks(concepts: ConceptSync, project_id: int, existing: set[int]) -> None:
    """A chunk sent just before a write-back died, of any version, may or may not have been taken: ask
    Label Studio about each of its tasks that still exists (one chunk per version at most, after a crash
    only), so that resuming never writes a prediction twice and an older version's taken predictions
    are known, to be deleted once a newer version covers every task."""
    state = concepts.state
    for version in sorted(state.writing_versions(project_id)):
        sent = sorted(state.writing(project_id, version) & existing)
        taken = [t for t in sent if version in concepts.client.prediction_versions(t)]
        log.info("%s: %d of %d predictions of an interrupted chunk were taken", version, len(taken), len(sent))
        state.record_written(project_id, taken, version)
        state.forget_writing(project_id, version)


def _replace_older(concepts: ConceptSync, link: ProjectLink, current: str) -> tuple[str, ...]:
    """Once every task has ``current``: delete the predictions of the other versions we wrote, and
    point the project's model version at ``current`` (the Data Manager shows its scores)."""
    older = concepts.state.written_versions(link.project_id) - {current}
    for name in sorted(older):
        concepts.client.delete_model_version(link.project_id, name)
        concepts.state.forget_written(link.project_id, name)
    concepts.client.update_project(link.project_id, model_version=current)
    return tuple(sorted(older))
