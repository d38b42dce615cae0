import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agile_modeling.errors import StoreError
from agile_modeling.store import EmbeddingStore, import_clip_retrieval
from tests.conftest import unit_rows


def write_layout(root, parts):
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    for i, (emb, urls) in enumerate(parts):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", emb)
        pq.write_table(
            pa.table({"url": urls, "caption": [f"caption of {u}" for u in urls]}),
            root / "metadata" / f"metadata_{i}.parquet",
        )


def test_import_reads_every_shard_and_is_idempotent(tmp_path):
    rng = np.random.default_rng(0)
    a, b = unit_rows(rng.normal(size=(5, 16))), unit_rows(rng.normal(size=(3, 16)))
    write_layout(
        tmp_path / "laion",
        [(a.astype(np.float16), [f"http://x/{i}" for i in range(5)]), (b, [f"http://y/{i}" for i in range(3)])],
    )
    store = EmbeddingStore.create(tmp_path / "pool", 16, "clip")
    report = import_clip_retrieval(store, tmp_path / "laion", progress=False)
    assert report.added_ids == list(range(8))
    np.testing.assert_allclose(store.vectors().take([5, 0]), np.stack([b[0], a[0]]), atol=1e-3)
    assert store.uris([7]) == ["http://y/2"]
    again = import_clip_retrieval(store, tmp_path / "laion", progress=False)
    assert again.added_ids == [] and again.already_present == 8 and len(store) == 8


def test_mismatched_rows_and_missing_metadata_are_clear_errors(tmp_path):
    write_layout(tmp_path / "bad", [(np.ones((4, 16), np.float16), ["a", "b", "c"])])
    store = EmbeddingStore.create(tmp_path / "pool", 16, "clip")
    with pytest.raises(StoreError, match="3 rows"):
        import_clip_retrieval(store, tmp_path / "bad", progress=False)
    (tmp_path / "bad" / "metadata" / "metadata_0.parquet").unlink()
    with pytest.raises(StoreError, match="no matching metadata"):
        import_clip_retrieval(store, tmp_path / "bad", progress=False)
    with pytest.raises(StoreError, match="img_emb"):
        import_clip_retrieval(store, tmp_path, progress=False)
