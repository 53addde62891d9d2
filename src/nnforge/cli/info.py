"""`nnforge info`: what a model file holds: manifest, layers with shapes and sizes, the graph."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .common import EXIT_FAILURE, UsageError, new_command, print_json, print_table

EXAMPLES = """\
  nnforge info models/digits/1/model.nnf
  nnforge info models/digits/1/model.nnf --graph
  nnforge info models/digits/1/model.nnf --graph --optimization none   # the traced graph
  nnforge info models/digits/1/model.nnf --json"""


def add_parser(sub: Any) -> None:
    """Register `info`."""
    p = new_command(sub, "info", "show what a model file holds",
                    "Print a model's manifest (task, labels, inputs and outputs, "
                    "preprocessing, metrics), a table of its layers with output shapes, "
                    "parameter counts and bytes, and optionally its optimized inference graph. "
                    "An .onnx file is read as `nnforge import` would read it.",
                    EXAMPLES)
    p.add_argument("model", metavar="MODEL", help="the .nnf model file (or an .onnx file)")
    p.add_argument("--graph", action="store_true",
                   help="also print the inference graph after optimization")
    p.add_argument("--optimization", choices=("none", "basic", "all"),
                   help="optimization level of the graph shown by --graph (default: all)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _leaves(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Layers in execution order: a Sequential is expanded, any other module stays whole."""
    from ..nn import Sequential  # noqa: PLC0415

    if isinstance(model, Sequential):
        out: list[tuple[str, Any]] = []
        for name, child in model._modules.items():
            out += _leaves(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix or "model", model)]


def _load(path: str) -> Any:
    """A .nnf model, or an .onnx file as the module `nnforge import` would save."""
    import nnforge as nf  # noqa: PLC0415

    if Path(path).suffix.lower() != ".onnx" or Path(path).is_dir():
        return nf.load(path)  # validates checksums and the architecture
    try:
        from ..onnx.convert import to_module  # noqa: PLC0415 - the onnx extra
    except ModuleNotFoundError as exc:
        raise UsageError(f"reading {path!r} needs the Python package {exc.name!r}; install "
                         f"it with: pip install 'nnforge[onnx]'", EXIT_FAILURE) from None
    return to_module(path)


def layer_table(model: Any, input_shape: tuple[int, ...] | None) -> list[dict[str, Any]]:
    """name, type, output shape, parameters and bytes of each layer (one zero sample run)."""
    from ..autograd import no_grad  # noqa: PLC0415

    rows = []
    shape_known = input_shape is not None  # unknown: the shapes column shows '?'
    x: Any = np.zeros((1, *input_shape), dtype=np.float32) if shape_known else None
    for name, layer in _leaves(model):
        params = sum(int(p.size) for p in layer.parameters())
        nbytes = sum(int(p.data.nbytes) for p in layer.parameters())
        nbytes += sum(int(b.nbytes) for _, b in layer.named_buffers())
        out_shape: list[Any] | None = None
        if shape_known:
            try:
                with no_grad():
                    x = layer(x)
                out_shape = ["N", *x.shape[1:]]
            except Exception:  # noqa: BLE001 - a layer that needs more than one input
                shape_known = False
        rows.append({"name": name, "type": type(layer).__name__, "output_shape": out_shape,
                     "parameters": params, "bytes": nbytes})
    return rows


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 ** 2:.1f} MiB"


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "?"
    # the batch dim is N; any other free dim (an ONNX input's) is unknown, not the batch
    return "(" + ", ".join(("N" if i == 0 else "?") if d is None else str(d)
                           for i, d in enumerate(shape)) + ")"


def run(args: argparse.Namespace) -> int:
    """Describe the model."""
    if args.optimization is not None and not args.graph:
        # it only shapes the --graph listing; alone it would be silently ignored
        raise UsageError("--optimization applies to the graph that --graph prints; give "
                         "--graph too (or drop --optimization)")
    optimization = args.optimization or "all"
    model = _load(args.model)
    manifest = model.manifest
    input_shape: Any = tuple(manifest["inputs"][0]["shape"][1:])
    if None in input_shape:  # an ONNX input with free sizes: the import may know better
        input_shape = getattr(model, "input_shape", None)
    layers = layer_table(model, input_shape)
    totals = {"parameters": sum(r["parameters"] for r in layers),
              "bytes": sum(r["bytes"] for r in layers),
              "file_bytes": Path(args.model).stat().st_size}
    warnings = weight_warnings(model)
    graph_text = None
    if args.graph:
        from ..runtime import InferenceSession  # noqa: PLC0415

        graph_text = InferenceSession(args.model, optimization=optimization).graph.dump()
    state = None
    if manifest.get("kind") == "checkpoint":  # where its training run stood
        from .training_state import training_state  # noqa: PLC0415

        state = training_state(args.model)
    if args.json:
        doc = {"model": args.model, "manifest": manifest, "layers": layers, "totals": totals,
               "warnings": warnings}
        if state is not None:
            doc["training_state"] = state
        if graph_text is not None:
            doc["graph"] = graph_text
        print_json(doc)
        return 0
    _print_manifest(args.model, manifest, totals, warnings)
    print()
    rows = [(r["name"], r["type"], _shape_text(r["output_shape"]), f"{r['parameters']:,}",
             _fmt_bytes(r["bytes"])) for r in layers]
    rows.append(("total", "", "", f"{totals['parameters']:,}", _fmt_bytes(totals["bytes"])))
    print_table(["layer", "type", "output shape", "parameters", "bytes"], rows, "layers",
                align="lllrr")
    if state is not None:
        from .training_state import print_training_state  # noqa: PLC0415

        print()
        print_training_state(state)
    if graph_text is not None:
        print()
        print(f"inference graph (optimization {optimization}):")
        print(graph_text)
    return 0


def _names_text(names: Any) -> str:
    """A list of names for the table: the first 12, then how many in all."""
    if not names:
        return "-"
    return ", ".join(map(str, names[:12])) + (f", ... ({len(names)} in all)"
                                              if len(names) > 12 else "")


def _step_text(step: Any) -> str:
    """A preprocessing step's type; an imputer's also says how it fills missing values."""
    if not isinstance(step, dict):
        return "?"
    kind = str(step.get("type", "?"))
    if kind == "impute":
        how = step.get("strategy")
        if how == "constant":
            how = f"constant {step.get('fill_value')}"
        return f"impute ({how})"
    return kind


def weight_warnings(model: Any) -> list[str]:
    """What is wrong with the weights themselves: NaN or Inf values (a diverged training run
    saves them, and the model then answers NaN for every input)."""
    bad = [name for name, layer in _leaves(model)
           if any(not np.isfinite(np.asarray(p.data)).all() for p in layer.parameters())]
    if not bad:
        return []
    return [f"weights hold NaN/Inf (layer{'s' if len(bad) > 1 else ''} "
            f"{_names_text(bad)}): predictions will not be numbers"]


def _print_manifest(path: str, m: dict[str, Any], totals: dict[str, int],
                    warnings: list[str] | None = None) -> None:
    labels = m.get("labels")
    label_text = _names_text(labels)
    pre = m.get("preprocessing")
    pre_text = "-" if not pre else ", ".join(
        _step_text(p) for p in (pre if isinstance(pre, list) else [pre]))
    fmt = f"{m.get('format')} v{m.get('format_version')} (nnforge {m.get('library_version')})"
    if m.get("format") == "onnx":  # an .onnx file read directly has no .nnf version fields
        onnx_meta = m.get("onnx") or {}
        fmt = f"onnx (opset {onnx_meta.get('opset')}, from {onnx_meta.get('producer') or '?'})"
    rows = [("file", f"{path} ({totals['file_bytes']:,} bytes)"), ("format", fmt),
            ("kind", str(m.get("kind", "model"))), ("created", str(m.get("created") or "-")),
            ("task", str(m.get("task") or "-")), ("labels", label_text),
            ("inputs", "; ".join(f"{s['name']} {s.get('dtype', '')}{_shape_text(s['shape'])}"
                                 for s in m["inputs"])),
            ("outputs", "; ".join(f"{s['name']} {s.get('dtype', '')}{_shape_text(s['shape'])}"
                                  for s in m["outputs"])),
            ("preprocessing", pre_text),
            ("parameters", f"{m.get('num_parameters', totals['parameters']):,}")]
    names = m["inputs"][0].get("names")
    if names:  # the CSV columns, by name, that the model was trained on
        rows.insert(rows.index(next(r for r in rows if r[0] == "inputs")) + 1,
                    ("features", _names_text(names)))
    metrics = m.get("metrics") or {}
    if metrics:
        rows.append(("metrics", "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else
                                          f"{k} {v}" for k, v in metrics.items())))
    scaling = m.get("target_scaling")
    if isinstance(scaling, dict):  # predictions are in the targets' units already
        kind = (scaling.get("scaler") or {}).get("type", "a scaler")
        rows.append(("target scaling", f"{kind}, folded into {scaling.get('folded_into')}"))
    trained = (m.get("extra") or {}).get("trained_with")
    if isinstance(trained, dict) and trained.get("command"):
        rows.append(("trained with", str(trained["command"])))
    rows += [("warning", w) for w in warnings or []]
    print_table(["field", "value"], rows, "model", align="ll")
