"""Parameter groups: one optimizer over several sets of parameters, each with its own settings.

As in PyTorch, `Adam([{"params": body}, {"params": head, "lr": 1e-2}], lr=1e-3)` gives every
group the constructor's hyperparameters, overridden by the group's own entries. Each group is
run by a member optimizer of the same class (its own flat buffers, chunks and threads), so a
group's update is exactly what a separate optimizer over those parameters would do.

The learning rate is special: each group keeps its rate as a multiple of the optimizer's
(`lr_scales`), so setting `optimizer.lr` by hand moves every group in proportion. Schedulers
instead set each group's lr on its own, as PyTorch's do (a cosine's eta_min or a plateau's
min_lr bounds each group, not the proportion), and the optimizer's own lr alongside, as if it
were one more group: `scheduled_lrs` and `set_scheduled_lrs`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..errors import ConfigError, StateDictError, check_float

if TYPE_CHECKING:
    from .optimizer import Optimizer

GroupSpec = tuple[Any, dict[str, Any]]


def split_groups(params: Any) -> tuple[Any, list[GroupSpec] | None]:
    """(params, None) for plain parameters, or (None, [(params, overrides)]) for group dicts."""
    if isinstance(params, dict):
        params = [params]
    elif not isinstance(params, (list, tuple)) and not hasattr(params, "data") \
            and not hasattr(params, "parameters"):
        try:
            params = list(params)  # a generator: look at it once, keep what it gave
        except TypeError:
            return params, None  # not iterable: _param_list names the problem
    if not isinstance(params, (list, tuple)) or not any(isinstance(g, dict) for g in params):
        return params, None
    if not all(isinstance(g, dict) for g in params):
        raise ConfigError("expected either parameters or param group dicts "
                          "{'params': [...], ...}, found a mix of both")
    groups = []
    for i, g in enumerate(params):
        if "params" not in g:
            raise ConfigError(f"param group {i} has no 'params' entry (found keys {sorted(g)})")
        groups.append((g["params"], {k: v for k, v in g.items() if k != "params"}))
    return None, groups


def build_members(owner: Optimizer, groups: list[GroupSpec], threads: int | None,
                  param_list: Any) -> tuple[list[Optimizer], list[float]]:
    """One member optimizer per group, and each group's lr as a multiple of the owner's."""
    base = owner.hyperparameters()
    members: list[Optimizer] = []
    seen: set[int] = set()
    for i, (gparams, overrides) in enumerate(groups):
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise ConfigError(f"param group {i}: unknown setting(s) {unknown}; expected some of "
                              f"{sorted(base)}")
        try:
            plist = param_list(gparams)
        except ConfigError as exc:
            raise ConfigError(f"param group {i}: {exc}") from None
        if any(id(p) in seen for p in plist):
            raise ConfigError(f"param group {i} repeats a parameter of an earlier group: each "
                              f"parameter may be in one group only")
        seen.update(id(p) for p in plist)
        try:
            members.append(type(owner)(plist, threads=threads, **{**base, **overrides}))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"param group {i}: {exc}") from None
    if owner.lr == 0 and any(m.lr != 0 for m in members):
        raise ConfigError("param groups that set their own lr need the optimizer's lr above 0: "
                          "the groups' rates are kept in proportion to it")
    scales = [m.lr / owner.lr if owner.lr else 1.0 for m in members]
    return members, scales


def scheduled_lrs(owner: Optimizer) -> list[float]:
    """Each param group's lr, then (with groups) the optimizer's own: what schedulers set."""
    if not owner._members:
        return [owner.lr]
    return [m.lr for m in owner._members] + [owner.lr]


def set_scheduled_lrs(owner: Optimizer, lrs: list[float]) -> None:
    """Set scheduled_lrs() to exactly lrs (all checked first); the lr_scales follow."""
    values = [check_float("lr", v, 0.0) for v in lrs]
    if not owner._members:
        owner.lr = values[0]
        return
    *group_lrs, own = values
    for m, lr in zip(owner._members, group_lrs):
        m.lr = lr  # a member's own setter: exact, no scaling
    owner._lr = own
    if own > 0:  # at lr 0 (a warmup from 0, a cosine's end) the last proportions stand
        owner._scales = [lr / own for lr in group_lrs]


def get_config(owner: Optimizer) -> dict[str, Any]:
    """The owner's config plus, per group, its parameter count and what differs."""
    base = owner.hyperparameters()
    groups = []
    for m in owner._members:
        hp = m.hyperparameters()
        groups.append({"count": len(m.params), **{k: v for k, v in hp.items() if base[k] != v}})
    return {"name": owner.name, **base, "param_groups": groups}


def groups_from_config(params: Iterable[Any], spec: Any, param_list: Any) -> list[dict]:
    """Group dicts from get_config()'s 'param_groups': consecutive runs of the parameters."""
    plist = param_list(params)
    if not isinstance(spec, list) or not all(isinstance(g, dict) and isinstance(g.get("count"), int)
                                             and g["count"] > 0 for g in spec):
        raise ConfigError(f"expected 'param_groups' as a list of {{'count': n, ...}} with n > 0, "
                          f"found {spec!r:.80}")
    if sum(g["count"] for g in spec) != len(plist):
        raise ConfigError(f"'param_groups' counts add up to {sum(g['count'] for g in spec)}, "
                          f"found {len(plist)} parameters")
    out, start = [], 0
    for g in spec:
        out.append({"params": plist[start:start + g["count"]],
                    **{k: v for k, v in g.items() if k != "count"}})
        start += g["count"]
    return out


def state_dict(owner: Optimizer) -> dict[str, Any]:
    """The members' states under group.<g>., with the owner's settings and lr scales."""
    parts = [m.state_dict() for m in owner._members]
    config = {**parts[0]["config"], "hyperparameters": owner.hyperparameters(),
              "lr_scales": list(owner._scales), "groups": [p["config"] for p in parts]}
    for key in ("steps", "param_shapes", "dtype", "fresh"):
        config.pop(key, None)
    arrays = {f"group.{g}.{k}": v for g, p in enumerate(parts) for k, v in p["arrays"].items()}
    return {"config": config, "arrays": arrays}


def load_state_dict(owner: Optimizer, config: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Restore every member (all or nothing), then the owner's settings and lr scales."""
    members = owner._members
    groups, scales = config.get("groups"), config.get("lr_scales")
    if not isinstance(groups, list):
        raise StateDictError(f"this optimizer has {len(members)} param groups, the state has "
                             f"one (it was saved by an optimizer without groups)")
    if len(groups) != len(members):
        raise StateDictError(f"this optimizer has {len(members)} param groups, the state has "
                             f"{len(groups)}")
    if not isinstance(scales, list) or len(scales) != len(members) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in scales):
        raise StateDictError(f"expected 'lr_scales' as {len(members)} non-negative numbers, "
                             f"found {scales!r:.80}")
    known = {f"group.{g}." for g in range(len(members))}
    stray = sorted(k for k in arrays if k[:k.find(".", 6) + 1] not in known)
    if stray:
        raise StateDictError(f"optimizer state arrays do not match: unexpected {stray[:5]}")
    backups = [m.state_dict() for m in members]
    old_hp, old_scales = owner.hyperparameters(), list(owner._scales)
    try:
        owner._scales = [float(s) for s in scales]
        owner._configure(**config.get("hyperparameters", {}))
        for g, (m, cfg) in enumerate(zip(members, groups)):
            prefix = f"group.{g}."
            m.load_state_dict({"config": {**cfg, "name": config.get("name")},
                               "arrays": {k[len(prefix):]: v for k, v in arrays.items()
                                          if k.startswith(prefix)}})
    except Exception as exc:
        owner._scales = old_scales
        owner._configure(**old_hp)
        for m, b in zip(members, backups):
            m.load_state_dict(b)
        if isinstance(exc, (TypeError, ConfigError)):
            raise StateDictError(f"bad hyperparameters in optimizer state: {exc}") from None
        raise


class GroupView(MutableMapping):
    """One param group as a dict: "params" and the hyperparameters; setting one applies it."""

    def __init__(self, owner: Optimizer, index: int) -> None:
        self._owner, self._index = owner, index
        self._member = owner._members[index] if owner._members else owner

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            return self._member.params
        return self._member.hyperparameters()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        member, owner = self._member, self._owner
        hp = member.hyperparameters()
        if key == "params":
            raise ConfigError("a param group's parameters are fixed: build a new optimizer to "
                              "change them")
        if key not in hp:
            raise ConfigError(f"unknown setting {key!r}; expected 'params' or one of "
                              f"{sorted(hp)}")
        try:
            member._configure(**{**hp, key: value})
        except ConfigError:
            member._configure(**hp)
            raise
        if key == "lr" and owner._members:  # keep the proportion schedulers will apply
            owner._scales[self._index] = member.lr / owner.lr if owner.lr else 1.0

    def __delitem__(self, key: str) -> None:
        raise ConfigError("param group entries cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(["params", *self._member.hyperparameters()])

    def __len__(self) -> int:
        return 1 + len(self._member.hyperparameters())

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self._member.hyperparameters().items())
        return f"<param group {self._index}: {len(self._member.params)} parameters, {hp}>"
