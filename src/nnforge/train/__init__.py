"""Training: the Trainer, callbacks, metrics and progress display."""

from .callbacks import Callback, EarlyStopping, HistoryLogger, LRScheduler, ModelCheckpoint
from .trainer import Trainer

__all__ = ["Callback", "EarlyStopping", "HistoryLogger", "LRScheduler", "ModelCheckpoint",
           "Trainer"]
