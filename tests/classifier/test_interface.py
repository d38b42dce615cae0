"""The classifier interface: the MLP and logistic regression are interchangeable in the loop, the
pool scorer, the artifacts and the backend's predictions; inputs are validated; seeds stay local."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agile_modeling.classifier import (
    CLASSIFIERS,
    DEFAULT_RECIPE,
    ClassifierInputError,
    ConceptClassifier,
    LogisticRegressionClassifier,
    MLPClassifier,
    ModelRegistry,
    UnknownClassifierError,
    make_classifier,
)
from agile_modeling.metrics import binary_metrics
from agile_modeling.scoring import DecisionScorer, PoolScorer, exact_pool_logits, pool_scorer
from agile_modeling.selection import MarginSelection
from agile_modeling.store import PoolView

FAST = DEFAULT_RECIPE.with_(epochs=3, epoch_size=2048)


@pytest.fixture(scope="module")
def concept(shared_data):
    """A real concept on the shared embeddings: 40 positive and 160 negative ratings, random
    negatives, and a held-out test split."""
    from agile_modeling.simulate import load_suite

    spec = next(s for s in load_suite() if s.title == "small dog breeds")
    truth = spec.ground_truth(shared_data.pool)
    rng = np.random.default_rng(0)
    train = np.concatenate(
        [rng.choice(np.flatnonzero(truth), 40, replace=False), rng.choice(np.flatnonzero(~truth), 160, replace=False)]
    )
    x = np.asarray(shared_data.pool.x)
    negatives = x[rng.choice(len(x), 3000, replace=False)].astype(np.float32)
    return x, truth, train, negatives, spec.ground_truth(shared_data.test), np.asarray(shared_data.test.x)


class DecisionOnly(LogisticRegressionClassifier):
    """A classifier without the fast-scoring capability (as a tree model would be)."""

    kind = "decision-only"

    def linear_layers(self):
        return None


@pytest.mark.parametrize("kind", list(CLASSIFIERS))
def test_every_kind_learns_saves_loads_and_scores_the_same(kind, concept, tmp_path):
    x, truth, train, negatives, test_truth, test_x = concept
    clf = make_classifier(kind, FAST).fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
    assert isinstance(clf, ConceptClassifier) and clf.kind == kind and clf.dim == 512
    p = clf.predict_proba(test_x)
    assert p.shape == (len(test_x),) and p.dtype == np.float32
    assert binary_metrics(test_truth, p, 0.5).auc_pr > 0.5  # far above the base rate of a few percent
    two = clf.predict_proba_2d(test_x[:5])
    assert two.shape == (5, 2) and np.allclose(two.sum(1), 1) and np.allclose(two[:, 1], p[:5])

    version = ModelRegistry(tmp_path, "dogs").save(clf, {"auc_pr": 1.0})
    assert json.loads((version.path / "model.json").read_text())["kind"] == kind == version.kind
    loaded = version.load()
    assert type(loaded) is type(clf)
    assert np.array_equal(loaded.decision_function(test_x[:100]), clf.decision_function(test_x[:100]))


@pytest.mark.parametrize("kind", list(CLASSIFIERS))
def test_selection_with_every_kind_equals_the_float64_reference(kind, concept):
    x, truth, train, negatives, _, _ = concept
    clf = make_classifier(kind, FAST).fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
    view = PoolView([x[:20000], x[20000:]], 512)
    scorer = pool_scorer(clf)
    assert isinstance(scorer, PoolScorer)  # both are ReLU networks: the fast bounded sweep
    exclude = np.asarray(train)
    picked = MarginSelection().select(
        scorer.approximate_logits(view), 50, exclude, lambda ids: scorer.exact_logits(view, ids)
    )
    exact = exact_pool_logits(clf, view)
    exact[exclude] = np.inf
    assert sorted(picked.tolist()) == sorted(np.argsort(np.abs(exact), kind="stable")[:50].tolist())


def test_a_classifier_without_layers_is_scored_through_its_decision_function(concept):
    x, truth, train, negatives, _, _ = concept
    clf = DecisionOnly(FAST).fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
    view = PoolView([x], 512)
    scorer = pool_scorer(clf)
    assert isinstance(scorer, DecisionScorer) and scorer.error_bound == 0.0
    assert np.allclose(scorer.approximate_logits(view), clf.decision_function(x))
    with pytest.raises(TypeError, match="pool_scorer"):
        PoolScorer(clf)


def test_wrong_inputs_are_named_errors(concept):
    x, truth, train, negatives, _, _ = concept
    for kind in CLASSIFIERS:
        untrained = make_classifier(kind, FAST)
        with pytest.raises((ClassifierInputError, RuntimeError), match="not trained"):
            untrained.decision_function(x[:3])
        clf = untrained.fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
        with pytest.raises(ClassifierInputError, match=r"\(n, 512\).*another encoder"):
            clf.decision_function(np.zeros((3, 768), np.float32))
        with pytest.raises(ClassifierInputError, match="random negatives must be"):
            make_classifier(kind, FAST).fit(x[train], truth[train].astype(int), np.zeros((5, 64)))
        with pytest.raises(ClassifierInputError, match="0 \\(negative\\) or 1"):
            make_classifier(kind, FAST).fit(x[:3], np.array([0, 1, 2]))
        other_pool = PoolView([np.zeros((10, 256), np.float16)], 256)
        with pytest.raises(ClassifierInputError, match="256-dimensional.*512-dimensional"):
            pool_scorer(clf).approximate_logits(other_pool)
        with pytest.raises(ClassifierInputError, match="2-D array"):
            clf.decision_function(x[0])
    with pytest.raises(UnknownClassifierError, match="choose one of mlp, logistic"):
        make_classifier("forest", FAST)


def test_training_leaves_the_global_random_state_alone_and_is_reproducible(concept):
    x, truth, train, negatives, _, _ = concept
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = MLPClassifier(FAST.with_(seed=5)).fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)  # another global state: the same model
    b = MLPClassifier(FAST.with_(seed=5)).fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
    assert np.array_equal(a.decision_function(x[:200]), b.decision_function(x[:200]))


def test_a_version_saved_before_kinds_loads_as_the_mlp(concept, tmp_path):
    x, truth, train, negatives, _, _ = concept
    clf = MLPClassifier(FAST).fit(x[train].astype(np.float32), truth[train].astype(int), negatives)
    version = ModelRegistry(tmp_path, "dogs").save(clf)
    info = json.loads((version.path / "model.json").read_text())
    del info["kind"]
    (version.path / "model.json").write_text(json.dumps(info))
    old = ModelRegistry(tmp_path, "dogs").latest()
    assert old.kind == "mlp" and isinstance(old.load(), MLPClassifier)


def test_the_loop_trains_the_configured_kind(tmp_path, clustered_pool):
    from tests.test_loop import FAST as LOOP_FAST
    from tests.test_loop import make_loop

    loop, labels = make_loop(tmp_path, clustered_pool)
    loop.config = type(LOOP_FAST)(**{**LOOP_FAST.__dict__, "classifier": "logistic"})
    seed = loop.start()
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed)
    version, clf = loop.train()
    assert version.kind == "logistic" and isinstance(clf, LogisticRegressionClassifier)
    batch = loop.next_batch(clf)
    assert len(batch) == LOOP_FAST.batch_size and not set(batch) & set(seed)
    with pytest.raises(ValueError, match="unknown classifier 'forest'"):
        type(LOOP_FAST)(classifier="forest")
