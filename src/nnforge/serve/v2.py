"""KServe V2 inference requests and responses over REST: JSON tensors and the binary extension.

Binary tensor data extension: the body starts with the JSON header, whose length is in the
``Inference-Header-Content-Length`` HTTP header; inputs whose parameters hold
``binary_data_size`` take that many bytes, in order, from what follows. Outputs asked for with
``"binary_data": true`` (or all of them, with ``"binary_data_output": true`` on the request) are
answered the same way.

Triton's classification extension: an output asked for with ``"classification": k`` comes back
as BYTES of shape [n, k], each element "<score>:<index>[:<label>]", the k highest class scores
first (k is capped at the number of classes). It applies to the class probabilities of a
classification model; other outputs and regression models answer 400. The request parameter
``timeout`` (microseconds, as tritonclient sends it) shortens the server's request timeout
for this request; it cannot lengthen it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import InvalidInputError
from .model import Outputs, ServedModel
from .tensors import (
    DATATYPES,
    MAX_DIMS,
    NUMERIC_TO_MODEL,
    array_from_json,
    bytes_tensor,
    check_kind,
    check_shape,
    exact_integers,
    to_model_rows,
)

NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class Requested:
    """Which outputs the client wants, and which of them as binary data."""

    names: list[tuple[str, bool]]  # (name, binary); empty: every output
    binary_default: bool
    classify: dict[str, int] = field(default_factory=dict)  # output -> classification count
    timeout_s: float | None = None  # the request's own timeout, when it gave one


def _type_name(v: Any) -> str:
    return "null" if v is None else {dict: "object", list: "array", str: "string",
                                     bool: "boolean"}.get(type(v), type(v).__name__)


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise InvalidInputError(f"{what} must be a JSON object, found {_type_name(v)}")
    return v


def _params(doc: dict[str, Any], what: str) -> dict[str, Any]:
    # optional fields may be null, as /openapi.json documents them (pydantic-built clients
    # send null for what they leave out): null counts as left out, here and below
    v = doc.get("parameters")
    return {} if v is None else _obj(v, f"{what}'parameters'")


def _flag(params: dict[str, Any], key: str, what: str, default: bool = False) -> bool:
    v = params.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidInputError(f"{what}: parameter {key!r} must be true or false, found {v!r:.40}")
    return v


def _shape(v: Any, what: str) -> list[int]:
    if not isinstance(v, list) or len(v) > MAX_DIMS or not all(
            type(d) is int and 0 <= d < 2**31 for d in v):
        raise InvalidInputError(f"{what}: 'shape' must be a list of at most {MAX_DIMS} "
                                f"non-negative integers, found {v!r:.60}")
    return check_shape(v, what)


def parse_json(data: bytes | memoryview, what: str = "the request body") -> Any:
    """orjson.loads with a 400 that says where the JSON breaks."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if reason.startswith("str is not valid UTF-8"):  # orjson blames surrogates at char 0
            try:
                bytes(data).decode()
            except UnicodeDecodeError as bad:
                reason = (f"expected UTF-8 text, found byte 0x{bad.object[bad.start]:02x} at "
                          f"byte {bad.start}")
        raise InvalidInputError(f"{what} is not valid JSON: {reason}") from None


def decode_input(doc: dict[str, Any], binary: memoryview | None, offset: int,
                 what: str, maybe_bools: bool = True,
                 missing: bool = False) -> tuple[np.ndarray, int]:
    """One V2 input tensor as an array of its datatype; returns it and the new binary offset
    (`missing`: the model fills missing values in, so JSON null in float data reads as NaN)."""
    shape = _shape(doc.get("shape"), what)
    datatype = doc.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES and datatype != "BYTES":
        raise InvalidInputError(f"{what}: expected 'datatype' among {list(NUMERIC_TO_MODEL)}, "
                                f"found {datatype!r:.40}")
    params = _params(doc, f"{what}: ")
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInputError(f"{what}: 'binary_data_size' must be a non-negative integer, "
                                    f"found {size!r:.40}")
        # which of the two holds the tensor? (tritonclient sends one)
        if doc.get("data") is not None:
            raise InvalidInputError(f"{what}: expected 'data' or a 'binary_data_size' "
                                    f"parameter, found both")
        if binary is None:
            raise InvalidInputError(f"{what} has binary_data_size but the request has no binary "
                                    f"part (expected an Inference-Header-Content-Length header)")
        if offset + size > len(binary):
            raise InvalidInputError(f"{what}: binary_data_size {size} goes past the end of the "
                                    f"binary part ({len(binary) - offset} bytes left)")
        if datatype == "BYTES":
            raise InvalidInputError(f"{what}: the model takes numbers, found datatype BYTES")
        dtype = DATATYPES[datatype]
        expected = math.prod(shape) * dtype.itemsize
        if size != expected:
            raise InvalidInputError(f"{what}: shape {shape} of {datatype} needs {expected} bytes, "
                                    f"found binary_data_size {size}")
        arr = np.frombuffer(binary[offset:offset + size], dtype=dtype).reshape(shape)
        if datatype == "BOOL":  # one byte each: any byte but 0 is true, as in C
            arr = arr.view(np.uint8) != 0
        return arr, offset + size
    if doc.get("data") is None:
        raise InvalidInputError(f"{what}: expected 'data' or a 'binary_data_size' parameter, "
                                f"found neither")
    if datatype == "BYTES":
        raise InvalidInputError(f"{what}: the model takes numbers, found datatype BYTES")
    arr = array_from_json(doc["data"], f"{what}: 'data'", float32=datatype == "FP32",
                          booleans=datatype == "BOOL", maybe_bools=maybe_bools,
                          nulls=missing and DATATYPES[datatype].kind == "f")
    if arr.size and arr.dtype.kind == "f" and DATATYPES[datatype].kind in "iu":
        arr = exact_integers(doc["data"], arr, datatype, what)
    count = math.prod(shape)
    if arr.ndim == 1 and len(shape) != 1 or arr.ndim > 1 and list(arr.shape) != shape:
        if arr.size != count:
            raise InvalidInputError(f"{what}: shape {shape} needs {count} values, found {arr.size}")
        arr = arr.reshape(shape)  # flat row-major data, as the protocol allows
    elif arr.size != count:
        raise InvalidInputError(f"{what}: shape {shape} needs {count} values, found {arr.size}")
    return check_kind(arr, datatype, what), offset


def decode_request(body: bytes, header_length: int | None,
                   model: ServedModel) -> tuple[np.ndarray, Requested, Any]:
    """The model's input rows, the requested outputs and the request id of a V2 request."""
    binary = None
    # JSON booleans are refused in numeric data: only a header that spells one needs the walk
    end = len(body) if header_length is None else header_length
    maybe_bools = body.find(b"true", 0, end) >= 0 or body.find(b"false", 0, end) >= 0
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidInputError(f"Inference-Header-Content-Length must be between 1 and the "
                                    f"body size {len(body)}, found {header_length}")
        binary = memoryview(body)[header_length:]
        body = memoryview(body)[:header_length]
    doc = _obj(parse_json(body), "the inference request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(f"'inputs' must be a non-empty list of tensors, found "
                                f"{_type_name(inputs)}")
    spec = model.input
    x, offset = None, 0
    for i, item in enumerate(inputs):
        item = _obj(item, f"inputs[{i}]")
        name = item.get("name")
        if name != spec.name:
            raise InvalidInputError(f"inputs[{i}]: model {model.name!r} has one input, "
                                    f"{spec.name!r}; found {name!r:.60}")
        if x is not None:
            raise InvalidInputError(f"inputs[{i}]: input {spec.name!r} is given twice")
        arr, offset = decode_input(item, binary, offset, f"input {spec.name!r}", maybe_bools,
                                   spec.missing)
        if arr.dtype.kind not in "fiub":
            raise InvalidInputError(f"input {spec.name!r}: expected one of {list(NUMERIC_TO_MODEL)}"
                                    f", found {item['datatype']}")
        x = to_model_rows(arr, spec, f"input {spec.name!r}", allow_single=False)
    if binary is not None and offset != len(binary):
        raise InvalidInputError(f"the binary part has {len(binary) - offset} bytes that no input "
                                f"claims")
    params = _params(doc, "")
    requested = Requested([], _flag(params, "binary_data_output", "the request"),
                          timeout_s=timeout_seconds(params.get("timeout"), "the request"))
    outputs = doc.get("outputs")
    if outputs is None:
        outputs = []
    elif not isinstance(outputs, list):
        raise InvalidInputError(f"'outputs' must be a list, found {_type_name(outputs)}")
    known = [s.name for s in model.outputs]
    for i, out in enumerate(outputs):
        out = _obj(out, f"outputs[{i}]")
        name = out.get("name")
        if name not in known:
            raise InvalidInputError(f"outputs[{i}]: expected an output among {known}, found "
                                    f"{name!r:.60}")
        out_params = _params(out, f"outputs[{i}]: ")
        binary_out = _flag(out_params, "binary_data", f"outputs[{i}]", requested.binary_default)
        requested.names.append((name, binary_out))
        count = out_params.get("classification")
        if count is not None:
            requested.classify[name] = classification_count(model, name, count,
                                                             f"outputs[{i}]")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInputError(f"'id' must be a string, found {_type_name(rid)}")
    assert x is not None
    return x, requested, rid


def timeout_seconds(value: Any, what: str) -> float | None:
    """The 'timeout' request parameter (microseconds) in seconds; None when not given."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InvalidInputError(f"{what}: parameter 'timeout' must be a non-negative integer "
                                f"of microseconds, found {value!r:.40}")
    return value / 1e6 if value else None  # 0: no timeout of its own, as in Triton


def classification_count(model: ServedModel, name: str, count: Any, what: str) -> int:
    """The checked 'classification' count of an output (Triton's classification extension)."""
    if type(count) is not int or count < 1:
        raise InvalidInputError(f"{what}: parameter 'classification' must be a positive "
                                f"integer, found {count!r:.40}")
    if model.task not in ("multiclass", "binary", "multilabel"):
        raise InvalidInputError(f"{what}: the classification extension applies to "
                                f"classification models; model {model.name!r} is a "
                                f"{model.task or 'plain'} model (ask for its values instead)")
    if name != "probabilities":
        raise InvalidInputError(f"{what}: the classification extension applies to output "
                                f"'probabilities' (the class scores), found {name!r:.60}")
    return count


def output_tensors(model: ServedModel, out: Outputs, names: list[str],
                   classify: dict[str, int] | None = None
                   ) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, array) of each asked-for output; labels come from the classes, and
    an output in `classify` comes as its top classes ("score:index[:label]", BYTES)."""
    specs = {s.name: s for s in model.outputs}
    tensors = []
    for name in names:
        if classify and name in classify:
            tensors.append((name, "BYTES", model.top_classes(out, classify[name])))
            continue
        arr = model.label_array(out["classes"]) if name == "labels" else out[name]
        tensors.append((name, specs[name].datatype, arr))
    return tensors


def encode_response(model: ServedModel, out: Outputs, requested: Requested,
                    rid: Any) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when part of it is binary."""
    wanted = requested.names or [(s.name, requested.binary_default) for s in model.outputs]
    tensors = output_tensors(model, out, [n for n, _ in wanted], requested.classify)
    entries, blobs = [], []
    for (name, datatype, arr), (_, binary) in zip(tensors, wanted):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = bytes_tensor(arr) if datatype == "BYTES" else \
                np.ascontiguousarray(arr, DATATYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = [str(v) for v in arr.ravel().tolist()] if datatype == "BYTES" \
                else np.ascontiguousarray(arr).ravel()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version,
                           "outputs": entries}
    if rid is not None:
        doc["id"] = rid
    header = orjson.dumps(doc, option=NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
