"""`nnforge evaluate`: a saved model's metrics (and confusion matrix) on labeled data."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .common import (
    UsageError,
    check_output_dir,
    fraction,
    new_command,
    positive_int,
    print_json,
    require_matplotlib,
    sample_shape,
    seed_int,
)
from .dataio import add_data_arguments, check_label_column

EXAMPLES = """\
  nnforge evaluate models/digits/1/model.nnf --dataset digits
  nnforge evaluate models/digits/1/model.nnf --dataset digits --test-size 0.2 --seed 0
  nnforge evaluate model.nnf --data test.csv --label-column target --json
  nnforge evaluate model.nnf --data test.npz --report reports/test
  nnforge evaluate model.nnf --data t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz

Given the data `nnforge train` made the model from (the same bundled set, or a file with
the same bytes), evaluate scores only the held-out test rows of the split train recorded in
the model, and says so; --test-size 0 scores every row. --test-size F --seed N scores the
held-out rows of the split train makes with those values (its defaults are 0.2 and 0)."""


def add_parser(sub: Any) -> None:
    """Register `evaluate`."""
    p = new_command(sub, "evaluate", "score a model on labeled data",
                    "Compute a saved model's metrics on labeled data: accuracy, precision, "
                    "recall and F1 with a confusion matrix for classification; MSE, RMSE, MAE "
                    "and R2 for regression.", EXAMPLES)
    p.add_argument("model", metavar="MODEL", help="the .nnf model file (or an .onnx file)")
    add_data_arguments(p, required=True)
    p.add_argument("--test-size", type=fraction, metavar="F",
                   help="score only the held-out part of the split train makes with this size; "
                        "0 scores every row (default: the model's own training split on "
                        "its training data, else every row)")
    p.add_argument("--seed", type=seed_int, metavar="N",
                   help="seed of that split, with --test-size (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="rows per inference batch (default: the session's)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--report", metavar="DIR",
                   help="write a confusion matrix or predicted-vs-true plot and a "
                        "Markdown/HTML report there, replacing an earlier nnforge report's "
                        "files but no others (needs matplotlib)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the model."""
    from ..data import MissingValueError, train_test_split  # noqa: PLC0415
    from ..runtime import InferenceSession  # noqa: PLC0415
    from .columns import (  # noqa: PLC0415
        NOT_FILLED,
        feature_count,
        imputes,
        missing_cell_error,
        plan_csv,
    )
    from .dataio import load_labeled, targets_for_model  # noqa: PLC0415
    from .heldout import choose_rows, note, rows_text  # noqa: PLC0415
    from .predict import _conform, prediction_columns  # noqa: PLC0415
    from .scoring import compute_metrics, confusion, print_confusion, print_metrics  # noqa: PLC0415

    if args.seed is not None and not args.test_size:
        # without a split there is nothing to seed: the flag would be silently ignored
        raise UsageError("--seed seeds the --test-size split; give --test-size too (or drop "
                         "--seed)")
    check_label_column(args.dataset, args.label_column, args.labels)
    if args.report:  # before the work, not after the metrics are printed
        check_output_dir(args.report, "--report")
        require_matplotlib()
    session = InferenceSession(args.model)
    manifest = session.manifest
    task, labels = manifest.get("task") or "regression", manifest.get("labels")
    shape = sample_shape(session)
    out_shape = manifest["outputs"][0]["shape"]
    columns, label_column = None, args.label_column
    if args.data is not None:  # a CSV header is matched to the model's feature names
        columns, label_column = plan_csv(args.data, manifest, feature_count(shape),
                                         args.label_column, labeled=True)
    missing = "nan" if imputes(manifest) else "error"  # a model that fills them takes gaps
    try:
        data = load_labeled(args.dataset, args.data, label_column, columns, missing,
                            args.labels)
    except MissingValueError as exc:
        raise missing_cell_error(exc, NOT_FILLED) from None
    y = targets_for_model(data.y, task, labels, int(out_shape[-1]) if len(out_shape) > 1 else 1)
    x = _conform(data.x, shape, args.dataset or args.data)
    total = len(x)
    choice = choose_rows(manifest, args.test_size, args.seed, args.dataset, args.data, total,
                         args.labels)
    if choice.test_size is not None:
        classes = task in ("multiclass", "binary")
        stratify = classes if choice.stratified is None else choice.stratified
        _, x, _, y = train_test_split(x, y, test_size=choice.test_size, seed=choice.seed,
                                      stratify=y if stratify else None)
    scored = rows_text(choice, len(x), total)
    cols = prediction_columns(session.predict(x, batch_size=args.batch_size), task)
    predicted = cols["classes"] if "classes" in cols else cols.get("multilabel", cols.get("values"))
    if task == "regression" and predicted.ndim == 2 and predicted.shape[1] == 1 and y.ndim == 1:
        predicted = predicted[:, 0]
    metrics = compute_metrics(task, y, predicted)
    matrix = None
    if task in ("multiclass", "binary"):
        matrix = confusion(y, predicted, len(labels) if labels else cols["scores"].shape[-1])
    names = list(labels) if labels else list(range(len(matrix) if matrix is not None else 0))
    if args.json:
        doc: dict[str, Any] = {"model": args.model, "data": data.name, "task": task,
                               "samples": len(x), "rows": {"scored": len(x), "of": total,
                                                           "which": choice.which,
                                                           "text": scored},
                               "metrics": metrics}
        if matrix is not None:
            doc["labels"], doc["confusion_matrix"] = names, matrix
        print_json(doc)
    else:
        line = note(choice, len(x))
        if line:
            print(line)
        print_metrics(metrics, f"{data.name}: {len(x):,} samples, task {task}")
        if matrix is not None:
            print()
            print_confusion(matrix, names)
    if args.report:
        from .report import write_report  # noqa: PLC0415

        summary = [("model", args.model), ("data", data.name), ("task", task),
                   ("samples", f"{len(x):,}"), ("rows scored", scored)]
        files = write_report(args.report, f"nnforge evaluate: {data.name}", summary, metrics,
                             None, matrix, names, None if matrix is not None
                             else (y, np.asarray(predicted)))
        if not args.json:
            print(f"report: {files[-1]}")
    return 0
