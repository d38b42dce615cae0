"""Pool-scale speed of the engine on synthetic 512-d float16 pools in a memory-mapped file.

Measures, for each pool size (default 1M and 10M):
- one margin selection over the whole pool (bf16 scoring + exact fp32 frontier), median of runs;
- training the 3x128 MLP on 600 labels + random pool negatives, median of runs;
- one whole round: train + score + select;
- nearest-neighbour query for one phrase, k=100 (exact index; 1M only by default);
- peak memory of the process (the pool stays on disk, memory-mapped);
and at 1M checks that the fast selection equals the plain fp32 selection.

    .venv/bin/python benchmarks/bench_pool.py [--sizes 1000000 10000000] [--runs 5]

Pools are cached in benchmarks/.data/ (10.24 GB for 10M; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier  # noqa: E402
from agile_modeling.index import ExactIndex  # noqa: E402
from agile_modeling.scoring import PoolScorer, reference_logits  # noqa: E402
from agile_modeling.selection import MarginSelection  # noqa: E402
from agile_modeling.store import PoolView  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results"
DIM = 512


def synthetic_pool(n: int, seed: int = 0) -> Path:
    """A cached ``(n, 512)`` float16 file of unit vectors around 256 random centres."""
    path = DATA / f"pool_{n}.npy"
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(256, DIM, generator=gen), dim=1)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, DIM))
    step = 1 << 20
    for start in range(0, n, step):
        m = min(step, n - start)
        which = torch.randint(0, 256, (m,), generator=gen)
        x = centres[which] + 0.06 * torch.randn(m, DIM, generator=gen)
        out[start : start + m] = torch.nn.functional.normalize(x, dim=1).to(torch.float16).numpy()
        print(f"  writing synthetic pool {start + m:,}/{n:,}", end="\r", flush=True)
    out.flush()
    del out
    tmp.rename(path)
    print()
    return path


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def anon_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def bench_size(n: int, runs: int, check_exact: bool, knn: bool) -> dict:
    view = PoolView([np.load(synthetic_pool(n), mmap_mode="c")], DIM)
    rng = np.random.default_rng(0)
    concept = view.take(np.arange(8)).astype(np.float32).mean(0)  # a concept around the first rows' centres
    labeled = np.sort(rng.choice(n, 600, replace=False))
    x = view.take(labeled).astype(np.float32)
    y = (x @ concept > np.quantile(x @ concept, 0.7)).astype(int)
    recipe = DEFAULT_RECIPE
    row: dict = {"pool": n, "runs": runs}

    for _chunk in view.iter_chunks(1 << 20):  # warm the page cache once, as a running service would be
        pass

    def train():
        neg_ids = rng.choice(n, int(recipe.epochs * recipe.epoch_size * 0.25), replace=False)
        return MLPClassifier(recipe).fit(x, y, view.take(np.sort(neg_ids)).astype(np.float32))

    row["train_s"], row["train_runs_s"], clf = timed(train, runs)
    scorer = PoolScorer(clf)
    strategy = MarginSelection()

    def select():
        approx = scorer.approximate_logits(view)
        return strategy.select(approx, 100, labeled, lambda ids: scorer.exact_logits(view, ids))

    select()  # first call touches fresh buffers
    row["select_s"], row["select_runs_s"], chosen = timed(select, runs)
    row["round_s"], row["round_runs_s"], _ = timed(lambda: (scorer.__init__(train()), select()), max(1, runs // 2))
    if check_exact:
        scorer = PoolScorer(clf)
        chosen = select()
        ref = reference_logits(clf, view)
        key = np.abs(ref).astype(np.float64)
        key[labeled] = np.inf
        expected = np.lexsort((np.arange(n), key))[:100]
        row["fast_equals_fp32_selection"] = bool(np.array_equal(chosen, expected))
    if knn:
        t0 = time.perf_counter()
        index = ExactIndex(view)
        row["knn_build_s"] = time.perf_counter() - t0
        query = concept / np.linalg.norm(concept)
        index.search(query[None], 100)
        row["knn_query_ms"], runs_s, _ = timed(lambda: index.search(query[None], 100), 20)
        row["knn_query_ms"] *= 1000
        row["knn_query_runs_ms"] = [t * 1000 for t in runs_s]
        del index
    row["peak_rss_gib"] = peak_rss_gib()
    row["anon_rss_gib"] = anon_rss_gib()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "pool.json"))
    args = parser.parse_args()
    env = describe_environment()
    rows = []
    for n in args.sizes:
        print(f"pool of {n:,}")
        row = bench_size(n, args.runs, check_exact=n <= 2_000_000, knn=n <= 2_000_000)
        print(json.dumps(row))
        rows.append(row)
    env["load_average_after"] = [round(v, 2) for v in __import__("os").getloadavg()[:2]]
    RESULTS.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    lines = [
        "# Pool-scale speed",
        "",
        environment_markdown(env),
        f"- load average (1 min, 5 min) at the end: {env['load_average_after']}",
        "",
        "Synthetic 512-d float16 pools (memory-mapped .npy, page cache warm), MLP 512-128-128-128-1, "
        f"recipe {DEFAULT_RECIPE.epochs} epochs x {DEFAULT_RECIPE.epoch_size} samples. Medians of {args.runs} runs "
        "(whole round: of the runs given).",
        "",
        "| pool | margin selection (score + select 100) | train on 600 labels | whole round | 1-phrase k=100 query | peak RSS (incl. mapped pool pages) | anonymous RSS | fast == fp32 selection |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        knn = f"{r['knn_query_ms']:.1f} ms" if "knn_query_ms" in r else "-"
        exact = str(r.get("fast_equals_fp32_selection", "-"))
        lines.append(
            f"| {r['pool']:,} | {r['select_s']:.2f} s | {r['train_s']:.2f} s | {r['round_s']:.2f} s | {knn} | "
            f"{r['peak_rss_gib']:.1f} GiB | {r['anon_rss_gib']:.2f} GiB | {exact} |"
        )
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
