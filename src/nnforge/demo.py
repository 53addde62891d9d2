"""`make demo`: train an MLP on scikit-learn's digits, evaluate, save, reload and predict."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nnforge as nf
from nnforge import nn, optim
from nnforge.data import Standardizer, load_dataset, train_test_split

MODEL_PATH = Path("models/digits/1/model.nnf")


def main() -> int:
    """Run the demo end to end; return the process exit code."""
    ds = load_dataset("digits")
    X_train, X_test, y_train, y_test = train_test_split(ds.X, ds.y, test_size=0.2, seed=0,
                                                        stratify=ds.y)
    X_test_raw = X_test
    scaler = Standardizer().fit(X_train)  # fitted on training data only, saved with the model
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    print(f"digits: {len(X_train)} training and {len(X_test)} test images of 8x8 pixels")

    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    trainer = nf.Trainer(model, loss="cross_entropy",
                         optimizer=optim.Adam(model.parameters(), lr=1e-3),
                         metrics=["accuracy", "f1_macro"], seed=0, verbose=1)
    trainer.fit(X_train, y_train, epochs=30, batch_size=32, validation_split=0.1)
    scores = trainer.evaluate(X_test, y_test)
    print("test:", "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    labels = [str(c) for c in ds.target_names]
    nf.save(model, MODEL_PATH, task="multiclass", labels=labels, preprocessing=scaler,
            metrics=scores)
    print(f"saved {MODEL_PATH} ({MODEL_PATH.stat().st_size:,} bytes)")

    reloaded = nf.load(MODEL_PATH)
    session = nf.InferenceSession(MODEL_PATH)
    result = session.predict(X_test_raw[:5])  # the session applies the stored standardization
    for i, (cls, truth) in enumerate(zip(result.classes, y_test[:5])):
        p = result.probabilities[i, cls]
        print(f"sample {i}: predicted {cls} (p={p:.3f}), true {truth}")
    with nf.no_grad():
        same = np.array_equal(reloaded(X_test[:5]).data.argmax(1), result.classes)
    print("reloaded model agrees with the inference session:", same)
    return 0


if __name__ == "__main__":
    sys.exit(main())
