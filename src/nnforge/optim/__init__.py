"""Optimizers (SGD, Adam, AdamW, RMSprop), gradient clipping and learning-rate schedules."""

from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .factory import OPTIMIZERS, build_optimizer, optimizer_from_config
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .schedulers import CosineAnnealingLR, LinearWarmup, LRScheduler, ReduceLROnPlateau, StepLR
from .sgd import SGD

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "CosineAnnealingLR", "LRScheduler",
           "LinearWarmup", "Optimizer", "RMSprop", "ReduceLROnPlateau", "StepLR",
           "build_optimizer", "clip_grad_norm_", "clip_grad_value_", "optimizer_from_config"]
