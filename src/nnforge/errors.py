"""The exception family for user mistakes: messages say what was expected and what was found."""

from __future__ import annotations

import math
import numbers
from typing import Any


class NNForgeError(Exception):
    """Base class of every error nnforge raises for a user mistake."""


class ShapeError(NNForgeError, ValueError):
    """An array has the wrong shape."""


class TensorIndexError(ShapeError, IndexError):
    """An index does not fit a tensor (out of range, not integers, a mask of another shape).

    An IndexError too, so `except IndexError` code written for NumPy indexing still works.
    """


class DTypeError(NNForgeError, TypeError):
    """An array has the wrong dtype."""


class InPlaceError(DTypeError, AttributeError):
    """A torch in-place change (add_, mul_, `p -= ...` on a parameter) of a Tensor."""


class ConfigError(NNForgeError, ValueError):
    """A configuration (layer config, architecture, optimizer option) is invalid."""


class DeviceError(ConfigError):
    """A device was named that does not exist here, or cannot be used (no CuPy, no GPU)."""


class UnknownLayerError(ConfigError):
    """An architecture names a layer type that is not registered."""


class DataError(NNForgeError, ValueError):
    """Input data cannot be read or has the wrong content."""


class ModelFileError(NNForgeError, ValueError):
    """A model file is missing, damaged, tampered with, or of an unsupported version."""


class ResourceError(NNForgeError, MemoryError):
    """The machine ran out of memory for a request that is otherwise valid.

    A MemoryError too, so `except MemoryError` still catches it. `what` names the allocation
    ("running Gemm 'fc1'") and `amount` how much it asked for, human-readable.
    """

    what: str = ""
    amount: str = ""


#: what helps when a batch does not fit: said by every ResourceError of a run
BATCH_HINT = "use a smaller batch_size, or call predict() on fewer rows at a time"


def format_bytes(n: int) -> str:
    """n bytes as a short human-readable size: '512 B', '1.5 MiB', '4.00 TiB'."""
    if n < 1024:
        return f"{n} B"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    size, i = n / 1024, 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{size:.2f} {units[i]}" if size < 10 else f"{size:.1f} {units[i]}"


def requested_bytes(exc: BaseException) -> int | None:
    """The bytes a failed NumPy allocation asked for, when its MemoryError records them."""
    # NumPy's _ArrayMemoryError keeps the shape and dtype it could not allocate
    shape, itemsize = getattr(exc, "shape", None), getattr(getattr(exc, "dtype", None),
                                                            "itemsize", None)
    if not isinstance(shape, tuple) or not isinstance(itemsize, int):
        return None
    return math.prod(shape) * itemsize


def out_of_memory(what: str, exc: BaseException | None = None, nbytes: int | None = None,
                  hint: str = BATCH_HINT) -> ResourceError:
    """The ResourceError for an allocation (`what`) of nbytes (or of what exc says) that failed."""
    if nbytes is None and exc is not None:
        nbytes = requested_bytes(exc)
    if nbytes is not None:
        amount = format_bytes(nbytes)
    else:  # a MemoryError of another library (CuPy says its size in its message) or none
        amount = " ".join(str(exc).split()) if exc is not None and str(exc) else "unknown size"
    err = ResourceError(f"out of memory {what} ({amount}); {hint}")
    err.what, err.amount = what, amount
    return err


class BackwardError(NNForgeError, RuntimeError):
    """backward() was called where there is no graph to differentiate."""


class StateDictError(NNForgeError, KeyError):
    """A state dict does not match the module it is loaded into."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                high_open: bool = False) -> float:
    """value as a finite float in [low, high] (or [low, high)), else ConfigError."""
    # numbers.Real admits NumPy's scalars too; bool is an int but never meant as a number here
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"expected a number for {name}, found {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or (low is not None and v < low) or \
        (high is not None and (v >= high if high_open else v > high))
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = f"[{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"expected {name} in {rng}, found {value!r}")
    return v
