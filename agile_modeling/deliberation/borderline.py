"""Borderline batches (section 3.2 and appendix C): retrieve for borderline queries, remove near
duplicates, group by sparse codes (dictionary learning) into overlapping clusters, pick a cluster by
the users' past interactions, then mine one coherent ambiguity (adaptive DBSCAN over ambiguity
summaries) for a batch of about 5 images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import DBSCAN
from sklearn.decomposition import MiniBatchDictionaryLearning
from sklearn.exceptions import ConvergenceWarning

#: Appendix C: Score = 0.5 mistake_rate + 0.3 feedback_rate + 0.15 exploration_value + 0.05 diversity_rate
SCORE_WEIGHTS = {"mistake_rate": 0.5, "feedback_rate": 0.3, "exploration_value": 0.15, "diversity_rate": 0.05}


@dataclass(frozen=True)
class BorderlineConfig:
    """Parameters of appendix C, and of the steps the paper leaves open."""

    per_query: int = 60  # |C_j| ~ 50-100 images per borderline query
    duplicate_cosine: float = 0.97  # two images this similar are one for the user
    atoms: int = 12  # K, the dictionary size
    code_alpha: float = 0.5  # sparsity of the codes
    membership: float = 0.5  # an image joins every cluster whose code is >= this fraction of its largest
    min_cluster: int = 5
    sample: int = 25  # candidates summarised per round
    batch_size: int = 5
    eps_min: float = 0.2
    eps_max: float = 0.8
    eps_step: float = 0.01
    selection: str = "score"  # "score" (appendix C) or "ucb" (eq. 8)
    ucb_beta: float = 1.0
    seed: int = 0


def remove_near_duplicates(
    ids: NDArray[np.integer[Any]], x: NDArray[np.floating[Any]], threshold: float
) -> NDArray[np.int64]:
    """Positions into ``ids`` ``(n,)`` to keep: greedily, the first of every group of images whose
    embeddings ``x`` ``(n, d)`` (L2-normalised) have cosine >= ``threshold``; repeated ids count once."""
    keep: list[int] = []
    seen: set[int] = set()
    for i in range(len(ids)):
        if int(ids[i]) in seen:
            continue
        if keep and float((x[keep] @ x[i]).max()) >= threshold:
            continue
        keep.append(i)
        seen.add(int(ids[i]))
    return np.array(keep, dtype=np.int64)


def sparse_clusters(x: NDArray[np.floating[Any]], config: BorderlineConfig) -> list[NDArray[np.intp]]:
    """Overlapping clusters of images ``x`` ``(n, d)`` from sparse codes.

    Learns a dictionary ``W`` ``(K, d)`` with codes ``alpha`` ``(n, K)`` so that
    ``x - mean ~ alpha @ W`` (scikit-learn's mini-batch dictionary learning, non-negative codes), then
    puts each image in every atom's cluster where its code is at least ``membership`` times its
    largest code. Returns the clusters (positions into ``x``) of at least ``min_cluster`` images.
    """
    n = len(x)
    if n < config.min_cluster:
        return []
    k = max(2, min(config.atoms, n // config.min_cluster))
    centred = np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(axis=0)
    learner = MiniBatchDictionaryLearning(
        n_components=k,
        alpha=config.code_alpha,
        batch_size=min(64, n),
        max_iter=50,
        positive_code=True,
        fit_algorithm="cd",
        transform_algorithm="lasso_cd",
        transform_alpha=config.code_alpha * 0.1,
        transform_max_iter=5000,
        random_state=config.seed,
    )
    with warnings.catch_warnings():
        # the lasso codes only decide cluster membership (a ratio to each image's largest code);
        # coordinate descent stopping short of a 1e-9 duality gap does not change that
        warnings.simplefilter("ignore", ConvergenceWarning)
        codes = learner.fit(centred).transform(centred)
    top = codes.max(axis=1, keepdims=True)
    member = (codes > 0) & (codes >= config.membership * np.maximum(top, 1e-12))
    return [np.flatnonzero(member[:, j]) for j in range(k) if member[:, j].sum() >= config.min_cluster]


@dataclass(frozen=True)
class ClusterStats:
    """What users did with one cluster's images so far (appendix C's four heuristics' inputs)."""

    size: int
    explored: int  # labeled images of the cluster
    mistakes: int  # labeled images where the user disagreed with the definition shown
    feedback: int  # labeled images with a written comment
    ratings: tuple[int, ...]  # the users' labels of the explored images

    @property
    def mistake_rate(self) -> float:
        return self.mistakes / self.explored if self.explored else 0.0

    @property
    def feedback_rate(self) -> float:
        return self.feedback / self.explored if self.explored else 0.0

    @property
    def exploration_value(self) -> float:
        return 1.0 - self.explored / self.size if self.size else 0.0

    @property
    def diversity_rate(self) -> float:
        return float(np.std(self.ratings)) if self.ratings else 0.0


def cluster_stats(
    members: Sequence[int], labels: Mapping[int, int], shown: Mapping[int, int], comments: Mapping[int, str]
) -> ClusterStats:
    """Stats of a cluster of image ids ``members``, from the users' ``labels`` ``{id: 0|1}``, the
    decisions ``shown`` with each image ``{id: 0|1}`` and the ``comments`` ``{id: text}``."""
    explored = [i for i in members if i in labels]
    return ClusterStats(
        size=len(members),
        explored=len(explored),
        mistakes=sum(1 for i in explored if i in shown and labels[i] != shown[i]),
        feedback=sum(1 for i in explored if comments.get(i, "").strip()),
        ratings=tuple(int(labels[i]) for i in explored),
    )


def cluster_score(stats: ClusterStats, weights: Mapping[str, float] = SCORE_WEIGHTS) -> float:
    """Appendix C's weighted score of a cluster."""
    score: float = sum(w * getattr(stats, name) for name, w in weights.items())  # the float properties above
    return score


def ucb_score(stats: ClusterStats, total_explored: int, beta: float) -> float:
    """Eq. 8: mean reward (the share of explored images that were mistakes or drew feedback) plus
    ``beta * sqrt(log t / n(m))``; an unexplored cluster is tried first."""
    if stats.explored == 0:
        return math.inf
    reward = (stats.mistakes + stats.feedback) / (2 * stats.explored)
    return reward + beta * math.sqrt(math.log(max(total_explored, 2)) / stats.explored)


def choose_cluster(stats: Sequence[ClusterStats], config: BorderlineConfig) -> int:
    """Index of the cluster to explore next (ties: the lowest index). Clusters with no unseen image are skipped."""
    total = sum(s.explored for s in stats)
    best, best_score = -1, -math.inf
    for m, s in enumerate(stats):
        if s.explored >= s.size:
            continue
        score = ucb_score(s, total, config.ucb_beta) if config.selection == "ucb" else cluster_score(s)
        if score > best_score:
            best, best_score = m, score
    if best < 0:
        raise ValueError("every cluster is fully explored")
    return best


def adaptive_dbscan(
    embeddings: NDArray[np.floating[Any]],
    k: int = 5,
    eps_min: float = 0.2,
    eps_max: float = 0.8,
    eps_step: float = 0.01,
) -> tuple[NDArray[np.signedinteger[Any]], float]:
    """Algorithm 1 of appendix C: grow DBSCAN's radius (cosine distance) from ``eps_min`` by
    ``eps_step`` until some cluster has at least ``k`` members, and return it (positions into
    ``embeddings`` ``(n, d')``) with the radius. If several reach ``k`` at that radius the largest
    wins (ties: the first). If none does by ``eps_max``, returns the largest cluster found then
    (possibly empty)."""
    n_steps = int(round((eps_max - eps_min) / eps_step))
    best: NDArray[np.signedinteger[Any]] = np.zeros(0, dtype=np.int64)
    for step in range(n_steps + 1):
        eps = eps_min + step * eps_step
        labels = DBSCAN(eps=eps, min_samples=k, metric="cosine").fit_predict(embeddings)
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels[labels >= 0])]
        if not groups:
            continue
        largest = max(groups, key=len)  # max keeps the first of equal sizes
        if len(largest) >= k:
            return largest, eps
        best = largest
    return best, eps_max


def central_members(
    vectors: NDArray[np.floating[Any]], members: NDArray[np.signedinteger[Any]], size: int
) -> NDArray[np.signedinteger[Any]]:
    """The ``size`` members closest (cosine) to their cluster's mean, most central first."""
    centre = vectors[members].mean(axis=0)
    centre /= max(np.linalg.norm(centre), 1e-12)
    order = np.argsort(-(vectors[members] @ centre), kind="stable")
    central: NDArray[np.signedinteger[Any]] = members[order[:size]]  # numpy's stubs: Any
    return central
