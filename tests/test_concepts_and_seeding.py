import numpy as np
import pytest

from agile_modeling.concepts import Concept, slugify
from agile_modeling.index import ExactIndex
from agile_modeling.seeding import expand_queries, seed_batch
from agile_modeling.store import PoolView


def test_name_joins_the_positive_phrases_once():
    c = Concept("Gourmet Tuna", positives=("seared tuna", "gourmet tuna"), negatives=("canned tuna", "canned tuna"))
    assert c.positives == ("Gourmet Tuna", "seared tuna")
    assert c.negatives == ("canned tuna",)
    assert c.phrases == ("Gourmet Tuna", "seared tuna", "canned tuna")
    assert c.slug == "gourmet-tuna"


def test_empty_names_are_refused():
    with pytest.raises(ValueError):
        Concept("  ")
    with pytest.raises(ValueError):
        slugify("!!!")


def test_seed_batch_draws_from_the_union_of_neighbours(clustered_pool):
    x, labels = clustered_pool
    index = ExactIndex(PoolView([x], x.shape[1]))
    queries = x[[0, 1]].astype(np.float32)
    union = expand_queries(index, queries, per_query=100)
    assert 100 <= len(union) <= 200
    batch = seed_batch(index, queries, size=100, per_query=100, seed=7)
    assert len(batch) == 100 and len(set(batch)) == 100 and set(batch) <= set(union)
    np.testing.assert_array_equal(batch, seed_batch(index, queries, size=100, per_query=100, seed=7))
    assert not np.array_equal(batch, seed_batch(index, queries, size=100, per_query=100, seed=8))


def test_seed_batch_excludes_rated_images_and_shrinks_when_the_union_is_small(clustered_pool):
    x, _ = clustered_pool
    index = ExactIndex(PoolView([x], x.shape[1]))
    q = x[:1].astype(np.float32)
    union = expand_queries(index, q, per_query=30)
    batch = seed_batch(index, q, size=100, per_query=30, exclude=union[:10])
    assert sorted(batch) == sorted(union[10:])
