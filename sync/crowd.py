"""Crowd projects: the concept's batches rated by several annotators, decided by majority vote.

The crowd project gets the same images as the user's project (every round so far; run it again to
add new rounds) and instructions built from the concept's description, the user's notes and
examples the user rated. Votes are pulled from the server, each annotator's latest vote counts
once, and the majority is recorded under the label source ``crowd``; ties and tasks with too few
votes are reported and recorded as nothing.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

from agile_modeling.concepts import slugify
from agile_modeling.crowd import (
    DECIDED,
    TIE,
    TOO_FEW,
    RaterAgreement,
    Vote,
    crowd_instructions,
    majority_vote,
    rater_agreement,
)
from agile_modeling.errors import AgileError
from agile_modeling.session import USER, WITHDRAWN
from label_config import load_config
from sync.rounds import IMAGE_ID, ROUND, ConceptSync, parse_timestamp
from sync.state import CROWD, ProjectLink

ANNOTATORS = 3


@dataclass(frozen=True)
class CrowdReport:
    project_id: int
    tasks: int
    decided: int
    ties: int
    too_few: int
    changed: int
    agreement: tuple[RaterAgreement, ...]

    def summary(self) -> str:
        lines = [
            f"crowd project {self.project_id}: {self.tasks} tasks; majority for {self.decided}, "
            f"{self.ties} ties, {self.too_few} with too few votes; {self.changed} crowd labels changed"
        ]
        for a in self.agreement:
            user = f"{a.with_user:.0%} with the user on {a.user_overlap}" if a.with_user is not None else "-"
            majority = f"{a.with_majority:.0%}" if a.with_majority is not None else "-"
            lines.append(f"  annotator {a.rater}: {a.votes} votes, agrees with the majority {majority}, {user}")
        return "\n".join(lines)


def _instructions(sync: ConceptSync, concept_name: str) -> str:
    session = sync.workspace.sessions.open(concept_name)
    latest = session.latest_labels(USER)
    notes = [label.note for label in latest.values() if label.note and label.value != WITHDRAWN]
    positives = [i for i, label in latest.items() if label.value == 1][:6]
    negatives = [i for i, label in latest.items() if label.value == 0][:6]
    return crowd_instructions(session.concept, notes[:10], sync.image_urls(positives), sync.image_urls(negatives))


def publish_crowd(sync: ConceptSync, concept_name: str, annotators: int = ANNOTATORS) -> tuple[int, int]:
    """Create the crowd project (once; instructions refreshed on later calls) and push every batch
    of the concept so far. Returns ``(project id, tasks pushed)``."""
    session = sync.workspace.sessions.open(concept_name)
    slug = slugify(concept_name)
    link = sync.state.for_concept(slug, CROWD)
    instructions = _instructions(sync, concept_name)
    if link is None:
        project_id = sync.client.create_project(
            title=f"{session.concept.name} - crowd"[:50],
            label_config=load_config("rating"),
            description=f"Crowd ratings of agile-modeling concept {session.concept.name!r}",
            expert_instruction=instructions,
            show_instruction=True,
            maximum_annotations=annotators,
            show_skip_button=False,
            show_collab_predictions=False,
        )
        link = sync.state.link(ProjectLink(slug, CROWD, project_id, annotators=annotators))
    else:
        sync.client.update_project(link.project_id, expert_instruction=instructions)
    pushed = 0
    for info in session.rounds():
        pushed += sync.push_images(link, list(info.batch), info.round)
    return link.project_id, pushed


def pull_crowd(sync: ConceptSync, concept_name: str) -> CrowdReport:
    """Majority vote of the crowd project's annotations, recorded as ``crowd`` labels."""
    slug = slugify(concept_name)
    link = sync.state.for_concept(slug, CROWD)
    if link is None:
        raise AgileError(
            f"concept {concept_name!r} has no crowd project: create it with `agile concept crowd {concept_name!r}`"
        )
    session = sync.workspace.sessions.open(concept_name)
    tasks = list(sync.client.iter_tasks(link.project_id))
    schema = sync.schema_of(link)
    votes, task_of = [], {}
    for task in tasks:
        image_id = task.data.get(IMAGE_ID)
        if not isinstance(image_id, int):
            continue
        task_of[image_id] = task
        for annotation in task.annotations:
            value, _ = schema.label_of(annotation.result)
            if value is not None and not annotation.was_cancelled:
                votes.append(
                    Vote(image_id, str(annotation.completed_by), value, parse_timestamp(annotation.updated_at) or 0.0)
                )
    results = majority_vote(votes, min_votes=link.annotators or 1)
    votes_of: dict[int, list[Vote]] = defaultdict(list)
    for vote in votes:
        votes_of[vote.image_id].append(vote)
    changed = 0
    with sync.concept_lock(slug):
        current = session.labels(CROWD)
        for image_id, result in results.items():
            if result.status == DECIDED and result.value is not None:
                digest = hashlib.sha256(
                    repr(sorted((v.rater, v.value, v.time) for v in votes_of[image_id])).encode()
                ).hexdigest()[:12]
                if current.get(image_id) != result.value:
                    changed += session.record_label(
                        image_id,
                        result.value,
                        rater="crowd-majority",
                        source=CROWD,
                        round_index=task_of[image_id].data.get(ROUND),
                        external_id=f"crowd:{task_of[image_id].id}:{digest}",
                    )
            elif image_id in current:
                changed += session.withdraw_label(
                    image_id,
                    rater="crowd-majority",
                    source=CROWD,
                    external_id=f"crowd:withdrawn:{task_of[image_id].id}:{len(votes)}",
                )
    statuses = [r.status for r in results.values()]
    agreement = rater_agreement(votes, results, session.labels(USER))
    return CrowdReport(
        link.project_id,
        len(tasks),
        statuses.count(DECIDED),
        statuses.count(TIE),
        statuses.count(TOO_FEW) + (len(task_of) - len(results)),
        changed,
        tuple(agreement),
    )
