"""Latency of the Label Studio loop as the rater lives it, and ``/predict``, on real servers.

Starts a real Label Studio (its own venv), the ML backend under gunicorn and a Celery worker, over
a pool of ``--pool`` images: the shared real embeddings (34,195 rows with ground truth) padded
with synthetic distractors (ground truth negative) from ``bench_pool.py``'s cached pool. A
scripted rater works through Label Studio's label stream (``/api/projects/<id>/next``, what the
"Label All Tasks" button serves), answering from the ground truth of "sunflowers" after
``--think`` seconds per image (a person looking at it). For every rating we time the wait from
the previous annotation's HTTP response to the stream serving the next task (webhook -> backend
-> broker -> worker: sync, retrain, select over the whole pool, push with predictions, when the
queue ran dry). Reported: the waits at the first task of every new batch ("last rating -> next
task visible"), all waits, and seconds per image, for the ``--prefetch`` it ran with (0: the
paper's rounds; 0.5: the product's default). Then ``/predict`` is timed for 1 and 100 tasks per
request from this process (a second process on loopback), with the newest model.

    .venv/bin/python benchmarks/bench_label_studio.py --pool 1000000 --batch 20 --rounds 5 --prefetch 0.5 \
        --out benchmarks/results/label_studio_prefetch.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_pool import DATA, RESULTS, synthetic_pool  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_cli.services import backend_command, service_env, start_process, stop_pid, wait_http, worker_command  # noqa: E402
from agile_modeling.simulate import load_shared_data, load_suite  # noqa: E402
from agile_modeling.simulate.shared_pool import SHARED_ENCODER, import_shared_pool  # noqa: E402
from agile_modeling.workspace import Workspace  # noqa: E402
from label_config import parse_rating_config  # noqa: E402
from sync.client import LabelStudioClient  # noqa: E402
from sync.rounds import IMAGE_ID, ConceptSync  # noqa: E402
from sync.server import LabelStudioServer, free_port  # noqa: E402
from sync.settings import Settings  # noqa: E402

CONCEPT = "sunflowers"


def build_workspace(n: int, data) -> Workspace:
    """Real pool rows first (ids 0..34,194), then synthetic distractors up to ``n`` (cached)."""
    root = DATA / f"label-studio-workspace-{n}"
    ws = Workspace(root)
    if (root / "pool" / "images.sqlite").exists():
        return ws
    store = ws.store(512, SHARED_ENCODER)
    import_shared_pool(store, data)
    extra = n - len(data.pool)
    if extra > 0:
        synthetic = np.load(synthetic_pool(1_000_000 if extra <= 1_000_000 else n), mmap_mode="r")
        step = 250_000
        for start in range(0, extra, step):
            m = min(step, extra - start)
            store.append(
                synthetic[start : start + m],
                [f"synthetic://{start + i}" for i in range(m)],
                [f"synthetic:{start + i}" for i in range(m)],
            )
            print(f"  pool {len(store):,}/{n:,}", end="\r", flush=True)
        print()
    ws.set_config(text_vocabulary=str(data.root / "text_vocabulary.npz"))
    return ws


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="rated batches to time (seed included)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--predict-runs", type=int, default=50)
    parser.add_argument("--prefetch", type=float, default=0.5, help="AGILE_PREFETCH of the worker (0: the paper)")
    parser.add_argument("--think", type=float, default=1.5, help="seconds the scripted rater looks at each image")
    parser.add_argument("--out", default=str(RESULTS / "label_studio.json"))
    args = parser.parse_args()
    env_info = describe_environment()

    data = load_shared_data()
    spec = next(s for s in load_suite() if s.title == CONCEPT)
    ws = build_workspace(args.pool, data)
    truth = np.zeros(len(ws.store()), dtype=bool)
    truth[: len(data.pool)] = spec.ground_truth(data.pool)
    for stale in ("sessions.sqlite", "label_studio.sqlite", "models", "broker", "locks"):  # each run starts afresh
        path = ws.root / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for wal in ws.root.glob("*.sqlite-*"):
        wal.unlink()
    ws = Workspace(ws.root)
    name = spec.concept().name
    ws.sessions.create(spec.concept())

    tmp = Path(tempfile.mkdtemp(prefix="bench-ls-"))
    server = LabelStudioServer(
        tmp / "label-studio", venv=Path(__file__).resolve().parents[1] / Settings.from_env().label_studio_venv
    ).start()
    port = free_port()
    settings = Settings(
        label_studio_url=server.url,
        label_studio_api_key=server.credentials.token,
        workspace=ws.root,
        backend_url=f"http://127.0.0.1:{port}",
        prefetch=args.prefetch,
    )
    environ = {**service_env(settings), "AGILE_SYNC_SECONDS": "600"}
    backend = start_process(backend_command(f"127.0.0.1:{port}"), environ, tmp / "backend.log")
    worker = start_process(worker_command(beat=False), environ, tmp / "worker.log")
    result = {"environment": env_info, "pool": len(ws.store()), "batch": args.batch}
    try:
        wait_http(f"{settings.backend_url}/health", 60, "backend", backend, tmp / "backend.log")
        sync = ConceptSync(settings, ws)
        report = sync.publish(name, seed_size=args.batch, batch_size=args.batch)
        client = LabelStudioClient(server.url, server.credentials.token)
        schema = parse_rating_config(client.project_label_config(report.project_id))
        headers = {"Authorization": f"Token {server.credentials.token}"}
        waits, boundary, per_image = [], [], []
        seen_rounds = set()
        with httpx.Client(timeout=60, headers=headers) as http:
            last = time.perf_counter()
            for n in range(args.rounds * args.batch):
                while True:  # the stream, as the browser asks it after a submit
                    reply = http.get(f"{server.url}/api/projects/{report.project_id}/next")
                    if reply.status_code == 200 and reply.json().get("id"):
                        break
                    if time.perf_counter() - last > 300:
                        raise RuntimeError(f"the stream stayed empty for 300 s; see {tmp / 'worker.log'}")
                    time.sleep(0.1)
                served = time.perf_counter()
                task = reply.json()
                waits.append(served - last)
                round_index = task["data"].get("agile_round")
                if round_index not in seen_rounds and round_index != 0:
                    boundary.append(waits[-1])
                    print(
                        f"rating {n}: first task of round {round_index} served {waits[-1]:.2f} s after the last rating"
                    )
                seen_rounds.add(round_index)
                time.sleep(args.think)
                client.create_annotation(
                    task["id"], schema.rating(int(truth[task["data"][IMAGE_ID]])), lead_time=args.think
                )
                now = time.perf_counter()
                per_image.append(now - served + waits[-1])
                last = now
        result.update(
            prefetch=args.prefetch,
            think_s=args.think,
            ratings=len(waits),
            boundary_waits_s=boundary,
            boundary_wait_median_s=statistics.median(boundary) if boundary else None,
            boundary_wait_p90_s=percentile(boundary, 90) if boundary else None,
            wait_median_s=statistics.median(waits),
            wait_p90_s=percentile(waits, 90),
            seconds_per_image=statistics.mean(per_image),
        )

        tasks = list(client.iter_tasks(report.project_id))
        payload = lambda k: {
            "project": f"{report.project_id}.0",
            "tasks": [{"id": t.id, "data": t.data} for t in (tasks * (k // len(tasks) + 1))[:k]],
        }
        predict = {}
        with httpx.Client(timeout=60) as http:
            for k in (1, 100):
                body = payload(k)
                http.post(f"{settings.backend_url}/predict", json=body).raise_for_status()  # warm
                times = []
                for _ in range(args.predict_runs):
                    t0 = time.perf_counter()
                    response = http.post(f"{settings.backend_url}/predict", json=body)
                    times.append(time.perf_counter() - t0)
                    assert response.status_code == 200 and len(response.json()["results"]) == k
                predict[k] = {
                    "p50_ms": 1000 * percentile(times, 50),
                    "p99_ms": 1000 * percentile(times, 99),
                    "tasks_per_s": k / statistics.median(times),
                }
                print(f"/predict {k:3d} task(s): p50 {predict[k]['p50_ms']:.1f} ms, p99 {predict[k]['p99_ms']:.1f} ms")
        result["predict"] = predict
    finally:
        stop_pid(worker.pid)
        stop_pid(backend.pid)
        server.stop()

    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2))
    md = [
        f"# Label Studio loop as the rater lives it ({result['pool']:,}-image pool, batches of {args.batch}, "
        f"AGILE_PREFETCH={args.prefetch})",
        "",
        environment_markdown(env_info),
        "| measure | value |",
        "|---|---|",
        f"| ratings through the label stream | {result['ratings']} (rater's think time {args.think} s per image) |",
    ]
    md += [
        f"| last rating -> first task of the next batch served by the stream, batch {r + 1} | {t:.2f} s |"
        for r, t in enumerate(result["boundary_waits_s"])
    ]
    if result["boundary_waits_s"]:
        md.append(
            f"| ... median, p90 | {result['boundary_wait_median_s']:.2f} s, {result['boundary_wait_p90_s']:.2f} s |"
        )
    md += [
        f"| every rating -> next task served: median, p90 | {result['wait_median_s']:.2f} s, {result['wait_p90_s']:.2f} s |",
        f"| seconds per image (think + submit + wait) | {result['seconds_per_image']:.2f} s |",
    ]
    md += [
        f"| /predict, {k} task(s) per request | p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms "
        f"({v['tasks_per_s']:.0f} tasks/s) |"
        for k, v in predict.items()
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
