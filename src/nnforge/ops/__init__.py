"""Differentiable ops, one file per family. Each op is one `Function` subclass."""
