"""`Tensor`: an array with define-by-run reverse-mode automatic differentiation."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from .. import backend
from ..errors import BackwardError, DTypeError, ShapeError
from . import function as _function
from .function import OutputOf
from .grad_mode import no_grad


def _to_array(data: Any, dtype: Any) -> Any:
    """Turn user data into a backend array: floats default to float32, ints stay ints."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) or backend.get_array_module(data) is not np:
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f" or arr.dtype == object:
        try:
            return arr.astype(backend.DEFAULT_DTYPE)
        except (TypeError, ValueError) as exc:
            raise DTypeError(f"expected numeric data, found {arr.dtype} ({exc})") from None
    return arr


class Tensor:
    """An n-dimensional array that records the operations applied to it for backward()."""

    __slots__ = ("data", "grad", "requires_grad", "_creator", "name", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None, _keep: bool = False) -> None:
        self.data = data if _keep else _to_array(data, dtype)
        if requires_grad and not backend.is_float_dtype(self.data.dtype):
            raise DTypeError(f"only floating point tensors can require gradients, "
                             f"found dtype {self.data.dtype}")
        self.grad: Any = None
        self.requires_grad = bool(requires_grad)
        self._creator: Any = None
        self.name = name

    # -- array-like properties -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the underlying array."""
        return self.data.shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.data.ndim

    @property
    def dtype(self) -> Any:
        """dtype of the underlying array."""
        return self.data.dtype

    @property
    def size(self) -> int:
        """Number of elements."""
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op (parameters, inputs)."""
        return self._creator is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(backend.to_numpy(self.data), precision=4)}{extra})"

    @property
    def device(self) -> str:
        """Where the data lives: 'cpu', or 'cuda:N' for a CuPy array."""
        return backend.device_of(self.data)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shares memory on the CPU)."""
        return backend.to_numpy(self.data)

    def item(self) -> Any:
        """The single value of a one-element tensor as a Python scalar."""
        if self.data.size != 1:
            raise ShapeError(f"item() needs a tensor with one element, found shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> Tensor:
        """A tensor sharing the data but cut from the graph."""
        return Tensor(self.data, _keep=True)

    def astype(self, dtype: Any) -> Tensor:
        """Cast: differentiable to a floating dtype, cut from the graph to any other one."""
        from ..ops.math import Cast  # noqa: PLC0415

        dtype = np.dtype(dtype)
        if not backend.is_float_dtype(dtype):  # ints and bools carry no gradient (as in torch)
            return Tensor(self.data.astype(dtype), _keep=True)
        return Cast.apply(self, dtype=dtype)

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None

    # -- backward --------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad."""
        if not self.requires_grad:
            raise BackwardError("backward() called on a tensor that does not require grad "
                                 "(was it computed under no_grad(), or from inputs without "
                                 "requires_grad=True?)")
        if grad is None:
            if self.data.size != 1:
                raise ShapeError(f"backward() without a gradient needs a scalar output, "
                                 f"found shape {self.shape}; pass grad= explicitly")
            run_backward(self, np.ones_like(self.data), retain_graph, seed_owned=True)
            return
        grad = _to_array(grad, self.dtype)
        _check_grad_shape(self, grad, "the gradient passed to backward()")
        run_backward(self, grad, retain_graph)

    # -- operators (implemented in nnforge.ops) -------------------------------------------
    def _scalar(self, x: Any) -> Any:
        """A Python number as a 0-d array of this float tensor's dtype (else x unchanged); on a
        GPU tensor, as a 0-d array on its device (CuPy takes no NumPy arrays, 0-d included)."""
        # as_tensor alone would round it to float32: x64 * 0.1 would be off by 1.5e-9
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            data = self.data
            if data.dtype.kind == "f":
                if type(data) is np.ndarray or not backend.is_device_array(data):
                    return np.asarray(x, dtype=data.dtype)
                return backend.xp_of(data).full((), x, dtype=data.dtype)  # a fill, no transfer
            if backend.is_device_array(data):  # int tensor: the number as as_tensor types it
                return backend.same_device_as(as_tensor(x).data, data)
        return x

    def __add__(self, other: Any) -> Tensor:
        return _ops().Add.apply(self, self._scalar(other))

    def __radd__(self, other: Any) -> Tensor:
        return _ops().Add.apply(self._scalar(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops().Sub.apply(self, self._scalar(other))

    def __rsub__(self, other: Any) -> Tensor:
        return _ops().Sub.apply(self._scalar(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops().Mul.apply(self, self._scalar(other))

    def __rmul__(self, other: Any) -> Tensor:
        return _ops().Mul.apply(self._scalar(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops().Div.apply(self, self._scalar(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops().Div.apply(self._scalar(other), self)

    def __neg__(self) -> Tensor:
        return _ops().Neg.apply(self)

    def __pow__(self, exponent: float) -> Tensor:
        if isinstance(exponent, Tensor):
            raise DTypeError("Tensor ** Tensor is not supported; the exponent must be a number")
        return _ops().Pow.apply(self, exponent=float(exponent))

    def __rpow__(self, base: float) -> Tensor:
        return _ops().PowBase.apply(self, base=float(base))

    def __abs__(self) -> Tensor:
        return _ops().Abs.apply(self)

    def __float__(self) -> float:
        return float(self.item())

    def __matmul__(self, other: Any) -> Tensor:
        return _ops().MatMul.apply(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops().MatMul.apply(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        from ..ops.shape import GetItem  # noqa: PLC0415

        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, (tuple, list)):  # x[idx, 0] with idx a Tensor: NumPy needs arrays
            index = type(index)(i.data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index=index)

    def __setitem__(self, index: Any, value: Any) -> None:
        raise DTypeError("a Tensor cannot be assigned into: build the new values with "
                         "nf.where, concat or arithmetic (or write into tensor.data, "
                         "outside autograd)")

    # comparisons give plain boolean arrays: they have no gradient (a trace records them, so a
    # mask passed on to nf.where stays computed in the graph)
    def __lt__(self, other: Any) -> Any:
        return _compared("Less", self, other, self.data < _raw(other))

    def __le__(self, other: Any) -> Any:
        return _compared("LessOrEqual", self, other, self.data <= _raw(other))

    def __gt__(self, other: Any) -> Any:
        return _compared("Greater", self, other, self.data > _raw(other))

    def __ge__(self, other: Any) -> Any:
        return _compared("GreaterOrEqual", self, other, self.data >= _raw(other))

    __hash__ = object.__hash__

    def exp(self) -> Tensor:
        """Elementwise e**x."""
        return _ops().Exp.apply(self)

    def log(self) -> Tensor:
        """Elementwise natural log."""
        return _ops().Log.apply(self)

    def sqrt(self) -> Tensor:
        """Elementwise square root."""
        return _ops().Pow.apply(self, exponent=0.5)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Sum over the given axes (all when None)."""
        return _ops().Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Mean over the given axes (all when None)."""
        return _ops().Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Maximum over the given axes; the gradient is split evenly between ties."""
        return _ops().Max.apply(self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Minimum over the given axes; the gradient is split evenly between ties."""
        return _ops().Min.apply(self, axis=axis, keepdims=keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        """Variance over the given axes (NumPy's ddof; PyTorch's default is ddof=1)."""
        centered = self - self.mean(axis=axis, keepdims=True)
        total = (centered * centered).sum(axis=axis, keepdims=keepdims)
        # from the reduced axes, not size // total.size: that is 0 when another axis is empty
        count = self.size // max(total.size, 1) if self.size else math.prod(
            self.shape[a] for a in _ops()._norm_axis(axis, self.ndim))
        if count - ddof <= 0:
            raise ShapeError(f"var needs more than ddof={ddof} values per result, found {count}")
        return total / float(count - ddof)

    def std(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        """Standard deviation over the given axes (NumPy's ddof)."""
        return _ops().StdSqrt.apply(self.var(axis=axis, keepdims=keepdims, ddof=ddof))

    def sigmoid(self) -> Tensor:
        """Elementwise logistic function."""
        from ..ops.activation import Sigmoid  # noqa: PLC0415

        return Sigmoid.apply(self)

    def tanh(self) -> Tensor:
        """Elementwise hyperbolic tangent."""
        from ..ops.activation import Tanh  # noqa: PLC0415

        return Tanh.apply(self)

    def relu(self) -> Tensor:
        """Elementwise max(x, 0)."""
        from ..ops.activation import Relu  # noqa: PLC0415

        return Relu.apply(self)

    def abs(self) -> Tensor:
        """Elementwise |x|."""
        return _ops().Abs.apply(self)

    def clip(self, low: float | None = None, high: float | None = None) -> Tensor:
        """Values limited to [low, high]; either bound may be None."""
        return _ops().Clip.apply(self, low=low, high=high)

    clamp = clip  # PyTorch's name

    def unsqueeze(self, axis: int) -> Tensor:
        """A new axis of length 1 at `axis` (negative counts from the end of the result)."""
        shape = list(self.shape)
        if not -len(shape) - 1 <= axis <= len(shape):
            raise ShapeError(f"unsqueeze expects an axis in [{-len(shape) - 1}, {len(shape)}], "
                             f"found {axis}")
        shape.insert(axis % (len(shape) + 1), 1)
        return self.reshape(tuple(shape))

    def squeeze(self, axis: Any = None) -> Tensor:
        """Drop axes of length 1 (all of them, or the ones named)."""
        if axis is None:
            return self.reshape(tuple(d for d in self.shape if d != 1))
        named = axis if isinstance(axis, (tuple, list)) else (axis,)
        if not all(-self.ndim <= a < self.ndim for a in named):
            raise ShapeError(f"squeeze expects axes in [{-self.ndim}, {self.ndim - 1}], found "
                             f"{axis}")
        axes = {a % self.ndim for a in named}
        bad = [a for a in sorted(axes) if self.shape[a] != 1]
        if bad:
            raise ShapeError(f"squeeze expects axes of length 1, found axis {bad[0]} of length "
                             f"{self.shape[bad[0]]} in shape {self.shape}")
        return self.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

    def reshape(self, *shape: Any) -> Tensor:
        """Tensor with the same data and a new shape."""
        from ..ops.shape import Reshape  # noqa: PLC0415

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=tuple(shape))

    def transpose(self, *axes: int) -> Tensor:
        """Permute the axes (reverse them when none are given)."""
        from ..ops.shape import Transpose  # noqa: PLC0415

        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes=tuple(axes) if axes else None)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        """Transpose with the axes reversed."""
        return self.transpose()

    def flatten(self, start_dim: int = 1) -> Tensor:
        """Flatten the dimensions from start_dim on into one."""
        from ..ops.shape import Flatten  # noqa: PLC0415

        return Flatten.apply(self, start_dim=start_dim)

    def split(self, size: int | Sequence[int], axis: int = 0) -> tuple[Tensor, ...]:
        """Pieces of `size` along axis (the last one shorter), or of each size listed (torch's
        split: an int is a piece size, not NumPy's count of pieces)."""
        from ..ops.shape import split  # noqa: PLC0415

        return split(self, size, axis)

    def chunk(self, chunks: int, axis: int = 0) -> tuple[Tensor, ...]:
        """Up to `chunks` pieces of equal size along axis (torch's chunk)."""
        from ..ops.shape import chunk  # noqa: PLC0415

        return chunk(self, chunks, axis)

    def expand(self, *shape: Any) -> Tensor:
        """Broadcast to a larger shape without copying (-1 keeps a size), as in PyTorch."""
        from ..ops.shape import expand  # noqa: PLC0415

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return expand(self, shape)

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        """Broadcast to `shape` without copying (NumPy's name for expand)."""
        from ..ops.shape import expand  # noqa: PLC0415

        return expand(self, shape)

    def maximum(self, other: Any) -> Tensor:
        """Elementwise max with another tensor or number; ties split the gradient."""
        return _ops().maximum(self, other)

    def minimum(self, other: Any) -> Tensor:
        """Elementwise min with another tensor or number; ties split the gradient."""
        return _ops().minimum(self, other)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """int64 index of the largest value along axis (of the flattened tensor when None)."""
        return _ops().ArgMax.apply(self, axis=axis, keepdims=keepdims)

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """int64 index of the smallest value along axis (of the flattened tensor when None)."""
        return _ops().ArgMin.apply(self, axis=axis, keepdims=keepdims)


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _compared(op: str, a: Tensor, b: Any, result: Any) -> Any:
    """A comparison's boolean array, told to the op recorder when a trace runs."""
    if _function.RECORDER is not None:
        _function.RECORDER.compare(op, a, b, result)
    return result


def _ops() -> Any:
    from ..ops import math  # noqa: PLC0415 - ops import Tensor

    return math


def as_tensor(x: Any) -> Tensor:
    """Return x if it is a Tensor, else wrap it (scalars take float32)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Tensor(np.asarray(x, dtype=backend.DEFAULT_DTYPE), _keep=True)
    return Tensor(x)


def _check_grad_shape(t: Tensor, g: Any, what: str) -> None:
    if g.shape != t.data.shape:
        creator = getattr(t._creator, "fn", t._creator)  # an OutputOf names its op
        op = type(creator).__name__ if creator is not None else "a leaf"
        raise ShapeError(f"{what} for the output of {op} has shape {g.shape}, "
                         f"expected {t.data.shape}")


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from root that have a creator, outputs before inputs."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen or t._creator is None:
            continue
        seen.add(id(t))
        stack.append((t, True))
        for inp in t._creator.inputs:
            if inp.requires_grad and inp._creator is not None and id(inp) not in seen:
                stack.append((inp, False))
    order.reverse()
    return order


class _Released:
    """The op of a tensor whose graph a backward() has freed: it stays a non-leaf."""

    inputs: tuple[Any, ...] = ()


#: stands in for the freed op, so a second backward() fails instead of treating the tensor
#: as a leaf and silently leaving the real leaves' gradients unchanged
_RELEASED = _Released()


def _freed(creator: Any) -> bool:
    """True when backward() has already freed the op that made a tensor."""
    return creator is _RELEASED or (type(creator) is OutputOf and creator.fn.released)


def _owner(a: Any) -> Any:
    """The array that owns a's memory (NumPy and CuPy point a view's `base` at it)."""
    base = getattr(a, "base", None)
    return a if base is None else base


def _store_leaf_grad(leaf: Tensor, g: Any, claimed: set[int]) -> None:
    """Add g to leaf.grad so that every leaf owns its gradient array."""
    if leaf.grad is not None:
        # never in place: user code may hold the old array (b.grad = a.grad)
        leaf.grad = leaf.grad + g
        return
    # a + b hands one gy to both leaves, concat views of it, x.backward(g) the caller's g:
    # memory another leaf (or the caller) holds is copied, so writing into one .grad
    # (p.grad *= scale) cannot change another; a fresh array, the usual case, is kept as is
    owner = id(_owner(g))
    if owner in claimed:
        g = g.copy(order="K")  # K: a column-major weight keeps a column-major gradient
    else:
        claimed.add(owner)
    leaf.grad = g


def _gather(out: OutputOf, gy: Any, waiting: dict[int, int],
            gathered: dict[int, list]) -> tuple[Any, Any]:
    """Collect the gradient of one output of a several-output op; when its last output in
    this graph is reached, return (all output gradients, the op), else (None, None)."""
    fn = out.fn
    key = id(fn)
    grads = gathered.setdefault(key, [None] * fn.n_outputs)
    grads[out.index] = gy
    waiting[key] -= 1
    if waiting[key]:
        return None, None
    return tuple(grads), fn


def run_backward(root: Tensor, grad: Any, retain_graph: bool = False,
                 seed_owned: bool = False) -> None:
    """Propagate `grad` from root to every leaf that requires grad.

    `seed_owned` says backward() made `grad` itself; a caller's array is copied before it
    becomes a leaf's gradient.
    """
    # owners of the arrays stored as leaf gradients in this pass (and of the caller's seed)
    claimed: set[int] = set() if seed_owned else {id(_owner(grad))}
    if root._creator is None:  # a leaf: its gradient is the seed itself
        _store_leaf_grad(root, grad, claimed)
        return
    order = _topological_order(root)
    # one pass: no freed op anywhere, and a several-output op's outputs counted, so that
    # its backward runs once, at the last of its outputs in `order`
    waiting: dict[int, int] = {}
    for t in order:
        creator = t._creator
        if creator is _RELEASED or type(creator) is OutputOf and _freed(creator):
            raise BackwardError("backward() reached a part of the graph that an earlier "
                                "backward() has freed: pass retain_graph=True to the first "
                                "backward() to run it again, or detach() the tensors reused "
                                "from the old graph")
        if type(creator) is OutputOf:
            waiting[id(creator.fn)] = waiting.get(id(creator.fn), 0) + 1
    grads: dict[int, Any] = {id(root): grad}
    gathered: dict[int, list] = {}
    with no_grad():
        for t in order:
            gy = grads.pop(id(t), None)
            fn = t._creator
            if type(fn) is OutputOf:
                if not retain_graph:
                    t._creator = _RELEASED
                gy, fn = _gather(fn, gy, waiting, gathered)
            if gy is None:
                continue
            gxs = fn.backward(gy)
            for inp, gx in zip(fn.inputs, gxs):
                if gx is None or not inp.requires_grad:
                    continue
                _check_grad_shape(inp, gx, f"the gradient computed by {type(fn).__name__}")
                if gx.dtype != inp.data.dtype:
                    # float32 x * float64 array: x's gradient stays float32 (as in PyTorch), so
                    # .grad matches its tensor and the ops below keep computing in float32
                    gx = gx.astype(inp.data.dtype)
                if inp._creator is None:
                    if inp.grad is None:  # _store_leaf_grad's usual case, inline (hot path)
                        base = gx.base
                        owner = id(gx if base is None else base)
                        if owner in claimed:
                            gx = gx.copy(order="K")
                        else:
                            claimed.add(owner)
                        inp.grad = gx
                    else:
                        _store_leaf_grad(inp, gx, claimed)
                else:
                    prev = grads.get(id(inp))
                    # never add in place: the same array may be handed to several inputs
                    grads[id(inp)] = gx if prev is None else prev + gx
            if not retain_graph:
                fn.release()
                t._creator = _RELEASED


def tensors_data(items: Iterable[Tensor]) -> list[Any]:
    """The arrays behind a sequence of tensors."""
    return [t.data for t in items]
