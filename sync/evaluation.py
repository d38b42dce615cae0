"""Evaluation projects: the stratified evaluation set of a concept, published for the user to rate.

Its ratings are recorded under the label source ``evaluation`` and never train a model. Run it
again after new model versions: their samples are merged in and only new images are pushed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agile_modeling.concepts import slugify
from agile_modeling.errors import AgileError
from agile_modeling.evaluation import PER_STRATUM, build_evaluation_set, url_hashes
from agile_modeling.quality import MIN_EVALUATION_CLASS, pool_probabilities
from agile_modeling.session import EVALUATION
from label_config import load_config
from sync.rounds import ConceptSync
from sync.state import ProjectLink

EVALUATION_ROUND = -1  # the agile_round of evaluation tasks: they belong to no training round


@dataclass(frozen=True)
class EvaluationReport:
    project_id: int
    versions: tuple[str, ...]
    images: int
    pushed: int
    expected_positives: float = 0.0  # the newest version's probabilities summed over the set

    def warning(self) -> str | None:
        """A sentence when the set will likely hold too few positives to measure anything."""
        if self.expected_positives >= MIN_EVALUATION_CLASS:
            return None
        return (
            f"the newest model expects only about {self.expected_positives:.0f} positives among these {self.images} "
            f"images (at least {MIN_EVALUATION_CLASS} are needed to measure AUC-PR): most positives may already be "
            "training labels. Widen the strata with --per-stratum, or rate another round and run this again."
        )


def publish_evaluation(sync: ConceptSync, concept_name: str, per_stratum: int = PER_STRATUM) -> EvaluationReport:
    """Create the concept's evaluation project (once) and push its merged stratified sample."""
    session = sync.workspace.sessions.open(concept_name)
    slug = slugify(concept_name)
    versions = sync.workspace.registry(slug).versions()
    if not versions:
        raise AgileError(f"concept {concept_name!r} has no model version yet: nothing to evaluate")
    link = sync.state.for_concept(slug, EVALUATION)
    if link is None:
        project_id = sync.client.create_project(
            title=f"{session.concept.name} - evaluation"[:50],
            label_config=load_config("rating"),
            description="Evaluation set of agile-modeling: these ratings measure the models and never train one.",
            show_skip_button=False,
            show_collab_predictions=False,
        )
        link = sync.state.link(ProjectLink(slug, EVALUATION, project_id))
    store = sync.workspace.store()
    pool = store.vectors()
    hashes = url_hashes(store.uris(range(len(pool))))
    used = set(session.queued_ids())
    for source in {label.source for label in session.label_history()} - {EVALUATION}:
        used |= set(session.labels(source))
    probabilities = pool_probabilities(versions, pool)
    merged = build_evaluation_set(probabilities, hashes, np.array(sorted(used), dtype=np.int64), per_stratum)
    pushed = sync.push_images(link, merged.ids, EVALUATION_ROUND)
    expected = float(probabilities[versions[-1].name][np.asarray(merged.ids, dtype=np.int64)].sum())
    return EvaluationReport(link.project_id, tuple(v.name for v in versions), len(merged.ids), pushed, expected)


def pull_evaluation(sync: ConceptSync, concept_name: str) -> int:
    """Record the evaluation project's ratings (source ``evaluation``); 0 if there is no project."""
    link = sync.state.for_concept(slugify(concept_name), EVALUATION)
    return sync.pull(link) if link else 0
