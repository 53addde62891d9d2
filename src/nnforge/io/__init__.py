"""The `.nnf` model file: write, read, validate; checkpoints for resuming training."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .model_file import FORMAT_VERSION, TASKS, load, read_manifest, read_weights, save

__all__ = ["FORMAT_VERSION", "TASKS", "Checkpoint", "load", "load_checkpoint", "read_manifest",
           "read_weights", "save", "save_checkpoint"]
