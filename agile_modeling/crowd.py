"""Crowd ratings: per-image majority vote, agreement per annotator, instructions for the crowd.

The paper (section 4.3.2, appendix B) has 3 raters per image and takes the majority. A labeling
tool does not stop an annotator from rating an image twice, or a task from getting more or fewer
votes than planned: each annotator's latest vote counts once, and images without a clear majority
(a tie, or fewer votes than required) are reported rather than guessed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agile_modeling.concepts import Concept

DECIDED, TIE, TOO_FEW = "decided", "tie", "too few votes"


@dataclass(frozen=True)
class Vote:
    """One annotator's rating of one image at one time (1 positive, 0 negative)."""

    image_id: int
    rater: str
    value: int
    time: float = 0.0


@dataclass(frozen=True)
class VoteResult:
    """The outcome for one image: ``value`` is None unless ``status`` is :data:`DECIDED`."""

    image_id: int
    value: int | None
    positives: int
    negatives: int
    status: str

    @property
    def votes(self) -> int:
        return self.positives + self.negatives


def latest_votes(votes: Iterable[Vote]) -> dict[int, dict[str, int]]:
    """``{image_id: {rater: value}}``, keeping each rater's most recent vote per image."""
    latest: dict[tuple[int, str], Vote] = {}
    for vote in votes:
        key = (vote.image_id, vote.rater)
        if key not in latest or vote.time >= latest[key].time:
            latest[key] = vote
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for (image_id, rater), vote in latest.items():
        out[image_id][rater] = int(vote.value)
    return dict(out)


def majority_vote(votes: Iterable[Vote], min_votes: int = 3) -> dict[int, VoteResult]:
    """Majority of each image's distinct raters (their latest votes).

    Args:
        votes: every vote, repeats and changes of mind included.
        min_votes: fewer distinct raters than this gives :data:`TOO_FEW` (3 in the paper).
    """
    results = {}
    for image_id, by_rater in latest_votes(votes).items():
        pos = sum(by_rater.values())
        neg = len(by_rater) - pos
        if len(by_rater) < min_votes:
            results[image_id] = VoteResult(image_id, None, pos, neg, TOO_FEW)
        elif pos == neg:
            results[image_id] = VoteResult(image_id, None, pos, neg, TIE)
        else:
            results[image_id] = VoteResult(image_id, int(pos > neg), pos, neg, DECIDED)
    return results


@dataclass(frozen=True)
class RaterAgreement:
    """How often one annotator agreed with the crowd's majority and with the concept's owner."""

    rater: str
    votes: int
    with_majority: float | None  # over decided images they voted on
    with_user: float | None  # over images the user also rated
    user_overlap: int


def rater_agreement(
    votes: Iterable[Vote], results: Mapping[int, VoteResult], user_labels: Mapping[int, int] | None = None
) -> list[RaterAgreement]:
    """Per-annotator agreement with the majority (and with the user's labels where they overlap)."""
    user_labels = user_labels or {}
    per_rater: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for image_id, by_rater in latest_votes(votes).items():
        for rater, value in by_rater.items():
            per_rater[rater].append((image_id, value))
    out = []
    for rater, items in sorted(per_rater.items()):
        decided = [(i, v) for i, v in items if results.get(i) and results[i].status == DECIDED]
        overlap = [(i, v) for i, v in items if i in user_labels]
        out.append(
            RaterAgreement(
                rater,
                len(items),
                sum(v == results[i].value for i, v in decided) / len(decided) if decided else None,
                sum(v == user_labels[i] for i, v in overlap) / len(overlap) if overlap else None,
                len(overlap),
            )
        )
    return out


def crowd_instructions(
    concept: Concept,
    notes: Sequence[str] = (),
    positive_examples: Sequence[str] = (),
    negative_examples: Sequence[str] = (),
    max_examples: int = 6,
) -> str:
    """HTML instructions for crowd raters, from what the concept's owner said and rated.

    Args:
        concept: name, description, phrases.
        notes: the owner's reasoning from the rating-note config (most useful first).
        positive_examples, negative_examples: image URLs the owner rated.
    """
    from html import escape

    parts = [f"<h3>Is this image an example of &ldquo;{escape(concept.name)}&rdquo;?</h3>"]
    if concept.description:
        parts.append(f"<p>{escape(concept.description)}</p>")
    if concept.positives:
        parts.append("<p><b>Includes:</b> " + escape(", ".join(concept.positives)) + "</p>")
    if concept.negatives:
        parts.append("<p><b>Does not include:</b> " + escape(", ".join(concept.negatives)) + "</p>")
    if notes:
        parts.append(
            "<p><b>In the words of the person who defined it:</b></p><ul>"
            + "".join(f"<li>{escape(n)}</li>" for n in notes)
            + "</ul>"
        )
    for title, urls in (("Positive examples", positive_examples), ("Negative examples", negative_examples)):
        if urls:
            parts.append(
                f"<p><b>{title}:</b></p><p>"
                + "".join(
                    f'<img src="{escape(u, quote=True)}" width="120" style="margin:2px"/>' for u in urls[:max_examples]
                )
                + "</p>"
            )
    parts.append(
        "<p>Answer <b>Positive</b> or <b>Negative</b> for every image; when unsure, "
        "choose what the definition above says.</p>"
    )
    return "\n".join(parts)
