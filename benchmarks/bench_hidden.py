"""The MLP's hidden layers after the seed model: 3x128 (the paper's section 4.2), 2x128 or 1x128.

The issue behind it: a model trained on 200 ratings worse than the one on 100, at the switch from
the seed's 1x16 to 3x128. Runs margin+coverage on the TUNING concepts (``tuning_concepts.json``),
every variant interleaved; the reported concepts are ``bench_default.py``'s.

    .venv/bin/python benchmarks/bench_hidden.py [--seeds 0] [--split tuning]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classifiers import run_and_report, suite_arguments

from agile_modeling.classifier import DEFAULT_RECIPE

VARIANTS = {
    name: {"strategy": "margin+coverage", "recipe": DEFAULT_RECIPE.with_(hidden=hidden)}
    for name, hidden in (("3x128", (128, 128, 128)), ("1x128", (128,)), ("2x128", (128, 128)))
}


def main() -> int:
    parser = suite_arguments(__doc__.split("\n\n")[0], "hidden_tuning")
    parser.set_defaults(split="tuning")
    args = parser.parse_args()
    return run_and_report(
        args,
        VARIANTS,
        "bench_hidden.py",
        "Hidden layers after the seed model, on the tuning concepts",
        "margin+coverage in every round after the seed; the seed model is 1x16 in all",
    )


if __name__ == "__main__":
    raise SystemExit(main())
