"""The parallel embedding pipeline: same embeddings, same order, same skips as the sequential path."""

import numpy as np
import pytest
from PIL import Image

from agile_modeling.encoders import OpenClipEncoder, precision
from agile_modeling.encoders.open_clip import DeviceUnavailableError, choose_precision, resolve_device
from agile_modeling.store import EmbeddingStore, list_image_files
from agile_modeling.store.image_source import load_image
from agile_modeling.store.pipeline import Decoded, Skipped, decoded_images


@pytest.fixture
def photos(image_folder):
    """The shared folder (8 images, a corrupt JPEG, a text file) plus larger real-looking JPEGs and a truncated one."""
    rng = np.random.default_rng(3)
    for i in range(6):
        yy, xx = np.mgrid[0:375, 0:500]
        pixels = np.stack([(xx * (i + 1)) % 256, (yy * 2) % 256, rng.integers(0, 255, (375, 500))], -1)
        Image.fromarray(pixels.astype(np.uint8)).save(image_folder / f"photo{i}.jpg", quality=85)
    data = (image_folder / "photo0.jpg").read_bytes()
    (image_folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return image_folder


def _sequential(uris, encoder):
    """The old path: load one by one in this thread, embed with the reference fp32 encoder."""
    vecs, kept, skipped = [], [], []
    for uri in uris:
        try:
            vecs.append(encoder.encode_images([load_image(uri).image])[0])
            kept.append(uri)
        except Exception:  # noqa: BLE001
            skipped.append(uri)
    return np.array(vecs), kept, skipped


@pytest.mark.parametrize("precision", ["fp32", "auto", "int8"])
def test_parallel_add_equals_the_sequential_embeddings_in_order(tmp_path, photos, tiny_clip, precision):
    uris = list_image_files(photos)
    expected, kept, bad = _sequential(uris, tiny_clip)
    encoder = tiny_clip.with_runtime(precision=precision)
    store = EmbeddingStore.create(tmp_path / "pool", encoder.dim, encoder.name)
    report = store.add_images(uris, encoder, progress=False, workers=2, batch_size=3)
    assert store.uris(report.added_ids) == kept  # same order: ids follow the input order
    assert [u for u, _ in report.skipped] == bad and {u.rsplit("/", 1)[-1] for u in bad} == {
        "broken.jpg",
        "truncated.jpg",
    }
    got = store.vectors().take(report.added_ids).astype(np.float32)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.999


def test_a_corrupt_image_is_skipped_with_its_reason_and_loses_nothing(tmp_path, photos, tiny_clip):
    uris = list_image_files(photos)
    store = EmbeddingStore.create(tmp_path / "pool", tiny_clip.dim, tiny_clip.name)
    report = store.add_images(uris, tiny_clip, progress=False, workers=2, commit_every=4)
    reasons = dict(report.skipped)
    assert set(reasons) == {str(photos / "broken.jpg"), str(photos / "truncated.jpg")}
    assert all("not a readable image" in r for r in reasons.values())
    assert len(report.added_ids) == len(store) == len(uris) - 2  # every other image is there
    again = store.add_images(uris, tiny_clip, progress=False, workers=2)
    assert again.added_ids == [] and again.already_present == len(uris) - 2


def test_decoded_images_keeps_order_with_threads_and_remote_fetchers(photos, monkeypatch):
    import agile_modeling.store.pipeline as pipeline

    local = list_image_files(photos)
    served = {f"http://example.test/{i}.jpg": open(u, "rb").read() for i, u in enumerate(local)}
    real_read = pipeline.read_bytes

    def fake_read(uri):
        if uri.startswith("http"):
            if uri not in served:
                raise pipeline.ImageReadError(f"cannot fetch {uri}")
            return served[uri]
        return real_read(uri)

    monkeypatch.setattr(pipeline, "read_bytes", fake_read)
    uris = [u for pair in zip(local, served) for u in pair] + ["http://example.test/missing.jpg"]
    out = list(decoded_images(uris, workers=2, fetch_workers=3, window=4))
    assert [o.uri for o in out] == uris
    assert isinstance(out[-1], Skipped) and "cannot fetch" in out[-1].reason
    by_uri = {o.uri: o for o in out}
    for u, remote in zip(local, served):
        assert type(by_uri[u]) is type(by_uri[remote])
        if isinstance(by_uri[u], Decoded):
            assert by_uri[u].content_hash == by_uri[remote].content_hash


def test_stopping_early_stops_the_workers(photos):
    uris = list_image_files(photos) * 20
    gen = decoded_images(uris, workers=2, window=8)
    next(gen)
    gen.close()  # the pools shut down without decoding the rest


def test_device_is_validated_with_a_clear_error():
    assert resolve_device("auto", has_cuda=False, has_mps=False) == "cpu"
    assert resolve_device("auto", has_cuda=True, has_mps=False) == "cuda"
    assert resolve_device("cpu", has_cuda=False, has_mps=False) == "cpu"
    assert resolve_device("CPU:0", has_cuda=True, has_mps=False) == "cpu"  # one CPU device
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU on this machine.*--device cpu or auto"):
        resolve_device("cuda", has_cuda=False, has_mps=False)
    with pytest.raises(DeviceUnavailableError, match="MPS"):
        resolve_device("mps", has_cuda=False, has_mps=False)
    with pytest.raises(DeviceUnavailableError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_asked_on_a_machine_without_it_fails_from_the_cli(tmp_path, image_folder):
    from agile_cli.main import main

    code = main(
        [
            "--workspace",
            str(tmp_path / "ws"),
            "pool",
            "add",
            str(image_folder),
            "--model",
            "ViT-S-32",
            "--pretrained",
            "none",
            "--device",
            "cuda",
            "--quiet",
        ]
    )
    assert code == 2


def test_the_precision_chooser_forced_each_way(tiny_clip):
    fast_bf16 = {"fp32": 1.0, "bf16": 5.6, "int8": 2.1}  # Sapphire Rapids with AMX
    slow_bf16 = {"fp32": 1.0, "bf16": 0.55, "int8": 1.55}  # AVX512_BF16 without AMX (2026-12-04)
    assert choose_precision("auto", "cpu", fast_bf16)[0] == "bf16"
    assert choose_precision("auto", "cpu", slow_bf16)[0] == "int8"
    assert choose_precision("auto", "cpu", {"fp32": 1.0, "int8": 1.4})[0] == "int8"  # AVX2 only
    assert choose_precision("auto", "cpu", {"fp32": 1.0, "int8": 1.1})[0] == "fp32"  # not worth it
    assert choose_precision("auto", "cpu", {"fp32": 1.0})[0] == "fp32"
    assert choose_precision("auto", "cuda", {"fp32": 1.0})[0] == "fp16"
    assert choose_precision("auto", "CPU", slow_bf16)[0] == "int8"  # a CPU, however it is spelled
    assert choose_precision(" Auto ", None, slow_bf16)[0] == "int8"
    assert choose_precision("fp32", "cpu", fast_bf16)[0] == "fp32"
    assert "int8 measured fastest" in choose_precision("auto", "cpu", slow_bf16)[1]
    with pytest.raises(DeviceUnavailableError, match="emulated"):
        choose_precision("fp16", "cpu", fast_bf16)
    with pytest.raises(DeviceUnavailableError, match="CPU only"):
        choose_precision("int8", "cuda")
    images = [Image.new("RGB", (60, 50), color=(25 * i, 90, 180 - 15 * i)) for i in range(5)]
    reference = tiny_clip.encode_images(images)
    for rates, expected in ((fast_bf16, "cpu/bf16"), (slow_bf16, "cpu/int8"), ({"fp32": 1.0}, "cpu/fp32")):
        encoder = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="auto", cpu_rates=rates)
        assert encoder.runtime == expected and encoder.name == tiny_clip.name  # same space, same name
        assert ((encoder.encode_images(images) * reference).sum(1)).min() >= 0.999


def test_the_cpu_candidates_follow_the_flags(monkeypatch):
    """fbgemm's AVX2 kernels: int8 1.4x fp32 on an AMD EPYC with AVX2 only (benchmarks/results/embedding_avx2.md);
    bf16 only where it is native (emulated it runs at 1-3 images/s)."""
    from agile_modeling import compute

    read = compute.CpuInfo.read
    for flags, expected in (
        ("fpu sse4_2 avx2 fma f16c", ("fp32", "int8")),
        ("fpu sse4_2", ("fp32",)),
        ("avx2 avx512_bf16 avx512_vnni", ("fp32", "bf16", "int8")),
    ):
        cpu = read(f"model name\t: some CPU\nflags\t\t: {flags}\n", "x86_64")
        monkeypatch.setattr(compute.CpuInfo, "read", classmethod(lambda cls, *a, cpu=cpu: cpu))
        assert precision.detected_candidates() == expected, flags


def test_the_measured_choice_is_the_fastest_candidate_on_this_machine():
    """The real probe: every candidate measured, fp32 the unit, and auto takes the fastest
    that beats fp32 by MIN_SPEEDUP (which one depends on the machine running the test)."""
    candidates = precision.detected_candidates()
    rates = precision.measured_rates(candidates)
    assert set(rates) == set(candidates) and rates["fp32"] == 1.0
    assert all(rate > 0 for rate in rates.values())
    chosen, why = choose_precision("auto", "cpu")
    best = max(rates, key=lambda kind: rates[kind])
    assert chosen == (best if rates[best] >= precision.MIN_SPEEDUP else "fp32"), why


def test_a_variant_failing_the_calibration_check_falls_back_to_fp32(tiny_clip, monkeypatch):
    import agile_modeling.encoders.open_clip as oc

    monkeypatch.setattr(oc, "MIN_VARIANT_COSINE", 1.01)  # nothing but fp32 itself can pass
    oc._image_tower.cache_clear()
    try:
        assert OpenClipEncoder(tiny_clip.spec, precision="int8").runtime == "cpu/fp32"
    finally:
        oc._image_tower.cache_clear()
