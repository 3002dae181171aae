"""What the Adam-family modules share, written once: argument validation and documentation, moment state
creation, Adam's two EMAs, bias corrections and the Nesterov first moment.

Not an optimizer module: every ``optimizers/_<family>.py`` may import it (and none imports another family).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx.transforms._wrapping import check_positive_int

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


#: The shared text of the factored second-moment arguments (``{factored_args}`` in docstrings).
FACTORED_ARGS = """\
    factored: keep a factored second moment for matrices (Shazeer & Stern 2018): for a leaf whose two largest
      axes both have at least ``min_dim_size_to_factor`` entries, ``nu`` is a :class:`adamx.FactoredMoment` of row
      and column statistics (``O(n + m)`` memory instead of ``O(n m)``); other leaves keep the full ``nu``.
      Complex leaves that would be factored raise a TypeError at ``init``.
    min_dim_size_to_factor: a leaf is factored only if its second-largest axis has at least this many entries
      (optax's ``scale_by_factored_rms`` rule), a positive int; ``None`` is 128 (optax's default). Only with
      ``factored=True``.
    factored_eps: :math:`\\epsilon_1`, added to :math:`|g|^2` before the row and column means, >= 0 (optax's
      ``epsilon``); it keeps the reconstruction finite where a whole row of gradients is zero. ``None`` is 1e-30
      (the paper's and optax's). Only with ``factored=True``.

    (The two ``None`` defaults keep a plain Adam's arguments out of ``inject_hyperparams``' state.)"""


def document(*fns: Callable, args: str = MOMENT_ARGS, placeholder: str = "{args}") -> None:
  """Substitute ``args`` (default :data:`MOMENT_ARGS`) for the ``placeholder`` line of each function's docstring."""
  for f in fns:
    if f.__doc__:  # None under python -OO
      f.__doc__ = f.__doc__.replace(placeholder + "\n", args + "\n")


def validate(fn: str, b1: Any, b2: Any, eps: Any, eps_root: Any = 0.0, mu_dtype: Any = None,
             nu_dtype: Any = None) -> tuple:
  """The validated, canonical ``(b1, b2, eps, eps_root, mu_dtype, nu_dtype)``; errors name ``fn``."""
  return (_checks.check_interval(fn, "b1", b1, 0.0, 1.0), _checks.check_interval(fn, "b2", b2, 0.0, 1.0),
          _checks.check_non_negative(fn, "eps", eps), _checks.check_non_negative(fn, "eps_root", eps_root),
          _checks.canonicalize_dtype(fn, "mu_dtype", mu_dtype), _checks.canonicalize_dtype(fn, "nu_dtype", nu_dtype))


def validate_optimizer(fn: str, learning_rate: Any, weight_decay: Any, mask: Any = None) -> tuple[Any, Any]:
  """The arguments an optimizer adds to its ``scale_by_``: the learning rate, the decay and its mask; returns the
  validated ``(learning_rate, weight_decay)``."""
  learning_rate = _checks.check_scalar_or_schedule(fn, "learning_rate", learning_rate)
  weight_decay = _checks.check_non_negative(fn, "weight_decay", weight_decay)
  _checks.check_mask(fn, mask)
  return learning_rate, weight_decay


def init_moments(fn: str, params: Any, mu_dtype: Any, nu_dtype: Any,
                 min_dim_size_to_factor: int | None = None) -> tuple[jax.Array, Any, Any]:
  """``(count, mu, nu)``: a zero int32 counter, a zero first moment and a zero (real) second moment; with
  ``min_dim_size_to_factor`` (``factored=True``), a :class:`FactoredMoment` for each leaf that :func:`factored_dims`
  factors."""
  nu = (_tree.zeros_like(fn, params, nu_dtype, real=True) if min_dim_size_to_factor is None
        else init_factored_nu(fn, params, nu_dtype, min_dim_size_to_factor))
  return jnp.zeros([], jnp.int32), _tree.zeros_like(fn, params, mu_dtype), nu


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


def unbias(x: jax.Array, bc: jax.Array) -> jax.Array:
  """``x / bc`` for a bias correction ``bc``, as ``x * (1 / bc)``.

  XLA rewrites a division by a scalar into that product in some graphs and not in others; written out, the
  compiled arithmetic is the same in every graph (and is what :func:`adamx.apply_step`'s fused kernel computes).
  """
  return x * (1 / bc)


def first_moment_hat(g: jax.Array, m_new: jax.Array, b1: Any, bc1: jax.Array, bc1_next: jax.Array | None):
  """``m_t / (1 - b1^t)``, or with ``bc1_next`` Dozat's Nesterov form
  ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)`` (Dozat 2016, Algorithm 2 with a constant momentum)."""
  if bc1_next is None:
    return m_new / bc1
  return b1 * m_new / bc1_next + (1 - b1) * g / bc1


# ---------------------------------------------------------------------------------------------------------------
# The factored second moment (Shazeer & Stern 2018, Section 3 and Algorithm 4)
# ---------------------------------------------------------------------------------------------------------------


class FactoredMoment(NamedTuple):
  """A factored second moment: the ``nu`` of one matrix-like leaf of an optimizer built with ``factored=True``.

  For a leaf whose largest axis is ``d0`` and second-largest ``d1`` (optax's ``scale_by_factored_rms`` rule, ties
  broken towards the later axis for ``d0``), the two fields are EMAs of means of :math:`|g|^2 + \\epsilon_1`;
  the full second moment is reconstructed as ``v_row * v_col / mean(v_row)`` (Shazeer & Stern 2018, Algorithm 4:
  :math:`\\hat V_t = R_t C_t / 1^\\top R_t`, written with means instead of sums, which is the same matrix).
  The names and axes are optax's (``FactoredState.v_row``/``v_col``), so the two can be compared directly.
  """

  v_row: jax.Array  # EMA of the mean over axis d0: the leaf's shape without d0
  v_col: jax.Array  # EMA of the mean over axis d1: the leaf's shape without d1


#: The defaults of ``min_dim_size_to_factor`` and ``factored_eps`` (optax's ``scale_by_factored_rms``).
MIN_DIM_SIZE_TO_FACTOR, FACTORED_EPS = 128, 1e-30


def validate_factored(fn: str, factored: Any, min_dim_size_to_factor: Any, factored_eps: Any) -> tuple:
  """The validated ``(factored, min_dim_size_to_factor, factored_eps)``, the defaults filled in.

  ``min_dim_size_to_factor`` decides the state's structure, so it must be concrete: a positive int, or a concrete
  0-d integer array (``optax.inject_hyperparams`` turns an int argument into one). The two are used only with
  ``factored=True``, and passing either without it is an error (it would be silently ignored).
  """
  _checks.check_bool(fn, "factored", factored)
  if not factored:
    for name, value in (("min_dim_size_to_factor", min_dim_size_to_factor), ("factored_eps", factored_eps)):
      if value is not None:
        raise ValueError(f"adamx.{fn}: {name} is used only with factored=True, got {name}={value!r} with "
                         "factored=False")
    return False, None, None
  factored_eps = _checks.check_non_negative(fn, "factored_eps",
                                            FACTORED_EPS if factored_eps is None else factored_eps)
  value = MIN_DIM_SIZE_TO_FACTOR if min_dim_size_to_factor is None else min_dim_size_to_factor
  if isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer):
    try:
      value = int(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
      raise TypeError(
          f"adamx.{fn}: min_dim_size_to_factor must be a concrete positive int with factored=True (it decides "
          f"which leaves are factored), got a traced {value!r}; with optax.inject_hyperparams pass "
          "static_args=('min_dim_size_to_factor',)") from None
  return True, check_positive_int(fn, "min_dim_size_to_factor", value), factored_eps


def factored_dims(shape: tuple[int, ...], min_dim_size_to_factor: int) -> tuple[int, int] | None:
  """``(d1, d0)``: the second-largest and the largest axis of ``shape``, or None if ``shape`` has fewer than two
  axes or its second-largest axis is shorter than ``min_dim_size_to_factor`` (optax's ``_factored_dims``)."""
  if len(shape) < 2:
    return None
  order = np.argsort(shape, kind="stable")
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def init_factored_nu(fn: str, params: Any, nu_dtype: Any, min_dim_size_to_factor: int) -> Any:
  """Zero second moments: a :class:`FactoredMoment` for each factored leaf, a full zero array for the others."""
  # Shapes and dtypes only (no allocation of the full second moment); raises zeros_like's errors for bad leaves.
  full = jax.eval_shape(lambda: _tree.zeros_like(fn, params, nu_dtype, real=True))

  def init(path, p, s):
    dims = factored_dims(s.shape, min_dim_size_to_factor)
    if dims is None:
      return jnp.zeros_like(p, dtype=s.dtype)  # as _tree.zeros_like: with the parameter's sharding
    if jnp.issubdtype(jnp.result_type(p), jnp.complexfloating):
      raise TypeError(
          f"adamx.{fn}: factored=True cannot factor the complex parameter {jax.tree_util.keystr(path) or '<root>'} "
          f"(shape {s.shape}, {jnp.result_type(p)}); split it into real and imaginary parts, or raise "
          f"min_dim_size_to_factor above {s.shape[dims[0]]} to keep its full second moment")
    d1, d0 = dims
    # Zeros like the reduced parameter (as optax's _zeros_like_no_axis), so they keep its sharding where it has one.
    return FactoredMoment(v_row=jnp.zeros_like(jax.eval_shape(lambda x: jnp.sum(x, axis=d0), p), dtype=s.dtype),
                          v_col=jnp.zeros_like(jax.eval_shape(lambda x: jnp.sum(x, axis=d1), p), dtype=s.dtype))

  return jax.tree_util.tree_map_with_path(init, params, full)


def factored_moments(g: jax.Array, m: jax.Array, nu: FactoredMoment, b1: Any, b2: Any, factored_eps: Any,
                     min_dim_size_to_factor: int) -> tuple[jax.Array, jax.Array, jax.Array, FactoredMoment]:
  """Adam's first moment and the factored second moment of one leaf: ``(g, m_t, v_t, nu_t)`` with ``v_t`` the
  reconstructed full second moment in the compute dtype and ``nu_t`` the new statistics in ``nu``'s dtypes.

  Shazeer & Stern 2018, Algorithm 4: :math:`R_t = \\beta_2 R_{t-1} + (1 - \\beta_2)(G_t^2 + \\epsilon_1) 1_m`,
  :math:`C_t = \\beta_2 C_{t-1} + (1 - \\beta_2) 1_n^\\top (G_t^2 + \\epsilon_1)`,
  :math:`\\hat V_t = R_t C_t / 1_n^\\top R_t`, with means for sums (optax's form) and Adam's constant
  :math:`\\beta_2` for the paper's schedule :math:`\\hat\\beta_{2t}`.
  """
  g, m = upcast(g, m, nu.v_row, nu.v_col)
  rdt = _tree.real_dtype(g.dtype)
  d1, d0 = factored_dims(g.shape, min_dim_size_to_factor)
  g2 = _tree.abs_sq(g) + factored_eps
  v_row = _tree.ema(nu.v_row.astype(rdt), jnp.mean(g2, axis=d0), b2)
  v_col = _tree.ema(nu.v_col.astype(rdt), jnp.mean(g2, axis=d1), b2)
  row_mean = jnp.mean(v_row, axis=d1 - 1 if d1 > d0 else d1, keepdims=True)
  v = jnp.expand_dims(v_row / row_mean, d0) * jnp.expand_dims(v_col, d1)
  new = FactoredMoment(v_row.astype(nu.v_row.dtype), v_col.astype(nu.v_col.dtype))
  return g, _tree.ema(m, g, b1), v, new
