"""The PyTorch bridge: ``torch.optim.Adam``/``AdamW`` (and ``amsgrad=True``) state dicts to adamx state and back.

The correspondence, per parameter, is that of ``adamx.registry`` (``OptimizerSpec.torch_state``): ``mu`` is
``exp_avg``, ``nu`` is ``exp_avg_sq``, ``nu_max`` is ``max_exp_avg_sq`` (AMSGrad with ``max_over="raw"``, PyTorch's
convention), and the shared counter ``count`` is every parameter's ``step``. The param group holds ``lr``,
``betas``, ``eps``, ``weight_decay``, ``amsgrad`` and ``decoupled_weight_decay`` (AdamW). torch is imported only
when a function here is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import registry
from adamx._base import GradientTransformation, chain
from adamx.optimizers._adam import ScaleByAdamState, ScaleByAmsgradState, adam, adamw, amsgrad, scale_by_amsgrad
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import add_decoupled_weight_decay

_ADAM_STATES = (ScaleByAdamState, ScaleByAmsgradState)
_SUPPORTED = ("adam", "adamw", "amsgrad")


def _torch(fn: str):
  try:
    import torch
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"adamx.interop.{fn} needs PyTorch: pip install torch") from e
  return torch


def _find_adam_state(fn: str, state: Any) -> Any:
  found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, _ADAM_STATES))
           if isinstance(s, _ADAM_STATES)]
  if len(found) != 1:
    raise ValueError(
        f"adamx.interop.{fn}: state must hold exactly one ScaleByAdamState or ScaleByAmsgradState (the state of "
        f"adamx.adam, adamw or amsgrad, possibly inside chain or inject_hyperparams), found {len(found)}; several "
        "torch param groups (adamx.partition) are not supported")
  return found[0]


def _replace_adam_state(state: Any, new: Any) -> Any:
  return jax.tree.map(lambda s: new if isinstance(s, _ADAM_STATES) else s, state,
                      is_leaf=lambda x: isinstance(x, _ADAM_STATES))


def _ordered_leaves(fn: str, params: Any, order: Sequence[str] | None) -> tuple[list[str], list[int], Any]:
  """(paths in tree order, the tree position of each torch index, treedef)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in flat]
  if order is None:
    return paths, list(range(len(paths))), treedef
  order = list(order)
  position = {p: i for i, p in enumerate(paths)}
  unknown = [p for p in order if p not in position]
  if unknown or len(order) != len(paths) or len(set(order)) != len(order):
    raise ValueError(
        f"adamx.interop.{fn}: order must list every leaf path of params exactly once (as jax.tree_util.keystr writes "
        f"them: {', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''}); got {len(order)} entries for "
        f"{len(paths)} leaves" + (f", unknown paths {unknown[:4]}" if unknown else ""))
  return paths, [position[p] for p in order], treedef


def _to_tensor(torch: Any, x: Any) -> Any:
  x = np.asarray(x)
  if x.dtype == jnp.bfloat16:
    return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)  # exact: bf16 is a prefix of float32
  return torch.from_numpy(np.array(x))


def _from_tensor(t: Any, dtype: Any) -> jax.Array:
  t = t.detach().cpu()
  if t.is_complex():
    raise ValueError("complex")
  if str(t.dtype) == "torch.bfloat16":
    t = t.float()
  return jnp.asarray(t.numpy(), dtype)


def to_torch_state_dict(state: Any, params: Any, *, optimizer: str = "adamw", order: Sequence[str] | None = None,
                        **hyperparams: Any) -> dict[str, Any]:
  """The ``state_dict`` of a ``torch.optim.Adam``/``AdamW`` that continues the adamx run ``state``.

  Load it with ``torch_optimizer.load_state_dict(sd)`` into an optimizer over the same parameters, in ``order``;
  its param group (``lr``, ``betas``, ...) is that of the adamx hyperparameters given here, which replace those the
  torch optimizer was created with. Per parameter: ``step`` = ``count``, ``exp_avg`` = ``mu``, ``exp_avg_sq`` =
  ``nu``, ``max_exp_avg_sq`` = ``nu_max``.

  Args:
    state: the adamx state; it must hold exactly one ``ScaleByAdamState``/``ScaleByAmsgradState`` (the state of
      ``adamx.adam``, ``adamw``, ``amsgrad``, alone or inside ``chain``/``inject_hyperparams``).
    params: the parameters the state belongs to (their leaves are torch's params).
    optimizer: ``"adam"`` (``torch.optim.Adam``), ``"adamw"`` (``torch.optim.AdamW``) or ``"amsgrad"``
      (``torch.optim.Adam(amsgrad=True)``, which requires ``max_over="raw"``).
    order: the leaf paths of ``params`` (``jax.tree_util.keystr``) in the order of the torch optimizer's params;
      ``None``: the order of ``jax.tree.leaves(params)``.
    **hyperparams: the adamx optimizer's arguments (``learning_rate``, ``b1``, ``b2``, ``eps``, ``weight_decay``,
      ``max_over``), with the adamx defaults for those not given (``adamw``'s ``weight_decay`` is 1e-4, not torch's
      1e-2). The learning rate must be a number: load a schedule's current value and drive torch's own scheduler.

  Returns:
    ``{"state": {index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}}, "param_groups": [group]}``; the
    per-parameter state is empty for a state at count 0, as for a fresh torch optimizer.

  Raises:
    ValueError: the configuration has no ``torch.optim`` counterpart, the state is not of that optimizer, the state
      and params differ in structure or shapes, or a parameter is complex (torch's convention differs, see
      :func:`adamx.adam`).

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> params = {"w": jnp.ones((2, 3))}
    >>> tx = adamx.adamw(1e-3, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> sd = adamx.interop.to_torch_state_dict(state, params, optimizer="adamw", learning_rate=1e-3,
    ...                                        weight_decay=1e-2)
    >>> sd["param_groups"][0]["weight_decay"]
    0.01
  """
  fn = "to_torch_state_dict"
  torch = _torch(fn)
  if optimizer not in _SUPPORTED:
    raise ValueError(f"adamx.interop.{fn}: optimizer must be one of {', '.join(map(repr, _SUPPORTED))}, got "
                     f"{optimizer!r}")
  spec = registry.get(optimizer)
  kw = spec.full_kwargs(**hyperparams)
  built = spec.torch(torch, kw)
  if built is None:
    raise ValueError(
        f"adamx.interop.{fn}: adamx.{optimizer}({', '.join(f'{k}={v!r}' for k, v in hyperparams.items())}) has no "
        "torch.optim counterpart (torch needs a constant learning rate, eps_root=0, default dtypes, no nesterov "
        "and no mask; amsgrad needs max_over='raw')")
  torch_cls, torch_kwargs = built
  adam_state = _find_adam_state(fn, state)
  want = ScaleByAmsgradState if optimizer == "amsgrad" else ScaleByAdamState
  if not isinstance(adam_state, want):
    raise ValueError(f"adamx.interop.{fn}: optimizer={optimizer!r} needs a {want.__name__}, but the state holds a "
                     f"{type(adam_state).__name__}")
  paths, positions, treedef = _ordered_leaves(fn, params, order)
  fields = dict(spec.torch_state)
  trees = {name: getattr(adam_state, name) for name in adam_state._fields if name != "count"}
  leaves = {}
  for name, tree in trees.items():
    if jax.tree.structure(tree) != treedef:
      raise ValueError(f"adamx.interop.{fn}: the tree structure of state.{name} does not match that of params\n  "
                       f"state.{name}: {jax.tree.structure(tree)}\n  params: {treedef}")
    leaves[name] = jax.tree.leaves(tree)
  param_leaves = jax.tree.leaves(params)
  for i, p in enumerate(param_leaves):
    if jnp.iscomplexobj(p):
      raise ValueError(f"adamx.interop.{fn}: parameter {paths[i]} is complex; torch.optim keeps separate moments for "
                       "its real and imaginary parts, so the state cannot be carried over")
    for name in trees:
      if np.shape(leaves[name][i]) != np.shape(p):
        raise ValueError(f"adamx.interop.{fn}: leaf {paths[i]} of state.{name} has shape {np.shape(leaves[name][i])} "
                         f"but the parameter has shape {np.shape(p)}")
  count = int(adam_state.count)
  per_param = {}
  if count > 0:
    for k, pos in enumerate(positions):
      entry = {"step": torch.tensor(float(count), dtype=torch.float32)}
      for name in trees:
        entry[fields[name]] = _to_tensor(torch, leaves[name][pos])
      per_param[k] = entry
  group = {
      "lr": float(torch_kwargs["lr"]),
      "betas": tuple(float(b) for b in torch_kwargs["betas"]),
      "eps": float(torch_kwargs["eps"]),
      "weight_decay": float(torch_kwargs["weight_decay"]),
      "amsgrad": bool(torch_kwargs.get("amsgrad", False)),
      "maximize": False,
      "foreach": None,
      "capturable": False,
      "differentiable": False,
      "fused": None,
      "decoupled_weight_decay": torch_cls is torch.optim.AdamW,
      "params": list(range(len(positions))),
  }
  return {"state": per_param, "param_groups": [group]}


def from_torch_state_dict(state_dict: dict[str, Any], params: Any, *, tx: GradientTransformation | None = None,
                          order: Sequence[str] | None = None) -> tuple[GradientTransformation, Any]:
  """The adamx optimizer and state that continue a ``torch.optim.Adam``/``AdamW`` run from its ``state_dict``.

  ``tx`` defaults to the adamx optimizer of the param group: ``adamx.adamw`` for ``AdamW``
  (``decoupled_weight_decay``), ``adamx.adam`` for ``Adam``, ``adamx.amsgrad(max_over="raw")`` for
  ``Adam(amsgrad=True)`` (and the AMSGrad chain with decoupled decay for ``AdamW(amsgrad=True)``), with its ``lr``,
  ``betas``, ``eps`` and ``weight_decay``. Pass your own ``tx`` (say, the same optimizer under
  ``adamx.inject_hyperparams`` or after ``clip_by_global_norm``) to fill its state instead; its hyperparameters are
  then yours to match.

  Args:
    state_dict: ``torch_optimizer.state_dict()``, one param group.
    params: the adamx parameters, a pytree whose leaves are torch's params (same shapes) in ``order``.
    tx: the adamx transform whose state to fill (``None``: built from the param group).
    order: the leaf paths of ``params`` (``jax.tree_util.keystr``) in the order of torch's params; ``None``: the
      order of ``jax.tree.leaves(params)``.

  Returns:
    ``(tx, state)``: ``state`` is ``tx.init(params)`` with count and moments taken from torch, each leaf in the
    dtype ``tx.init`` gives it.

  Raises:
    ValueError: several param groups, ``maximize=True``, a parameter count, shape or ``amsgrad`` setting that does
      not match, parameters at different steps, or a complex moment.

  Example:
    >>> import torch, jax.numpy as jnp, numpy as np, adamx
    >>> w = torch.nn.Parameter(torch.ones(2, 3))
    >>> opt = torch.optim.AdamW([w], lr=1e-3)
    >>> w.grad = torch.ones(2, 3); opt.step()
    >>> tx, state = adamx.interop.from_torch_state_dict(opt.state_dict(), {"w": jnp.asarray(w.detach().numpy())})
    >>> int(state[0].count)
    1
  """
  fn = "from_torch_state_dict"
  _torch(fn)
  groups = state_dict.get("param_groups", None) if isinstance(state_dict, dict) else None
  if not groups or "state" not in state_dict:
    raise ValueError(f"adamx.interop.{fn}: state_dict must be a torch optimizer's state_dict(), a dict with 'state' "
                     "and 'param_groups'")
  if len(groups) != 1:
    raise ValueError(f"adamx.interop.{fn}: the state_dict has {len(groups)} param groups; only one is supported "
                     "(convert each group's parameters separately)")
  group = groups[0]
  missing = [k for k in ("lr", "betas", "eps", "weight_decay", "params") if k not in group]
  if missing:
    raise ValueError(f"adamx.interop.{fn}: the param group has no {missing} (not an Adam/AdamW state_dict?)")
  if group.get("maximize", False):
    raise ValueError(f"adamx.interop.{fn}: maximize=True is not supported (wrap the optimizer in adamx.maximize)")
  use_amsgrad = bool(group.get("amsgrad", False))
  decoupled = bool(group.get("decoupled_weight_decay", False))
  lr, (b1, b2) = float(group["lr"]), (float(b) for b in group["betas"])
  eps, wd = float(group["eps"]), float(group["weight_decay"])
  if tx is None:
    if use_amsgrad and decoupled:
      tx = chain(scale_by_amsgrad(b1, b2, eps, max_over="raw"), add_decoupled_weight_decay(wd),
                 scale_by_learning_rate(lr))
    elif use_amsgrad:
      tx = amsgrad(lr, b1, b2, eps, max_over="raw", weight_decay=wd)
    elif decoupled:
      tx = adamw(lr, b1, b2, eps, weight_decay=wd)
    else:
      tx = adam(lr, b1, b2, eps, weight_decay=wd)
  paths, positions, treedef = _ordered_leaves(fn, params, order)
  ids = list(group["params"])
  if len(ids) != len(paths):
    raise ValueError(f"adamx.interop.{fn}: the torch param group has {len(ids)} parameters but params has "
                     f"{len(paths)} leaves")
  state = tx.init(params)
  adam_state = _find_adam_state(fn, state)
  if isinstance(adam_state, ScaleByAmsgradState) != use_amsgrad:
    raise ValueError(f"adamx.interop.{fn}: the torch param group has amsgrad={use_amsgrad} but tx's state is a "
                     f"{type(adam_state).__name__}")
  fields = dict(registry.get("amsgrad").torch_state)
  names = [n for n in adam_state._fields if n != "count"]
  new = {n: list(jax.tree.leaves(getattr(adam_state, n))) for n in names}
  param_leaves = jax.tree.leaves(params)
  steps = set()
  for k, (torch_id, pos) in enumerate(zip(ids, positions)):
    entry = state_dict["state"].get(torch_id, {})
    if not entry:
      steps.add(0)
      continue
    steps.add(float(entry["step"]))
    for n in names:
      if fields[n] not in entry:
        raise ValueError(f"adamx.interop.{fn}: torch param {torch_id} ({paths[pos]}) has no {fields[n]!r}")
      t = entry[fields[n]]
      if tuple(t.shape) != tuple(np.shape(param_leaves[pos])):
        raise ValueError(f"adamx.interop.{fn}: torch param {torch_id}'s {fields[n]} has shape {tuple(t.shape)} but "
                         f"the matching leaf {paths[pos]} of params has shape {np.shape(param_leaves[pos])} (another "
                         "parameter order, or a transposed layout? see the order argument)")
      ref = new[n][pos]
      try:
        new[n][pos] = _from_tensor(t, ref.dtype)
      except ValueError:
        raise ValueError(f"adamx.interop.{fn}: torch param {torch_id}'s {fields[n]} is complex; torch's complex "
                         "convention differs from adamx's (see adamx.adam)") from None
  if len(steps) > 1:
    raise ValueError(f"adamx.interop.{fn}: the torch parameters are at different steps {sorted(steps)}; adamx keeps "
                     "one step count for all of them")
  step = steps.pop() if steps else 0.0
  if step != int(step) or step < 0:
    raise ValueError(f"adamx.interop.{fn}: the torch step must be a non-negative integer, got {step}")
  count = jnp.asarray(int(step), adam_state.count.dtype)
  replaced = type(adam_state)(count=count, **{n: jax.tree.unflatten(treedef, new[n]) for n in names})
  return tx, _replace_adam_state(state, replaced)
