"""`Module` and `Parameter`: the user-facing building blocks (PyTorch's shape, Keras's configs)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np

from .. import backend
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, StateDictError, UnknownLayerError

#: The closed registry of layer classes that architectures may name.
LAYER_REGISTRY: dict[str, type[Module]] = {}


def register_layer(cls: type[Module]) -> type[Module]:
    """Class decorator: allow this layer type in saved architectures (explicit, never implicit)."""
    LAYER_REGISTRY[cls.__name__] = cls
    return cls


class Parameter(Tensor):
    """A tensor that is a trainable weight of a Module."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of layers and models: holds parameters, buffers and sub-modules."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise ConfigError(f"{type(self).__name__}.__init__ must call super().__init__() "
                              f"before assigning attributes")
        if isinstance(value, (list, tuple)) and any(isinstance(v, Module) for v in value):
            raise ConfigError(f"{type(self).__name__}.{name}: a plain {type(value).__name__} of "
                              f"layers would hide their parameters from parameters(), the "
                              f"optimizer and saving; use nn.ModuleList([...]) or "
                              f"nn.Sequential(...)")
        for d in (self._parameters, self._modules):
            d.pop(name, None)
        if isinstance(value, (Parameter, Module)):
            self._buffers.pop(name, None)  # a buffer keeps its name when its array is replaced
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Register a non-trainable array saved with the weights (e.g. running statistics)."""
        self.__setattr__(name, value)
        self._buffers[name] = None  # the value lives on the attribute; this records the name

    # -- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) for this module and every descendant, depth first."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant."""
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        """Direct sub-modules."""
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) for every parameter, each once."""
        seen: set[int] = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> list[Parameter]:
        """Every parameter, each once, in registration order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        """(dotted name, array) for every buffer."""
        for mname, m in self.named_modules():
            for bname in m._buffers:
                yield (f"{mname}.{bname}" if mname else bname), getattr(m, bname)

    def buffers(self) -> list[np.ndarray]:
        """Every buffer array (running statistics), in registration order."""
        return [b for _, b in self.named_buffers()]

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; optimizers skip parameters without grads."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every sub-module, children before their parent (PyTorch's order)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def num_parameters(self) -> int:
        """Total number of trainable values."""
        return int(sum(p.size for p in self.parameters()))

    # -- modes -----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Switch this module and its descendants to training (or eval) mode."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Switch to evaluation mode (dropout off, batch-norm uses running statistics)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype: Any) -> Module:
        """Cast floating parameters and buffers to dtype in place."""
        dtype = np.dtype(dtype)
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dtype)
                p.grad = None
            for b in m._buffers:
                arr = getattr(m, b)
                if backend.is_float_dtype(arr.dtype):
                    object.__setattr__(m, b, arr.astype(dtype))
        return self

    def double(self) -> Module:
        """Cast to float64 (for gradient checks)."""
        return self.to(np.float64)

    def float(self) -> Module:
        """Cast to float32."""
        return self.to(np.float32)

    @property
    def dtype(self) -> Any:
        """dtype of the first parameter (float32 when there is none)."""
        for p in self.parameters():
            return p.dtype
        return np.dtype(backend.DEFAULT_DTYPE)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name."""
        sd: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, p in self.named_parameters():
            sd[name] = backend.to_numpy(p.data).copy()
        for name, b in self.named_buffers():
            sd[name] = backend.to_numpy(b).copy()
        return sd

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, list[str]]:
        """Copy arrays into parameters and buffers; report missing and unexpected keys."""
        targets: dict[str, tuple[Module, str, bool]] = {}
        for mname, m in self.named_modules():
            for pname in m._parameters:
                targets[f"{mname}.{pname}" if mname else pname] = (m, pname, True)
            for bname in m._buffers:
                targets[f"{mname}.{bname}" if mname else bname] = (m, bname, False)
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise StateDictError(f"state dict does not match the model: missing keys {missing}, "
                                 f"unexpected keys {unexpected}")
        for key, (m, attr, is_param) in targets.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            current = getattr(m, attr)
            cur_arr = current.data if is_param else current
            if value.shape != cur_arr.shape:
                raise ShapeError(f"weight {key!r} has shape {value.shape} in the state dict, "
                                 f"the model expects {cur_arr.shape}")
        for key, (m, attr, is_param) in targets.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            if is_param:
                p = getattr(m, attr)
                # copy into the existing array so optimizers holding views keep seeing it
                p.data[...] = value.astype(p.data.dtype, copy=False)
            else:
                cur = getattr(m, attr)
                object.__setattr__(m, attr, value.astype(cur.dtype, copy=True))
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Module:
        """Build the layer from get_config()'s output."""
        try:
            return cls(**config)
        except TypeError as exc:
            raise ConfigError(f"bad config for {cls.__name__}: {exc}") from None

    def to_architecture(self) -> dict[str, Any]:
        """{"type": ..., "config": ...} describing this module and its children."""
        if type(self).__name__ not in LAYER_REGISTRY:
            raise ConfigError(f"layer type {type(self).__name__} is not registered; decorate it "
                              f"with @nnforge.nn.register_layer to save it")
        return {"type": type(self).__name__, "config": self.get_config()}

    # -- calling ---------------------------------------------------------------------------
    def forward(self, *args: Any) -> Any:  # pragma: no cover - abstract
        """Compute the output (subclasses implement this)."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = tuple(self._as_input(a) for a in args)
        return self.forward(*args, **kwargs)

    def _as_input(self, x: Any) -> Any:
        """Wrap NumPy input as a Tensor in the module's dtype (float64 data would halve speed)."""
        if isinstance(x, Tensor) or not isinstance(x, (np.ndarray, list, tuple)):
            return x
        arr = np.asarray(x)
        params = self.parameters()
        if params:
            arr = arr.astype(params[0].dtype, copy=False)
        elif arr.dtype.kind in "iub":
            arr = arr.astype(backend.DEFAULT_DTYPE)
        return Tensor(arr, _keep=True)

    def extra_repr(self) -> str:
        """One line of layer settings shown by repr()."""
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if not isinstance(v, (list, dict)))

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def layer_from_architecture(arch: Any) -> Module:
    """Rebuild a module from to_architecture()'s output, using only registered layer types."""
    if not isinstance(arch, dict) or "type" not in arch:
        raise ConfigError(f"an architecture entry must be an object with a 'type', "
                          f"found {arch!r:.80}")
    name = arch["type"]
    cls = LAYER_REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownLayerError(f"unknown layer type {name!r}; registered types are "
                                f"{sorted(LAYER_REGISTRY)}")
    config = arch.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"config of {name} must be an object, found {type(config).__name__}")
    return cls.from_config(config)
