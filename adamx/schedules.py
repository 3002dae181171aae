"""Schedules: functions ``count -> value`` for the learning rate (or any hyperparameter).

A schedule is a pure function of the step count (an int or an int32 array), so it can be jitted, vmapped over its
numeric arguments, and passed as ``learning_rate`` to any adamx optimizer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adamx import _checks
from adamx._base import Schedule


def constant_schedule(value: jax.typing.ArrayLike) -> Schedule:
  """A schedule that always returns ``value``.

  Args:
    value: a number or an array.

  Returns:
    A function ``count -> value``.

  Example:
    >>> import adamx
    >>> float(adamx.constant_schedule(3e-4)(1000))
    0.0003
  """
  _checks.check_type("constant_schedule", "value", value)

  def schedule(count):
    del count
    return value

  return schedule


def warmup_cosine_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
  r"""Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

  With :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps`` (the *total* length, warmup included, as in optax's
  ``warmup_cosine_decay_schedule``, which gives the same numbers), :math:`p` = ``exponent``:

  .. math::
    \eta(t) = \begin{cases}
      \eta_0 + (\eta_\text{peak} - \eta_0)\, t / W & t < W \\
      \eta_\text{end} + (\eta_\text{peak} - \eta_\text{end})
        \left[\tfrac12\left(1 + \cos\frac{\pi \min(t - W,\, D - W)}{D - W}\right)\right]^{p} & t \ge W
    \end{cases}

  The value is ``end_value`` from step ``decay_steps`` on. With ``warmup_steps == decay_steps == 0`` the schedule
  is the constant ``end_value``.

  Args:
    init_value: value at step 0.
    peak_value: value at the end of the warmup (step ``warmup_steps``).
    warmup_steps: length of the linear warmup, a non-negative integer (0: start at ``peak_value``).
    decay_steps: step at which ``end_value`` is reached; greater than ``warmup_steps``.
    end_value: final value.
    exponent: power applied to the cosine factor (1: the usual cosine).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.warmup_cosine_schedule(0.0, 1e-3, warmup_steps=100, decay_steps=1_000, end_value=1e-5)
    >>> tx = adamx.adamw(learning_rate=lr, weight_decay=1e-2)

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, ICLR 2017; Goyal et al., `Accurate, Large Minibatch SGD: Training ImageNet
    in 1 Hour <https://arxiv.org/abs/1706.02677>`_, 2017 (linear warmup).
  """
  fn = "warmup_cosine_schedule"
  for name, value in [("init_value", init_value), ("peak_value", peak_value), ("end_value", end_value),
                      ("exponent", exponent)]:
    _checks.check_type(fn, name, value)
  warmup_steps = _checks.check_steps(fn, "warmup_steps", warmup_steps)
  decay_steps = _checks.check_steps(fn, "decay_steps", decay_steps)
  if decay_steps <= warmup_steps and (warmup_steps, decay_steps) != (0, 0):
    raise ValueError(f"adamx.{fn}: decay_steps must be greater than warmup_steps ({warmup_steps}), "
                     f"got {decay_steps}")
  cosine_steps = decay_steps - warmup_steps

  def schedule(count):
    # Floats avoid int32 overflow for large step counts and give one result dtype for every branch.
    t = jnp.asarray(count, dtype=float)
    if cosine_steps == 0:
      return jnp.full_like(t, end_value)
    frac = jnp.clip(t / max(warmup_steps, 1), 0.0, 1.0)
    warm = init_value + (peak_value - init_value) * frac
    done = jnp.clip(t - warmup_steps, 0.0, cosine_steps)
    cosine = (0.5 * (1.0 + jnp.cos(jnp.pi * done / cosine_steps))) ** exponent
    decayed = end_value + (peak_value - end_value) * cosine
    return jnp.where(t < warmup_steps, warm, decayed)

  return schedule
