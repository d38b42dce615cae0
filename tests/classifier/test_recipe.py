"""The named training recipes: the project's default and the paper's appendix C."""

import numpy as np

from agile_modeling.classifier import DEFAULT_RECIPE, PAPER_RECIPE, RECIPES, MLPClassifier, recipe_for_round
from agile_modeling.classifier.mlp import balanced_epoch_plan


def test_the_paper_recipe_is_appendix_c():
    assert RECIPES == {"default": DEFAULT_RECIPE, "paper": PAPER_RECIPE}
    p = PAPER_RECIPE
    assert (p.learning_rate, p.weight_decay, p.dropout, p.epochs) == (1e-4, 1e-4, 0.5, 10)
    assert (p.positive_fraction, p.negative_fraction) == (0.5, 0.25)
    assert p.max_random_negatives == 500_000 and p.one_pass_over_random_negatives
    assert not DEFAULT_RECIPE.one_pass_over_random_negatives
    assert recipe_for_round(0, PAPER_RECIPE).hidden == (16,) and recipe_for_round(1, PAPER_RECIPE).hidden == (128,) * 3
    assert recipe_for_round(1, PAPER_RECIPE).learning_rate == 1e-4


def test_a_paper_epoch_is_one_pass_over_the_random_negatives_as_a_quarter():
    rng = np.random.default_rng(0)
    pos, neg, rnd = balanced_epoch_plan(7, 30, 1000, PAPER_RECIPE.with_(epochs=3), rng)
    assert pos.shape == (3, 2000) and neg.shape == (3, 1000) and rnd.shape == (3, 1000)
    for epoch in rnd:  # every random negative exactly once, in an order of its own per epoch
        assert np.array_equal(np.sort(epoch), np.arange(1000))
    assert not np.array_equal(rnd[0], rnd[1])
    assert pos.max() < 7 and neg.max() < 30
    # no labeled negatives: the random negatives are the other half
    pos, neg, rnd = balanced_epoch_plan(7, 0, 1000, PAPER_RECIPE.with_(epochs=1), rng)
    assert (pos.shape[1], neg.shape[1], rnd.shape[1]) == (1000, 0, 1000)
    # no random negatives: epochs of epoch_size, as the default
    pos, neg, rnd = balanced_epoch_plan(7, 30, 0, PAPER_RECIPE.with_(epochs=1, epoch_size=512), rng)
    assert (pos.shape[1], neg.shape[1], rnd.shape[1]) == (256, 256, 0)


def test_the_paper_recipe_trains_on_every_random_negative(clustered_pool):
    x, labels = clustered_pool
    x = x.astype(np.float32)
    y = (labels[:200] == 0).astype(int)
    seen = []
    clf = MLPClassifier(PAPER_RECIPE.with_(epochs=2, learning_rate=1e-2)).fit(
        x[:200], y, x[200:1200], progress=lambda epoch, loss: seen.append(loss)
    )
    assert len(seen) == 2
    scores = clf.predict_proba(x[1200:])
    truth = labels[1200:] == 0
    auc = (scores[truth][:, None] > scores[~truth][None, :]).mean()
    assert auc > 0.95
