"""The project against the peers a user would otherwise pick, in ONE run, interleaved, same pool file.

Margin selection (pick the 100 images closest to p = 0.5, excluding 600 labeled) over a synthetic
unit-norm float16 pool memory-mapped from disk, with the SAME MLP weights for everyone:
- the project: ``PoolScorer`` + ``MarginSelection`` on the backend chosen here (auto), forced
  ``fp32`` (the path of a CPU without native bf16, e.g. AVX2-only) through torch and numpy BLAS, and,
  where bf16 is native, forced ``bf16`` (what ``AGILE_COMPUTE=bf16`` costs: the sweep in bf16 and a
  frontier as wide as the model's proven bf16 bound re-scored in float64);
- scikit-learn ``MLPClassifier.predict_proba`` (our weights put into ``coefs_``/``intercepts_``);
- modAL ``margin_sampling`` and small-text ``BreakingTies`` over that scikit-learn model (when the
  optional ``bench`` extra is installed);
- plain torch fp32 (``model(x)`` per 64k chunk) and plain numpy fp32.
Peers get float32 input converted from the float16 file in 64k-row chunks (scikit-learn, torch,
numpy) or as one float32 array (modAL and small-text take the whole matrix; conversion not timed).

Exact k=100 search at 1M (1 and 20 queries): the project's ``ExactIndex`` (auto and fp32) against
faiss ``IndexFlatIP`` and numpy (both over an in-memory float32 copy; their build is not timed).

Recorded: CPU model and flags, the chosen backend and its probe, the load average beside every
figure, this machine's own GEMM GFLOP/s (fp32 torch/numpy, bf16) and memory read bandwidth measured
in the same run, and each figure as a fraction of that ceiling. Agreement with a float64
reference selection is checked for every method.

    .venv/bin/python benchmarks/bench_peers.py [--sizes 100000 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pool import synthetic_pool  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling import compute  # noqa: E402
from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier  # noqa: E402
from agile_modeling.index import ExactIndex  # noqa: E402
from agile_modeling.scoring import PoolScorer  # noqa: E402
from agile_modeling.selection import MarginSelection  # noqa: E402
from agile_modeling.store import PoolView  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
K = 100
CHUNK = 1 << 16


def load() -> float:
    return round(os.getloadavg()[0], 2)


class AnonPeak:
    """Peak anonymous RSS (the process's own memory, not the page cache) while a block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        self.base = self.now()
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.now())


def cpu_record() -> dict:
    info = compute.CpuInfo.read()
    wanted = (
        "avx2",
        "avx512f",
        "avx512_bf16",
        "amx_bf16",
        "amx_tile",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "avx512_fp16",
        "f16c",
        "fma",
        "bf16",
        "sve",
        "asimd",
    )
    return {
        "model": info.model,
        "machine": info.machine,
        "torch_capability": info.torch_capability,
        "flags_relevant": sorted(f for f in info.flags if f in wanted),
        "native_bf16": info.native_bf16(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "torch_threads": torch.get_num_threads(),
    }


def ceilings() -> dict:
    """This machine's GEMM rates (65536 x 512 @ 512 x 128, best of 5) and memory read bandwidth."""
    out = {}
    for kind in ("fp32-torch", "fp32-numpy", "bf16"):
        out[kind + "_gflops"] = round(compute.probe_gflops(kind, (65536, 512, 128), min_calls=5, budget_s=0.5), 1)
    big = torch.ones(1 << 28, dtype=torch.float16)  # 512 MiB
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        big.sum(dtype=torch.float32)
        best = min(best, time.perf_counter() - t)
    out["read_GBps"] = round(big.numel() * 2 / best / 1e9, 1)
    out["load"] = load()
    return out


def fp64_reference(layers64, view, exclude) -> np.ndarray:
    scorer_logits = np.empty(len(view))
    for start, block in view.iter_chunks(CHUNK):
        a = block.astype(np.float64)
        for i, (w, b) in enumerate(layers64):
            a = a @ w.T + b
            if i < len(layers64) - 1:
                np.maximum(a, 0, out=a)
        scorer_logits[start : start + len(block)] = a[:, 0]
    key = np.abs(scorer_logits)
    key[exclude] = np.inf
    return np.lexsort((np.arange(len(key)), key))[:K]


def pick_from_proba(p: np.ndarray, exclude) -> np.ndarray:
    key = np.abs(p.astype(np.float64) - 0.5)
    key[exclude] = np.inf
    return np.argpartition(key, K)[:K]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--knn-size", type=int, default=1_000_000)
    parser.add_argument("--no-slow-peers", action="store_true", help="skip modAL / small-text at the largest size")
    parser.add_argument("--out", default="peers", help="results name under benchmarks/results/ (.json, .md)")
    parser.add_argument(
        "--project-sizes",
        type=int,
        nargs="*",
        default=[],
        help="sizes run for the project alone (auto and forced fp32), e.g. 10000000; no fp64 reference",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=[128, 128, 128],
        help="hidden layers of the MLP (default: the issue's 512-128-128-128-1; the product's default is 128)",
    )
    args = parser.parse_args()

    env = describe_environment()
    env["cpu"] = cpu_record()
    chosen = compute.current()
    env["chosen_backend"] = chosen.as_dict()
    env["ceilings"] = ceilings()
    print(json.dumps(env, indent=1))

    path = synthetic_pool(max(max(args.sizes), args.knn_size, *args.project_sizes))
    full = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(0)
    # a concept: a random direction; labels are the sign of a noisy projection (600 labels)
    labeled = np.sort(rng.choice(min(args.sizes), 600, replace=False))
    xl = np.asarray(full[labeled], np.float32)
    direction = rng.normal(size=512).astype(np.float32)
    proj = xl @ direction
    yl = (proj > np.median(proj)).astype(int)
    recipe = dataclasses.replace(DEFAULT_RECIPE, hidden=tuple(args.hidden))
    clf = MLPClassifier(recipe).fit(xl, yl, np.asarray(full[rng.choice(min(args.sizes), 5000)], np.float32))
    layers = clf.linear_layers()
    layers64 = [(w.double().numpy(), b.double().numpy()) for w, b in layers]

    from sklearn.neural_network import MLPClassifier as SkMLP

    sk = SkMLP(hidden_layer_sizes=recipe.hidden, activation="relu")
    sk.fit(xl[:8], yl[:8])  # shapes only; the weights are replaced by ours below
    sk.coefs_ = [w.T.numpy().astype(np.float32).copy() for w, _ in layers]
    sk.intercepts_ = [b.numpy().astype(np.float32).copy() for _, b in layers]
    try:
        from modAL.uncertainty import margin_sampling
    except ImportError:
        margin_sampling = None
    try:
        from small_text import BreakingTies, SklearnDataset
    except ImportError:
        BreakingTies = None

    first_flops = 2 * layers[0][0].numel()  # per row, first layer (the bulk of the model's products)
    total_flops = 2 * sum(w.numel() for w, _ in layers)
    rows_out, agreement, used = [], {}, {}
    probe_scorer = PoolScorer(clf, compute=chosen)
    env["model"] = {
        "layers": [512, *recipe.hidden, 1],
        "operator_norms": [round(float(np.linalg.norm(w, 2)), 2) for w, _ in layers64],
        "bf16_bound": float(
            __import__("agile_modeling.bf16", fromlist=["x"]).layers_error_bound(
                layers, __import__("agile_modeling.bf16", fromlist=["x"]).BF16_PRECISION
            )[0]
        ),
        "auto_sweeps_in": probe_scorer.dtype,
        "auto_error_bound": probe_scorer.error_bound,
    }
    sizes = [(n, False) for n in args.sizes] + [(n, True) for n in args.project_sizes]
    for n, project_only in sizes:
        view = PoolView([full[:n]], 512)
        exclude = labeled[labeled < n]
        reference = None if project_only else set(fp64_reference(layers64, view, exclude).tolist())
        methods = {}

        def project(mode, blas=None, label=""):
            def run():
                c = (
                    compute.Compute(mode, blas or chosen.blas, mode, "bench", chosen.native_bf16)
                    if mode != "auto"
                    else chosen
                )
                scorer = PoolScorer(clf, compute=c)
                # what really ran: auto may fall back to fp32 for a model whose bf16 bound is wide
                used[label] = (
                    f"{scorer.dtype} / {'torch' if scorer.dtype == 'bf16' else c.blas} (bound {scorer.error_bound:.3g})"
                )
                return MarginSelection().select(
                    scorer.approximate_logits(view), K, exclude, lambda ids: scorer.exact_logits(view, ids)
                )

            return run

        for label, args_ in (
            (f"project auto (chosen {chosen.dtype}, {chosen.blas})", ("auto",)),
            ("project fp32 forced (torch BLAS; the AVX2-only path)", (compute.FP32, compute.TORCH)),
            ("project fp32 forced (numpy BLAS)", (compute.FP32, compute.NUMPY)),
            ("project bf16 forced (AGILE_COMPUTE=bf16)", (compute.BF16, compute.TORCH)),
        ):
            if project_only and ("numpy" in label or "bf16" in label):
                continue
            if "bf16" in label and not chosen.native_bf16:
                continue  # emulated bf16 runs at 1-3 GFLOP/s: minutes per row, and never chosen there
            methods[label] = project(*args_, label=label)

        def sklearn_run():  # noqa: E306
            p = np.empty(n, np.float32)
            for start, block in view.iter_chunks(CHUNK):
                p[start : start + len(block)] = sk.predict_proba(block.astype(np.float32))[:, 1]
            return pick_from_proba(p, exclude)

        if not project_only:
            methods["scikit-learn MLPClassifier.predict_proba"] = sklearn_run

        @torch.inference_mode()
        def torch_run():
            logits = np.empty(n, np.float32)
            for start, block in view.iter_chunks(CHUNK):
                logits[start : start + len(block)] = (
                    clf.model(torch.from_numpy(block.astype(np.float32))).squeeze(1).numpy()
                )
            return pick_from_proba(1 / (1 + np.exp(-logits.astype(np.float64))), exclude)

        if not project_only:
            methods["plain torch fp32 (model(x))"] = torch_run

        np_layers = [(w.T.numpy().copy(), b.numpy().copy()) for w, b in layers]

        def numpy_run():
            logits = np.empty(n, np.float32)
            for start, block in view.iter_chunks(CHUNK):
                a = block.astype(np.float32)
                for i, (w, b) in enumerate(np_layers):
                    a = a @ w + b
                    if i < len(np_layers) - 1:
                        np.maximum(a, 0, out=a)
                logits[start : start + len(block)] = a[:, 0]
            return pick_from_proba(1 / (1 + np.exp(-logits.astype(np.float64))), exclude)

        if not project_only:
            methods["plain numpy fp32"] = numpy_run

        slow_ok = not project_only and not (args.no_slow_peers and n == max(args.sizes))
        x32 = None
        if (margin_sampling or BreakingTies) and slow_ok:
            x32 = np.asarray(full[:n], np.float32)
            unlabeled = np.setdiff1d(np.arange(n), exclude)
        if margin_sampling and x32 is not None:

            def modal_run():
                idx = margin_sampling(sk, x32[unlabeled], n_instances=K)
                idx = idx[0] if isinstance(idx, tuple) else idx
                return unlabeled[np.asarray(idx)]

            methods["modAL margin_sampling"] = modal_run
        if BreakingTies and x32 is not None:

            class SmallTextModel:
                def predict_proba(self, dataset):
                    return sk.predict_proba(dataset.x)

            dataset = SklearnDataset(x32, np.zeros(n, dtype=int))

            def small_text_run():
                return np.asarray(
                    BreakingTies().query(
                        SmallTextModel(), dataset, unlabeled, exclude, np.zeros(len(exclude), dtype=int), n=K
                    )
                )

            methods["small-text BreakingTies"] = small_text_run

        times = {name: [] for name in methods}
        peaks, loads = {}, {name: [] for name in methods}
        for r in range(args.rounds):
            for name, run in methods.items():  # interleaved: every method once per round
                with AnonPeak() as mem:
                    t = time.perf_counter()
                    picked = run()
                    times[name].append(time.perf_counter() - t)
                loads[name].append(load())
                peaks[name] = max(peaks.get(name, 0), mem.peak - mem.base)
                picked_set = set(np.asarray(picked).tolist())
                if reference is None:  # 10M: no fp64 sweep; the project's paths must agree with each other
                    reference = picked_set
                agreement[(n, name)] = len(picked_set & reference)
                print(f"n={n:,} round {r + 1} {name}: {times[name][-1]:.3f} s (load {loads[name][-1]})", flush=True)
        ceiling = env["ceilings"]
        for name in methods:
            best = min(times[name])
            fp32_path = not used.get(name, "fp32").startswith("bf16")
            roof = (
                ceiling["fp32-numpy_gflops" if "numpy" in name else "fp32-torch_gflops"]
                if fp32_path
                else ceiling["bf16_gflops"]
            )
            rows_out.append(
                {
                    "task": "margin selection",
                    "n": n,
                    "method": name,
                    "backend_used": used.get(name, "fp32 (peer)"),
                    "best_s": round(best, 4),
                    "median_s": round(statistics.median(times[name]), 4),
                    "runs": len(times[name]),
                    "load_during": loads[name],
                    "anon_peak_MiB": round(peaks[name] / 2**20, 1),
                    "same_100_as_fp64": agreement[(n, name)] if not project_only else None,
                    "same_100_as_first_project_path": agreement[(n, name)] if project_only else None,
                    "GFLOPs_achieved": round(n * total_flops / best / 1e9, 1),
                    "fraction_of_first_layer_roofline": round(n * first_flops / best / 1e9 / roof, 3),
                }
            )
        del x32

    # --- k-NN -------------------------------------------------------------------------------------
    import faiss

    n = args.knn_size
    view = PoolView([full[:n]], 512)
    qrng = np.random.default_rng(1)
    picks = qrng.choice(n, 20, replace=False)
    queries = np.asarray(full[picks], np.float32) + 0.05 * qrng.normal(size=(20, 512)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    build = {}
    t = time.perf_counter()
    idx_auto = ExactIndex(view, compute=chosen)
    build["project auto"] = time.perf_counter() - t
    idx_fp32 = ExactIndex(
        view, compute=compute.Compute(compute.FP32, chosen.blas, compute.FP32, "bench", chosen.native_bf16)
    )
    t = time.perf_counter()
    x32 = np.empty((n, 512), np.float32)
    for start, block in view.iter_chunks(CHUNK):
        x32[start : start + len(block)] = block
    flat = faiss.IndexFlatIP(512)
    flat.add(x32)
    build["faiss IndexFlatIP (+ fp32 copy)"] = time.perf_counter() - t
    ref = np.argsort(-(x32.astype(np.float64) @ queries.astype(np.float64).T), axis=0, kind="stable")[:K].T

    def numpy_knn(q):
        s = x32 @ q.T
        top = np.argpartition(-s, K, axis=0)[:K]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 0), 0), 0).T

    knn = {
        f"project ExactIndex auto ({chosen.dtype})": lambda q: idx_auto.search(q, K)[1],
        "project ExactIndex fp32": lambda q: idx_fp32.search(q, K)[1],
        "faiss IndexFlatIP": lambda q: flat.search(q, K)[1],
        "numpy fp32 matmul + argpartition": numpy_knn,
    }
    for nq in (1, 20):
        q = np.ascontiguousarray(queries[:nq])
        times = {name: [] for name in knn}
        loads = {name: [] for name in knn}
        exact = {}
        for _ in range(max(args.rounds, 3)):
            for name, fn in knn.items():
                t = time.perf_counter()
                ids = fn(q)
                times[name].append(time.perf_counter() - t)
                loads[name].append(load())
                exact[name] = sum(len(set(a) & set(b)) for a, b in zip(ids, ref[:nq])) / (K * nq)
        for name in knn:
            best = min(times[name])
            rows_out.append(
                {
                    "task": f"exact k=100 search, {nq} quer{'y' if nq == 1 else 'ies'}",
                    "n": n,
                    "method": name,
                    "best_s": round(best, 4),
                    "median_s": round(statistics.median(times[name]), 4),
                    "runs": len(times[name]),
                    "load_during": loads[name],
                    "recall_vs_fp64": exact[name],
                    "pool_read_GBps": round(
                        n * 512 * (2 if "bf16" in name or "fp32" in name and "project" in name else 4) / best / 1e9, 1
                    ),
                }
            )
            print(rows_out[-1], flush=True)
    env["knn_build_s"] = {k: round(v, 2) for k, v in build.items()}
    env["load_at_end"] = load()

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"environment": env, "rows": rows_out}, indent=1))
    lines = [
        "# The project against its peers (one run, interleaved, same pool file)",
        "",
        environment_markdown(env),
        f"- CPU: {env['cpu']['model']} ({env['cpu']['machine']}), torch capability {env['cpu']['torch_capability']}, "
        f"flags {', '.join(env['cpu']['flags_relevant'])}, OPENBLAS_CORETYPE={env['cpu']['OPENBLAS_CORETYPE']}",
        f"- chosen backend: {chosen.dtype} / {chosen.blas} ({chosen.reason}); probe GFLOP/s {chosen.probe_gflops}",
        f"- ceilings measured in this run: {env['ceilings']}",
        f"- model: {env['model']}",
        f"- k-NN build: {env['knn_build_s']}; load average at the end: {env['load_at_end']}",
        "",
        "| task | n | method | backend used | best s | median s | runs | load during | anon peak MiB | same 100 / recall | fraction of roofline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_out:
        same = r.get("same_100_as_fp64")
        same = (
            f"{r['same_100_as_first_project_path']} (vs the auto path; no fp64 sweep)"
            if same is None and "same_100_as_first_project_path" in r
            else same
        )
        lines.append(
            f"| {r['task']} | {r['n']:,} | {r['method']} | {r.get('backend_used', '')} | {r['best_s']} | {r['median_s']} | {r['runs']} | "
            f"{r['load_during']} | {r.get('anon_peak_MiB', '')} | {same if same is not None else r.get('recall_vs_fp64')} | "
            f"{r.get('fraction_of_first_layer_roofline', '')} |"
        )
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
