"""The ``agile`` command as a user runs it, in a real subprocess."""

import csv
import os
import subprocess
import sys

import pytest

from agile_cli.main import build_parser


def agile(*args, cwd, env_extra=None, check=True):
    env = {**os.environ, "AGILE_WORKSPACE": str(cwd / "ws"), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "agile_cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"agile {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def all_subcommands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from all_subcommands(sub, prefix + (name,))


def test_every_subcommand_explains_itself(tmp_path):
    commands = list(all_subcommands(build_parser()))
    assert ("pool", "add") in commands and ("simulate",) in commands and ("concept", "train") in commands
    for command in commands:
        out = agile(*command, "--help", cwd=tmp_path).stdout
        assert "usage: agile" in out and len(out) > 150, command


def test_errors_are_for_people(tmp_path):
    proc = agile("concept", "status", "nope", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no concept 'nope'")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_whole_loop_from_the_command_line(tmp_path, image_folder, shared_data):
    """pool add (real open_clip code, random ViT-S-32 weights) -> concept new -> label -> train -> status."""
    out = agile(
        "pool", "add", str(image_folder), "--model", "ViT-S-32", "--pretrained", "none", "--quiet", cwd=tmp_path
    )
    assert "added 8 images" in out.stdout and "2 skipped" not in out.stdout
    assert "broken.jpg" in out.stderr  # the corrupt file is reported, the run went on
    # no text tower weights offline: a concept's phrases come from a phrase table of the same space
    # (here: the tiny model's own text embeddings written as a table)
    import numpy as np

    from agile_modeling.encoders import OpenClipEncoder, OpenClipSpec

    enc = OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained=None))
    np.savez(tmp_path / "vocab.npz", my_emb=enc.encode_texts(["red", "blue"]), my_names=np.array(["red", "blue"]))
    bad = agile(
        "concept",
        "new",
        "red",
        "--example",
        "/no/such.png",
        "--text-vocabulary",
        str(tmp_path / "vocab.npz"),
        cwd=tmp_path,
        check=False,
    )
    assert bad.returncode == 2 and "not in the pool: ['/no/such.png']" in bad.stderr
    new = agile(
        "concept",
        "new",
        "red",
        "--negative",
        "blue",
        "--size",
        "6",
        "--example",
        str(image_folder / "img0.jpg"),
        "--text-vocabulary",
        str(tmp_path / "vocab.npz"),
        cwd=tmp_path,
    )
    batch = [line.split("\t") for line in new.stdout.splitlines()[1:]]
    assert len(batch) == 6
    with open(tmp_path / "ratings.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([(uri, "positive" if i % 2 else "negative") for i, (_, uri) in enumerate(batch)])
    assert "stored 6 labels" in agile("concept", "label", "red", str(tmp_path / "ratings.csv"), cwd=tmp_path).stdout
    # bad rows are refused before anything is stored: an id outside the pool, a training image as held-out
    (tmp_path / "bad.csv").write_text("99999,positive\n")
    refused = agile("concept", "label", "red", str(tmp_path / "bad.csv"), cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "'99999' is not in the pool (ids 0-7" in refused.stderr
    (tmp_path / "clash.csv").write_text(f"{batch[0][0]},positive\n")
    clash = agile(
        "concept", "label", "red", str(tmp_path / "clash.csv"), "--source", "evaluation", cwd=tmp_path, check=False
    )
    assert clash.returncode == 2 and "already training ratings" in clash.stderr and "Nothing was stored" in clash.stderr
    # an image held out for evaluation is never selected for training
    held_out = sorted(set(range(8)) - {int(i) for i, _ in batch})[0]
    (tmp_path / "eval.csv").write_text(f"{held_out},negative\n")
    evaluation = agile("concept", "label", "red", str(tmp_path / "eval.csv"), "--source", "evaluation", cwd=tmp_path)
    assert "stored 1 evaluation labels: they train nothing" in evaluation.stdout
    trained = agile("concept", "train", "red", "--batch-size", "2", cwd=tmp_path).stdout
    assert (
        "trained red-v1 on 6 labels (3 positive)" in trained
        and "next batch (round 1, margin+coverage): 1 images" in trained
    )
    assert str(held_out) not in [line.split("\t")[0] for line in trained.splitlines()[2:]]
    status = agile("concept", "status", "red", cwd=tmp_path).stdout
    assert "round 0 (seed): 6/6 rated, model red-v1" in status and "round 1 (margin+coverage): 0/1 rated" in status
    exported = agile("concept", "export", "red", "--output", str(tmp_path / "exported"), cwd=tmp_path)
    assert "exported red-v1" in exported.stdout
    assert {p.name for p in (tmp_path / "exported").iterdir()} == {"weights.pt", "model.json", "embedding.json"}
    assert (
        agile("concept", "export", "red", "--output", str(tmp_path / "exported"), cwd=tmp_path, check=False).returncode
        == 2
    )
    scored = agile("concept", "score", "red", str(image_folder), "--output", str(tmp_path / "scores.csv"), cwd=tmp_path)
    assert "scored 8 images with red-v1, skipped 1" in scored.stderr and "broken.jpg" in scored.stderr
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert len(rows) == 8 and {r["model_version"] for r in rows} == {"red-v1"}
    assert all(
        0 <= float(r["score"]) <= 1 and r["label"] == ("positive" if float(r["score"]) >= 0.5 else "negative")
        for r in rows
    )
    # the CSV's scores are the exported model's, applied to the images' embeddings
    from agile_modeling.classifier import ModelVersion  # noqa: F401  (the export loads like any version)
    from agile_modeling.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    clf = ws.registry("red").get("red-v1").load()
    by_uri = ws.store().ids_of_uris([r["image"] for r in rows])
    expected = clf.predict_proba(ws.store().vectors().take([by_uri[r["image"]] for r in rows]).astype(np.float32))
    assert np.allclose([float(r["score"]) for r in rows], expected, atol=2e-3)
    no_model = agile("concept", "score", "nope", str(image_folder), cwd=tmp_path, check=False)
    assert no_model.returncode == 2 and "no concept 'nope'" in no_model.stderr
    dup = agile(
        "pool", "add", str(image_folder), "--model", "ViT-S-32", "--pretrained", "none", "--quiet", cwd=tmp_path
    )
    assert "added 0 images, 8 already in the store" in dup.stdout
    wrong = agile("pool", "add", str(image_folder), "--model", "ViT-B-32", "--quiet", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "would mix" in wrong.stderr


@pytest.mark.slow
def test_simulate_prints_rounds_and_writes_a_plot(tmp_path, shared_data):
    out = agile(
        "simulate",
        "--concept",
        "sunflowers",
        "--rounds",
        "1",
        "--batch-size",
        "50",
        "--out",
        str(tmp_path / "sim"),
        cwd=tmp_path,
    ).stdout
    assert "round 1:  100 ratings" in out and "zero-shot CLIP AUC-PR" in out
    assert (tmp_path / "sim" / "auc_pr.png").stat().st_size > 10_000
    assert "| sunflowers | easy |" in (tmp_path / "sim" / "results.md").read_text()


def test_simulate_trains_with_the_papers_recipe_when_asked(tmp_path, shared_data):
    """--recipe paper reaches the session: its model is trained at lr 1e-4 over every unlabeled pool image."""
    import json

    out = agile(
        "simulate",
        "--concept",
        "sunflowers",
        "--rounds",
        "0",
        "--batch-size",
        "50",
        "--recipe",
        "paper",
        "--keep",
        str(tmp_path / "keep"),
        "--out",
        str(tmp_path / "sim"),
        cwd=tmp_path,
    ).stdout
    assert "round 0:   50 ratings" in out
    (saved,) = [json.loads(p.read_text()) for p in (tmp_path / "keep").rglob("model.json")]
    assert saved["recipe"]["learning_rate"] == 1e-4 and saved["recipe"]["one_pass_over_random_negatives"]
    assert saved["recipe"]["hidden"] == [16]
    config = json.loads((tmp_path / "sim" / "results.json").read_text())["config"]
    assert config["recipe_name"] == "paper" and config["recipe"]["learning_rate"] == 1e-4


def test_a_failed_step_leaves_the_workspace_usable(tmp_path, image_folder):
    """No pool yet: concept creation fails cleanly and can be retried; a failed download records nothing."""
    proc = agile("concept", "new", "red", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "agile pool add" in proc.stderr and "Traceback" not in proc.stderr
    failed = agile(
        "pool",
        "add",
        str(image_folder),
        "--model",
        "ViT-S-32",
        "--pretrained",
        "laion2b_s34b_b79k",
        "--quiet",
        cwd=tmp_path,
        check=False,
    )
    assert failed.returncode == 2 and "local checkpoint file" in failed.stderr
    ok = agile("pool", "add", str(image_folder), "--model", "ViT-S-32", "--pretrained", "none", "--quiet", cwd=tmp_path)
    assert "added 8 images" in ok.stdout


def test_the_help_is_plain_text_and_names_what_the_engine_knows():
    """No reST markup in any --help; the strategy and label-source choices are the engine's."""
    from agile_cli.main import CLASSIFIER_KINDS, DEFAULT_STRATEGY, LABEL_SOURCES, SEED_BATCHES, STRATEGY_NAMES
    from agile_modeling import selection
    from agile_modeling.classifier import CLASSIFIERS
    from agile_modeling.selection import STRATEGIES
    from agile_modeling.session import EVALUATION, USER
    from agile_modeling.simulate.runner import SEED_BATCHES as RUNNER_SEED_BATCHES
    from sync.crowd import CROWD

    def parsers(parser, path=()):
        yield path, parser
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    yield from parsers(sub, path + (name,))

    every = dict(parsers(build_parser()))
    assert len(every) > 30
    for path, parser in every.items():
        assert "``" not in parser.format_help(), path
    assert STRATEGY_NAMES == sorted(STRATEGIES) and DEFAULT_STRATEGY == selection.DEFAULT_STRATEGY
    assert LABEL_SOURCES == [USER, EVALUATION, CROWD]
    assert CLASSIFIER_KINDS == list(CLASSIFIERS)
    assert SEED_BATCHES == list(RUNNER_SEED_BATCHES)
    assert {"strategy", "batch_size"} <= {a.dest for a in every[("concept", "new")]._actions}
    assert "source" in {a.dest for a in every[("concept", "label")]._actions}


def test_pool_add_runs_int8_in_onnx_runtime_as_a_user_runs_it(tmp_path, image_folder):
    """The product path of the int8 tower: `agile pool add` in a subprocess, with --quiet (the first
    build then happens inside inference mode, where the export once always fell back) and without
    (the reason for the precision is printed). Embeddings stay in the fp32 space."""
    import numpy as np

    from agile_modeling.workspace import Workspace

    args = ("pool", "add", str(image_folder), "--model", "ViT-S-32", "--pretrained", "none")
    for name in ("q", "a", "f"):
        (tmp_path / name).mkdir()
    quiet = agile("-v", *args, "--precision", "int8", "--quiet", cwd=tmp_path / "q")
    assert "exported to ONNX Runtime as dynamic int8" in quiet.stderr, quiet.stderr[-3000:]
    assert "could not run" not in quiet.stderr and "Ignore MatMul" not in quiet.stderr
    assert "(on cpu/int8)" in quiet.stdout
    auto = agile(*args, "--precision", "auto", cwd=tmp_path / "a")
    assert "image model ViT-S-32, cpu: " in auto.stderr and "speed relative to fp32" in auto.stderr
    agile(*args, "--precision", "fp32", "--quiet", cwd=tmp_path / "f")
    x = {}
    for name in ("q", "f"):
        store = Workspace(tmp_path / name / "ws").store()
        ids = list(range(len(store)))
        by_uri = dict(zip(store.uris(ids), np.asarray(store.vectors().take(ids), np.float32)))
        x[name] = np.stack([by_uri[uri] for uri in sorted(by_uri)])
    assert len(x["q"]) == len(x["f"]) == 8
    assert (x["q"] * x["f"]).sum(1).min() >= 0.999
