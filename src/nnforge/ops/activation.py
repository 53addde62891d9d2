"""Activations: ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, ELU, Softplus, Softmax, LogSoftmax."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor, pick_axis
from ..errors import ConfigError, DTypeError, ShapeError, check_float

_ZEROS: dict[str, Any] = {}  # dtype -> one read-only flat buffer of zeros, grown on demand
#: largest x given zeros of its own shape; larger ones get a row to broadcast (memory bound)
ZEROS_MAX_ELEMENTS = 1 << 22


def require_float(x: Any, what: str) -> None:
    """DTypeError unless x holds floating-point numbers.

    Ops defined on the reals (GELU, ELU, softmax, the norms, pooling, ...) refuse integer and
    bool arrays, as torch does for Long tensors, rather than compute in the integer dtype and
    truncate. Layers never see them: Module casts integer input to its float dtype first.
    """
    if x.dtype.kind != "f":
        raise DTypeError(f"{what} expected floating-point input, found an array of dtype "
                         f"{x.dtype} and shape {x.shape}; cast it first (e.g. "
                         f"x.astype(np.float32)) or call the layer, which casts integers")


def as_float(x: Any) -> Any:
    """x, or for integer and bool arrays x in the default float dtype (float32, as torch
    promotes them for sigmoid and tanh)."""
    return x if x.dtype.kind == "f" else x.astype(backend.DEFAULT_DTYPE)


def all_finite(x: Any) -> bool:
    """Whether x holds no NaN or Inf.

    One BLAS dot product of x with itself: a NaN or Inf anywhere makes it non-finite, and it
    reads x at memory speed (faster than np.add.reduce or np.isfinite(x).all(), which also
    allocates: 7 us against 11 us on a (128, 256) float32 gradient, measured). Only the sum of
    squares of huge finite values overflowing takes the exact test as well.
    """
    if x.dtype.kind != "f" or x.size == 0:
        return True
    flat = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is an answer here
        total = np.dot(flat, flat)
    return math.isfinite(total) or bool(np.isfinite(x).all())


def relu_backward(gy: Any, y: Any) -> Any:
    """ReLU's input gradient from its output y: gy where y != 0, exact zeros elsewhere.

    y = max(x, 0) is never below zero, so y != 0 is torch's not (x <= 0): a NaN input passes
    its gradient through, at no cost over y > 0. Infinite or NaN gy would make inf * 0 = NaN
    of the structural zeros: a slower exact path is taken only then.
    """
    if all_finite(gy):
        # a float mask multiplied in place: much faster than np.where, and ~25% faster than
        # multiplying by the boolean mask, which casts it chunk by chunk (NumPy 2.4, measured)
        mask = (y != 0).astype(gy.dtype)
        if isinstance(mask, np.generic):  # a 0-d y is a NumPy scalar: no out= for it
            return np.asarray(gy * mask)
        return np.multiply(gy, mask, out=mask)
    return np.where(y != 0, gy, gy.dtype.type(0))


def relu_floor(x: Any) -> Any:
    """Read-only zeros for np.maximum(x, zeros): of x's shape, or a 0 for 0-d x.

    NumPy 2.4 runs maximum against a scalar 2-5x slower than against an array of x's shape
    (measured, float32 (128, 256): 31 us, a broadcast row 16 us, full zeros 6.5 us; np.add
    against the scalar takes 7 us). The zeros are views of one cached buffer, so they cost no
    allocation per call.
    """
    if x.ndim == 0 or x.dtype.kind != "f":
        return 0
    if type(x) is not np.ndarray:  # a GPU array (NumPy scalars are 0-d: above); CuPy takes a
        return x.dtype.type(0)      # scalar, at full speed
    n = x.size if x.size <= ZEROS_MAX_ELEMENTS else x.shape[-1]
    buf = _ZEROS.get(x.dtype.str)
    if buf is None or buf.size < n:
        grown = min(2 * (0 if buf is None else buf.size), ZEROS_MAX_ELEMENTS)
        buf = np.zeros(max(n, grown), x.dtype)  # at most ZEROS_MAX_ELEMENTS
        buf.flags.writeable = False
        _ZEROS[x.dtype.str] = buf  # views of a replaced buffer keep it alive: still zeros
    return buf[:n].reshape(x.shape if n == x.size else x.shape[-1:])


class Relu(Function):
    """max(x, 0)."""

    ir_name = "Relu"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        y = np.maximum(x, relu_floor(x))
        self.y = y
        return y

    def backward(self, gy: Any) -> tuple[Any]:
        return (relu_backward(gy, self.y),)


class LeakyRelu(Function):
    """x for x > 0, alpha * x otherwise."""

    ir_name = "LeakyRelu"

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = alpha

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX LeakyRelu with its alpha."""
        return b.node("LeakyRelu", xs, alpha=float(self.alpha))

    def forward(self, x: Any) -> Any:
        require_float(x, "leaky_relu")
        self.mask = x > 0
        return np.where(self.mask, x, x * x.dtype.type(self.alpha))

    def backward(self, gy: Any) -> tuple[Any]:
        return (np.where(self.mask, gy, gy * gy.dtype.type(self.alpha)),)


def sigmoid_array(x: Any) -> Any:
    """Numerically stable logistic function on an array."""
    # exp(-|x|) never overflows; pick the algebraic form by sign
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Function):
    """1 / (1 + exp(-x)), stable for large |x|."""

    ir_name = "Sigmoid"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        self.y = sigmoid_array(as_float(x))  # integers promote, as in torch
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        y = self.y
        return (gy * y * (1 - y),)


class Tanh(Function):
    """Hyperbolic tangent."""

    ir_name = "Tanh"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        self.y = np.tanh(as_float(x))  # integers promote, as in torch
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy * (1 - self.y * self.y),)


def erf_array(x: Any) -> Any:
    """Vectorised erf in x's dtype, computed in float64.

    float64 inputs get erf to within about 14 units in the last place of math.erf (a series
    below |x| 2.5, a continued fraction for erfc above). Other dtypes get a cheaper erfc fit
    (fractional error below 1.2e-7, Numerical Recipes' Chebyshev fit: a few passes instead of
    a hundred, enough for float32) and the series below |x| 0.5, where 1 - erfc would leave
    only an absolute accuracy (1e-4 relative error at x = 1e-3).
    """
    xd = x.astype(np.float64)
    if x.dtype == np.float64:
        return _erf_float64(xd)
    out = _erf_fit(xd)
    small = np.abs(xd) < 0.5
    if small.any():
        out[small] = _erf_series(xd[small], 9)  # (2x^2)^8 / 17!! < 1e-9 of the sum
    return out.astype(x.dtype)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_series(x: Any, terms: int) -> Any:
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum_n (2x^2)^n x / (1*3*...*(2n+1)): all terms positive,
    so nothing cancels (the alternating Taylor series loses digits near |x| 2)."""
    term, total, r = x.copy(), x.copy(), 2.0 * x * x
    for n in range(1, terms):
        term *= r / (2 * n + 1)
        total += term
    return total * np.exp(-x * x) * _TWO_OVER_SQRT_PI


def _erf_float64(x: Any) -> Any:
    out = np.empty_like(x)
    a = np.abs(x)
    near = a <= 2.5  # NaN goes to the far side and stays NaN
    out[near] = _erf_series(x[near], 50)  # 50 terms: below 1e-25 of the sum at |x| 2.5
    far = ~near
    if far.any():
        z = a[far]
        f = z.copy()  # erfc(z) = exp(-z^2) / (sqrt(pi) (z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))))
        for n in range(50, 0, -1):
            f = z + (n / 2) / f
        erfc = np.exp(-z * z) / (math.sqrt(math.pi) * f)
        out[far] = np.copysign(1.0 - erfc, x[far])
    return out


def _erf_fit(x: Any) -> Any:
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


#: GELU's forms, PyTorch's and ONNX's names: the erf one and the tanh approximation
GELU_APPROXIMATIONS = ("none", "tanh")
_GELU_K, _GELU_C = math.sqrt(2.0 / math.pi), 0.044715


def gelu_cdf(x: Any, approximate: str = "none") -> Any:
    """GELU's factor Phi(x) (erf form) or 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in
    x's dtype; shared by the op, the IR reference and the runtime kernel so they agree."""
    t = x.dtype.type
    if approximate == "tanh":
        inner = x * (t(_GELU_K) + t(_GELU_K * _GELU_C) * (x * x))
        return t(0.5) * (t(1.0) + np.tanh(inner))
    return (0.5 * (1.0 + erf_array(x / t(math.sqrt(2.0))))).astype(x.dtype)


class Gelu(Function):
    """GELU, x * cdf(x): the exact erf form or the tanh approximation (ONNX Gelu's
    approximate attribute, opset 20)."""

    ir_name = "Gelu"

    def __init__(self, approximate: str = "none") -> None:
        self.approximate = approximate

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Gelu with the same approximate attribute."""
        return b.node("Gelu", xs, approximate=self.approximate)

    def forward(self, x: Any) -> Any:
        require_float(x, "gelu")
        self.x = x
        self.cdf = gelu_cdf(x, self.approximate)
        return x * self.cdf

    def backward(self, gy: Any) -> tuple[Any]:
        x, t = self.x, self.x.dtype.type
        if self.approximate == "tanh":
            # d/dx [x c] with c = (1 + tanh(u)) / 2: c + x (1 - tanh^2) / 2 * du/dx, where
            # tanh(u) = 2c - 1 and du/dx = k (1 + 3 * 0.044715 x^2)
            th = t(2.0) * self.cdf - t(1.0)
            du = t(_GELU_K) + t(3 * _GELU_K * _GELU_C) * (x * x)
            return (gy * (self.cdf + t(0.5) * x * (t(1.0) - th * th) * du),)
        pdf = np.exp(-0.5 * x * x) / t(math.sqrt(2 * math.pi))
        return (gy * (self.cdf + x * pdf),)


class Silu(Function):
    """x * sigmoid(x) (SiLU, swish); traced as ONNX Sigmoid then Mul, as torch exports it."""

    ir_name = None  # two ONNX ops: see lower

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Sigmoid(x) * x: ONNX has no SiLU op before opset 24."""
        return b.node("Mul", [xs[0], b.node("Sigmoid", xs)])

    def forward(self, x: Any) -> Any:
        require_float(x, "silu")
        self.x, self.s = x, sigmoid_array(x)
        return x * self.s

    def backward(self, gy: Any) -> tuple[Any]:
        s, one = self.s, self.s.dtype.type(1)
        return (gy * (s * (one + self.x * (one - s))),)


def elu_array(x: Any, alpha: float) -> Any:
    """x for x > 0, alpha * (exp(x) - 1) otherwise, in x's dtype."""
    # expm1 of min(x, 0): no overflow warning from the branch np.where throws away
    neg = np.expm1(np.minimum(x, x.dtype.type(0))) * x.dtype.type(alpha)
    return np.where(x > 0, x, neg).astype(x.dtype, copy=False)


class Elu(Function):
    """ELU with torch's and ONNX's alpha: x for x > 0, alpha * (exp(x) - 1) otherwise."""

    ir_name = "Elu"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Elu with its alpha."""
        return b.node("Elu", xs, alpha=self.alpha)

    def forward(self, x: Any) -> Any:
        require_float(x, "elu")
        # not (x <= 0): a NaN input passes its gradient through, as in torch
        self.mask = np.logical_not(np.less_equal(x, 0))
        self.y = elu_array(x, self.alpha)
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        # below 0, d/dx alpha (exp(x) - 1) = alpha exp(x) = y + alpha
        return (np.where(self.mask, gy, gy * (self.y + self.y.dtype.type(self.alpha))),)


def softplus_array(x: Any) -> Any:
    """log(1 + exp(x)) in x's dtype, without overflow (ONNX Softplus)."""
    return np.logaddexp(x.dtype.type(0), x).astype(x.dtype, copy=False)


#: a torch Softplus(beta=1, threshold >= this) equals ONNX Softplus to float rounding: past
#: the threshold log(1 + exp(x)) - x = log1p(exp(-x)) < 2.1e-9, below float32's resolution of x
SOFTPLUS_PLAIN_THRESHOLD = 20.0


class Softplus(Function):
    """torch's Softplus: log(1 + exp(beta x)) / beta, and x itself where beta x > threshold."""

    ir_name = "Softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta, self.threshold = float(beta), float(threshold)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """One ONNX Softplus for beta 1 (and a threshold past which the two agree), else the
        formula: ONNX Softplus has neither beta nor threshold."""
        if self.beta == 1.0 and self.threshold >= SOFTPLUS_PLAIN_THRESHOLD:
            return b.node("Softplus", xs)
        x = xs[0]
        bx = x if self.beta == 1.0 else b.node("Mul", [x, b.const(self.beta)])
        soft = b.node("Softplus", [bx])
        if self.beta != 1.0:
            soft = b.node("Div", [soft, b.const(self.beta)])
        linear = b.node("Greater", [bx, b.const(self.threshold)])
        return b.node("Where", [linear, x, soft])

    def forward(self, x: Any) -> Any:
        require_float(x, "softplus")
        t = x.dtype.type
        bx = x * t(self.beta) if self.beta != 1.0 else x
        self.bx, self.linear = bx, bx > t(self.threshold)
        soft = softplus_array(bx)
        if self.beta != 1.0:
            soft = soft / t(self.beta)
        return np.where(self.linear, x, soft)

    def backward(self, gy: Any) -> tuple[Any]:
        return (np.where(self.linear, gy, gy * sigmoid_array(self.bx)),)


def check_softmax_input(x: Any, axis: int, what: str) -> None:
    """DTypeError for non-float x, ShapeError for an axis outside it (torch's -1 and 0 for a
    0-d x included), named, instead of NumPy's AxisError."""
    require_float(x, what)
    nd = max(x.ndim, 1)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -nd <= axis < nd:
        raise ShapeError(f"{what} dim {axis!r:.40} is out of range for an input of "
                         f"{x.ndim} dims (shape {x.shape}): expected a dim in [{-nd}, {nd - 1}]")


def softmax_array(x: Any, axis: int = -1) -> Any:
    """Numerically stable softmax on an array (0-d: 1; empty: empty)."""
    if x.ndim == 0:  # a 0-d array minus its max is a NumPy scalar: no out= for that
        return softmax_array(x.reshape(1), 0).reshape(())
    if x.size == 0:  # max has no identity over an empty axis
        return x.copy()
    z = x - x.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def log_softmax_array(x: Any, axis: int = -1) -> Any:
    """Numerically stable log-softmax on an array (0-d: 0; empty: empty)."""
    if x.ndim == 0:
        return log_softmax_array(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x.copy()
    z = x - x.max(axis=axis, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z


class Softmax(Function):
    """exp(x) / sum(exp(x)) along an axis."""

    ir_name = "Softmax"

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Softmax along the same axis."""
        return b.node("Softmax", xs, axis=int(self.axis))

    def forward(self, x: Any) -> Any:
        check_softmax_input(x, self.axis, "softmax")
        self.y = softmax_array(x, self.axis)
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        y, axis = self.y, None if self.y.ndim == 0 else self.axis
        return (y * (gy - (gy * y).sum(axis=axis, keepdims=True)),)


class LogSoftmax(Function):
    """log(softmax(x)) along an axis, computed stably."""

    ir_name = "LogSoftmax"

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX LogSoftmax along the same axis."""
        return b.node("LogSoftmax", xs, axis=int(self.axis))

    def forward(self, x: Any) -> Any:
        check_softmax_input(x, self.axis, "log_softmax")
        self.y = log_softmax_array(x, self.axis)
        return self.y

    def backward(self, gy: Any) -> tuple[Any]:
        axis = None if self.y.ndim == 0 else self.axis
        return (gy - np.exp(self.y) * gy.sum(axis=axis, keepdims=True),)


def relu(x: Tensor) -> Tensor:
    """max(x, 0)."""
    return Relu.apply(x)


def leaky_relu(x: Tensor, alpha: float = 0.01) -> Tensor:
    """Leaky ReLU."""
    return LeakyRelu.apply(x, alpha=check_float("leaky_relu alpha", alpha))


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid."""
    return Sigmoid.apply(x)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return Tanh.apply(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU, exact ("none") or with the tanh approximation ("tanh")."""
    if approximate not in GELU_APPROXIMATIONS:
        raise ConfigError(f"gelu expects approximate in {list(GELU_APPROXIMATIONS)}, found "
                          f"{approximate!r:.60}")
    return Gelu.apply(x, approximate=approximate)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    return Silu.apply(x)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """ELU: x for x > 0, alpha * (exp(x) - 1) otherwise."""
    return Elu.apply(x, alpha=check_float("elu alpha", alpha))


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """torch's softplus: log(1 + exp(beta x)) / beta, linear where beta x > threshold."""
    beta = check_float("softplus beta", beta)
    if beta == 0.0:  # log(1 + exp(0)) / 0
        raise ConfigError(f"softplus expected a nonzero beta, found {beta!r}")
    return Softplus.apply(x, beta=beta, threshold=check_float("softplus threshold", threshold))


def softmax(x: Tensor, axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Softmax along an axis (the last by default; torch's dim= names it too)."""
    axis = pick_axis(axis, dim, "softmax")
    return Softmax.apply(x, axis=-1 if axis is None else axis)


def log_softmax(x: Tensor, axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Log-softmax along an axis (the last by default; torch's dim= names it too)."""
    axis = pick_axis(axis, dim, "log_softmax")
    return LogSoftmax.apply(x, axis=-1 if axis is None else axis)
