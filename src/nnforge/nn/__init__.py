"""Layers and models."""

from . import init
from .conv1d_layers import AdaptiveAvgPool1d, AvgPool1d, Conv1d, MaxPool1d
from .conv_layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    MaxPool2d,
)
from .layers import (
                     ELU,
                     GELU,
                     Dropout,
                     Flatten,
                     Identity,
                     LeakyReLU,
                     Linear,
                     LogSoftmax,
                     ModuleDict,
                     ModuleList,
                     ReLU,
                     Sequential,
                     Sigmoid,
                     SiLU,
                     Softmax,
                     Softplus,
                     Tanh,
)
from .losses import (
                     BCELoss,
                     BCEWithLogitsLoss,
                     CrossEntropyLoss,
                     HuberLoss,
                     L1Loss,
                     Loss,
                     MSELoss,
                     get_loss,
)
from .module import (
    LAYER_REGISTRY,
    IncompatibleKeys,
    Module,
    Parameter,
    layer_from_architecture,
    register_layer,
)
from .norm_layers import LayerNorm

__all__ = ["ELU", "GELU", "LAYER_REGISTRY", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AvgPool1d",
           "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d", "BatchNorm2d", "Conv1d",
           "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten", "GlobalAvgPool2d", "HuberLoss",
           "Identity", "IncompatibleKeys", "L1Loss", "LayerNorm", "LeakyReLU", "Linear",
           "LogSoftmax", "Loss", "MSELoss", "MaxPool1d", "MaxPool2d", "Module", "ModuleDict",
           "ModuleList", "Parameter", "ReLU", "Sequential", "SiLU", "Sigmoid", "Softmax",
           "Softplus", "Tanh", "get_loss", "init", "layer_from_architecture", "register_layer"]

# registers the GraphModule layer (imported ONNX graphs in .nnf files); needs no onnx package
from ..onnx import graph_module as _graph_module  # noqa: E402,F401
