"""A Label Studio server on this machine: its own virtual environment, SQLite, loopback only.

Used by ``agile up`` and by the integration tests. Label Studio pins its dependencies strictly,
so it lives in a virtual environment of its own (``label-studio==1.23.2``); we only start it
with the environment that keeps it offline and lets it talk to our backend on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from agile_modeling.errors import AgileError

log = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"


class LabelStudioServerError(AgileError):
    """The local Label Studio server could not be installed or started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_studio_executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


def ensure_installed(venv: Path, python: str = sys.executable) -> Path:
    """Create ``venv`` with Label Studio in it unless it is there already (about 70 s, 1 GB)."""
    exe = label_studio_executable(venv)
    if exe.exists():
        return exe
    print(f"installing label-studio=={LABEL_STUDIO_VERSION} into {venv} (once; about a minute)...", flush=True)
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"label-studio=={LABEL_STUDIO_VERSION}",
            ],
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise LabelStudioServerError(
            f"installing Label Studio into {venv} failed ({exc}); "
            f"try: {python} -m venv {venv} && {venv}/bin/pip install label-studio=={LABEL_STUDIO_VERSION}"
        ) from None
    return exe


@dataclass(frozen=True)
class Credentials:
    """The admin account of a local server (kept in its data folder so restarts reuse it)."""

    username: str
    password: str
    token: str

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Credentials:
        path = data_dir / "agile-credentials.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        data_dir.mkdir(parents=True, exist_ok=True)
        creds = cls("admin@agile.local", secrets.token_urlsafe(12), secrets.token_hex(20))
        path.write_text(json.dumps(creds.__dict__))
        path.chmod(0o600)
        return creds


class LabelStudioServer:
    """Start, wait for and stop one Label Studio server process.

    Args:
        data_dir: its database, uploads and credentials.
        port: the port (a free one if None); the server is bound to 127.0.0.1.
        venv: the virtual environment Label Studio is installed in.
        log_path: where its output goes (default ``data_dir/label-studio.log``).

    Label Studio serves local-files storage (``/data/local-files/?d=...``, to signed-in users and API
    tokens only) from :attr:`local_files_root`, ``data_dir/local-files``: a project adds a local
    storage with a path under it.
    """

    def __init__(self, data_dir: str | Path, venv: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.venv = Path(venv)
        self.log_path = log_path or self.data_dir / "label-studio.log"
        self.credentials = Credentials.load_or_create(self.data_dir)
        self.process: subprocess.Popen | None = None

    @property
    def local_files_root(self) -> Path:
        return self.data_dir / "local-files"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        c = self.credentials
        return {
            **os.environ,
            "LABEL_STUDIO_USERNAME": c.username,
            "LABEL_STUDIO_PASSWORD": c.password,
            "LABEL_STUDIO_USER_TOKEN": c.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "ML_BLOCK_LOCAL_IP": "false",
            # import_predictions then recounts only the tasks it touched, not every task of the project:
            # writing 50,000 predictions back in chunks of 1,000 slowed from 4.5 s to 29 s a chunk without it
            "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.local_files_root),
        }

    def start(self, timeout: float = 240.0) -> LabelStudioServer:
        self.local_files_root.mkdir(parents=True, exist_ok=True)
        exe = label_studio_executable(self.venv)
        if not exe.exists():
            raise LabelStudioServerError(
                f"Label Studio is not installed at {exe}: run `make label-studio` (or `agile up`, which installs it)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [
                    str(exe),
                    "start",
                    "--no-browser",
                    "--internal-host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "UP":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise LabelStudioServerError(
            f"Label Studio did not answer on {self.url} within {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
