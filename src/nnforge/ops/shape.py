"""Shape ops: reshape, transpose, flatten, concatenation, splitting, broadcasting and
indexing."""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor, pick_axis
from ..errors import DTypeError, ShapeError, TensorIndexError
from .math import unbroadcast


class Reshape(Function):
    """View the data with a new shape (-1 infers one dimension)."""

    ir_name = "Reshape"

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Reshape (the tracer rewrites a batch-sized target entry to 0 or -1)."""
        return b.node("Reshape", [xs[0], b.ints(self.shape)])

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

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Transpose with the permutation forward resolved."""
        return b.node("Transpose", xs, perm=list(self.perm))

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
        return (gy.transpose(tuple(np.argsort(self.perm).tolist())),)  # CuPy takes a tuple


class Flatten(Function):
    """Merge the dimensions start_dim..end_dim (ONNX Flatten when they run to the last one)."""

    ir_name = "Flatten"

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        self.start_dim, self.end_dim = start_dim, end_dim

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Flatten for start_dim 1 to the end, else a Reshape with a batch-free target:
        0s keep the leading dims, literal sizes the trailing ones."""
        shape = b.shape(xs[0])
        start, end = flatten_range(tuple(shape), self.start_dim, self.end_dim)
        if start == 1 and end == len(shape) - 1:
            return b.node("Flatten", xs, axis=1)
        target = [0] * start + [-1] + [int(d) for d in shape[end + 1:]]
        return b.node("Reshape", [xs[0], b.ints(target)])

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        s, e = flatten_range(x.shape, self.start_dim, self.end_dim)
        # the merged size spelled out: -1 cannot be resolved for an empty batch
        return x.reshape(x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.reshape(self.in_shape),)


class Concat(Function):
    """Join tensors along an axis."""

    ir_name = "Concat"

    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Concat along the same axis."""
        return b.node("Concat", xs, axis=int(self.axis))

    def forward(self, *xs: Any) -> Any:
        if not xs or not all(-x.ndim <= self.axis < x.ndim for x in xs):
            raise ShapeError(f"concat expects at least one tensor with an axis {self.axis}, found "
                             f"shapes {[x.shape for x in xs]}")
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return np.concatenate(xs, axis=self.axis)
        except ValueError:
            raise ShapeError(f"concat expects tensors of one rank whose sizes match except along "
                             f"axis {self.axis}, found shapes {[x.shape for x in xs]}") from None

    def backward(self, gy: Any) -> tuple[Any, ...]:
        cuts = np.cumsum(self.sizes)[:-1].tolist()  # a list: CuPy takes no NumPy array
        parts = np.split(gy, cuts, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs_input_grad))


class Split(Function):
    """Cut a tensor into consecutive pieces along an axis: one output per piece (views)."""

    ir_name = "Split"

    def __init__(self, sizes: tuple[int, ...], axis: int) -> None:
        self.sizes, self.axis = sizes, axis  # checked by split(): they cover the axis exactly

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Split with the piece sizes as an input: one output per piece."""
        return b.node("Split", [xs[0], b.ints(self.sizes)], n_out=len(self.sizes),
                      axis=int(self.axis))

    def forward(self, x: Any) -> tuple[Any, ...]:
        self.in_shape, self.dtype = x.shape, x.dtype
        return tuple(np.split(x, np.cumsum(self.sizes)[:-1].tolist(), axis=self.axis))

    def backward(self, gys: tuple[Any, ...]) -> tuple[Any]:
        # one concat builds the input gradient; a piece nothing used contributes zeros
        xp = backend.xp_of(next(g for g in gys if g is not None))
        parts = [g if g is not None else xp.zeros(self._piece_shape(n), self.dtype)
                 for g, n in zip(gys, self.sizes)]
        return (np.concatenate(parts, axis=self.axis),)

    def _piece_shape(self, n: int) -> tuple[int, ...]:
        shape = list(self.in_shape)
        shape[self.axis] = n
        return tuple(shape)


class Expand(Function):
    """Broadcast to a larger shape without copying (a read-only view); the gradient is summed
    back over the broadcast axes."""

    ir_name = "Expand"

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape  # resolved and checked by expand()

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Expand (the tracer rewrites a batch-sized entry the input already has to 1)."""
        return b.node("Expand", [xs[0], b.ints(self.shape)])

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return np.broadcast_to(x, self.shape)

    def backward(self, gy: Any) -> tuple[Any]:
        return (unbroadcast(gy, self.in_shape),)


class Tile(Function):
    """x repeated `reps` times along each axis (np.tile; torch's Tensor.repeat); the gradient
    sums the copies. Traced as Reshape, Expand, Reshape: the IR has no Tile."""

    ir_name = "Tile"

    def __init__(self, reps: tuple[int, ...]) -> None:
        self.reps = reps  # one per axis of x (repeat() puts new leading axes in first)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """(1, s_i) pairs expanded to (r_i, s_i), then merged into r_i * s_i per axis."""
        shape = b.shape(xs[0])
        pairs = [d for s in shape for d in (1, s)]
        grown = [d for r, s in zip(self.reps, shape) for d in (r, s)]
        y = b.node("Reshape", [xs[0], b.ints(pairs)])
        y = b.node("Expand", [y, b.ints(grown)])
        return b.node("Reshape", [y, b.ints([r * s for r, s in zip(self.reps, shape)])])

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return np.tile(x, self.reps)

    def backward(self, gy: Any) -> tuple[Any]:
        split = [d for r, s in zip(self.reps, self.in_shape) for d in (r, s)]
        return (gy.reshape(split).sum(axis=tuple(range(0, len(split), 2))),)


def repeat(x: Tensor, reps: Sequence[int]) -> Tensor:
    """x tiled `reps` times along each axis, as torch's Tensor.repeat (np.tile): reps has at
    least one entry per axis; extra leading entries add new axes."""
    reps = tuple(_size(r, "repeat") for r in reps)
    if len(reps) < x.ndim or any(r < 0 for r in reps):
        raise ShapeError(f"repeat expects at least {x.ndim} non-negative counts (one per axis "
                         f"of shape {x.shape}), found {reps}")
    if len(reps) > x.ndim:
        x = x.reshape((1,) * (len(reps) - x.ndim) + tuple(x.shape))
    return Tile.apply(x, reps=reps)


class GetItem(Function):
    """Indexing and slicing (basic and advanced). The gradient of basic indexing (ints, slices,
    None, ...) is written into zeros by assignment; advanced indices, which may repeat, scatter
    it back with add.at (several times slower).

    Integers follow torch, not NumPy, where they meet index arrays: torch applies integers
    (and 0-d integer arrays) first as basic indexing, then the rest, so `x[0, :, [0, 1]]` of a
    (2, 3, 4) x is (3, 2) (NumPy counts the 0 as an advanced index and, as it is separated
    from the array by a slice, moves the indexed axes first: (2, 3)). Only that case differs,
    an integer and an array not side by side; it runs as x[ints][rest]. Every other index is
    NumPy's, computed in one step."""

    ir_name = "Gather"

    def __init__(self, index: Any) -> None:
        # index arrays are copied: one changed in place before backward() would scatter the
        # gradient to the wrong places
        if isinstance(index, np.ndarray) or backend.is_device_array(index):
            index = index.copy()
        elif isinstance(index, tuple):
            index = tuple(i.copy() if isinstance(i, np.ndarray) or backend.is_device_array(i)
                          else i for i in index)
        self.index = index
        self.split = _torch_split(index) if type(index) is tuple else None

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Slice, Gather and Unsqueeze nodes doing the same indexing."""
        return lower_index(b, xs[0], self.index, len(self.in_shape))

    def forward(self, x: Any) -> Any:
        self.in_shape, self.dtype = x.shape, x.dtype
        if backend.is_device_array(x):  # index arrays go where x is
            self.index = _index_on_device(self.index, x)
            if self.split is not None:
                self.split = (self.split[0], _index_on_device(self.split[1], x))
        try:
            if self.split is not None:
                basic, rest = self.split
                return x[basic][rest]
            return x[self.index]
        except IndexError as exc:  # out of range, float indices, a mask of another shape
            raise TensorIndexError(f"index {_describe_index(self.index)} does not fit a tensor "
                                   f"of shape {x.shape}: expected ints in range, slices, None, "
                                   f"..., integer arrays or a bool mask of the indexed shape "
                                   f"({exc})") from None

    def backward(self, gy: Any) -> tuple[Any]:
        xp = backend.xp_of(gy)  # numpy, or cupy (whose add.at scatters on the GPU)
        g = xp.zeros(self.in_shape, dtype=self.dtype)
        if self.split is not None:  # g[basic] is a view: add.at writes through it into g
            xp.add.at(g[self.split[0]], self.split[1], gy)
        elif _is_basic(self.index):  # a view: every element is reached at most once
            g[self.index] = gy
        else:
            xp.add.at(g, self.index, gy)
        return (g,)


def _is_array_index(i: Any) -> bool:
    return isinstance(i, (list, np.ndarray)) or backend.is_device_array(i)


_PLAIN = {slice, int, type(None), type(Ellipsis)}


def _torch_split(index: tuple) -> tuple[tuple, tuple] | None:
    """(the integers as a basic index, the other items) for an index where torch's rule
    differs from NumPy's: integers and index arrays that are not side by side; else None."""
    if all(type(i) in _PLAIN for i in index):  # slicing, the usual case: decided cheaply
        return None
    if not any(_is_array_index(i) and getattr(i, "ndim", 1) > 0 for i in index):
        return None  # no index array: basic indexing, or 0-d arrays only (same in both)
    ints = [_is_int(i) or (_is_array_index(i) and getattr(i, "ndim", 1) == 0
                           and i.dtype.kind in "iu") for i in index]
    if not any(ints):
        return None
    # NumPy's advanced items: arrays, lists, bools and (beside an array) integers
    adv = [k for k, i in enumerate(index)
           if ints[k] or _is_array_index(i) or isinstance(i, (bool, np.bool_))]
    if adv[-1] - adv[0] == len(adv) - 1:
        return None  # side by side: NumPy puts the result where torch does
    basic: list[Any] = []
    for k, i in enumerate(index):
        if ints[k]:
            basic.append(int(i))
        elif i is Ellipsis:
            basic.append(i)
        elif i is None or isinstance(i, (bool, np.bool_)):
            continue  # takes no axis of x
        elif _is_array_index(i):  # a bool mask spans as many axes as it has
            a = np.asarray(i) if isinstance(i, list) else i
            basic.extend([slice(None)] * (a.ndim if a.dtype.kind == "b" else 1))
        else:
            basic.append(slice(None))
    rest = tuple(i for k, i in enumerate(index) if not ints[k])
    return tuple(basic), rest


def _describe_index(index: Any) -> str:
    """An index as the error names it: arrays by their dtype and values, shortened."""
    def one(i: Any) -> str:
        if isinstance(i, np.ndarray) or backend.is_device_array(i):
            values = np.array2string(backend.to_numpy(i).ravel(), threshold=6)
            return f"{i.dtype} array {values}"
        return f"{i!r:.60}"

    return ", ".join(one(i) for i in index) if isinstance(index, tuple) else one(index)


def _is_basic(index: Any) -> bool:
    """True for NumPy basic indexing: ints, slices, None and Ellipsis only (no arrays, lists or
    booleans, which make it advanced)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice) or _is_int(i) for i in items)


_INT64_MAX, _INT64_MIN = 2**63 - 1, -2**63


def _is_int(i: Any) -> bool:
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def lower_index(b: Any, x: str, index: Any, rank: int) -> str:
    """IR nodes for x[index]: basic slicing, integers, None, Ellipsis and one integer array."""
    items = list(index) if isinstance(index, tuple) else [index]
    arrays = [i for i in items if isinstance(i, (list, np.ndarray)) or backend.is_device_array(i)]
    if any(np.asarray(backend.to_numpy(a)).dtype.kind == "b" for a in arrays):
        raise b.refuse("indexing with a boolean mask (its result's shape depends on the data)")
    if len(arrays) > 1 or (arrays and any(_is_int(i) for i in items)):
        raise b.refuse(f"indexing with several advanced indices ({index!r:.80}); expected at "
                       f"most one integer array and otherwise slices")
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    fill = [slice(None)] * (rank - used)
    at = next((k for k, i in enumerate(items) if i is Ellipsis), len(items))
    items[at:at + 1] = fill
    sl: list[list[int]] = [[], [], [], []]  # starts, ends, axes, steps
    gathers: list[tuple[int, str]] = []
    unsqueeze: list[int] = []
    axis = out_axis = 0
    for it in items:
        if it is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        if isinstance(it, slice):
            if it != slice(None) and it != slice(None, None, 1):
                step = 1 if it.step is None else int(it.step)
                start = it.start if it.start is not None else (0 if step > 0 else -1)
                stop = it.stop if it.stop is not None else (_INT64_MAX if step > 0 else _INT64_MIN)
                for lst, v in zip(sl, (start, stop, axis, step)):
                    lst.append(int(v))
            out_axis += 1
        elif _is_int(it):
            gathers.append((axis, b.const(np.asarray(int(it), np.int64))))
        elif isinstance(it, (list, np.ndarray)) or backend.is_device_array(it):
            arr = np.asarray(backend.to_numpy(it))
            traced = b.array(it)
            gathers.append((axis, traced if traced is not None else b.const(arr.astype(np.int64))))
            out_axis += arr.ndim
        else:
            raise b.refuse(f"indexing with {it!r:.60}; expected ints, slices, None, ... or an "
                           f"integer array")
        axis += 1
    y = x
    if sl[0]:
        y = b.node("Slice", [y, *(b.ints(v) for v in sl)])
    for a, idx in reversed(gathers):  # highest axis first: lower axis numbers stay valid
        y = b.node("Gather", [y, idx], axis=a)
    if unsqueeze:
        y = b.node("Unsqueeze", [y, b.ints(unsqueeze)])
    return y if y != x else b.node("Identity", [x])


class GatherElements(Function):
    """out[..., j, ...] = x[..., index[..., j, ...], ...] along one axis (torch.gather, ONNX
    GatherElements); the gradient is scattered back with add.at (indices may repeat). The IR
    has no GatherElements: it lowers to a one-hot Equal, Where and ReduceSum."""

    ir_name = "GatherElements"

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any, index: Any) -> Any:
        self.in_shape, self.dtype, self.index = x.shape, x.dtype, index.copy()
        # torch reads only the index's extent on the other axes
        return backend.xp_of(x).take_along_axis(x[self._region()], index, axis=self.axis)

    def _region(self) -> tuple[slice, ...]:
        return tuple(slice(None) if k == self.axis else slice(0, n)
                     for k, n in enumerate(self.index.shape))

    def backward(self, gy: Any) -> tuple[Any, None]:
        xp = backend.xp_of(gy)
        g = xp.zeros(self.in_shape, dtype=self.dtype)
        rank = len(self.in_shape)
        coords = [self.index if k == self.axis else
                  xp.arange(n).reshape([n if j == k else 1 for j in range(rank)])
                  for k, n in enumerate(self.index.shape)]
        xp.add.at(g, tuple(coords), gy)
        return g, None

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Where(index == arange(n) on a new axis after `axis`, x, 0) summed over that axis."""
        x, index = xs
        d, rank, n = self.axis, len(self.in_shape), self.in_shape[self.axis]
        cut = [k for k in range(rank) if k != d and self.index.shape[k] != self.in_shape[k]]
        if cut:
            x = b.node("Slice", [x, b.ints([0] * len(cut)),
                                 b.ints([self.index.shape[k] for k in cut]), b.ints(cut)])
        iota = np.arange(n, dtype=np.int64).reshape([n if k == d + 1 else 1
                                                     for k in range(rank + 1)])
        hot = b.node("Equal", [b.node("Unsqueeze", [index, b.ints([d + 1])]), b.const(iota)])
        picked = b.node("Where", [hot, b.node("Unsqueeze", [x, b.ints([d])]),
                                  b.const(np.zeros((), self.dtype))])
        return b.node("ReduceSum", [picked, b.ints([d + 1])], keepdims=0)


def gather(x: Tensor, dim: int, index: Any) -> Tensor:
    """x's values picked along dim by an integer index of x's rank (torch.gather): for dim 1,
    out[i][j] = x[i][index[i][j]]; index may be shorter than x on every axis."""
    d = _axis(x, dim, "gather") if x.ndim else None
    idx = index if isinstance(index, Tensor) else Tensor(np.asarray(index), _keep=True)
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"gather expects an integer index, found dtype {idx.dtype}")
    if d is None or idx.ndim != x.ndim:
        raise ShapeError(f"gather expects an index with the {x.ndim} axes of the tensor "
                         f"(at least one), found index shape {idx.shape} for shape {x.shape}")
    if any(k != d and i > n for k, (i, n) in enumerate(zip(idx.shape, x.shape))):
        raise ShapeError(f"gather expects an index no longer than the tensor on the axes other "
                         f"than dim {d}, found index shape {idx.shape} for shape {x.shape}")
    values = idx.data
    if values.size and (int(values.min()) < 0 or int(values.max()) >= x.shape[d]):
        bad = values[(values < 0) | (values >= x.shape[d])].ravel()[0]
        raise TensorIndexError(f"gather expects indices in [0, {x.shape[d]}) along dim {d} of "
                               f"shape {x.shape}, found {bad}")
    if idx.dtype != np.int64:  # the lowering compares it with int64 positions
        idx = idx.astype(np.int64)
    return GatherElements.apply(x, idx, axis=d)


def _index_on_device(index: Any, like: Any) -> Any:
    """An index with its NumPy arrays (and lists of ints) moved to the device of `like`."""
    def move(i: Any) -> Any:
        if isinstance(i, (np.ndarray, list)):
            return backend.same_device_as(i, like)
        return i

    return tuple(move(i) for i in index) if isinstance(index, tuple) else move(index)


def concat(tensors: Sequence[Tensor], axis: int | None = None, *,
           dim: int | None = None) -> Tensor:
    """Concatenate tensors along an axis (0 by default; torch's dim= names it too)."""
    axis = pick_axis(axis, dim, "concat")
    return Concat.apply(*tensors, axis=0 if axis is None else axis)


cat = concat  # PyTorch's name


def swapaxes(x: Tensor, axis0: int, axis1: int) -> Tensor:
    """x with two axes exchanged (torch's transpose(dim0, dim1))."""
    a, b = _axis(x, axis0, "transpose"), _axis(x, axis1, "transpose")
    perm = list(range(x.ndim))
    perm[a], perm[b] = b, a
    return Transpose.apply(x, axes=tuple(perm))


def stack(tensors: Sequence[Tensor], axis: int | None = None, *,
          dim: int | None = None) -> Tensor:
    """Join same-shaped tensors along a new axis (0 by default; torch's dim= names it too)."""
    axis = pick_axis(axis, dim, "stack")
    axis = 0 if axis is None else axis
    items = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not items:
        raise ShapeError("stack expects at least one tensor, found none")
    shapes = {t.shape for t in items}
    if len(shapes) > 1:
        raise ShapeError(f"stack expects tensors of one shape, found {sorted(shapes)}")
    n = items[0].ndim + 1  # the result's rank: axis may name the new last axis
    if not -n <= axis < n:
        raise ShapeError(f"stack expects an axis in [{-n}, {n - 1}] for tensors of shape "
                         f"{items[0].shape}, found {axis}")
    return concat([t.unsqueeze(axis) for t in items], axis=axis)


def reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Reshape a tensor."""
    return Reshape.apply(x, shape=tuple(shape))


def transpose(x: Tensor, axes: tuple[int, ...] | None = None) -> Tensor:
    """Permute the axes of a tensor."""
    return Transpose.apply(x, axes=axes)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Flatten the dimensions start_dim..end_dim (all of them by default, as torch.flatten;
    nn.Flatten passes start_dim=1)."""
    return Flatten.apply(x, start_dim=start_dim, end_dim=end_dim)


def flatten_range(shape: tuple[int, ...], start_dim: int, end_dim: int) -> tuple[int, int]:
    """(start, end) of a flatten as non-negative axes, or ShapeError where PyTorch refuses."""
    n = len(shape)
    # 0-d and 1-D tensors take any dims (the defaults included): one result is possible
    # (a 0-d tensor flattens to shape (1,), as in PyTorch); otherwise `% n` alone would
    # silently flatten other axes
    if n <= 1:
        return 0, 0
    for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
        if not -n <= d < n:
            raise ShapeError(f"flatten expects {name} in [{-n}, {n - 1}] for shape {shape}, "
                             f"found {d}")
    s, e = start_dim % n, end_dim % n
    if s > e:
        raise ShapeError(f"flatten expects start_dim <= end_dim, found start_dim={start_dim} "
                         f"and end_dim={end_dim} for shape {shape}")
    return s, e


def _axis(x: Tensor, axis: int, what: str) -> int:
    """axis as a non-negative int, checked against x's rank."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ShapeError(f"{what} expects one integer axis, found {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"{what} expects an axis in [{-x.ndim}, {x.ndim - 1}] for shape "
                         f"{x.shape}, found {axis}")
    return int(axis) % x.ndim


def _size(d: Any, what: str) -> int:
    """d as an int; a float size (2.5) is refused rather than truncated."""
    try:
        return operator.index(d)
    except TypeError:
        raise ShapeError(f"{what} expects integer sizes, found {d!r}") from None


def split(x: Tensor, size: int | Sequence[int], axis: int | None = None, *,
          dim: int | None = None) -> tuple[Tensor, ...]:
    """Pieces of `size` along axis (0 by default, or torch's dim=; the last piece shorter), or
    of each of the sizes listed, as torch.split (not np.split, whose int counts pieces)."""
    axis = pick_axis(axis, dim, "split")
    axis = 0 if axis is None else axis
    a = _axis(x, axis, "split")
    n = x.shape[a]
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 0 or (size == 0 and n > 0):
            raise ShapeError(f"split expects a positive piece size for an axis of length {n}, "
                             f"found {size}")
        sizes = [min(size, n - lo) for lo in range(0, n, size)] if n else [0]
    else:
        sizes = [_size(k, "split") for k in size]
        if any(k < 0 for k in sizes) or sum(sizes) != n:
            raise ShapeError(f"split expects non-negative sizes that add up to the axis length "
                             f"{n}, found {list(size)}")
    return Split.apply(x, sizes=tuple(sizes), axis=a)


def chunk(x: Tensor, chunks: int, axis: int | None = None, *,
          dim: int | None = None) -> tuple[Tensor, ...]:
    """`chunks` pieces of ceil(length / chunks) along axis (0, or torch's dim=), as
    torch.chunk: the last one is shorter, and fewer come back when the length runs out."""
    axis = pick_axis(axis, dim, "chunk")
    axis = 0 if axis is None else axis
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ShapeError(f"chunk expects a positive number of chunks, found {chunks!r}")
    n = x.shape[_axis(x, axis, "chunk")]
    if n == 0:  # torch gives `chunks` empty pieces
        return split(x, [0] * int(chunks), axis)
    return split(x, -(-n // int(chunks)), axis)


def expand(x: Tensor, shape: Sequence[int]) -> Tensor:
    """x broadcast to `shape` (-1 keeps a size; new axes go in front), as torch's expand."""
    shape = tuple(_size(d, "expand") for d in shape)
    new = len(shape) - x.ndim
    if new < 0:
        raise ShapeError(f"expand expects at least {x.ndim} sizes for shape {x.shape}, "
                         f"found {shape}")
    if any(d < 0 for d in shape[:new]):
        raise ShapeError(f"expand expects sizes >= 0 for the new leading axes, found {shape}")
    out = list(shape[:new])
    for i, (have, d) in enumerate(zip(x.shape, shape[new:])):
        if d != -1 and (d < 0 or (have != 1 and d != have)):
            raise ShapeError(f"expand grows only axes of size 1 (-1 keeps a size): axis {i} of "
                             f"shape {x.shape} has size {have}, found {d} in {shape}")
        out.append(have if d == -1 else d)
    return Expand.apply(x, shape=tuple(out))
