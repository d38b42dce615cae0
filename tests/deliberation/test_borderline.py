"""Borderline batches: near-duplicates, sparse clusters, appendix C's score, UCB, adaptive DBSCAN."""

import math

import numpy as np
import pytest

from agile_modeling.deliberation.borderline import (
    BorderlineConfig,
    ClusterStats,
    adaptive_dbscan,
    central_members,
    choose_cluster,
    cluster_score,
    cluster_stats,
    remove_near_duplicates,
    sparse_clusters,
    ucb_score,
)


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_adaptive_dbscan_finds_the_k_cluster_among_noise():
    rng = np.random.default_rng(0)
    centre = unit(rng.normal(size=16))
    tight = unit(centre + 0.15 * rng.normal(size=(6, 16)))  # cosine distance ~0.2 to each other
    noise = unit(rng.normal(size=(19, 16)))  # random directions: distance ~1
    emb = np.concatenate([noise[:10], tight, noise[10:]])
    members, eps = adaptive_dbscan(emb, k=5)
    assert len(members) >= 5 and set(members.tolist()) <= set(range(10, 16))  # no noise point joins
    assert 0.2 <= eps <= 0.8
    # the radius grew from 0.2 only as far as needed: one step less finds no 5-cluster
    smaller, _ = adaptive_dbscan(emb, k=5, eps_min=0.2, eps_max=eps - 0.01)
    assert len(smaller) < 5


def test_adaptive_dbscan_returns_what_it_has_when_no_cluster_is_big_enough():
    emb = unit(np.eye(8))  # orthogonal: cosine distance 1 everywhere
    members, eps = adaptive_dbscan(emb, k=5)
    assert len(members) == 0 and eps == pytest.approx(0.8)


def test_cluster_score_follows_appendix_c():
    s = ClusterStats(size=20, explored=10, mistakes=4, feedback=5, ratings=(1,) * 5 + (0,) * 5)
    assert s.mistake_rate == 0.4 and s.feedback_rate == 0.5 and s.exploration_value == 0.5 and s.diversity_rate == 0.5
    assert cluster_score(s) == pytest.approx(0.5 * 0.4 + 0.3 * 0.5 + 0.15 * 0.5 + 0.05 * 0.5)
    fresh = ClusterStats(size=20, explored=0, mistakes=0, feedback=0, ratings=())
    assert cluster_score(fresh) == pytest.approx(0.15)


def test_cluster_stats_from_labels_shown_decisions_and_comments():
    s = cluster_stats([1, 2, 3, 4], labels={1: 1, 2: 0, 3: 1}, shown={1: 1, 2: 1, 3: 0}, comments={2: "no", 3: " "})
    assert (s.size, s.explored, s.mistakes, s.feedback, s.ratings) == (4, 3, 2, 1, (1, 0, 1))


def test_choose_cluster_prefers_mistakes_then_skips_exhausted_ones():
    solved = ClusterStats(10, 5, 0, 0, (1,) * 5)
    contested = ClusterStats(10, 5, 3, 3, (1, 0, 1, 0, 1))
    exhausted = ClusterStats(5, 5, 5, 5, (1, 0, 1, 0, 1))
    assert choose_cluster([solved, contested, exhausted], BorderlineConfig()) == 1
    with pytest.raises(ValueError, match="fully explored"):
        choose_cluster([exhausted], BorderlineConfig())


def test_ucb_tries_unexplored_clusters_first_then_balances():
    cfg = BorderlineConfig(selection="ucb", ucb_beta=1.0)
    fresh = ClusterStats(10, 0, 0, 0, ())
    assert ucb_score(fresh, 10, 1.0) == math.inf
    good = ClusterStats(10, 4, 4, 4, (1,) * 4)  # reward 1
    poor = ClusterStats(10, 4, 0, 0, (1,) * 4)  # reward 0
    assert ucb_score(good, 8, 1.0) == pytest.approx(1 + math.sqrt(math.log(8) / 4))
    assert choose_cluster([poor, good], cfg) == 1 and choose_cluster([poor, good, fresh], cfg) == 2


def test_near_duplicates_and_repeated_ids_count_once():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(3, 8)))
    x = np.concatenate([base, unit(base[:1] + 1e-3), base[1:2]])
    ids = np.array([10, 11, 12, 13, 11])
    assert remove_near_duplicates(ids, x, 0.97).tolist() == [0, 1, 2]


def test_sparse_clusters_recover_groups_and_may_overlap():
    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(3, 32)))
    x = unit(np.concatenate([c + 0.05 * rng.normal(size=(20, 32)) for c in centres]))
    clusters = sparse_clusters(x, BorderlineConfig(atoms=3, min_cluster=5))
    assert clusters and all(len(c) >= 5 for c in clusters)
    groups = [set(range(20 * g, 20 * g + 20)) for g in range(3)]
    for c in clusters:  # each cluster is mostly one group
        assert max(len(set(c.tolist()) & g) for g in groups) >= 0.8 * len(c)
    assert sparse_clusters(x[:4], BorderlineConfig()) == []


def test_central_members_are_nearest_the_mean():
    emb = unit([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1]])
    assert central_members(emb, np.array([0, 1, 2]), 1).tolist() == [1]
