"""`agile up` / `agile down` as a user runs them: real Label Studio, backend and worker processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agile_cli.services import process_alive, stop_pid
from agile_modeling.workspace import Workspace
from label_config import parse_rating_config
from sync.client import LabelStudioClient
from sync.server import ensure_installed
from tests.conftest import label_studio_venv
from tests.sync.conftest import REPO, wait_for

pytestmark = pytest.mark.slow


def agile(*args, workspace, timeout=400, **settings):
    env = {**os.environ, "AGILE_WORKSPACE": str(workspace), **settings}
    return subprocess.run(
        [sys.executable, "-m", "agile_cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
    )


def test_up_starts_the_stack_with_a_visible_demo_and_down_stops_it(tmp_path, shared_data):
    ensure_installed(label_studio_venv())
    ws = tmp_path / "ws"
    up = agile("up", "--demo-batch", "10", workspace=ws, AGILE_PREFETCH="0")  # a setting of that shell only
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        stack = json.loads((ws / "stack.json").read_text())
        assert f"login: {stack['username']}  password: {stack['password']}" in up.stdout
        assert "demo pool: 500 CIFAR-10 photos" in up.stdout and "agile down" in up.stdout
        client = LabelStudioClient(stack["label_studio_url"], stack["api_key"])
        tasks = list(client.iter_tasks(1))
        assert len(tasks) == 10
        # what the browser loads, from 127.0.0.1: the task's signed URL, without credentials
        src = tasks[0].data["image"]
        assert src.startswith(f"{stack['backend_url']}/images/") and "?exp=" in src and "&sig=" in src
        image = httpx.get(src, headers={"Origin": stack["label_studio_url"]}, timeout=10)
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        assert image.headers["access-control-allow-origin"] == stack["label_studio_url"]  # Label Studio only, not *
        unsigned = httpx.get(src.split("?")[0], timeout=10)
        assert unsigned.status_code == 403 and "not signed" in unsigned.json()["error"]
        # `agile up` prints the API key and the webhook secret (the export line for this shell)
        assert stack["api_key"] in up.stdout and f"AGILE_WEBHOOK_SECRET={stack['webhook_secret']}" in up.stdout
        assert httpx.get(f"{stack['backend_url']}/health", timeout=5).json()["status"] == "UP"
        again = agile("up", workspace=ws)
        assert again.returncode == 0 and "the stack of this workspace is running" in again.stdout

        # a dead worker: status says so, with the ratings waiting; `agile up` starts it again
        schema = parse_rating_config(client.project_label_config(1))
        stop_pid(stack["pids"]["worker"])
        for task in tasks[:3]:
            client.create_annotation(task.id, schema.rating(1))
        status = agile("concept", "status", "cat", workspace=ws)
        assert (
            "the worker of this workspace's stack is not running: 3 ratings in Label Studio are waiting"
            in status.stderr
        )
        revived = agile("up", workspace=ws)
        assert revived.returncode == 0 and "the worker had stopped: started it again" in revived.stderr
        stack = json.loads((ws / "stack.json").read_text())
        assert all(process_alive(pid) for pid in stack["pids"].values())
        # started again with the stack's settings, not those of the shell that revived it
        worker_env = Path(f"/proc/{stack['pids']['worker']}/environ").read_bytes().split(b"\0")
        assert b"AGILE_PREFETCH=0.0" in worker_env
        # Label Studio runs on this machine: the worker reads its uploads and local files from the disk
        ls_data = (ws / "label-studio").resolve()
        assert f"LABEL_STUDIO_BASE_DATA_DIR={ls_data}".encode() in worker_env
        assert f"LOCAL_FILES_DOCUMENT_ROOT={ls_data / 'local-files'}".encode() in worker_env
        wait_for(lambda: len(Workspace(ws).sessions.open("cat").labels()) == 3, 120, "the revived worker to record")
        assert "not running" not in agile("concept", "status", "cat", workspace=ws).stderr
    finally:
        down = agile("down", workspace=ws)
    assert down.returncode == 0 and "stopped: label_studio" in down.stdout
    assert not (ws / "stack.json").exists()
    assert not any(process_alive(pid) for pid in stack["pids"].values())

    # a restart right away keeps the ports, so every task's image still loads, and adds no second backend
    restarted = agile("up", workspace=ws)
    try:
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        new_stack = json.loads((ws / "stack.json").read_text())
        assert (new_stack["label_studio_url"], new_stack["backend_url"]) == (
            stack["label_studio_url"],
            stack["backend_url"],
        )
        client = LabelStudioClient(new_stack["label_studio_url"], new_stack["api_key"])
        for task in client.iter_tasks(1):
            image = httpx.get(task.data["image"], headers={"Origin": new_stack["label_studio_url"]}, timeout=10)
            assert image.status_code == 200, (task.data["image"], image.text[:200])
        backends = client.sdk.ml.list(project=1)
        assert [b.url for b in backends] == [new_stack["backend_url"]]
        hooks = [h.url for h in client.sdk.webhooks.list(project="1")]
        assert hooks == [f"{new_stack['backend_url']}/webhook"]
        assert "project 1, 7 images to rate" in restarted.stdout  # what is open, not what was pushed now
    finally:
        assert agile("down", workspace=ws).returncode == 0
    # a stack.json left by a machine that went down does not block the next `agile up`
    (ws / "stack.json").write_text(json.dumps({"pids": {"label_studio": stack["pids"]["label_studio"]}}))
    up_again = agile("up", "--no-demo", workspace=ws)
    try:
        assert up_again.returncode == 0, up_again.stderr
    finally:
        assert agile("down", workspace=ws).returncode == 0


def test_the_concept_suggested_after_make_up_works_with_the_demo_phrase_table():
    from agile_cli.services import DEMO_TRY
    from agile_modeling.encoders.vocabulary import VocabularyTextEncoder
    from agile_modeling.simulate import find_data_dir

    encoder = VocabularyTextEncoder.from_npz(find_data_dir() / "text_vocabulary.npz")
    assert encoder.encode_texts([*DEMO_TRY["positive"], *DEMO_TRY["negative"]]).shape == (4, encoder.dim)


def test_the_workspace_flag_reaches_the_worker_it_starts(tmp_path):
    """`agile --workspace DIR worker` replaces itself with Celery: the flag must survive the exec."""
    env = {k: v for k, v in os.environ.items() if k != "AGILE_WORKSPACE"}
    ws = tmp_path / "flag-ws"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agile_cli", "--workspace", str(ws), "worker", "--no-beat"],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "w"),  # the child keeps it open
    )
    try:
        deadline = time.monotonic() + 90
        while not (ws / "broker").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert (ws / "broker").exists(), (tmp_path / "worker.log").read_text()[-2000:]
        assert not (tmp_path / "agile-workspace").exists()
    finally:
        stop_pid(proc.pid)
