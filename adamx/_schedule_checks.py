"""Construction-time validation specific to schedules, in the conventions of :mod:`adamx._checks`.

Numeric hyperparameters (values, rates, factors) accept arrays and tracers, so schedules can be vmapped over them;
quantities that shape the schedule (step counts, phase fractions) must be concrete.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks


def _fail(fn: str, name: str, constraint: str, value: Any, exc: type[Exception] = ValueError):
  raise exc(f"adamx.{fn}: {name} must be {constraint}, got {value!r}")


def check_positive(fn: str, name: str, value: Any) -> Any:
  """A finite number ``> 0`` for concrete numbers; returns the value as :func:`adamx._checks.check_type` does."""
  value = _checks.check_type(fn, name, value)
  x = _checks.concrete_number(value)
  if x is not None and not (math.isfinite(x) and x > 0):
    _fail(fn, name, "a finite number > 0", value)
  return value


def check_positive_steps(fn: str, name: str, value: Any) -> int:
  """A step count ``>= 1`` (see :func:`adamx._checks.check_steps`); returns it as an int."""
  try:
    steps = _checks.check_steps(fn, name, value)
  except ValueError:
    steps = 0  # reported below with this check's constraint
  if steps < 1:
    _fail(fn, name, "a positive integer", value)
  return steps


def check_fraction(fn: str, name: str, value: Any) -> float:
  """A concrete real number in ``[0, 1]`` (it places phase boundaries, so it cannot be traced); returns a float."""
  if isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.floating):
    try:
      value = float(value)
    except TypeError:  # a tracer
      _fail(fn, name, "a concrete number in [0, 1]", value, TypeError)
  x = _checks.concrete_number(value)
  if x is None:
    _fail(fn, name, "a number in [0, 1]", value, TypeError)
  if not 0.0 <= x <= 1.0:
    _fail(fn, name, "a number in [0, 1]", value)
  return x
