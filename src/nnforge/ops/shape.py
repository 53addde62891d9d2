"""Shape ops: reshape, transpose, flatten, concatenation and indexing."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ShapeError


class Reshape(Function):
    """View the data with a new shape (-1 infers one dimension)."""

    ir_name = "Reshape"

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ShapeError(f"cannot reshape an array of shape {x.shape} "
                             f"({x.size} elements) into {self.shape}") from None

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.reshape(self.in_shape),)


class Transpose(Function):
    """Permute axes."""

    ir_name = "Transpose"

    def __init__(self, axes: tuple[int, ...] | None = None) -> None:
        self.axes = axes

    def forward(self, x: Any) -> Any:
        if self.axes is None:
            self.perm = tuple(reversed(range(x.ndim)))
        else:  # NumPy validates the axes; backward's argsort needs them non-negative
            self.perm = tuple(int(a) % max(x.ndim, 1) for a in self.axes)
        try:
            return x.transpose(self.axes if self.axes is not None else self.perm)
        except ValueError as exc:  # AxisError too: not a permutation of x's axes
            raise ShapeError(f"transpose expects a permutation of the {x.ndim} axes of shape "
                             f"{x.shape}, found {self.axes} ({exc})") from None

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.transpose(np.argsort(self.perm)),)


class Flatten(Function):
    """Merge the dimensions from start_dim on (ONNX Flatten with axis=start_dim)."""

    ir_name = "Flatten"

    def __init__(self, start_dim: int = 1) -> None:
        self.start_dim = start_dim

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        n = max(x.ndim, 1)  # a 0-d tensor flattens to shape (1,), as in PyTorch
        # 0-d and 1-D tensors take any start_dim (the default 1 included): one result is possible;
        # otherwise `% n` alone would silently flatten from another axis
        if n > 1 and not -n <= self.start_dim < n:
            raise ShapeError(f"flatten expects start_dim in [{-n}, {n - 1}] for shape {x.shape}, "
                             f"found {self.start_dim}")
        s = self.start_dim % n
        # the merged size spelled out: -1 cannot be resolved for an empty batch
        return x.reshape(x.shape[:s] + (math.prod(x.shape[s:]),))

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.reshape(self.in_shape),)


class Concat(Function):
    """Join tensors along an axis."""

    ir_name = "Concat"

    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        if not xs or not all(-x.ndim <= self.axis < x.ndim for x in xs):
            raise ShapeError(f"concat expects at least one tensor with an axis {self.axis}, found "
                             f"shapes {[x.shape for x in xs]}")
        self.sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis)

    def backward(self, gy: Any) -> tuple[Any, ...]:
        cuts = np.cumsum(self.sizes)[:-1]
        parts = np.split(gy, cuts, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs_input_grad))


class GetItem(Function):
    """Indexing and slicing (basic and advanced); the gradient scatters back with add.at."""

    ir_name = "Gather"

    def __init__(self, index: Any) -> None:
        # index arrays are copied: one changed in place before backward() would scatter the
        # gradient to the wrong places
        if isinstance(index, np.ndarray):
            index = index.copy()
        elif isinstance(index, tuple):
            index = tuple(i.copy() if isinstance(i, np.ndarray) else i for i in index)
        self.index = index

    def forward(self, x: Any) -> Any:
        self.in_shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy: Any) -> tuple[Any]:
        g = np.zeros(self.in_shape, dtype=self.dtype)
        np.add.at(g, self.index, gy)
        return (g,)


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Concatenate tensors along an axis."""
    return Concat.apply(*tensors, axis=axis)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis."""
    items = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not items:
        raise ShapeError("stack expects at least one tensor, found none")
    shapes = {t.shape for t in items}
    if len(shapes) > 1:
        raise ShapeError(f"stack expects tensors of one shape, found {sorted(shapes)}")
    return concat([t.unsqueeze(axis) for t in items], axis=axis)


def reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Reshape a tensor."""
    return Reshape.apply(x, shape=tuple(shape))


def transpose(x: Tensor, axes: tuple[int, ...] | None = None) -> Tensor:
    """Permute the axes of a tensor."""
    return Transpose.apply(x, axes=axes)


def flatten(x: Tensor, start_dim: int = 1) -> Tensor:
    """Flatten the dimensions from start_dim on."""
    return Flatten.apply(x, start_dim=start_dim)
