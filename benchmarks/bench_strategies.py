"""Selection strategies of the loop's rounds after the phrase seed: margin (the paper's), margin +
positive mining, and random (passive learning: the "seed + random" baseline).

The paper's simulated-user protocol for every concept of the shared suite with each strategy,
interleaved; reported: test AUC-PR of every model. Nothing is tuned here.

    .venv/bin/python benchmarks/bench_strategies.py [--seeds 0] [--strategies margin random]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classifiers import run_and_report, suite_arguments

from agile_modeling.selection import STRATEGIES


def main() -> int:
    parser = suite_arguments(__doc__.split("\n\n")[0], "strategies")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    args = parser.parse_args()
    return run_and_report(
        args,
        {name: {"strategy": name} for name in args.strategies},
        "bench_strategies.py",
        "Selection after the phrase seed: margin, margin + positive mining, random (seed + random)",
        "each variant is the strategy of every round after the seed; the paper's MLP and recipe",
    )


if __name__ == "__main__":
    raise SystemExit(main())
