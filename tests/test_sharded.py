"""Sharded selection merges to exactly the single-process selection."""

import numpy as np
import pytest

from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier
from agile_modeling.scoring import PoolScorer
from agile_modeling.selection import strategy_by_name
from agile_modeling.sharded import ShardCandidates, merge_candidates, positives_wanted, shard_candidates
from agile_modeling.store.embedding_store import PoolView


@pytest.fixture(scope="module")
def pool_and_model():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 64))
    x = centres[rng.integers(0, 8, 12_000)] + 0.5 * rng.normal(size=(12_000, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    x[5000:5010] = x[100]  # exact duplicates: ties that only the id can break
    y = (x[:400, 0] > 0).astype(int)
    clf = MLPClassifier(DEFAULT_RECIPE.with_(epochs=3, epoch_size=1024)).fit(x[:400].astype(np.float32), y)
    return x, clf


def single_process(x, clf, strategy, k, exclude):
    view = PoolView([x], x.shape[1])
    scorer = PoolScorer(clf)
    return strategy_by_name(strategy).select(scorer.approximate_logits(view), k, exclude,
                                             lambda ids: scorer.exact_logits(view, ids))


@pytest.mark.parametrize("strategy", ["margin", "margin+positive"])
@pytest.mark.parametrize("bounds", [(0, 12_000), (0, 5005, 12_000), (0, 1000, 3000, 7000, 11_999, 12_000)])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_merge_equals_single_process(pool_and_model, strategy, bounds, k):
    x, clf = pool_and_model
    exclude = np.arange(0, 12_000, 7)
    k_pos = positives_wanted(strategy, k)
    parts = [shard_candidates(clf, x[a:b], a, k, k_pos, exclude) for a, b in zip(bounds[:-1], bounds[1:])]
    parts = [ShardCandidates.from_dict(p.as_dict()) for p in parts]  # as they travel between processes
    merged = merge_candidates(parts, k, k_pos)
    assert merged.tolist() == single_process(x, clf, strategy, k, exclude).tolist()
    assert not set(merged.tolist()) & set(exclude.tolist())


def test_small_shards_and_unknown_strategies(pool_and_model):
    x, clf = pool_and_model
    parts = [shard_candidates(clf, x[i:i + 3], i, 10, 0, []) for i in range(0, 9, 3)]
    assert len(merge_candidates(parts, 10, 0)) == 9  # fewer eligible images than k
    assert merge_candidates([], 5, 2).tolist() == []
    with pytest.raises(ValueError, match="sharded selection supports"):
        positives_wanted("random", 10)
