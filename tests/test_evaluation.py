"""Stratified evaluation sets: SipHash determinism, stratum coverage, merging across model versions."""

import numpy as np
import pytest
import siphashc

from agile_modeling.evaluation import (
    NUM_STRATA,
    SIPHASH_KEY,
    build_evaluation_set,
    strata_of,
    stratified_sample,
    url_hashes,
)


def test_siphash_is_the_reference_siphash_2_4():
    # reference vectors of SipHash-2-4 (key 00..0f): empty message, and the 1-byte message 00
    assert siphashc.siphash(bytes(range(16)), b"") == 0x726FDB47DD0E0E31
    assert siphashc.siphash(bytes(range(16)), b"\x00") == 0x74F839C593DC67FD
    hashes = url_hashes(["http://a/1.jpg", "http://a/2.jpg"])
    assert hashes.dtype == np.uint64 and hashes[0] == siphashc.siphash(SIPHASH_KEY, b"http://a/1.jpg")
    assert (url_hashes(["http://a/1.jpg"]) == hashes[:1]).all()  # deterministic across calls
    with pytest.raises(ValueError, match="16 bytes"):
        url_hashes(["x"], key=b"short")


def test_strata_boundaries_follow_the_paper():
    p = np.array([0.0, 0.0999, 0.1, 0.5, 0.8999, 0.9, 1.0])
    assert strata_of(p).tolist() == [0, 0, 1, 5, 8, 9, 9]
    with pytest.raises(ValueError):
        strata_of(np.array([1.2]))


def test_each_stratum_gives_its_lowest_hash_images_and_never_a_training_image():
    rng = np.random.default_rng(0)
    n = 5000
    p = rng.random(n)
    hashes = url_hashes([f"http://pool/{i}.jpg" for i in range(n)])
    train = rng.choice(n, 300, replace=False)
    sample = stratified_sample(p, hashes, exclude=train)
    assert len(sample.ids) == NUM_STRATA * 20 and not set(sample.ids) & set(train.tolist())
    strata = strata_of(p)
    for s in range(NUM_STRATA):
        mine = sample.ids[sample.strata == s]
        assert len(mine) == 20 and (strata[mine] == s).all()
        others = np.setdiff1d(np.flatnonzero(strata == s), np.concatenate([mine, train]))
        assert hashes[mine].max() < hashes[others].min()  # the lowest hashes, by brute force
    assert sample.available.sum() == n - len(train)


def test_a_sparse_stratum_gives_what_it_has():
    p = np.concatenate([np.full(100, 0.05), np.full(3, 0.95)])
    sample = stratified_sample(p, url_hashes([str(i) for i in range(103)]))
    assert (sample.strata == 9).sum() == 3 and (sample.strata == 0).sum() == 20 and len(sample.ids) == 23
    assert sample.available.tolist() == [100] + [0] * 8 + [3]


def test_similar_models_share_most_images_and_the_merge_remembers_who_chose_what():
    rng = np.random.default_rng(1)
    n = 20000
    hashes = url_hashes([f"img{i}" for i in range(n)])
    p1 = rng.random(n)
    p2 = np.clip(p1 + rng.normal(0, 0.01, n), 0, 1)  # a retrained model: nearly the same scores
    p3 = rng.random(n)  # an unrelated model
    merged = build_evaluation_set({"c-v1": p1, "c-v2": p2}, hashes)
    assert 200 <= len(merged.ids) < 260  # most images shared: far fewer than 400 to rate
    shared = [i for i, v in merged.chosen_by.items() if v == ["c-v1", "c-v2"]]
    assert len(shared) > 140
    # even an unrelated model shares images: a URL with a very low hash is among the lowest of
    # whichever stratum a model puts it in (the paper's reason for hashing instead of sampling)
    unrelated = build_evaluation_set({"c-v1": p1, "x": p3}, hashes)
    assert len(merged.ids) < len(unrelated.ids) < 400
    again = build_evaluation_set({"c-v1": p1, "c-v2": p2}, hashes)
    assert again.chosen_by == merged.chosen_by  # deterministic
