"""The save-time checks that the architecture about to be written rebuilds the model being
saved, along the path load() takes: the same weights (names and shapes, so a file that saves
also loads) and the same layers (so that it loads as the model that was saved).

Why the layers are checked two ways (check_same_layers):

- settings: each layer's plain public attributes (numbers, bools, strings, None, lists and
  tuples of them) are compared with those of its twin rebuilt from the config. This names the
  layer, the attribute and both values, and it catches settings that matter only in training
  (a custom dropout's p) or only for some inputs, which no probe batch could show. Such a
  difference refuses the save when the probe differs too, and is a UserWarning otherwise.
  Skipped, because a false refusal costs the user the save itself: private attributes
  ("_cache", "_warned": mostly caches and flags, left to the probe), `training`, parameters,
  buffers and sub-layers (checked as weights), attributes only one side has (set after
  construction, as load() sets input_shape), values the config cannot determine (a random
  draw, a counter or a clock read in __init__: two rebuilds disagree on them) and values a
  forward pass changes (runtime state, not settings).
- probe: the model and its twin, holding the very same weight arrays, run one small fixed
  batch in eval mode and must agree bit for bit (same arrays, same code: a difference can only
  come from the config). This catches what attributes cannot show (a setting kept in a private
  attribute, a sub-layer of another type). It refuses nothing when the model alone does not
  repeat its output on that batch, and it restores everything it touches: modes, attributes,
  the random generators.
"""

from __future__ import annotations

import copy
import inspect
import random
import warnings
from typing import Any, NamedTuple

import numpy as np

from .. import backend
from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ModelFileError
from ..nn import Module
from ..random import get_rng, get_rng_state, set_rng_state
from .archive import from_json, to_json

Shapes = dict[str, tuple[int, ...]]
_SCALARS = (bool, int, float, str, type(None), np.bool_, np.integer, np.floating)
_MODE = ("training",)  # train/eval mode: the loaded model is put in eval mode anyway


def _difference(want: Shapes, got: Shapes, prefix: str) -> str | None:
    """The first weight that differs between the model (want) and its rebuild (got), named
    as in the whole model's state dict."""
    for k, shape in want.items():
        if k not in got:
            return f"has no weight {prefix + k!r}"
        if got[k] != shape:
            return f"gives weight {prefix + k!r} the shape {got[k]} where the model has {shape}"
    extra = next((k for k in got if k not in want), None)
    return None if extra is None else f"has a weight {prefix + extra!r} the model lacks"


def _build(arch: Any) -> Module:
    """The module load() would build from arch (ModelFileError if it cannot); the global
    generators a custom __init__ may draw from are put back (nnforge's: by _build_layers)."""
    from .model_file import _build_layers  # noqa: PLC0415 (model_file imports this)

    states = np.random.get_state(), random.getstate()
    try:
        return _build_layers(arch, "")
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])


def _rebuild_problem(m: Module, arch: Any, prefix: str = "") -> tuple[str | None, Module | None]:
    """(why arch does not rebuild m's weights or None, the rebuilt module or None)."""
    from .model_file import _named_arrays  # noqa: PLC0415 (model_file imports this)

    try:
        rebuilt = _build(arch)
    except ModelFileError as exc:
        return f"fails ({str(exc).split(': ', 1)[-1]})", None  # the cause, not the file wording
    return _difference({k: tuple(v.shape) for k, v in _named_arrays(m)},
                       {k: tuple(v.shape) for k, v in _named_arrays(rebuilt)}, prefix), rebuilt


def _solo_arch(m: Module) -> Any:
    """m's own architecture, through JSON as the file holds it."""
    return from_json(to_json(m.to_architecture(), "the architecture"), "the architecture")


def check_rebuilds(model: Module, arch: bytes) -> Module:
    """The model rebuilt from the architecture JSON about to be written (fresh weights); a
    ConfigError naming the layer when it would not have the model's parameters and buffers
    (names and shapes) when the file is loaded."""
    problem, rebuilt = _rebuild_problem(model, from_json(arch, "the architecture"))
    if problem is None and rebuilt is not None:
        return rebuilt
    # find the layer at fault: children come before their parents in reversed pre-order, so
    # the first layer that does not rebuild alone is one whose sub-layers all do (a parent
    # that builds correct children wrongly is then at fault itself)
    for name, m in reversed(list(model.named_modules())):
        cfg = _solo_arch(m)
        problem = _rebuild_problem(m, cfg, f"{name}." if name else "")[0]
        if problem is not None:
            raise ConfigError(
                f"{_where(name, m)} would not load back from the file: rebuilt from its config "
                f"{cfg['config']!r:.120} it {problem}. Its get_config() must return the "
                f"arguments of its __init__ (implement get_config on the registered layer)")
    raise ConfigError("the saved architecture would not rebuild the model's weights; check "
                      "the get_config() of its custom layers")


# -- settings ----------------------------------------------------------------------------------
class _Lost(NamedTuple):
    """An attribute whose value the config does not carry back."""

    path: str  # the layer's path in the model ("" for the model itself)
    attr: str
    saved: Any  # the value in the model
    rebuilt: Any  # the value in the model rebuilt from the config


def _where(path: str, m: Module) -> str:
    return f"layer {path!r} ({type(m).__name__})" if path else f"the model ({type(m).__name__})"


def _plain(v: Any, depth: int = 0) -> bool:
    """A value a config can carry and == can compare: numbers, strings, None, sequences."""
    if isinstance(v, _SCALARS):
        return True
    return isinstance(v, (list, tuple)) and depth < 8 and all(_plain(x, depth + 1) for x in v)


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: a tuple equals the list JSON turns it into, NaN equals NaN."""
    seqs = isinstance(a, (list, tuple)), isinstance(b, (list, tuple))
    if any(seqs):
        return all(seqs) and len(a) == len(b) and all(map(_same, a, b))
    if a is None or b is None:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return a == b  # a string never equals a number
    return bool(a == b) or (a != a and b != b)  # noqa: PLR0124 (NaN is not equal to itself)


def _settings(m: Module, private: bool) -> dict[str, Any]:
    """m's own plain attributes: not its weights, sub-layers or mode."""
    held = {*m._parameters, *m._buffers, *m._modules, *_MODE}
    return {k: v for k, v in vars(m).items()
            if k not in held and (private or not k.startswith("_")) and _plain(v)}


def _lost_settings(model: Module, twin: Module, other: Module, private: bool,
                   runtime: set[tuple[str, str]]) -> list[_Lost]:
    """Attributes of the model's layers that differ in its twin, in pre-order; other is a
    second rebuild (under another random state), to skip what the config cannot determine."""
    twins, others = dict(twin.named_modules()), dict(other.named_modules())
    lost = []
    for path, m in model.named_modules():
        t, o = twins.get(path), others.get(path)
        if t is None or o is None or type(t) is not type(m):
            continue  # a different layer: the weight check or the probe speaks for it
        rebuilt, again = _settings(t, private), _settings(o, private)
        for k, v in _settings(m, private).items():
            if (k in rebuilt and k in again and (path, k) not in runtime
                    and _same(rebuilt[k], again[k]) and not _same(v, rebuilt[k])):
                lost.append(_Lost(path, k, v, rebuilt[k]))
    return lost


def _sub_layer_changes(model: Module, twin: Module) -> list[str]:
    """Sub-layers the twin lacks or has of another type, described."""
    twins = dict(twin.named_modules())
    out = []
    for path, m in model.named_modules():
        t = twins.get(path)
        if t is None:
            out.append(f"{_where(path, m)} is missing from the rebuilt model")
        elif type(t) is not type(m):
            out.append(f"{_where(path, m)} is a {type(t).__name__} in the rebuilt model")
    return out


def _build_elsewhere(arch: Any) -> Module:
    """A second rebuild under other random states: settings drawn at random in __init__ then
    differ from the first rebuild's, which shows that the config cannot determine them."""
    states = get_rng_state(), np.random.get_state(), random.getstate()
    try:
        get_rng().random(), np.random.random(), random.random()  # move each generator on
        return _build(arch)
    finally:
        set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


# -- probe -------------------------------------------------------------------------------------
class _Saved:
    """Everything a forward pass could change on a set of modules, to put back afterwards:
    their attributes (by identity, plus copies of plain values changed in place), their
    registries and the random generators."""

    def __init__(self, *roots: Module) -> None:
        self.modules = [(path, m) for r in roots for path, m in r.named_modules()]
        self.attrs = {id(m): dict(vars(m)) for _, m in self.modules}
        self.plain = {id(m): copy.deepcopy(_settings(m, True)) for _, m in self.modules}
        self.registries = {id(m): [dict(m._parameters), dict(m._buffers), dict(m._modules)]
                           for _, m in self.modules}
        self.rng = get_rng_state(), np.random.get_state(), random.getstate()

    def reset_rng(self) -> None:
        """The generators as they were: a layer drawing in eval mode draws the same numbers."""
        set_rng_state(self.rng[0])
        np.random.set_state(self.rng[1])
        random.setstate(self.rng[2])

    def changed(self) -> set[tuple[str, str]]:
        """(path, attribute) of every plain attribute changed since: runtime state."""
        out = set()
        for path, m in self.modules:
            now, was = _settings(m, True), self.plain[id(m)]
            out.update((path, k) for k in now.keys() | was.keys()
                       if k not in now or k not in was or not _same(now[k], was[k]))
        return out

    def restore(self) -> None:
        """Put back every attribute, registry and generator state."""
        for _, m in self.modules:
            attrs, plain = self.attrs[id(m)], self.plain[id(m)]
            for k in [k for k in vars(m) if k not in attrs]:
                object.__delattr__(m, k)
            for k, v in attrs.items():
                if vars(m).get(k, attrs) is not v:
                    object.__setattr__(m, k, v)
                elif isinstance(v, list) and k in plain and not _same(v, plain[k]):
                    v[:] = plain[k]  # changed in place: the user's own list object kept
            for live, was in zip((m._parameters, m._buffers, m._modules), self.registries[id(m)]):
                if live != was:
                    live.clear()
                    live.update(was)
        self.reset_rng()


def _share_weights(twin: Module, model: Module) -> None:
    """Point the twin's parameters and buffers at the model's own arrays (no copy: the probe
    runs in eval mode, which writes to none of them)."""
    params = dict(model.named_parameters())
    for k, p in twin.named_parameters():
        p.data = params[k].data
    buffers = dict(model.named_buffers())
    for path, m in twin.named_modules():
        for b in m._buffers:
            key = f"{path}.{b}" if path else b
            if getattr(m, b) is not None and key in buffers:
                object.__setattr__(m, b, buffers[key])


def _probe_batch(model: Module, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Two fixed samples per input, of a local generator (the user's generators stay put);
    not zeros, which a lost scale factor times a zero bias would not show."""
    gen = np.random.default_rng(20240607)
    return [gen.standard_normal((2, *s)).astype(model.dtype) for s in shapes]


def _outputs(out: Any) -> list[np.ndarray] | None:
    """The forward's output as host arrays (None if it is not a Tensor or a sequence of them)."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not all(isinstance(o, (Tensor, np.ndarray)) for o in outs):
        return None
    return [backend.to_numpy(o.data if isinstance(o, Tensor) else o) for o in outs]


def _disagreement(a: list[np.ndarray], b: list[np.ndarray]) -> str | None:
    """How the twin's outputs b differ from the model's a (None if equal bit for bit)."""
    if len(a) != len(b):
        return f"{len(b)} outputs where the model gives {len(a)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            return f"output {i} of shape {y.shape} where the model gives {x.shape}"
        nan = backend.is_float_dtype(x.dtype) and backend.is_float_dtype(y.dtype)
        if not np.array_equal(x, y, equal_nan=nan):
            gap = np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0)
            return f"output {i} differs from the model's by up to {gap:.3g}"
    return None


def _run(module: Module, batch: list[np.ndarray], saved: _Saved) -> list[np.ndarray] | None:
    saved.reset_rng()
    module.eval()
    with no_grad():
        return _outputs(module(*batch))


def _repeats(model: Module, batch: list[np.ndarray], saved: _Saved,
             first: list[np.ndarray] | None) -> bool:
    """Whether a second run of the model gives its first output again, bit for bit."""
    try:
        again = _run(model, batch, saved)
    except Exception:  # noqa: BLE001 - a model that fails the second time is not repeatable
        return False
    return first is not None and again is not None and _disagreement(first, again) is None


def _probe(model: Module, twin: Module,
           shapes: list[tuple[int, ...]]) -> tuple[str | None, set[tuple[str, str]]]:
    """(how the twin computes differently from the model on a probe batch, or None when it
    does not or the probe cannot tell; the attributes the forward passes changed)."""
    batch, saved = _probe_batch(model, shapes), _Saved(model, twin)
    try:
        try:
            mine = _run(model, batch, saved)
        except Exception:  # noqa: BLE001 - the model's own failure is not the config's
            return None, saved.changed()
        try:
            theirs = _run(twin, batch, saved)
        except Exception as exc:  # noqa: BLE001 - where the model ran, its rebuild must too
            return (f"the rebuilt model fails ({type(exc).__name__}: {exc!s:.200})",
                    saved.changed())
        found = None if mine is None or theirs is None else _disagreement(mine, theirs)
        # a difference counts only if the model repeats its own output (no unseeded draws)
        if found is not None and _repeats(model, batch, saved, mine):
            return found, saved.changed()
        return None, saved.changed()
    finally:
        saved.restore()


# -- the error ---------------------------------------------------------------------------------
def _at_fault(model: Module, item: _Lost) -> tuple[str, Module]:
    """(path, layer) whose own config loses the setting: the layer itself, or the nearest
    layer above it whose rebuild alone already shows the loss (a parent that builds its
    sub-layer from a setting it does not save)."""
    path = item.path
    while True:
        m = _layer(model, path)
        rel = item.path[len(path):].lstrip(".")
        try:
            solo = _layer(_build(_solo_arch(m)), rel)
        except Exception:  # noqa: BLE001 - not rebuildable alone: ask the layer above
            solo = None
        if solo is not None and item.attr in vars(solo) and not _same(
                item.saved, vars(solo)[item.attr]):
            return path, m
        if not path:
            return item.path, _layer(model, item.path)
        path = path.rpartition(".")[0]


def _layer(model: Module, path: str) -> Module:
    """The layer at a path of named_modules() (KeyError if there is none)."""
    return dict(model.named_modules())[path]


def _init_takes(m: Module, attr: str) -> bool:
    try:
        return attr in inspect.signature(type(m).__init__).parameters
    except (TypeError, ValueError):
        return False


def _settings_error(model: Module, lost: list[_Lost]) -> ConfigError:
    """One error for the first layer that loses settings: where, what, both values, the fix."""
    first = lost[0]
    mine = [x for x in lost if x.path == first.path]
    layer = _layer(model, first.path)
    values = "; ".join(f"{x.attr} is {x.saved!r:.60} in the model but {x.rebuilt!r:.60} when "
                       f"rebuilt" for x in mine)
    path, owner = _at_fault(model, first)
    cls = type(owner).__name__
    if path == first.path:
        names = " and ".join(x.attr if _init_takes(owner, x.attr)
                             else f"the __init__ argument that sets {x.attr}" for x in mine)
        fix = f"return {names} from {cls}.get_config()"
    else:
        fix = (f"its own config is complete, so {_where(path, owner)}, which builds it, must "
               f"return the __init__ argument that sets it from {cls}.get_config()")
    return ConfigError(
        f"{_where(first.path, layer)} would load back changed: {values} from the config "
        f"{_config_of(owner)} (the file holds only what get_config() returns). Fix: {fix}, so "
        f"that from_config passes it back to __init__ (state that training changes belongs in "
        f"a buffer: register_buffer)")


def _config_of(m: Module) -> str:
    try:
        return f"{m.get_config()!r:.120}"
    except Exception:  # noqa: BLE001 - a message, not a check
        return "it saves"


def _probe_error(model: Module, found: str, hints: list[str]) -> ConfigError:
    custom = [_where(p, m) for p, m in model.named_modules()
              if not type(m).__module__.startswith("nnforge.")]
    why = (f": {hints[0]}" if hints else
           f"; check the get_config() of {', '.join(custom[:5])}" if custom else "")
    return ConfigError(
        f"{_where('', model)} would load back changed: rebuilt from its config with the same "
        f"weights it computes differently on a probe batch in eval mode ({found}), so a "
        f"get_config() leaves out something a layer's behaviour depends on{why}. Fix: return "
        f"every __init__ argument from get_config() (state that training changes belongs in a "
        f"buffer: register_buffer)")


def check_same_layers(model: Module, twin: Module, arch: bytes,
                      shapes: list[tuple[int, ...]]) -> None:
    """ConfigError naming the layer, the attribute and both values when the model load()
    would rebuild from arch (twin: check_rebuilds' result) differs from the model in a setting
    its config leaves out or in what it computes (see the module docstring)."""
    other = _build_elsewhere(from_json(arch, "the architecture"))
    _share_weights(twin, model)
    found, runtime = _probe(model, twin, shapes)
    lost = _lost_settings(model, twin, other, False, runtime)
    if lost and found is None:
        # the rebuilt model answers the same: the lost setting matters in training only (a
        # custom dropout's p) or for other inputs. A warning, not a refusal: refusing would
        # cost the user the save itself, a ModelCheckpoint in the middle of a fit() too
        warnings.warn(f"{_settings_error(model, lost)}; saved anyway, since the rebuilt model "
                      f"gives the same outputs on a probe batch", UserWarning, stacklevel=4)
        return
    if lost:
        raise _settings_error(model, lost)
    if found is not None:
        hidden = _lost_settings(model, twin, other, True, runtime)
        hints = [f"{_where(x.path, _layer(model, x.path))} has {x.attr} = {x.saved!r:.60} "
                 f"but {x.rebuilt!r:.60} when rebuilt" for x in hidden]
        raise _probe_error(model, found, hints + _sub_layer_changes(model, twin))
