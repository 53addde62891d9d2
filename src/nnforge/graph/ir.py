"""The inference graph IR: ONNX-named nodes over named values, plus initializers (weights).

The IR mirrors ONNX's `GraphProto` so that export and import are a table:

* `Node.op` is an ONNX operator name (`Gemm`, `Conv`, `Relu`, ...) and `Node.attrs` holds
  ONNX attribute names with plain Python values (int, float, str, lists of int/float).
  Ops with `domain == "nnforge"` (`FusedGemm`, `FusedConv`) are internal results of the
  fusion passes; they never come from a user model and an exporter unfuses or rejects them.
* A value is named by a string; `""` as a node input means "optional input left out" (ONNX).
* `ValueInfo.shape` is a tuple whose entries are ints, a symbolic name (the batch dimension
  is `"N"`) or None (unknown).
* `Graph.initializers` maps value names to constant NumPy arrays. Passes never modify an
  array in place: a pass that changes weights stores a new array under a new name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError

Dim = int | str | None
Shape = tuple[Dim, ...]

#: The ONNX opset whose operator semantics the IR follows (Softmax axis rules, Gelu).
OPSET = 20

#: Domain of nnforge-internal ops produced by fusion passes.
INTERNAL_DOMAIN = "nnforge"


@dataclass
class ValueInfo:
    """Name, shape (ints, symbolic names or None) and dtype name of a value."""

    name: str
    shape: Shape | None = None
    dtype: str = "float32"

    def __str__(self) -> str:
        return f"{self.name}: {format_type(self.dtype, self.shape)}"


@dataclass
class Node:
    """One operator application: ONNX op name, input and output value names, attributes."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def __str__(self) -> str:
        outs = ", ".join(f"%{o}" for o in self.outputs)
        ins = ", ".join(f"%{i}" if i else "<none>" for i in self.inputs)
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(self.attrs.items()))
        op = f"{self.domain}.{self.op}" if self.domain else self.op
        return f"{outs} = {op}({ins})" + (f" {{{attrs}}}" if attrs else "")


class Graph:
    """A directed acyclic graph of nodes in topological order, with inputs, outputs, weights."""

    def __init__(self, nodes: Iterable[Node] = (), inputs: Iterable[ValueInfo] = (),
                 outputs: Iterable[ValueInfo] = (),
                 initializers: dict[str, np.ndarray] | None = None,
                 value_info: dict[str, ValueInfo] | None = None, name: str = "main",
                 opset: int = OPSET) -> None:
        self.nodes: list[Node] = list(nodes)
        self.inputs: list[ValueInfo] = list(inputs)
        self.outputs: list[ValueInfo] = list(outputs)
        self.initializers: dict[str, np.ndarray] = dict(initializers or {})
        #: shapes of every value, graph inputs and outputs included (filled by infer_shapes)
        self.value_info: dict[str, ValueInfo] = dict(value_info or {})
        self.name = name
        self.opset = opset

    # -- queries ---------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        """Names of the graph inputs."""
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Names of the graph outputs."""
        return [v.name for v in self.outputs]

    def producers(self) -> dict[str, Node]:
        """Map from value name to the node that produces it."""
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        """Map from value name to the nodes that read it (graph outputs are not nodes)."""
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    uses.setdefault(i, []).append(n)
        return uses

    def shape_of(self, name: str) -> Shape | None:
        """The known shape of a value (initializers included), or None."""
        if name in self.initializers:
            return tuple(self.initializers[name].shape)
        info = self.value_info.get(name)
        return info.shape if info is not None else None

    def unique_name(self, base: str) -> str:
        """A value/node name not used anywhere in the graph yet, derived from base."""
        used = set(self.initializers) | set(self.value_info) | set(self.input_names)
        used |= {o for n in self.nodes for o in n.outputs} | {n.name for n in self.nodes}
        if base not in used:
            return base
        i = 1
        while f"{base}_{i}" in used:
            i += 1
        return f"{base}_{i}"

    def count_ops(self) -> dict[str, int]:
        """How many nodes of each op type the graph holds."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def num_weights(self) -> int:
        """Total number of values stored in the initializers."""
        return int(sum(a.size for a in self.initializers.values()))

    # -- transformation helpers ------------------------------------------------------------
    def copy(self) -> Graph:
        """A copy whose nodes and value infos can be changed freely (arrays are shared)."""
        return Graph([copy.deepcopy(n) for n in self.nodes],
                     [copy.copy(v) for v in self.inputs], [copy.copy(v) for v in self.outputs],
                     dict(self.initializers),
                     {k: copy.copy(v) for k, v in self.value_info.items()}, self.name, self.opset)

    def rename_value(self, old: str, new: str) -> None:
        """Replace every use of value `old` by `new` in node inputs (not in outputs)."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]

    def validate(self) -> None:
        """Check names are defined before use and produced once; raise ConfigError if not."""
        for kind, names in (("input", self.input_names), ("output", self.output_names)):
            dup = sorted({v for v in names if names.count(v) > 1})
            if dup:
                raise ConfigError(f"graph {kind} names {dup} are listed more than once; "
                                  f"expected unique {kind} names")
        defined = set(self.input_names) | set(self.initializers)
        later = self.producers()
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    why = (" (it is produced by a later node: the nodes are out of "
                           "topological order or form a cycle)" if i in later else "")
                    raise ConfigError(f"graph node {n.name or n.op} reads value {i!r} that is "
                                      f"not defined before it{why}; expected a graph input, an "
                                      f"initializer or an earlier node output")
            for o in n.outputs:
                if not o:  # "" is an optional output left out (ONNX); many nodes may use it
                    continue
                if o in defined:
                    raise ConfigError(f"value {o!r} is defined twice; expected each value "
                                      f"name to be produced once")
                defined.add(o)
        for v in self.outputs:
            if v.name not in defined:
                raise ConfigError(f"graph output {v.name!r} is never produced")

    # -- display ---------------------------------------------------------------------------
    def dump(self) -> str:
        """A readable multi-line text listing of the graph."""
        lines = [f"graph {self.name} (opset {self.opset})", "  inputs:"]
        lines += [f"    {self._info(v.name, v)}" for v in self.inputs]
        nbytes = sum(a.nbytes for a in self.initializers.values())
        lines.append(f"  initializers: {len(self.initializers)} "
                     f"({self.num_weights():,} values, {_fmt_bytes(nbytes)})")
        lines += [f"    {k}: {format_type(str(a.dtype), a.shape)}"
                  for k, a in self.initializers.items()]
        lines.append(f"  nodes: {len(self.nodes)}")
        for n in self.nodes:
            types = ", ".join(format_type(self.value_info[o].dtype, self.value_info[o].shape)
                              for o in n.outputs if o in self.value_info)
            lines.append(f"    {n}" + (f"  -> {types}" if types else ""))
        lines.append("  outputs:")
        lines += [f"    {self._info(v.name, v)}" for v in self.outputs]
        return "\n".join(lines)

    def _info(self, name: str, default: ValueInfo) -> str:
        return str(self.value_info.get(name, default))

    def __str__(self) -> str:
        return self.dump()

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={self.input_names}, "
                f"outputs={self.output_names})")


def format_type(dtype: str, shape: Shape | None) -> str:
    """'float32[N,784]' style text for a dtype and shape."""
    if shape is None:
        return f"{dtype}[?]"
    return f"{dtype}[{','.join('?' if d is None else str(d) for d in shape)}]"


def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_attr(x) for x in v) + "]"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 ** 2:.1f} MiB"
