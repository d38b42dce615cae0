"""The CPU int8 image tower: ONNX Runtime where installed, torch's dynamic int8 otherwise, same space."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import agile_modeling.encoders.open_clip as oc
from agile_modeling.encoders import OpenClipEncoder, onnx_int8


@pytest.fixture()
def fresh_towers():
    oc._image_tower.cache_clear()
    yield
    oc._image_tower.cache_clear()


def _images():
    return [Image.new("RGB", (70, 60), color=(20 * i, 100 + 10 * i, 200 - 25 * i)) for i in range(6)]


def test_the_int8_tower_runs_in_onnx_runtime_in_the_same_space(tiny_clip, fresh_towers):
    assert onnx_int8.available()  # a runtime dependency: the product path is the ONNX one
    encoder = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="int8")
    tower, used = oc._image_tower(tiny_clip.spec, "cpu", "int8")
    assert used == "int8" and isinstance(tower, onnx_int8.OnnxInt8Tower)
    reference = tiny_clip.encode_images(_images())
    got = encoder.encode_images(_images())  # 6 images in batches of 4: any batch size runs
    assert got.shape == reference.shape
    assert (got * reference).sum(1).min() >= 0.999
    assert not np.allclose(got, reference)  # really another arithmetic, not the fp32 tower again


def test_without_onnx_runtime_int8_is_torchs_dynamic_quantization(tiny_clip, fresh_towers, monkeypatch):
    monkeypatch.setattr(onnx_int8, "available", lambda: False)
    tower, used = oc._image_tower(tiny_clip.spec, "cpu", "int8")
    assert used == "int8" and isinstance(tower, torch.nn.Module)
    assert any("quantized" in type(m).__module__ for m in tower.modules())
    got = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="int8").encode_images(_images())
    assert (got * tiny_clip.encode_images(_images())).sum(1).min() >= 0.999


def test_an_export_that_fails_falls_back_to_torch_int8_and_says_so(tiny_clip, fresh_towers, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::something' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(onnx_int8.OnnxInt8Tower, "__init__", broken)
    with caplog.at_level(logging.WARNING, logger=oc.__name__):
        tower, used = oc._image_tower(tiny_clip.spec, "cpu", "int8")
    assert used == "int8" and isinstance(tower, torch.nn.Module)
    assert "could not run the image tower in ONNX Runtime" in caplog.text and "aten::something" in caplog.text


def test_concurrent_first_requests_build_the_tower_once(tiny_clip, fresh_towers, monkeypatch):
    """A threaded server's first requests arrive together: one export, not one per thread."""
    import threading

    builds = []
    real_init = onnx_int8.OnnxInt8Tower.__init__

    def counting(self, *args, **kwargs):
        builds.append(threading.get_ident())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(onnx_int8.OnnxInt8Tower, "__init__", counting)
    encoder = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="int8")
    results = [None] * 3

    def embed(i):
        results[i] = encoder.encode_images(_images())

    threads = [threading.Thread(target=embed, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    tower, used = oc._image_tower(tiny_clip.spec, "cpu", "int8")
    assert used == "int8" and isinstance(tower, onnx_int8.OnnxInt8Tower)  # built, not fallen back
    assert all((r * results[0]).sum(1).min() >= 0.9999 for r in results)


def test_the_first_build_inside_inference_mode_is_still_onnx(tiny_clip, fresh_towers, caplog):
    """The worker, the backend and `pool add --quiet` first build the tower inside encode_preprocessed
    (torch.inference_mode): the export must not see inference tensors."""
    encoder = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="int8")
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        got = encoder.encode_images(_images())
    tower, used = oc._image_tower(tiny_clip.spec, "cpu", "int8")
    assert isinstance(tower, onnx_int8.OnnxInt8Tower), caplog.text
    assert "could not run" not in caplog.text and "pre-processing before quantization" not in caplog.text
    assert (got * tiny_clip.encode_images(_images())).sum(1).min() >= 0.999


def test_a_variant_that_raises_on_this_model_falls_back_to_fp32(tiny_clip, fresh_towers, monkeypatch, caplog):
    """RN50's attention pool breaks under torch's int8 (a TypeError at the first call): fp32, not a crash."""

    def broken_tower(visual, image_size):
        def tower(x):
            raise TypeError("expected Tensor as element 0 in argument 0, but got method")

        return tower

    monkeypatch.setattr(oc, "_int8_tower", broken_tower)
    with caplog.at_level(logging.WARNING, logger=oc.__name__):
        encoder = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="int8")
        assert encoder.runtime == "cpu/fp32"
    assert "does not run on this model" in caplog.text
    np.testing.assert_allclose(encoder.encode_images(_images()), tiny_clip.encode_images(_images()), atol=1e-6)


def test_an_onnx_runtime_that_fails_to_load_counts_as_absent(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def clashing(name, *args, **kwargs):
        if name == "onnx":
            raise TypeError("Descriptors cannot be created directly.")  # protobuf version clash
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", clashing)
    with caplog.at_level(logging.WARNING):
        assert onnx_int8.available() is False
    assert "does not load" in caplog.text and "Descriptors" in caplog.text


def test_folders_of_killed_exports_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{onnx_int8.FOLDER_PREFIX}{dead_pid}-abc"
    live = tmp_path / f"{onnx_int8.FOLDER_PREFIX}{os.getpid()}-def"
    other = tmp_path / "agile-onnx-notapid"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "tower.onnx").write_bytes(b"x" * 10)
    assert onnx_int8.remove_folders_of_dead_processes(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_a_link_under_the_prefix_is_left_alone(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    (tmp_path / f"{onnx_int8.FOLDER_PREFIX}999999999-x").symlink_to(victim)
    assert onnx_int8.remove_folders_of_dead_processes(tmp_path) == []
    assert (victim / "keep.txt").read_text() == "mine"


def test_a_convolutional_tower_runs_fp32_under_int8_without_an_export(fresh_towers, monkeypatch, caplog):
    """open_clip's ResNets: ONNX Runtime's quantizer rejects their convolutions and torch's int8 breaks
    their attention pool; int8 goes straight to fp32 instead of an export and two warnings."""
    from agile_modeling.encoders import OpenClipSpec

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten()).eval()
    conv.image_size = 32

    class Model:
        visual = conv

    monkeypatch.setattr(oc, "_loaded", lambda spec: (Model(), None, None))
    monkeypatch.setattr(onnx_int8, "OnnxInt8Tower", None)  # any export attempt would fail loudly
    with caplog.at_level(logging.INFO, logger=oc.__name__):
        tower, used = oc._image_tower(OpenClipSpec(model="RN-like", pretrained=None), "cpu", "int8")
    assert used == "fp32" and tower is conv
    assert "int8 applies to transformer image towers" in caplog.text and "WARNING" not in caplog.text


def test_concurrent_first_uses_load_the_model_once(tiny_clip, monkeypatch):
    import functools
    import threading

    loads = []
    raw = oc._load.__wrapped__

    @functools.lru_cache(maxsize=4)
    def counting(spec):
        loads.append(threading.get_ident())
        return raw(spec)

    monkeypatch.setattr(oc, "_load", counting)
    threads = [threading.Thread(target=lambda: OpenClipEncoder(tiny_clip.spec)._parts) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1


def test_a_model_first_loaded_inside_inference_mode_still_exports(tiny_clip, fresh_towers):
    """The first use of a model is often a text query (encode_texts runs in inference mode): the
    model's parameters must still be ordinary tensors, or the export fails and int8 falls back."""
    oc._load.cache_clear()
    try:
        with torch.inference_mode():
            OpenClipEncoder(tiny_clip.spec).encode_texts(["a dog"])
            encoder = OpenClipEncoder(tiny_clip.spec, batch_size=4, precision="int8")
            encoder.encode_images(_images())
        tower, used = oc._image_tower(tiny_clip.spec, "cpu", "int8")
        assert used == "int8" and isinstance(tower, onnx_int8.OnnxInt8Tower)
    finally:
        oc._load.cache_clear()
