"""CuPy as an execution backend: `InferenceSession(..., backend="cupy")`.

`CupyPlan` runs the optimized graph node by node on the GPU through the IR's reference
implementations (`graph.ops.evaluate_node`, which take CuPy arrays as they take NumPy ones),
so the GPU runs exactly the ops the CPU oracle defines; there is no second op table. The
weights go to the GPU once, when the plan is made; inputs may be NumPy or CuPy arrays; outputs
come back as NumPy arrays, as every backend's do. One plan serves every input shape and every
thread: a call keeps its values in a dict of its own and never writes the shared weights.

The executor is written over an array module `xp` (CuPy by default): with `xp=numpy` the very
same code runs on the CPU, which is how CI (no GPU) checks it against the compiled NumPy plan.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from ..backend import cupy_module, parse_device
from ..graph.ir import Graph
from ..graph.ops import evaluate_node, get_op
from .kernels import check_finite

#: inputs (by position) that ops read as small host-side parameters (target shapes, axes,
#: pads, slice bounds, Gather's indices): they stay NumPy arrays, since the reference ops turn
#: them into Python ints (np.take on a CuPy array takes NumPy indices); every other input is
#: moved to the device before the op runs
HOST_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Pad": (1, 2, 3),
    "Slice": (1, 2, 3, 4), "ConstantOfShape": (0,), "Gather": (1,),
    "Expand": (1,), "Split": (1,),
    "Resize": (1, 2, 3), "Tile": (1,), "Range": (0, 1, 2), "CumSum": (1,), "ReduceL2": (1,),
    **{op: (1,) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")},
}

def check_graph(graph: Graph) -> None:
    """ConfigError naming the first op the IR (and so the executor) does not know."""
    for node in graph.nodes:
        get_op(node)


class CupyPlan:
    """A Plan-like runner of a graph on CuPy arrays (any input shape, any thread).

    `device`: 'cuda' (CuPy's current GPU) or 'cuda:N'. `check_finite`: reject NaN/Inf inputs
    (checked where they are, so a CuPy input is not copied to the host for it). `xp`: the
    array module, CuPy when None (numpy runs the same code on the CPU, for tests).
    """

    def __init__(self, graph: Graph, device: str = "cuda", check_finite: bool = False,
                 xp: Any = None, allow_nan: frozenset[int] = frozenset()) -> None:
        if xp is None:
            xp = cupy_module(device)  # DeviceError naming `pip install nnforge[gpu]`
        check_graph(graph)
        self.xp = xp
        self.check_finite = bool(check_finite)
        #: inputs that may hold NaN (the graph fills it in itself; Inf is still refused)
        self.allow_nan = allow_nan
        #: inputs this plan checks for NaN/Inf itself (so the session does not)
        self.probed = frozenset(range(len(graph.inputs))) if check_finite else frozenset()
        self.nodes = tuple(graph.nodes)
        self.input_names = graph.input_names
        self.output_names = graph.output_names
        self.out_dtypes = [np.dtype(v.dtype) if v.dtype else None for v in graph.outputs]
        self.device_id: int | None = None
        if xp is not np:
            index = parse_device(device)[1]
            self.device_id = xp.cuda.Device().id if index is None else index
        host = set()  # initializers some node reads on the host
        device = set()  # ... and on the device
        for node in self.nodes:
            places = HOST_INPUTS.get(node.op, ())
            for k, name in enumerate(node.inputs):
                if name in graph.initializers:
                    (host if k in places else device).add(name)
        # a weight that is itself a graph output (what constant folding may leave) is read there
        host |= {n for n in self.output_names if n in graph.initializers and n not in device}
        self.host_consts = {n: graph.initializers[n] for n in host}
        with self._scope():
            # copied once, here: a call only reads them
            self.consts = {n: xp.asarray(graph.initializers[n]) for n in device}
        self.nbytes = sum(int(a.nbytes) for a in self.consts.values())
        # per node: the values nothing reads afterwards, dropped so device memory is reused
        last: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                last[name] = i
        keep = set(self.output_names)
        self.drops = [[n for n in dict.fromkeys(node.inputs) if n and last.get(n) == i
                       and n not in keep and n not in graph.initializers]
                      for i, node in enumerate(self.nodes)]

    def __getstate__(self) -> dict[str, Any]:
        """The plan with its weights on the host and its array module by name (a module does
        not pickle; device arrays belong to one process's GPU)."""
        state = self.__dict__.copy()
        state["xp"] = "numpy" if self.xp is np else "cupy"
        state["consts"] = {n: _to_host(a) for n, a in self.consts.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Back onto the same GPU (a DeviceError naming the fix where there is none)."""
        state = dict(state)
        name = state.pop("xp")
        device = "cuda" if state["device_id"] is None else f"cuda:{state['device_id']}"
        self.__dict__.update(state)
        self.xp = np if name == "numpy" else cupy_module(device)
        with self._scope():
            self.consts = {n: self.xp.asarray(a) for n, a in self.consts.items()}

    def _scope(self) -> Any:
        """The context that makes this plan's GPU current (nothing on the CPU)."""
        if self.device_id is None:
            return contextlib.nullcontext()
        return self.xp.cuda.Device(self.device_id)

    def run(self, feeds: Sequence[Any]) -> list[np.ndarray]:
        """All outputs (NumPy arrays) for the input arrays (NumPy or CuPy, in input order)."""
        xp, host_consts, consts = self.xp, self.host_consts, self.consts
        if self.check_finite:
            for i, a in enumerate(feeds):
                _check_finite(a, xp, i in self.allow_nan)
        with self._scope():
            env: dict[str, Any] = {n: xp.asarray(a) for n, a in zip(self.input_names, feeds)}
            for node, drops in zip(self.nodes, self.drops):
                places = HOST_INPUTS.get(node.op, ())
                args = []
                for k, name in enumerate(node.inputs):
                    if not name:
                        args.append(None)
                    elif k in places:
                        args.append(_to_host(host_consts[name] if name in host_consts
                                             else env[name]))
                    else:
                        value = consts[name] if name in consts else env[name]
                        # host values (Shape's, Constant's) go to the device when data reads them
                        args.append(value if type(value) is not np.ndarray or xp is np
                                    else xp.asarray(value))
                for name, value in zip(node.outputs, evaluate_node(node, *args)):
                    if name:
                        env[name] = value
                for name in drops:
                    del env[name]
            outs = [env[n] if n in env else consts.get(n, host_consts.get(n))
                    for n in self.output_names]
            return [_host_copy(o, dt) for o, dt in zip(outs, self.out_dtypes)]

    def run_one(self, feeds: Sequence[Any]) -> np.ndarray:
        """The first output."""
        return self.run(feeds)[0]


def _check_finite(a: Any, xp: Any, allow_nan: bool = False) -> None:
    """DataError naming the first NaN/Inf (only Inf with allow_nan) of a NumPy or device
    array."""
    if isinstance(a, np.ndarray):
        check_finite(a, allow_nan=allow_nan)
    elif a.dtype.kind == "f" and (bool(xp.isinf(a).any()) if allow_nan else
                                  not bool(xp.isfinite(a).all())):  # one GPU reduction
        check_finite(_to_host(a), allow_nan=allow_nan)  # only to name the entry


def _to_host(a: Any) -> np.ndarray:
    """A NumPy array of a (a device array is copied over)."""
    return a if isinstance(a, np.ndarray) else np.asarray(a.get() if hasattr(a, "get") else a)


def _host_copy(a: Any, dtype: np.dtype | None) -> np.ndarray:
    """A fresh NumPy array of an output: never a view of an input, a weight or a buffer."""
    out = np.array(a) if isinstance(a, np.ndarray) else _to_host(a)
    return out if dtype is None or out.dtype == dtype else out.astype(dtype)
