"""The embedding store: append-only fp16 shards, dedupe by content hash, crash safety, resumable adds."""

import numpy as np
import pytest

from agile_modeling.errors import StoreError
from agile_modeling.store import EmbeddingStore, list_image_files
from tests.conftest import unit_rows


def make_store(tmp_path, dim=8):
    return EmbeddingStore.create(tmp_path / "pool", dim, "test-encoder")


def test_append_assigns_dense_ids_and_skips_known_hashes(tmp_path):
    store = make_store(tmp_path)
    x = unit_rows(np.random.default_rng(0).normal(size=(5, 8)))
    assert store.append(x[:3], ["a", "b", "c"], ["h1", "h2", "h3"]) == [0, 1, 2]
    # h2 again, h4 twice in one call: only h4 once is new
    assert store.append(x[2:5], ["b2", "d", "d2"], ["h2", "h4", "h4"]) == [3]
    assert len(store) == 4 and store.uris([3, 0]) == ["d", "a"]
    view = store.vectors()
    assert view.shape == (4, 8) and view.shards[0].dtype == np.float16
    np.testing.assert_allclose(view.take([3, 1]), x[[3, 1]], atol=1e-3)


def test_take_keeps_the_requested_order_across_shards(tmp_path):
    store = make_store(tmp_path)
    x = unit_rows(np.random.default_rng(1).normal(size=(9, 8)))
    for start in range(0, 9, 3):
        store.append(x[start : start + 3], [f"u{i}" for i in range(start, start + 3)], [f"h{i}" for i in range(start, start + 3)])
    ids = [8, 0, 4, 4, 7, 1]
    np.testing.assert_allclose(store.vectors().take(ids), x[ids], atol=1e-3)
    chunks = list(store.vectors().iter_chunks(2))
    assert [c[0] for c in chunks] == [0, 2, 3, 5, 6, 8]
    with pytest.raises(IndexError):
        store.vectors().take([9])


def test_store_reopens_with_its_contents(tmp_path):
    store = make_store(tmp_path)
    store.append(unit_rows(np.ones((2, 8))), ["a", "b"], ["h1", "h2"])
    store.close()
    again = EmbeddingStore(tmp_path / "pool")
    assert len(again) == 2 and again.dim == 8 and again.ids_of_uris(["b", "zz"]) == {"b": 1}


def test_an_unregistered_shard_left_by_a_crash_is_removed_on_open(tmp_path):
    store = make_store(tmp_path)
    store.append(unit_rows(np.ones((2, 8))), ["a", "b"], ["h1", "h2"])
    # a crash after the shard file was renamed into place but before the SQLite commit
    np.save(tmp_path / "pool" / "shards" / "00001.npy", np.zeros((3, 8), np.float16))
    (tmp_path / "pool" / "shards" / "00002.npy.tmp").write_bytes(b"partial")
    store.close()
    again = EmbeddingStore(tmp_path / "pool")
    assert len(again) == 2 and len(again.vectors()) == 2
    assert sorted(p.name for p in (tmp_path / "pool" / "shards").iterdir()) == ["00000.npy"]
    assert again.append(unit_rows(np.ones((1, 8))), ["c"], ["h3"]) == [2]


def test_wrong_dimension_and_missing_store_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore(tmp_path / "nowhere")
    store = make_store(tmp_path)
    with pytest.raises(StoreError, match="dimension 8"):
        store.append(np.ones((1, 4)), ["a"], ["h"])
    with pytest.raises(StoreError, match="8-d"):
        EmbeddingStore.create(tmp_path / "pool", 16, "other")


def test_add_images_skips_corrupt_files_and_dedupes_by_content(tmp_path, image_folder, tiny_clip):
    store = EmbeddingStore.create(tmp_path / "pool", tiny_clip.dim, tiny_clip.name)
    uris = list_image_files(image_folder) + [str(image_folder / "missing.png")]
    (image_folder / "copy.png").write_bytes((image_folder / "img1.png").read_bytes())
    uris.append(str(image_folder / "copy.png"))
    report = store.add_images(uris, tiny_clip, progress=False)
    assert len(report.added_ids) == 8
    assert report.already_present == 1  # the byte-identical copy
    skipped = dict(report.skipped)
    assert set(skipped) == {str(image_folder / "broken.jpg"), str(image_folder / "missing.png")}
    assert "not a readable image" in skipped[str(image_folder / "broken.jpg")]
    assert "cannot read" in skipped[str(image_folder / "missing.png")]
    again = store.add_images(uris, tiny_clip, progress=False)
    assert again.added_ids == [] and again.already_present == 9 and len(store) == 8


class ExplodingEncoder:
    """Wraps an encoder and fails on its n-th call: an add interrupted midway."""

    def __init__(self, inner, fail_on_call):
        self.inner, self.fail_on_call, self.calls = inner, fail_on_call, 0
        self.dim, self.name = inner.dim, inner.name

    def encode_images(self, images):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return self.inner.encode_images(images)


def test_an_interrupted_add_keeps_what_was_committed_and_resumes(tmp_path, image_folder, tiny_clip):
    store = EmbeddingStore.create(tmp_path / "pool", tiny_clip.dim, tiny_clip.name)
    uris = list_image_files(image_folder)
    with pytest.raises(KeyboardInterrupt):
        store.add_images(uris, ExplodingEncoder(tiny_clip, fail_on_call=2), commit_every=3, progress=False)
    assert len(EmbeddingStore(tmp_path / "pool")) == 3
    report = store.add_images(uris, tiny_clip, commit_every=3, progress=False)
    assert len(report.added_ids) == 5 and report.already_present == 3 and len(store) == 8


def test_adding_images_from_another_encoder_is_refused(tmp_path, tiny_clip, image_folder):
    from agile_modeling.store import list_image_files

    store = EmbeddingStore.create(tmp_path / "pool", tiny_clip.dim, "openai-clip-ViT-B-32 (precomputed)")
    with pytest.raises(StoreError, match="would mix two embedding spaces"):
        store.add_images(list_image_files(image_folder), tiny_clip, progress=False)
    assert len(store) == 0
