"""`Module` and `Parameter`: the user-facing building blocks (PyTorch's shape, Keras's configs)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .. import backend
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DTypeError, ShapeError, StateDictError, UnknownLayerError

#: The closed registry of layer classes that architectures may name.
LAYER_REGISTRY: dict[str, type[Module]] = {}


def register_layer(cls: type[Module]) -> type[Module]:
    """Class decorator: allow this layer type in saved architectures (explicit, never implicit)."""
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise ConfigError(f"register_layer expects a subclass of nnforge.nn.Module, found "
                          f"{cls!r:.80}")
    old = LAYER_REGISTRY.get(cls.__name__)
    # files name layers by class name alone: a second class under a taken name (a user's
    # "Linear") would silently rebuild every saved model with the wrong layer. Re-running the
    # same definition (a notebook cell, a reload) may replace the old class.
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (
            cls.__module__, cls.__qualname__):
        raise ConfigError(f"layer name {cls.__name__!r} is already registered by "
                          f"{old.__module__}.{old.__qualname__}; rename "
                          f"{cls.__module__}.{cls.__qualname__} (saved files name layers by "
                          f"class name)")
    LAYER_REGISTRY[cls.__name__] = cls
    return cls


def check_bool(layer: Any, name: str, value: Any) -> bool:
    """value as a bool, else ConfigError (bool("no") is True: a config must not rely on it)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{type(layer).__name__}: {name} must be True or False, found "
                          f"{value!r:.60}")
    return bool(value)


def check_int(layer: Any, name: str, value: Any) -> int:
    """value as an int, else ConfigError (int() would truncate 1.7 and accept True)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{type(layer).__name__}: {name} must be an integer, found "
                          f"{value!r:.60}")
    return int(value)


class Parameter(Tensor):
    """A tensor that is a trainable weight of a Module."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class IncompatibleKeys(NamedTuple):
    """load_state_dict's report, torch's named tuple: `missing, unexpected = ...` unpacks it.

    The dict this used to be still reads: report["missing_keys"], and == a dict of both.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):  # the old dict's keys
            if key not in self._fields:
                raise KeyError(f"{key!r}; load_state_dict reports {list(self._fields)}")
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):  # code that compared the old dict
            return dict(self._asdict()) == dict(other)
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"  # torch's wording
        return (f"IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")


class Module:
    """Base class of layers and models: holds parameters, buffers and sub-modules."""

    #: buffer names that load_state_dict ignores when this module does not hold them (a
    #: PyTorch state dict's BatchNorm num_batches_tracked), rather than calling them unexpected
    optional_state: tuple[str, ...] = ()

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
        if isinstance(value, Mapping) and any(isinstance(v, Module) for v in value.values()):
            raise ConfigError(f"{type(self).__name__}.{name}: a plain {type(value).__name__} of "
                              f"layers would hide their parameters from parameters(), the "
                              f"optimizer and saving; use nn.ModuleDict({{...}})")
        # as in PyTorch: a parameter or child slot takes another of its kind or None; anything
        # else would silently drop it from training and saving while forward still used it
        if value is not None and (name in self._parameters and not isinstance(value, Parameter)
                                  or name in self._modules and not isinstance(value, Module)):
            kind, fix = (("parameter", "nn.Parameter(...), None, or set .data") if name in
                         self._parameters else ("child module", "an nn.Module or None"))
            raise ConfigError(f"cannot assign {type(value).__name__} to {kind} "
                              f"{type(self).__name__}.{name}; expected {fix}")
        # a slot keeps its place when it takes another of its kind (as in torch): replacing
        # a Sequential's layer (or a ModuleList item) must not move it to the end
        if not isinstance(value, Parameter):
            self._parameters.pop(name, None)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, (Parameter, Module)):
            self._buffers.pop(name, None)  # a buffer keeps its name when its array is replaced
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for d in (self._parameters, self._modules, self._buffers):
            d.pop(name, None)  # else parameters() and state_dict() would still list it
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Register a non-trainable array saved with the weights (e.g. running statistics)."""
        self.__setattr__(name, value)
        self._buffers[name] = None  # the value lives on the attribute; this records the name

    # -- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True,
                      memo: set[int] | None = None) -> Iterator[tuple[str, Module]]:
        """(name, module) for this module and every descendant, depth first; a module held
        in two places comes once, under its first name (as torch), unless remove_duplicate
        is False."""
        if remove_duplicate:
            memo = set() if memo is None else memo
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name,
                                       remove_duplicate, memo)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, each once."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for each direct sub-module, each once (a module held twice comes
        under its first name, as torch)."""
        seen: set[int] = set()
        for name, m in self._modules.items():
            if id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        """Direct sub-modules, each once."""
        for _, m in self.named_children():
            yield m

    def get_submodule(self, target: str) -> Module:
        """The sub-module at a dotted path ("encoder.layers.0"); "" is this module."""
        if not isinstance(target, str):
            raise ConfigError(f"get_submodule expects a dotted name such as 'layers.0', found "
                              f"{type(target).__name__}")
        m, path = self, ""
        for atom in target.split(".") if target else ():
            child = m._modules.get(atom)
            if child is None:
                where = f"{type(m).__name__} at {path!r}" if path else type(m).__name__
                raise ConfigError(f"get_submodule({target!r}): {where} has no sub-module "
                                  f"{atom!r}; its sub-modules are {list(m._modules)}")
            m, path = child, f"{path}.{atom}" if path else atom
        return m

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) for every parameter, each once (unless remove_duplicate
        is False); recurse=False gives this module's own parameters only."""
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for pname, p in m._parameters.items():
                if remove_duplicate and id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        """Every parameter, each once, in registration order (recurse=False: this module's
        own only)."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix: str = "",
                      recurse: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """(dotted name, array) for every buffer (one set to None is skipped, as in PyTorch);
        a module held in two places lists its buffers once."""
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for bname in m._buffers:
                value = getattr(m, bname)
                if value is not None:
                    yield (f"{mname}.{bname}" if mname else bname), value

    def buffers(self, recurse: bool = True) -> list[np.ndarray]:
        """Every buffer array (running statistics), in registration order."""
        return [b for _, b in self.named_buffers(recurse=recurse)]

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; optimizers skip parameters without grads."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every sub-module, children before their parent (PyTorch's order), once
        each: a shared layer initialised twice would draw its weights twice."""
        self._apply_once(fn, set())
        return self

    def _apply_once(self, fn: Callable[[Module], Any], seen: set[int]) -> None:
        seen.add(id(self))
        for child in self._modules.values():
            if id(child) not in seen:
                child._apply_once(fn, seen)
        fn(self)

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

    def to(self, *args: Any, device: Any = None, dtype: Any = None) -> Module:
        """Move parameters and buffers to a device and/or cast them to a dtype, in place.

        `model.to("cuda")` (or "cuda:N", "cpu"), `model.to(np.float64)`, or both:
        `model.to("cuda", np.float64)`. A move keeps gradients (moved too) and is a no-op for
        arrays already there; a cast, as before, casts floating values and drops gradients.
        An optimizer made before a move follows it on its next step.
        """
        for a in args:
            if backend.is_device_name(a):
                if device is not None:
                    raise ConfigError(f"to() takes one device, found {device!r} and {a!r}")
                device = a
            elif dtype is not None:
                raise ConfigError(f"to() takes a device and a dtype, found {args!r}")
            else:
                dtype = a
        if device is None and dtype is None:
            raise ConfigError("to() needs a device ('cpu', 'cuda', 'cuda:N') or a dtype")
        if dtype is not None:
            try:
                dtype = np.dtype(dtype)
            except TypeError:  # "tpu", "cuda:x", 3: neither
                raise backend.DeviceError(f"expected a device 'cpu', 'cuda' or 'cuda:N' or a "
                                          f"dtype, found {dtype!r}") from None
        if device is not None:
            kind = backend.parse_device(device)[0]  # DeviceError for an unknown name
            if kind == "cuda":
                backend.cupy_module(device)  # no CuPy or no GPU: fail before moving anything
        for m in self.modules():
            for p in m._parameters.values():
                data = p.data
                if dtype is not None:
                    data = data.astype(dtype)
                    p.grad = None
                if device is not None:
                    data = backend.to_device(data, device)
                    if p.grad is not None:
                        p.grad = backend.to_device(p.grad, device)
                p.data = data
            for b in m._buffers:
                arr = getattr(m, b)
                if arr is None:
                    continue
                if dtype is not None and backend.is_float_dtype(arr.dtype):
                    arr = arr.astype(dtype)
                if device is not None:
                    arr = backend.to_device(arr, device)
                object.__setattr__(m, b, arr)
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

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into parameters and buffers; (missing_keys, unexpected_keys), as torch."""
        if not isinstance(state, Mapping):
            raise StateDictError(f"expected a state dict (a mapping of name -> array), found "
                                 f"{type(state).__name__}")
        targets, aliases, optional = self._state_targets()
        for alias, key in aliases.items():
            if key not in state and alias in state:
                state = {**state, key: state[alias]}
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets and k not in aliases
                      and k not in optional]
        if strict and (missing or unexpected):
            raise StateDictError(f"state dict does not match the model: missing keys {missing}, "
                                 f"unexpected keys {unexpected}")
        values: dict[str, np.ndarray] = {}
        for key, (m, attr, is_param) in targets.items():
            if key not in state:
                continue
            value = state[key]
            # a Tensor (a model's own parameter) by its array: np.asarray would make objects
            value = np.asarray(backend.to_numpy(value.data if isinstance(value, Tensor) else value))
            current = getattr(m, attr)
            cur_arr = current.data if is_param else current
            if value.shape != cur_arr.shape:
                raise ShapeError(f"weight {key!r} has shape {value.shape} in the state dict, "
                                 f"the model expects {cur_arr.shape}")
            if value.dtype.kind not in "biuf":  # checked before any copy: all or nothing
                raise StateDictError(f"weight {key!r} has dtype {value.dtype} in the state "
                                     f"dict, expected numbers")
            values[key] = value
        for key, value in values.items():
            m, attr, is_param = targets[key]
            if is_param:
                p = getattr(m, attr)
                # copy into the existing array so optimizers holding views keep seeing it
                value = value.astype(p.data.dtype, copy=False)
                p.data[...] = (value if type(p.data) is np.ndarray
                               else backend.same_device_as(value, p.data))
            else:
                cur = getattr(m, attr)
                value = value.astype(cur.dtype, copy=True)
                object.__setattr__(m, attr, value if type(cur) is np.ndarray
                                   else backend.same_device_as(value, cur))
        return IncompatibleKeys(missing, unexpected)

    def _state_targets(self) -> tuple[dict[str, tuple[Module, str, bool]], dict[str, str],
                                      set[str]]:
        """What load_state_dict fills: {name: (module, attribute, is_parameter)}, the later
        names of shared parameters and buffers -> their first name, and the optional names."""
        targets: dict[str, tuple[Module, str, bool]] = {}
        aliases: dict[str, str] = {}
        first: dict[Any, str] = {}
        optional: set[str] = set()
        # every name of a shared layer: state_dict() lists its arrays once, under the first
        # name; PyTorch's lists every name: accept either
        for mname, m in self.named_modules(remove_duplicate=False):
            optional.update(f"{mname}.{o}" if mname else o for o in m.optional_state)
            arrays = [(n, id(p), True) for n, p in m._parameters.items()]
            arrays += [(n, (id(m), n), False) for n in m._buffers if getattr(m, n) is not None]
            for name, ident, is_param in arrays:
                key = f"{mname}.{name}" if mname else name
                if first.setdefault(ident, key) != key:
                    aliases[key] = first[ident]
                else:
                    targets[key] = (m, name, is_param)
        return targets, aliases, optional

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
        """Wrap array input as a Tensor in the module's dtype (float64 data would halve speed),
        on the module's device (NumPy input to a model on a GPU is sent there).

        Integer and bool input, array or Tensor (which cannot require gradients), is data:
        it becomes the module's float dtype, as in Keras, so a float layer never computes in
        the integers (Sigmoid gave int zeros, Dropout truncated its scale). A module whose
        first layer declares an integer `input_dtype` (an imported graph taking int64 ids)
        gets it unchanged: float32 would round ids past 2**24.
        """
        if isinstance(x, Tensor):
            if x.dtype.kind in "biu" and not x.requires_grad and not self._takes_integers():
                return Tensor(self._float_input(x.data), _keep=True)
            return x
        on_gpu = backend.is_device_array(x)
        if not on_gpu and not isinstance(x, (np.ndarray, list, tuple)):
            return x
        arr = x if on_gpu else np.asarray(x)
        if arr.dtype.kind not in "biuf":  # strings, objects: NumPy's own error would not say
            raise DTypeError(f"{type(self).__name__} expected numeric input (floats, ints or "
                             f"bools), found an array of dtype {arr.dtype} and shape {arr.shape}")
        if arr.dtype.kind in "biu" and self._takes_integers():
            return Tensor(arr, _keep=True)
        return Tensor(self._float_input(arr), _keep=True)

    def _float_input(self, arr: Any) -> Any:
        """arr in the dtype and on the device of the module's weights (ints and bools in the
        default float dtype for a module without weights)."""
        params = self.parameters()
        if params:
            ref = params[0].data
            arr = arr.astype(ref.dtype, copy=False)
            if type(arr) is not type(ref):
                arr = backend.same_device_as(arr, ref)
        elif arr.dtype.kind in "iub":
            arr = arr.astype(backend.DEFAULT_DTYPE)
        return arr

    def _takes_integers(self) -> bool:
        """Whether the module, or the first layer of a Sequential, declares an integer
        `input_dtype` (see onnx/graph_module.py): its input is then passed on as is."""
        first: Any = self
        while type(first).__name__ == "Sequential" and first._modules:
            first = next(iter(first._modules.values()))
        own = getattr(first, "input_dtype", None)
        return isinstance(own, str) and own.startswith(("int", "uint", "bool"))

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
        # the file names a class but never says where it lives (nothing is imported from a
        # file), so the user must import the module that registers it
        raise UnknownLayerError(f"unknown layer type {name!r}; registered types are "
                                f"{sorted(LAYER_REGISTRY)}; a custom layer loads once the "
                                f"module defining it (with @nn.register_layer) is imported")
    config = arch.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"config of {name} must be an object, found {type(config).__name__}")
    return cls.from_config(config)
