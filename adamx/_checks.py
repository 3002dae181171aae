"""Construction-time validation of hyperparameters.

Only *concrete* Python or NumPy numbers are checked: JAX arrays, NumPy arrays and tracers pass through
untouched and are never converted to Python bools, so factories stay usable under ``jit``, ``vmap`` and
``optax.inject_hyperparams`` (which call them with arrays or tracers). Every message has the form
``adamx.<function>: <argument> must be <constraint>, got <value>``.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_number(value: Any) -> float | None:
  """The value as a float if it is a plain real number (Python or NumPy scalar, not a bool), else None."""
  if isinstance(value, (bool, np.bool_, jax.Array, np.ndarray)) or not isinstance(value, numbers.Real):
    return None
  return float(value)


def _fail(fn: str, name: str, constraint: str, value: Any, exc: type[Exception] = ValueError):
  raise exc(f"adamx.{fn}: {name} must be {constraint}, got {value!r}")


def check_type(fn: str, name: str, value: Any) -> Any:
  """A hyperparameter must be a real number or a numeric array (or tracer); returns it, real part taken for arrays.

  Arrays are never rejected for their values: ``optax.inject_hyperparams`` may hand over a hyperparameter as an
  array of the params' dtype, complex64 included, whose imaginary part is zero; only its real part is meaningful.
  Bools, strings and concrete complex numbers are type errors.
  """
  if isinstance(value, (jax.Array, np.ndarray)):
    if not jnp.issubdtype(value.dtype, jnp.number):
      _fail(fn, name, "a real number or a numeric array", value, TypeError)
    return jnp.real(value) if jnp.iscomplexobj(value) else value
  if concrete_number(value) is None:
    _fail(fn, name, "a real number or array", value, TypeError)
  return value


def check_interval(fn: str, name: str, value: Any, low: float, high: float) -> Any:
  """``low <= value < high`` for concrete numbers; returns the value as :func:`check_type` does."""
  value = check_type(fn, name, value)
  x = concrete_number(value)
  if x is not None and not low <= x < high:
    _fail(fn, name, f"in [{low:g}, {high:g})", value)
  return value


def check_non_negative(fn: str, name: str, value: Any) -> Any:
  """A finite number ``>= 0`` for concrete numbers; returns the value as :func:`check_type` does."""
  value = check_type(fn, name, value)
  x = concrete_number(value)
  if x is not None and not (math.isfinite(x) and x >= 0):
    _fail(fn, name, "a finite number >= 0", value)
  return value


def check_at_least(fn: str, name: str, value: Any, low: float) -> Any:
  """A number ``>= low`` (``inf`` allowed, NaN not) for concrete numbers; returns the value as :func:`check_type`."""
  value = check_type(fn, name, value)
  x = concrete_number(value)
  if x is not None and not x >= low:
    _fail(fn, name, f"a number >= {low:g}", value)
  return value


def check_optional_non_negative(fn: str, name: str, value: Any) -> Any:
  """``None`` or a value accepted by :func:`check_non_negative`; returns it."""
  return None if value is None else check_non_negative(fn, name, value)


def check_scalar_or_schedule(fn: str, name: str, value: Any) -> Any:
  """A learning rate: a finite non-negative number, an array, or a callable ``count -> value``; returns it."""
  if callable(value) and not isinstance(value, (jax.Array, np.ndarray)):
    return value
  if not isinstance(value, (jax.Array, np.ndarray)) and concrete_number(value) is None:
    _fail(fn, name, "a number, an array or a schedule (a callable count -> value)", value, TypeError)
  return check_non_negative(fn, name, value)


def check_choice(fn: str, name: str, value: Any, choices: Iterable[str]) -> None:
  choices = tuple(choices)
  if not isinstance(value, str) or value not in choices:
    _fail(fn, name, "one of " + ", ".join(repr(c) for c in choices), value)


def check_bool(fn: str, name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    _fail(fn, name, "a Python bool", value, TypeError)


def check_steps(fn: str, name: str, value: Any) -> int:
  """A step count: a non-negative integer (an integral float such as ``1e4``, or a concrete 0-d integer array);
  returns it as an int."""
  if isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer):
    try:
      value = int(value)
    except TypeError:  # a tracer: step counts shape the schedule and must be concrete
      _fail(fn, name, "a concrete non-negative integer", value, TypeError)
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    _fail(fn, name, "a non-negative integer", value, TypeError)
  if not (math.isfinite(float(value)) and float(value) == int(value) and value >= 0):
    _fail(fn, name, "a non-negative integer", value)
  return int(value)


def is_mask_leaf(m: Any) -> bool:
  """A bool, or a bool array (elementwise mask)."""
  return isinstance(m, (bool, np.bool_)) or (hasattr(m, "dtype") and jnp.issubdtype(m.dtype, jnp.bool_))


def check_mask_leaves(fn: str, mask_tree: Any) -> None:
  for path, m in jax.tree_util.tree_flatten_with_path(mask_tree)[0]:
    if not is_mask_leaf(m):
      raise TypeError(f"adamx.{fn}: mask must be a pytree of bools or bool arrays, got {reprlib.repr(mask_tree)} "
                      f"(leaf {jax.tree_util.keystr(path) or '<root>'} is {reprlib.repr(m)})")


def check_mask(fn: str, mask: Any) -> None:
  """``None``, a callable ``params -> pytree of bools``, or a non-empty pytree of bools (checked now)."""
  if mask is None or callable(mask):
    return
  if not jax.tree.leaves(mask):
    _fail(fn, "mask", "None, a callable params -> pytree of bools, or a non-empty pytree of bools", mask, TypeError)
  check_mask_leaves(fn, mask)


def canonicalize_dtype(fn: str, name: str, dtype: Any) -> np.dtype | None:
  """``None`` or a real floating dtype (float16, bfloat16, float32, float64)."""
  if dtype is None:
    return None
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    _fail(fn, name, "None or a real floating dtype such as jnp.float32 or jnp.bfloat16", dtype)
  if not jnp.issubdtype(dt, jnp.floating):
    _fail(fn, name, "None or a real floating dtype such as jnp.float32 or jnp.bfloat16", dtype)
  return dt
