"""``agile deliberate`` end to end from the command line, offline, on the CIFAR-10 demo pool."""

import json

import pytest

from agile_cli.main import main
from agile_modeling.deliberation import DeliberationHistory
from agile_modeling.errors import DatasetNotFoundError
from agile_modeling.workspace import Workspace


@pytest.fixture
def demo_ws(tmp_path, monkeypatch):
    from agile_modeling.simulate import find_data_dir
    from agile_modeling.simulate.shared_pool import SHARED_ENCODER, import_cifar_demo

    try:
        data = find_data_dir()
    except DatasetNotFoundError as e:
        pytest.skip(str(e))
    ws = Workspace(tmp_path / "ws")
    import_cifar_demo(ws.store(512, SHARED_ENCODER), tmp_path / "images", data)
    ws.set_config(text_vocabulary=str(data / "text_vocabulary.npz"))
    monkeypatch.setenv("AGILE_WORKSPACE", str(ws.root))
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    return ws


def run(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_a_whole_deliberation_from_the_cli(demo_ws, capsys, tmp_path):
    out = run(capsys, "deliberate", "new", "dog", "--description", "dogs I like")
    assert "scoping proposal for 'dog'" in out and "#0" in out
    history = DeliberationHistory(demo_ws.sessions.open("dog"))
    items = history.scoping()
    assert len(items) >= 5 and all(len(it.image_ids) == 4 for it in items)

    run(capsys, "deliberate", "decide", "dog", "--flip", "0", "--discard", "1")
    assert [it.decision for it in history.scoping()[:2]] == ["flip", "discard"]
    out = run(capsys, "deliberate", "start", "dog")
    assert "Concept: dog" in out and "borderline round 0" in out
    batch = history.round(0)
    assert 1 <= len(batch.items) <= 5 and all(it.rationale for it in batch.items)

    captions = dict(zip([it.image_id for it in batch.items], demo_ws.store().uris([it.image_id for it in batch.items])))
    for it in batch.items:
        is_dog = "-dog" in captions[it.image_id]
        args = ["deliberate", "label", "dog", str(it.image_id), "in" if is_dog else "out"]
        if int(is_dog) != it.decision:
            args += ["--comment", "this is a cat" if "-cat" in captions[it.image_id] else "not a dog"]
        run(capsys, *args)
    out = run(capsys, "deliberate", "next", "dog")
    assert "borderline round 1" in out
    versions = history.versions()
    assert [v.author for v in versions] == ["scoping", "refinement"] and versions[1].reason["round"] == 0
    assert history.replay()[-1] == versions[-1].definition

    out = run(capsys, "deliberate", "show", "dog", "--history", "--json")
    assert "v0 [scoping]" in out and "v1 [refinement]" in out
    edited = versions[-1].definition.as_dict()
    edited["edge_cases"].append("puppies count")
    path = tmp_path / "def.json"
    path.write_text(json.dumps(edited))
    run(capsys, "deliberate", "edit", "dog", "--file", str(path), "--note", "puppies")
    assert history.current().author == "user" and "puppies count" in history.current().definition.edge_cases


def test_deliberation_errors_are_for_people(demo_ws, capsys):
    assert main(["deliberate", "start", "nope"]) == 2
    assert "no concept 'nope'" in capsys.readouterr().err
    run(capsys, "deliberate", "new", "dog")
    assert main(["deliberate", "next", "dog"]) == 2
    assert "finish scoping first" in capsys.readouterr().err
    assert main(["deliberate", "new", "paid to play"]) == 2
    assert "does not know" in capsys.readouterr().err
