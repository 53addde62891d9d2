"""Loss modules and the by-name registry the Trainer and config files use."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .. import backend
from ..autograd.tensor import Tensor
from ..errors import ConfigError, NNForgeError, ShapeError
from ..ops import loss as L


class Loss:
    """Base class: a callable (prediction, target) -> scalar Tensor with a `kind`."""

    #: "multiclass", "binary" (logits or probabilities) or "regression": tells the Trainer how
    #: to turn outputs into predictions for metrics
    kind = "regression"
    #: True when the model output is a logit that needs a sigmoid/softmax to become a probability
    from_logits = True

    def __call__(self, pred: Tensor, target: Any) -> Tensor:
        return self.forward(pred, target)

    def forward(self, pred: Tensor, target: Any) -> Tensor:  # pragma: no cover - abstract
        """Compute the loss."""
        raise NotImplementedError

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """The loss terms before reduction (reduction='none'): what sample weights scale."""
        raise ConfigError(f"sample_weight and class_weight need a loss with per-sample terms, "
                          f"found {self!r}: use a built-in loss, or a Loss subclass with an "
                          f"unreduced(pred, target) method")

    def weighted(self, pred: Tensor, target: Any, sample_weight: Any) -> Tensor:
        """The loss with sample i's terms scaled by sample_weight[i]: sum(w_i * l_i) divided by
        the batch size, as Keras's default 'sum_over_batch_size' (not by sum(w_i): a weight
        of 2 everywhere doubles the loss and its gradient); reduction='sum' leaves out the
        division. l_i is the mean (the sum, for reduction='sum') of sample i's terms, and
        includes the loss's own class weights (weight=, pos_weight=), which multiply."""
        terms = self.unreduced(pred, target)
        total = getattr(self, "reduction", "mean") == "sum"
        if terms.ndim > 1:  # e.g. (N, k) outputs: one term per sample, as Keras averages axis -1
            axes = tuple(range(1, terms.ndim))
            terms = terms.sum(axis=axes) if total else terms.mean(axis=axes)
        w = sample_weight.data if isinstance(sample_weight, Tensor) else sample_weight
        w = backend.same_device_as(w, terms.data).astype(terms.dtype, copy=False)
        if w.shape != terms.shape:
            raise ShapeError(f"expected one sample weight per sample, {terms.shape}, found "
                             f"shape {w.shape}")
        out = (terms * Tensor(w, _keep=True)).sum()
        return out if total else out / max(len(w), 1)

    def extra_repr(self) -> str:
        """The options that differ from their defaults, as torch's extra_repr shows them."""
        parts = []
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) \
                    or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if value is p.default or (type(value) is type(p.default) and value == p.default):
                continue
            text = (np.array2string(np.asarray(backend.to_numpy(value)), precision=4,
                                    threshold=8, separator=", ")
                    if hasattr(value, "shape") else repr(value))
            parts.append(f"{name}={text}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class MSELoss(Loss):
    """Mean squared error."""

    def __init__(self, reduction: str = "mean") -> None:
        L._check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return L.mse_loss(pred, target, self.reduction)

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """Squared errors, one per element."""
        return L.mse_loss(pred, target, "none")


class L1Loss(MSELoss):
    """Mean absolute error."""

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return L.l1_loss(pred, target, self.reduction)

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """Absolute errors, one per element."""
        return L.l1_loss(pred, target, "none")


class HuberLoss(Loss):
    """Huber loss."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        L._check_reduction(reduction, "HuberLoss")
        self.delta, self.reduction = L.check_delta(delta, "HuberLoss"), reduction

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return L.huber_loss(pred, target, self.delta, self.reduction)

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """Huber terms, one per element."""
        return L.huber_loss(pred, target, self.delta, "none")


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits (N, C) or (N, C, d1, ...); class weights, label
    smoothing, and ignore_index (rows with that class index count for nothing, as in torch)."""

    kind = "multiclass"

    def __init__(self, weight: Any = None, label_smoothing: float = 0.0,
                 reduction: str = "mean", ignore_index: int = -100) -> None:
        name = "CrossEntropyLoss"
        L._check_reduction(reduction, name)
        self.weight = L.check_weights(weight, "weight", name, ndim=1)
        self.label_smoothing = L.check_label_smoothing(label_smoothing, name)
        self.reduction, self.ignore_index = reduction, L.check_ignore_index(ignore_index, name)

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return L.cross_entropy(pred, target, self.weight, self.label_smoothing, self.reduction,
                               self.ignore_index)

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """Cross-entropy of each sample (times its class weight, when weight= is set)."""
        return L.cross_entropy(pred, target, self.weight, self.label_smoothing, "none",
                               self.ignore_index)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits; pos_weight for imbalanced data."""

    kind = "binary"

    def __init__(self, pos_weight: Any = None, reduction: str = "mean") -> None:
        L._check_reduction(reduction, "BCEWithLogitsLoss")
        self.pos_weight = L.check_weights(pos_weight, "pos_weight", "BCEWithLogitsLoss")
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return L.binary_cross_entropy_with_logits(pred, target, self.pos_weight, self.reduction)

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """Binary cross-entropy terms, one per output."""
        return L.binary_cross_entropy_with_logits(pred, target, self.pos_weight, "none")


class BCELoss(Loss):
    """Binary cross-entropy on probabilities (a model ending in Sigmoid)."""

    kind = "binary"
    from_logits = False

    def __init__(self, reduction: str = "mean") -> None:
        L._check_reduction(reduction, "BCELoss")
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return L.binary_cross_entropy(pred, target, self.reduction)

    def unreduced(self, pred: Tensor, target: Any) -> Tensor:
        """Binary cross-entropy terms, one per output."""
        return L.binary_cross_entropy(pred, target, "none")


#: Keras's names map by what the model outputs: binary_crossentropy takes probabilities there
#: as BCELoss does; the categorical ones map to CrossEntropyLoss, which takes logits (Keras's
#: from_logits=True): a Sequential ending in Softmax is refused by the Trainer, with the fix.
LOSSES: dict[str, type[Loss]] = {
    "mse": MSELoss, "mean_squared_error": MSELoss, "l1": L1Loss, "mae": L1Loss,
    "mean_absolute_error": L1Loss, "huber": HuberLoss, "cross_entropy": CrossEntropyLoss,
    "categorical_crossentropy": CrossEntropyLoss,
    "sparse_categorical_crossentropy": CrossEntropyLoss, "bce_with_logits": BCEWithLogitsLoss,
    "binary_cross_entropy_with_logits": BCEWithLogitsLoss, "bce": BCELoss,
    "binary_cross_entropy": BCELoss, "binary_crossentropy": BCELoss,
}


def get_loss(loss: Any, **kwargs: Any) -> Loss:
    """A Loss from a name (see LOSSES), a Loss instance, or a plain callable."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        cls = LOSSES.get(loss.lower())
        if cls is None:
            raise ConfigError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        try:
            return cls(**kwargs)
        except NNForgeError:  # already says which argument and what was expected
            raise
        except TypeError as exc:
            raise ConfigError(f"bad arguments for loss {loss!r}: {exc}") from None
    if callable(loss):
        wrapped = Loss()
        wrapped.forward = loss  # type: ignore[method-assign]
        return wrapped
    raise ConfigError(f"loss must be a name, a Loss or a callable, found {type(loss).__name__}")
