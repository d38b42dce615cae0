"""Anyone's labeled embeddings as a simulation folder: the documented format, checked with errors that
say what is wrong, run end to end by `agile simulate --data` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agile_modeling.errors import DatasetFormatError, DatasetNotFoundError
from agile_modeling.simulate import load_shared_data, load_suite
from agile_modeling.simulate.suite import SuiteError

REPO = Path(__file__).resolve().parents[2]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def write_folder(root: Path, rng: np.random.Generator, dim: int = 32) -> Path:
    """Two datasets of clustered rows around class centres; phrases embedded at the centres."""
    root.mkdir(parents=True, exist_ok=True)
    centres = {}
    for name, classes in (("shapes", ["circle", "square", "star"]), ("colours", ["red", "blue"])):
        arrays = {}
        for split, per_class in (("val", 60), ("test", 30)):
            xs, ys = [], []
            for k, cls in enumerate(classes):
                centre = centres.setdefault(cls, rng.normal(size=dim))
                xs.append(centre + 0.35 * rng.normal(size=(per_class, dim)))
                ys.append(np.full(per_class, k))
            arrays[f"{split}_x"] = unit(np.concatenate(xs))
            arrays[f"{split}_y"] = np.concatenate(ys).astype(np.int16)
        np.savez(root / f"{name}.npz", classnames=np.array(classes), **arrays)
    names = sorted(centres)
    np.savez(root / "text_vocabulary.npz", my_emb=unit(np.stack([centres[n] for n in names])), my_names=np.array(names))
    return root


def test_a_folder_in_the_documented_format_loads(tmp_path):
    root = write_folder(tmp_path / "data", np.random.default_rng(0))
    data = load_shared_data(root)
    assert len(data.pool) == 60 * 5 and len(data.test) == 30 * 5 and data.pool.x.shape[1] == 32
    assert sorted(set(data.pool.dataset)) == ["colours", "shapes"]  # no known order: sorted by file name
    assert data.pool.class_name(0) in ("red", "blue") and "star" in data.vocabulary.phrases


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "shapes.npz").unlink() or (root / "colours.npz").unlink(), "no dataset file"),
        (lambda root: (root / "text_vocabulary.npz").unlink(), "text_vocabulary.npz"),
        (
            lambda root: (
                (root / "colours.npz").unlink()
                or np.savez(root / "shapes.npz", val_x=np.zeros((4, 32), np.float16), val_y=np.zeros(4, np.int16))
            ),
            "no dataset has a test split",
        ),
        (
            lambda root: np.savez(
                root / "shapes.npz",
                val_x=np.zeros((4, 32), np.float16),
                val_y=np.zeros(3, np.int16),
                test_x=np.zeros((2, 32), np.float16),
                test_y=np.zeros(2, np.int16),
            ),
            "val_x has 4 rows but val_y 3",
        ),
        (
            lambda root: np.savez(
                root / "shapes.npz",
                val_x=np.zeros((4, 16), np.float16),
                val_y=np.zeros(4, np.int16),
                test_x=np.zeros((2, 16), np.float16),
                test_y=np.zeros(2, np.int16),
            ),
            "16-dimensional",
        ),
        (
            lambda root: np.savez(
                root / "shapes.npz",
                classnames=np.array(["a"]),
                val_x=np.zeros((4, 32), np.float16),
                val_y=np.full(4, 3, np.int16),
                test_x=np.zeros((2, 32), np.float16),
                test_y=np.zeros(2, np.int16),
            ),
            "class index 3 but names only 1 classes",
        ),
    ],
)
def test_a_bad_folder_is_a_clear_error(tmp_path, damage, message):
    root = write_folder(tmp_path / "data", np.random.default_rng(0))
    damage(root)
    with pytest.raises(DatasetFormatError, match=message):
        load_shared_data(root)


def test_a_missing_folder_names_what_to_set(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="--data"):
        load_shared_data(tmp_path / "nope")


def suite_file(root: Path, truth: dict, **extra) -> Path:
    path = root / "concepts.json"
    concept = {"title": "round things", "name": "circle", "negatives": ["square"], "truth": truth, **extra}
    path.write_text(json.dumps({"concepts": [concept]}))
    return path


@pytest.mark.parametrize(
    "truth, message",
    [
        ({"shape": ["circle"]}, "no dataset 'shape'.*colours, shapes"),
        ({"shapes": ["circel"]}, "no class 'circel' in shapes.*circle"),
        ({"shapez": "all"}, "no dataset 'shapez'"),
        ({"shapes": [7]}, "class index 7.*3 classes"),
    ],
)
def test_a_ground_truth_that_names_nothing_is_a_clear_error(tmp_path, truth, message):
    data = load_shared_data(write_folder(tmp_path / "data", np.random.default_rng(0)))
    spec = load_suite(suite_file(tmp_path, truth))[0]
    with pytest.raises(SuiteError, match=message):
        spec.ground_truth(data.pool)


def test_agile_simulate_runs_on_a_folder_of_ones_own(tmp_path):
    root = write_folder(tmp_path / "data", np.random.default_rng(1))
    suite = suite_file(tmp_path, {"shapes": ["circle"]}, examples=[0])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "agile_cli",
            "simulate",
            "--data",
            str(root),
            "--suite",
            str(suite),
            "--all",
            "--rounds",
            "2",
            "--batch-size",
            "20",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pool: 300" in run.stdout and "round things" in run.stdout
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    final = result["sessions"][0]["rounds"][-1]["metrics"]["auc_pr"]
    assert final > 0.9  # a separable concept, learned from 60 ratings
    bad = subprocess.run(
        [sys.executable, "-m", "agile_cli", "simulate", "--data", str(tmp_path / "nope"), "--rounds", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--data" in bad.stderr


def test_agile_study_says_when_a_pool_is_too_small_for_its_conditions(tmp_path):
    root = write_folder(tmp_path / "data", np.random.default_rng(1))
    suite = suite_file(tmp_path, {"shapes": ["circle"]})
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "agile_cli",
            "study",
            "--data",
            str(root),
            "--suite",
            str(suite),
            "--rounds",
            "1",
            "--out",
            str(tmp_path / "study"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "largest condition rates 1000 pool images" in run.stderr and "this pool has 300" in run.stderr
