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
    return strategy_by_name(strategy).select(
        scorer.approximate_logits(view), k, exclude, lambda ids: scorer.exact_logits(view, ids)
    )


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
    parts = [shard_candidates(clf, x[i : i + 3], i, 10, 0, []) for i in range(0, 9, 3)]
    assert len(merge_candidates(parts, 10, 0)) == 9  # fewer eligible images than k
    assert merge_candidates([], 5, 2).tolist() == []
    with pytest.raises(ValueError, match=r"sharded selection \(AGILE_SHARDED_SCORING\) supports"):
        positives_wanted("random", 10)


def test_selection_split_records_what_next_batch_would(tmp_path, pool_and_model):
    """The core's request / select / record steps (what a chord's callback uses) give the batch that
    next_batch gives, and recording is idempotent per round."""
    from agile_modeling.classifier import ModelRegistry
    from agile_modeling.concepts import Concept
    from agile_modeling.loop import AgileLoop, LoopConfig
    from agile_modeling.session import SessionStore

    x, clf = pool_and_model
    sessions = SessionStore(tmp_path / "sessions.sqlite")
    sessions.create(Concept("thing"))
    # no text encoder nor index: only seeding and exploring strategies need them
    loop = AgileLoop(
        sessions.open("thing"),
        PoolView([x], x.shape[1]),
        None,
        None,
        ModelRegistry(tmp_path / "models", "thing"),
        LoopConfig(strategy="margin"),
    )
    loop.session.start_round(0, "seed", list(range(20)))
    assert loop.selection_request() is None  # the seed batch is still open
    loop.session.record_labels((i, int(x[i, 0] > 0)) for i in range(20))
    request = loop.selection_request(10)
    assert (request.round, request.k) == (1, 10) and request.exclude.tolist() == list(range(20))
    ids = loop.select(clf, request)
    assert ids.tolist() == single_process(x, clf, "margin", 10, request.exclude).tolist()
    assert loop.record_batch(request, ids) == ids.tolist()
    assert loop.record_batch(request, ids[::-1]) == ids.tolist()  # a second record keeps the first
    assert loop.next_batch(clf) == ids.tolist()  # round 1 is open: the same batch


def test_a_near_tie_closer_than_float32_across_two_shards_merges_as_the_single_process(pool_and_model):
    """Two rows whose exact logits differ by less than float32 resolution, one per shard, the better
    one with the larger id: float32 keys would call it a tie and take the smaller id."""
    import json

    x, clf = pool_and_model
    x = x[:3000].copy()
    scorer = PoolScorer(clf)
    exact = scorer.exact_rows(x)
    top = int(np.argmax(exact))  # the best positive: a large logit, so a coarse float32 grid
    pair = None
    for j in np.argsort(np.abs(x[top].astype(np.float64))):
        low, high = x[top].copy(), x[top].copy()
        low[j], high[j] = 0.0, np.float16(2.0**-24)  # the smallest float16 step
        a, b = scorer.exact_rows(np.stack([low, high]))
        if a != b and np.float32(a) == np.float32(b):
            pair = (low, high) if b > a else (high, low)  # (worse, better) as positives
            break
    assert pair is not None, "no sub-float32 near-tie found"
    x[top] = pair[0]
    pool = np.concatenate([x, pair[1][None]])  # the better twin: the largest id, in the second shard
    better, worse = len(pool) - 1, top
    exclude = np.array([], dtype=np.int64)
    for k, k_pos in ((2, 1), (4, 2)):
        parts = [shard_candidates(clf, pool[a:b], a, k, k_pos, exclude) for a, b in ((0, 1500), (1500, len(pool)))]
        travelled = [ShardCandidates.from_dict(json.loads(json.dumps(p.as_dict()))) for p in parts]
        assert all(t.positive_keys.dtype == np.float64 for t in travelled)
        assert [t.positive_keys.tolist() for t in travelled] == [
            p.positive_keys.tolist() for p in parts
        ]  # exact via JSON
        merged = merge_candidates(travelled, k, k_pos).tolist()
        assert merged == single_process(pool, clf, "margin+positive", k, exclude).tolist()
        assert merged[:2][:k_pos] == [better, worse][:k_pos]
