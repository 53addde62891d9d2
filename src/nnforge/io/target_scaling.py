"""Fold the inverse of a target scaler into a regression model's final Linear layer.

A regression model trained on scaled targets (a Standardizer or MinMaxScaler fitted on y)
predicts in scaled units. When its output comes straight from a Linear layer, undoing the
scaling is one more affine map, y = (Wx + b) * scale + shift, which the layer absorbs exactly:
W' = W * scale[:, None], b' = b * scale + shift. The saved model then predicts in the data's
units everywhere it runs (InferenceSession, the server, an ONNX export) with no extra step.
`nf.save(..., target_scaler=)` folds into the file's copy of the weights; `nnforge train`
folds into its own model in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import same_device_as, to_numpy
from ..errors import ConfigError
from ..nn import Dropout, Flatten, Identity, Linear, Module, Sequential

#: layers after the final Linear that leave its values as they are (at inference)
PASS_THROUGH = (Identity, Dropout, Flatten)


def final_layer(model: Module, prefix: str = "") -> tuple[str, Module] | None:
    """(state-dict name, layer) of the last layer that computes values, looking into nested
    Sequentials and past trailing Identity/Dropout/Flatten; None when nothing computes."""
    if isinstance(model, PASS_THROUGH):
        return None
    if not isinstance(model, Sequential):
        return prefix, model
    for key in reversed(list(model._modules)):
        found = final_layer(model._modules[key], f"{prefix}.{key}" if prefix else key)
        if found is not None:
            return found
    return None


def final_linear(model: Module) -> tuple[str, Linear] | None:
    """(name, layer) of the Linear that produces the model's output, else None."""
    found = final_layer(model)
    return found if found is not None and isinstance(found[1], Linear) else None  # type: ignore[return-value]


def folded(weight: Any, bias: Any, scale: np.ndarray, shift: np.ndarray) -> tuple[Any, Any]:
    """New (W * scale[:, None], b * scale + shift), computed in float64, in the layer's dtype."""
    if scale.shape != (weight.shape[0],) or shift.shape != scale.shape:
        raise ConfigError(f"the target scaling has {scale.size} value(s) per sample, the final "
                          f"Linear layer outputs {weight.shape[0]}")
    w = (to_numpy(weight).astype(np.float64) * scale[:, None]).astype(weight.dtype)
    b = (to_numpy(bias).astype(np.float64) * scale + shift).astype(bias.dtype)
    return w, b


def fold_target_scaling(layer: Any, mean: np.ndarray, scale: np.ndarray) -> None:
    """Make a Linear output y*scale + mean in place, undoing standardized training targets."""
    w, b = folded(layer.weight.data, layer.bias.data, np.asarray(scale, np.float64),
                  np.asarray(mean, np.float64))
    # in place: an optimizer's flat buffer keeps holding the layer's arrays
    layer.weight.data[...] = same_device_as(w, layer.weight.data)
    layer.bias.data[...] = same_device_as(b, layer.bias.data)


def scaler_affine(scaler: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 with scaler.inverse_transform(y) == y * scale + shift."""
    from ..data.preprocessing import MinMaxScaler, Standardizer  # noqa: PLC0415 - data imports io

    if not isinstance(scaler, (Standardizer, MinMaxScaler)):
        raise ConfigError(f"target_scaler must be a fitted nnforge.data Standardizer or "
                          f"MinMaxScaler, found {type(scaler).__name__}")
    if not scaler.fitted:
        raise ConfigError(f"target_scaler must be fitted (call {type(scaler).__name__}"
                          f"().fit(y_train) first), found an unfitted one")
    if len(scaler.sample_shape or ()) != 1:
        raise ConfigError(f"target_scaler must be fitted on targets of shape (samples, "
                          f"outputs), found samples of shape {scaler.sample_shape}")
    if isinstance(scaler, Standardizer):
        return np.asarray(scaler.scale, np.float64), np.asarray(scaler.mean, np.float64)
    # transform is x * _scale + _offset; its inverse is x / _scale - _offset / _scale
    scale, offset = np.asarray(scaler._scale, np.float64), np.asarray(scaler._offset, np.float64)
    return 1.0 / scale, -offset / scale


def folded_weights(model: Module, scaler: Any, output_shape: list[Any]
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The final Linear's weights with the scaler's inverse folded in (by state-dict name;
    the model itself is left alone) and the manifest's record of it."""
    scale, shift = scaler_affine(scaler)
    found = final_linear(model)
    if found is None:
        last = final_layer(model)
        what = "no layer that computes values" if last is None else (
            f"{type(last[1]).__name__} (layer {last[0]!r})" if last[0] else type(last[1]).__name__)
        raise ConfigError(f"target_scaler needs a model that ends in a Linear layer (optionally "
                          f"followed by Identity, Dropout or Flatten) to fold the scaling into, "
                          f"found {what}; apply scaler.inverse_transform to the predictions "
                          f"instead")
    name, layer = found
    if layer.bias is None:
        raise ConfigError(f"target_scaler needs the final Linear layer ({name or 'the model'}) "
                          f"to have a bias to add the targets' offset to, found bias=False")
    width = output_shape[1:]
    if width != [layer.out_features] or scale.shape != (layer.out_features,):
        raise ConfigError(f"target_scaler was fitted on {scale.size} target(s) per sample; "
                          f"expected the model's output ({tuple(width)}) to match it and "
                          f"its final Linear's {layer.out_features} outputs")
    w, b = folded(layer.weight.data, layer.bias.data, scale, shift)
    prefix = f"{name}." if name else ""
    record = {"folded_into": name or "model", "scaler": scaler.get_config()}
    return {f"{prefix}weight": w, f"{prefix}bias": b}, record
