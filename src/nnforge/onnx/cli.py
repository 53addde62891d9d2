"""`nnforge export` and `nnforge import`: the command-line front of `nnforge.onnx`.

Each entry point parses its own arguments and returns an exit code; a user mistake raises an
`nnforge.errors` exception, which `nnforge.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from ..cli.common import CliParser, UsageError, check_output_path, int_list

EXPORT_EXAMPLES = """examples:
  nnforge export models/digits/1/model.nnf -o digits.onnx
  nnforge export model.nnf -o model.onnx --opset 13 --include-preprocessing"""

IMPORT_EXAMPLES = """examples:
  nnforge import model.onnx -o models/iris/1/model.nnf --task multiclass --labels a,b,c
  nnforge import cnn.onnx -o cnn.nnf --input-shape 1,28,28"""


def export_main(argv: Sequence[str], prog: str = "nnforge export") -> int:
    """`nnforge export MODEL -o model.onnx [--opset N] [--include-preprocessing]`."""
    from ..errors import ConfigError  # noqa: PLC0415
    from .exporter import DEFAULT_OPSET, check_opset, export, opset_range  # noqa: PLC0415

    low, high, _ = opset_range()

    p = CliParser(prog=prog, description="Export a .nnf model to ONNX: a dynamic batch dim, "
                  "the model's input/output names, its task, labels and preprocessing in the "
                  "ONNX metadata.", epilog=EXPORT_EXAMPLES,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the .nnf model file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset version, {low} to {high} with the installed onnx and "
                   f"onnxruntime (default: {DEFAULT_OPSET})")
    p.add_argument("--include-preprocessing", action="store_true",
                   help="run the model's standardization inside the ONNX graph")
    args = p.parse_args(list(argv))
    try:  # before reading the model: a bad opset is a mistake in the command line
        check_opset(args.opset)
    except ConfigError as exc:
        raise UsageError(f"--opset: {exc}") from None
    _check_paths(args.model, args.output, ".onnx", ".nnf")
    model = export(args.model, args.output, opset=args.opset,
                   include_preprocessing=args.include_preprocessing)
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"wrote {args.output} (opset {args.opset}, {len(model.graph.node)} nodes: "
          f"{', '.join(ops)})")
    return 0


def _check_paths(model: str, output: str, suffix: str, other: str) -> None:
    """Refuse, before converting, a model directory or an output that would replace a model."""
    # `export m.nnf -o m.nnf` used to overwrite the model with ONNX bytes
    if Path(model).is_dir():
        kind = "an ONNX model file" if suffix == ".nnf" else "an nnforge model file"
        raise UsageError(f"expected {kind} at {model!r}, found a directory", 1)
    if Path(output).suffix.lower() == other:
        raise UsageError(f"expected -o/--output to end in {suffix}, found "
                         f"{Path(output).name!r} (this command writes a {suffix} file)")
    check_output_path(output, "-o/--output", [("model file", model)])


def _labels(text: str) -> list[str | int]:
    parts = [t.strip() for t in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated labels, found {text!r}")
    return [int(t) if t.lstrip("-").isdigit() else t for t in parts]


def import_main(argv: Sequence[str], prog: str = "nnforge import") -> int:
    """`nnforge import model.onnx -o model.nnf [--task T] [--labels a,b] [--input-shape ...]`."""
    from ..io import TASKS  # noqa: PLC0415
    from .convert import import_model  # noqa: PLC0415

    p = CliParser(prog=prog, description="Import an ONNX model as a .nnf model file, so it "
                  "serves like a native model (task post-processing, batching, metrics).",
                  epilog=IMPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the .onnx file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .nnf file to write")
    p.add_argument("--task", choices=TASKS, help="the model's task (default: from its metadata)")
    p.add_argument("--labels", type=_labels,
                   help="comma-separated class labels (default: from its metadata)")
    p.add_argument("--input-shape", type=int_list, metavar="DIMS",
                   help="shape of one sample, e.g. 1,28,28 (default: from the model)")
    args = p.parse_args(list(argv))
    _check_paths(args.model, args.output, ".nnf", ".onnx")
    with warnings.catch_warnings(record=True) as caught:  # e.g. a fixed batch size freed
        warnings.simplefilter("always")
        module = import_model(args.model, args.output, task=args.task, labels=args.labels,
                              input_shape=args.input_shape)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print(f"wrote {args.output} ({len(module.get_config()['graph']['nodes'])} nodes, "
          f"{module.num_parameters():,} parameters)")
    return 0
