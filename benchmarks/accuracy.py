"""Print the accuracy figures behind tests/test_train_accuracy.py (same recipes, same seeds).

Run: .venv/bin/python benchmarks/accuracy.py
"""

from __future__ import annotations

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
    print(f"{'data':14} {'model':22} {'metric':9} {'score':>7} {'floor':>6}")
    for data, model, recipe, metric, floor in ROWS:
        scores = recipe()
        print(f"{data:14} {model:22} {metric:9} {scores[metric]:7.4f} {floor:6.3f}")


if __name__ == "__main__":
    main()
