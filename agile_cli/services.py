"""`agile backend`, `agile worker`, `agile up` and `agile down`: the services of the loop.

`agile up` starts, on this machine, a Label Studio server (its own virtual environment, SQLite,
127.0.0.1 only), the ML backend (gunicorn) and the sync worker (Celery, with its periodic sync),
imports the demo pool if the workspace has none, publishes a demo concept and prints where to go.
What it started is written to `<workspace>/stack.json`; `agile down` stops exactly that.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from agile_modeling.errors import AgileError
from sync.settings import Settings

if TYPE_CHECKING:
    from agile_modeling.workspace import Workspace

DEMO_CONCEPT: dict[str, Any] = dict(
    name="cat", positive=["cat"], negative=["dog"], description="a cat, any breed, any pose"
)
#: a second concept that works on the demo pool's CIFAR-10 photos with the offline phrase table
DEMO_TRY: dict[str, Any] = dict(
    name="road vehicles", positive=["car (automobile)", "truck"], negative=["airplane", "boat"]
)


def service_env(settings: Settings) -> dict[str, str]:
    """The environment the backend and the worker read their configuration from: this process's,
    with every setting of ``settings`` that is not its default."""
    return {**os.environ, **settings.as_env()}


def backend_command(bind: str, threads: int = 4, workers: int = 1) -> list[str]:
    """gunicorn serving the ML backend (one process by default: the model loads once); its config
    refuses an address other machines can reach without the secrets (ml_backend/exposure.py)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "ml_backend.wsgi:app",
        "--config",
        "python:ml_backend.gunicorn_conf",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--timeout",
        "120",
        "--access-logfile",
        "-",
    ]


def worker_command(beat: bool = True, concurrency: int = 1) -> list[str]:
    """A Celery worker of the sync tasks (with the periodic sync when ``beat``)."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "sync.celery_app",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--pool",
        "solo" if concurrency == 1 else "prefork",
    ]
    return cmd + (["--beat"] if beat else [])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR as servers set it: connections of
    a stopped server in TIME_WAIT do not hold the port (without it, `make up` right after `make down`
    saw 8080 and 9090 as taken and moved to other ports)."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def port_or_free(preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port (Label Studio would move silently)."""
    from sync.server import free_port

    return preferred if port_is_free(preferred) else free_port()


def stable_port(remembered: int | None, default: int, what: str, wait: float = 30.0) -> int:
    """The port a service had before (every task's image URL and the project's ML backend point at
    it): waited for while a stopping server still holds it, an error naming it if another program
    keeps it. Without a remembered port: ``default``, or a free one if taken."""
    if remembered is None:
        return port_or_free(default)
    deadline = time.monotonic() + wait
    while not port_is_free(remembered):
        if time.monotonic() > deadline:
            raise AgileError(
                f"port {remembered} of {what} is still in use after {wait:.0f} s: the workspace's tasks "
                f"point at it. Stop what listens there (`ss -ltnp | grep {remembered}`), or pass another "
                "port explicitly (existing tasks' images then need that port too)"
            )
        time.sleep(0.5)
    return remembered


def wait_http(
    url: str, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AgileError(f"{what} exited with code {process.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AgileError(f"{what} did not answer on {url} within {timeout:.0f} s; see {log}")


def start_process(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_pid(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM the process group of ``pid``, SIGKILL it if it lingers; whether it was running."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def import_demo_pool(workspace: Workspace, shared_data: Path | None = None) -> None:
    """The 500 CIFAR-10 images with real pixels and real CLIP embeddings, if the pool is empty."""
    from agile_modeling.simulate import find_data_dir
    from agile_modeling.simulate.shared_pool import SHARED_ENCODER, import_cifar_demo

    if (workspace.root / "pool" / "images.sqlite").exists() and len(workspace.store()) > 0:
        return
    data_dir = find_data_dir(shared_data)
    added = import_cifar_demo(workspace.store(512, SHARED_ENCODER), workspace.root / "demo-images", data_dir)
    workspace.set_config(text_vocabulary=str((data_dir / "text_vocabulary.npz").resolve()))
    print(f"demo pool: {added} CIFAR-10 photos with real CLIP ViT-B/32 embeddings ({data_dir})")


def cmd_up(args: argparse.Namespace) -> int:
    from agile_modeling.workspace import Workspace
    from sync.server import LabelStudioServer, ensure_installed

    base: Settings = args.settings
    workspace = Workspace(base.workspace)
    stack_file = workspace.root / "stack.json"
    logs = workspace.root / "logs"
    if stack_file.exists() and revive_stack(stack_file, logs, base):
        return 0
    if not args.no_demo:
        import_demo_pool(workspace, base.shared_data)
    venv = Path(args.label_studio_venv or base.label_studio_venv)
    ensure_installed(venv)
    print("starting Label Studio (the first start takes about a minute)...", flush=True)
    ports = workspace.config().get("ports", {})
    server = LabelStudioServer(
        workspace.root / "label-studio",
        port=args.port or stable_port(ports.get("label_studio"), 8080, "Label Studio"),
        venv=venv,
        log_path=logs / "label-studio.log",
    )
    process = server.start().process
    assert process is not None  # start() returns once the server answers
    started = {"label_studio": process.pid}
    try:
        backend_port = args.backend_port or stable_port(ports.get("backend"), 9090, "the ML backend")
        workspace.set_config(ports={"label_studio": server.port, "backend": backend_port})
        settings = base.with_(
            label_studio_url=server.url,
            label_studio_api_key=server.credentials.token,
            workspace=workspace.root,
            backend_url=f"http://127.0.0.1:{backend_port}",
            webhook_secret=base.webhook_secret or secrets.token_hex(16),
            # the same machine: the backend and the worker read Label Studio's files from the disk
            label_studio_data_dir=server.data_dir,
            local_files_root=server.local_files_root,
        )
        env = service_env(settings)
        backend = start_process(backend_command(f"127.0.0.1:{backend_port}"), env, logs / "backend.log")
        started["backend"] = backend.pid
        worker = start_process(worker_command(beat=True), env, logs / "worker.log")
        started["worker"] = worker.pid
        wait_http(f"{settings.backend_url}/health", 60, "the ML backend", backend, logs / "backend.log")
        write_stack(
            stack_file,
            {
                "pids": started,
                "label_studio_url": server.url,
                "backend_url": settings.backend_url,
                "username": server.credentials.username,
                "password": server.credentials.password,
                "api_key": server.credentials.token,
                "webhook_secret": settings.webhook_secret,
                "settings": settings.as_env(),  # a service started again gets exactly these
            },
        )
        project = publish_demo(workspace, settings, args) if not args.no_demo else None
    except BaseException:
        for pid in started.values():
            stop_pid(pid)
        stack_file.unlink(missing_ok=True)
        raise
    c = server.credentials
    print(f"\nLabel Studio: {server.url}" + (f"/projects/{project}/data" if project else ""))
    print(f"  login: {c.username}  password: {c.password}")
    print(f"ML backend:   {settings.backend_url}   worker log: {logs / 'worker.log'}")
    print("for the CLI in this shell:")
    print(
        f"  export LABEL_STUDIO_URL={server.url} LABEL_STUDIO_API_KEY={c.token} "
        f"AGILE_BACKEND_URL={settings.backend_url} AGILE_WORKSPACE={workspace.root.resolve()} "
        f"AGILE_WEBHOOK_SECRET={settings.webhook_secret}"
    )
    if project:
        print(
            f"a concept of your own on the demo pool (its phrases must be in `agile vocabulary`): "
            f"agile concept new {shlex.join([DEMO_TRY['name'], '--positive', *DEMO_TRY['positive'], '--negative', *DEMO_TRY['negative']])}"
        )
    print("stop everything with: make down   (or `agile down` with .venv/bin on PATH)")
    return 0


SERVICES = {"backend": "the ML backend", "worker": "the worker"}


def revive_stack(stack_file: Path, logs: Path, base: Settings) -> bool:
    """An earlier ``agile up`` left ``stack_file``. If all its processes live: say so (True). If the
    ML backend or the worker died: start it again with the stack's settings (True). If Label
    Studio died, or everything did: stop what is left and forget the stack (False: start afresh)."""
    stack = read_stack(stack_file)
    if stack is None:
        print(f"ignoring {stack_file}: it is not a stack that `agile up` wrote (starting afresh)", file=sys.stderr)
        stack_file.unlink()
        return False
    pids = stack["pids"]
    dead = [name for name, pid in pids.items() if not process_alive(pid)]
    if not dead:
        print(
            f"the stack of this workspace is running: Label Studio {stack['label_studio_url']}, ML backend "
            f"{stack['backend_url']} (stop it with: make down)"
        )
        return True
    if "label_studio" in dead or set(dead) == set(pids):
        for name, pid in pids.items():
            if name not in dead and group_runs(pid, MARKERS.get(name, "")):  # not a pid reused since
                stop_pid(pid)
        print(f"the previous stack had stopped ({', '.join(dead)}): starting it again", file=sys.stderr)
        stack_file.unlink()
        return False
    settings = base.with_(
        label_studio_url=stack["label_studio_url"],
        label_studio_api_key=stack["api_key"],
        workspace=stack_file.parent,
        backend_url=stack["backend_url"],
        webhook_secret=stack["webhook_secret"],
    )
    # the settings the stack was started with (basic auth, prefetch, ...), not this shell's
    env = {**service_env(settings), **stack.get("settings", {})}
    for name in dead:
        if group_runs(pids[name], MARKERS[name]):  # e.g. the worker's beat child, orphaned when the worker died
            stop_pid(pids[name], timeout=5)
        if name == "backend":
            process = start_process(backend_command(stack["backend_url"].split("//", 1)[1]), env, logs / "backend.log")
            wait_http(f"{settings.backend_url}/health", 60, "the ML backend", process, logs / "backend.log")
        else:
            process = start_process(worker_command(beat=True), env, logs / "worker.log")
        pids[name] = process.pid
        print(
            f"{SERVICES.get(name, name)} had stopped: started it again (pid {process.pid}); "
            f"its log: {logs / (name + '.log')}",
            file=sys.stderr,
        )
    stack["pids"] = pids
    write_stack(stack_file, stack)
    return True


MARKERS = {"label_studio": "label", "backend": "gunicorn", "worker": "celery"}  # in each service's command line


def group_runs(pgid: int, marker: str) -> bool:
    """Whether a live process of process group ``pgid`` has ``marker`` in its command line (ours, not
    a pid the system reused since)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) == pgid and marker.encode() in (proc / "cmdline").read_bytes():
                return True
        except (OSError, ProcessLookupError):
            continue
    return False


def read_stack(stack_file: Path) -> dict | None:
    """The stack ``agile up`` recorded (``pids`` as ints), or None if the file is not one."""
    try:
        stack = json.loads(stack_file.read_text())
        stack["pids"] = {str(name): int(pid) for name, pid in stack["pids"].items()}
        return stack
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_stack(stack_file: Path, stack: dict) -> None:
    """Write ``stack_file`` atomically, readable by its owner only (it holds the API key)."""
    tmp = stack_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(stack, indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, stack_file)


def dead_services(workspace_root: Path) -> list[str]:
    """Names of the services of this workspace's ``agile up`` stack that are not running (none
    without a stack: services run elsewhere are not ours to see)."""
    stack = read_stack(Path(workspace_root) / "stack.json")
    if stack is None:
        return []
    return [name for name, pid in stack["pids"].items() if not process_alive(pid)]


def publish_demo(workspace: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from agile_modeling.concepts import Concept
    from sync.rounds import ConceptSync

    if DEMO_CONCEPT["name"] not in workspace.sessions.names():
        workspace.sessions.create(
            Concept(
                DEMO_CONCEPT["name"],
                tuple(DEMO_CONCEPT["positive"]),
                tuple(DEMO_CONCEPT["negative"]),
                DEMO_CONCEPT["description"],
            )
        )
    report = ConceptSync(settings, workspace).publish(
        DEMO_CONCEPT["name"], seed_size=args.demo_batch, batch_size=args.demo_batch
    )
    print(
        f"demo concept {DEMO_CONCEPT['name']!r}: project {report.project_id}, {report.pending} images to rate "
        "(rate them all: the next batch arrives on its own)"
    )
    return report.project_id


def cmd_down(args: argparse.Namespace) -> int:
    from agile_modeling.workspace import Workspace

    workspace = Workspace(args.settings.workspace)
    stack_file = workspace.root / "stack.json"
    if not stack_file.exists():
        print(f"nothing to stop: no stack.json in {workspace.root}")
        return 0
    stack = read_stack(stack_file)
    if stack is None:
        raise AgileError(f"{stack_file} is not a stack `agile up` wrote: stop its processes by hand, then remove it")
    for name, pid in reversed(list(stack["pids"].items())):
        print(f"{'stopped' if stop_pid(int(pid)) else 'was not running'}: {name} (pid {pid})")
    stack_file.unlink()
    return 0


def cmd_backend(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving the backend (refused on an exposed address without secrets)."""
    from ml_backend.exposure import check_bind

    check_bind(args.settings, args.bind)
    cmd = backend_command(args.bind, args.threads, args.workers)
    os.execve(cmd[0], cmd, service_env(args.settings))  # the settings as resolved here (--workspace wins)


def cmd_worker(args: argparse.Namespace) -> int:
    """Replace this process with the Celery worker (``main`` has checked the settings: a bad one is
    one clear error there, not a traceback per worker process)."""
    cmd = worker_command(beat=not args.no_beat, concurrency=args.concurrency)
    os.execve(cmd[0], cmd, service_env(args.settings))  # the settings as resolved here (--workspace wins)


def add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="start Label Studio, the ML backend and the worker on this machine, with a demo concept",
        description=__doc__.split("\n\n")[1] + " Label Studio is installed into its own virtual environment "
        "on first use (about a minute, 1 GB).",
    )
    up.add_argument("--port", type=int, help="Label Studio's port (default 8080, or a free one if taken)")
    up.add_argument("--backend-port", type=int, help="the ML backend's port (default 9090, or a free one if taken)")
    up.add_argument(
        "--label-studio-venv",
        help="Label Studio's virtual environment (default: $AGILE_LABEL_STUDIO_VENV or .venv-label-studio)",
    )
    up.add_argument(
        "--no-demo",
        action="store_true",
        help="no demo pool and no demo concept: serve the workspace's own pool (`agile pool add` first)",
    )
    up.add_argument("--demo-batch", type=int, default=20, help="images per batch of the demo concept (default 20)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser(
        "down",
        help="stop what `agile up` started",
        description="Stop the Label Studio server, ML backend and worker listed in the workspace's "
        "stack.json (SIGTERM, then SIGKILL after 15 s). Labels and models stay in the workspace.",
    )
    down.set_defaults(func=cmd_down)
    backend = sub.add_parser(
        "backend",
        help="serve the Label Studio ML backend (gunicorn)",
        description="Run the ML backend under gunicorn. Configuration from the environment: LABEL_STUDIO_URL, "
        "LABEL_STUDIO_API_KEY, AGILE_WORKSPACE (or MODEL_DIR), BASIC_AUTH_USER / BASIC_AUTH_PASS, AGILE_WEBHOOK_SECRET, "
        "AGILE_IMAGE_SIGNING_KEY, CELERY_BROKER_URL. On an address other than loopback it refuses to start without "
        "AGILE_WEBHOOK_SECRET, BASIC_AUTH_USER and BASIC_AUTH_PASS.",
    )
    backend.add_argument("--bind", default="127.0.0.1:9090", help="host:port (default 127.0.0.1:9090)")
    backend.add_argument("--threads", type=int, default=4, help="threads per process (default 4)")
    backend.add_argument("--workers", type=int, default=1, help="processes (default 1: the model loads once)")
    backend.set_defaults(func=cmd_backend)
    worker = sub.add_parser(
        "worker",
        help="run the sync worker (Celery) that pushes batches and retrains",
        description="Run the Celery worker of the sync tasks. Without CELERY_BROKER_URL the broker is a folder in "
        "the workspace (nothing to install); with CELERY_BROKER_URL=redis://... workers can run anywhere.",
    )
    worker.add_argument("--no-beat", action="store_true", help="no periodic sync in this worker (run one elsewhere)")
    worker.add_argument("--concurrency", type=int, default=1, help="tasks at a time (default 1)")
    worker.set_defaults(func=cmd_worker)
