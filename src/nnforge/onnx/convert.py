"""ONNX file -> `.nnf` model file: the imported graph as a GraphModule with its metadata."""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..errors import ConfigError
from .graph_module import GraphModule
from .importer import load


def to_module(path_or_graph: Any) -> GraphModule:
    """An ONNX file (or imported Graph) as a GraphModule layer; `.manifest` holds its metadata."""
    graph = load(path_or_graph) if isinstance(path_or_graph, (str, os.PathLike)) else path_or_graph
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ConfigError(f"a .nnf model has one input and one output; the ONNX graph has "
                          f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs")
    module = GraphModule(graph)
    object.__setattr__(module, "manifest", dict(getattr(graph, "manifest", None) or {}))
    return module


def import_model(path: str | os.PathLike, out_path: str | os.PathLike, task: str | None = None,
                 labels: Sequence[Any] | None = None,
                 input_shape: Sequence[int] | None = None) -> GraphModule:
    """Import an ONNX file and save it as a `.nnf` model; task/labels override its metadata."""
    from ..io import save  # noqa: PLC0415

    module = to_module(path)
    meta = module.manifest
    fixed = meta.get("onnx", {}).get("fixed_batch") or {}
    if fixed and not fixed["freed"]:  # a .nnf model takes any number of rows
        raise ConfigError(f"'{os.fspath(path)}' cannot become a .nnf model, which takes any "
                          f"number of rows: {fixed['note']}")
    shape = input_shape if input_shape is not None else getattr(module, "input_shape", None)
    if shape is None:
        dims = meta["inputs"][0]["shape"]
        raise ConfigError(f"the ONNX input has shape {dims} with unknown sizes after the batch "
                          f"dim; expected --input-shape with the size of one sample")
    source = meta.get("onnx", {})
    save(module, out_path, task=task if task is not None else meta.get("task"),
         labels=labels if labels is not None else meta.get("labels"),
         preprocessing=meta.get("preprocessing"), metrics=meta.get("metrics"),
         input_shape=tuple(shape),
         extra={"imported_from": {"format": "onnx", "file": os.path.basename(os.fspath(path)),
                                  "opset": source.get("opset"),
                                  "producer": source.get("producer"),
                                  # the batch size the file fixed and the import freed
                                  "fixed_batch": fixed.get("size")}})
    return module
