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


@pytest.fixture
def one_line_error():
    """Check a finished command: exit `code`, one 'nnforge: error:' line holding `words`."""
    def check(r, code: int, words) -> None:
        assert r.returncode == code, r.stderr
        assert "Traceback" not in r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("nnforge: error: "), r.stderr
        for word in words:
            assert word in lines[0], lines[0]
        assert r.stdout == ""
    return check
