"""Round latency on the product path, sharded pool scoring against in-process scoring.

A real Label Studio server, the ML backend under gunicorn and two real Celery workers (solo pool,
concurrency 1 each) over a real redis-server; a pool of ``--pool`` synthetic unit-norm float16
vectors (512-d, bench_pool.py's generator), stored in shards of ``--shard-rows`` rows. For each mode
(``AGILE_SHARDED_SCORING`` off, then on) a concept is published; a scripted user rates each round
through the Label Studio API, waits until the worker recorded all but the last rating, then posts
the last one. The latency is the time from that last rating to the next batch being complete in
Label Studio: webhook -> backend -> worker: retrain, select over the whole pool, push with
predictions (sharded: the chord of shard tasks and its callback, which pushes).

    .venv/bin/python benchmarks/bench_sharded_round.py --pool 1000000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_pool import RESULTS, synthetic_pool  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_cli.services import backend_command, service_env, stop_pid, wait_http, worker_command  # noqa: E402
from agile_modeling.concepts import Concept  # noqa: E402
from agile_modeling.simulate import load_shared_data  # noqa: E402
from agile_modeling.workspace import Workspace  # noqa: E402
from label_config import parse_rating_config  # noqa: E402
from sync.client import LabelStudioClient  # noqa: E402
from sync.rounds import IMAGE_ID, ROUND  # noqa: E402
from sync.server import LabelStudioServer, free_port  # noqa: E402
from sync.settings import Settings  # noqa: E402
from sync.state import SyncState  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = {"in-process": "0", "sharded": "1"}
CONCEPTS = {"in-process": "cat", "sharded": "dog"}  # phrases of the shared text vocabulary


def build_pool(ws: Workspace, n: int, shard_rows: int) -> np.ndarray:
    """The synthetic pool in the workspace's store; returns the mapped vectors (for the scripted user)."""
    x = np.load(synthetic_pool(n), mmap_mode="r")
    store = ws.store(x.shape[1], "synthetic")
    for a in range(0, n, shard_rows):
        b = min(a + shard_rows, n)
        store.append(
            np.asarray(x[a:b]),
            [f"https://images.invalid/{i}.jpg" for i in range(a, b)],
            [f"synthetic-{i}" for i in range(a, b)],
        )
    return x


def wait(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=250_000)
    parser.add_argument("--seed-size", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env_info = describe_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-round-"))
    procs: list[subprocess.Popen] = []
    ls = None
    results = {
        "environment": env_info,
        "pool": args.pool,
        "shard_rows": args.shard_rows,
        "batch_size": args.batch_size,
        "workers": 2,
        "modes": {},
    }
    try:
        ws = Workspace(work / "ws")
        t0 = time.perf_counter()
        x = build_pool(ws, args.pool, args.shard_rows)
        ws.set_config(text_vocabulary=str(load_shared_data().root / "text_vocabulary.npz"))
        print(f"pool of {args.pool:,} in {len(ws.store().shard_files())} shards ({time.perf_counter() - t0:.0f} s)")
        truth = np.asarray(x[:, 0] > 0.0)
        redis_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    shutil.which("redis-server"),
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(work),
                ],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        venv = REPO / Settings.from_env().label_studio_venv  # an absolute setting stays itself
        ls = LabelStudioServer(work / "label-studio", venv=venv).start()
        port = free_port()
        settings = Settings(
            label_studio_url=ls.url,
            label_studio_api_key=ls.credentials.token,
            workspace=ws.root,
            backend_url=f"http://127.0.0.1:{port}",
            basic_auth_user="label-studio",
            basic_auth_pass="bench-secret",
            webhook_secret="bench-webhook",
            broker_url=f"redis://127.0.0.1:{redis_port}/0",
        )
        base_env = {
            **service_env(settings),
            "PYTHONPATH": str(REPO),
            "AGILE_SYNC_SECONDS": "3600",
            "AGILE_IMAGES_UNSIGNED": "1",
        }
        procs.append(
            subprocess.Popen(
                backend_command(f"127.0.0.1:{port}"),
                env=base_env,
                cwd=REPO,
                stdout=open(work / "backend.log", "wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_http(f"{settings.backend_url}/health", 120, "the ML backend", procs[-1], work / "backend.log")
        client = LabelStudioClient(ls.url, ls.credentials.token)
        for mode, flag in MODES.items():
            env = {**base_env, "AGILE_SHARDED_SCORING": flag}
            workers = [
                subprocess.Popen(
                    worker_command(beat=False) + ["-n", f"{mode}{i}@%h"],
                    env=env,
                    cwd=REPO,
                    stdout=open(work / f"worker-{mode}{i}.log", "wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                for i in range(2)
            ]
            try:
                name = CONCEPTS[mode]
                ws.sessions.create(Concept(name))
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "agile_cli",
                        "concept",
                        "publish",
                        name,
                        "--size",
                        str(args.seed_size),
                        "--batch-size",
                        str(args.batch_size),
                    ],
                    env=env,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert out.returncode == 0, out.stderr
                pid = SyncState(ws.root / "label_studio.sqlite").for_concept(name).project_id
                schema = parse_rating_config(client.project_label_config(pid))
                latencies = []
                for r in range(args.rounds):
                    open_tasks = [t for t in client.iter_tasks(pid) if t.data[ROUND] == r]
                    for task in open_tasks[:-1]:
                        client.create_annotation(task.id, schema.rating(int(truth[task.data[IMAGE_ID]])))
                    session = Workspace(ws.root).sessions.open(name)
                    want = sum(len(session.batch(i)) for i in range(r)) + len(open_tasks) - 1
                    wait(lambda: len(session.labels()) >= want, 300, "the worker to record the ratings")
                    last = open_tasks[-1]
                    t0 = time.perf_counter()
                    client.create_annotation(last.id, schema.rating(int(truth[last.data[IMAGE_ID]])))
                    wait(
                        lambda: sum(t.data[ROUND] == r + 1 for t in client.iter_tasks(pid)) >= args.batch_size,
                        600,
                        f"round {r + 1} of {name} ({mode})",
                        interval=0.05,
                    )
                    latencies.append(time.perf_counter() - t0)
                    print(f"{mode}: round {r + 1} pushed {latencies[-1]:.2f} s after the last rating")
                logs = "".join((work / f"worker-{mode}{i}.log").read_text() for i in range(2))
                results["modes"][mode] = {
                    "latency_s": statistics.median(latencies),
                    "runs": latencies,
                    "score_shard_tasks": logs.count("agile.score_shard[") // 2,  # received + succeeded
                    "errors_in_worker_logs": logs.count("Traceback"),
                }
            finally:
                for w in workers:
                    stop_pid(w.pid)
    finally:
        if ls is not None:
            ls.stop()
        for p in procs:
            stop_pid(p.pid)
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()[:2]]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sharded_round.json").write_text(json.dumps(results, indent=1))
    md = [
        "# Round latency on the product path: sharded vs in-process pool scoring",
        "",
        environment_markdown(env_info).rstrip(),
        f"- load average at the end: {results['load_average_end']}",
        f"- pool: {args.pool:,} synthetic unit-norm float16 512-d vectors in shards of {args.shard_rows:,} rows; "
        f"batches of {args.batch_size}; real Label Studio, backend under gunicorn, 2 Celery workers (solo) over "
        "redis-server; latency = last rating posted -> next batch complete in Label Studio (webhook, retrain, "
        f"select over the whole pool, push with predictions); median of {args.rounds} rounds",
        "",
        "| mode | latency (median) | rounds | shard tasks |",
        "|---|---|---|---|",
    ]
    for mode, row in results["modes"].items():
        md.append(
            f"| {mode} | {row['latency_s']:.2f} s | {', '.join(f'{v:.2f}' for v in row['runs'])} s | "
            f"{row['score_shard_tasks']} |"
        )
    (RESULTS / "sharded_round.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
