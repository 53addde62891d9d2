"""`Tensor`: an array with define-by-run reverse-mode automatic differentiation."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from .. import backend
from ..errors import (
    BackwardError,
    ConfigError,
    DeviceError,
    DTypeError,
    InPlaceError,
    NNForgeError,
    ShapeError,
)
from .function import OutputOf
from .grad_mode import no_grad


def _to_array(data: Any, dtype: Any) -> Any:
    """Turn user data into a backend array: floats default to float32, ints stay ints."""
    if isinstance(data, Tensor):
        data = data.data
    if type(data) is np.ndarray and data.dtype.kind in _NUMERIC_KINDS:  # the common case
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if isinstance(data, np.ndarray) and type(data) is not np.ndarray:
        # a subclass (np.memmap from np.load(mmap_mode=), np.matrix) follows the plain rule
        return _to_array(_plain(data), dtype)
    if backend.get_array_module(data) is not np:
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if data is None:  # np.asarray(None) would become Tensor(nan)
        raise DTypeError("a Tensor expects numbers, bools or arrays of them, found None")
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nested lists (an nnforge error inside goes as it is)
        if isinstance(exc, NNForgeError):
            raise
        raise ShapeError(f"a Tensor expects nested lists of one shape, found {exc}") from None
    if arr.dtype == object:
        _check_numbers(arr)
        return _cast_objects(arr, backend.DEFAULT_DTYPE if dtype is None else dtype)
    if arr.dtype.kind not in _NUMERIC_KINDS:  # strings, bytes, dates: torch refuses them too
        raise DTypeError(f"a Tensor expects numbers, bools or arrays of them, found "
                         f"{arr.dtype} data ({_example(arr)})")
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f" and arr.dtype != backend.DEFAULT_DTYPE:
        return arr.astype(backend.DEFAULT_DTYPE)
    return arr


_NUMERIC_KINDS = "biufc"


def _plain(data: np.ndarray) -> np.ndarray:
    """An ndarray subclass's values as a plain ndarray (no copy); DTypeError for a masked
    array, whose mask a Tensor would drop silently (its masked entries hold anything)."""
    if isinstance(data, np.ma.MaskedArray):
        raise DTypeError("a Tensor expects an array without a mask, found a masked array: pass "
                         ".filled(value) to choose the masked entries' value, or .data for "
                         "the values underneath the mask")
    return np.asarray(data)


def _example(arr: np.ndarray) -> str:
    """The first element of arr, as the user wrote it, for an error message."""
    return repr(arr.flat[0].item())[:40] if arr.size else "empty"


def _check_numbers(arr: np.ndarray) -> None:
    """DTypeError naming the first element of an object array (Fractions, Decimals, None,
    ...) that is no number."""
    bad = next((v for v in arr.flat if v is None or isinstance(v, (str, bytes)) or
                not isinstance(v, (numbers.Number, np.generic))), _NO_BAD)
    if bad is not _NO_BAD:
        raise DTypeError(f"a Tensor expects numbers, bools or arrays of them, found "
                         f"{type(bad).__name__} {bad!r:.40} among the values")


def _cast_objects(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """An object array of numbers in dtype."""
    try:
        return arr.astype(dtype)
    except (TypeError, ValueError) as exc:  # complex objects, say
        raise DTypeError(f"expected numeric data, found {arr.dtype} ({exc})") from None


_NO_BAD = object()


class Tensor:
    """An n-dimensional array that records the operations applied to it for backward().

    NumPy functions: a reduction that NumPy hands to the array's own method (np.sum,
    np.mean, np.max/amax, np.min/amin, np.var, np.std, np.argmax, np.argmin) returns what that
    method returns, a Tensor that keeps autograd, as np.mean does for a torch tensor: a loss
    written `np.mean((pred - y) ** 2)` still trains. Every other NumPy function (ufuncs such
    as np.exp, np.prod, np.median, ...) reads the data through `__array__` and returns a plain
    array outside autograd. `out=` other than None is refused rather than left unwritten.

    Torch's API for ported code: comparisons give bool tensors without gradient (traced as
    the IR's comparison ops); a bool or int tensor beside a float one is cast to the float's
    dtype first (bool * float32 is float32, as torch). `t.size` stays NumPy's element count,
    an int that torch code may also call: `t.size()` is the shape, `t.size(d)` one axis.
    `t.max(dim=1)` and `t.max(1)` (min too) return torch's (values, indices); NumPy's
    `t.max(axis=1)` and np.max(t, axis=1) return the values (see _extreme).
    numel/dim/tolist/float/long/masked_fill/repeat/... follow torch; in-place methods
    (add_, clamp_, ...) raise InPlaceError, since autograd here does not track them.
    `t.flatten()` flattens every axis, as torch's and NumPy's (nn.Flatten keeps the batch).

    Augmented assignment (`a += b`, -=, *=, /=, **=, @=, ...) never changes a tensor in place:
    - on a parameter, i.e. a leaf that requires grad or any nn.Parameter, it raises
      InPlaceError, in no_grad() too. Rebinding there would be a silent no-op on the model
      (`p -= lr * p.grad` updates a new tensor named p, not the weight the model holds);
      torch refuses it outside no_grad() too. The update is `p.data -= lr * p.grad` inside
      no_grad(), or an optimizer.
    - on any other tensor it means `a = a + b`: a new tensor bound to the name, recorded by
      autograd as usual. That is torch's value for the name, so `loss += term` in a loop and
      `correct += (pred == y).sum()` keep working; what differs from torch is only that
      another name for the old tensor keeps its old values (`b = a; a += 1` leaves b).
    A non-leaf's .grad is None with a UserWarning, as torch's, unless retain_grad() was called.
    """

    __slots__ = ("data", "_grad", "requires_grad", "_creator", "name", "_retains_grad",
                 "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None, _keep: bool = False) -> None:
        self.data = data if _keep else _to_array(data, dtype)
        if requires_grad and not backend.is_float_dtype(self.data.dtype):
            raise DTypeError(f"only floating point tensors can require gradients, "
                             f"found dtype {self.data.dtype}")
        self._grad: Any = None
        self.requires_grad = bool(requires_grad)
        self._creator: Any = None
        self.name = name
        self._retains_grad = False

    @property
    def grad(self) -> Any:
        """The gradient backward() accumulated: for leaves that require grad, and for other
        tensors after retain_grad(); a non-leaf's is None, with a UserWarning, as in torch."""
        g = self._grad
        if g is None and self._creator is not None and not self._retains_grad:
            warnings.warn("the .grad of a tensor that is not a leaf (one computed by an op) is "
                          "not filled by backward(); call .retain_grad() on it before "
                          "backward() to keep it, or read the .grad of the leaf tensors",
                          UserWarning, stacklevel=2)
        return g

    @grad.setter
    def grad(self, value: Any) -> None:
        self._grad = value

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in .grad at the next backward() (a leaf
        that requires grad keeps it anyway)."""
        if not self.requires_grad:
            raise BackwardError("retain_grad() expects a tensor that requires grad, found one "
                                "that does not (computed under no_grad(), or from inputs "
                                "without requires_grad=True)")
        if self._creator is not None:
            self._retains_grad = True

    @property
    def retains_grad(self) -> bool:
        """True for a non-leaf tensor whose .grad backward() fills (after retain_grad())."""
        return self._creator is not None and self._retains_grad

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
    def size(self) -> Size:
        """Number of elements, as NumPy's `size`; also callable as torch's size(): `t.size()`
        is the shape, `t.size(d)` the length of axis d."""
        return Size(self.data.shape)

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
        from ..ops.math import Cast, CastNoGrad  # noqa: PLC0415

        dtype = np.dtype(dtype)
        if not backend.is_float_dtype(dtype):  # ints and bools carry no gradient (as in torch)
            return CastNoGrad.apply(self, dtype=dtype)
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
    def _operands(self, x: Any) -> tuple[Tensor, Any]:
        """(self, x) for a binary op, a Python number x typed as torch types it: in this
        float tensor's dtype; an int in this int tensor's dtype (int32 + 1 stays int32); a
        float beside an int tensor in the default float dtype, the tensor cast to it too.
        On a GPU tensor the number becomes a 0-d array on its device (CuPy takes no NumPy
        arrays, 0-d included)."""
        # as_tensor alone would round it to float32: x64 * 0.1 would be off by 1.5e-9
        data = self.data
        tx = type(x)
        if tx is float:  # the common cases first: each check here is paid on every op
            if type(data) is np.ndarray and data.dtype.kind == "f":
                return self, np.asarray(x, dtype=data.dtype)
        elif tx is Tensor or tx is np.ndarray:
            if x.data.dtype is data.dtype if tx is Tensor else x.dtype is data.dtype:
                return self, x
            return _promote(self, x)
        elif isinstance(x, Tensor) or backend.is_device_array(x):
            return _promote(self, x)
        kind = data.dtype.kind
        if isinstance(x, bool):  # a bool beside a bool tensor stays one; else it counts as 0/1
            if kind == "b":
                return self, _number_like(x, np.bool_, data)
            x = int(x)
        if not isinstance(x, (int, float)):
            return self, x
        if kind == "f":
            if type(data) is np.ndarray:
                return self, np.asarray(x, dtype=data.dtype)
            return self, _number_like(x, data.dtype, data)
        if isinstance(x, int):
            if kind == "b":  # bool + 1: int64, the bool tensor cast (ONNX Add takes one type)
                return self.astype(np.int64), _number_like(x, np.int64, data)
            try:
                return self, _number_like(x, data.dtype, data)
            except OverflowError:  # int8 + 300: the number's own int64, NumPy's promotion
                return self, _number_like(x, np.int64, data)
        # int or bool + 0.5: float32, as torch gives (the tensor cast, for ONNX's equal types)
        return self.astype(backend.DEFAULT_DTYPE), _number_like(x, backend.DEFAULT_DTYPE, data)

    def __add__(self, other: Any) -> Tensor:
        return _ops().Add.apply(*self._operands(other))

    def __radd__(self, other: Any) -> Tensor:
        a, b = self._operands(other)
        return _ops().Add.apply(b, a)

    def __sub__(self, other: Any) -> Tensor:
        return _ops().Sub.apply(*self._operands(other))

    def __rsub__(self, other: Any) -> Tensor:
        a, b = self._operands(other)
        return _ops().Sub.apply(b, a)

    def __mul__(self, other: Any) -> Tensor:
        return _ops().Mul.apply(*self._operands(other))

    def __rmul__(self, other: Any) -> Tensor:
        a, b = self._operands(other)
        return _ops().Mul.apply(b, a)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops().Div.apply(*self._operands(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        a, b = self._operands(other)
        return _ops().Div.apply(b, a)

    def __neg__(self) -> Tensor:
        return _ops().Neg.apply(self)

    def __pow__(self, exponent: Any) -> Tensor:
        if _is_operand_array(exponent):  # elementwise, as torch.pow of two tensors
            return _ops().PowTensor.apply(*self._operands(exponent))
        return _ops().Pow.apply(self, exponent=_pow_number(exponent, "exponent"))

    def __rpow__(self, base: Any) -> Tensor:
        if _is_operand_array(base):
            a, b = self._operands(base)
            return _ops().PowTensor.apply(b, a)
        return _ops().PowBase.apply(self, base=_pow_number(base, "base"))

    def __abs__(self) -> Tensor:
        return _ops().Abs.apply(self)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        # without it Python would use __len__: `if t > 0:` on a 1-element tensor always true
        if self.data.size != 1:
            raise ShapeError(f"the truth value of a tensor with {self.data.size} elements is "
                             f"ambiguous; expected one element (use .any() or .all())")
        return bool(self.item())

    def __index__(self) -> int:
        # integers only, as torch: a float tensor used as an index is a bug, not a truncation
        if self.data.dtype.kind not in "biu" or self.data.size != 1:
            raise DTypeError(f"only a one-element integer tensor can be used as an index, "
                             f"found dtype {self.dtype} and shape {self.shape}")
        return int(self.item())

    def __matmul__(self, other: Any) -> Tensor:
        return _ops().MatMul.apply(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops().MatMul.apply(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        """NumPy's indexing, except where an integer and an index array are not side by side:
        there torch's rule holds, integers (0-d integer tensors too) first as basic indexing,
        then the rest, so t[0, :, [0, 1]] of shape (2, 3, 4) is (3, 2), not NumPy's (2, 3)."""
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

    # comparisons give bool tensors without gradient, as in torch: recorded like any op, so a
    # mask traces (`h * (h > 0)`, nf.where(x > 0, ...)); an operand they cannot compare with
    # (pytest.approx, a string) gets NotImplemented, so Python asks the other side
    def __lt__(self, other: Any) -> Any:
        return _compared("Less", self, other)

    def __le__(self, other: Any) -> Any:
        return _compared("LessOrEqual", self, other)

    def __gt__(self, other: Any) -> Any:
        return _compared("Greater", self, other)

    def __ge__(self, other: Any) -> Any:
        return _compared("GreaterOrEqual", self, other)

    # elementwise, as NumPy and torch; hashing stays by identity (sets and dicts of tensors),
    # so code that needs "the same tensor" must use `is` or id(), never == or `in` on a list
    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return _compared("Equal", self, other)  # t == None: NotImplemented, so False as torch

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return _compared("NotEqual", self, other)

    __hash__ = object.__hash__

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The data for np.asarray: NumPy functions (np.exp(t)) get a plain array and leave
        autograd (ndarray + tensor still calls Tensor.__radd__, through __array_priority__).

        A tensor on a GPU is refused rather than copied behind the user's back: a silent
        device-to-host transfer per call would hide a slow path; call .numpy() to copy it."""
        data = self.data
        if type(data) is not np.ndarray:
            if backend.is_device_array(data):
                raise DeviceError(f"cannot turn a tensor on {self.device} into a NumPy array "
                                  f"implicitly; call .numpy() to copy it to the host")
            data = np.asarray(data)
        if copy:
            data = data.copy()
        if dtype is not None and data.dtype != dtype:
            if copy is False:
                raise ValueError(f"np.asarray(copy=False) of a {data.dtype} tensor as {dtype} "
                                 f"would need a copy")
            data = data.astype(dtype)
        return data

    def exp(self) -> Tensor:
        """Elementwise e**x."""
        return _ops().Exp.apply(self)

    def log(self) -> Tensor:
        """Elementwise natural log."""
        return _ops().Log.apply(self)

    def sqrt(self) -> Tensor:
        """Elementwise square root."""
        return _ops().Pow.apply(self, exponent=0.5)

    # Reductions take NumPy's and torch's spellings alike: axis= or dim=, keepdims= or
    # keepdim=, and NumPy's dtype= and out=None, so np.sum(t), np.mean(t, axis=0) and
    # np.max(t, keepdims=True) (which NumPy hands to these methods) work; see the class doc.
    # Only max and min return something else for torch's spelling: (values, indices).
    def sum(self, axis: Any = None, keepdims: bool | None = None, *, dim: Any = None,
            keepdim: bool | None = None, dtype: Any = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """Sum over the given axes (all when None); dtype= casts first, as NumPy and torch."""
        axis, keep = _reduce_args("sum", axis, dim, keepdims, keepdim, out, numpy_only)
        return _ops().Sum.apply(_in_dtype(self, dtype, "sum", floats_only=False), axis=axis,
                                keepdims=keep)

    def mean(self, axis: Any = None, keepdims: bool | None = None, *, dim: Any = None,
             keepdim: bool | None = None, dtype: Any = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """Mean over the given axes (all when None); dtype= (a float dtype) casts first."""
        axis, keep = _reduce_args("mean", axis, dim, keepdims, keepdim, out, numpy_only)
        return _ops().Mean.apply(_in_dtype(self, dtype, "mean"), axis=axis, keepdims=keep)

    # max/min follow whichever library the call is spelled in: see _extreme for the rule
    def max(self, by: Any = None, keep: bool | None = None, /, *, axis: Any = None,
            keepdims: bool | None = None, dim: Any = None, keepdim: bool | None = None,
            out: Any = None, **numpy_only: Any) -> Tensor | ValuesIndices:
        """Maximum over axes: a Tensor for NumPy's axis= (and np.max) or no axis; torch's
        (values, indices) for one int dim given as dim= or positionally, as `t.max(1)`;
        `t.max(other)` is torch.maximum. Ties split the gradient evenly."""
        return _extreme(self, "max", by, keep, axis, keepdims, dim, keepdim, out, numpy_only)

    def min(self, by: Any = None, keep: bool | None = None, /, *, axis: Any = None,
            keepdims: bool | None = None, dim: Any = None, keepdim: bool | None = None,
            out: Any = None, **numpy_only: Any) -> Tensor | ValuesIndices:
        """Minimum over axes, spelled as max is: a Tensor for axis= or no axis; torch's
        (values, indices) for one int dim (dim= or positional); `t.min(other)` elementwise."""
        return _extreme(self, "min", by, keep, axis, keepdims, dim, keepdim, out, numpy_only)

    def var(self, axis: Any = None, keepdims: bool | None = None, ddof: int | None = None, *,
            dim: Any = None, keepdim: bool | None = None, correction: int | None = None,
            dtype: Any = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """Variance over the given axes; ddof (or its torch/NumPy 2 name correction) defaults
        to 0, as NumPy's (PyTorch's default is 1)."""
        axis, keep = _reduce_args("var", axis, dim, keepdims, keepdim, out, numpy_only)
        ddof = _pick_ddof(ddof, correction, "var")
        x = _in_dtype(self, dtype, "var")
        centered = x - x.mean(axis=axis, keepdims=True)
        total = (centered * centered).sum(axis=axis, keepdims=keep)
        # from the reduced axes, not size // total.size: that is 0 when another axis is empty
        count = x.size // max(total.size, 1) if x.size else math.prod(
            x.shape[a] for a in _ops()._norm_axis(axis, x.ndim))
        if count - ddof <= 0:
            raise ShapeError(f"var needs more than ddof={ddof} values per result, found {count}")
        return total / float(count - ddof)

    def std(self, axis: Any = None, keepdims: bool | None = None, ddof: int | None = None, *,
            dim: Any = None, keepdim: bool | None = None, correction: int | None = None,
            dtype: Any = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """Standard deviation over the given axes (ddof or correction, 0 by default)."""
        axis, keep = _reduce_args("std", axis, dim, keepdims, keepdim, out, numpy_only)
        ddof = _pick_ddof(ddof, correction, "std")
        return _ops().StdSqrt.apply(self.var(axis=axis, keepdims=keep, ddof=ddof, dtype=dtype))

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

    def clip(self, low: Any = None, high: Any = None, *, min: Any = None,
             max: Any = None) -> Tensor:
        """Values limited to [low, high]; either bound may be None (torch's clamp names them
        min= and max=), a number or a tensor (broadcast, and differentiable, as torch's)."""
        if (low is not None and min is not None) or (high is not None and max is not None):
            raise ConfigError(f"clip takes low= or its torch name min= (and high= or max=), "
                              f"found both (low={low!r}, min={min!r}, high={high!r}, "
                              f"max={max!r})")
        low, high = low if min is None else min, high if max is None else max
        return _ops().clip(self, low, high)

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

    view = reshape  # PyTorch's name (a copy where NumPy cannot view: the values are the same)

    def transpose(self, *axes: int) -> Tensor:
        """Two ints swap those axes (torch's transpose(dim0, dim1)); a tuple or list, or any
        other number of ints, is NumPy's permutation; none reverses the axes."""
        from ..ops.shape import Transpose  # noqa: PLC0415

        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        elif len(axes) == 2 and all(_is_int(a) for a in axes):
            return _ops_shape().swapaxes(self, *axes)
        return Transpose.apply(self, axes=tuple(axes) if axes else None)

    def permute(self, *dims: int) -> Tensor:
        """Reorder the axes: dims lists every axis once (torch's permute)."""
        from ..ops.shape import Transpose  # noqa: PLC0415

        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return Transpose.apply(self, axes=tuple(dims))

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        """Transpose with the axes reversed."""
        return self.transpose()

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge the dimensions start_dim..end_dim into one: all of them by default, as torch's
        and NumPy's flatten (nn.Flatten, the layer, keeps the batch axis: start_dim=1)."""
        from ..ops.shape import Flatten  # noqa: PLC0415

        return Flatten.apply(self, start_dim=start_dim, end_dim=end_dim)

    def split(self, size: int | Sequence[int], axis: int | None = None, *,
              dim: int | None = None) -> tuple[Tensor, ...]:
        """Pieces of `size` along axis (0, or torch's dim=; the last one shorter), or of each
        size listed (torch's split: an int is a piece size, not NumPy's count of pieces)."""
        from ..ops.shape import split  # noqa: PLC0415

        return split(self, size, axis, dim=dim)

    def chunk(self, chunks: int, axis: int | None = None, *,
              dim: int | None = None) -> tuple[Tensor, ...]:
        """Up to `chunks` pieces of equal size along axis (0, or torch's dim=)."""
        from ..ops.shape import chunk  # noqa: PLC0415

        return chunk(self, chunks, axis, dim=dim)

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

    def argmax(self, axis: int | None = None, keepdims: bool | None = None, *,
               dim: int | None = None, keepdim: bool | None = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """int64 index of the largest value along axis (of the flattened tensor when None)."""
        axis, keep = _reduce_args("argmax", axis, dim, keepdims, keepdim, out, numpy_only)
        return _ops().ArgMax.apply(self, axis=axis, keepdims=keep)

    def argmin(self, axis: int | None = None, keepdims: bool | None = None, *,
               dim: int | None = None, keepdim: bool | None = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """int64 index of the smallest value along axis (of the flattened tensor when None)."""
        axis, keep = _reduce_args("argmin", axis, dim, keepdims, keepdim, out, numpy_only)
        return _ops().ArgMin.apply(self, axis=axis, keepdims=keep)

    def gather(self, dim: int, index: Any) -> Tensor:
        """Values picked along dim by an integer index of the same rank (torch.gather): for
        dim 1, out[i][j] = self[i][index[i][j]]; differentiable in self."""
        from ..ops.shape import gather  # noqa: PLC0415

        return gather(self, dim, index)

    def topk(self, k: int, dim: int = -1, largest: bool = True,
             sorted: bool = True) -> ValuesIndices:  # noqa: A002 - torch's name
        """torch's (values, indices) of the k largest (largest=False: smallest) values along
        dim, best first; the values keep autograd."""
        return _ops().topk(self, k, dim, largest, sorted)

    def norm(self, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
        """Vector p-norm over dim (every axis when None), as torch's norm: p = 2 or 'fro', 1,
        inf, -inf, 0 (nonzero count) or another number."""
        return _ops().norm(self, p, dim, keepdim)

    def t(self) -> Tensor:
        """torch's t(): a 2-D tensor transposed; 0-D and 1-D ones as they are."""
        if self.ndim > 2:
            raise ShapeError(f"t() expects a tensor of at most 2 dimensions, found shape "
                             f"{self.shape}; use transpose(dim0, dim1) or .mT")
        return self if self.ndim < 2 else self.transpose(1, 0)

    @property
    def mT(self) -> Tensor:  # noqa: N802 - torch's name
        """The last two axes swapped (a batch of matrices, each transposed)."""
        if self.ndim < 2:
            raise ShapeError(f".mT expects a tensor of at least 2 dimensions, found shape "
                             f"{self.shape}")
        return self.transpose(-2, -1)

    def to(self, *args: Any, dtype: Any = None, device: Any = None,
           copy: bool = False) -> Tensor:
        """torch's to(): a dtype, a device ('cpu', 'cuda', 'cuda:N'), both, or another tensor
        (its dtype and device); self when nothing changes, unless copy=True. Differentiable."""
        dtype, device = _to_args(args, dtype, device)
        if dtype is None and device is None:
            raise ConfigError("to() expects a dtype, a device ('cpu', 'cuda', 'cuda:N') or a "
                              "tensor, found none")
        out = self
        if dtype is not None and dtype != self.dtype:
            out = out.astype(dtype)
        if device is not None and not _is_on(out, device):
            out = _ops().ToDevice.apply(out, device=device)
        return out.astype(out.dtype) if copy and out is self else out

    # -- torch's names, for code ported from PyTorch ------------------------------------------
    def numel(self) -> int:
        """Number of elements (torch's name for size)."""
        return int(self.data.size)

    def dim(self) -> int:
        """Number of dimensions (torch's name for ndim)."""
        return self.data.ndim

    def tolist(self) -> Any:
        """The data as nested Python lists (a Python scalar for a 0-d tensor)."""
        return backend.to_numpy(self.data).tolist()

    def contiguous(self) -> Tensor:
        """self: the values are what matters here, not torch's memory layout."""
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Start (or stop) recording gradients for this leaf tensor; returns it."""
        if requires_grad and not backend.is_float_dtype(self.data.dtype):
            raise DTypeError(f"only floating point tensors can require gradients, "
                             f"found dtype {self.data.dtype}")
        if not self.is_leaf:
            raise BackwardError("requires_grad_() expects a leaf tensor (computed tensors follow "
                                "their inputs); detach() it first")
        self.requires_grad = bool(requires_grad)
        return self

    def any(self, axis: Any = None, keepdims: bool | None = None, *, dim: Any = None,
            keepdim: bool | None = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """True where any value over the axes is nonzero, as a bool tensor."""
        axis, keep = _reduce_args("any", axis, dim, keepdims, keepdim, out, numpy_only)
        return _ops().AnyAll.apply(self, kind="any", axis=axis, keepdims=keep)

    def all(self, axis: Any = None, keepdims: bool | None = None, *, dim: Any = None,
            keepdim: bool | None = None, out: Any = None,
            **numpy_only: Any) -> Tensor:
        """True where every value over the axes is nonzero, as a bool tensor."""
        axis, keep = _reduce_args("all", axis, dim, keepdims, keepdim, out, numpy_only)
        return _ops().AnyAll.apply(self, kind="all", axis=axis, keepdims=keep)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        """value where mask (a bool tensor or array) is True, self elsewhere; the gradient
        reaches self where mask is False (and a tensor value where it is True)."""
        if isinstance(mask, Tensor):
            mask = mask.data
        if getattr(mask, "dtype", None) is None or mask.dtype.kind != "b":
            raise DTypeError(f"masked_fill expects a bool mask (a comparison, say), found "
                             f"{type(mask).__name__} of dtype {getattr(mask, 'dtype', None)}")
        return _ops().where(mask, value, self)

    def repeat(self, *sizes: Any) -> Tensor:
        """Tile the tensor sizes[i] times along axis i (torch's repeat, NumPy's tile)."""
        from ..ops.shape import repeat  # noqa: PLC0415

        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        return repeat(self, sizes)

    def expand_as(self, other: Tensor) -> Tensor:
        """Broadcast to other's shape (torch's expand_as)."""
        return self.expand(other.shape)

    def type_as(self, other: Tensor) -> Tensor:
        """Cast to other's dtype (torch's type_as)."""
        return self if self.dtype == other.dtype else self.astype(other.dtype)

    def softmax(self, dim: int | None = None, *, axis: int | None = None) -> Tensor:
        """Softmax along dim (the last by default)."""
        from ..ops.activation import softmax  # noqa: PLC0415

        return softmax(self, axis, dim=dim)

    def log_softmax(self, dim: int | None = None, *, axis: int | None = None) -> Tensor:
        """Log-softmax along dim (the last by default)."""
        from ..ops.activation import log_softmax  # noqa: PLC0415

        return log_softmax(self, axis, dim=dim)

    # torch's casts; defined last, since inside the class body these names hide the builtins
    def float(self) -> Tensor:
        """Cast to float32."""
        return self.astype(np.float32)

    def double(self) -> Tensor:
        """Cast to float64."""
        return self.astype(np.float64)

    def half(self) -> Tensor:
        """Cast to float16."""
        return self.astype(np.float16)

    def long(self) -> Tensor:
        """Cast to int64 (no gradient)."""
        return self.astype(np.int64)

    def int(self) -> Tensor:
        """Cast to int32 (no gradient); Python's int(t) still gives a number (__int__)."""
        return self.astype(np.int32)

    def bool(self) -> Tensor:
        """Cast to bool (no gradient)."""
        return self.astype(np.bool_)

    def __getattr__(self, name: str) -> Any:
        # only reached for names the class lacks: torch's in-place ops get a clear error
        if name.endswith("_") and not name.startswith("_"):
            base = name[:-1]
            fix = (f"t = t.{base}(...)" if hasattr(Tensor, base) else
                   f"t = t {_INFIX[base]} ..." if base in _INFIX else "an out-of-place form")
            raise InPlaceError(f"Tensor.{name}() is not supported: nnforge's autograd does not "
                               f"track in-place changes; expected {fix} (or a write into "
                               f"t.data, outside autograd)")
        raise AttributeError(f"'Tensor' object has no attribute {name!r}")


_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}

_AUGMENTED = {"__iadd__": "+=", "__isub__": "-=", "__imul__": "*=", "__itruediv__": "/=",
              "__ifloordiv__": "//=", "__imod__": "%=", "__ipow__": "**=", "__imatmul__": "@=",
              "__iand__": "&=", "__ior__": "|=", "__ixor__": "^=", "__ilshift__": "<<=",
              "__irshift__": ">>="}


def _augmented_assignment(symbol: str) -> Any:
    """The `t <symbol> x` method: refused on a parameter; elsewhere NotImplemented, so that
    Python computes `t = t <op> x` (a new tensor bound to the name) from the binary op."""
    def method(self: Tensor, other: Any) -> Any:
        if _update_target(self):
            raise InPlaceError(
                f"`p {symbol} ...` on a parameter (a leaf tensor that requires grad) would bind "
                f"the name to a new tensor and leave the parameter itself, the one the model "
                f"and the optimizer hold, unchanged (autograd here does not track in-place "
                f"changes); expected an update of its data outside autograd: `with "
                f"nf.no_grad(): p.data {symbol} ...` (NumPy changes it in place), or an "
                f"optimizer: nf.optim.SGD(model.parameters(), lr=...).step()")
        return NotImplemented

    method.__name__ = method.__qualname__ = next(k for k, v in _AUGMENTED.items() if v == symbol)
    method.__doc__ = f"`t {symbol} x`: refused on a parameter (see the class docstring)."
    return method


def _update_target(t: Tensor) -> bool:
    """True for a tensor an augmented assignment would silently fail to update: a leaf that
    requires grad (a parameter, in no_grad() too) or an nn.Parameter (a frozen one too)."""
    if t.requires_grad and t._creator is None:
        return True
    if type(t) is Tensor:
        return False
    from ..nn.module import Parameter  # noqa: PLC0415 - nn imports autograd

    return isinstance(t, Parameter)


for _name, _symbol in _AUGMENTED.items():
    setattr(Tensor, _name, _augmented_assignment(_symbol))


class Size(int):
    """A tensor's element count that torch code may call: size() is the shape, size(d) one
    dim. It is an int for NumPy code (t.size == 6, t.size * 2) and pickles as a plain int."""

    def __new__(cls, shape: tuple[int, ...]) -> Size:
        """The count of elements of `shape`, remembering the shape."""
        obj = super().__new__(cls, math.prod(shape))
        obj.shape = tuple(shape)
        return obj

    def __call__(self, dim: int | None = None) -> Any:
        """The shape (dim None), or the length of axis dim (negative counts from the end)."""
        if dim is None:
            return self.shape
        n = len(self.shape)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -n <= dim < n:
            raise ShapeError(f"size() expects an axis in [{-n}, {n - 1}] for shape "
                             f"{self.shape}, found {dim!r}")
        return self.shape[dim]

    def __reduce__(self) -> tuple:
        return int, (int(self),)

def _number_like(x: float, dtype: Any, like: Any) -> Any:
    """A Python number as a 0-d array of dtype where `like` lives (a fill on a GPU, no
    transfer)."""
    if type(like) is np.ndarray or not backend.is_device_array(like):
        return np.asarray(x, dtype=dtype)
    return backend.xp_of(like).full((), x, dtype=dtype)


def pick_axis(axis: Any, dim: Any, what: str) -> Any:
    """The axis of a call that takes NumPy's axis= or torch's dim= (not both)."""
    if dim is None:
        return axis
    if axis is not None:
        raise ConfigError(f"{what} takes axis= or its torch name dim=, found both "
                          f"(axis={axis!r}, dim={dim!r})")
    return dim


def _reduce_args(what: str, axis: Any, dim: Any, keepdims: Any, keepdim: Any,
                 out: Any, numpy_only: dict[str, Any] | None = None) -> tuple[Any, bool]:
    """(axis, keepdims) of a reduction called with NumPy's or torch's argument names."""
    if numpy_only:  # np.max(t, initial=0), np.sum(t, where=m): NumPy's, not ours
        raise ConfigError(f"expected {what}'s axis/dim and keepdims/keepdim arguments, found "
                          f"{', '.join(f'{k}=' for k in numpy_only)}, which a Tensor does not "
                          f"take: use np.asarray(tensor) outside autograd, or tensor ops")
    if out is not None:  # NumPy passes out=None; a real one would be left silently unwritten
        raise ConfigError(f"{what} expects out=None (a Tensor reduction returns a new tensor), "
                          f"found out={type(out).__name__}: use the returned tensor")
    if keepdim is not None and keepdims is not None and keepdim != keepdims:
        raise ConfigError(f"{what} takes keepdims= or its torch name keepdim=, found both "
                          f"(keepdims={keepdims!r}, keepdim={keepdim!r})")
    keep = keepdims if keepdim is None else keepdim
    if keep is None:
        return pick_axis(axis, dim, what), False
    # strict: t.sum(0, 1) meant as axes 0 and 1 would otherwise keep dims of axis 0 only
    if not isinstance(keep, (bool, np.bool_)):
        raise ConfigError(f"{what} expects keepdims True or False, found {keep!r} (several "
                          f"axes go in one tuple: axis=(0, 1))")
    return pick_axis(axis, dim, what), bool(keep)


class ValuesIndices(NamedTuple):
    """What torch's `t.max(dim)` / `t.min(dim)` / `t.topk(k)` return: the values (with
    autograd) and their int64 indices along dim (the first on ties), so
    `values, indices = t.max(dim=1)` works."""

    values: Tensor
    indices: Tensor

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # NumPy would stack values and indices into one (2, ...) array: refused, since a
        # NumPy-style `x - t.max(1)` meant the values and would silently compute nonsense
        raise ConfigError("t.max(dim) / t.min(dim) / t.topk(k) return torch's (values, "
                          "indices); expected .values (or axis= for the max's values alone), "
                          "found the pair used as an array")


def _extreme(t: Tensor, what: str, by: Any, keep: Any, axis: Any, keepdims: Any, dim: Any,
             keepdim: Any, out: Any, numpy_only: dict[str, Any]) -> Tensor | ValuesIndices:
    """max/min: the spelling picks the library. One int axis given torch's way (dim=, or
    positionally, where NumPy's second argument would be out=, not a keepdim) returns torch's
    (values, indices); axis= (what np.max passes), no axis, or a tuple of axes (which torch's
    max refuses) returns the values alone; a tensor or array is torch.max(input, other).
    Ties split the values' gradient evenly (torch's max(dim) gives it all to the index)."""
    if isinstance(by, (Tensor, np.ndarray)) or backend.is_device_array(by):
        extra = [k for k, v in (("a second argument", keep), ("axis=", axis),
                                ("keepdims=", keepdims), ("dim=", dim), ("keepdim=", keepdim),
                                ("out=", out)) if v is not None]
        if extra or numpy_only:
            found = ", ".join(extra + [f"{k}=" for k in numpy_only])
            raise ConfigError(f"{what}(other) is the elementwise {what}imum, which takes no "
                              f"axis arguments; found {found}")
        return t.maximum(by) if what == "max" else t.minimum(by)
    if by is not None:
        if dim is not None:
            raise ConfigError(f"{what} takes its dim positionally or as dim=, found both "
                              f"({by!r} and dim={dim!r})")
        dim = by
    if dim is not None:
        _check_dims(what, dim)
    if keep is not None:
        if keepdim is not None and keepdim != keep:
            raise ConfigError(f"{what} takes keepdim positionally or by name, found both "
                              f"({keep!r} and keepdim={keepdim!r})")
        keepdim = keep
    red, kept = _reduce_args(what, axis, dim, keepdims, keepdim, out, numpy_only)
    op = _ops().Max if what == "max" else _ops().Min
    values = op.apply(t, axis=red, keepdims=kept)
    if not _is_int(dim):
        return values
    pick = _ops().ArgMax if what == "max" else _ops().ArgMin
    return ValuesIndices(values, pick.apply(t, axis=dim, keepdims=kept))


def _check_dims(what: str, dim: Any) -> None:
    """ConfigError unless dim is an int or a tuple of ints: True would reduce axis 1 and 0.5
    fail deep inside NumPy, as would a list that might mean values for the elementwise form."""
    if _is_int(dim) or (type(dim) is tuple and all(_is_int(d) for d in dim)):
        return
    raise ConfigError(f"{what} expects an int dim, a tuple of ints, or a Tensor/array for the "
                      f"elementwise {what}imum, found {type(dim).__name__} {dim!r:.40}")


def _to_args(args: tuple, dtype: Any, device: Any) -> tuple[Any, str | None]:
    """(dtype, device) of a to() call: positional dtypes, devices or tensors, or keywords."""
    given: dict[str, Any] = {"dtype": dtype, "device": device}
    for a in args:
        if isinstance(a, Tensor):
            found = {"dtype": a.dtype, "device": a.device}
        elif backend.is_device_name(a):
            found = {"device": a}
        else:
            found = {"dtype": a}
        for key, value in found.items():
            if given[key] is not None:
                raise ConfigError(f"to() takes one {key}, found {given[key]!r} and {value!r}")
            given[key] = value
    dtype, device = given["dtype"], given["device"]
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:  # a string is more likely a misspelt device ("gpu", "cuda0")
            error = DeviceError if isinstance(dtype, str) else DTypeError
            raise error(f"to() expects a dtype (np.float32, 'float64', ...), a device ('cpu', "
                        f"'cuda', 'cuda:N') or a tensor, found {dtype!r}") from None
    if device is not None:
        backend.parse_device(device)  # DeviceError for an unknown name
    return dtype, device


def _is_on(t: Tensor, device: str) -> bool:
    """True when t's data is on device already ('cuda' means any GPU: CuPy's current one)."""
    kind, index = backend.parse_device(device)
    here = t.device
    if kind == "cpu" or index is not None:
        return here == ("cpu" if kind == "cpu" else f"cuda:{index}")
    return here.startswith("cuda")


def _pick_ddof(ddof: Any, correction: Any, what: str) -> float:
    """ddof= (NumPy) or correction= (torch, NumPy 2), 0 when neither is given."""
    if ddof is not None and correction is not None and ddof != correction:
        raise ConfigError(f"{what} takes ddof= or its other name correction=, found both "
                          f"(ddof={ddof!r}, correction={correction!r})")
    value = ddof if ddof is not None else correction if correction is not None else 0
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not value >= 0:
        raise ConfigError(f"{what} expects ddof as a number >= 0, found {value!r}")
    return value


def _in_dtype(t: Tensor, dtype: Any, what: str, floats_only: bool = True) -> Tensor:
    """t cast to a reduction's dtype= (None keeps it); a mean, var or std needs a float one."""
    if dtype is None:
        return t
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"{what} expects dtype= to name a NumPy dtype, found {dtype!r}") from None
    kinds = "f" if floats_only else "biuf"
    if dt.kind not in kinds:
        raise DTypeError(f"{what} expects dtype= to be a {'floating' if floats_only else 'numeric'}"
                         f" dtype, found {dt}")
    return t if t.dtype == dt else t.astype(dt)


def _is_int(a: Any) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))


def _ops_shape() -> Any:
    from ..ops import shape  # noqa: PLC0415 - ops import Tensor

    return shape


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


_COMPARABLE = (Tensor, int, float, bool, np.ndarray, np.generic, list, tuple)


def _compared(op: str, a: Tensor, b: Any) -> Any:
    """a OP b as a bool tensor, both sides promoted to one dtype (ONNX compares equal types);
    NotImplemented for an operand that is no number or array."""
    if not isinstance(b, _COMPARABLE) and not backend.is_device_array(b):
        return NotImplemented
    if isinstance(b, (list, tuple)):
        b = np.asarray(b)
        if b.dtype.kind not in "biuf":
            return NotImplemented
    elif isinstance(b, np.generic):
        b = np.asarray(b)
    return getattr(_ops(), op).apply(*a._operands(b))


def _promote(a: Tensor, b: Any) -> tuple[Tensor, Any]:
    """Two operands of a binary op in one dtype where their kinds differ, as torch promotes:
    a float beats an int or a bool (int64 * float32 is float32), an int beats a bool. NumPy
    would compute these too, but ONNX ops (Mul, Add, Greater, ...) take equal types only, so
    the cast is made here, where a trace records it as a Cast node. Same-kind pairs (float32
    with float64) keep NumPy's promotion."""
    ka = a.data.dtype.kind
    kb = (b.data if isinstance(b, Tensor) else b).dtype.kind
    if ka == kb or ka not in "biuf" or kb not in "biuf" or (ka in "iu" and kb in "iu"):
        return a, b
    target = a.dtype if ka == "f" else b.dtype if kb == "f" else a.dtype if ka != "b" else b.dtype
    return _cast(a, target), _cast(b, target)


def _cast(x: Any, dtype: Any) -> Any:
    if x.dtype == dtype:
        return x
    return x.astype(dtype)  # a Tensor records a Cast; an array is a constant


def _is_operand_array(x: Any) -> bool:
    """True for a tensor or an array that is not 0-d (a 0-d array is a number to pow)."""
    if isinstance(x, Tensor) or backend.is_device_array(x):
        return True
    return isinstance(x, np.ndarray) and x.ndim > 0


def _pow_number(x: Any, what: str) -> float:
    """A pow exponent or base as a float; DTypeError for anything else (a string, None)."""
    if isinstance(x, (numbers.Real, np.ndarray)) and not isinstance(x, str):
        try:
            return float(x)
        except (TypeError, ValueError):
            pass
    raise DTypeError(f"a tensor's ** expects a number, an array or a tensor as the {what}, "
                     f"found {type(x).__name__} {x!r:.40}")


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
    if leaf._grad is not None:
        # never in place: user code may hold the old array (b.grad = a.grad); asarray: 0-d +
        # 0-d is a NumPy scalar, and a scalar .grad cannot be scaled in place (p.grad *= 2)
        leaf._grad = _nd(leaf._grad + g)
        return
    # a + b hands one gy to both leaves, concat views of it, x.backward(g) the caller's g:
    # memory another leaf (or the caller) holds is copied, so writing into one .grad
    # (p.grad *= scale) cannot change another; a fresh array, the usual case, is kept as is
    owner = id(_owner(g))
    if owner in claimed:
        g = g.copy(order="K")  # K: a column-major weight keeps a column-major gradient
    else:
        claimed.add(owner)
    leaf._grad = g


def _nd(g: Any) -> Any:
    """g as an array: NumPy hands 0-d results back as scalars (np.float64), which have no
    in-place operations, no .base and a different type from what .grad holds elsewhere."""
    return np.asarray(g) if isinstance(g, np.generic) else g


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
            if t._retains_grad and gy is not None:  # retain_grad(): kept as a leaf's is
                _store_leaf_grad(t, _nd(gy.astype(t.data.dtype, copy=False)), claimed)
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
                if type(gx) is not np.ndarray:  # a NumPy scalar from a 0-d op (or a GPU array)
                    gx = _nd(gx)
                _check_grad_shape(inp, gx, f"the gradient computed by {type(fn).__name__}")
                if gx.dtype != inp.data.dtype:
                    # float32 x * float64 array: x's gradient stays float32 (as in PyTorch), so
                    # .grad matches its tensor and the ops below keep computing in float32
                    gx = _nd(gx.astype(inp.data.dtype))
                if inp._creator is None:
                    if inp._grad is None:  # _store_leaf_grad's usual case, inline (hot path)
                        base = gx.base
                        owner = id(gx if base is None else base)
                        if owner in claimed:
                            gx = gx.copy(order="K")
                        else:
                            claimed.add(owner)
                        inp._grad = gx
                    else:
                        _store_leaf_grad(inp, gx, claimed)
                else:
                    prev = grads.get(id(inp))
                    # never add in place: the same array may be handed to several inputs
                    grads[id(inp)] = gx if prev is None else _nd(prev + gx)
            if not retain_graph:
                fn.release()
                t._creator = _RELEASED


def tensors_data(items: Iterable[Tensor]) -> list[Any]:
    """The arrays behind a sequence of tensors."""
    return [t.data for t in items]
