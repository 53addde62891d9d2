"""The exception family for user mistakes: messages say what was expected and what was found."""

from __future__ import annotations


class NNForgeError(Exception):
    """Base class of every error nnforge raises for a user mistake."""


class ShapeError(NNForgeError, ValueError):
    """An array has the wrong shape."""


class DTypeError(NNForgeError, TypeError):
    """An array has the wrong dtype."""


class ConfigError(NNForgeError, ValueError):
    """A configuration (layer config, architecture, optimizer option) is invalid."""


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
