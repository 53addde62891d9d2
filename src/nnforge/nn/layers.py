"""Dense, activation, dropout and reshaping layers, Sequential and ModuleList."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor, pick_axis
from ..errors import ConfigError, ShapeError, check_float
from ..ops import activation as A
from ..ops.linear import linear
from ..ops.math import Mul
from ..ops.shape import flatten
from ..random import get_rng
from .conv_layers import Conv2d, MaxPool2d
from .init import get_initializer, skipping
from .module import (
    Module,
    Parameter,
    check_bool,
    check_int,
    layer_from_architecture,
    register_layer,
)


def _conv_relu_pool(layers: list[Module], i: int, x: Any) -> tuple[Any, int] | None:
    """Conv2d [ReLU] MaxPool2d at layers[i:] as one op (ops.conv_pool.ConvMaxPool), then the
    ReLU: the same output and input gradient (parameter gradients to rounding), the pooling on
    contiguous slabs. (output, next index) or None.

    Pooling before the ReLU is exact: see Sequential.forward."""
    relu = i + 2 < len(layers) and type(layers[i + 1]) is ReLU
    k = i + 1 + relu
    if k >= len(layers) or type(layers[k]) is not MaxPool2d:
        return None
    y = layers[i].forward_pooled(x, layers[k])
    if y is None:
        return None
    return (layers[i + 1](y) if relu else y), k + 1


def _check_child_name(owner: Module, key: Any) -> str:
    """key as the name of a new child of owner (a ModuleDict key, a Sequential's OrderedDict
    name), else ConfigError: state dicts join names with '.', and a name that is already an
    attribute ("forward", "training") would hide it."""
    kind = type(owner).__name__
    if not isinstance(key, str) or not key or "." in key:
        raise ConfigError(f"{kind} names must be non-empty strings without '.', found "
                          f"{key!r:.60}")
    if key not in owner._modules and hasattr(owner, key):
        raise ConfigError(f"{kind} name {key!r} would hide the attribute of that name; "
                          f"rename the layer")
    return key


def _check_module(owner: Module, layer: Any, method: str = "", where: str = "") -> Module:
    """layer, if it is a Module, else ConfigError naming owner's method and what was found."""
    if not isinstance(layer, Module):
        raise ConfigError(f"{type(owner).__name__}{method} expects a Module, found "
                          f"{type(layer).__name__}{where}")
    return layer


class _Container(Module):
    """Layers held in order under the names "0", "1", ...: Sequential and ModuleList."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            setattr(self, str(i), _check_module(self, layer, where=f" at position {i}"))

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int | slice) -> Any:
        items = list(self._modules.values())
        return type(self)(*items[i]) if isinstance(i, slice) else items[i]

    def append(self, layer: Module) -> Any:
        """Add a layer at the end."""
        name = str(len(self._modules))
        _check_module(self, layer, ".append")
        if name in self._modules:  # a Sequential named from an OrderedDict may hold "2"
            raise ConfigError(f"{type(self).__name__}.append would name the new layer {name!r}, "
                              f"which names a layer already; build it from an OrderedDict "
                              f"with the names you want")
        setattr(self, name, layer)
        return self

    def _default_names(self) -> bool:
        return list(self._modules) == [str(i) for i in range(len(self._modules))]

    def get_config(self) -> dict[str, Any]:
        return {"layers": [m.to_architecture() for m in self._modules.values()]}

    @classmethod
    def _config_layers(cls, config: dict[str, Any], keys: set[str]) -> list[Module]:
        """The layers of a config that may hold only `keys`, rebuilt."""
        layers = config.get("layers")
        if set(config) - keys:  # as every other layer's from_config refuses unknown keys
            allowed = " and ".join(repr(k) for k in sorted(keys))
            raise ConfigError(f"{cls.__name__} config takes only {allowed}, found "
                              f"{sorted(set(config) - keys)}")
        if not isinstance(layers, list):
            raise ConfigError(f"{cls.__name__} config needs a 'layers' list, found "
                              f"{layers!r:.60}")
        return [layer_from_architecture(a) for a in layers]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(*cls._config_layers(config, {"layers"}))


@register_layer
class Sequential(_Container):
    """Layers applied one after another: Sequential(a, b, ...) names them "0", "1", ...;
    Sequential(OrderedDict([("fc", a), ...])) by the dict's keys, as torch does."""

    def __init__(self, *layers: Any) -> None:
        named = len(layers) == 1 and isinstance(layers[0], Mapping)
        super().__init__(*(() if named else layers))
        if named:
            for key, layer in layers[0].items():
                _check_module(self, layer, where=f" for name {key!r}")
                setattr(self, _check_child_name(self, key), layer)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice) and not self._default_names():  # names kept, as torch
            return type(self)(dict(list(self._modules.items())[i]))
        return super().__getitem__(i)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if not self._default_names():  # written only then: files of plain Sequentials as before
            config["names"] = list(self._modules)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        layers = cls._config_layers(config, {"layers", "names"})
        names = config.get("names")
        if names is None:
            return cls(*layers)
        if not isinstance(names, list) or len(names) != len(layers):
            raise ConfigError(f"Sequential config 'names' must be a list of {len(layers)} "
                              f"layer names, found {names!r:.80}")
        if len(set(map(str, names))) != len(names):
            raise ConfigError(f"Sequential config 'names' repeats a name: {names!r:.80}")
        return cls(dict(zip(names, layers)))

    def forward(self, x: Any) -> Any:
        layers = list(self._modules.values())
        i, n = 0, len(layers)
        while i < n:
            layer = layers[i]
            fused = _conv_relu_pool(layers, i, x) if type(layer) is Conv2d else None
            if fused is not None:
                x, i = fused
            elif i + 1 < n and type(layer) is ReLU and type(layers[i + 1]) is MaxPool2d:
                # ReLU then max pooling is run as pooling then ReLU, which touches a quarter of
                # the values (for 2x2 windows). The two orders agree exactly, gradients
                # included: a window whose maximum is positive sends its gradient to the same
                # first maximal element either way, one whose maximum is not sends none.
                x = layer(layers[i + 1](x))
                i += 2
            elif i + 1 < n and type(layer) is Linear and type(layers[i + 1]) is ReLU:
                # one fused op (ops.linear.LinearRelu): same numbers, less bookkeeping
                x = linear(layer._as_input(x), layer.weight, layer.bias, relu=True)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


@register_layer
class ModuleList(_Container):
    """A list of layers whose parameters count as the owner's: index, iterate, append, extend,
    insert and assign to it, and call the layers from your own forward (a plain Python list
    would hide them)."""

    def forward(self, *args: Any) -> Any:
        raise ConfigError("a ModuleList is not a layer to call: iterate over it in your "
                          "module's forward (or use nn.Sequential)")

    def _index(self, i: Any, what: str) -> int:
        """i as a position in [0, len), negative counting from the end, else an error."""
        n = len(self._modules)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ConfigError(f"ModuleList {what} takes an integer index, found "
                              f"{type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"ModuleList index {i} is out of range for {n} layers")
        return int(i) % n

    def _reset(self, layers: list[Module]) -> None:
        """Hold exactly these layers, renamed "0", "1", ... in order."""
        for name in list(self._modules):
            delattr(self, name)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __setitem__(self, i: int, layer: Module) -> None:
        setattr(self, str(self._index(i, "assignment")),
                _check_module(self, layer, "[...] ="))

    def __delitem__(self, i: int | slice) -> None:
        layers = list(self._modules.values())
        del layers[i if isinstance(i, slice) else self._index(i, "deletion")]
        self._reset(layers)

    def insert(self, index: int, layer: Module) -> None:
        """Insert a layer before position index (as list.insert; later layers renumbered)."""
        layers = list(self._modules.values())
        layers.insert(index, _check_module(self, layer, ".insert"))
        self._reset(layers)

    def extend(self, layers: Any) -> ModuleList:
        """Append every layer of an iterable."""
        if isinstance(layers, Module) and not isinstance(layers, _Container) \
                or not hasattr(layers, "__iter__"):
            raise ConfigError(f"ModuleList.extend expects an iterable of Modules, found "
                              f"{type(layers).__name__}")
        new = [_check_module(self, m, ".extend", f" at position {i}")
               for i, m in enumerate(layers)]
        for layer in new:  # checked first: all or nothing
            self.append(layer)
        return self

    def __add__(self, other: Any) -> ModuleList:
        return ModuleList(list(self._modules.values())).extend(other)

    def __iadd__(self, other: Any) -> ModuleList:
        return self.extend(other)


@register_layer
class ModuleDict(Module):
    """Layers by name whose parameters count as the owner's (a plain dict would hide them):
    each key is the child's name, so `self.layers = ModuleDict({"a": ...})` saves its weights
    as layers.a.weight. Call the layers from your own forward."""

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(key, str) or not key or "." in key:
            raise ConfigError(f"ModuleDict keys must be non-empty strings without '.', found "
                              f"{key!r:.60}")
        if not isinstance(module, Module):
            raise ConfigError(f"ModuleDict expects Module values, found {type(module).__name__} "
                              f"for key {key!r}")
        if key not in self._modules and hasattr(self, key):  # "forward", "training", "to"...
            raise ConfigError(f"ModuleDict key {key!r} would hide the attribute of that name; "
                              f"rename the layer")
        setattr(self, key, module)

    def __getitem__(self, key: str) -> Module:
        try:
            return self._modules[key]
        except KeyError:
            raise KeyError(f"ModuleDict has no layer {key!r}; it has {list(self._modules)}") \
                from None

    def __delitem__(self, key: str) -> None:
        self[key]  # noqa: B018 - the KeyError naming the keys
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> Any:
        """The layer names, in insertion order."""
        return self._modules.keys()

    def values(self) -> Any:
        """The layers, in insertion order."""
        return self._modules.values()

    def items(self) -> Any:
        """(name, layer) pairs, in insertion order."""
        return self._modules.items()

    def update(self, modules: Mapping[str, Module]) -> None:
        """Add or replace layers by name."""
        if not isinstance(modules, Mapping):
            raise ConfigError(f"ModuleDict expects a mapping of name -> Module, found "
                              f"{type(modules).__name__}")
        for key, module in modules.items():
            self[key] = module

    def forward(self, *args: Any) -> Any:
        raise ConfigError("a ModuleDict is not a layer to call: pick its layers by name in "
                          "your module's forward")

    def get_config(self) -> dict[str, Any]:
        return {"layers": {k: m.to_architecture() for k, m in self._modules.items()}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        layers = config.get("layers")
        if set(config) != {"layers"} or not isinstance(layers, dict):
            raise ConfigError(f"{cls.__name__} config takes only a 'layers' object, found "
                              f"{config!r:.80}")
        return cls({k: layer_from_architecture(a) for k, a in layers.items()})


@register_layer
class Linear(Module):
    """Fully connected layer y = x @ W.T + b, W of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "he") -> None:
        super().__init__()
        _check_positive(self, in_features=in_features, out_features=out_features)
        self.in_features, self.out_features, self.init = int(in_features), int(out_features), init
        # (out, in) as PyTorch has it, stored column-major: x @ W.T and its weight gradient
        # x.T @ gy are then plain row-major products, 10-15% faster in OpenBLAS than the
        # transposed forms (the optimizer keeps the layout; state dicts and files are row-major)
        shape = (self.out_features, self.in_features)
        init_fn = get_initializer(init)  # checks the name even when skipping
        self.weight = Parameter(np.empty(shape, backend.DEFAULT_DTYPE, order="F") if skipping()
                                else np.asfortranarray(init_fn(shape)))
        bias = check_bool(self, "bias", bias)
        self.bias = Parameter(np.zeros(self.out_features, np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)

    def get_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "init": self.init}


def _check_positive(layer: Module, **values: Any) -> None:
    for k, v in values.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{type(layer).__name__}: {k} must be a positive integer, "
                              f"found {v!r}")


class _Activation(Module):
    fn: Any = None

    def forward(self, x: Tensor) -> Tensor:
        return type(self).fn(x)


@register_layer
class ReLU(_Activation):
    """max(x, 0)."""

    fn = staticmethod(A.relu)


@register_layer
class Sigmoid(_Activation):
    """Logistic sigmoid."""

    fn = staticmethod(A.sigmoid)


@register_layer
class Tanh(_Activation):
    """Hyperbolic tangent."""

    fn = staticmethod(A.tanh)


@register_layer
class GELU(Module):
    """GELU: exact (erf) by default, or PyTorch's tanh approximation (approximate="tanh")."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in A.GELU_APPROXIMATIONS:
            raise ConfigError(f"GELU: approximate must be one of {list(A.GELU_APPROXIMATIONS)}, "
                              f"found {approximate!r:.60}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return A.gelu(x, self.approximate)

    def get_config(self) -> dict[str, Any]:
        # written only when set, so files of exact GELUs stay as they were
        return {"approximate": self.approximate} if self.approximate != "none" else {}


@register_layer
class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_float("LeakyReLU negative_slope", negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return A.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


@register_layer
class SiLU(_Activation):
    """x * sigmoid(x) (also called swish)."""

    fn = staticmethod(A.silu)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return A.Silu(), {}


@register_layer
class ELU(Module):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_float("ELU alpha", alpha)

    def forward(self, x: Tensor) -> Tensor:
        return A.elu(x, self.alpha)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return A.Elu(self.alpha), {}

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


@register_layer
class Softplus(Module):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (as in torch)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_float("Softplus beta", beta)
        if self.beta == 0.0:
            raise ConfigError(f"Softplus: expected a nonzero beta, found {beta!r}")
        self.threshold = check_float("Softplus threshold", threshold)

    def forward(self, x: Tensor) -> Tensor:
        return A.softplus(x, self.beta, self.threshold)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return A.Softplus(self.beta, self.threshold), {}

    def get_config(self) -> dict[str, Any]:
        return {"beta": self.beta, "threshold": self.threshold}


@register_layer
class Softmax(Module):
    """Softmax along an axis."""

    def __init__(self, axis: int | None = None, *, dim: int | None = None) -> None:
        super().__init__()
        axis = pick_axis(axis, dim, type(self).__name__)  # dim=: torch's name
        self.axis = check_int(self, "axis", -1 if axis is None else axis)

    def forward(self, x: Tensor) -> Tensor:
        self._check_axis(x)
        return A.softmax(x, self.axis)

    def _check_axis(self, x: Tensor) -> None:
        # NumPy's AxisError would escape the nnforge.errors family
        if not -x.ndim <= self.axis < x.ndim:
            raise ShapeError(f"{type(self).__name__} expects axis in [{-x.ndim}, {x.ndim - 1}] "
                             f"for input of shape {tuple(x.shape)}, found {self.axis}")

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


@register_layer
class LogSoftmax(Softmax):
    """Log-softmax along an axis."""

    def forward(self, x: Tensor) -> Tensor:
        self._check_axis(x)
        return A.log_softmax(x, self.axis)


@register_layer
class Identity(Module):
    """Returns its input."""

    def forward(self, x: Tensor) -> Tensor:
        return x


@register_layer
class Flatten(Module):
    """Merge the dimensions start_dim..end_dim (every one from start_dim on by default)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = check_int(self, "start_dim", start_dim)
        self.end_dim = check_int(self, "end_dim", end_dim)

    def forward(self, x: Tensor) -> Tensor:
        return flatten(x, self.start_dim, self.end_dim)

    def get_config(self) -> dict[str, Any]:
        # end_dim written only when set, so files of plain Flattens stay as they were
        config: dict[str, Any] = {"start_dim": self.start_dim}
        if self.end_dim != -1:
            config["end_dim"] = self.end_dim
        return config


@register_layer
class Dropout(Module):
    """Zero elements with probability p in training and scale the rest by 1/(1-p).

    The mask is drawn on the host from nnforge's seeded generator on every device, then sent
    to the GPU (one byte per element) for a model there: so a seed gives the same masks, and
    the same training, on the CPU and on a GPU, and checkpoints hold one generator state.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_float("Dropout p", p, 0.0, 1.0)  # 1.0 zeros everything, as in torch

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = get_rng().random(x.shape, dtype=np.float32) >= self.p  # none kept for p = 1
        if backend.is_device_array(x.data):
            keep = backend.same_device_as(keep, x.data)
        scale = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0
        mask = keep.astype(x.dtype) * x.dtype.type(scale)
        return Mul.apply(x, Tensor(mask, _keep=True))

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}
