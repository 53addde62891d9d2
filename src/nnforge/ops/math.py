"""Elementwise arithmetic, exp/log/pow/abs/clip/where/maximum, reductions, argmax, topk,
norms, device moves and matrix products."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DTypeError, ShapeError


def _as_array(y: Any) -> Any:
    """A reduction's result as an array (NumPy gives a scalar where CuPy gives a 0-d array)."""
    return np.asarray(y) if isinstance(y, np.generic) else y


def unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum a broadcast gradient back down to `shape`."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


class _Binary(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = (a.shape, b.shape)
        try:  # checked only when NumPy refuses: the success path pays nothing
            return self.compute(a, b)
        except ValueError:
            raise ShapeError(f"{type(self).__name__} expects shapes that broadcast together, "
                             f"found {a.shape} and {b.shape}") from None

    def compute(self, a: Any, b: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Add(_Binary):
    """a + b with broadcasting."""

    ir_name = "Add"
    simple_lowering = True

    def compute(self, a: Any, b: Any) -> Any:
        return a + b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(gy, sa) if na else None, unbroadcast(gy, sb) if nb else None)


class Sub(_Binary):
    """a - b with broadcasting."""

    ir_name = "Sub"
    simple_lowering = True

    def compute(self, a: Any, b: Any) -> Any:
        return a - b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(gy, sa) if na else None, unbroadcast(-gy, sb) if nb else None)


class Mul(_Binary):
    """a * b with broadcasting."""

    ir_name = "Mul"
    simple_lowering = True

    def compute(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return a * b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(gy * self.b, sa) if na else None,
                unbroadcast(gy * self.a, sb) if nb else None)


class Div(_Binary):
    """a / b with broadcasting."""

    ir_name = "Div"
    simple_lowering = True

    def compute(self, a: Any, b: Any) -> Any:
        if a.dtype.kind in "iub" and b.dtype.kind in "iub":  # true division, as torch: float32
            a, b = a.astype(backend.DEFAULT_DTYPE), b.astype(backend.DEFAULT_DTYPE)
        self.b = b
        self.y = a / b
        return self.y

    def backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        ga = unbroadcast(gy / self.b, sa) if na else None
        # -gy * (a / b) / b, as torch: a / (b * b) over- or underflows where a / b does not
        # (1e200 / 1e200), and x / x gives exactly 0 this way
        gb = unbroadcast(-gy * self.y / self.b, sb) if nb else None
        return ga, gb


class Neg(Function):
    """-x."""

    ir_name = "Neg"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gy: Any) -> tuple[Any]:
        return (-gy,)


class Pow(Function):
    """x ** exponent for a constant exponent."""

    ir_name = "Pow"

    def __init__(self, exponent: float) -> None:
        self.exponent = exponent

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Pow(x, exponent) with the exponent an initializer in the model's dtype."""
        return b.node("Pow", [xs[0], b.const(float(self.exponent))])

    def forward(self, x: Any) -> Any:
        if x.dtype.kind != "f":  # int ** 0.5 in the int dtype would truncate 0.5 to 0
            if float(self.exponent).is_integer() and self.exponent >= 0:
                return x ** int(self.exponent)  # integer result, as NumPy and PyTorch give
            x = x.astype(backend.DEFAULT_DTYPE)
        self.x = x
        return x ** x.dtype.type(self.exponent)

    def backward(self, gy: Any) -> tuple[Any]:
        if self.exponent == 0:  # x ** 0 is constant: 0 * 0 ** -1 would give NaN at x = 0
            return (np.zeros_like(gy),)
        p = self.x.dtype.type(self.exponent)
        with np.errstate(divide="ignore"):  # x = 0 with p < 1: an infinite slope, no warning
            return (gy * p * self.x ** (p - 1),)


class PowTensor(_Binary):
    """a ** b elementwise with broadcasting, both arrays (torch.pow of two tensors): the
    gradient is b * a ** (b - 1) for a (0 where b is 0) and a ** b * log(a) for b (0 where a is
    0 and b >= 0), as torch's."""

    ir_name = "Pow"
    simple_lowering = True

    def compute(self, a: Any, b: Any) -> Any:
        if a.dtype.kind in "iub" and b.dtype.kind in "iub":
            if (b < 0).any():  # NumPy refuses int ** negative int
                raise DTypeError("integer tensor ** negative integer exponent is not "
                                 "supported; make the base a float tensor (.float())")
        elif a.dtype.kind != "f" or b.dtype.kind != "f":  # int base, float exponent: a float
            dt = np.result_type(a.dtype if a.dtype.kind == "f" else b.dtype)
            a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b, (sa, sb) = self.a, self.b, self.shapes
        na, nb = self.needs_input_grad
        zero = gy.dtype.type(0)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if na:
                ga = unbroadcast(np.where(b == 0, zero, gy * b * a ** (b - 1)), sa)
            if nb:
                gb = unbroadcast(np.where((a == 0) & (b >= 0), zero, gy * self.y * np.log(a)),
                                 sb)
        return ga, gb


class StdSqrt(Function):
    """sqrt of a variance: the gradient where it is 0 (constant values) is 0, as in PyTorch."""

    ir_name = "Sqrt"
    simple_lowering = True

    def forward(self, v: Any) -> Any:
        self.y = np.sqrt(v)
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        # 0.5 / sqrt(0) is inf, and inf times the 0 slope of the variance there is NaN
        with np.errstate(divide="ignore"):
            g = gy * (self.y.dtype.type(0.5) / self.y)
        return (np.where(self.y == 0, self.y.dtype.type(0), g),)


class Exp(Function):
    """e ** x."""

    ir_name = "Exp"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        self.y = np.exp(x)
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy * self.y,)


class Log(Function):
    """Natural logarithm."""

    ir_name = "Log"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return np.log(x)

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy / self.x,)


class Cast(Function):
    """Change the floating dtype; the gradient is cast back."""

    ir_name = "Cast"

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Cast to the target type."""
        return b.node("Cast", xs, to=b.onnx_dtype(self.dtype))

    def forward(self, x: Any) -> Any:
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.astype(self.src),)


class CastNoGrad(Cast):
    """A cast to an int or bool dtype: its output carries no gradient (as in torch)."""

    differentiable = False


class Compare(Function):
    """a OP b elementwise with broadcasting, as a bool tensor without gradient; the IR op of
    the same name computes it in a traced graph (operands are promoted to one dtype first,
    by Tensor's comparison operators, since ONNX comparisons take equal types)."""

    differentiable = False
    simple_lowering = True
    _fn: Any = None

    def forward(self, a: Any, b: Any) -> Any:
        try:
            return _as_array(self._fn(a, b))
        except ValueError:
            raise ShapeError(f"{self.ir_name} expects shapes that broadcast together, found "
                             f"{a.shape} and {b.shape}") from None


class Greater(Compare):
    """a > b."""

    ir_name = "Greater"
    _fn = staticmethod(np.greater)


class GreaterOrEqual(Compare):
    """a >= b."""

    ir_name = "GreaterOrEqual"
    _fn = staticmethod(np.greater_equal)


class Less(Compare):
    """a < b."""

    ir_name = "Less"
    _fn = staticmethod(np.less)


class LessOrEqual(Compare):
    """a <= b."""

    ir_name = "LessOrEqual"
    _fn = staticmethod(np.less_equal)


class Equal(Compare):
    """a == b."""

    ir_name = "Equal"
    _fn = staticmethod(np.equal)


class NotEqual(Compare):
    """a != b."""

    ir_name = "NotEqual"
    _fn = staticmethod(np.not_equal)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX has no NotEqual (and the IR no Not): Equal(Equal(a, b), false)."""
        return b.node("Equal", [b.node("Equal", xs), b.const(np.array(False))])


class AnyAll(Function):
    """any() / all() over axes, as a bool tensor without gradient."""

    differentiable = False

    def __init__(self, kind: str, axis: Any = None, keepdims: bool = False) -> None:
        self.kind, self.axis, self.keepdims = kind, axis, keepdims

    def forward(self, x: Any) -> Any:
        axes = _norm_axis(self.axis, x.ndim)
        fn = np.any if self.kind == "any" else np.all
        return _as_array(fn(x, axis=axes, keepdims=self.keepdims))

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX has no Any/All: count the nonzero (any) or zero (all) values with a ReduceSum
        over a 0/1 cast and compare the count with 0. ReduceSum rather than ReduceMax/Min:
        an empty reduction then gives any False and all True, as NumPy, in every runtime (an
        empty ReduceMax is -inf in ONNX Runtime, an error in NumPy), and it takes its axes as
        an input from opset 13 on (ReduceMax from 18)."""
        nonzero = b.node("Cast", xs, to=b.onnx_dtype(np.bool_))
        axes = _norm_axis(self.axis, len(b.shape(xs[0])))
        if not axes:  # a 0-d tensor: any and all are its truth value
            return nonzero
        # all(x) is "no zero in x": Equal(nonzero, false) is the IR's Not
        flags = nonzero if self.kind == "any" else b.node("Equal", [nonzero, b.const(np.False_)])
        ones = b.node("Cast", [flags], to=b.onnx_dtype(b.t.dtype))
        count = b.node("ReduceSum", [ones, b.ints(axes)], keepdims=int(bool(self.keepdims)))
        return b.node("Greater" if self.kind == "any" else "Equal", [count, b.const(0.0)])


def _norm_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    # checked here: `a % ndim` alone would reduce axis 3 of a 3-D array over axis 0
    if not all(-ndim <= a < ndim for a in axes):
        raise ShapeError(f"expected axes in [{-ndim}, {ndim - 1}] for a {ndim}-D tensor, "
                         f"found axis={axis}")
    out = tuple(sorted(a % ndim for a in axes))
    if len(set(out)) != len(out):
        raise ShapeError(f"expected distinct axes, found axis={axis} for a {ndim}-D tensor")
    return out


def _expand(g: Any, shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> Any:
    """Reshape a reduced gradient so it broadcasts against the input shape."""
    if not keepdims:
        g = np.expand_dims(g, axes) if axes else g
    return np.broadcast_to(g, shape)


def lower_reduce(fn: Any, b: Any, xs: list[str]) -> Any:
    """ReduceX over the axes forward resolved (a 0-d input reduces over nothing)."""
    if not fn.axes:
        return b.node("Identity", xs)
    return b.node(fn.ir_name, [xs[0], b.ints(fn.axes)], keepdims=int(bool(fn.keepdims)))


class Sum(Function):
    """Sum over axes."""

    ir_name = "ReduceSum"

    def __init__(self, axis: Any = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        self.axes = _norm_axis(self.axis, x.ndim)
        out = _as_array(x.sum(axis=self.axes, keepdims=self.keepdims))
        self.in_dtype = x.dtype  # for lower: NumPy sums bools and small ints as int64
        return out

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ReduceSum in the dtype eager sums in: a bool (or int32) input is cast to int64
        first, as NumPy and torch count (ONNX's ReduceSum takes no bools, and the reference
        graph would cast the count back to bool)."""
        summed = np.sum(np.zeros(0, self.in_dtype)).dtype
        if summed != self.in_dtype:
            xs = [b.node("Cast", xs, to=b.onnx_dtype(summed))]
        return lower_reduce(self, b, xs)

    def backward(self, gy: Any) -> tuple[Any]:
        return (_expand(gy, self.shape, self.axes, self.keepdims).copy(),)


class Mean(Function):
    """Mean over axes."""

    ir_name = "ReduceMean"
    lower = lower_reduce

    def __init__(self, axis: Any = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        self.axes = _norm_axis(self.axis, x.ndim)
        self.count = int(np.prod([x.shape[a] for a in self.axes])) if self.axes else 1
        return _as_array(x.mean(axis=self.axes, keepdims=self.keepdims))

    def backward(self, gy: Any) -> tuple[Any]:
        g = _expand(gy, self.shape, self.axes, self.keepdims)
        return (g / g.dtype.type(self.count),)


class Max(Function):
    """Maximum over axes; ties share the gradient equally. Where the result is NaN the NaN
    inputs share it (torch's max() splits it between them too; its max(dim) picks the first)."""

    ir_name = "ReduceMax"
    lower = lower_reduce
    _reduce = staticmethod(np.max)

    def __init__(self, axis: Any = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.x = x
        self.axes = _norm_axis(self.axis, x.ndim)
        _check_not_empty(x, self.axes, type(self).__name__.lower())
        self.y = _as_array(self._reduce(x, axis=self.axes, keepdims=True))
        return self.y if self.keepdims else _as_array(self.y.squeeze(self.axes))

    def backward(self, gy: Any) -> tuple[Any]:
        x, y = self.x, self.y
        mask = x == y
        if x.dtype.kind == "f":  # NaN == NaN is False: a NaN result goes to the NaN inputs
            nan_out = np.isnan(y)
            if nan_out.any():
                mask |= np.isnan(x) & nan_out
        count = mask.sum(axis=self.axes, keepdims=True)
        g = gy if self.keepdims else np.expand_dims(gy, self.axes)
        share = (g / count).astype(x.dtype, copy=False)
        # a select, not mask * share: an inf or NaN share times 0 would be NaN elsewhere
        return (np.where(mask, share, x.dtype.type(0)),)


class Min(Max):
    """Minimum over axes; ties share the gradient equally."""

    ir_name = "ReduceMin"
    _reduce = staticmethod(np.min)


class ArgMax(Function):
    """Index of the largest value along one axis (over the flattened tensor when axis is None),
    the first one on ties, as int64; not differentiable (ONNX ArgMax)."""

    ir_name = "ArgMax"
    differentiable = False
    _pick = staticmethod(np.argmax)

    def __init__(self, axis: int | None = None, keepdims: bool = False) -> None:
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise ShapeError(f"{type(self).__name__.lower()} expects one integer axis or None, "
                             f"found {axis!r}")
        self.axis, self.keepdims = axis, keepdims

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX ArgMax/ArgMin on one axis; axis None reads the flattened tensor."""
        keep = int(bool(self.keepdims))
        if self.axis is not None:
            return b.node(self.ir_name, xs, axis=int(self.axis), keepdims=keep)
        flat = b.node("Reshape", [xs[0], b.ints([-1])])
        y = b.node(self.ir_name, [flat], axis=0, keepdims=0)
        return b.node("Reshape", [y, b.ints([1] * len(b.shape(xs[0])))]) if keep else y

    def forward(self, x: Any) -> Any:
        axes = _norm_axis(self.axis, x.ndim)
        _check_not_empty(x, axes, type(self).__name__.lower())
        axis = None if self.axis is None else axes[0]
        picked = self._pick(x, axis=axis, keepdims=self.keepdims)
        if not backend.is_device_array(x):
            return np.asarray(picked, dtype=np.int64)
        return picked.astype(np.int64, copy=False)  # a GPU array: stays there


class ArgMin(ArgMax):
    """Index of the smallest value along one axis, the first one on ties, as int64."""

    ir_name = "ArgMin"
    _pick = staticmethod(np.argmin)


def _check_not_empty(x: Any, axes: tuple[int, ...], what: str) -> None:
    """max, min and argmax have no value over an empty axis (NumPy's ValueError otherwise)."""
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"{what} expects the reduced axes to be non-empty, found shape "
                         f"{x.shape} reduced over axes {axes}")


class Maximum(_Binary):
    """max(a, b) elementwise with broadcasting; on ties each side gets half the gradient and
    where either is NaN both get all of it, as torch.maximum."""

    ir_name = "Max"
    simple_lowering = True
    _pick = staticmethod(np.maximum)
    _loses = staticmethod(np.less)  # a loses to b where a < b

    def compute(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return self._pick(a, b)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b, (sa, sb) = self.a, self.b, self.shapes
        na, nb = self.needs_input_grad
        zero = gy.dtype.type(0)
        g = np.where(a == b, gy * gy.dtype.type(0.5), gy)
        return (unbroadcast(np.where(self._loses(a, b), zero, g), sa) if na else None,
                unbroadcast(np.where(self._loses(b, a), zero, g), sb) if nb else None)


class Minimum(Maximum):
    """min(a, b) elementwise with broadcasting; ties split the gradient, as torch.minimum."""

    ir_name = "Min"
    _pick = staticmethod(np.minimum)
    _loses = staticmethod(np.greater)


class Abs(Function):
    """|x|; the gradient is 0 at 0 and at NaN inputs, as in PyTorch (its sgn(NaN) is 0)."""

    ir_name = "Abs"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return np.abs(x)

    def backward(self, gy: Any) -> tuple[Any]:
        s = np.sign(self.x)  # a NumPy scalar, not an array, for a 0-d x
        if s.dtype.kind in "fc":  # NumPy's sign(NaN) is NaN, which would poison the gradient
            s = np.where(np.isnan(s), s.dtype.type(0), s)
        return (gy * s,)


class Clip(Function):
    """x limited to [low, high] (either may be None); the gradient passes where low <= x <= high,
    boundaries included, as torch.clamp's does."""

    ir_name = "Clip"

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        if low is None and high is None:
            raise ConfigError("clip needs a lower bound, an upper bound or both, found neither")
        _check_bound("low (min)", low)
        _check_bound("high (max)", high)
        if low is not None and high is not None and low > high:
            raise ConfigError(f"clip expects low <= high, found low={low} and high={high}")
        self.low, self.high = low, high

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Clip with its bounds as initializers ("" for a missing one)."""
        lo = "" if self.low is None else b.const(float(self.low))
        hi = "" if self.high is None else b.const(float(self.high))
        return b.node("Clip", [xs[0], lo, hi] if hi else [xs[0], lo])

    def forward(self, x: Any) -> Any:
        if x.dtype.kind != "f" and any(b is not None and not float(b).is_integer()
                                       for b in (self.low, self.high)):
            x = x.astype(backend.DEFAULT_DTYPE)  # int bounds would truncate 0.5 to 0
        dt = x.dtype.type  # the bounds in x's precision, in both directions
        self.x = x
        self.bounds = (None if self.low is None else dt(self.low),
                       None if self.high is None else dt(self.high))
        return np.clip(x, *self.bounds)

    def backward(self, gy: Any) -> tuple[Any]:
        (low, high), inside = self.bounds, True
        if low is not None:
            inside = self.x >= low
        if high is not None:
            inside = inside & (self.x <= high)
        # a select, not gy * inside: an inf or NaN gradient times 0 would be NaN where clipped
        return (np.where(inside, gy, gy.dtype.type(0)),)


class ClipTensor(Function):
    """x limited to [low, high] where a bound is an array (broadcast with x), as torch.clamp
    with tensor bounds: min(max(x, low), high), so high wins where low > high. The gradient
    goes to x where low <= x <= high, to low where x < low < high, to high where x > high or
    high < low (torch's tie rules)."""

    ir_name = "Clip"

    def __init__(self, has_low: bool, has_high: bool) -> None:
        self.has_low, self.has_high = has_low, has_high

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Max with low, then Min with high (ONNX Clip takes scalar bounds only)."""
        y, rest = xs[0], list(xs[1:])
        if self.has_low:
            y = b.node("Max", [y, rest.pop(0)])
        if self.has_high:
            y = b.node("Min", [y, rest.pop(0)])
        return y

    def forward(self, x: Any, *bounds: Any) -> Any:
        rest = list(bounds)
        self.low = rest.pop(0) if self.has_low else None
        self.high = rest.pop(0) if self.has_high else None
        self.x, self.shapes = x, (x.shape, *(v.shape for v in bounds))
        try:
            y = x if self.low is None else np.maximum(x, self.low)
            return y if self.high is None else np.minimum(y, self.high)
        except ValueError:
            raise ShapeError(f"clip expects bounds whose shapes broadcast with the input's, "
                             f"found {x.shape} and bounds of shapes {self.shapes[1:]}") from None

    def backward(self, gy: Any) -> tuple[Any, ...]:
        x, low, high, zero = self.x, self.low, self.high, gy.dtype.type(0)
        inside: Any = True
        if low is not None:
            inside = x >= low
        if high is not None:
            inside = inside & (x <= high)
        grads = [unbroadcast(np.where(inside, gy, zero), self.shapes[0])]
        if low is not None:
            below = x < low if high is None else (x < low) & (low < high)
            grads.append(unbroadcast(np.where(below, gy, zero), self.shapes[1]))
        if high is not None:
            above = x > high if low is None else (x > high) | (high < low)
            grads.append(unbroadcast(np.where(above, gy, zero), self.shapes[-1]))
        return tuple(g if need else None for g, need in zip(grads, self.needs_input_grad))


def _check_bound(name: str, v: Any) -> None:
    """ConfigError unless a clip bound is None, a number, a tensor or an array."""
    if v is None or type(v) is float or type(v) is int or isinstance(v, Tensor) or _is_array(v):
        return
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                                np.floating)):
        raise ConfigError(f"clip expects its {name} bound as a number, a tensor or None, "
                          f"found {type(v).__name__} {v!r:.40}")


def _is_tensor_bound(v: Any) -> bool:
    if v is None or type(v) is float or type(v) is int:  # the usual case first
        return False
    return isinstance(v, Tensor) or (_is_array(v) and v.ndim > 0)


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray) or backend.is_device_array(v)


def clip(x: Tensor, low: Any = None, high: Any = None) -> Tensor:
    """x limited to [low, high]: number bounds go to Clip, tensor or array bounds to
    ClipTensor (differentiable in a tensor bound, as torch.clamp)."""
    # a 0-d array is a number (ONNX Clip's scalar bound); a tensor bound, 0-d too, is an input
    if not (_is_tensor_bound(low) or _is_tensor_bound(high)):
        return Clip.apply(x, low=low, high=high)  # checks the bounds
    _check_bound("low (min)", low)
    _check_bound("high (max)", high)
    bounds = []
    for v in (low, high):
        if v is not None:  # torch's promotion: a float bound makes an int x float, and back
            x, v = x._operands(v)
            bounds.append(v)
    bounds = [x._operands(v)[1] for v in bounds]  # x may have been cast by the second bound
    return ClipTensor.apply(x, *bounds, has_low=low is not None, has_high=high is not None)


class Where(Function):
    """cond ? a : b elementwise, with broadcasting; cond (a boolean array) gets no gradient."""

    ir_name = "Where"

    def __init__(self, cond: Any) -> None:
        self.cond = (cond.astype(bool, copy=False) if backend.is_device_array(cond)
                     else np.asarray(cond, dtype=bool))

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Where; a condition a traced comparison made stays computed in the graph."""
        cond = b.array(self.cond)
        return b.node("Where", [cond if cond is not None else b.const(self.cond), *xs])

    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = a.shape, b.shape
        if type(a) is not np.ndarray or type(b) is not np.ndarray:  # the condition follows
            device = a if backend.is_device_array(a) else b
            if backend.is_device_array(device):
                self.cond = backend.same_device_as(self.cond, device)
        try:  # checked only when NumPy refuses, as _Binary does
            return np.where(self.cond, a, b)
        except ValueError:
            raise ShapeError(f"where expects a condition and values whose shapes broadcast "
                             f"together, found {self.cond.shape}, {a.shape} and {b.shape}"
                             ) from None

    def backward(self, gy: Any) -> tuple[Any, Any]:
        zero = gy.dtype.type(0)
        ga = unbroadcast(np.where(self.cond, gy, zero), self.shapes[0])
        gb = unbroadcast(np.where(self.cond, zero, gy), self.shapes[1])
        return ga, gb


class PowBase(Function):
    """base ** x for a constant base: the gradient is base**x * ln(base)."""

    ir_name = "Pow"

    def __init__(self, base: float) -> None:
        self.base = base

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Pow(base, x) with the base an initializer in the model's dtype."""
        return b.node("Pow", [b.const(float(self.base)), xs[0]])

    def forward(self, x: Any) -> Any:
        if x.dtype.kind != "f":  # an int base would truncate 2.5 to 2 (and 0.5 to 0)
            x = x.astype(backend.DEFAULT_DTYPE)
        self.x, self.y = x, x.dtype.type(self.base) ** x
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        with np.errstate(divide="ignore", invalid="ignore"):  # base 0 or < 0: as NumPy gives
            g = gy * self.y * self.y.dtype.type(np.log(self.base))
        if self.base == 0:  # 0 ** x is flat for x >= 0 (0 * log 0 would be NaN), as in PyTorch
            g = np.where(self.x >= 0, self.y.dtype.type(0), g)
        return (g,)


def _numbers_like(a: Any, b: Any) -> tuple[Any, Any]:
    """A Python number beside a tensor takes the tensor's float dtype (as its operators do)."""
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        a, b = a._operands(b)
    elif isinstance(b, Tensor) and not isinstance(a, Tensor):
        b, a = b._operands(a)
    return a, b


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max of a and b (tensors or numbers, broadcast together)."""
    return Maximum.apply(*_numbers_like(a, b))


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise min of a and b (tensors or numbers, broadcast together)."""
    return Minimum.apply(*_numbers_like(a, b))


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Elementwise cond ? a : b (a and b tensors or numbers, broadcast together)."""
    if isinstance(cond, Tensor):
        cond = cond.data
    return Where.apply(*_numbers_like(a, b), cond=cond)


class MatMul(Function):
    """Matrix product with NumPy's matmul broadcasting rules."""

    ir_name = "MatMul"
    simple_lowering = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        try:
            return a @ b
        except ValueError:
            raise ShapeError(f"matmul expects the last axis of the left operand to match the "
                             f"second-to-last of the right one (and the leading axes to "
                             f"broadcast), found {a.shape} @ {b.shape}") from None

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.a, self.b
        na, nb = self.needs_input_grad
        ga = gb = None
        if a.ndim == 1 and b.ndim == 1:
            return (gy * b if na else None, gy * a if nb else None)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        if na:
            ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if nb:
            gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


class TopKIndices(Function):
    """int64 positions of the k largest (or smallest) values along one axis, best first, the
    first position first on ties and NaN counted the largest, as torch.topk; not
    differentiable (the values are gathered with these). The IR has no TopK: it lowers to k
    rounds of ReduceMax, Equal and ArgMax that mask the positions already taken."""

    ir_name = "TopK"
    differentiable = False

    def __init__(self, k: int, axis: int, largest: bool) -> None:
        self.k, self.axis, self.largest = k, axis, largest

    def forward(self, x: Any) -> Any:
        self.in_shape, self.dtype = x.shape, x.dtype
        xp, a, n = backend.xp_of(x), self.axis, x.shape[self.axis]
        if self.largest:  # stable on the flipped axis, flipped back: first position first
            order = xp.flip(xp.argsort(xp.flip(x, a), axis=a, kind="stable"), a)
            order = (n - 1) - order
        else:
            order = xp.argsort(x, axis=a, kind="stable")
        first = tuple(slice(0, self.k) if d == a else slice(None) for d in range(x.ndim))
        return order[first].astype(np.int64, copy=False)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """k rounds: the best value among the positions not taken, its first position. Taken
        positions hold the worst finite value (a model file takes no infinities), so values
        are clipped to it first; NaN is not ranked as eager topk ranks it."""
        if self.k == 0:
            raise b.refuse("topk with k=0 (an empty result)")
        a, n, rank = self.axis, self.in_shape[self.axis], len(self.in_shape)
        iota = b.const(np.arange(n, dtype=np.int64).reshape([n if d == a else 1
                                                             for d in range(rank)]))
        info = np.finfo(self.dtype) if self.dtype.kind == "f" else np.iinfo(self.dtype)
        worst = b.const(np.asarray(info.min if self.largest else info.max, self.dtype))
        zero, i32 = b.const(np.zeros((), np.int32)), b.onnx_dtype(np.int32)
        x = b.node("Max" if self.largest else "Min", [xs[0], worst])  # -inf is the worst too
        reduce = "ReduceMax" if self.largest else "ReduceMin"
        taken, picks = None, []  # taken: int32 0/1 (ONNX Runtime's Where takes no bools)
        for _ in range(self.k):
            mask = None if taken is None else b.node("Greater", [taken, zero])
            key = x if mask is None else b.node("Where", [mask, worst, x])
            best = b.node(reduce, [key, b.ints([a])], keepdims=1)
            hit = b.node("Cast", [b.node("Equal", [x, best])], to=i32)
            if mask is not None:
                hit = b.node("Where", [mask, zero, hit])
            pos = b.node("ArgMax", [hit], axis=a, keepdims=1)
            picks.append(pos)
            now = b.node("Cast", [b.node("Equal", [iota, pos])], to=i32)
            taken = now if taken is None else b.node("Add", [taken, now])
        return picks[0] if len(picks) == 1 else b.node("Concat", picks, axis=a)


def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True,
         sorted: bool = True) -> Any:  # noqa: A002 - torch's name
    """torch.topk: (values, indices) of the k largest (smallest) values along dim, best first
    (also for sorted=False, whose order torch leaves open)."""
    from ..autograd.tensor import ValuesIndices  # noqa: PLC0415

    a = _one_axis(x, dim, "topk")
    n = x.shape[a]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ShapeError(f"topk expects k in [0, {n}] for dim {dim} of shape {x.shape}, "
                         f"found {k!r}")
    if x.dtype.kind not in "iuf":
        raise DTypeError(f"topk expects a numeric tensor, found dtype {x.dtype}")
    indices = TopKIndices.apply(x, k=int(k), axis=a, largest=bool(largest))
    return ValuesIndices(x.gather(a, indices), indices)


def _one_axis(x: Tensor, axis: Any, what: str) -> int:
    """axis as a non-negative int, checked against x's rank."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ShapeError(f"{what} expects one integer dim, found {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"{what} expects a dim in [{-x.ndim}, {x.ndim - 1}] for shape "
                         f"{x.shape}, found {axis}")
    return int(axis) % x.ndim


def norm(x: Tensor, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
    """torch's vector norm over dim (all axes when None): p = 2 ('fro'), 1, inf, -inf, 0 (the
    count of nonzeros) or any other number; the 2-norm's gradient at 0 is 0, as torch's."""
    if x.dtype.kind != "f":
        raise DTypeError(f"norm expects a floating point tensor, found dtype {x.dtype}")
    if p == "fro":
        p = 2
    if isinstance(p, (str, bool)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise ConfigError(f"norm expects p as a number, inf or 'fro', found {p!r}")
    axis = tuple(dim) if isinstance(dim, list) else dim
    if p == 2:  # StdSqrt: no NaN gradient where every value is 0
        return StdSqrt.apply((x * x).sum(axis=axis, keepdims=keepdim))
    if p == 0:
        return (x != 0).sum(axis=axis, keepdims=keepdim).astype(x.dtype)
    if math.isinf(p):
        a = x.abs()
        return a.max(axis=axis, keepdims=keepdim) if p > 0 else a.min(axis=axis, keepdims=keepdim)
    if p == 1:
        return x.abs().sum(axis=axis, keepdims=keepdim)
    return PNorm.apply(x, p=float(p), axis=axis, keepdims=keepdim)


class PNorm(Function):
    """(sum |x| ** p) ** (1 / p) over axes for p other than 0, 1, 2 and +-inf, one op so that
    the gradient follows torch's: 0 where x is 0 or the norm is 0 (composed from abs and pow
    it would be NaN there), sign(x) * |x| ** (p - 1) * norm ** (1 - p) elsewhere."""

    ir_name = "ReduceSum"

    def __init__(self, p: float, axis: Any = None, keepdims: bool = False) -> None:
        self.p, self.axis, self.keepdims = p, axis, keepdims

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Pow(ReduceSum(Pow(Abs(x), p)), 1 / p)."""
        powered = b.node("Pow", [b.node("Abs", xs), b.const(self.p)])
        summed = lower_reduce(self, b, [powered])
        return b.node("Pow", [summed, b.const(1.0 / self.p)])

    def forward(self, x: Any) -> Any:
        self.x = x
        self.axes = _norm_axis(self.axis, x.ndim)
        p = x.dtype.type(self.p)
        with np.errstate(divide="ignore"):  # 0 ** -1 is inf, as torch: the norm is then 0
            s = np.sum(np.abs(x) ** p, axis=self.axes, keepdims=True)
        self.y = _as_array(s ** (1 / p))
        return self.y if self.keepdims else _as_array(self.y.squeeze(self.axes))

    def backward(self, gy: Any) -> tuple[Any]:
        x, y, dt = self.x, self.y, self.x.dtype.type
        p = dt(self.p)
        g = gy if self.keepdims else np.expand_dims(gy, self.axes)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            local = np.sign(x) * np.abs(x) ** (p - 1) * (g * y ** (1 - p))
        return (np.where((x == 0) | (y == 0), dt(0), local),)


class ToDevice(Function):
    """The data moved to another device ('cpu', 'cuda', 'cuda:N'); the gradient moves back.
    The graph has no devices: it lowers to Identity."""

    ir_name = "Identity"
    simple_lowering = True

    def __init__(self, device: str) -> None:
        self.device = device

    def forward(self, x: Any) -> Any:
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy: Any) -> tuple[Any]:
        return (backend.to_device(gy, self.source),)
