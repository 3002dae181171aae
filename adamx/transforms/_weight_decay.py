"""Weight decay: decoupled (AdamW) and coupled L2 (``torch.optim.Adam(weight_decay=...)``).

Both add ``weight_decay * param`` to the incoming updates; they differ only in where they sit in a chain. Placed
*before* an adaptive transform (:func:`add_l2_regularization`), the decay term is rescaled by the second moment
like any gradient; placed *after* it and before the learning rate (:func:`add_decoupled_weight_decay`), it is
scaled by the learning rate only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import EmptyState, GradientTransformation

Mask = Union[Any, Callable[[Any], Any]]


def leaf_masks(fn: str, mask: Mask, params: Any) -> list[Any]:
  """The mask of every leaf of ``params``, in ``jax.tree.leaves`` order: ``True``, ``False`` or a bool array.

  ``mask`` is ``None`` (all ``True``), a pytree of bools with the structure of ``params`` or a prefix of it (a bool
  then covers a whole subtree), or a callable ``params -> such a pytree``; errors name ``fn``.
  """
  if mask is None:
    return [True] * len(jax.tree.leaves(params))
  mask_tree = mask(params) if callable(mask) else mask
  _checks.check_mask_leaves(fn, mask_tree)
  mask_def = jax.tree.structure(mask_tree)
  try:
    p_subtrees = mask_def.flatten_up_to(params)
  except ValueError:
    raise ValueError(f"adamx.{fn}: mask must have the structure of params (or a prefix of it)\n  mask: {mask_def}"
                     f"\n  params: {jax.tree.structure(params)}") from None
  out = []
  for (path, m), p in zip(jax.tree_util.tree_flatten_with_path(mask_tree)[0], p_subtrees):
    for leaf in jax.tree.leaves(p):
      if jnp.ndim(m) and jnp.shape(m) != jnp.shape(leaf):
        raise ValueError(f"adamx.{fn}: mask leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                         f"{jnp.shape(m)} but the parameter it masks has shape {jnp.shape(leaf)}")
      out.append(m)
  return out


def _add_scaled_params(fn: str, weight_decay: jax.typing.ArrayLike, mask: Mask) -> GradientTransformation:
  weight_decay = _checks.check_non_negative(fn, "weight_decay", weight_decay)
  _checks.check_mask(fn, mask)
  # A concrete zero decay is a no-op; skipping it keeps the step from reading params for nothing (XLA cannot
  # drop ``u + 0 * p`` because of NaN/Inf semantics). The state is EmptyState either way.
  is_zero = _checks.concrete_number(weight_decay) == 0.0

  def init(params):
    del params
    return EmptyState()

  def decay_leaf(u, p, m=True):
    if isinstance(m, (bool, np.bool_)) and not m:
      return u
    dt = _tree.compute_dtype(u, p, weight_decay)
    decayed = (u.astype(dt) + jnp.asarray(weight_decay, _tree.real_dtype(dt)) * p.astype(dt)).astype(u.dtype)
    return decayed if isinstance(m, (bool, np.bool_)) else jnp.where(m, decayed, u)

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if is_zero:
      return updates, state
    if params is None:
      hint = ("" if _checks.concrete_number(weight_decay) is not None else
              " weight_decay is an array or traced value, so it is not known to be zero: under "
              "optax.inject_hyperparams the default weight_decay=0.0 becomes one. Pass params, or keep weight_decay "
              "static with optax.inject_hyperparams(..., static_args=('weight_decay',)).")
      raise ValueError(f"adamx.{fn}: params are required; call update(updates, state, params).{hint}")
    _tree.check_structure(fn, "updates", updates, "params", params)
    leaves, treedef = jax.tree.flatten(updates)
    decayed = map(decay_leaf, leaves, treedef.flatten_up_to(params), leaf_masks(fn, mask, params))
    return treedef.unflatten(list(decayed)), state

  return GradientTransformation(init, update)


def add_decoupled_weight_decay(weight_decay: jax.typing.ArrayLike, mask: Mask = None) -> GradientTransformation:
  r"""Add ``weight_decay * param`` to the updates: decoupled weight decay (Loshchilov & Hutter, 2019).

  Put it after the adaptive transform and before :func:`adamx.scale_by_learning_rate`, as in
  :func:`adamx.adamw`, optax and ``torch.optim.AdamW``; the decay is then scaled by the learning rate:

  .. math::
    u_t \leftarrow u_t + \lambda\, \theta_{t-1}, \qquad \theta_t = \theta_{t-1} - \eta_t\, u_t.

  Args:
    weight_decay: :math:`\lambda`, a non-negative number or an array.
    mask: ``None`` (decay every parameter), a pytree of bools with the structure of the params (or a prefix of it),
      or a callable ``params -> pytree of bools``; ``True`` marks the leaves that decay. Bool arrays select
      elementwise.

  Returns:
    A stateless :class:`adamx.GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import jax, adamx
    >>> no_bias_decay = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    >>> tx = adamx.chain(adamx.scale_by_adam(), adamx.add_decoupled_weight_decay(1e-2, mask=no_bias_decay),
    ...                  adamx.scale_by_learning_rate(1e-3))

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
  """
  return _add_scaled_params("add_decoupled_weight_decay", weight_decay, mask)


def add_l2_regularization(weight_decay: jax.typing.ArrayLike, mask: Mask = None) -> GradientTransformation:
  r"""Add ``weight_decay * param`` to the gradient: coupled L2 regularization.

  Put it *before* the adaptive transform, as :func:`adamx.adam` does and as ``torch.optim.Adam(weight_decay=...)``
  does: the term is the gradient of :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2` and is rescaled by the second
  moment like the rest of the gradient,

  .. math::
    g_t \leftarrow g_t + \lambda\, \theta_{t-1}.

  With adaptive methods this is *not* weight decay (Loshchilov & Hutter, 2019); prefer
  :func:`adamx.add_decoupled_weight_decay` unless you need PyTorch's ``Adam`` behaviour.

  Args:
    weight_decay: :math:`\lambda`, a non-negative number or an array.
    mask: as in :func:`adamx.add_decoupled_weight_decay`.

  Returns:
    A stateless :class:`adamx.GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import adamx
    >>> tx = adamx.chain(adamx.add_l2_regularization(1e-4), adamx.scale_by_adam(),
    ...                  adamx.scale_by_learning_rate(1e-3))
  """
  return _add_scaled_params("add_l2_regularization", weight_decay, mask)
