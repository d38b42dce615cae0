"""Shared fixtures: small synthetic pools, real images on disk, the shared real embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agile_modeling.errors import DatasetNotFoundError


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def tests_write_only_under_temporary_folders():
    """A test that forgets ``--workspace``/``AGILE_WORKSPACE`` writes the default workspace into the
    checkout (where ``.gitignore`` hides it): fail the run instead."""
    workspace = REPO / "agile-workspace"
    existed = workspace.exists()
    yield
    assert existed or not workspace.exists(), f"a test wrote {workspace}: tests must write under tmp_path"


@pytest.fixture
def clustered_pool():
    """``(x (6000, 64) float16 unit rows, labels (6000,))``: 12 Gaussian clusters on the sphere."""
    rng = np.random.default_rng(0)
    centres = unit_rows(rng.normal(size=(12, 64)))
    labels = rng.integers(0, 12, size=6000)
    x = unit_rows(centres[labels] + 0.35 * rng.normal(size=(6000, 64)) / np.sqrt(64) * 4)
    return x.astype(np.float16), labels


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Eight real PNG/JPEG files of different content, one corrupt file and one text file."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):
        pixels = (rng.random((40 + i, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="session")
def shared_data():
    """The shared real CLIP embeddings; tests that need them skip with the reason if absent."""
    from agile_modeling.simulate import load_shared_data

    try:
        return load_shared_data()
    except DatasetNotFoundError as exc:
        pytest.skip(f"shared real embeddings unavailable: {exc}")


@pytest.fixture(scope="session")
def tiny_clip():
    """A real open_clip model (ViT-S-32) with random weights: exercises the loading and encoding code."""
    from agile_modeling.encoders import OpenClipEncoder, OpenClipSpec

    return OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained=None), batch_size=4)


def label_studio_venv() -> Path:
    """Label Studio's virtual environment (``AGILE_LABEL_STUDIO_VENV``; relative: from the checkout)."""
    from sync.settings import Settings

    return Path(__file__).resolve().parents[1] / Settings.from_env().label_studio_venv


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server (its own venv, SQLite, 127.0.0.1), one per test session: here, so the
    sync and backend tests share it."""
    from sync.server import LabelStudioServer, ensure_installed

    venv = label_studio_venv()
    ensure_installed(venv)  # `make test` installs it first; a bare pytest run installs it here
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"), venv=venv).start()
    yield server
    server.stop()
