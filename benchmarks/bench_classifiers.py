"""The paper's MLP against logistic regression, each as the loop's classifier (``LoopConfig.classifier``).

Logistic regression is the second implementation of the classifier interface: this measures what it
is worth as a baseline. The paper's simulated-user protocol (seed of 100, 5 rounds of 100 by margin,
the same class balance and random negatives) runs for every concept of the shared suite with each
classifier, interleaved; reported: test AUC-PR of every model, and training seconds. Nothing is
tuned here (logistic regression keeps scikit-learn's C = 1).

    .venv/bin/python benchmarks/bench_classifiers.py [--seeds 0] [--concepts ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prefetch import run_variants
from concept_split import SPLITS, split_suite
from environment import describe_environment, environment_markdown

from agile_modeling.classifier import CLASSIFIERS
from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite
from agile_modeling.simulate.study import oracle_metrics


def suite_arguments(description: str, out: str) -> argparse.ArgumentParser:
    """The options every variant benchmark of the suite takes (its own list of variants is added after)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--concepts", nargs="*", help="suite titles (default: all of --split)")
    parser.add_argument(
        "--split", choices=SPLITS, default="all", help="tuning or reported concepts (benchmarks/tuning_concepts.json)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / out))
    parser.add_argument("--oracle", action="store_true", help="also the oracle: the MLP trained on every pool label")
    return parser


def run_and_report(args: argparse.Namespace, variants: dict[str, dict], script: str, title: str, protocol: str) -> int:
    """Run ``variants`` over the suite (interleaved), write ``<out>.json`` and ``<out>.md``, print the table."""
    env = describe_environment()
    ctx = SimulationContext.build(load_shared_data())
    suite = [s for s in split_suite(load_suite(), args.split) if not args.concepts or s.title in args.concepts]
    started = time.time()
    record: dict = {"command": " ".join([f"benchmarks/{script}", *sys.argv[1:]]), "environment": env, "rows": []}
    if args.oracle:
        record["oracle"] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in suite:  # written after every concept: a long run that is cut short keeps what it measured
        record["rows"] += run_variants([spec], ctx, args.seeds, variants, args.rounds, args.batch_size)
        if args.oracle:
            record["oracle"] += [
                {"concept": spec.title, "difficulty": spec.difficulty, "seed": seed, **oracle_metrics(spec, ctx, seed)}
                for seed in args.seeds
            ]
        record["minutes"] = (time.time() - started) / 60
        out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    out.with_suffix(".md").write_text(markdown(record, args, title, protocol))
    print(out.with_suffix(".md").read_text())
    return 0


def main() -> int:
    parser = suite_arguments(__doc__.split("\n\n")[0], "classifiers")
    parser.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=list(CLASSIFIERS))
    args = parser.parse_args()
    return run_and_report(
        args,
        {kind: {"classifier": kind} for kind in args.classifiers},
        "bench_classifiers.py",
        "The loop's classifier: the paper's MLP against logistic regression",
        "both classifiers get the same class balance and random negatives (the recipe's), logistic regression "
        "scikit-learn's C = 1 (not tuned)",
    )


def markdown(record: dict, args: argparse.Namespace, title: str, protocol: str) -> str:
    """Every variant's mean curve by concept group and its median training seconds, then every session."""
    rows = record["rows"]
    kinds = list(dict.fromkeys(r["variant"] for r in rows))
    lines = [
        f"# {title}",
        "",
        f"Command: `{record['command']}` ({record['minutes']:.0f} min)",
        "",
        environment_markdown(record["environment"]),
        "",
        f"Protocol: seed of {args.batch_size} from the phrases, {args.rounds} rounds of {args.batch_size}, simulated "
        f"user from the ground truth, test AUC-PR on the shared test split; {protocol}.",
        "",
        "## Mean test AUC-PR by ratings trained on, and median training seconds per model",
        "",
        "| concepts | variant | " + " | ".join(f"{n} ratings" for n, _ in rows[0]["curve"]) + " | train s |",
        "|---|---|" + "---|" * (len(rows[0]["curve"]) + 1),
    ]
    for group in ("all", "easy", "hard"):
        for kind in kinds:
            sel = [r for r in rows if r["variant"] == kind and (group == "all" or r["difficulty"] == group)]
            if not sel:
                continue
            curve = np.array([[a for _, a in r["curve"]] for r in sel]).mean(axis=0)
            seconds = float(np.median([s for r in sel for s in r["train_seconds"]]))
            lines.append(
                f"| {group} ({len(sel)}) | {kind} | " + " | ".join(f"{a:.3f}" for a in curve) + f" | {seconds:.2f} |"
            )
        if record.get("oracle"):
            sel = [o for o in record["oracle"] if group == "all" or o["difficulty"] == group]
            if sel:
                auc = float(np.mean([o["auc_pr"] for o in sel]))
                lines.append(
                    f"| {group} ({len(sel)}) | oracle (every pool label) | "
                    + " | ".join([f"{auc:.3f}"] * len(rows[0]["curve"]))
                    + " | |"
                )
    lines += [
        "",
        "## Round over round: mean change of test AUC-PR, and sessions whose model got worse by more than 0.005",
        "",
        "| concepts | variant | " + " | ".join(f"round {i}" for i in range(1, len(rows[0]["curve"]))) + " |",
        "|---|---|" + "---|" * (len(rows[0]["curve"]) - 1),
    ]
    for group in ("all", "easy", "hard"):
        for kind in kinds:
            sel = [r for r in rows if r["variant"] == kind and (group == "all" or r["difficulty"] == group)]
            if not sel:
                continue
            change = np.diff(np.array([[a for _, a in r["curve"]] for r in sel]), axis=1)
            cells = [
                f"{m:+.3f} ({int(n)} of {len(sel)})" for m, n in zip(change.mean(axis=0), (change < -0.005).sum(axis=0))
            ]
            lines.append(f"| {group} ({len(sel)}) | {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every session: final test AUC-PR",
        "",
        "| concept | difficulty | seed | " + " | ".join(kinds) + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    keyed = {(r["concept"], r["seed"], r["variant"]): r for r in rows}
    for concept, difficulty, seed in sorted({(r["concept"], r["difficulty"], r["seed"]) for r in rows}):
        finals = [f"{keyed[(concept, seed, k)]['final_auc_pr']:.3f}" for k in kinds]
        lines.append(f"| {concept} | {difficulty} | {seed} | " + " | ".join(finals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
