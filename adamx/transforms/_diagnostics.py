"""Training diagnostics: how large the updates are relative to the params and to the gradients, per leaf and overall."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from adamx import _tree
from adamx.transforms._clip import global_norm


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` with ``0 / 0 = 0`` and ``x / 0 = inf``; the inner where keeps gradients finite."""
  positive = den > 0
  return jnp.where(positive, num / jnp.where(positive, den, 1), jnp.where(num > 0, jnp.inf, 0.0)).astype(jnp.float32)


def update_diagnostics(params: Any, updates: Any, grads: Any = None) -> dict[str, jax.Array]:
  r"""Update-to-parameter norm ratios and effective step sizes, per leaf and global, as a flat dict for a logger.

  For a leaf with parameter :math:`\theta`, update :math:`u` (what is added to :math:`\theta`) and gradient
  :math:`g`, with Euclidean norms over the leaf (:math:`|x|^2` for complex entries, accumulated in float32):

  .. math::
    r = \lVert u \rVert / \lVert \theta \rVert, \qquad s = \lVert u \rVert / \lVert g \rVert.

  :math:`r` is the relative change of the parameter this step; a common rule of thumb for Adam is ~1e-3, and a
  leaf far above its peers is the first suspect of an instability. :math:`s` is the *effective step size*: plain
  SGD gives :math:`s = \eta` on every leaf, so for an adaptive optimizer it shows the learning rate each leaf
  really gets (Adam early in training: about :math:`\eta / \operatorname{rms}(g)`). The global values use the
  norms over all leaves together (:func:`adamx.global_norm`). ``0 / 0`` is reported as 0 and ``x / 0`` as inf
  (a zero-initialised bias on its first step).

  Args:
    params: the params *before* the update.
    updates: the updates returned by the optimizer, with the structure of ``params``.
    grads: optional, the gradients given to the optimizer; adds ``grad_norm`` and ``step_size``.

  Returns:
    A dict of float32 scalars, keys ``"update_norm"``, ``"param_norm"``, ``"update_param_ratio"`` (and
    ``"grad_norm"``, ``"step_size"`` with ``grads``) for the whole tree, and ``"update_param_ratio/<path>"`` (and
    ``"step_size/<path>"``) for each leaf, ``<path>`` being ``jax.tree_util.keystr`` of the leaf
    (``"['dense']['w']"``; ``"<root>"`` for a single array). Pure and jittable.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    >>> grads = {"w": jnp.full((2, 2), 0.5), "b": jnp.full(2, 0.5)}
    >>> tx = adamx.scale_by_learning_rate(0.1)  # SGD
    >>> updates, _ = tx.update(grads, tx.init(params))
    >>> logs = jax.jit(adamx.update_diagnostics)(params, updates, grads)
    >>> round(float(logs["step_size"]), 6), round(float(logs["update_param_ratio/['w']"]), 6)
    (0.1, 0.05)
  """
  fn = "update_diagnostics"
  _tree.check_structure(fn, "updates", updates, "params", params)
  if grads is not None:
    _tree.check_structure(fn, "grads", grads, "params", params)
  paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  p_leaves, u_leaves = jax.tree.leaves(params), jax.tree.leaves(updates)
  u_norm, p_norm = global_norm(updates), global_norm(params)
  out = {"update_norm": u_norm.astype(jnp.float32), "param_norm": p_norm.astype(jnp.float32),
         "update_param_ratio": _ratio(u_norm, p_norm)}
  if grads is not None:
    g_norm = global_norm(grads)
    out["grad_norm"] = g_norm.astype(jnp.float32)
    out["step_size"] = _ratio(u_norm, g_norm)
  leaf_u = [global_norm(u) for u in u_leaves]
  for path, un, p in zip(paths, leaf_u, p_leaves):
    out[f"update_param_ratio/{path}"] = _ratio(un, global_norm(p))
  if grads is not None:
    for path, un, g in zip(paths, leaf_u, jax.tree.leaves(grads)):
      out[f"step_size/{path}"] = _ratio(un, global_norm(g))
  return out
