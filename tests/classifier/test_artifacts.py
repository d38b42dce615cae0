import json

import numpy as np
import pytest

from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier, ModelRegistry
from agile_modeling.errors import SessionError


@pytest.fixture
def trained():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    return MLPClassifier(DEFAULT_RECIPE.with_(epochs=1, epoch_size=256)).fit(x, (x[:, 0] > 0).astype(int)), x


def test_versions_are_numbered_stable_names_of_loadable_artifacts(tmp_path, trained):
    clf, x = trained
    reg = ModelRegistry(tmp_path / "models", "gourmet-tuna")
    v1 = reg.save(clf, {"auc_pr": 0.7}, round=0)
    v2 = reg.save(clf, {"auc_pr": 0.8}, round=1)
    assert (v1.name, v2.name) == ("gourmet-tuna-v1", "gourmet-tuna-v2")
    assert reg.latest().name == "gourmet-tuna-v2" and [v.name for v in reg.versions()] == [v1.name, v2.name]
    again = ModelRegistry(tmp_path / "models", "gourmet-tuna").get("gourmet-tuna-v1")
    np.testing.assert_array_equal(again.load().decision_function(x), clf.decision_function(x))
    info = json.loads((v1.path / "model.json").read_text())
    assert info["metrics"] == {"auc_pr": 0.7} and info["round"] == 0 and len(info["weights_sha256"]) == 64
    assert info["recipe"]["hidden"] == [128]
    with pytest.raises(SessionError):
        reg.get("gourmet-tuna-v9")


def test_a_crash_while_writing_leaves_previous_versions_usable(tmp_path, trained, monkeypatch):
    clf, x = trained
    reg = ModelRegistry(tmp_path / "models", "c")
    reg.save(clf)

    def crash(*_, **__):
        raise OSError("disk full")

    monkeypatch.setattr("agile_modeling.classifier.artifacts.os.rename", crash)
    with pytest.raises(OSError):
        reg.save(clf)
    monkeypatch.undo()
    reopened = ModelRegistry(tmp_path / "models", "c")  # cleans the half-written folder
    assert [v.name for v in reopened.versions()] == ["c-v1"]
    assert not list((tmp_path / "models").glob(".tmp-*"))
    assert reopened.latest().load().decision_function(x).shape == (60,)
    assert reopened.save(clf).name == "c-v2"


# --- a save in progress in another process is never taken for an orphan ----------------------------
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

#: a real process saving a model whose write stalls (weights written, model.json not yet) until ``go`` exists
SLOW_SAVER = """
import sys, time
from pathlib import Path
import numpy as np
import torch
from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier, ModelRegistry

root, prefix, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
real_save = torch.save

def slow_save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    print("SAVING", flush=True)
    while not go.exists():
        time.sleep(0.02)

torch.save = slow_save
x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
clf = MLPClassifier(DEFAULT_RECIPE.with_(epochs=1, epoch_size=64, hidden=(8,))).fit(x, (x[:, 0] > 0).astype(int))
print("SAVED", ModelRegistry(root, prefix).save(clf).name, flush=True)
"""


def start_slow_saver(tmp_path: Path, root: Path, prefix: str) -> tuple[subprocess.Popen, Path]:
    """A subprocess holding a save open; returns it once its temporary folder exists, and the go file."""
    script, go = tmp_path / "slow_saver.py", tmp_path / "go"
    script.write_text(SLOW_SAVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), prefix, str(go)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline()
    assert line.strip() == "SAVING", f"the saver did not start its save: {line!r}"
    assert list(root.glob(".tmp-*")), "the save in progress has no temporary folder"
    return proc, go


def test_opening_a_registry_keeps_the_folder_of_a_save_in_progress_in_another_process(tmp_path):
    root = tmp_path / "models"
    proc, go = start_slow_saver(tmp_path, root, "c")
    try:
        for _ in range(5):  # what the backend does on every /setup
            assert ModelRegistry(root, "c").latest() is None
        assert list(root.glob(".tmp-*")), "a live writer's folder was removed"
        go.touch()
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out.split() == ["SAVED", "c-v1"]
    assert ModelRegistry(root, "c").latest().name == "c-v1" and not list(root.glob(".tmp-*"))


def test_the_folder_of_a_killed_writer_is_removed_by_the_next_open(tmp_path):
    root = tmp_path / "models"
    proc, _ = start_slow_saver(tmp_path, root, "c")
    os.kill(proc.pid, signal.SIGKILL)  # a crash mid-save: the kernel drops its lock
    proc.wait()
    assert list(root.glob(".tmp-*"))
    reg = ModelRegistry(root, "c")
    assert not list(root.glob(".tmp-*")) and reg.latest() is None
