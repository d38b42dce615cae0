"""A real Label Studio server (label-studio 1.23.2 in its own venv, SQLite, 127.0.0.1, a free port),
the real ML backend under gunicorn and a real Celery worker, as subprocesses."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agile_cli.services import backend_command, service_env, stop_pid, wait_http, worker_command
from sync.server import free_port
from sync.settings import Settings

REPO = Path(__file__).resolve().parents[2]


class Service:
    """A backend or worker subprocess that a test can kill and restart."""

    def __init__(self, cmd: list[str], env: dict, log: Path) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True
            )
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def stop(self) -> None:
        if self.process:
            stop_pid(self.process.pid)


@pytest.fixture
def services(tmp_path, label_studio):
    """Start the backend (gunicorn, basic auth on) and a worker for a workspace; stop them after the test."""
    started: list[Service] = []

    def start(
        workspace: Path, sync_seconds: float = 5.0, broker_url: str | None = None, prefetch: float = 0.0, **overrides
    ) -> tuple[Settings, Service, Service]:
        """``prefetch`` 0 by default: most tests follow the paper's rounds to compare with the engine;
        ``overrides``: other :class:`Settings` fields."""
        port = free_port()
        settings = Settings(
            label_studio_url=label_studio.url,
            label_studio_api_key=label_studio.credentials.token,
            workspace=workspace,
            backend_url=f"http://127.0.0.1:{port}",
            basic_auth_user="label-studio",
            basic_auth_pass="backend-secret",
            webhook_secret="shared-webhook-secret",
            broker_url=broker_url,
            prefetch=prefetch,
            **overrides,
        )
        env = {**service_env(settings), "AGILE_SYNC_SECONDS": str(sync_seconds), "PYTHONPATH": str(REPO)}
        backend = Service(backend_command(f"127.0.0.1:{port}"), env, tmp_path / "backend.log").start()
        worker = Service(worker_command(beat=True), env, tmp_path / "worker.log").start()
        started.extend([backend, worker])
        wait_http(f"{settings.backend_url}/health", 60, "the ML backend", backend.process, backend.log)
        return settings, backend, worker

    yield start
    for service in started:
        service.stop()


def wait_for(condition, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def redis_url(tmp_path):
    """A real Redis server (Debian's redis-server, installed by `make test`) on a free port."""
    import shutil

    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed: run `make redis` (apt-get install redis-server)"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port)
    wait_for(lambda: _ping(client), 20, "redis-server to answer")
    yield f"redis://127.0.0.1:{port}/0"
    # Celery result objects of this server unsubscribe from it when collected: collect them while it
    # still answers. Collected later, their __del__ fails, and CPython 3.11 formats that traceback
    # with ast.parse inside whatever ast.parse was running (a test's), which then raises
    # "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
    gc.collect()
    proc.terminate()
    proc.wait(10)


def _ping(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def run_agile(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `agile` command in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agile_cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
    )


@dataclass
class ManualLoop:
    """A concept of the shared data published to the real server, synced by hand (no worker)."""

    workspace: object
    settings: Settings
    sync: object
    spec: object
    truth: object
    project_id: int

    def rate_open_tasks(self) -> None:
        from tests.sync.test_label_studio_loop import rate

        open_tasks = [t for t in self.sync.client.iter_tasks(self.project_id) if not t.annotations]
        rate(self.sync.client, self.project_id, open_tasks, self.truth)


@pytest.fixture
def manual_loop(tmp_path, label_studio, shared_data):
    """``start(suite title, seed size, batch size, strategy)`` -> a :class:`ManualLoop` with its seed batch pushed."""
    from agile_modeling.simulate import load_suite
    from sync.rounds import ConceptSync
    from tests.sync.test_label_studio_loop import shared_workspace

    def start(title: str, seed_size: int = 20, batch_size: int = 10, strategy: str | None = None) -> ManualLoop:
        spec = next(s for s in load_suite() if s.title == title)
        ws = shared_workspace(tmp_path / "ws", shared_data)
        ws.sessions.create(spec.concept())
        settings = Settings(
            label_studio_url=label_studio.url,
            label_studio_api_key=label_studio.credentials.token,
            workspace=ws.root,
            prefetch=0.0,
        )  # the paper's rounds: every batch once the last is rated
        sync = ConceptSync(settings, ws)
        rounds = {"strategy": strategy} if strategy else {}  # else the default strategy
        project_id = sync.publish(spec.concept().name, seed_size=seed_size, batch_size=batch_size, **rounds).project_id
        return ManualLoop(ws, settings, sync, spec, spec.ground_truth(shared_data.pool), project_id)

    return start


@dataclass
class S3Server:
    """moto's S3-compatible server on 127.0.0.1 with one IAM user allowed everything.

    Open by default (any key is accepted, as moto does); ``require_auth()`` makes it check keys
    (``InvalidAccessKeyId`` for unknown ones). moto cannot check presigned URLs while it checks keys
    (it answers 500), so keep it open for presigned reads."""

    endpoint: str
    key: str
    secret: str
    region: str = "us-east-1"

    def client(self, service: str = "s3", key: str | None = None, secret: str | None = None):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key or self.key,
            aws_secret_access_key=secret or self.secret,
        )

    def require_auth(self, on: bool = True) -> None:
        import httpx

        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0" if on else b"inf").raise_for_status()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's server mode as a subprocess on a free port (about 1 s to start); killed at teardown."""
    import json

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{endpoint}/moto-api/"), 30, "moto's server to answer")
        iam = S3Server(endpoint, "bootstrap", "bootstrap").client("iam")
        iam.create_user(UserName="agile")
        everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="agile", PolicyName="everything", PolicyDocument=json.dumps(everything))
        key = iam.create_access_key(UserName="agile")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


@pytest.fixture
def chromium():
    """Headless Chromium, tall enough for Label Studio's whole Connect dialog with basic auth on (1400 x 857
    shown) and for a Data Manager table."""
    from tests.browser import headless_chromium

    with headless_chromium(1400, 1000) as driver:
        yield driver
