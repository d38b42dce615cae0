"""Sharded pool scoring over Celery workers (Redis broker) against the single-process path.

The pool is ``bench_pool.py``'s cached 10M x 512 float16 file, cut into shards of ``--shard-rows``
rows; 50M is that file mapped five times over (the disk here has no room for 51 GB of distinct
rows), with distinct global ids. For every size and worker count the selection of ``--k`` images by
margin is timed end to end (submit, score every shard, return candidates, merge) and compared to the
single-process selection, which it must equal exactly. On one 2-core machine the point is the
overhead of the distributed path, not speed-up.

    .venv/bin/python benchmarks/bench_sharded.py --sizes 10000000 50000000 --workers 1 2 4 --runs 3
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
from celery import group

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_pool import RESULTS, synthetic_pool  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_cli.services import service_env  # noqa: E402
from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier, ModelRegistry  # noqa: E402
from agile_modeling.scoring import PoolScorer  # noqa: E402
from agile_modeling.selection import MarginSelection  # noqa: E402
from agile_modeling.sharded import ShardCandidates, merge_candidates  # noqa: E402
from agile_modeling.store import PoolView  # noqa: E402
from sync.celery_app import make_celery  # noqa: E402
from sync.server import free_port  # noqa: E402
from sync.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = 10_000_000


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_workers(n: int, env: dict, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "sync.celery_app",
        "worker",
        "--loglevel",
        "WARNING",
        "--concurrency",
        str(n),
        "--pool",
        "prefork" if n > 1 else "solo",
        "-n",
        f"bench{n}@%h",
    ]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env_info = describe_environment()
    path = synthetic_pool(BASE)
    mm = np.load(path, mmap_mode="r")
    work = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    rng = np.random.default_rng(0)
    labeled = rng.choice(BASE, 600, replace=False)
    clf = MLPClassifier(DEFAULT_RECIPE).fit(
        mm[labeled].astype(np.float32),
        (mm[labeled, 0] > 0).astype(int),
        mm[rng.choice(BASE, 5000, replace=False)].astype(np.float32),
    )
    registry = ModelRegistry(work / "models" / "bench", "bench")
    version = registry.save(clf, {}, round=1, num_labels=600, num_positive=0).name
    redis_proc, redis_url = start_redis(work)
    settings = Settings(workspace=work, broker_url=redis_url)
    app = make_celery(settings)
    env = {**service_env(settings), "PYTHONPATH": str(REPO)}
    results = {"environment": env_info, "k": args.k, "shard_rows": args.shard_rows, "sizes": {}}
    try:
        for n in args.sizes:
            copies = n // BASE
            view = PoolView([mm] * copies, mm.shape[1])
            exclude = labeled.astype(np.int64)
            shards = [
                (c * BASE + s, [s, min(s + args.shard_rows, BASE)])
                for c in range(copies)
                for s in range(0, BASE, args.shard_rows)
            ]
            single_times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                scorer = PoolScorer(clf)
                single = MarginSelection().select(
                    scorer.approximate_logits(view), args.k, exclude, lambda ids: scorer.exact_logits(view, ids)
                )
                single_times.append(time.perf_counter() - t0)
            row = {"single_process_s": statistics.median(single_times), "single_runs": single_times, "workers": {}}
            print(f"{n:,}: single process {row['single_process_s']:.2f} s")
            for w in args.workers:
                proc = start_workers(w, env, work / f"worker{w}.log")
                try:
                    warm = app.signature(
                        "agile.score_shard", args=(str(registry.root), version, str(path), 0, args.k, 0, [], [0, 1000])
                    )
                    [warm.apply_async() for _ in range(w)][-1].get(timeout=300)  # workers up, model loaded
                    times, exact = [], True
                    for _ in range(args.runs):
                        t0 = time.perf_counter()
                        job = group(
                            app.signature(
                                "agile.score_shard",
                                args=(
                                    str(registry.root),
                                    version,
                                    str(path),
                                    int(off),
                                    args.k,
                                    0,
                                    [int(i) for i in exclude[(exclude >= off) & (exclude < off + r[1] - r[0])]],
                                    r,
                                ),
                            )
                            for off, r in shards
                        ).apply_async()
                        parts = job.get(timeout=1800)
                        merged = merge_candidates([ShardCandidates.from_dict(p) for p in parts], args.k, 0)
                        times.append(time.perf_counter() - t0)
                        job.forget()
                        exact &= merged.tolist() == single.tolist()
                    med = statistics.median(times)
                    row["workers"][w] = {
                        "seconds": med,
                        "runs": times,
                        "exact": exact,
                        "overhead_vs_single": med / row["single_process_s"] - 1,
                    }
                    print(
                        f"  {w} worker process(es): {med:.2f} s ({row['workers'][w]['overhead_vs_single']:+.0%}), "
                        f"exact: {exact}"
                    )
                finally:
                    proc.terminate()
                    proc.wait(60)
            results["sizes"][n] = row
    finally:
        redis_proc.terminate()
        shutil.rmtree(work, ignore_errors=True)
    load_end = [round(x, 2) for x in os.getloadavg()[:2]]
    results["load_average_end"] = load_end
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sharded.json").write_text(json.dumps(results, indent=1))
    md = [
        "# Sharded pool scoring over Celery workers (Redis)",
        "",
        environment_markdown(env_info).rstrip(),
        f"- load average at the end: {load_end}",
        f"- shards of {args.shard_rows:,} rows; margin selection of "
        f"{args.k}; median of {args.runs} runs; every distributed selection compared to the single-process one",
        "",
        "| pool | single process | " + " | ".join(f"{w} worker process(es)" for w in args.workers) + " |",
        "|---|---|" + "---|" * len(args.workers),
    ]
    for n, row in results["sizes"].items():
        cells = [
            f"{v['seconds']:.2f} s ({v['overhead_vs_single']:+.0%}){'' if v['exact'] else ' NOT EXACT'}"
            for v in row["workers"].values()
        ]
        md.append(f"| {n / 1e6:.0f}M | {row['single_process_s']:.2f} s | " + " | ".join(cells) + " |")
    (RESULTS / "sharded.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
