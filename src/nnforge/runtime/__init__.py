"""Inference runtime: compiled NumPy plans, `InferenceSession`, task post-processing."""

from .plan import Plan, compile_plan
from .postprocess import Prediction
from .session import InferenceSession

__all__ = ["InferenceSession", "Plan", "Prediction", "compile_plan"]
