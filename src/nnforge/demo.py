"""`make demo`: train an MLP on scikit-learn's digits, evaluate, save, predict, then serve it."""

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
    serve_demo(X_test_raw[0], int(y_test[0]))
    return 0


def serve_demo(sample: np.ndarray, truth: int) -> None:
    """Serve the saved model on 127.0.0.1 until Ctrl+C (NNFORGE_DEMO_SERVE_SECONDS bounds it)."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from nnforge.serve import serve  # noqa: PLC0415

    values = ", ".join(f"{v:g}" for v in sample)

    def ready(info: dict) -> None:
        print(f"\nserving {MODEL_PATH} at {info['http']} (KServe V2 gRPC on port "
              f"{info['grpc_port']}); Ctrl+C stops it\ntry it with a test image of a {truth}:")
        print(f"  curl -s {info['http']}/predict -d '{{\"data\": [{values}]}}'", flush=True)

    seconds = float(os.environ.get("NNFORGE_DEMO_SERVE_SECONDS", "0"))
    if seconds > 0:
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
    serve(MODEL_PATH, host="127.0.0.1", port=int(os.environ.get("NNFORGE_DEMO_PORT", "8000")),
          grpc_port=int(os.environ.get("NNFORGE_DEMO_GRPC_PORT", "8001")), on_ready=ready)


if __name__ == "__main__":
    sys.exit(main())
