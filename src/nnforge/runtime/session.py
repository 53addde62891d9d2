"""`InferenceSession`: load or trace a model, optimize its graph, run compiled plans.

Plans are compiled per input shape on first use and pooled: a call takes a plan from the
pool for its shape (compiling a new one when all are busy) and puts it back afterwards, so
concurrent calls from many threads never share buffers, and a steady stream of calls
allocates nothing but its outputs. The ONNX Runtime and CuPy backends are plans of their own
that serve every shape and thread (`OrtPlan`, `CupyPlan`); a batch of 0 rows gets empty
outputs of the inferred shapes from `EmptyPlan` whatever the backend.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import numpy as np

from ..backend import device_of, is_device_array, to_numpy, usable_cpus
from ..errors import ConfigError, DataError, DTypeError, ResourceError, ShapeError, out_of_memory
from ..graph.ir import Graph
from ..graph.passes import optimize
from ..graph.shapes import compute_shapes
from ..graph.trace import is_shape_list, trace
from ..nn.module import Module
from .cupy_plan import CupyPlan
from .feeds import as_input_dtype
from .kernels import check_finite
from .ort_backend import OrtPlan
from .plan import Plan, compile_plan
from .postprocess import PostProcessor, Prediction

BACKENDS = ("numpy", "onnxruntime", "cupy")
#: input shapes whose plans are kept; the least recently compiled shape is dropped beyond this
MAX_SHAPES = 16
#: idle plans kept per shape (more are compiled while more threads call at once)
MAX_IDLE_PLANS = 32
#: rows per chunk when predict() is given no batch_size
DEFAULT_BATCH = 4096
#: ops that reshape their input without changing values
RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")
#: ops predict() looks through to find the model's final activation
PASS_THROUGH = ("Identity", "Dropout", *RESHAPES)

class InferenceSession:
    """Run a model for inference: `run(x)` gives raw outputs, `predict(X)` task answers.

    `path_or_model`: a `.nnf` path, an nnforge Module (traced in eval semantics) or a graph IR.
    `optimization`: "none", "basic" or "all" (see `nnforge.graph.passes`); `disabled_passes`
    switches single passes off by name. `backend`: "numpy" (compiled plans), "onnxruntime" or
    "cupy" (the GPU; `pip install nnforge[gpu]`); by default "cupy" for a Module that lives on
    a GPU (`model.to("cuda")`) and "numpy" otherwise. Every backend takes NumPy inputs (the
    CuPy one takes CuPy arrays too) and returns NumPy outputs. `input_shape`: one sample's
    shape, for a Module whose first layer does not imply it; for a Module whose forward takes
    several arrays, a list of shapes, one per argument (inputs named input_0, input_1, ...).
    `task`, `labels`, `threshold`: post-processing for `predict` (default: the model file's
    manifest). `check_finite`: reject NaN/Inf inputs with a DataError (in `predict`, a model
    whose stored preprocessing starts with an Imputer fills NaN in first; an input that feeds
    only an imputation inside the graph, Where(IsNaN(x), fill, x) as an ONNX export with
    include_preprocessing has it, may hold NaN in `run` too). `threads`: how many
    threads one call may use (default: every CPU); kernels split big products and convolutions
    over them, and BLAS runs serially inside such calls so that its threads do not compete with
    ours. The session is safe to call from many threads at once either way.
    """

    def __init__(self, path_or_model: str | os.PathLike | Module | Graph,
                 optimization: str = "all",
                 backend: str | None = None, *, disabled_passes: Sequence[str] = (),
                 input_shape: Sequence[Any] | None = None, task: str | None = None,
                 labels: Sequence[Any] | None = None, threshold: float = 0.5,
                 check_finite: bool = True, threads: int | None = None) -> None:
        if backend is not None and backend not in BACKENDS:
            raise ConfigError(f"expected backend one of {list(BACKENDS)}, found {backend!r}")
        model = _load(path_or_model)
        device = device_of(model) if isinstance(model, Module) else "cpu"
        if backend is None:  # a model on a GPU runs there; an explicit backend always wins
            backend = "numpy" if device == "cpu" else "cupy"
        self.manifest: dict[str, Any] = dict(getattr(model, "manifest", None) or {})
        if isinstance(model, Graph):
            raw = model
        else:
            raw = _trace(model, self.manifest, input_shape)
        #: indices of the inputs the graph fills NaN in itself: only Inf is refused there
        self._nan_ok = _imputed_inputs(raw)
        #: the optimized graph (what runs)
        self.graph: Graph = optimize(raw, optimization, disabled_passes)
        self.optimization = optimization
        self.backend = backend
        self.check_finite = bool(check_finite)
        if threads is None:  # the CPUs this process may run on (not the host's count)
            threads = usable_cpus()
        if (not isinstance(threads, (int, np.integer)) or isinstance(threads, bool)
                or threads < 1):
            raise ConfigError(f"expected threads to be a positive integer, found {threads!r}")
        self.threads = int(threads)
        #: the plan of every shape with backend "onnxruntime" (which runs the unoptimized
        #: graph) or "cupy" (on the model's GPU, or CuPy's current one); None: compiled plans
        self._shared: OrtPlan | CupyPlan | None = None
        if backend == "onnxruntime":
            self._shared = OrtPlan(raw, self.threads)
        elif backend == "cupy":
            self._shared = CupyPlan(self.graph, "cuda" if device == "cpu" else device,
                                    self.check_finite, allow_nan=self._nan_ok)
        self._in = self.graph.inputs[0]
        self._dtype = np.dtype(self._in.dtype)
        #: more than one graph input: run() takes a dict by name (or a list in order)
        self._multi = len(self.graph.inputs) > 1
        self._single = len(self.graph.outputs) == 1
        self._pools: dict[tuple[int, ...], list[Plan]] = {}
        self._lock = threading.Lock()
        self.task = task if task is not None else self.manifest.get("task")
        label_list = labels if labels is not None else self.manifest.get("labels")
        if isinstance(label_list, np.ndarray):  # plain str/int names, so results stay JSON-ready
            label_list = label_list.tolist()
        self._post = PostProcessor(self.task, None if label_list is None else list(label_list),
                                   self._final_op(), threshold)
        pre = self.manifest.get("preprocessing")
        self._pre = self._impute = None
        if pre:
            self._impute, self._pre = _split_imputer(pre)

    @property
    def fills_missing(self) -> bool:
        """Whether `predict` takes NaN inputs as missing values and fills them in (a stored
        Imputer, or an imputation inside the graph); Inf is refused either way."""
        return self._impute is not None or bool(self._nan_ok)

    # -- shapes ------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of one input sample (no batch dimension; None where any size is accepted)."""
        return _public_shape(self._in.shape)[1:]

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """Shape of one sample of the (first) output (no batch dimension)."""
        return _public_shape(self.graph.outputs[0].shape)[1:]

    @property
    def input_names(self) -> list[str]:
        """Graph input names."""
        return self.graph.input_names

    @property
    def output_names(self) -> list[str]:
        """Graph output names."""
        return self.graph.output_names

    # -- raw inference -----------------------------------------------------------------------
    def run(self, x: Any) -> Any:
        """Raw outputs for a batch x: an array, or a dict by name when there are several.

        For a model with several inputs, x is a dict of arrays by input name, or a list of
        them in `input_names` order.
        """
        if self._multi:
            return self._run_inputs(x)
        # the hot path: a handful of attribute reads and one dict lookup around the kernels
        if x.__class__ is not np.ndarray or x.dtype is not self._dtype:
            if isinstance(x, dict):  # {name: array}, as for a model with several inputs
                _check_names(x, self.graph.input_names)
                x = next(iter(x.values()))
            x = self._coerce(x)
        try:
            plan = self._pools[x.shape].pop()
        except (KeyError, IndexError):
            plan = self._new_plan(x.shape)
        try:
            if self.check_finite and not plan.probed:
                check_finite(x, allow_nan=bool(self._nan_ok))
            if self._single:
                return plan.run_one((x,))
            return dict(zip(self.graph.output_names, plan.run((x,))))
        except MemoryError as exc:  # compiled plans name the node; other backends land here
            raise _out_of_memory(x.shape, exc) from None
        finally:
            pool = self._pools.get(x.shape)
            if pool is not None and len(pool) < MAX_IDLE_PLANS:
                pool.append(plan)

    def _coerce(self, x: Any, dtype: Any = None, what: str = "input",
                offset: int = 0) -> np.ndarray:
        """x as a C-contiguous array of the model's dtype, or a DTypeError (a DataError for
        values an integer input cannot take; offset numbers x's first row in the caller's)."""
        if is_device_array(x) and self.backend == "cupy":  # stays on the GPU
            if x.dtype.kind not in "biuf":
                raise DTypeError(f"expected numeric {what} (float, int or bool), found dtype "
                                 f"{x.dtype}")
            return self._shared.xp.ascontiguousarray(  # type: ignore[union-attr]
                x, dtype=self._dtype if dtype is None else dtype)
        if not isinstance(x, np.ndarray) and hasattr(x, "columns"):
            x = self._by_name(x)
        arr = x if isinstance(x, np.ndarray) else _as_array(x)
        if arr.dtype.kind not in "biuf":
            raise DTypeError(f"expected numeric {what} (float, int or bool), found dtype "
                             f"{arr.dtype}")
        if what == "input":  # the one input: named, so an ids error says which values
            what = f"input {self.graph.input_names[0]!r}"
        return as_input_dtype(arr, self._dtype if dtype is None else dtype, what, offset)

    def _run_inputs(self, x: Any) -> Any:
        """run() for a model with several inputs."""
        names = self.graph.input_names
        if isinstance(x, dict):
            _check_names(x, names)
            arrays = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(x) == len(names):
            arrays = list(x)
        else:
            raise ConfigError(f"this model has {len(names)} inputs {names}: pass a dict of "
                              f"arrays by name or a list of {len(names)} in that order, found "
                              f"{type(x).__name__}")
        feeds = tuple(self._coerce(a, v.dtype, f"input {v.name!r}")
                      for a, v in zip(arrays, self.graph.inputs))
        key = tuple(a.shape for a in feeds)
        try:
            plan = self._pools[key].pop()
        except (KeyError, IndexError):
            plan = self._new_plan(key)
        try:
            if self.check_finite:
                for i, a in enumerate(feeds):
                    if i not in plan.probed:
                        check_finite(a, allow_nan=i in self._nan_ok)
            outs = plan.run(feeds)
        except MemoryError as exc:
            raise _out_of_memory(key, exc) from None
        finally:
            pool = self._pools.get(key)
            if pool is not None and len(pool) < MAX_IDLE_PLANS:
                pool.append(plan)
        return outs[0] if self._single else dict(zip(self.graph.output_names, outs))

    def _new_plan(self, shape: tuple) -> Plan:
        """Check the shape(s) against the graph input(s) and compile a plan for them."""
        shapes = shape if self._multi else (shape,)
        for v, s in zip(self.graph.inputs, shapes):
            expected = v.shape or ()
            ok = len(s) == len(expected) and all(
                not isinstance(e, int) or e == d for e, d in zip(expected, s))
            what = f"input {v.name!r}" if self._multi else "input"
            if not ok:  # an ONNX file with a fixed batch says how to export a free one
                note = ((self.manifest.get("onnx") or {}).get("fixed_batch") or {}).get("note")
                raise ShapeError(f"expected {what} of shape {_fmt(expected)}, found {tuple(s)}"
                                 + (f"; {note}" if note else ""))
        if any(s and s[0] == 0 for s in shapes):
            plan: Any = EmptyPlan(self.graph, shapes)
        elif self._shared is not None:
            plan = self._shared
        else:
            plan = compile_plan(self.graph, list(shapes), self.check_finite, self.threads,
                                self._nan_ok)
        with self._lock:
            if shape not in self._pools:
                if len(self._pools) >= MAX_SHAPES:
                    self._pools.pop(next(iter(self._pools)))
                self._pools[shape] = []
        return plan

    # -- task-level prediction ---------------------------------------------------------------
    def predict(self, x: Any, batch_size: int | None = None) -> Prediction:
        """Preprocess, run in chunks of batch_size rows (bounded memory), post-process."""
        if self._multi:
            raise ConfigError(f"predict() needs a model with one input; this one has "
                              f"{self.graph.input_names}: call run() with a dict of arrays")
        if not isinstance(x, np.ndarray) and hasattr(x, "columns"):
            x = self._by_name(x)
        arr = x if isinstance(x, np.ndarray) else _as_array(x)
        if arr.dtype.kind not in "biuf":
            raise DTypeError(f"expected numeric input (float, int or bool), found dtype "
                             f"{arr.dtype}")
        sample = self.input_shape
        if arr.ndim == len(sample):  # one sample without a batch dimension
            arr = arr[None]
        self._check_sample_shape(arr.shape, sample)
        n = len(arr)
        if batch_size is None:
            batch_size = DEFAULT_BATCH
        # bool is an int, but batch_size=True is a mistake, not a chunk of one row
        if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                or batch_size <= 0):
            raise ConfigError(f"expected a positive integer batch_size, found {batch_size!r}")
        batch_size = min(int(batch_size), max(n, 1))
        pred: Prediction | None = None
        # run() reads all of a chunk for NaN/Inf when its plan checks no input as a side effect
        # (ONNX Runtime's): predict leaves that to it rather than read the chunk twice
        by_run = (self.check_finite and self._pre is None and self._shared is not None
                  and not self._shared.probed)
        for start in range(0, n, batch_size):
            chunk = arr[start:start + batch_size]
            if self._impute is not None:  # NaN is a missing value it fills; inf stays refused
                chunk = self._impute.transform(chunk)
            if self.check_finite and not by_run:  # here, so the error names the row in x
                check_finite(chunk, offset=start, allow_nan=bool(self._nan_ok))
            if self._pre is not None:
                chunk = self._pre.transform(chunk)
            out = self._run_checked(chunk, start) if self.check_finite else self.run(chunk)
            out = out if isinstance(out, np.ndarray) else next(iter(out.values()))
            if pred is None:
                pred = self._post.allocate(n, out.shape[1:], out.dtype)
            self._post.fill(pred, start, out)
        if pred is None:  # no rows: empty results of the right kind
            out_dtype = self.graph.outputs[0].dtype or self._dtype  # not the input's: ids
            pred = self._post.allocate(0, tuple(d or 1 for d in self.output_shape),
                                       np.dtype(out_dtype))
        return self._post.finish(pred)

    def _run_checked(self, chunk: np.ndarray, start: int) -> Any:
        """run(chunk) for predict, a NaN/Inf found in run() (by its own check, a plan's probe,
        or in values the cast to the model's dtype overflowed) named by its row in predict's
        input rather than in the chunk (which starts at row `start`)."""
        try:
            return self.run(chunk)
        except DataError:
            if start == 0:  # the chunk's rows are the input's rows: the message is right
                raise
        # the check run() made (on the chunk as run() casts it), rows counted from x's start
        check_finite(self._coerce(chunk, offset=start), offset=start, allow_nan=bool(self._nan_ok))
        return self.run(chunk)  # raises run()'s own error again, should it be no NaN/Inf

    def _by_name(self, frame: Any) -> Any:
        """A table with named columns (a pandas DataFrame, say), its columns put in the order
        the model was trained on when the model stored its feature names."""
        names = ((self.manifest.get("inputs") or [{}])[0] or {}).get("names")
        if not names:
            return frame
        found = [str(c) for c in frame.columns]
        missing = [n for n in names if n not in found]
        if missing:
            extra = [c for c in found if c not in names]
            raise ShapeError(f"expected columns {names}, found {found} (missing {missing}"
                             + (f"; unexpected {extra})" if extra else ")"))
        return frame[list(names)].to_numpy()

    def _check_sample_shape(self, shape: tuple[int, ...], sample: tuple[int | None, ...]) -> None:
        if len(shape) != len(sample) + 1 or any(
                e is not None and e != s for e, s in zip(sample, shape[1:])):
            if len(sample) == 1 and len(shape) == 2:
                raise ShapeError(f"expected {sample[0]} features per row, found {shape[1]}")
            raise ShapeError(f"expected input of shape {_fmt((None, *sample))}, found "
                             f"{tuple(shape)}")

    def _final_op(self) -> str | None:
        """The activation that produces the output (Softmax, Sigmoid, ...), if any."""
        producers = self.graph.producers()
        prod = producers.get(self.graph.output_names[0])
        # look through ops that pass values on unchanged (left in place at level "none", or
        # a Flatten), else a final Softmax or Sigmoid hides behind them and predict() applies
        # it a second time; a reshape that mixes several axes into a row hides a Softmax
        # (normalized along one axis, not per row) but not an elementwise Sigmoid
        mixed = False
        while prod is not None and prod.inputs and prod.op in PASS_THROUGH:
            if prod.op in RESHAPES:
                if not self._keeps_batch(prod.inputs[0], prod.outputs[0]):
                    return None
                mixed |= sum(d != 1 for d in self._shape_of(prod.inputs[0])[1:]) > 1
            prod = producers.get(prod.inputs[0])
        if prod is None:
            return None
        op = prod.attrs.get("activation") if prod.op.startswith("Fused") else prod.op
        return None if mixed and op in ("Softmax", "LogSoftmax") else op

    def _keeps_batch(self, src: str, dst: str) -> bool:
        """Whether a reshape from src to dst keeps the batch axis (each row stays a row)."""
        a, b = self._shape_of(src), self._shape_of(dst)
        return len(a) >= 1 and len(b) >= 1 and a[0] == b[0]

    def _shape_of(self, name: str) -> tuple:
        """A value's inferred shape (() when unknown)."""
        info = self.graph.value_info.get(name)
        return tuple(info.shape or ()) if info is not None else ()

    # -- pickling: multiprocessing and joblib send a session to their workers ---------------
    def __getstate__(self) -> dict[str, Any]:
        """Graph, manifest and settings; the lock and the compiled plans (rebuilt on first use)
        are left out. A shared ONNX Runtime or CuPy plan pickles itself (OrtPlan, CupyPlan)."""
        state = self.__dict__.copy()
        del state["_lock"]
        state["_pools"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the settings with a new lock and no plans yet."""
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"InferenceSession(input_shape={self.input_shape}, output_shape="
                f"{self.output_shape}, task={self.task!r}, optimization={self.optimization!r}, "
                f"nodes={len(self.graph.nodes)})")


def _trace(model: Module, manifest: dict[str, Any], input_shape: Any) -> Graph:
    """Trace a Module: input_shape is one sample's shape, or a list of them (one per forward
    argument, inputs named input_0, input_1, ...)."""
    if is_shape_list(input_shape):
        return trace(model, [(None, *s) for s in input_shape])
    specs = manifest.get("inputs") or [{}]
    if input_shape is None and len(specs) > 1:  # a saved multi-input model: its manifest says
        return trace(model, [s["shape"] for s in specs], input_name=[s["name"] for s in specs])
    own = getattr(model, "input_shape", None)
    if input_shape is None and is_shape_list(own) and len(own) > 1:  # set by hand, or nf.load
        return trace(model, [(None, *s) for s in own])
    spec = specs[0]
    full_shape = spec.get("shape") if input_shape is None else (None, *input_shape)
    if full_shape is None and getattr(model, "input_shape", None) is not None:
        full_shape = (None, *model.input_shape)
    return trace(model, full_shape, input_name=spec.get("name", "input"))


def _imputed_inputs(graph: Graph) -> frozenset[int]:
    """Indices of the graph inputs read only by an imputation, Where(IsNaN(x), fill, x) with a
    constant fill: every NaN they hold is replaced before any other op sees it."""
    found = set()
    for k, v in enumerate(graph.inputs):
        x = v.name
        users = [n for n in graph.nodes if x in n.inputs]
        masks = {n.outputs[0] for n in users if n.op == "IsNaN" and list(n.inputs) == [x]}
        wheres = [n for n in users if n.op == "Where"]
        ok = all(n.op == "IsNaN" and list(n.inputs) == [x] or n.op == "Where"
                 and len(n.inputs) == 3 and n.inputs[0] in masks
                 and n.inputs[1] in graph.initializers and n.inputs[2] == x
                 # a NaN fill would put back the NaN the check exists to catch
                 and bool(np.isfinite(graph.initializers[n.inputs[1]]).all())
                 for n in users)
        if ok and wheres and x not in graph.output_names:
            found.add(k)
    return frozenset(found)


def _split_imputer(config: Any) -> tuple[Any, Any]:
    """(the leading Imputer steps, the other steps) of a stored preprocessing config, each
    None when empty: predict fills missing values before it checks for non-finite ones."""
    from ..data.preprocessing import Imputer, Pipeline, preprocessing_from_config  # noqa: PLC0415

    pre = preprocessing_from_config(config)
    steps = list(pre) if isinstance(pre, Pipeline) else [pre]
    k = 0
    while k < len(steps) and isinstance(steps[k], Imputer):
        k += 1

    def chain(part: list[Any]) -> Any:
        return None if not part else part[0] if len(part) == 1 else Pipeline(part)
    return chain(steps[:k]), chain(steps[k:])


def _load(path_or_model: Any) -> Module | Graph:
    if isinstance(path_or_model, (Module, Graph)):
        return path_or_model
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise ConfigError(f"expected a model path or an nnforge Module, found "
                          f"{type(path_or_model).__name__}")
    path = os.fspath(path_or_model)
    if path.lower().endswith(".onnx"):
        from ..onnx import load as load_onnx  # noqa: PLC0415 - needs the onnx package
        return load_onnx(path)
    from ..io import load  # noqa: PLC0415 - io pulls in safetensors; only paths need it
    return load(path)


class EmptyPlan:
    """The plan of a batch of 0 rows: fresh empty outputs of the shapes inference gives."""

    def __init__(self, graph: Graph, shapes: Sequence[tuple[int, ...]]) -> None:
        infos = compute_shapes(graph, {v.name: tuple(s) for v, s in zip(graph.inputs, shapes)})
        self.outputs: list[tuple[tuple[int, ...], np.dtype]] = []
        for v in graph.outputs:
            shape = infos[v.name].shape
            if shape is None or not all(isinstance(d, int) for d in shape) or 0 not in shape:
                # an output that does not shrink with the batch needs a real run to compute
                raise ShapeError(f"expected at least one row, found inputs of shapes "
                                 f"{[tuple(s) for s in shapes]}")
            # the inferred dtype (int64 ids in, float32 out), else the declared one
            dtype = infos[v.name].dtype or v.dtype or graph.inputs[0].dtype
            self.outputs.append((tuple(shape), np.dtype(dtype)))
        #: nothing to check: no values
        self.probed = frozenset(range(len(graph.inputs)))
        self.nbytes = 0

    def run(self, feeds: Sequence[Any]) -> list[np.ndarray]:
        """Empty outputs."""
        return [np.empty(shape, dtype) for shape, dtype in self.outputs]

    def run_one(self, feeds: Sequence[Any]) -> np.ndarray:
        """The first empty output."""
        shape, dtype = self.outputs[0]
        return np.empty(shape, dtype)


def _out_of_memory(shape: Any, exc: MemoryError) -> ResourceError:
    """The nnforge error for a run that ran out of memory."""
    if isinstance(exc, ResourceError):  # a compiled plan's, which names the failing node
        return exc
    return out_of_memory(f"running the model on inputs of shape {shape}", exc)


def _check_names(feeds: dict, names: list[str]) -> None:
    """ConfigError naming unknown and missing keys unless feeds has exactly the input names."""
    unknown = [k for k in feeds if k not in names]
    missing = [n for n in names if n not in feeds]
    if not unknown and not missing:
        return
    parts = []
    if unknown:
        parts.append(f"unknown input name{'s' * (len(unknown) > 1)} "
                     f"{', '.join(repr(k) for k in unknown)}")
    if missing:
        parts.append(f"missing input{'s' * (len(missing) > 1)} "
                     f"{', '.join(repr(n) for n in missing)}")
    raise ConfigError(f"{'; '.join(parts)}: expected a dict with the model's input "
                      f"name{'s' * (len(names) > 1)} {names}")


def _as_array(x: Any) -> np.ndarray:
    if is_device_array(x):  # a CuPy array given to a host backend (or to predict)
        return to_numpy(x)
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise DTypeError(f"expected a numeric array, found {type(x).__name__} ({exc})") from None


def _public_shape(shape: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else None for d in (shape or ()))


def _fmt(shape: Any) -> str:
    return "(" + ", ".join("N" if i == 0 and not isinstance(d, int) else
                           ("?" if d is None or not isinstance(d, int) else str(d))
                           for i, d in enumerate(shape)) + ")"
