"""``maximize``: gradient ascent with any optimizer, PyTorch's ``maximize=True``."""

from __future__ import annotations

import jax

from adamx._base import GradientTransformation
from adamx.transforms._wrapping import check_transform


def maximize(transform: GradientTransformation) -> GradientTransformation:
  r"""Run ``transform`` as gradient *ascent*: it sees the negated gradient, :math:`g_t \leftarrow -g_t`.

  Use it to maximize an objective (a reward, a log-likelihood) with its own gradient, instead of negating the
  loss. It is ``torch.optim.Adam(..., maximize=True)`` / ``AdamW(..., maximize=True)``: PyTorch negates the
  gradient first, then applies coupled L2 (``Adam``'s ``weight_decay``) and the moments to :math:`-g_t`; AdamW's
  decoupled decay still shrinks the weights towards 0.

  It is a wrapper rather than a transform to chain, because the negation must come *first*, before any L2 term or
  adaptive scaling: ``adamx.maximize(adamx.adamw(...))`` equals ``adamx.chain(adamx.scale(-1.0),
  adamx.adamw(...))``. Negating *after* the optimizer (``adamx.chain(adamx.adamw(...), adamx.scale(-1.0))``) is
  not the same: it would also flip the weight decay, which then grows the weights. The state is ``transform``'s
  own, unchanged in structure.

  Args:
    transform: the optimizer (or any transform) to run on the negated gradient.

  Returns:
    A :class:`adamx.GradientTransformation` with ``transform``'s state.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.maximize(adamx.adamw(1e-1, weight_decay=0.0))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: -jnp.sum((p["w"] - 1.0) ** 2))(params)  # the objective rises towards w = 1
    >>> updates, state = tx.update(grads, state, params)
    >>> adamx.apply_updates(params, updates)["w"]
    Array([0.1, 0.1], dtype=float32)
  """
  inner_update = check_transform("maximize", "transform", transform)

  def update(updates, state, params=None, **extra_args):
    return inner_update(jax.tree.map(lambda g: -g, updates), state, params, **extra_args)

  return GradientTransformation(transform.init, update)
