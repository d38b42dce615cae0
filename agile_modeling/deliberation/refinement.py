"""Concept refinement (section 3.2, appendix C): candidates from the user's feedback, then the
two-stage greedy choice -- the 3 best by F1 on the current borderline batch, of which the best by
F1 on every label so far.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from sklearn.metrics import f1_score

from agile_modeling.deliberation.providers.base import Candidate

CANDIDATES = 5
SHORTLIST = 3


@dataclass(frozen=True)
class ScoredCandidate:
    candidate: Candidate
    f1_batch: float
    f1_all: float
    shortlisted: bool


def f1_on(decide: Callable[[Sequence[int]], Mapping[int, int]], labels: Mapping[int, int]) -> tuple[float, float]:
    """``(F1, accuracy)`` of the decisions ``decide(ids) -> {id: 0|1}`` against ``labels`` ``{id: 0|1}``."""
    ids = sorted(labels)
    if not ids:
        return 0.0, 0.0
    decided = decide(ids)
    y, p = np.array([labels[i] for i in ids]), np.array([decided[i] for i in ids])
    return float(f1_score(y, p, zero_division=0)), float((y == p).mean())


def choose_candidate(
    candidates: Sequence[Candidate],
    decide: Callable[[Candidate, Sequence[int]], Mapping[int, int]],
    batch_labels: Mapping[int, int],
    all_labels: Mapping[int, int],
    shortlist: int = SHORTLIST,
) -> tuple[int, list[ScoredCandidate]]:
    """The paper's greedy two-stage rule.

    Args:
        candidates: the definitions proposed this round.
        decide: ``decide(candidate, ids) -> {id: 0|1}``, the candidate's classifier.
        batch_labels: the user's labels of the current borderline batch ``B_t``.
        all_labels: every label so far ``L_t`` (``B_t`` included).

    Returns:
        the index of the chosen candidate, and every candidate's scores. F1 ties (a batch the user
        rated all out of scope gives every candidate F1 0) are broken by accuracy, then by the
        earlier candidate (providers list their most direct reading of the feedback first).
    """
    if not candidates:
        raise ValueError("no candidate to choose from")
    on_batch = [f1_on(partial(decide, c), batch_labels) for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: (-on_batch[i][0], -on_batch[i][1], i))
    kept = set(order[:shortlist])
    on_all = {i: f1_on(partial(decide, candidates[i]), all_labels) for i in kept}
    chosen = min(kept, key=lambda i: (-on_all[i][0], -on_all[i][1], i))
    return chosen, [
        ScoredCandidate(c, on_batch[i][0], on_all[i][0] if i in kept else float("nan"), i in kept)
        for i, c in enumerate(candidates)
    ]
