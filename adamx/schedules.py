"""Schedules: functions ``count -> value`` for the learning rate (or any hyperparameter).

A schedule is a pure function of the step count (an int or an int32 array), so it can be jitted, vmapped over its
numeric arguments, and passed as ``learning_rate`` to any adamx optimizer. Values are computed in floating point
from the count (float32, float64 under x64), so counts beyond the int32 range do not overflow. Names, arguments and
values follow optax where it has the schedule, so code ports by changing the import; each docstring names the
PyTorch scheduler it matches and says where the two libraries differ.
"""

from __future__ import annotations

import jax

from adamx import _checks
from adamx._base import Schedule
from adamx._schedules_cycles import (
    cosine_onecycle_schedule,
    cosine_warm_restarts_schedule,
    join_schedules,
    linear_onecycle_schedule,
    sgdr_schedule,
)
from adamx._schedules_decay import (
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
)
from adamx._schedules_warmup import (
    inverse_sqrt_schedule,
    warmup_constant_schedule,
    warmup_cosine_schedule,
    warmup_stable_decay_schedule,
)

__all__ = (
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "piecewise_constant_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_schedule",
    "warmup_stable_decay_schedule",
    "inverse_sqrt_schedule",
    "join_schedules",
    "sgdr_schedule",
    "cosine_warm_restarts_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
)


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
