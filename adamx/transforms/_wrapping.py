"""What the wrappers (``skip_non_finite``, ``accumulate_gradients``, ``lookahead``, ``maximize``) share: argument
checks for a wrapped transform and an integer period, calling the inner ``update`` with or without extra
arguments, a conditional that stays a Python branch when eager, and zero updates shaped like the inner output.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx._base import _accepts_extra_args



def check_transform(fn: str, name: str, transform: Any) -> Callable[..., tuple[Any, Any]]:
  """Check that ``transform`` has ``init`` and ``update``; return ``update(u, s, p, **extra)`` that passes the
  extra arguments only if the transform accepts them (as :func:`adamx.chain` does)."""
  if not (callable(getattr(transform, "init", None)) and callable(getattr(transform, "update", None))):
    raise TypeError(f"adamx.{fn}: {name} must be a gradient transformation with init and update (for example "
                    f"adamx.adamw(1e-3)), got {transform!r}")
  inner = transform.update
  if _accepts_extra_args(inner):
    return inner
  return lambda updates, state, params=None, **extra_args: inner(updates, state, params)


def check_positive_int(fn: str, name: str, value: Any) -> int:
  """A concrete integer ``>= 1`` (a Python or NumPy integer); returns it as an int."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise TypeError(f"adamx.{fn}: {name} must be a positive integer, got {value!r}")
  if value < 1:
    raise ValueError(f"adamx.{fn}: {name} must be a positive integer, got {value!r}")
  return int(value)


def zero_updates_of(step: Callable[[], tuple[Any, Any]], updates: Any, traced: bool) -> Any:
  """Zeros shaped and typed like the updates that ``step()`` returns.

  Under a trace both branches of a ``lax.cond`` must agree on them exactly, and the inner transform decides their
  dtype (the gradient's dtype for adamx transforms, possibly another one for a foreign transform): ``step`` is
  traced abstractly to find out. Eagerly no branch has to match, and tracing the inner transform on every skipped
  call would cost more than the step itself: zeros like the incoming ``updates`` are returned.
  """
  if not traced:
    return jax.tree.map(jnp.zeros_like, updates)
  shapes = jax.eval_shape(step)[0]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def cond(pred: jax.Array, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Any) -> Any:
  """``lax.cond``, or a Python branch when ``pred`` is concrete (an eager call): eager steps then run op by op
  instead of compiling a new conditional on every call (a ``lax.cond`` of fresh closures misses JAX's cache)."""
  if is_traced(pred):
    return jax.lax.cond(pred, true_fn, false_fn, *operands)
  return true_fn(*operands) if bool(pred) else false_fn(*operands)


def all_finite(tree: Any) -> jax.Array:
  """A scalar bool: whether every entry of every leaf is finite (no NaN, no Inf; complex: both parts)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return functools.reduce(jnp.logical_and, flags, jnp.array(True))
