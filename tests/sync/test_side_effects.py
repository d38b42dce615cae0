"""Item 8 of issue 11: importing the services creates nothing, and a real worker keeps kombu's
``control`` folder under the workspace broker folder instead of the directory it was started in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agile_cli.services import stop_pid, worker_command
from sync.celery_app import make_celery
from sync.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGILE_", "CELERY_", "LABEL_STUDIO_"))}
    env.pop("MODEL_DIR", None)
    return {**env, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", **extra}


def test_importing_the_worker_the_backend_and_the_cli_creates_no_file(tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    code = "import sync.tasks, ml_backend.app, agile_cli.main, sync.celery_app; sync.celery_app.app.conf.broker_url"
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean_env(), check=True, timeout=300)
    assert sorted(p.relative_to(cwd).as_posix() for p in cwd.rglob("*")) == []


@pytest.mark.slow
def test_a_worker_started_in_an_empty_directory_leaves_nothing_there(tmp_path):
    cwd, ws = tmp_path / "cwd", tmp_path / "ws"
    cwd.mkdir()
    env = clean_env(AGILE_WORKSPACE=str(ws), AGILE_SYNC_SECONDS="3600")
    log = tmp_path / "worker.log"
    cmd = worker_command(beat=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        app = make_celery(Settings(workspace=ws))
        deadline, replies = time.monotonic() + 120, []
        while not replies and time.monotonic() < deadline:  # a broadcast through the control folder, answered
            assert proc.poll() is None, log.read_text()[-3000:]
            replies = app.control.ping(timeout=1.0)
        assert replies, f"the worker never answered a ping: {log.read_text()[-3000:]}"
    finally:
        stop_pid(proc.pid)
    assert sorted(p.name for p in cwd.iterdir()) == [], "the worker wrote into the directory it was started in"
    assert (ws / "broker" / "control").is_dir() and list((ws / "broker" / "control").glob("*.exchange"))


def test_the_repository_keeps_no_kombu_control_folder():
    tracked = subprocess.run(["git", "ls-files", "control"], cwd=REPO, capture_output=True, text=True).stdout
    assert tracked == "" and "/control/" in (REPO / ".gitignore").read_text().split()
