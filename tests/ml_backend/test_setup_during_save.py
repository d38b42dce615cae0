"""Item 3 of issue 11 on the product path: the real backend (gunicorn, 4 threads) answers /setup
again and again while a real worker-like process is in the middle of saving a model version. The
backend opens the concept's model registry on every /setup; it must never take the save's
temporary folder for a crash's leftover. The model survives and becomes visible to /setup."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agile_cli.services import backend_command, service_env, start_process, stop_pid, wait_http
from agile_modeling.concepts import Concept
from agile_modeling.workspace import Workspace
from sync.server import free_port
from sync.settings import Settings
from sync.state import RATING, ProjectLink, RoundSettings, SyncState
from tests.classifier.test_artifacts import start_slow_saver

PROJECT = 11
AUTH = ("label-studio", "backend-secret")


@pytest.mark.slow
def test_hammering_setup_under_gunicorn_never_deletes_a_model_being_saved(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.sessions.create(Concept("red things", ("red",)))
    SyncState(ws.root / "label_studio.sqlite").link(
        ProjectLink("red-things", RATING, PROJECT, RoundSettings("rating", 4, 2, "margin", 0))
    )
    port = free_port()
    settings = Settings(
        workspace=ws.root,
        backend_url=f"http://127.0.0.1:{port}",
        basic_auth_user=AUTH[0],
        basic_auth_pass=AUTH[1],
        webhook_secret="shared-webhook-secret",
    )
    env = {**service_env(settings), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    backend = start_process(backend_command(f"127.0.0.1:{port}"), env, tmp_path / "backend.log")
    saver = None
    try:
        wait_http(f"{settings.backend_url}/health", 60, "the ML backend", backend, tmp_path / "backend.log")
        models = ws.root / "models" / "red-things"
        saver, go = start_slow_saver(tmp_path, models, "red-things")

        def setup(_) -> str | None:
            r = httpx.post(f"{settings.backend_url}/setup", json={"project": PROJECT}, auth=AUTH, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["model_version"]

        with ThreadPoolExecutor(4) as pool:  # as Label Studio does before every predict, from several tabs
            versions = list(pool.map(setup, range(60)))
        assert versions == [None] * 60
        assert list(models.glob(".tmp-*")), "the backend removed the folder of a save in progress"

        go.touch()
        out, _ = saver.communicate(timeout=60)
        assert saver.returncode == 0, f"the save failed: {out}"
        assert out.split() == ["SAVED", "red-things-v1"]
        assert setup(0) == "red-things-v1"
        assert not list(models.glob(".tmp-*"))
    finally:
        if saver is not None and saver.poll() is None:
            saver.kill()
            saver.wait()
        stop_pid(backend.pid)
        print((tmp_path / "backend.log").read_text()[-3000:] if os.path.exists(tmp_path / "backend.log") else "")
