"""The loop's default against the paper's, on concepts not used for tuning, with the oracle.

The default: ``margin+coverage`` selection and one hidden layer of 128 after the seed model; the
paper's: ``margin`` and three layers of 128 (section 4.2). Both were chosen on the tuning concepts
(``tuning_concepts.json``; ``bench_strategies.py --split tuning`` and the hidden-layer comparison in
docs/benchmarks.md); here they run, interleaved, on every other concept of the suite with 3 seeds,
and the oracle (the MLP trained on every pool label) is the ceiling.

    .venv/bin/python benchmarks/bench_default.py [--seeds 0 1 2] [--split reported]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classifiers import run_and_report, suite_arguments

from agile_modeling.classifier import DEFAULT_RECIPE

VARIANTS = {
    "paper: margin, 3x128": {"strategy": "margin", "recipe": DEFAULT_RECIPE.with_(hidden=(128, 128, 128))},
    "default: margin+coverage, 1x128": {"strategy": "margin+coverage", "recipe": DEFAULT_RECIPE.with_(hidden=(128,))},
}


def main() -> int:
    parser = suite_arguments(__doc__.split("\n\n")[0], "default")
    parser.set_defaults(seeds=[0, 1, 2], split="reported", oracle=True)
    args = parser.parse_args()
    return run_and_report(
        args,
        VARIANTS,
        "bench_default.py",
        "The loop's default (margin+coverage, 1x128) against the paper's (margin, 3x128), on the reported concepts",
        "both with the recipe's learning rate, epochs and random negatives; the seed model is 1x16 in both",
    )


if __name__ == "__main__":
    raise SystemExit(main())
