"""Shared test fixtures."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_nnforge() -> None:
    nf.manual_seed(0)
