"""`Function`: one differentiable op, forward and backward side by side (Chainer's FunctionNode)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .grad_mode import is_grad_enabled

#: The op recorder of an op-level trace in progress (nnforge.graph.trace_ops), None when off:
#: `apply` tests this one global, so tracing costs nothing when no trace runs.
RECORDER: Any = None


class Function:
    """Base class of every differentiable op.

    Subclasses implement `forward(*arrays) -> array` and `backward(grad_out) -> tuple` with one
    entry per input (None where no gradient is needed; `self.needs_input_grad` says which).
    State needed by backward is kept on `self`. `ir_name` is the ONNX op name the op maps to;
    `lower(b, xs)` emits the IR nodes that compute it (the default: one `ir_name` node without
    attributes for ops that set `simple_lowering`, else a ConfigError: the op cannot be traced).
    An op with several outputs returns a tuple from forward and gets a tuple of output
    gradients in backward (None for an output that received none). A `differentiable = False`
    op (argmax) never records: its output is cut from the graph.
    """

    ir_name: ClassVar[str | None] = None
    simple_lowering: ClassVar[bool] = False
    differentiable: ClassVar[bool] = True
    released: bool = False

    needs_input_grad: tuple[bool, ...] = ()
    inputs: tuple[Any, ...] = ()

    def forward(self, *xs: Any) -> Any:  # pragma: no cover - abstract
        """Compute the output array from the input arrays."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, gy: Any) -> tuple[Any, ...]:  # pragma: no cover - abstract
        """Return the gradient for each input given the output gradient."""
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def lower(self, b: Any, xs: list[str]) -> Any:
        """IR value(s) computing this op (after forward ran) from input values xs, built with
        the trace's builder b (`b.node`, `b.ints`, `b.const`, `b.shape`)."""
        if self.simple_lowering and self.ir_name:
            return b.node(self.ir_name, xs)
        raise b.unsupported(self)

    @classmethod
    def apply(cls, *inputs: Any, **attrs: Any) -> Any:
        """Run the op on tensors (or arrays/scalars) and record it for backward when needed."""
        from .tensor import Tensor, as_tensor  # noqa: PLC0415 - circular import

        fn = cls(**attrs) if attrs else cls()
        tensors = tuple(as_tensor(x) for x in inputs)
        needs = tuple(t.requires_grad for t in tensors)
        record = cls.differentiable and is_grad_enabled() and any(needs)
        fn.needs_input_grad = needs if record else tuple(False for _ in needs)
        out = fn.forward(*(t.data for t in tensors))
        if type(out) is not np.ndarray:
            if isinstance(out, np.generic):  # NumPy gives 0-d results as scalars: keep arrays
                out = np.asarray(out)
            elif isinstance(out, tuple):
                out = tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in out)
        if isinstance(out, tuple):
            results = fn._wrap_outputs(out, tensors, record)
            if RECORDER is not None:
                RECORDER.record(fn, tensors, results)
            return results
        result = Tensor(out, requires_grad=record, _keep=True)
        if record:
            fn.inputs = tensors
            result._creator = fn
        if RECORDER is not None:
            RECORDER.record(fn, tensors, result)
        return result

    def _wrap_outputs(self, outs: tuple, tensors: tuple, record: bool) -> tuple:
        """One tensor per output of a several-output op, each created by an `OutputOf`."""
        from .tensor import Tensor  # noqa: PLC0415 - circular import

        results = tuple(Tensor(o, requires_grad=record, _keep=True) for o in outs)
        if record:
            self.inputs, self.n_outputs = tensors, len(outs)
            for i, r in enumerate(results):
                r._creator = OutputOf(self, i)
        return results

    def release(self) -> None:
        """Drop references kept for backward so memory is freed once the graph is done."""
        self.inputs = ()
        self.__dict__.clear()
        self.released = True  # tells a sibling output of a several-output op its graph is gone


class OutputOf:
    """The creator of output `index` of a several-output op: backward() gathers the gradients
    of all its outputs and runs the op's backward once (so a split's gradient is one concat,
    not one full-size array per piece)."""

    __slots__ = ("fn", "index")

    def __init__(self, fn: Function, index: int) -> None:
        self.fn, self.index = fn, index

    @property
    def inputs(self) -> tuple[Any, ...]:
        """The op's inputs (empty once its graph is freed)."""
        return self.fn.inputs
