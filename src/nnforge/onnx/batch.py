"""A batch size fixed in an ONNX file, freed where the graph allows it.

`torch.onnx.export` without `dynamic_axes` (or dynamo without `dynamic_shapes`) writes the
example's batch size into the input shape, e.g. (5, 4). Such a graph usually works on any
number of rows: the importer then names the leading dim "N" like a dynamic one, after
checking that (1) the graph normalizes with a symbolic batch, (2) every output keeps the
batch as its leading dim, and (3) on probe values, two rows run together give the same
results as each row alone (no op mixes rows, e.g. a constant of the batch size).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import NNForgeError
from ..graph.ir import Graph
from ..graph.reference import evaluate_graph

BATCH = "N"


def fixed_batch(graph: Graph) -> int | None:
    """The leading dim every input fixes (inputs of rank 2 or more), or None."""
    dims = {v.shape[0] if v.shape and len(v.shape) >= 2 else None for v in graph.inputs}
    if len(dims) != 1:
        return None
    size = next(iter(dims))
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def reexport_hint(size: int) -> str:
    """How to export the model again with a dynamic batch."""
    return (f"the batch size is fixed at {size} in the file; re-export it with "
            f"torch.onnx.export(..., dynamic_axes={{'x': {{0: 'batch'}}}}) (one entry per "
            f"input name), or with dynamo=True and dynamic_shapes=({{0: "
            f"torch.export.Dim('batch')}},)")


def free_batch(graph: Graph, size: int, normalize: Callable[[Graph, int], Graph]
               ) -> tuple[Graph | None, str]:
    """(the normalized graph with a symbolic batch, "") or (None, why it cannot have one)."""
    g = graph.copy()
    for v in g.inputs:
        v.shape = (BATCH, *v.shape[1:])
    for v in g.outputs:
        if v.shape and v.shape[0] == size:
            v.shape = (BATCH, *v.shape[1:])
    try:
        g = normalize(g, size)
    except NNForgeError as exc:
        return None, f"with a free batch dim the graph fails: {exc}"
    bad = [f"{v.name} {v.shape}" for v in g.outputs if not v.shape or v.shape[0] != BATCH]
    if bad:
        return None, (f"expected every output to keep the batch as its leading dim, found "
                      f"{', '.join(bad)}")
    if any(not all(isinstance(d, int) for d in v.shape[1:]) for v in g.inputs):
        return None, "the inputs have other free dims besides the batch"
    why = _rows_differ(g)
    return (None, why) if why else (g, "")


def _rows_differ(g: Graph) -> str:
    """Why two probe rows run together do not give what each gives alone ("" if they do)."""
    rng = np.random.default_rng(0)
    feeds = {v.name: _probe(rng, (2, *v.shape[1:]), v.dtype) for v in g.inputs}
    try:
        with np.errstate(all="ignore"):
            both = evaluate_graph(g, feeds)
            rows = [evaluate_graph(g, {k: a[i:i + 1] for k, a in feeds.items()})
                    for i in (0, 1)]
    except (NNForgeError, ValueError, IndexError, TypeError) as exc:
        return f"running it on 2 rows and on 1 fails ({exc})"
    for k, out in enumerate(both):
        out = np.asarray(out)
        for i in (0, 1):
            one = np.asarray(rows[i][k])
            scale = max(1.0, float(np.nanmax(np.abs(out), initial=0.0)))
            if out.shape[1:] != one.shape[1:] or len(one) != 1 or not np.allclose(
                    out[i:i + 1], one, rtol=1e-4, atol=1e-5 * scale, equal_nan=True):
                return (f"its output {g.outputs[k].name!r} for a row depends on the other "
                        f"rows of the batch")
    return ""


def _probe(rng: np.random.Generator, shape: tuple, dtype: Any) -> np.ndarray:
    kind = np.dtype(dtype or "float32")
    if kind.kind == "f":
        return rng.standard_normal(shape).astype(kind)
    return rng.integers(0, 2, shape).astype(kind)  # small ids, in range of any table
