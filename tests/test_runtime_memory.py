"""predict() over 2,000,000 rows keeps memory bounded: output + a few batches, measured."""

from __future__ import annotations

import tracemalloc

import numpy as np

from nnforge import nn
from nnforge.runtime import InferenceSession

ROWS, FEATURES, CLASSES, BATCH = 2_000_000, 32, 3, 8192


def test_predict_two_million_rows_in_bounded_memory() -> None:
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES)).eval()
    session = InferenceSession(model, task="multiclass")
    x = rng.standard_normal((ROWS, FEATURES), dtype=np.float32)  # 256 MB, made before measuring
    session.predict(x[:BATCH], batch_size=BATCH)  # compile the plan outside the measurement

    tracemalloc.start()  # NumPy reports its array allocations to tracemalloc
    try:
        pred = session.predict(x, batch_size=BATCH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    output = pred.probabilities.nbytes + pred.classes.nbytes  # 24 MB + 16 MB
    batch_in = BATCH * FEATURES * 4  # 1 MB
    bound = output + 8 * batch_in  # the results, plus a few batches of working memory
    assert peak <= bound, f"peak {peak / 2**20:.1f} MiB > bound {bound / 2**20:.1f} MiB"
    assert peak < x.nbytes / 4  # far below even a quarter of the input
    # the answers are right (spot check of the first and last chunk)
    for rows in (slice(0, 100), slice(ROWS - 100, ROWS)):
        logits = model(x[rows]).data
        np.testing.assert_array_equal(pred.classes[rows], logits.argmax(1))
