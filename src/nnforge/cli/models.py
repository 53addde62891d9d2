"""Models `nnforge train` builds: an MLP from flags, a small CNN preset, or an architecture."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError, NNForgeError, ShapeError

# fold_target_scaling is what `nnforge train` calls; it lives with the file's own folding
from ..io.target_scaling import final_linear, fold_target_scaling  # noqa: F401
from ..nn import Module


def _activation(name: str) -> Module:
    from .. import nn  # noqa: PLC0415

    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
             "leaky_relu": nn.LeakyReLU}
    if name not in table:
        raise ConfigError(f"expected an activation in {sorted(table)}, found {name!r}")
    return table[name]()


def build_mlp(sample_shape: tuple[int, ...], n_out: int, hidden: list[int], activation: str,
              dropout: float) -> Module:
    """Linear layers of the given widths with an activation (and dropout) between them."""
    from .. import nn  # noqa: PLC0415

    layers: list[Module] = [nn.Flatten()] if len(sample_shape) > 1 else []
    width = math.prod(sample_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) for the CNN: images as they are, square rows of pixels."""
    if len(sample_shape) == 3:
        return sample_shape  # type: ignore[return-value]
    if len(sample_shape) == 2:
        return (1, *sample_shape)  # type: ignore[return-value]
    side = math.isqrt(sample_shape[0])
    if side * side != sample_shape[0]:
        raise ConfigError(f"--model cnn (or a first Conv2d layer) needs images: a square "
                          f"number of features (like the 64 pixels of 8x8 digits) or (H, W) / "
                          f"(C, H, W) samples, found {sample_shape[0]} features")
    return (1, side, side)


def takes_images(model: Module) -> bool:
    """True when the model's first layer is a Conv2d: it takes (N, C, H, W) batches."""
    from ..nn import Conv2d, Sequential  # noqa: PLC0415

    while isinstance(model, Sequential) and len(model):
        model = model[0]
    return isinstance(model, Conv2d)


def build_cnn(image: tuple[int, int, int], n_out: int, activation: str, dropout: float) -> Module:
    """Two 3x3 conv + 2x2 max-pool stages and a dense head, sized for small images (8x8)."""
    from .. import nn  # noqa: PLC0415

    if not hasattr(nn, "Conv2d") or not hasattr(nn, "MaxPool2d"):
        raise ConfigError("--model cnn needs nnforge.nn.Conv2d and MaxPool2d, which this "
                          "installation lacks")
    c, h, w = image
    layers: list[Module] = []
    for c_out in (16, 32):
        if min(h, w) < 2:
            break
        layers += [nn.Conv2d(c, c_out, 3, padding=1), _activation(activation), nn.MaxPool2d(2)]
        c, h, w = c_out, h // 2, w // 2
    layers.append(nn.Flatten())
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(c * h * w, 64), _activation(activation), nn.Linear(64, n_out)]
    return nn.Sequential(*layers)


def build_from_architecture(arch: dict[str, Any]) -> Module:
    """A model from to_architecture()'s output (registered layer types only)."""
    from ..nn import layer_from_architecture  # noqa: PLC0415

    return layer_from_architecture(arch)


def check_model_fits(model: Module, sample_shape: tuple[int, ...], n_out: int, task: str) -> None:
    """Run one zero sample to check the model takes the data and returns n_out values."""
    from ..autograd import no_grad  # noqa: PLC0415

    model.eval()
    try:
        with no_grad():
            out = model(np.zeros((1, *sample_shape), dtype=np.float32))
    except (NNForgeError, ValueError, TypeError, IndexError) as exc:
        raise ShapeError(f"the architecture does not accept samples of shape {sample_shape}: "
                         f"{exc}") from None
    finally:
        model.train()
    got = tuple(getattr(out, "shape", ()))[1:]
    if got != (n_out,):
        raise ShapeError(f"a {task} model for this data must output {n_out} value(s) per "
                         f"sample, found output shape {got} from the architecture")


def last_linear(model: Module) -> Any:
    """The Linear layer (with a bias) that produces the model's output, or None: where
    `nnforge train` can fold standardized regression targets back (fold_target_scaling)."""
    found = final_linear(model)
    return found[1] if found is not None and found[1].bias is not None else None
