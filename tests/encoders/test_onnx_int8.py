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
    assert all(np.array_equal(r, results[0]) for r in results)
