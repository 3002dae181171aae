"""Clipping: by global norm (with the norm kept in the state for logging), by value and by per-leaf RMS.

Dtype contract (the same as every adamx transform): norms and clipping factors are computed in
``result_type(float32, leaf)`` (bfloat16 is upcast, float64 kept), and each update leaves in its own dtype, rounded
once. optax computes in the leaf's dtype, so on bfloat16 leaves the two differ by bfloat16 rounding (a few ulps);
on float32 leaves they agree to float32 rounding.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import EmptyState, GradientTransformation


def _check_positive(fn: str, name: str, value: Any) -> Any:
  """A concrete number must be > 0 (``inf`` allowed: no clipping); arrays and tracers pass unchecked."""
  value = _checks.check_type(fn, name, value)
  x = _checks.concrete_number(value)
  if x is not None and not (x > 0):  # also rejects NaN
    raise ValueError(f"adamx.{fn}: {name} must be a number > 0 (inf disables clipping), got {value!r}")
  return value


def _accumulation_dtype(leaves: list[Any]) -> Any:
  return jnp.result_type(jnp.float32, *[_tree.real_dtype(_tree.compute_dtype(x)) for x in leaves])


def global_norm(tree: Any) -> jax.Array:
  r"""The Euclidean norm of all the entries of a pytree together, :math:`\sqrt{\sum_\text{leaves} \sum |x|^2}`.

  Complex entries contribute :math:`|x|^2`; bfloat16 and float16 leaves are upcast and every sum is accumulated in
  float32 (float64 when a leaf is float64), so a large bfloat16 gradient does not lose its norm to rounding. Leaves
  are summed in tree order, as ``optax.tree.norm`` does, so on float32 trees the two agree bit for bit.

  Args:
    tree: a pytree of arrays (``None`` leaves are skipped).

  Returns:
    A real scalar of dtype ``result_type(float32, leaves)``; ``0.0`` for an empty tree. Its gradient at a zero tree
    is 0 (optax's is NaN).

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> float(adamx.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]], jnp.bfloat16)}))
    5.0
  """
  leaves = jax.tree.leaves(tree)
  dt = _accumulation_dtype(leaves)
  sums = [jnp.sum(_tree.abs_sq(jnp.asarray(x).astype(jnp.promote_types(jnp.result_type(x), dt)))) for x in leaves]
  total = functools.reduce(operator.add, sums, jnp.zeros([], dt))
  # sqrt has an infinite derivative at 0: the double where gives the norm of a zero tree the gradient 0 (a valid
  # subgradient) instead of NaN, so jax.grad through clipping a zero update stays finite.
  positive = total > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, total, 1)), 0).astype(dt)


class ClipByGlobalNormState(NamedTuple):
  """State of :func:`clip_by_global_norm`: the global norm of the last *incoming* (unclipped) updates."""

  global_norm: jax.Array  # float32 scalar; 0.0 before the first update


def clip_by_global_norm(max_norm: jax.typing.ArrayLike) -> GradientTransformation:
  r"""Rescale the updates so that their global norm is at most ``max_norm``, and remember the norm for logging.

  With :math:`n = \lVert u \rVert_2` over all leaves together (see :func:`adamx.global_norm`) and
  :math:`c` = ``max_norm``:

  .. math::
    u \leftarrow \begin{cases} u & n < c \\ u \, c / n & \text{otherwise} \end{cases}

  The select form (rather than :math:`u \, c / \max(n, c)`) is optax's: it keeps the gradient of the update with
  respect to :math:`u` exact when no clipping happens (meta-learning). The state holds :math:`n` of the incoming
  updates, so a training loop can log the gradient norm without computing it twice.

  Args:
    max_norm: :math:`c`, a number > 0 (``inf``: never clip, only measure), an array or a traced value.

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ClipByGlobalNormState`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.chain(adamx.clip_by_global_norm(1.0), adamx.adamw(learning_rate=1e-3))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([3.0, 4.0])}, state, params)
    >>> float(state[0].global_norm)  # the gradient norm before clipping
    5.0

  References:
    Pascanu, Mikolov & Bengio, `On the difficulty of training recurrent neural networks
    <https://arxiv.org/abs/1211.5063>`_, ICML 2013.

  .. warning::
    The state is a float32 scalar whatever the updates' dtype (float64 norms are rounded to it), so the state
    structure never depends on the params. optax's ``clip_by_global_norm`` is stateless and computes bfloat16
    leaves in bfloat16; adamx computes them in float32 and rounds once (results differ by bfloat16 rounding).
  """
  fn = "clip_by_global_norm"
  max_norm = _check_positive(fn, "max_norm", max_norm)

  def init(params):
    del params
    return ClipByGlobalNormState(global_norm=jnp.zeros([], jnp.float32))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    norm = global_norm(updates)
    keep = norm < max_norm
    # Dividing by 1 where nothing is clipped keeps the unused branch (and so jax.grad through it) finite at norm 0.
    divisor = jnp.where(keep, jnp.ones_like(norm), norm)

    def clip_leaf(u):
      dt = _tree.compute_dtype(u, norm)
      rdt = _tree.real_dtype(dt)
      clipped = (u.astype(dt) / divisor.astype(rdt)) * jnp.asarray(max_norm, rdt)
      return jnp.where(keep, u, clipped.astype(u.dtype))

    return jax.tree.map(clip_leaf, updates), ClipByGlobalNormState(global_norm=norm.astype(jnp.float32))

  return GradientTransformation(init, update)


def clip(max_delta: jax.typing.ArrayLike) -> GradientTransformation:
  r"""Clip every entry of the updates to magnitude at most ``max_delta``.

  Real entries are clipped to :math:`[-\delta, \delta]` as ``optax.clip`` does. A complex entry has no order, so
  ``jnp.clip`` (and therefore ``optax.clip``) rejects it; adamx clips its *modulus* and keeps its phase, which is
  the same rule written for real numbers:

  .. math::
    u \leftarrow u \, \min\bigl(1, \delta / |u|\bigr).

  Args:
    max_delta: :math:`\delta`, a number >= 0, an array or a traced value.

  Returns:
    A stateless :class:`adamx.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.clip(1.0)
    >>> tx.update({"w": jnp.array([-3.0, 0.5, 2.0])}, tx.init(None))[0]["w"].tolist()
    [-1.0, 0.5, 1.0]
  """
  fn = "clip"
  max_delta = _checks.check_non_negative(fn, "max_delta", max_delta)

  def init(params):
    del params
    return EmptyState()

  def clip_leaf(u):
    dt = _tree.compute_dtype(u, max_delta)
    d = jnp.asarray(max_delta, _tree.real_dtype(dt))
    x = u.astype(dt)
    if jnp.iscomplexobj(x):
      modulus = jnp.abs(x)
      # The inner where keeps the division (and its gradient) finite where the entry is not clipped.
      out = jnp.where(modulus > d, x * (d / jnp.where(modulus > d, modulus, 1)), x)
    else:
      out = jnp.clip(x, -d, d)
    return out.astype(u.dtype)

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(clip_leaf, updates), state

  return GradientTransformation(init, update)


def clip_by_block_rms(threshold: jax.typing.ArrayLike) -> GradientTransformation:
  r"""Rescale each leaf (a weight vector or matrix: a "block") so that its root mean square is at most ``threshold``.

  For each leaf :math:`u` with :math:`\operatorname{rms}(u) = \sqrt{\operatorname{mean}|u|^2}` and :math:`\tau` =
  ``threshold``, as ``optax.clip_by_block_rms``:

  .. math::
    u \leftarrow u / \max\bigl(1, \operatorname{rms}(u) / \tau\bigr).

  Args:
    threshold: :math:`\tau`, a number > 0 (``inf``: never clip), an array or a traced value.

  Returns:
    A stateless :class:`adamx.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.clip_by_block_rms(1.0)
    >>> tx.update({"w": jnp.array([3.0, -3.0])}, tx.init(None))[0]["w"].tolist()
    [1.0, -1.0]
  """
  fn = "clip_by_block_rms"
  threshold = _check_positive(fn, "threshold", threshold)

  def init(params):
    del params
    return EmptyState()

  def clip_leaf(u):
    dt = _tree.compute_dtype(u, threshold)
    x = u.astype(dt)
    rms = jnp.sqrt(jnp.mean(_tree.abs_sq(x)))
    return (x / jnp.maximum(1.0, rms / jnp.asarray(threshold, rms.dtype))).astype(u.dtype)

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(clip_leaf, updates), state

  return GradientTransformation(init, update)

