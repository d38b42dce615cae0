"""The backend as it runs (gunicorn subprocess, `agile backend`): it refuses to start on an address
other machines can reach without its secrets, and, running, it serves images only by signed URL,
never answers a 500 to hostile credentials or image URLs, and answers every readable task."""

import base64
import os
import subprocess
import sys

import httpx
import pytest

from agile_cli.services import backend_command, service_env, stop_pid, wait_http
from ml_backend.exposure import UnsafeBindError, check_bind
from sync.rounds import ConceptSync
from sync.server import free_port
from sync.settings import Settings
from tests.ml_backend.conftest import PROJECT, train_model
from tests.ml_backend.test_app import predict_body

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET_VARS = (
    "BASIC_AUTH_USER",
    "BASIC_AUTH_PASS",
    "AGILE_WEBHOOK_SECRET",
    "AGILE_IMAGES_UNSIGNED",
    "AGILE_IMAGE_SIGNING_KEY",
)


def bare_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return {**env, "AGILE_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": REPO, **extra}


@pytest.mark.parametrize(
    "bind, ok",
    [
        ("127.0.0.1:9090", True),
        ("localhost:9090", True),
        ("[::1]:9090", True),
        ("unix:/tmp/agile.sock", True),
        ("0.0.0.0:9090", False),
        ("[::]:9090", False),
        ("10.1.2.3:9090", False),
        (("0.0.0.0", 9090), False),
    ],
)
def test_which_binds_need_the_secrets(bind, ok):
    bare = Settings()
    if ok:
        check_bind(bare, bind)
    else:
        with pytest.raises(UnsafeBindError, match="without AGILE_WEBHOOK_SECRET, BASIC_AUTH_USER, BASIC_AUTH_PASS"):
            check_bind(bare, bind)
    check_bind(Settings(webhook_secret="w", basic_auth_user="u", basic_auth_pass="p"), bind)
    with pytest.raises(UnsafeBindError, match="without BASIC_AUTH_PASS: set it"):
        check_bind(Settings(webhook_secret="w", basic_auth_user="u"), "0.0.0.0:1")


def test_gunicorn_refuses_a_reachable_address_without_the_secrets(tmp_path):
    run = subprocess.run(
        backend_command(f"0.0.0.0:{free_port()}"),
        env=bare_env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "refusing to start the ML backend on 0.0.0.0" in run.stderr
    assert "AGILE_WEBHOOK_SECRET, BASIC_AUTH_USER, BASIC_AUTH_PASS" in run.stderr, run.stderr[-2000:]


def test_agile_backend_refuses_too_and_so_does_the_unsigned_image_mode_off_loopback(tmp_path):
    agile = [sys.executable, "-m", "agile_cli", "backend", "--bind", f"0.0.0.0:{free_port()}"]
    run = subprocess.run(agile, env=bare_env(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "AGILE_WEBHOOK_SECRET, BASIC_AUTH_USER, BASIC_AUTH_PASS" in run.stderr, run.stderr
    secrets = dict(BASIC_AUTH_USER="u", BASIC_AUTH_PASS="p", AGILE_WEBHOOK_SECRET="w", AGILE_IMAGES_UNSIGNED="1")
    run = subprocess.run(
        backend_command(f"0.0.0.0:{free_port()}"),
        env=bare_env(tmp_path, **secrets),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "AGILE_IMAGES_UNSIGNED=1" in run.stderr and "loopback" in run.stderr, run.stderr[
        -2000:
    ]


@pytest.mark.slow
def test_the_running_backend_serves_signed_images_and_answers_hostile_requests(tmp_path, backend_workspace):
    """gunicorn on 0.0.0.0 with its secrets: starts; images by signed URL only; no 500."""
    train_model(backend_workspace)
    port = free_port()
    settings = Settings(
        workspace=backend_workspace.root,
        backend_url=f"http://127.0.0.1:{port}",
        label_studio_url="http://127.0.0.1:8080",
        label_studio_api_key="k" * 40,
        basic_auth_user="label-studio",
        basic_auth_pass="backend-secret",
        webhook_secret="hook",
    )
    env = {**service_env(settings), "PYTHONPATH": REPO}
    for name in ("AGILE_IMAGES_UNSIGNED", "AGILE_IMAGE_SIGNING_KEY"):
        env.pop(name, None)
    log = tmp_path / "backend.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            backend_command(f"0.0.0.0:{port}"),
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"{settings.backend_url}/health", 90, "the ML backend", proc, log)
        # what the sync puts into a task, loaded as the browser does (no credentials, an Origin header)
        signed = ConceptSync(settings, backend_workspace, client=object()).image_urls([1])[0]
        image = httpx.get(signed, headers={"Origin": "http://127.0.0.1:8080"}, timeout=10)
        assert image.status_code == 200 and image.content[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
        assert image.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
        unsigned = httpx.get(f"{settings.backend_url}/images/1", timeout=10)
        assert unsigned.status_code == 403 and "not signed" in unsigned.json()["error"]
        assert httpx.get(signed.replace("/images/1?", "/images/2?"), timeout=10).status_code == 403

        auth = ("label-studio", "backend-secret")
        tasks = [
            {"id": 1, "data": {"image": "x", "agile_image_id": 0}},
            {"id": 2, "data": {"image": "https://127.0.0.1:8080:1/x"}},
            {"id": 3, "data": {"image": "http://127.0.0.1:6379/"}},
            {"id": 4, "data": {"image": "http://evil.example/images/1"}},
        ]
        answer = httpx.post(f"{settings.backend_url}/predict", json=predict_body(*tasks), auth=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert results[0][0]["model_version"] == "red-things-v1" and results[1:] == [[], [], []]
        for user in ("ü", "\u4e2d"):
            header = {"Authorization": "Basic " + base64.b64encode(f"{user}:x".encode()).decode()}
            assert (
                httpx.post(
                    f"{settings.backend_url}/setup", json={"project": f"{PROJECT}.1"}, headers=header, timeout=10
                ).status_code
                == 401
            )
        hook = httpx.post(
            f"{settings.backend_url}/webhook",
            json={"action": "ANNOTATION_CREATED", "project": PROJECT},
            headers={"X-Agile-Secret": "é".encode()},
            timeout=10,
        )
        assert hook.status_code == 401
    finally:
        stop_pid(proc.pid)
    text = log.read_text()
    assert " 500 " not in text and "Traceback" not in text, text[-3000:]
    assert '"GET /images/1 HTTP/1.1" 200' in text and "sig=" not in text  # logged, without the image's credential
    assert "no prediction for task 2" in text and "no prediction for task 3" in text  # logged, with the reason


def test_the_backend_logs_its_own_work_at_log_level_and_other_libraries_at_warning(tmp_path):
    """What an operator sees in the backend's log: our once-per-process facts (the model loaded, the
    image tower's precision and why) at LOG_LEVEL, not every httpx request."""
    probe = (
        "import logging, ml_backend.wsgi\n"
        "logging.getLogger('agile_modeling.encoders.precision').info('probe line')\n"
        "logging.getLogger('httpx').info('HTTP Request: GET http://x')\n"
    )
    for level, shown in (("info", True), ("warning", False)):
        run = subprocess.run(
            [sys.executable, "-c", probe],
            env=bare_env(tmp_path, LOG_LEVEL=level),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert ("INFO agile_modeling.encoders.precision: probe line" in run.stderr) is shown, run.stderr[-2000:]
        assert "HTTP Request" not in run.stderr
