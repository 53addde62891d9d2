"""Print the accuracy figures behind tests/test_train_accuracy.py (same recipes, same seeds).

Run: .venv/bin/python benchmarks/accuracy.py [--seeds 6]
(--seeds N also trains with seeds 0..N-1 and prints the lowest and highest score)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_train_accuracy as recipes  # noqa: E402

ROWS = [("digits", "MLP 64-256-10", recipes.digits_mlp, "accuracy", 0.975),
        ("digits", "CNN 16c-32c-pool-64", recipes.digits_cnn, "accuracy", 0.98),
        ("breast_cancer", "sigmoid unit", recipes.breast_cancer_sigmoid, "accuracy", 0.965),
        ("diabetes", "MLP 10-8-1 tanh", recipes.diabetes_mlp, "r2", 0.35)]


def main() -> None:
    """Train each recipe and print its test score against the floor the tests assert."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1,
                    help="also train with seeds 0..N-1 and print the range of the scores")
    args = ap.parse_args()
    spread = args.seeds > 1
    print(f"{'data':14} {'model':22} {'metric':9} {'score':>7} {'floor':>6}"
          + (f"  seeds 0-{args.seeds - 1}: min    max" if spread else ""))
    for data, model, recipe, metric, floor in ROWS:
        scores = [recipe(seed)[metric] for seed in range(max(args.seeds, 1))]
        line = f"{data:14} {model:22} {metric:9} {scores[0]:7.4f} {floor:6.3f}"
        if spread:
            line += f"  {'':10}{min(scores):7.4f} {max(scores):6.4f}"
        print(line)


if __name__ == "__main__":
    main()
