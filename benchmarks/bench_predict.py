"""Load test of ``/predict`` from a second process on loopback, bounded in count and time.

Starts the real ML backend (gunicorn, the same command as ``agile backend``) over the shared real
embeddings (34k-image pool) with a trained model version, then sends ``--requests`` requests (or
stops after ``--seconds``) of 1 and of 100 tasks each from this process, over keep-alive HTTP.
Reports throughput, p50/p99 latency, and the backend process's resident memory sampled every
``--sample-every`` requests (it must stay flat: no per-request growth).

    .venv/bin/python benchmarks/bench_predict.py --requests 3000 --seconds 120

``--pool N`` pads the pool to ``N`` images (the shared embeddings again, perturbed and
re-normalised, under new URIs and hashes) to measure what grows with the pool, such as counting
the images on every request (``--out`` names the result files).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_pool import RESULTS  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_cli.services import backend_command, service_env, start_process, stop_pid, wait_http  # noqa: E402
from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier  # noqa: E402
from agile_modeling.concepts import Concept  # noqa: E402
from agile_modeling.simulate import load_shared_data  # noqa: E402
from agile_modeling.simulate.shared_pool import SHARED_ENCODER, import_shared_pool  # noqa: E402
from agile_modeling.workspace import Workspace  # noqa: E402
from label_config import load_config  # noqa: E402
from sync.server import free_port  # noqa: E402
from sync.settings import Settings  # noqa: E402
from sync.state import RATING, ProjectLink, SyncState  # noqa: E402

PROJECT = 1
CONFIG = load_config("rating")  # sent with every request, as Label Studio does


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (gunicorn's worker), MiB."""
    total = 0
    for p in [pid, *[int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def pad_pool(store, base: np.ndarray, n: int, chunk: int = 250_000) -> None:
    """Append perturbed copies of ``base`` rows until the store holds ``n`` images."""
    rng = np.random.default_rng(1)
    while len(store) < n:
        start = len(store)
        m = min(chunk, n - start)
        x = base[rng.integers(0, len(base), m)].astype(np.float32) + rng.normal(0, 0.02, (m, base.shape[1])).astype(
            np.float32
        )
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = range(start, start + m)
        store.append(x, [f"synthetic://pad/{i}" for i in ids], [f"pad-{i:012d}" for i in ids])
        print(f"  padded pool to {len(store):,}/{n:,}", end="\r", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per batch size (upper bound)")
    parser.add_argument("--seconds", type=float, default=120.0, help="time bound per batch size")
    parser.add_argument("--sample-every", type=int, default=250)
    parser.add_argument(
        "--pool", type=int, default=0, help="pad the pool to this many images (default: shared pool only)"
    )
    parser.add_argument("--out", default="predict_load", help="name of the result files in benchmarks/results/")
    args = parser.parse_args()
    env_info = describe_environment()
    data = load_shared_data()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    ws = Workspace(work / "ws")
    import_shared_pool(ws.store(512, SHARED_ENCODER), data)
    if args.pool > len(ws.store()):
        pad_pool(ws.store(), data.pool.x, args.pool)
    pool_size = len(ws.store())
    ws.set_config(text_vocabulary=str(data.root / "text_vocabulary.npz"))
    ws.sessions.create(Concept("sunflower"))
    rng = np.random.default_rng(0)
    ids = rng.choice(len(data.pool), 600, replace=False)
    x = data.pool.x[ids].astype(np.float32)
    clf = MLPClassifier(DEFAULT_RECIPE).fit(x, (np.arange(600) % 5 == 0).astype(int))
    ws.registry("sunflower").save(clf, {}, round=1, num_labels=600, num_positive=120)
    SyncState(ws.root / "label_studio.sqlite").link(
        ProjectLink("sunflower", RATING, PROJECT, "rating", 100, 100, "margin", 0)
    )
    port = free_port()
    settings = Settings(workspace=ws.root, backend_url=f"http://127.0.0.1:{port}")
    proc = start_process(backend_command(f"127.0.0.1:{port}"), service_env(settings), work / "backend.log")
    results = {"environment": env_info, "pool": pool_size, "batches": {}}
    try:
        wait_http(f"{settings.backend_url}/health", 120, "the ML backend", proc, work / "backend.log")
        with httpx.Client(timeout=30) as http:
            for k in (1, 100):
                times, memory = [], []
                body_for = lambda n: {
                    "project": f"{PROJECT}.0",
                    "label_config": CONFIG,
                    "tasks": [
                        {"id": int(i), "data": {"image": f"shared://x/{i}", "agile_image_id": int(i)}}
                        for i in rng.choice(pool_size, k, replace=False)
                    ],
                }
                http.post(f"{settings.backend_url}/predict", json=body_for(k)).raise_for_status()  # warm: model loaded
                memory.append((0, rss_mib(proc.pid)))
                started = time.perf_counter()
                for r in range(1, args.requests + 1):
                    body = body_for(k)
                    t0 = time.perf_counter()
                    response = http.post(f"{settings.backend_url}/predict", json=body)
                    times.append(time.perf_counter() - t0)
                    assert response.status_code == 200 and len(response.json()["results"]) == k, response.text[:300]
                    if r % args.sample_every == 0:
                        memory.append((r, rss_mib(proc.pid)))
                    if time.perf_counter() - started > args.seconds:
                        break
                wall = time.perf_counter() - started
                q = np.quantile(times, [0.5, 0.99]) * 1000
                row = {
                    "requests": len(times),
                    "seconds": wall,
                    "requests_per_s": len(times) / wall,
                    "tasks_per_s": len(times) * k / wall,
                    "p50_ms": float(q[0]),
                    "p99_ms": float(q[1]),
                    "rss_mib": memory,
                    "rss_growth_mib": memory[-1][1] - memory[1][1] if len(memory) > 2 else 0.0,
                }
                results["batches"][k] = row
                print(
                    f"{k:3d} task(s)/request: {row['requests']} requests in {wall:.1f} s, {row['requests_per_s']:.0f} req/s, "
                    f"{row['tasks_per_s']:.0f} tasks/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, RSS "
                    f"{memory[0][1]:.0f} -> {memory[-1][1]:.0f} MiB"
                )
    finally:
        stop_pid(proc.pid)
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()[:2]]
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=1))
    md = [
        "# /predict load test (second process, loopback, keep-alive)",
        "",
        environment_markdown(env_info).rstrip(),
        f"- load average at the end: {results['load_average_end']}",
        f"- pool: {pool_size:,} images; one gunicorn "
        "process, 4 threads (as `agile backend`); requests sent one after another, each with the project's label "
        "config (validated per request) and tasks naming pool images",
        "",
        "| tasks per request | requests | throughput | p50 | p99 | backend RSS (after warm-up -> end) |",
        "|---|---|---|---|---|---|",
    ]
    for k, row in results["batches"].items():
        mem = row["rss_mib"]
        md.append(
            f"| {k} | {row['requests']} in {row['seconds']:.0f} s | {row['requests_per_s']:.0f} req/s "
            f"({row['tasks_per_s']:.0f} tasks/s) | {row['p50_ms']:.1f} ms | {row['p99_ms']:.1f} ms | "
            f"{mem[1][1] if len(mem) > 1 else mem[0][1]:.0f} -> {mem[-1][1]:.0f} MiB |"
        )
    (RESULTS / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
