"""Exact search must return the true (float64) top-k of the stored fp16 vectors on every backend;
IVF must find most of them."""

import numpy as np
import pytest

from agile_modeling import compute
from agile_modeling.bf16 import BF16_PRECISION, FP32_PRECISION, dot_error_bound
from agile_modeling.index import ExactIndex, IVFIndex, build_index
from agile_modeling.store import PoolView
from tests.conftest import unit_rows

BACKENDS = {
    "bf16": compute.Compute(compute.BF16, compute.TORCH, compute.BF16, "test", True),
    "fp32-torch": compute.Compute(compute.FP32, compute.TORCH, compute.FP32, "test", False),
    "fp32-numpy": compute.Compute(compute.FP32, compute.NUMPY, compute.FP32, "test", False),
}


def brute_force(x16, queries, k):
    scores = x16.astype(np.float64) @ queries.astype(np.float64).T
    out = []
    for j in range(len(queries)):
        order = np.lexsort((np.arange(len(x16)), -scores[:, j]))[:k]
        out.append(order)
    return np.array(out), scores


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_exact_index_matches_brute_force_float64_even_with_near_ties(clustered_pool, backend):
    x, _ = clustered_pool
    # near-duplicates: copies of rows with tiny perturbations make bf16 ordering unreliable
    rng = np.random.default_rng(3)
    dup = unit_rows(x[:500].astype(np.float32) + 1e-3 * rng.normal(size=(500, x.shape[1]))).astype(np.float16)
    # and exact ties: duplicated rows, and rows one float16 ulp apart
    bumped = x[:300].copy()
    bumped[:, 3] = np.nextafter(bumped[:, 3], np.float16(1))
    pool = np.concatenate([x, dup, x[:300], bumped])
    view = PoolView([pool[:3000], pool[3000:]], pool.shape[1])
    queries = unit_rows(pool[[0, 10, 4000]].astype(np.float32) + 0.05 * rng.normal(size=(3, pool.shape[1])))
    scores, ids = ExactIndex(view, compute=BACKENDS[backend]).search(queries, 100)
    expected, ref = brute_force(pool, queries, 100)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(ref.T, expected, 1), atol=1e-6)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_exact_index_on_real_clip_embeddings(shared_data, backend):
    pool = np.asarray(shared_data.pool.x)
    pool = np.concatenate([pool, pool[:2000]])  # every row of the first 2000 tied with its copy
    queries = shared_data.vocabulary.encode_texts(["dog", "sunflower", "stop sign", "airplane"])
    _, ids = ExactIndex(PoolView([pool], 512), compute=BACKENDS[backend]).search(queries, 100)
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


@pytest.mark.parametrize("precision", [BF16_PRECISION, FP32_PRECISION], ids=["bf16", "fp32"])
def test_dot_bound_holds_on_many_random_unit_inputs(precision):
    """The proven bound of the sweep is >= the error observed on random and aligned unit inputs."""
    import torch

    rng = np.random.default_rng(7)
    x = unit_rows(rng.normal(size=(20000, 512))).astype(np.float16)
    x[:2000] = unit_rows(np.abs(rng.normal(size=(2000, 512)))).astype(np.float16)  # all-positive: errors add up
    q = unit_rows(rng.normal(size=(8, 512)))
    q[0] = unit_rows(np.abs(rng.normal(size=(1, 512))))[0]
    q[1] = x[5].astype(np.float32) / np.linalg.norm(x[5].astype(np.float32))  # aligned with a row
    exact = x.astype(np.float64) @ q.astype(np.float64).T
    if precision is BF16_PRECISION:
        got = (torch.from_numpy(x.astype(np.float32)).bfloat16() @ torch.from_numpy(q).bfloat16().T).float().numpy()
    else:
        got = x.astype(np.float32) @ q.T
    for j in range(len(q)):
        bound = dot_error_bound(512, float(np.linalg.norm(q[j].astype(np.float64))), precision)
        observed = np.abs(got[:, j] - exact[:, j]).max()
        assert observed <= bound, (j, observed, bound)
        # not vacuous (fp32: the worst case n*u is ~300x the typical random-rounding error)
        assert bound < (100 if precision is BF16_PRECISION else 1000) * observed
