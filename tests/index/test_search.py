"""Exact search must return the true fp32 top-k of the stored fp16 vectors; IVF must find most of them."""

import numpy as np

from agile_modeling.index import ExactIndex, IVFIndex, build_index
from agile_modeling.store import PoolView
from tests.conftest import unit_rows


def brute_force(x16, queries, k):
    scores = x16.astype(np.float32) @ queries.T
    out = []
    for j in range(len(queries)):
        order = np.lexsort((np.arange(len(x16)), -scores[:, j]))[:k]
        out.append(order)
    return np.array(out), scores


def test_exact_index_matches_brute_force_fp32_even_with_near_ties(clustered_pool):
    x, _ = clustered_pool
    # near-duplicates: copies of rows with tiny perturbations make bf16 ordering unreliable
    rng = np.random.default_rng(3)
    dup = unit_rows(x[:500].astype(np.float32) + 1e-3 * rng.normal(size=(500, x.shape[1]))).astype(np.float16)
    pool = np.concatenate([x, dup])
    view = PoolView([pool[:3000], pool[3000:]], pool.shape[1])
    queries = unit_rows(pool[[0, 10, 4000]].astype(np.float32) + 0.05 * rng.normal(size=(3, pool.shape[1])))
    scores, ids = ExactIndex(view).search(queries, 100)
    expected, ref = brute_force(pool, queries, 100)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(ref.T, expected, 1), atol=1e-6)


def test_exact_index_on_real_clip_embeddings(shared_data):
    pool = shared_data.pool.x
    queries = shared_data.vocabulary.encode_texts(["dog", "sunflower", "stop sign", "airplane"])
    _, ids = ExactIndex(PoolView([pool], 512)).search(queries, 100)
    expected, _ = brute_force(pool, queries, 100)
    np.testing.assert_array_equal(ids, expected)


def test_k_larger_than_the_pool_returns_the_whole_pool(clustered_pool):
    x, _ = clustered_pool
    scores, ids = ExactIndex(PoolView([x[:7]], x.shape[1])).search(x[:1].astype(np.float32), 100)
    assert ids.shape == (1, 7) and sorted(ids[0]) == list(range(7)) and ids[0, 0] == 0


def test_ivf_index_recall_on_clustered_data(clustered_pool):
    x, _ = clustered_pool
    view = PoolView([x], x.shape[1])
    queries = unit_rows(x[:20].astype(np.float32))
    index = IVFIndex(view, nlist=16, nprobe=4)
    _, ids = index.search(queries, 50)
    expected, _ = brute_force(x, queries, 50)
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ids, expected)])
    assert recall >= 0.9, recall


def test_ivf_index_survives_save_and_load(clustered_pool, tmp_path):
    x, _ = clustered_pool
    index = IVFIndex(PoolView([x], x.shape[1]), nlist=16, nprobe=4)
    index.save(tmp_path / "ivf.faiss")
    again = IVFIndex.load(tmp_path / "ivf.faiss", nprobe=4)
    q = x[:3].astype(np.float32)
    np.testing.assert_array_equal(index.search(q, 10)[1], again.search(q, 10)[1])


def test_build_index_picks_exact_below_the_limit_and_ivf_above(clustered_pool):
    x, _ = clustered_pool
    view = PoolView([x], x.shape[1])
    assert isinstance(build_index(view), ExactIndex)
    assert isinstance(build_index(view, exact_limit=1000), IVFIndex)
