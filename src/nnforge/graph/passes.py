"""Graph optimization passes: each a function Graph -> Graph that keeps the outputs equal.

Levels follow ONNX Runtime's: `none` (no rewriting), `basic` (Dropout/Identity removal,
constant folding, dead-code elimination), `all` (basic + MatMul+Add -> Gemm, BatchNorm
folding, activation fusion, Conv+MaxPool fusion). Any pass can be switched off by name with
`disabled=`. Shape inference runs last at every level, so every value has a shape.

`FusedGemm` and `FusedConv` (domain "nnforge") are nnforge-internal ops: a Gemm/Conv followed by
the activation named in its `activation` attribute (`activation_alpha` for LeakyRelu), as in
ONNX Runtime's com.microsoft contrib ops; a FusedConv may also carry a following MaxPool
(`pool="MaxPool"`, `pool_kernel_shape`, `pool_strides`: conv, activation, then pool). They
exist only in optimized graphs: export the graph before optimization, or at level "basic".
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from ..errors import ConfigError
from .ir import INTERNAL_DOMAIN, Graph, Node
from .ops import FUSABLE_ACTIVATIONS, batchnorm_scale_shift, evaluate_node, get_op
from .shapes import compute_shapes, infer_shapes

Pass = Callable[[Graph], Graph]


def eliminate_identity(graph: Graph) -> Graph:
    """Remove Identity and (inference-time) Dropout nodes, rewiring their consumers."""
    g = graph.copy()
    outputs = set(g.output_names)
    producers = g.producers()
    keep: list[Node] = []
    for node in g.nodes:
        mask_used = len(node.outputs) > 1 and node.outputs[1] and (
            node.outputs[1] in outputs or any(node.outputs[1] in n.inputs for n in g.nodes))
        if node.op not in ("Identity", "Dropout") or mask_used:
            keep.append(node)
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst not in outputs:
            g.rename_value(dst, src)
            continue
        prod = producers.get(src)
        if prod is None or src in outputs:  # input -> output directly: the node must stay
            keep.append(node)
            continue
        prod.outputs = [dst if o == src else o for o in prod.outputs]
        g.rename_value(src, dst)
        producers[dst] = prod
    g.nodes = keep
    return g


#: Largest output (in elements) a fold makes beyond the size of the node's inputs:
#: ConstantOfShape, Pad or Concat can expand a few numbers into gigabytes of stored weights.
FOLD_MAX_GROWTH = 1 << 20
#: Elements all the folds of one pass may add together: at least this many, else up to
#: FOLD_BUDGET_RATIO times the graph's own initializers (many nodes each under the per-node
#: cap must not add up to gigabytes either)
FOLD_MIN_BUDGET = 1 << 24
FOLD_BUDGET_RATIO = 4


def fold_budget(g: Graph) -> int:
    """Elements the folds of one pass over g may add in all."""
    return max(FOLD_MIN_BUDGET, FOLD_BUDGET_RATIO * sum(a.size for a in g.initializers.values()))


def fold_output_size(g: Graph, node: Node) -> int | None:
    """Elements a fold of this all-constant node would store, from shape inference alone
    (None when a shape is unknown); ValueError-family errors of the op's checks propagate."""
    in_shapes = [g.initializers[i].shape if i else None for i in node.inputs]
    shapes = get_op(node).infer(node, in_shapes, g.initializers)
    total = 0
    for k, name in enumerate(node.outputs):
        s = shapes[k] if k < len(shapes) else None
        if not name:
            continue
        if s is None or not all(isinstance(d, int) for d in s):
            return None
        total += math.prod(s)
    return total


def _fold_too_big(g: Graph, node: Node, budget: int | None = None) -> bool:
    """True when a node's output size is unknown, passes both its inputs' size and the cap,
    or passes what is left of the pass's budget."""
    # an input listed many times (Concat of one weight 20,000 times) is stored once
    ins = {i: g.initializers[i].size for i in node.inputs if i}
    size = fold_output_size(g, node)
    if size is None:
        return True
    return size > max(FOLD_MAX_GROWTH, sum(ins.values())) or (budget is not None
                                                             and size > budget)


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all initializers and store their outputs as weights."""
    g = graph.copy()
    outputs = set(g.output_names)
    keep: list[Node] = []
    budget = fold_budget(g)
    for node in g.nodes:
        ins = [i for i in node.inputs if i]
        if (ins and all(i in g.initializers for i in ins)
                and not any(o in outputs for o in node.outputs)
                and not _fold_too_big(g, node, budget)):
            budget -= fold_output_size(g, node) or 0
            values = evaluate_node(node, *(g.initializers[i] if i else None for i in node.inputs))
            for name, value in zip(node.outputs, values):
                if name:
                    g.initializers[name] = np.asarray(value)
                    g.value_info.pop(name, None)
        else:
            keep.append(node)
    g.nodes = keep
    return g


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes no graph output depends on, and initializers no node reads."""
    g = graph.copy()
    live = set(g.output_names)
    kept: list[Node] = []
    for node in reversed(g.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    g.nodes = kept[::-1]
    g.initializers = {k: v for k, v in g.initializers.items() if k in live}
    g.value_info = {k: v for k, v in g.value_info.items()
                    if k in live or k in g.input_names}
    return g


def _sole_consumer(g: Graph, value: str, consumers: dict[str, list[Node]]) -> Node | None:
    """The one node reading value, when value is not also a graph output."""
    users = consumers.get(value, [])
    if len(users) != 1 or value in g.output_names:
        return None
    return users[0]


def _replace(g: Graph, first: Node, second: Node, merged: Node) -> None:
    """Put merged where first was and drop second (second's outputs now come from merged)."""
    g.nodes = [merged if n is first else n for n in g.nodes if n is not second]


def fuse_matmul_add(graph: Graph) -> Graph:
    """MatMul(A, B) + C -> Gemm(A, B, C) when A is 2-D and B, C are constant row-broadcasts."""
    g = graph.copy()
    shapes = compute_shapes(g)
    consumers = g.consumers()
    for node in list(g.nodes):
        if node.op != "MatMul" or node.inputs[1] not in g.initializers:
            continue
        a_info, b = shapes.get(node.inputs[0]), g.initializers[node.inputs[1]]
        add = _sole_consumer(g, node.outputs[0], consumers)
        if (a_info is None or a_info.shape is None or len(a_info.shape) != 2 or b.ndim != 2
                or add is None or add.op != "Add"):
            continue
        other = [i for i in add.inputs if i != node.outputs[0]]
        if len(other) != 1 or other[0] not in g.initializers:
            continue
        c = g.initializers[other[0]]
        if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or (
                c.ndim and c.shape[-1] not in (1, b.shape[1])):
            continue
        gemm = Node("Gemm", [node.inputs[0], node.inputs[1], other[0]], list(add.outputs),
                    {}, node.name or add.name)
        _replace(g, node, add, gemm)
    return g


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold an inference BatchNormalization into the Conv or Gemm that feeds it."""
    g = graph.copy()
    producers, consumers = g.producers(), g.consumers()
    for bn in list(g.nodes):
        # training-mode BN (running-stat outputs) is no inference BN: leave it alone
        if (bn.op != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1
                or not all(i in g.initializers for i in bn.inputs[1:5])):
            continue
        prev = producers.get(bn.inputs[0])
        if (prev is None or prev.op not in ("Conv", "Gemm") or prev.domain
                or _sole_consumer(g, prev.outputs[0], consumers) is not bn
                or not all(i in g.initializers for i in prev.inputs[1:] if i)):
            continue
        with np.errstate(all="ignore"):
            k, c = batchnorm_scale_shift(bn.attrs.get("epsilon", 1e-5),
                                         *(g.initializers[i] for i in bn.inputs[1:5]))
        if not (np.isfinite(k).all() and np.isfinite(c).all()):
            continue  # zero variance with epsilon 0: folding turns BN's +-inf into NaN
        w = g.initializers[prev.inputs[1]].astype(np.float64)
        b = (g.initializers[prev.inputs[2]].astype(np.float64)
             if len(prev.inputs) > 2 and prev.inputs[2] else np.zeros(1))
        k64 = k.astype(np.float64)
        attrs = dict(prev.attrs)
        if prev.op == "Conv":
            w = w * k64.reshape(-1, *([1] * (w.ndim - 1)))
        else:  # Gemm: output column j is scaled by k[j]; fold alpha and beta in too
            alpha, beta = attrs.pop("alpha", 1.0), attrs.pop("beta", 1.0)
            w = w * alpha * (k64[:, None] if attrs.get("transB", 0) else k64[None, :])
            b = b * beta
        b = b * k64 + c.astype(np.float64)
        dtype = g.initializers[prev.inputs[1]].dtype
        wname = g.unique_name(f"{prev.name}.weight_bn")
        g.initializers[wname] = w.astype(dtype)
        bname = g.unique_name(f"{prev.name}.bias_bn")
        g.initializers[bname] = b.astype(dtype)
        merged = Node(prev.op, [prev.inputs[0], wname, bname], list(bn.outputs), attrs, prev.name)
        _replace(g, prev, bn, merged)
        producers = g.producers()
    return g


def fuse_activation(graph: Graph) -> Graph:
    """Gemm/Conv followed by Relu, LeakyRelu, Sigmoid or Tanh -> FusedGemm/FusedConv."""
    g = graph.copy()
    consumers = g.consumers()
    for node in list(g.nodes):
        if node.op not in ("Gemm", "Conv") or node.domain:
            continue
        act = _sole_consumer(g, node.outputs[0], consumers)
        if act is None or act.op not in FUSABLE_ACTIVATIONS:
            continue
        attrs = dict(node.attrs, activation=act.op)
        if act.op == "LeakyRelu":
            attrs["activation_alpha"] = float(act.attrs.get("alpha", 0.01))
        fused = Node(f"Fused{node.op}", list(node.inputs), list(act.outputs), attrs,
                     node.name, INTERNAL_DOMAIN)
        _replace(g, node, act, fused)
    return g


def fuse_conv_pool(graph: Graph) -> Graph:
    """Conv/FusedConv followed by an unpadded MaxPool -> one FusedConv with `pool_*` attrs."""
    g = graph.copy()
    consumers = g.consumers()
    for node in list(g.nodes):
        if node.op not in ("Conv", "FusedConv") or node.attrs.get("pool"):
            continue
        pool = _sole_consumer(g, node.outputs[0], consumers)
        if (pool is None or pool.op != "MaxPool" or len(pool.outputs) != 1
                or any(pool.attrs.get("pads", [0])) or pool.attrs.get("ceil_mode", 0)
                or any(d != 1 for d in pool.attrs.get("dilations", [1]))
                or pool.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
            continue
        kernel = list(pool.attrs["kernel_shape"])
        attrs = dict(node.attrs, pool="MaxPool", pool_kernel_shape=kernel,
                     pool_strides=list(pool.attrs.get("strides", [1] * len(kernel))))
        fused = Node("FusedConv", list(node.inputs), list(pool.outputs), attrs, node.name,
                     INTERNAL_DOMAIN)
        _replace(g, node, pool, fused)
    return g


#: Every rewriting pass by name, in the order `optimize` applies them.
PASSES: dict[str, Pass] = {
    "eliminate_identity": eliminate_identity,
    "fold_constants": fold_constants,
    "fuse_matmul_add": fuse_matmul_add,
    "fold_batchnorm": fold_batchnorm,
    "fuse_activation": fuse_activation,
    "fuse_conv_pool": fuse_conv_pool,
    "eliminate_dead_code": eliminate_dead_code,
}

LEVELS: dict[str, tuple[str, ...]] = {
    "none": (),
    "basic": ("eliminate_identity", "fold_constants", "eliminate_dead_code"),
    "all": tuple(PASSES),
}


def optimize(graph: Graph, level: str = "all", disabled: Iterable[str] = ()) -> Graph:
    """Apply the passes of an optimization level (minus `disabled`), then infer shapes."""
    if level not in LEVELS:
        raise ConfigError(f"expected optimization level one of {list(LEVELS)}, found {level!r}")
    # one name is one pass, not a set of letters
    disabled = {disabled} if isinstance(disabled, str) else set(disabled)
    unknown = disabled - set(PASSES)
    if unknown:
        raise ConfigError(f"expected pass names from {list(PASSES)}, found {sorted(unknown)}")
    graph.validate()
    for name in LEVELS[level]:
        if name not in disabled:
            graph = PASSES[name](graph)
    return infer_shapes(graph)
