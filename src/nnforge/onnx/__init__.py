"""ONNX interop: export models to ONNX, import ONNX models into the graph IR.

`export(model_or_path, "model.onnx")` writes a Module or `.nnf` file as ONNX; `load(path)`
reads an ONNX file into the IR (what `InferenceSession("model.onnx")` runs); `GraphModule`
holds an imported graph as a layer so it can be saved as `.nnf`. The `onnx` package is needed
for export and import (`pip install 'nnforge[onnx]'`); importing this package does not load it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError

_LAZY = {
    "export": ("nnforge.onnx.exporter", "export"),
    "graph_to_model": ("nnforge.onnx.exporter", "graph_to_model"),
    "load": ("nnforge.onnx.importer", "load"),
    "graph_from_model": ("nnforge.onnx.importer", "graph_from_model"),
    "to_module": ("nnforge.onnx.convert", "to_module"),
    "import_model": ("nnforge.onnx.convert", "import_model"),
    "GraphModule": ("nnforge.onnx.graph_module", "GraphModule"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nnforge.onnx' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("onnx", "google"):
            raise
        raise ConfigError(f"nnforge.onnx.{name} needs the onnx package, which is not installed; "
                          f"install it with: pip install 'nnforge[onnx]'") from None
    value = getattr(module, attr)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
