"""What the Adam-family modules share, written once: argument validation and documentation, moment state
creation, Adam's two EMAs, bias corrections and the Nesterov first moment.

Not an optimizer module: every ``optimizers/_<family>.py`` may import it (and none imports another family).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from adamx import _checks, _tree

#: The shared text of the moment arguments, substituted for ``{args}`` in docstrings by :func:`document`.
MOMENT_ARGS = """\
    b1: :math:`\\beta_1`, decay of the first moment (the EMA of gradients), in [0, 1).
    b2: :math:`\\beta_2`, decay of the second moment (the EMA of squared gradients), in [0, 1).
    eps: :math:`\\epsilon`, added to the denominator outside the square root, >= 0.
    eps_root: :math:`\\epsilon_\\text{root}`, added inside the square root, >= 0; a small positive value keeps the
      gradient of the update finite when it is differentiated through (meta-learning).
    mu_dtype: dtype of the first moment (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision). ``jnp.bfloat16`` halves its memory.
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype)."""


def document(*fns: Callable, args: str = MOMENT_ARGS) -> None:
  """Substitute ``args`` (default :data:`MOMENT_ARGS`) for the ``{args}`` line of each function's docstring."""
  for f in fns:
    if f.__doc__:  # None under python -OO
      f.__doc__ = f.__doc__.replace("{args}\n", args + "\n")


def validate(fn: str, b1: Any, b2: Any, eps: Any, eps_root: Any = 0.0, mu_dtype: Any = None,
             nu_dtype: Any = None) -> tuple:
  """The validated, canonical ``(b1, b2, eps, eps_root, mu_dtype, nu_dtype)``; errors name ``fn``."""
  return (_checks.check_interval(fn, "b1", b1, 0.0, 1.0), _checks.check_interval(fn, "b2", b2, 0.0, 1.0),
          _checks.check_non_negative(fn, "eps", eps), _checks.check_non_negative(fn, "eps_root", eps_root),
          _checks.canonicalize_dtype(fn, "mu_dtype", mu_dtype), _checks.canonicalize_dtype(fn, "nu_dtype", nu_dtype))


def validate_optimizer(fn: str, learning_rate: Any, weight_decay: Any, mask: Any = None) -> None:
  """The arguments an optimizer adds to its ``scale_by_``: the learning rate, the decay and its mask."""
  _checks.check_scalar_or_schedule(fn, "learning_rate", learning_rate)
  _checks.check_non_negative(fn, "weight_decay", weight_decay)
  _checks.check_mask(fn, mask)


def init_moments(fn: str, params: Any, mu_dtype: Any, nu_dtype: Any) -> tuple[jax.Array, Any, Any]:
  """``(count, mu, nu)``: a zero int32 counter, a zero first moment and a zero (real) second moment."""
  return (jnp.zeros([], jnp.int32), _tree.zeros_like(fn, params, mu_dtype),
          _tree.zeros_like(fn, params, nu_dtype, real=True))


def corrections(b1: Any, b2: Any, count: jax.Array, nesterov: bool) -> Callable[[Any], tuple]:
  """``get(dtype) -> (1 - b1^t, 1 - b2^t, 1 - b1^(t+1) or None)``, computed once per real dtype of the tree."""
  cache: dict = {}

  def get(rdt):
    if rdt not in cache:
      cache[rdt] = (_tree.bias_correction(b1, count, rdt), _tree.bias_correction(b2, count, rdt),
                    _tree.bias_correction(b1, _tree.safe_increment(count), rdt) if nesterov else None)
    return cache[rdt]

  return get


def moments(g: jax.Array, m: jax.Array, v: jax.Array, b1: Any, b2: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Adam's two EMAs for one leaf, in the compute dtype: ``(g, m_t, v_t)`` (Kingma & Ba 2015, Algorithm 1)."""
  g, m = upcast(g, m, v)
  return g, _tree.ema(m, g, b1), _tree.ema(v.astype(_tree.real_dtype(g.dtype)), _tree.abs_sq(g), b2)


def upcast(g: jax.Array, m: jax.Array, *others: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``g`` and ``m`` in the compute dtype of ``(g, m, *others)``."""
  dt = _tree.compute_dtype(g, m, *others)
  return g.astype(dt), m.astype(dt)


def first_moment_hat(g: jax.Array, m_new: jax.Array, b1: Any, bc1: jax.Array, bc1_next: jax.Array | None):
  """``m_t / (1 - b1^t)``, or with ``bc1_next`` Dozat's Nesterov form
  ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)`` (Dozat 2016, Algorithm 2 with a constant momentum)."""
  if bc1_next is None:
    return m_new / bc1
  return b1 * m_new / bc1_next + (1 - b1) * g / bc1
