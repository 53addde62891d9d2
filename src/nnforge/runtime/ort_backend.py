"""ONNX Runtime as an execution backend: `InferenceSession(..., backend="onnxruntime")`.

The session exports its unoptimized graph to ONNX in memory and hands it to ONNX Runtime,
which does its own graph optimization. `OrtPlan` has the interface of a compiled `Plan`, and
one serves every input shape and every thread (ONNX Runtime's `run` is thread-safe).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..graph.ir import Graph

#: integer ops that ONNX Runtime's CPU kernels compute with a bare C division: a divisor 0,
#: or INT_MIN / -1, raises SIGFPE there and kills the whole process, not just the call
INT_DIVISIONS = ("Div", "Mod")

#: ONNX opset of the in-memory model (Gelu is one op from opset 20 on), lowered to the newest
#: one the installed onnx and onnxruntime handle (`ort_opset`)
ORT_OPSET = 20


def ort_opset() -> int:
    """ORT_OPSET, capped the way export caps it (`exporter.opset_range`); ConfigError when the
    installed onnxruntime loads no opset export can write."""
    from ..onnx.exporter import opset_range  # noqa: PLC0415 - needs the onnx package

    low, high, why = opset_range()
    if high < low:
        raise ConfigError(f"backend='onnxruntime' needs an opset from {low} on, and {why}")
    return min(ORT_OPSET, high)


def _safe_divisor(d: np.ndarray | None) -> bool:
    """Whether a divisor is a constant free of 0 and -1 (-1 only matters for INT_MIN / -1)."""
    return d is not None and d.size > 0 and not bool(((d == 0) | (d == -1)).any())


def refuse_unsafe_division(graph: Graph) -> None:
    """ConfigError naming the first integer Div or Mod whose divisor may be 0 or -1: ONNX
    Runtime would crash the process on it (SIGFPE) where the NumPy backend raises a DataError."""
    from ..graph.shapes import compute_shapes  # noqa: PLC0415 - only for the ops above

    nodes = [n for n in graph.nodes if n.op in INT_DIVISIONS and len(n.inputs) > 1]
    if not nodes:
        return
    infos = compute_shapes(graph)
    for node in nodes:
        info = infos.get(node.inputs[0])
        if info is None or np.dtype(info.dtype).kind not in "iu":
            continue
        if not _safe_divisor(graph.initializers.get(node.inputs[1])):
            raise ConfigError(
                f"{node.op} {node.name!r}: an integer division by {node.inputs[1]!r}, which "
                f"may hold 0 or -1, crashes ONNX Runtime; expected a constant divisor free of "
                f"0 and -1 for backend='onnxruntime'; use backend='numpy' for this model")


class OrtPlan:
    """A Plan-like runner of a graph in ONNX Runtime (any input shape, any thread)."""

    #: ONNX Runtime does no NaN/Inf checks for the session; it must check inputs itself
    probed: frozenset[int] = frozenset()

    def __init__(self, graph: Graph, threads: int = 1) -> None:
        try:
            import onnxruntime  # noqa: F401, PLC0415 - optional dependencies, checked first

            from ..onnx.exporter import graph_to_model  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(f"backend='onnxruntime' needs the {exc.name or 'onnxruntime'} "
                              f"package; install it with: pip install 'nnforge[onnx]'") from None

        refuse_unsafe_division(graph)
        #: the opset the graph went to ONNX Runtime at
        self.opset = ort_opset()
        self.threads = int(threads)
        self.dtype = str(graph.inputs[0].dtype)
        self.input_names = graph.input_names
        self.output_names = graph.output_names
        self.nbytes = 0
        self._open(graph_to_model(graph, self.opset).SerializeToString())

    def _open(self, model_bytes: bytes) -> None:
        """Start the ONNX Runtime session on a serialized model (ORT keeps these very bytes,
        which pickling reuses: no second copy)."""
        try:
            import onnxruntime as ort  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ConfigError(f"backend='onnxruntime' needs the {exc.name or 'onnxruntime'} "
                              f"package; install it with: pip install 'nnforge[onnx]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # warnings about unused initializers are not the user's
        try:
            self.session = ort.InferenceSession(model_bytes, opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's errors share no base class to name
            # e.g. ONNX Runtime has no float64 kernel for LeakyRelu, Conv or AveragePool
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"ONNX Runtime cannot run this {self.dtype} model: "
                              f"{first}; expected backend='numpy' for it") from None
        self._model_bytes = model_bytes
        # built once: a call then makes no name lists (ORT wraps the input arrays, no copy)
        self._first_output = self.output_names[:1]
        self._single_input = self.input_names[0] if len(self.input_names) == 1 else None

    def __getstate__(self) -> dict[str, Any]:
        """The serialized model and settings: ONNX Runtime's session itself does not pickle."""
        state = self.__dict__.copy()
        del state["session"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Start a new ONNX Runtime session (ConfigError naming the install when it lacks)."""
        self.__dict__.update(state)
        self._open(self._model_bytes)

    def _feed(self, feeds: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """ONNX Runtime's {input name: array}."""
        if self._single_input is not None:
            return {self._single_input: feeds[0]}
        return dict(zip(self.input_names, feeds))

    def _run(self, names: list[str], feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """ONNX Runtime's run, its errors (a bad index, a shape the data gives) as DataError."""
        try:
            return self.session.run(names, self._feed(feeds))
        except MemoryError:
            raise  # the session reports it as a ResourceError
        except Exception as exc:  # noqa: BLE001 - ORT's errors share no base class to name
            raise DataError(f"ONNX Runtime failed on this input: {str(exc).strip()}"
                            ) from None

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """All outputs for the input arrays (in graph input order); ORT's own output arrays,
        returned without a copy."""
        return self._run(self.output_names, feeds)

    def run_one(self, feeds: Sequence[np.ndarray]) -> Any:
        """The first output."""
        return self._run(self._first_output, feeds)[0]
