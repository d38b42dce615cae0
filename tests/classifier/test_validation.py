import numpy as np

from agile_modeling.classifier import DEFAULT_RECIPE
from agile_modeling.classifier.validation import MIN_PER_CLASS, cross_validated_quality, stratified_folds

FAST = DEFAULT_RECIPE.with_(epochs=3, epoch_size=1024)


def test_folds_are_stratified_and_seeded():
    y = np.array([1] * 7 + [0] * 20)
    fold = stratified_folds(y, 3, seed=0)
    assert sorted(np.bincount(fold[y == 1]).tolist()) == [2, 2, 3]
    assert sorted(np.bincount(fold[y == 0]).tolist()) == [6, 7, 7]
    np.testing.assert_array_equal(fold, stratified_folds(y, 3, seed=0))


def test_the_estimate_separates_a_learnable_concept_from_noise(clustered_pool):
    x, clusters = clustered_pool
    x = x.astype(np.float32)
    rng = np.random.default_rng(0)
    ids = rng.choice(len(x), 150, replace=False)
    y = (clusters[ids] == 0).astype(int)
    learnable = cross_validated_quality(FAST, x[ids], y)
    assert learnable.cv_labels == 150 and learnable.cv_positives == int(y.sum()) and learnable.cv_folds == 3
    shuffled = cross_validated_quality(FAST, x[ids], rng.permutation(y))
    base_rate = y.mean()
    assert learnable.cv_auc_pr > 0.9 and shuffled.cv_auc_pr < base_rate + 0.25 < learnable.cv_auc_pr
    assert "3-fold cross-validation on your 150 ratings" in learnable.summary()


def test_no_estimate_from_too_few_positives():
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    y = np.zeros(40, int)
    y[: MIN_PER_CLASS - 1] = 1
    assert cross_validated_quality(FAST, x, y) is None
    y[:MIN_PER_CLASS] = 1
    estimate = cross_validated_quality(FAST, x, y)
    assert estimate is not None and estimate.cv_folds == 3
