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
    assert info["recipe"]["hidden"] == [128, 128, 128]
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
