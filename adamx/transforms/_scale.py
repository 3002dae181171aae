"""Scaling by a constant and by the learning rate."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import EmptyState, GradientTransformation, ScalarOrSchedule


class ScaleByScheduleState(NamedTuple):
  """State of :func:`scale_by_learning_rate` with a schedule: the number of updates so far."""

  count: jax.Array  # int32 scalar, saturating


def _scaled(updates: Any, factor: Any) -> Any:
  """``factor * u`` for every leaf, computed in at least float32 and returned in ``u``'s dtype."""

  def scale_leaf(u):
    return (jnp.asarray(factor, _tree.real_dtype(_tree.compute_dtype(u, factor))) * u).astype(u.dtype)

  return jax.tree.map(scale_leaf, updates)


def scale(step_size: jax.typing.ArrayLike) -> GradientTransformation:
  """Multiply updates by a fixed ``step_size`` (a number or an array).

  Args:
    step_size: the factor; may be negative.

  Returns:
    A stateless :class:`adamx.GradientTransformation`.

  Example:
    >>> import adamx
    >>> tx = adamx.chain(adamx.scale_by_adam(), adamx.scale(-1e-3))  # the same as adamx.adam(1e-3)
  """
  step_size = _checks.check_type("scale", "step_size", step_size)

  def init(params):
    del params
    return EmptyState()

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return _scaled(updates, step_size), state

  return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> GradientTransformation:
  r"""Multiply updates by ``-learning_rate`` (descent), where the rate may follow a schedule.

  With a schedule, the state counts updates and step :math:`t` (from 0) uses ``learning_rate(t)``, as optax and
  ``torch.optim.lr_scheduler`` do.

  Args:
    learning_rate: a non-negative number, an array, or a schedule ``count -> value`` such as
      :func:`adamx.warmup_cosine_schedule`.

  Returns:
    A :class:`adamx.GradientTransformation`; its state is :class:`EmptyState` for a fixed rate and
    ``ScaleByScheduleState(count)`` for a schedule.

  Example:
    >>> import adamx
    >>> lr = adamx.warmup_cosine_schedule(0.0, 1e-3, warmup_steps=100, decay_steps=1_000)
    >>> tx = adamx.chain(adamx.scale_by_adam(), adamx.scale_by_learning_rate(lr))
  """
  learning_rate = _checks.check_scalar_or_schedule("scale_by_learning_rate", "learning_rate", learning_rate)
  if not callable(learning_rate):
    return scale(-learning_rate)

  def init(params):
    del params
    return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    lr = learning_rate(state.count)
    return _scaled(updates, -lr), ScaleByScheduleState(count=_tree.safe_increment(state.count))

  return GradientTransformation(init, update)
