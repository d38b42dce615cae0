"""The loop on a small synthetic pool: seed, train, select, resume after a restart."""

import numpy as np
import pytest

from agile_modeling.classifier import DEFAULT_RECIPE, ModelRegistry
from agile_modeling.concepts import Concept
from agile_modeling.encoders import VocabularyTextEncoder
from agile_modeling.errors import SessionError
from agile_modeling.index import ExactIndex
from agile_modeling.loop import AgileLoop, LoopConfig
from agile_modeling.session import SessionStore
from agile_modeling.store import PoolView

FAST = LoopConfig(seed_size=60, batch_size=40, recipe=DEFAULT_RECIPE.with_(epochs=3, epoch_size=1024))


def make_loop(tmp_path, clustered_pool, create=True, config=FAST):
    x, labels = clustered_pool
    view = PoolView([x], x.shape[1])
    # phrases embedded as the cluster centres: "alpha" is cluster 0, "beta" cluster 1
    vocab = VocabularyTextEncoder(
        {"alpha": x[labels == 0].astype(np.float32).mean(0), "beta": x[labels == 1].astype(np.float32).mean(0)}
    )
    store = SessionStore(tmp_path / "sessions.sqlite")
    session = store.create(Concept("alpha", negatives=("beta",))) if create else store.open("alpha")
    return AgileLoop(
        session, view, ExactIndex(view), vocab, ModelRegistry(tmp_path / "models", "alpha"), config
    ), labels


def test_seed_then_rounds_of_margin_over_the_whole_pool(tmp_path, clustered_pool):
    loop, labels = make_loop(tmp_path, clustered_pool)
    with pytest.raises(SessionError, match="seed batch first"):
        loop.train()
    seed = loop.start()
    assert len(seed) == 60 and loop.start() == seed
    assert set(labels[seed]) <= {0, 1}  # neighbours of the two phrases
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed)
    version, clf = loop.train()
    assert version.name == "alpha-v1" and clf.recipe.hidden == (16,)
    batch = loop.next_batch(clf)
    assert len(batch) == 40 and not set(batch) & set(seed) and loop.session.current_round() == 1
    assert loop.next_batch(clf) == batch  # nothing rated yet: the same batch, no new round
    loop.session.record_labels((i, int(labels[i] == 0)) for i in batch)
    version, clf = loop.train()
    assert version.name == "alpha-v2" and clf.recipe.hidden == (128,)
    assert loop.session.models()[-1]["num_labels"] == 100


def test_a_restarted_process_resumes_the_open_round(tmp_path, clustered_pool):
    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed[:25])
    del loop  # the process dies mid-round
    again, _ = make_loop(tmp_path, clustered_pool, create=False)
    assert again.start() == seed
    assert again.session.pending() == seed[25:]
    again.session.record_labels((i, int(labels[i] == 0)) for i in seed[25:])
    version, _ = again.train()
    assert version.info["num_labels"] == 60


def test_each_model_version_records_which_labels_it_saw(tmp_path, clustered_pool):
    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed)
    version, _ = loop.train()
    assert version.info["labels_digest"] == loop.labels_digest()
    loop.session.record_label(seed[0], 1 - int(labels[seed[0]] == 0))  # same count, one answer changed
    assert loop.labels_digest() != version.info["labels_digest"]


def test_training_from_user_then_crowd_labels_prefers_the_user(tmp_path, clustered_pool):
    from dataclasses import replace

    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    loop.session.record_labels(((i, int(labels[i] == 0)) for i in seed[:30]), rater="owner")
    loop.session.record_labels(
        ((i, 1 - int(labels[i] == 0)) for i in seed[:40]), rater="crowd-majority", source="crowd"
    )
    loop.config = replace(loop.config, label_source=("user", "crowd"))
    merged = loop.labels()
    assert len(merged) == 40
    assert all(merged[i] == int(labels[i] == 0) for i in seed[:30])  # the user's answer wins
    assert all(merged[i] == 1 - int(labels[i] == 0) for i in seed[30:40])  # the crowd fills the rest
    ids, _, y = loop.training_data()
    assert len(ids) == 40 and y.tolist() == [merged[i] for i in ids.tolist()]


def test_a_versions_quality_estimate_is_recorded_only_for_the_labels_it_saw(tmp_path, clustered_pool):
    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed)
    version, _ = loop.train()
    estimate = loop.estimate_quality(version)
    assert estimate is not None and estimate.cv_labels == len(seed)
    recorded = loop.session.models()[0]["metrics"]
    assert recorded["cv_auc_pr"] == estimate.cv_auc_pr and recorded["cv_positives"] == int(sum(labels[seed] == 0))
    loop.session.record_label(int(np.setdiff1d(np.arange(len(labels)), seed)[0]), 1)  # a rating after training
    assert loop.estimate_quality(version) is None


def test_the_next_batch_comes_early_only_with_a_positive_and_never_before_half_a_small_seed(tmp_path, clustered_pool):
    from dataclasses import replace

    loop, labels = make_loop(tmp_path, clustered_pool)
    loop.config = replace(loop.config, seed_size=6, batch_size=40, prefetch=0.5)
    seed = loop.start()
    assert len(seed) == 6 and not loop.next_batch_due()  # 6 open: not "half a batch of 40"
    loop.session.record_labels((i, 0) for i in seed[:3])
    assert not loop.next_batch_due()  # half the seed rated, but no positive to train on
    loop.session.record_label(seed[3], 1)
    assert loop.next_batch_due()  # 2 of 6 open, a positive among the ratings


def test_images_held_out_for_evaluation_are_never_selected_nor_random_negatives(tmp_path, clustered_pool):
    from agile_modeling.session import EVALUATION

    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed)
    rest = np.setdiff1d(np.arange(len(labels)), seed)
    held_out = rest[:300]
    loop.session.record_labels(((int(i), int(labels[i] == 0)) for i in held_out), source=EVALUATION)
    assert np.array_equal(loop.held_out_ids(), np.sort(held_out))
    recipe = loop.config.recipe
    negatives = loop.random_negative_ids(recipe, np.union1d(seed, loop.held_out_ids()))
    assert not set(negatives.tolist()) & set(held_out.tolist())
    version, clf = loop.train()
    assert version.info["num_labels"] == len(seed)  # evaluation ratings train nothing
    batch = loop.next_batch(clf)
    assert len(batch) == loop.config.batch_size and not set(batch) & set(held_out.tolist())


def test_margin_coverage_explores_a_mode_neither_the_phrase_nor_the_model_reached(tmp_path, clustered_pool):
    """Cluster 0 is the phrase's; cluster 2 also counts as positive but no phrase names it and the
    seed never shows it: margin alone keeps refining cluster 0's boundary, coverage looks at it."""
    from dataclasses import replace

    _, labels = clustered_pool
    truth = np.isin(labels, [0, 2])
    reached = {}
    for strategy in ("margin", "margin+coverage"):
        loop, _ = make_loop(tmp_path / strategy, clustered_pool, config=replace(FAST, strategy=strategy))
        seed = loop.start()
        assert not (labels[seed] == 2).any()
        loop.session.record_labels((i, int(truth[i])) for i in seed)
        _, clf = loop.train()
        batch = loop.next_batch(clf)
        reached[strategy] = int((labels[batch] == 2).sum())
    assert reached["margin+coverage"] > reached["margin"], reached


def test_the_paper_recipe_takes_every_unlabeled_image_up_to_500k_as_random_negatives(tmp_path, clustered_pool):
    from agile_modeling.classifier import PAPER_RECIPE

    loop, labels = make_loop(tmp_path, clustered_pool)
    labeled = np.arange(0, 6000, 7)
    paper = loop.random_negative_ids(PAPER_RECIPE, labeled, round_index=1)
    available = np.setdiff1d(np.arange(len(labels)), labeled)
    assert len(paper) == len(available) and np.array_equal(np.sort(paper), available)  # min(500k, 5142)
    assert not np.array_equal(paper, np.sort(paper))  # in a random order
    # a cap below the pool: that many distinct unlabeled images, seeded
    capped = loop.random_negative_ids(PAPER_RECIPE.with_(max_random_negatives=1000), labeled, round_index=1)
    assert len(set(capped.tolist())) == 1000 and not set(capped.tolist()) & set(labeled.tolist())
    again = loop.random_negative_ids(PAPER_RECIPE.with_(max_random_negatives=1000), labeled, round_index=1)
    assert np.array_equal(capped, again)
    # the default recipe takes only as many as its epochs draw (20,480, from draws with replacement)
    default = loop.random_negative_ids(DEFAULT_RECIPE, labeled, round_index=1)
    assert len(default) < len(available)
