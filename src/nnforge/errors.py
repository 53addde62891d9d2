"""The exception family for user mistakes: messages say what was expected and what was found."""

from __future__ import annotations

import math
import numbers
from typing import Any


class NNForgeError(Exception):
    """Base class of every error nnforge raises for a user mistake."""


class ShapeError(NNForgeError, ValueError):
    """An array has the wrong shape."""


class DTypeError(NNForgeError, TypeError):
    """An array has the wrong dtype."""


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
