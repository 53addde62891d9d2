"""The `.nnf` model file: save a Module with its metadata, load it back, read its manifest.

A `.nnf` file is a zip of stored entries: ``manifest.json`` (format version, library version,
task, labels, input/output specs (an input may name its feature columns: "names", optional
within format 1), preprocessing, metrics, parameter count and the sha256 of every other
entry), ``architecture.json`` (``Module.to_architecture()``) and ``weights.safetensors``.
Preprocessing is one step's config or a list of them applied in order (format 1 has both; an
"impute" step, which fills missing values, is one more step type, so a file without one reads
as before): steps of registered types are rebuilt and checked when the manifest is read,
others (a user's own dicts) are kept as they are.
Loading rebuilds layers only from ``nnforge.nn.LAYER_REGISTRY``: no pickle, no eval, no import
of names found in the file.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any, Iterable, Sequence

import numpy as np

from .. import __version__, backend
from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ModelFileError, NNForgeError
from ..nn import Linear, Module, layer_from_architecture
from ..nn.init import skip_init
from ..random import get_rng_state, set_rng_state
from ..runtime.postprocess import PostProcessor
from . import safetensors_format as st
from .archive import ArchiveReader, from_json, sha256_of, to_json, write_archive
from .rebuild import check_rebuilds, check_same_layers
from .target_scaling import folded_weights

FORMAT_VERSION = 1
TASKS = ("multiclass", "binary", "multilabel", "regression")
MANIFEST, ARCHITECTURE, WEIGHTS = "manifest.json", "architecture.json", "weights.safetensors"
#: preprocessing types whose config may say "dtype" (their parameters and outputs)
FLOAT_SCALERS = ("standardize", "minmax", "impute")
MAX_JSON_BYTES = 64 * 2**20  # JSON entries are metadata; anything larger is not ours
MAX_SAMPLE_ELEMENTS = 2**31  # per input/output sample; 8 GiB of float32
THREADED_HASH_BYTES = 4 * 2**20  # below this a second thread costs more than it saves
#: input dtypes a layer may declare as its own (`input_dtype`, an imported graph's)
_INPUT_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8",
                 "bool")
PathLike = str | os.PathLike


# -- saving ------------------------------------------------------------------------------------
def _input_shapes(model: Module, input_shape: Any) -> list[tuple[int, ...]]:
    """One per-sample shape per forward argument: a forward(self, a, b) takes a list of two
    shapes (input_shape=[(4,), (3,)]), any other model one shape (see _input_shape)."""
    from ..graph.trace import forward_arity, is_shape_list  # noqa: PLC0415 - graph imports io

    arity = forward_arity(model)
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if arity == 1:
        return [_input_shape(model, shape[0] if is_shape_list(shape) and len(shape) == 1
                             else input_shape)]
    if not is_shape_list(shape) or len(shape) != arity:
        found = "no input_shape" if shape is None else f"{shape!r:.80}"
        raise ConfigError(f"{type(model).__name__}.forward takes {arity} inputs; expected "
                          f"input_shape=[...] with one sample shape per argument, found {found}")
    return [_input_shape(model, s) for s in shape]


def _input_shape(model: Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The per-sample input shape: given, else model.input_shape, else a leading Linear's."""
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        # only a Linear that is the first layer with weights tells the model's input width
        first = next((m for m in model.modules() if m._parameters), None)
        if isinstance(first, Linear):
            shape = (first.in_features,)
    if shape is None:
        what = f"a {type(first).__name__}" if first is not None else "no layer with weights"
        raise ConfigError(f"cannot tell the model's input shape (the first module holding "
                          f"weights is {what}, not a Linear); pass input_shape=, the shape of "
                          f"one sample")
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
               for d in shape):
        raise ConfigError(f"input_shape must be positive integers (one sample, no batch "
                          f"dimension), found {shape!r}")
    return tuple(int(d) for d in shape)


def _input_names(model: Module, n: int) -> list[str]:
    """The inputs' names: an imported graph keeps its ONNX name, other models say "input"
    (input_0, input_1, ... for several: the names tracing gives them)."""
    if n > 1:
        return [f"input_{k}" for k in range(n)]
    name = getattr(model, "input_name", None)
    return [name if isinstance(name, str) and name else "input"]


def _input_dtypes(model: Module, n: int) -> list[str]:
    """The inputs' dtypes: an imported graph's own (int64 ids; tracing gives the graph input
    that dtype too, see onnx/graph_module.py), alone or first in a Sequential; any other
    model's the float dtype its weights are stored in."""
    first = model
    while type(first).__name__ == "Sequential" and first._modules:
        first = next(iter(first._modules.values()))
    own = getattr(first, "input_dtype", None)
    if n == 1 and isinstance(own, str) and own in _INPUT_DTYPES:
        return [own]
    return [_stored_float(model)] * n


def _output_specs(model: Module, shapes: list[tuple[int, ...]]) -> list[dict[str, Any]]:
    """Run a zero batch of two samples in eval mode to learn the output shapes and dtypes
    (two: a layer on batch statistics, BatchNorm without running stats, needs more than one)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad():
            out = model(*(np.zeros((2, *shape), dtype=model.dtype) for shape in shapes))
    except (NNForgeError, ValueError, TypeError, IndexError) as exc:
        batch = ", ".join(str((2, *shape)) for shape in shapes)
        raise ConfigError(f"running the model on a zero batch of shape {batch} failed "
                          f"({exc}); check input_shape") from None
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not outs or not all(isinstance(o, (Tensor, np.ndarray)) for o in outs):
        raise ConfigError(f"the model must return a Tensor (or a tuple of them), found "
                          f"{type(out).__name__}")
    names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    own = getattr(model, "output_names", None)  # an imported graph keeps its ONNX names
    if isinstance(own, list) and len(own) == len(outs) and all(
            isinstance(n, str) and n for n in own):
        names = own
    # floating outputs come in the dtype the weights are stored in
    return [{"name": n, "shape": [None, *o.shape[1:]],
             "dtype": _stored_float(model) if backend.is_float_dtype(o.dtype) else str(o.dtype)}
            for n, o in zip(names, outs)]


def _stored_float(model: Module) -> str:
    """The float dtype the weights are stored in: float64 for a float64 model, else float32."""
    return "float64" if model.dtype == np.float64 else "float32"


def _labels(task: str | None, labels: Any, outputs: list[dict[str, Any]]) -> list[Any] | None:
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {list(TASKS)} or None, found {task!r}")
    if labels is None:
        return None
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)) or not all(
            isinstance(x, (str, int, np.integer)) and not isinstance(x, bool) for x in labels):
        raise ConfigError(f"labels must be a list of strings or integers, found {labels!r:.80}")
    labels = [x if isinstance(x, str) else int(x) for x in labels]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"labels must be distinct, found {labels!r:.120}")
    width = outputs[0]["shape"][-1] if len(outputs[0]["shape"]) > 1 else 1
    expected = 2 if task == "binary" else width
    if task is not None and len(labels) != expected:
        what = "(negative, positive)" if task == "binary" else f"(the model has {width} outputs)"
        raise ConfigError(f"a {task} model needs {expected} labels {what}, found {len(labels)}")
    return labels


def _check_task(task: str | None, labels: list[Any] | None,
                outputs: list[dict[str, Any]]) -> None:
    """ConfigError when the task does not fit the model's first output: the rules predict
    applies (PostProcessor.allocate), checked now rather than at the first request."""
    try:
        PostProcessor(task, labels, None).allocate(0, tuple(outputs[0]["shape"][1:]), np.float32)
    except ConfigError as exc:
        raise ConfigError(f"task={task!r} does not fit the model (one sample's output has "
                          f"shape {tuple(outputs[0]['shape'][1:])}): {exc}") from None


def _check_preprocessing(config: Any, shape: tuple[int, ...]) -> None:
    """ConfigError when a fitted feature scaler expects other samples than the model takes.

    Each config is rebuilt as InferenceSession rebuilds it; types it does not know are left
    alone here.
    """
    from ..data.preprocessing import preprocessing_from_config  # noqa: PLC0415

    for cfg in config if isinstance(config, list) else [config]:
        if isinstance(cfg, list):
            _check_preprocessing(cfg, shape)
            continue
        try:
            fitted = getattr(preprocessing_from_config(cfg), "sample_shape", None)
        except (NNForgeError, TypeError, ValueError):
            continue
        if fitted is None or tuple(fitted) == shape:
            continue
        if len(fitted) == len(shape) == 1:
            raise ConfigError(f"the model takes {shape[0]} features, the preprocessing was "
                              f"fitted on {fitted[0]}")
        raise ConfigError(f"the model takes samples of shape {shape}, the preprocessing was "
                          f"fitted on samples of shape {tuple(fitted)}")


def _preprocessing(pre: Any, dtype: str = "float32") -> Any:
    """JSON config of the preprocessing: an object with get_config(), a list of them, a dict.

    For a float64 model the scalers are marked float64, so that they feed it float64 values.
    """
    if isinstance(pre, (list, tuple)):
        return [_preprocessing(p, dtype) for p in pre]
    if pre is not None and not isinstance(pre, dict):
        if not callable(getattr(pre, "get_config", None)):
            raise ConfigError(f"preprocessing must be an object with get_config(), a list of "
                              f"them or a dict, found {type(pre).__name__}")
        pre = pre.get_config()
        if isinstance(pre, list):  # a Pipeline's steps
            return _preprocessing(pre, dtype)
    if dtype == "float64" and isinstance(pre, dict) and pre.get("type") in FLOAT_SCALERS:
        pre = {**pre, "dtype": pre.get("dtype", "float64")}
    return pre


def _feature_names(names: Any, shapes: list[tuple[int, ...]]) -> list[str] | None:
    """The input's feature (column) names, checked: one distinct name per feature of a model
    that takes flat rows; readers match CSV headers against them."""
    if names is None:
        return None
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"feature_names must be a list of non-empty strings, found "
                          f"{names!r:.80}")
    if len(shapes) != 1 or len(shapes[0]) != 1:
        raise ConfigError(f"feature_names name the columns of a model that takes rows of "
                          f"features; expected one input of shape (features,), found "
                          f"{', '.join(map(str, shapes))}")
    if len(names) != shapes[0][0] or len(set(names)) != len(names):
        raise ConfigError(f"expected {shapes[0][0]} distinct feature_names (one per feature), "
                          f"found {list(names)!r:.120}")
    return list(names)


def _metrics(metrics: Any) -> dict[str, float | None] | None:
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        raise ConfigError(f"metrics must be a dict of name -> number, found "
                          f"{type(metrics).__name__}")
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(
                v, (int, float, np.integer, np.floating)):
            raise ConfigError(f"metrics must map names to numbers, found {k!r}: {v!r:.40}")
        out[k] = float(v) if math.isfinite(v) else None  # JSON has no NaN; null means undefined
    return out


def _extra(extra: Any) -> dict[str, Any] | None:
    if extra is not None and not isinstance(extra, dict):  # load() would refuse the file
        raise ConfigError(f"extra must be a dict or None, found {type(extra).__name__}")
    return extra


def _named_arrays(model: Module) -> list[tuple[str, Any]]:
    """(state-dict name, array) of every parameter and buffer, without state_dict()'s copies."""
    return ([(k, p.data) for k, p in model.named_parameters()]
            + [(k, b) for k, b in model.named_buffers()])


def _weights(model: Module) -> dict[str, np.ndarray]:
    """The arrays to store: floats as float32 (float64 for a float64 model, bit-exact), integer
    buffers as they are."""
    dtype = np.dtype(_stored_float(model))
    out = {}
    for k, v in _named_arrays(model):
        v = backend.to_numpy(v)
        out[k] = v.astype(dtype, copy=False) if backend.is_float_dtype(v.dtype) else v
    return out


def _refuse_tied(model: Module) -> None:
    """The architecture would rebuild shared layers as independent ones: refuse, don't untie."""
    first: dict[int, str] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m._parameters.items():
            name = f"{mname}.{pname}" if mname else pname
            if first.setdefault(id(p), name) != name:
                raise ConfigError(f"parameter {first[id(p)]!r} is shared with {name!r}; tied "
                                  f"weights cannot be saved")


def build_entries(model: Module, kind: str, task: str | None = None, labels: Any = None,
                  preprocessing: Any = None, metrics: Any = None,
                  input_shape: Sequence[int] | None = None, extra: dict[str, Any] | None = None,
                  more: Iterable[tuple[str, Sequence[bytes | memoryview]]] = (),
                  feature_names: Sequence[str] | None = None, target_scaler: Any = None
                  ) -> tuple[list[tuple[str, Sequence[bytes | memoryview]]], datetime]:
    """Every entry of the file, manifest first (it carries the others' checksums)."""
    if not isinstance(model, Module):
        raise ConfigError(f"expected an nnforge.nn.Module, found {type(model).__name__}")
    arch = to_json(model.to_architecture(), "the architecture")
    _refuse_tied(model)
    twin = check_rebuilds(model, arch)  # a file that saves must load...
    shapes = _input_shapes(model, input_shape)
    outputs = _output_specs(model, shapes)
    check_same_layers(model, twin, arch, shapes)  # ...as the model saved (after the model ran)
    del twin
    labels = _labels(task, labels, outputs)
    _check_task(task, labels, outputs)
    pre = _preprocessing(preprocessing, _stored_float(model))
    if pre and len(shapes) > 1:  # predict() and the server apply it to the one input
        raise ConfigError(f"preprocessing applies to a model with one input; expected none for "
                          f"{type(model).__name__}, found {len(shapes)} inputs")
    _check_preprocessing(pre, shapes[0])
    names = _feature_names(feature_names, shapes)
    weights, scaling = _weights(model), None
    if target_scaler is not None:
        if task != "regression":
            raise ConfigError(f"target_scaler applies to task='regression' (its predictions are "
                              f"turned back into the targets' units), found task={task!r}")
        folded, scaling = folded_weights(model, target_scaler, outputs[0]["shape"])
        # into the file's copy only: the caller's model keeps predicting in scaled units
        weights.update({k: v.astype(weights[k].dtype) for k, v in folded.items()})
    header, views = st.encode(weights, {"format": "nnforge"})
    entries = [(ARCHITECTURE, [arch]), (WEIGHTS, [header, *views]), *more]
    now = datetime.now(UTC).replace(microsecond=0)
    manifest = {
        "format": "nnforge-model", "format_version": FORMAT_VERSION,
        "library": "nnforge", "library_version": __version__,
        "created": now.isoformat().replace("+00:00", "Z"), "kind": kind,
        "task": task, "labels": labels,
        # "names" (optional, since format 1 files may lack it): the feature columns' names
        "inputs": [{"name": name, "shape": [None, *shape], "dtype": dtype}
                   | ({"names": names} if names else {})
                   for name, shape, dtype in zip(_input_names(model, len(shapes)), shapes,
                                                 _input_dtypes(model, len(shapes)))],
        "outputs": outputs,
        "preprocessing": pre,
        # present when save() folded a target scaler's inverse into the final Linear layer
        **({"target_scaling": scaling} if scaling else {}),
        "metrics": _metrics(metrics),
        "num_parameters": model.num_parameters(), "extra": _extra(extra),
        "checksums": {name: sha256_of(chunks) for name, chunks in entries},
    }
    return [(MANIFEST, [to_json(manifest, "the manifest")]), *entries], now


def save(model: Module, path: PathLike, task: str | None = None, labels: Any = None,
         preprocessing: Any = None, metrics: dict[str, float] | None = None,
         input_shape: Sequence[int] | None = None, extra: dict[str, Any] | None = None,
         feature_names: Sequence[str] | None = None, target_scaler: Any = None) -> None:
    """Write model and its metadata to a `.nnf` file, atomically (an old file stays on error).

    feature_names: the names of the input's feature columns (a CSV header's), so that readers
    can match a file's columns by name rather than by position. target_scaler: for
    task="regression", the fitted Standardizer or MinMaxScaler the training targets were
    scaled with; its inverse is folded into the file's copy of the final Linear layer, so the
    saved model predicts in the targets' own units (the manifest's "target_scaling" says so).

    path: the parent directories are made as needed; an existing file is replaced (keeping its
    permissions) unless it is read-only: a file without write permission (mode 0o444, say) is
    refused with a ModelFileError, as cp, np.save and torch.save refuse it, even for root,
    rather than silently renamed over. A directory, a device or a path under a file is refused
    the same way, and an empty path with a ConfigError. Temp files of this path left by saves
    whose process died (kill -9) are removed; those of saves still running are never touched.
    """
    entries, now = build_entries(model, "model", task, labels, preprocessing, metrics,
                                 input_shape, extra, feature_names=feature_names,
                                 target_scaler=target_scaler)
    write_archive(path, entries, now.timetuple()[:6])


# -- loading -----------------------------------------------------------------------------------
def _check_manifest(m: Any, p: str) -> dict[str, Any]:
    """Version first (a newer file may be laid out differently), then the fields we rely on."""
    if not isinstance(m, dict):
        raise ModelFileError(f"manifest of '{p}' must be a JSON object, found {type(m).__name__}")
    v = m.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ModelFileError(f"manifest of '{p}' has format_version {v!r}, expected an integer "
                             f"from 1 to {FORMAT_VERSION}")
    if v > FORMAT_VERSION:
        raise ModelFileError(f"'{p}' was written by format version {v}, this nnforge "
                             f"({__version__}) reads up to {FORMAT_VERSION}; upgrade nnforge")

    def bad(field: str, expected: str) -> ModelFileError:
        return ModelFileError(f"manifest of '{p}': field '{field}' must be {expected}, found "
                              f"{m.get(field)!r:.80}")

    sums = m.get("checksums")
    if not isinstance(sums, dict) or not all(
            isinstance(s, str) and s.startswith("sha256:") and len(s) == 71 for s in sums.values()):
        raise bad("checksums", "an object of entry name -> 'sha256:<hex>'")
    if m.get("task") is not None and m.get("task") not in TASKS:
        raise bad("task", f"one of {list(TASKS)} or null")
    for field in ("inputs", "outputs"):
        specs = m.get(field)
        # the session traces with these names and shapes: a bad one would fail far from here
        if not isinstance(specs, list) or not specs or not all(
                isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"]
                and isinstance(s.get("dtype"), str) and _spec_shape(s.get("shape"))
                for s in specs):
            raise bad(field, "a non-empty list of {name, shape: [null, sizes...], dtype} objects")
    names = m["inputs"][0].get("names")
    if names is not None:
        try:  # the CLI matches CSV headers against them
            _feature_names(names, [tuple(s["shape"][1:]) for s in m["inputs"]])
        except ConfigError as exc:
            raise ModelFileError(f"manifest of '{p}': input 'names': {exc}") from None
    if not isinstance(m.get("preprocessing"), (dict, list, type(None))):
        raise bad("preprocessing", "an object, a list or null")
    _check_stored_preprocessing(m["preprocessing"], p)
    # readers (nnforge info, the server) look inside them
    for field in ("extra", "metrics", "target_scaling"):
        if not isinstance(m.get(field), (dict, type(None))):
            raise bad(field, "an object or null")
    if m.get("metrics") and not all(v is None or (isinstance(v, (int, float))
                                                  and not isinstance(v, bool))
                                    for v in m["metrics"].values()):
        raise bad("metrics", "an object of name -> number or null")
    n = m.get("num_parameters", 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise bad("num_parameters", "a non-negative integer")
    if m.get("labels") is not None:
        try:  # the rules save() applied: predictions index these labels by class
            _labels(m.get("task"), m["labels"], m["outputs"])
        except ConfigError as exc:
            raise ModelFileError(f"manifest of '{p}': {exc}") from None
    return m


def _check_stored_preprocessing(config: Any, p: str) -> None:
    """ModelFileError for a damaged step of a registered type: predict would apply it.

    Steps of other types (a user's own dicts, which save() keeps) are left to their readers.
    """
    from ..data.preprocessing import PREPROCESSORS, preprocessing_from_config  # noqa: PLC0415

    steps, pending = [], [config]
    while pending:  # flattened without recursion: a damaged file may nest lists deeply
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, dict):
            steps.append(item)
    for i, cfg in enumerate(steps):
        kind = cfg.get("type")
        if not isinstance(kind, str) or kind not in PREPROCESSORS:
            continue
        try:
            preprocessing_from_config(cfg)
        except (NNForgeError, TypeError, ValueError) as exc:
            raise ModelFileError(f"manifest of '{p}': preprocessing step {i + 1} ({kind!r}) is "
                                 f"damaged: {exc}") from None


def _spec_shape(shape: Any) -> bool:
    """True for [null, size, ...]: a batch dimension, then sizes (null where any size goes)."""
    return (isinstance(shape, list) and len(shape) >= 1 and shape[0] is None
            and all(d is None or (type(d) is int and d >= 0) for d in shape[1:])
            # save() ran the model on one such sample: a bigger one is damage, not a model
            and math.prod(d or 1 for d in shape[1:]) <= MAX_SAMPLE_ELEMENTS)


def _open_checked(path: PathLike) -> tuple[ArchiveReader, dict[str, Any]]:
    """Open the archive, read the manifest and check that it accounts for every entry."""
    ar = ArchiveReader(path)
    try:
        p = ar.path
        if MANIFEST not in ar:
            raise ModelFileError(f"'{p}' is not an nnforge model file (it has no {MANIFEST})")
        manifest = _check_manifest(
            from_json(ar.read(MANIFEST, limit=MAX_JSON_BYTES), f"{MANIFEST} of '{p}'"), p)
        listed, present = set(manifest["checksums"]), set(ar.entries) - {MANIFEST}
        for name in sorted(present - listed):
            raise ModelFileError(f"'{p}' holds an entry {name!r} that its manifest does not "
                                 f"list; refusing a file that may have been tampered with")
        for name in sorted(listed - present) or sorted({ARCHITECTURE, WEIGHTS} - present):
            raise ModelFileError(f"'{p}' is missing the entry {name!r}")
        return ar, manifest
    except BaseException:
        ar.close()
        raise


def read_json_entry(ar: ArchiveReader, manifest: dict[str, Any], name: str) -> Any:
    """A checksummed JSON entry, parsed."""
    data = ar.read(name, manifest["checksums"].get(name), limit=MAX_JSON_BYTES)
    return from_json(data, f"{name} of '{ar.path}'")


def read_tensors(ar: ArchiveReader, manifest: dict[str, Any], name: str) -> dict[str, np.ndarray]:
    """A checksummed safetensors entry as read-only arrays viewing the file's memory map."""
    data = ar.read(name, manifest["checksums"].get(name))
    return st.deserialize(data, f"{name} of '{ar.path}'")[0]


#: most layer entries an architecture may hold: a few bytes of JSON per entry would otherwise
#: build millions of modules (seconds and gigabytes) before anything else is checked
MAX_MODULES = 100_000


def _check_module_count(arch: Any, p: str) -> None:
    """ModelFileError when the architecture names more than MAX_MODULES layers."""
    count, todo = 0, [arch]
    while todo:  # a loop, not recursion: the JSON may nest deeply
        item = todo.pop()
        if isinstance(item, dict):
            count += "type" in item
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        if count > MAX_MODULES:
            raise ModelFileError(f"cannot rebuild the model in '{p}': its architecture has "
                                 f"more than {MAX_MODULES} layers (damaged or hostile)")


def _build_layers(arch: Any, p: str) -> Module:
    """Rebuild the layers, using only registered layer types."""
    _check_module_count(arch, p)
    rng = get_rng_state()  # building draws initial weights; loading must not move the stream
    try:
        with skip_init():  # the file's weights replace them all, after their shapes are checked
            return layer_from_architecture(arch)
    except (NNForgeError, TypeError, ValueError, KeyError, IndexError, RecursionError) as exc:
        raise ModelFileError(f"cannot rebuild the model in '{p}': {exc}") from None
    except MemoryError:  # layer sizes in a damaged architecture can ask for terabytes
        raise ModelFileError(f"cannot rebuild the model in '{p}': its architecture asks for "
                             f"more memory than there is (damaged, or not matching its "
                             f"weights)") from None
    finally:
        set_rng_state(rng)


def _retype_unfilled(model: Module, dtype: Any) -> None:
    """Give every float parameter and buffer a new array of dtype instead of a cast copy (as
    model.to would make): built under skip_init they hold uninitialised memory, whose NaN bit
    patterns make the cast warn, and the file's weights fill every one of them next."""
    for m in model.modules():
        for p in m._parameters.values():
            if p.data.dtype.kind == "f":
                p.data, p.grad = np.empty_like(p.data, dtype=dtype), None
        for name in m._buffers:
            arr = getattr(m, name)
            if arr is not None and arr.dtype.kind == "f":
                object.__setattr__(m, name, np.empty_like(arr, dtype=dtype))


def _fill(model: Module, weights: dict[str, np.ndarray], p: str) -> None:
    """Copy the weights into the model after checking every name and shape."""
    expected = {k: tuple(v.shape) for k, v in _named_arrays(model)}
    for k in expected:
        if k not in weights:
            raise ModelFileError(f"{WEIGHTS} of '{p}' lacks the weight {k!r} that the "
                                 f"architecture needs")
    for k, arr in weights.items():
        if k not in expected:
            raise ModelFileError(f"{WEIGHTS} of '{p}' holds a weight {k!r} that the "
                                 f"architecture has no place for")
        if arr.shape != expected[k]:
            raise ModelFileError(f"weight {k!r} in '{p}' has shape {arr.shape}, the architecture "
                                 f"needs {expected[k]}")
    # float64 weights (from a float64 model) make a float64 model; float32 ones stay float32
    if any(v.dtype == np.float64 for v in weights.values()):
        _retype_unfilled(model, np.float64)
    try:
        model.load_state_dict(weights)
    except (NNForgeError, ValueError, TypeError) as exc:
        raise ModelFileError(f"cannot load the weights of '{p}': {exc}") from None


def open_model(path: PathLike) -> tuple[Module, dict[str, Any], ArchiveReader]:
    """The model, its manifest and the still-open archive (for checkpoint entries)."""
    ar, manifest = _open_checked(path)
    try:
        # hashing big weights takes as long as building the layers (which draws initial
        # weights), and hashlib releases the GIL: do both at once; the pool waits on errors
        threaded = ar.entries[WEIGHTS].file_size > THREADED_HASH_BYTES
        with ThreadPoolExecutor(max_workers=1) if threaded else nullcontext() as pool:
            pending = pool.submit(read_tensors, ar, manifest, WEIGHTS) if pool else None
            model = _build_layers(read_json_entry(ar, manifest, ARCHITECTURE), ar.path)
            weights = pending.result() if pending else read_tensors(ar, manifest, WEIGHTS)
            _fill(model, weights, ar.path)
        del weights, pending  # release the views so the map can close
    except BaseException:
        ar.close()
        raise
    model.eval()
    object.__setattr__(model, "manifest", manifest)  # plain attribute, not a registered child
    if not hasattr(model, "input_shape"):  # so a re-save needs no input_shape=
        shapes = [tuple(spec["shape"][1:]) for spec in manifest["inputs"]]
        object.__setattr__(model, "input_shape", shapes[0] if len(shapes) == 1 else shapes)
    return model, manifest, ar


def load(path: PathLike) -> Module:
    """Load a `.nnf` file as a Module in eval mode; `model.manifest` holds its metadata."""
    model, _, ar = open_model(path)
    ar.close()
    return model


def read_manifest(path: PathLike) -> dict[str, Any]:
    """Only the manifest (no weights are read or hashed): fast, for `nnforge info`."""
    ar, manifest = _open_checked(path)
    ar.close()
    return manifest


def read_weights(path: PathLike) -> dict[str, np.ndarray]:
    """The weights as read-only arrays mapped from the file (no copy; checksum verified)."""
    ar, manifest = _open_checked(path)
    try:
        return read_tensors(ar, manifest, WEIGHTS)
    finally:
        ar.close()  # the map stays alive as long as the arrays do
