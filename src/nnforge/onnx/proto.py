"""Conversions between ONNX protobuf messages and the IR's plain values: tensors, attributes, dims.

External tensor data is read here, not by `onnx.load`: its location must be a plain file in
the model's directory (no absolute path, no `..`, no link out of it), and the offset and length
must lie inside that file; the data is memory-mapped read-only.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ..errors import ConfigError, ModelFileError
from ..graph.ir import Shape, ValueInfo
from ..graph.ops_onnx import ONNX_DTYPES

#: NumPy dtype name -> ONNX TensorProto enum
DTYPE_TO_ONNX: dict[str, int] = {str(v): k for k, v in ONNX_DTYPES.items()}


def tensor_to_array(t: TensorProto, base_dir: str) -> np.ndarray:
    """A TensorProto as a NumPy array (external data memory-mapped from beside the model)."""
    if t.data_type not in ONNX_DTYPES:
        name = TensorProto.DataType.Name(t.data_type) if t.data_type in \
            TensorProto.DataType.values() else str(t.data_type)
        raise ConfigError(f"tensor {t.name!r} has ONNX type {name}; expected one of "
                          f"{sorted(str(d) for d in ONNX_DTYPES.values())}")
    shape = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in shape):
        raise ModelFileError(f"tensor {t.name!r}: expected dims >= 0, found shape {shape}")
    if t.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(t)
    info = {e.key: e.value for e in t.external_data}
    dtype = ONNX_DTYPES[t.data_type].newbyteorder("<")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: huge dims must not wrap to 0
    path = _external_path(info.get("location", ""), base_dir, t.name)
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", nbytes))
    except ValueError:
        raise ModelFileError(f"tensor {t.name!r}: external data offset/length must be integers, "
                             f"found {info.get('offset')!r}/{info.get('length')!r}") from None
    size = os.path.getsize(path)
    if length != nbytes or offset < 0:
        raise ModelFileError(f"tensor {t.name!r}: expected {nbytes} bytes of external data for "
                             f"shape {shape} {dtype.name}, found offset {offset} length {length}")
    if offset + length > size:
        raise ModelFileError(f"tensor {t.name!r}: expected bytes {offset}..{offset + length} of "
                             f"'{path}', found a file of {size} bytes (truncated, or not this "
                             f"model's data)")
    if nbytes == 0:
        return np.zeros(shape, dtype.newbyteorder("="))
    flat = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(nbytes // dtype.itemsize,))
    arr = flat.reshape(shape)
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def check_external_files(model: onnx.ModelProto, base_dir: str) -> None:
    """ModelFileError unless every external tensor's file is a safe path that exists."""
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            _external_path(location, base_dir, t.name)


def _external_path(location: str, base_dir: str, name: str) -> str:
    """The data file's path, refusing anything outside the model's directory."""
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or ".." in parts or ":" in location:
        raise ModelFileError(f"tensor {name!r}: external data location {location!r} must name "
                             f"a file inside the model's directory (a relative path without "
                             f"'..')")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise ModelFileError(f"tensor {name!r}: external data {location!r} leads out of the "
                             f"model's directory")
    if not os.path.isfile(path):
        raise ModelFileError(f"tensor {name!r}: expected its external data file '{path}' beside "
                             f"the model, found none")
    return path


def array_to_tensor(name: str, arr: np.ndarray) -> TensorProto:
    """A NumPy array as a TensorProto (data stored inline)."""
    arr = np.asarray(arr)
    if str(arr.dtype) not in DTYPE_TO_ONNX:
        raise ConfigError(f"initializer {name!r} has dtype {arr.dtype}; expected one of "
                          f"{sorted(DTYPE_TO_ONNX)}")
    # not np.ascontiguousarray: it turns a 0-d array (a scalar) into a 1-d one
    return numpy_helper.from_array(arr if arr.flags.c_contiguous else arr.copy(), name)


def attribute_value(attr: AttributeProto, base_dir: str, node: str) -> Any:
    """An attribute as a plain Python value (tensors as arrays)."""
    kind = attr.type
    if kind == AttributeProto.TENSOR:
        return tensor_to_array(attr.t, base_dir)
    if kind in (AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.SPARSE_TENSOR,
                AttributeProto.TENSORS, AttributeProto.TYPE_PROTO, AttributeProto.TYPE_PROTOS):
        raise ConfigError(f"node {node!r}: attribute {attr.name!r} of type "
                          f"{AttributeProto.AttributeType.Name(kind)} is not supported")
    value = helper.get_attribute_value(attr)
    if kind == AttributeProto.STRING:
        return value.decode("utf-8", "replace")
    if kind == AttributeProto.STRINGS:
        return [v.decode("utf-8", "replace") for v in value]
    if kind in (AttributeProto.INTS, AttributeProto.FLOATS):
        return list(value)
    return value


def make_attribute(op: str, opset: int, name: str, value: Any) -> AttributeProto:
    """An attribute typed by the op's schema at this opset (0 becomes 0.0 where a float is due)."""
    try:
        schema = onnx.defs.get_schema(op, opset, "")
        kind = schema.attributes[name].type
    except (onnx.defs.SchemaError, KeyError):
        raise ConfigError(f"{op} at opset {opset} has no attribute {name!r}; expected one of "
                          f"its ONNX attributes") from None
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, array_to_tensor("", value))
    if kind == AttributeProto.FLOAT:
        value = float(value)
    elif kind == AttributeProto.FLOATS:
        value = [float(v) for v in value]
    elif kind == AttributeProto.INTS:
        value = [int(v) for v in value]
    elif kind == AttributeProto.INT:
        value = int(value)
    return helper.make_attribute(name, value, attr_type=int(kind))


def value_info_from_proto(vi: onnx.ValueInfoProto) -> ValueInfo:
    """IR ValueInfo (dims: int, symbolic name, or None) of a graph input or output."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise ConfigError(f"graph value {vi.name!r} is not a tensor; expected tensor inputs and "
                          f"outputs")
    dtype = str(ONNX_DTYPES[tt.elem_type]) if tt.elem_type in ONNX_DTYPES else "float32"
    if not tt.HasField("shape"):
        return ValueInfo(vi.name, None, dtype)
    dims: list[Any] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return ValueInfo(vi.name, tuple(dims), dtype)


def value_info_to_proto(name: str, shape: Shape | None, dtype: str) -> onnx.ValueInfoProto:
    """An ONNX tensor value info; symbolic dims become dim_params, unknown dims stay empty."""
    if dtype not in DTYPE_TO_ONNX:
        raise ConfigError(f"value {name!r} has dtype {dtype}; expected one of "
                          f"{sorted(DTYPE_TO_ONNX)}")
    dims = None if shape is None else [d if isinstance(d, (int, str)) else None for d in shape]
    return helper.make_tensor_value_info(name, DTYPE_TO_ONNX[dtype], dims)
