"""The embedding store: append-only fp16 shards, dedupe by content hash, crash safety, resumable adds."""

from pathlib import Path

import numpy as np
import pytest

from agile_modeling.errors import ImageReadError, StoreError
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
        store.append(
            x[start : start + 3], [f"u{i}" for i in range(start, start + 3)], [f"h{i}" for i in range(start, start + 3)]
        )
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


# --- concurrency and the cost of len() (issue 11, items 6 and 7) ---------------------------------------
import fcntl  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

ADDER = textwrap.dedent("""
    import sys
    import numpy as np
    from agile_modeling.store import EmbeddingStore
    store = EmbeddingStore(sys.argv[1])
    x = np.eye(8, dtype=np.float32)[:4]
    print("APPENDING", flush=True)
    print("ADDED", len(store.append(x, [f"{sys.argv[2]}-{i}" for i in range(4)], [f"same-{i}" for i in range(4)])), flush=True)
""")


def test_the_same_images_added_by_two_processes_at_once_are_added_once(tmp_path):
    """Both adders check which hashes are new while a third process holds the write lock, then
    append one after the other: the second must see the first's rows (the check is under the lock)."""
    store = make_store(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(store.root / "write.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a third writer, busy: both adders reach the lock and wait
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", ADDER, str(store.root), name],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env,
            )
            for name in ("a", "b")
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "APPENDING"
        time.sleep(1.5)  # both are now blocked on the lock (today: after checking the hashes)
        fcntl.flock(lock, fcntl.LOCK_UN)
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    assert sorted(out.split()[-1] for out, _ in outs) == ["0", "4"]
    reopened = EmbeddingStore(store.root)
    assert len(reopened) == 4 and len(reopened.vectors()) == 4
    assert sorted(reopened.known_hashes([f"same-{i}" for i in range(4)])) == [f"same-{i}" for i in range(4)]
    assert [p.name for p in (store.root / "shards").iterdir()] == ["00000.npy"]  # no orphan shard either


def test_len_counts_rows_appended_by_another_process(tmp_path):
    store = make_store(tmp_path)
    store.append(unit_rows(np.random.default_rng(0).normal(size=(3, 8))), list("abc"), ["h1", "h2", "h3"])
    assert len(store) == 3
    code = (
        "import sys, numpy as np; from agile_modeling.store import EmbeddingStore; "
        "EmbeddingStore(sys.argv[1]).append(np.eye(8, dtype=np.float32)[:5], list('vwxyz'), list('VWXYZ'))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(store.root)], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert len(store) == 8 and len(store.vectors()) == 8 and store.uris([7]) == ["z"]
    assert len(make_store(tmp_path / "empty")) == 0


@pytest.mark.slow
def test_len_does_not_walk_the_image_table(tmp_path):
    """The backend calls len(store) on every request: it must not cost a scan of 1M rows
    (COUNT(*) took 30-43 ms at 1-2M images; one index lookup takes microseconds)."""
    store = make_store(tmp_path, dim=4)
    n, step = 1_000_000, 250_000
    for start in range(0, n, step):
        ids = range(start, start + step)
        store.append(
            np.ones((step, 4), np.float32) / 2,
            [f"file:///pool/images/{i:09d}.jpg" for i in ids],
            [f"{i:064x}" for i in ids],
        )
    reopened = EmbeddingStore(store.root)
    assert len(reopened) == n
    timings = []
    for _ in range(30):
        t = time.perf_counter()
        len(reopened)
        timings.append(time.perf_counter() - t)
    assert sorted(timings)[len(timings) // 2] < 0.003, f"len(store) median {np.median(timings) * 1e3:.1f} ms"


def test_a_callers_reader_fetches_the_bytes_and_every_uri_gets_its_pool_id(tmp_path, image_folder, tiny_clip):
    """Images kept elsewhere (e.g. behind a server with credentials) come through ``read``; the report
    maps every URI read to its id, a second URI of the same image included."""
    files = {f"ls://{p.name}": p for p in map(Path, list_image_files(image_folder))}
    files.pop("ls://broken.jpg")
    reads: list[str] = []

    def read(uri: str) -> bytes:
        reads.append(uri)
        if uri == "ls://gone.png":
            raise ImageReadError("ls://gone.png: 404, the file is gone")
        return files[uri.replace("ls://again-", "ls://")].read_bytes()

    store = EmbeddingStore.create(tmp_path / "pool", tiny_clip.dim, tiny_clip.name)
    uris = sorted(files) + ["ls://gone.png", "ls://again-img1.png"]
    report = store.add_images(uris, tiny_clip, progress=False, read=read)
    assert sorted(reads) == sorted(uris)
    assert report.skipped == [("ls://gone.png", "ls://gone.png: 404, the file is gone")]
    assert set(report.ids) == set(uris) - {"ls://gone.png"}
    assert report.ids["ls://again-img1.png"] == report.ids["ls://img1.png"]
    assert store.uris([report.ids[u] for u in sorted(files)]) == sorted(files)
    local = store.add_images([str(files["ls://img1.png"])], tiny_clip, progress=False)  # same bytes, a path
    assert local.added_ids == [] and local.ids == {str(files["ls://img1.png"]): report.ids["ls://img1.png"]}
