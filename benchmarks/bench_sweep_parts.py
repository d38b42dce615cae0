"""Where the time of a pool sweep goes: conversion, each layer, selection; and the first product's variants.

Runs the loop of ``scoring.PoolScorer`` (fp32 path) by hand over the synthetic float16 pool file of
``bench_pool`` with a timer around each part, then the whole ``PoolScorer`` + ``MarginSelection``
for comparison, and times the first layer's product (8,192 x 512 @ 512 x 128, in cache) through
each torch entry point that could run it: is the sweep at the machine's fp32 peak, and what is left?

    .venv/bin/python benchmarks/bench_sweep_parts.py [--rows 4000000] [--hidden 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pool import synthetic_pool  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling import compute  # noqa: E402
from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier  # noqa: E402
from agile_modeling.scoring import DEFAULT_CHUNK_ROWS, PoolScorer  # noqa: E402
from agile_modeling.selection import MarginSelection  # noqa: E402
from agile_modeling.store import PoolView  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fitted_model(full: np.ndarray, hidden: tuple[int, ...]) -> MLPClassifier:
    """The bench_peers model: a random direction's sign on 600 rows, the default recipe."""
    rng = np.random.default_rng(0)
    labeled = np.sort(rng.choice(100_000, 600, replace=False))
    xl = np.asarray(full[labeled], np.float32)
    proj = xl @ rng.normal(size=512).astype(np.float32)
    recipe = dataclasses.replace(DEFAULT_RECIPE, hidden=hidden)
    negatives = np.asarray(full[rng.choice(100_000, 5000)], np.float32)
    return MLPClassifier(recipe).fit(xl, (proj > np.median(proj)).astype(int), negatives)


@torch.inference_mode()
def parts_of_the_loop(view: PoolView, layers, chunk: int) -> dict[str, float]:
    """Seconds per part of one fp32 sweep over ``view``, the loop of ``PoolScorer`` by hand."""
    weights = [w.T.contiguous().float() for w, _ in layers]
    biases = [b.float() for _, b in layers]
    staging = torch.empty((chunk, view.dim))
    acts = [torch.empty((chunk, w.shape[1])) for w in weights]
    out = torch.empty(len(view))
    spent = {"fp16 -> fp32 conversion": 0.0, "first layer (product, bias, ReLU)": 0.0, "later layers": 0.0}
    began = time.perf_counter()
    for start, block in view.iter_chunks(chunk):
        m = len(block)
        t0 = time.perf_counter()
        x = staging[:m]
        x.copy_(torch.from_numpy(np.asarray(block)))
        t1 = time.perf_counter()
        y = acts[0][:m]
        torch.addmm(biases[0], x, weights[0], out=y)
        if len(weights) > 1:
            y.relu_()
        t2 = time.perf_counter()
        for i in range(1, len(weights)):
            z = acts[i][:m]
            torch.addmm(biases[i], y, weights[i], out=z)
            if i < len(weights) - 1:
                z.relu_()
            y = z
        out[start : start + m].copy_(y[:, 0])
        spent["later layers"] += time.perf_counter() - t2
        spent["fp16 -> fp32 conversion"] += t1 - t0
        spent["first layer (product, bias, ReLU)"] += t2 - t1
    spent["whole loop"] = time.perf_counter() - began
    return spent


def product_variants(rounds: int = 30) -> dict[str, float]:
    """GFLOP/s of the first layer's product (8,192 x 512 @ 512 x 128, fp32, in cache), best of ``rounds``."""
    gen = torch.Generator().manual_seed(0)
    m, k, n = DEFAULT_CHUNK_ROWS, 512, 128
    x, w, b = torch.randn(m, k, generator=gen), 0.05 * torch.randn(k, n, generator=gen), torch.zeros(n)
    wt, y = w.T.contiguous(), torch.empty(m, n)
    runs = {
        "torch.addmm(out=)": lambda: torch.addmm(b, x, w, out=y),
        "torch.mm(out=), no bias": lambda: torch.mm(x, w, out=y),
        "torch.nn.functional.linear": lambda: torch.nn.functional.linear(x, wt, b),
        "numpy matmul(out=)": lambda: np.matmul(x.numpy(), w.numpy(), out=y.numpy()),
    }
    rates = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()
            best = float("inf")
            for _ in range(rounds):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            rates[name] = round(2 * m * k * n / best / 1e9, 1)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="sweep_parts")
    args = parser.parse_args()
    env = describe_environment()
    full = np.load(synthetic_pool(args.rows), mmap_mode="r")
    clf = fitted_model(full, tuple(args.hidden))
    layers = clf.linear_layers()
    view = PoolView([full[: args.rows]], 512)
    chosen = compute.Compute(compute.FP32, compute.TORCH, compute.FP32, "bench", False)
    rows = []
    for r in range(args.rounds):
        parts = parts_of_the_loop(view, layers, DEFAULT_CHUNK_ROWS)
        start = time.perf_counter()
        scorer = PoolScorer(clf, compute=chosen)
        logits = scorer.approximate_logits(view)
        swept = time.perf_counter()
        MarginSelection().select(logits, 100, np.arange(600), lambda ids: scorer.exact_logits(view, ids))
        parts["PoolScorer sweep"] = swept - start
        parts["selection after the sweep"] = time.perf_counter() - swept
        rows.append({k: round(v, 3) for k, v in parts.items()})
        print(f"round {r + 1}: {rows[-1]}", flush=True)
    variants = product_variants()
    print(f"first product, GFLOP/s: {variants}")
    best = {key: min(row[key] for row in rows) for key in rows[0]}
    per_10m = {key: round(value * 10_000_000 / args.rows, 2) for key, value in best.items()}
    RESULTS.mkdir(exist_ok=True)
    result = {"environment": env, "layers": [512, *args.hidden, 1], "rounds": rows, "best_per_10M_s": per_10m}
    result["first_product_gflops"] = variants
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Where the time of a pool sweep goes",
        "",
        environment_markdown(env),
        f"- model: {result['layers']}, fp32 through torch, chunks of {DEFAULT_CHUNK_ROWS:,} rows, "
        f"{args.rows:,} rows of the synthetic float16 pool (page cache warm)",
        "",
        "| part | best of rounds, s | scaled to 10M rows, s |",
        "|---|---|---|",
        *(f"| {key} | {best[key]} | {per_10m[key]} |" for key in best),
        "",
        "First layer's product (8,192 x 512 @ 512 x 128, fp32, in cache), GFLOP/s, best of 30:",
        "",
        "| entry point | GFLOP/s |",
        "|---|---|",
        *(f"| {name} | {rate} |" for name, rate in variants.items()),
        "",
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
