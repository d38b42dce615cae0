"""The real open_clip code on a small randomly initialised model (no weights can be downloaded here)."""

import numpy as np
import pytest
from PIL import Image

from agile_modeling.encoders import OpenClipEncoder, OpenClipSpec
from agile_modeling.encoders.open_clip import _load
from agile_modeling.errors import EncoderUnavailableError


def test_images_and_texts_embed_to_unit_vectors_of_one_space(tiny_clip):
    images = [Image.new("RGB", (50 + 10 * i, 40), color=(30 * i, 80, 200 - 20 * i)) for i in range(6)]
    img = tiny_clip.encode_images(images)
    txt = tiny_clip.encode_texts(["a dog", "gourmet tuna"])
    assert img.shape == (6, tiny_clip.dim) and txt.shape == (2, tiny_clip.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    assert not np.allclose(img[0], img[1])  # different pixels, different vectors


def test_batching_does_not_change_the_result(tiny_clip):
    images = [Image.new("RGB", (64, 64), color=(10 * i, 20 * i, 5 * i)) for i in range(5)]
    whole = tiny_clip.encode_images(images)
    one_by_one = OpenClipEncoder(tiny_clip.spec, batch_size=1).encode_images(images)
    np.testing.assert_allclose(whole, one_by_one, atol=1e-4)


def test_model_loads_once_per_process(tiny_clip):
    tiny_clip.encode_texts(["x"])
    before = _load.cache_info().hits
    other = OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained=None))
    other.encode_texts(["y"])
    assert _load.cache_info().hits > before
    assert other._parts[0] is tiny_clip._parts[0]


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(EncoderUnavailableError, match="no model named"):
        OpenClipEncoder(OpenClipSpec(model="ViT-Nope-99", pretrained=None)).encode_texts(["a"])


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained=str(tmp_path / "missing.pt"))).encode_texts(["a"])


def test_local_checkpoint_file_loads_its_weights(tiny_clip, tmp_path):
    import torch

    path = tmp_path / "vit-s-32.pt"
    torch.save(tiny_clip._parts[0].state_dict(), path)
    from_file = OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained=str(path)))
    np.testing.assert_allclose(from_file.encode_texts(["a cat"]), tiny_clip.encode_texts(["a cat"]), atol=1e-5)


def test_unreachable_weights_say_how_to_work_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailableError, match="local checkpoint file"):
        OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained="laion2b_s34b_b79k")).encode_texts(["a"])


def test_random_weights_are_the_same_in_every_process(image_folder):
    """A pool embedded by `agile pool add` and images scored by `agile concept score` (another
    process) must share one space, also for the random-weight models of tests and demos."""
    import subprocess
    import sys

    code = (
        "from agile_modeling.encoders import OpenClipEncoder, OpenClipSpec; from PIL import Image; import sys;"
        "e = OpenClipEncoder(OpenClipSpec(model='ViT-S-32', pretrained=None));"
        f"print(repr(e.encode_images([Image.open(r'{image_folder / 'img1.png'}').convert('RGB')])[0, :4].tolist()))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0].startswith("[")
