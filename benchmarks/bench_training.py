"""Training on 600 labels: the project's MLP recipe against scikit-learn's MLPClassifier, in one run.

For each concept of the suite named on the command line, 600 pool images of the shared real CLIP
embeddings are "rated" from the ground truth (all positives up to 200, the rest negatives, drawn at
random with a fixed seed: a stand-in for what the loop's rounds gather). Then, interleaved, every
round:

- the project: ``MLPClassifier(DEFAULT_RECIPE)`` with the loop's random pool negatives (as
  ``AgileLoop.train`` draws them), on the training threads ``agile_modeling.compute`` chooses (1 by
  default) and on 2 threads;
- scikit-learn ``MLPClassifier(hidden_layer_sizes=DEFAULT_RECIPE.hidden)`` (the same layers; adam, lr 1e-3, its defaults)
  on the 600 labels alone, and on the labels plus the same random negatives.

Reported per concept and method: best and median fit seconds, the load average beside each, and the
test AUC-PR on the shared test split (so speed is never bought with quality). Nothing here is
tuned: the methods run with their defaults.

    .venv/bin/python benchmarks/bench_training.py [--concepts "cats" "fluffy dogs"] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling import compute  # noqa: E402
from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier  # noqa: E402
from agile_modeling.metrics import binary_metrics  # noqa: E402
from agile_modeling.simulate import load_suite  # noqa: E402
from agile_modeling.simulate.data import load_shared_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = 600
MAX_POSITIVES = 200


def load() -> float:
    return round(os.getloadavg()[0], 2)


def rated_sample(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ids of ``LABELS`` pool images: every positive up to ``MAX_POSITIVES``, the rest negatives."""
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    pos = rng.choice(pos, min(len(pos), MAX_POSITIVES), replace=False)
    neg = rng.choice(neg, LABELS - len(pos), replace=False)
    return np.sort(np.concatenate([pos, neg]))


def random_negatives(n_pool: int, labeled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many unlabeled pool ids as the recipe's epochs draw (what ``AgileLoop`` samples)."""
    r = DEFAULT_RECIPE
    want = int(r.epochs * r.epoch_size * (1 - r.positive_fraction - r.negative_fraction))
    candidates = np.setdiff1d(np.arange(n_pool), labeled)
    return np.sort(rng.choice(candidates, min(want, len(candidates)), replace=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["cats", "real stop signs", "small dog breeds", "fluffy dogs"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="training", help="results name under benchmarks/results/ (.json, .md)")
    parser.add_argument(
        "--background-load",
        type=int,
        default=0,
        metavar="K",
        help="K single-threaded busy processes run beside the fits (a busy machine; `make up`'s idle services "
        "use far less)",
    )
    parser.add_argument(
        "--skip-sklearn-negatives", action="store_true", help="leave out scikit-learn on the labels + negatives (slow)"
    )
    args = parser.parse_args()
    hogs = [start_busy_process() for _ in range(args.background_load)]
    try:
        return run(args, parser)
    finally:
        for hog in hogs:
            hog.kill()


#: a single-threaded process that keeps one core busy with float32 matrix products
BUSY = "import numpy as np\na = np.random.rand(256, 256).astype(np.float32)\nwhile True:\n    a @ a\n"


def start_busy_process() -> subprocess.Popen:
    one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen([sys.executable, "-c", BUSY], env={**os.environ, **one_thread})


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    env = describe_environment()
    env["training_threads_default"] = compute.training_threads()
    env["load_at_start"] = load()
    env["background_load_processes"] = args.background_load
    data = load_shared_data()
    suite = {s.title: s for s in load_suite()}
    unknown = [c for c in args.concepts if c not in suite]
    if unknown:
        parser.error(f"unknown concept(s) {unknown}; the suite has: {', '.join(sorted(suite))}")

    from sklearn.neural_network import MLPClassifier as SkMLP

    rows = []
    for title in args.concepts:
        spec = suite[title]
        rng = np.random.default_rng(0)
        truth = spec.ground_truth(data.pool)
        ids = rated_sample(truth, rng)
        x, y = data.pool.x[ids].astype(np.float32), truth[ids].astype(int)
        neg = data.pool.x[random_negatives(len(data.pool), ids, rng)].astype(np.float32)
        x_test, y_test = data.test.x.astype(np.float32), spec.ground_truth(data.test).astype(int)

        def project(threads: int):
            def fit():
                compute.configure(training_threads=threads)  # what AGILE_TORCH_THREADS sets
                try:
                    clf = MLPClassifier(DEFAULT_RECIPE).fit(x, y, neg)
                finally:
                    compute.configure(training_threads=0)
                return clf.predict_proba(x_test)

            return fit

        def sklearn(with_negatives: bool):
            def fit():
                xs = np.concatenate([x, neg]) if with_negatives else x
                ys = np.concatenate([y, np.zeros(len(neg), int)]) if with_negatives else y
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: part of what is measured
                    sk = SkMLP(hidden_layer_sizes=DEFAULT_RECIPE.hidden, random_state=0).fit(xs, ys)
                return sk.predict_proba(x_test)[:, 1]

            return fit

        methods = {
            f"project MLP, {compute.training_threads()} training thread(s) (default)": project(
                compute.training_threads()
            ),
            "project MLP, 2 threads": project(2),
            "scikit-learn MLPClassifier, 600 labels": sklearn(False),
        }
        if not args.skip_sklearn_negatives:
            methods[f"scikit-learn MLPClassifier, 600 labels + {len(neg):,} random negatives"] = sklearn(True)
        times = {m: [] for m in methods}
        loads = {m: [] for m in methods}
        quality = {}
        for r in range(args.rounds):
            for name, fit in methods.items():  # interleaved
                t = time.perf_counter()
                scores = fit()
                times[name].append(time.perf_counter() - t)
                loads[name].append(load())
                quality[name] = binary_metrics(y_test, scores, 0.5).auc_pr
                print(
                    f"{title} round {r + 1} {name}: {times[name][-1]:.2f} s, AUC-PR {quality[name]:.3f} "
                    f"(load {loads[name][-1]})",
                    flush=True,
                )
        for name in methods:
            rows.append(
                {
                    "concept": title,
                    "difficulty": spec.difficulty,
                    "positives": int(y.sum()),
                    "method": name,
                    "best_s": round(min(times[name]), 3),
                    "median_s": round(statistics.median(times[name]), 3),
                    "runs": len(times[name]),
                    "load_during": loads[name],
                    "test_auc_pr": round(quality[name], 4),
                }
            )
    env["load_at_end"] = load()

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    lines = [
        "# Training on 600 labels: the project against scikit-learn (one run, interleaved)",
        "",
        environment_markdown(env),
        f"- default training threads: {env['training_threads_default']}; load average at the end: {env['load_at_end']}; "
        f"busy background processes: {args.background_load}",
        f"- test AUC-PR on the shared test split ({len(data.test):,} rows); {LABELS} labels, positives "
        f"up to {MAX_POSITIVES}",
        "",
        "| concept | difficulty | positives | method | best s | median s | runs | load during | test AUC-PR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['concept']} | {r['difficulty']} | {r['positives']} | {r['method']} | {r['best_s']} | {r['median_s']} | "
        f"{r['runs']} | {r['load_during']} | {r['test_auc_pr']} |"
        for r in rows
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
