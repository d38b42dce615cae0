"""The fast path (bf16 chunks + fp32 frontier) must select exactly what plain fp32 scoring selects."""

import numpy as np
import pytest

from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier
from agile_modeling.scoring import PoolScorer, reference_logits
from agile_modeling.selection import MarginPositiveMining, MarginSelection, strategy_by_name
from agile_modeling.store import PoolView


def reference_margin(logits, k, exclude):
    key = np.abs(logits).astype(np.float64)
    key[exclude] = np.inf
    return np.lexsort((np.arange(len(key)), key))[:k]


def reference_positive_mining(logits, k, exclude):
    key = -logits.astype(np.float64)
    key[exclude] = np.inf
    pos = np.lexsort((np.arange(len(key)), key))[: k // 2]
    return np.concatenate([pos, reference_margin(logits, k - len(pos), np.concatenate([exclude, pos]))])


@pytest.fixture(scope="module")
def real_pool_and_model(shared_data):
    from agile_modeling.simulate import load_suite

    spec = next(s for s in load_suite() if s.title == "small dog breeds")
    truth = spec.ground_truth(shared_data.pool)
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.choice(np.flatnonzero(truth), 40, replace=False), rng.choice(np.flatnonzero(~truth), 160, replace=False)])
    x = shared_data.pool.x
    clf = MLPClassifier(DEFAULT_RECIPE.with_(epochs=3, epoch_size=2048)).fit(x[train].astype(np.float32), truth[train].astype(int), x[rng.choice(len(x), 3000)].astype(np.float32))
    # a pool of real rows in several shards, large enough to need many chunks
    view = PoolView([x[:10000], x[10000:25000], x[25000:]], 512)
    return view, clf, train


def test_fast_logits_are_close_to_fp32(real_pool_and_model):
    view, clf, _ = real_pool_and_model
    fast = PoolScorer(clf, chunk_rows=4096).approximate_logits(view)
    ref = reference_logits(clf, view)
    assert fast.shape == ref.shape == (len(view),)
    assert np.max(np.abs(fast - ref)) < 0.1 * (1 + np.abs(ref).max())
    np.testing.assert_allclose(PoolScorer(clf).exact_logits(view, [5, 30000]), ref[[5, 30000]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [10, 100, 400])
def test_fast_margin_selection_equals_plain_fp32_selection(real_pool_and_model, k):
    view, clf, train = real_pool_and_model
    scorer = PoolScorer(clf, chunk_rows=4096)
    chosen = MarginSelection().select(scorer.approximate_logits(view), k, train, lambda ids: scorer.exact_logits(view, ids))
    expected = reference_margin(reference_logits(clf, view), k, train)
    np.testing.assert_array_equal(chosen, expected)
    assert not set(chosen) & set(train)


def test_fast_positive_mining_equals_plain_fp32(real_pool_and_model):
    view, clf, train = real_pool_and_model
    scorer = PoolScorer(clf, chunk_rows=4096)
    chosen = MarginPositiveMining().select(scorer.approximate_logits(view), 100, train, lambda ids: scorer.exact_logits(view, ids))
    np.testing.assert_array_equal(chosen, reference_positive_mining(reference_logits(clf, view), 100, train))
    assert len(set(chosen)) == 100


def test_bf16_alone_would_not_be_exact_here(real_pool_and_model):
    """The frontier re-scoring is doing work: bf16 ranks alone differ from fp32 on this pool."""
    view, clf, train = real_pool_and_model
    approx = PoolScorer(clf, chunk_rows=4096).approximate_logits(view)
    assert not np.array_equal(reference_margin(approx, 400, train), reference_margin(reference_logits(clf, view), 400, train))


def test_selection_widens_its_frontier_when_the_certificate_fails():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=5000).astype(np.float32)
    approx = exact + rng.normal(scale=0.5, size=5000).astype(np.float32)  # very noisy approximation
    chosen = MarginSelection().select(approx, 20, np.array([], dtype=np.int64), lambda ids: exact[ids])
    np.testing.assert_array_equal(chosen, reference_margin(exact, 20, np.array([], dtype=np.int64)))


def test_small_pools_and_unknown_strategies():
    exact = np.array([3.0, -0.1, 0.2, 5.0], np.float32)
    assert list(MarginSelection().select(exact, 10, np.array([1]), lambda ids: exact[ids])) == [2, 0, 3]
    assert strategy_by_name("margin+positive").name == "margin+positive"
    with pytest.raises(ValueError, match="unknown selection strategy"):
        strategy_by_name("entropy-magic")
