"""Shared tree maths, written once: moment dtypes, zeros, per-leaf mapping, bias correction, counters.

The dtype contract of adamx lives here:

* a state leaf has a *declared* dtype: the optimizer's ``mu_dtype``/``nu_dtype`` if given, else the parameter's
  dtype; for a complex parameter the first moment is complex of that precision and the second moment real (it is
  an average of ``|g|^2``);
* arithmetic runs in the *compute dtype* ``result_type(float32, grad, state)``: at least float32, float64 when
  any input is float64 (bfloat16 gradients and state are upcast, then rounded once on the way out);
* updates leave a transform in the gradient's dtype and state leaves in their declared dtype: each transform
  rounds once, so a chain of transforms on bf16 gradients rounds the update once per stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks

_INT32_MAX = np.iinfo(np.int32).max


def check_structure(fn: str, name: str, tree: Any, ref_name: str, ref: Any) -> None:
  """Raise a ValueError naming ``fn`` if ``tree`` and ``ref`` differ in structure or leaf shapes.

  Runs on every eager call: leaf paths are only built once a mismatch is found.
  """
  a, b = jax.tree.structure(tree), jax.tree.structure(ref)
  if a != b:
    raise ValueError(
        f"adamx.{fn}: the tree structure of {name} does not match that of {ref_name} (were the optimizer state and "
        f"the params built from a different tree?)\n  {name}: {a}\n  {ref_name}: {b}")
  for i, (x, y) in enumerate(zip(jax.tree.leaves(tree), jax.tree.leaves(ref))):
    if jnp.shape(x) != jnp.shape(y):
      raise ValueError(
          f"adamx.{fn}: leaf {_paths(tree)[i]} of {name} has shape {jnp.shape(x)} but the matching leaf of "
          f"{ref_name} has shape {jnp.shape(y)}")


def _paths(tree: Any) -> list[str]:
  return [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def moment_dtype(param_dtype: Any, declared: np.dtype | None, *, real: bool = False) -> np.dtype:
  """The dtype of a state leaf for a parameter of ``param_dtype`` (see the module docstring)."""
  is_complex = jnp.issubdtype(param_dtype, jnp.complexfloating)
  dt = jnp.dtype(param_dtype) if declared is None else declared
  if is_complex and real:
    dt = jnp.finfo(dt).dtype
  elif is_complex and declared is not None:
    dt = jnp.promote_types(declared, jnp.complex64)
  return jax.dtypes.canonicalize_dtype(dt)


def zeros_like(fn: str, params: Any, dtype: np.dtype | None = None, *, real: bool = False) -> Any:
  """Zeros shaped like ``params`` with :func:`moment_dtype` dtypes. Non-float parameters raise a TypeError.

  ``jnp.zeros_like`` (not ``jnp.zeros(shape)``) so that the state of a sharded parameter is created with the
  parameter's sharding, on its devices (eagerly, and under ``jit`` with explicit mesh axes).
  """

  def zeros(path, p):
    if not jnp.issubdtype(jnp.result_type(p), jnp.inexact):
      raise TypeError(
          f"adamx.{fn}: parameter {jax.tree_util.keystr(path) or '<root>'} has dtype {jnp.result_type(p)}; only "
          "floating and complex parameters can be optimized")
    return jnp.zeros_like(p, dtype=moment_dtype(jnp.result_type(p), dtype, real=real))

  return jax.tree_util.tree_map_with_path(zeros, params)


def compute_dtype(*xs: Any) -> np.dtype:
  """``result_type(float32, *xs)``: the dtype the arithmetic of one leaf runs in."""
  return jnp.result_type(jnp.float32, *[jnp.result_type(x) for x in xs])


def real_dtype(dtype: Any) -> np.dtype:
  return jnp.finfo(dtype).dtype


def abs_sq(x: jax.Array) -> jax.Array:
  """``|x|^2`` as a real array (``x * x`` for real ``x``)."""
  if jnp.iscomplexobj(x):
    return jnp.real(x) * jnp.real(x) + jnp.imag(x) * jnp.imag(x)
  return x * x


def map_leaves(fn: Callable[..., tuple], n_out: int, tree: Any, *rest: Any) -> tuple[Any, ...]:
  """Apply ``fn(leaf, *rest_leaves) -> n_out arrays`` to every leaf; return ``n_out`` trees shaped like ``tree``.

  Computing all outputs of a leaf in one function keeps each algorithm's update rule in one place, and lets XLA
  fuse a leaf's update into a single loop.
  """
  leaves, treedef = jax.tree.flatten(tree)
  rest_leaves = [treedef.flatten_up_to(r) for r in rest]
  outs = [fn(*args) for args in zip(leaves, *rest_leaves)]
  return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(n_out))


def ema(old: jax.Array, new: jax.Array, decay: Any) -> jax.Array:
  """The exponential moving average ``decay * old + (1 - decay) * new`` (optax's operation order)."""
  return (1 - decay) * new + decay * old


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1`` for an int32 counter, saturating at the int32 maximum instead of wrapping around."""
  return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)


def bias_correction(decay: Any, count: jax.Array, dtype: Any) -> jax.Array:
  """``1 - decay**count`` in ``dtype`` (at least float32), computed as ``-expm1(count * log(decay))``.

  For ``decay`` close to 1, ``1 - decay**count`` loses digits twice: ``decay`` rounds to the nearest float32
  (0.999 becomes 0.99900001) and the subtraction cancels. With ``log(decay)`` taken in float64 from the Python
  number, the float32 result has a relative error of about 2e-7 instead of up to about 2e-5 at ``decay=0.999``.
  """
  t = count.astype(dtype)
  x = _checks.concrete_number(decay)
  if x is not None:
    return -jnp.expm1(t * jnp.asarray(math.log(x) if x > 0 else -math.inf, dtype))
  # An array or tracer. The double ``where`` keeps the gradient finite at decay = 0 (a legal value, where log
  # is -inf), which jax.grad through a traced b1 would otherwise turn into NaN.
  d = jnp.asarray(decay, dtype)
  positive = d > 0
  return jnp.where(positive, -jnp.expm1(t * jnp.log(jnp.where(positive, d, 1))), 1 - d**t)


def norm(x: jax.Array) -> jax.Array:
  """The Euclidean norm of a leaf (``sqrt(sum |x|^2)``, real), in its compute dtype."""
  return jnp.sqrt(jnp.sum(abs_sq(x.astype(compute_dtype(x)))))


def trust_ratio(p: jax.Array, u: jax.Array, min_norm: Any = 0.0, coefficient: Any = 1.0, eps: Any = 0.0) -> jax.Array:
  """``coefficient * max(||p||, min_norm) / (max(||u||, min_norm) + eps)``, or 1 where either norm is 0.

  The layer-wise trust ratio of LARS and LAMB (You et al. 2020, Algorithm 2, with the zero-norm rule of the
  authors' code and optax: a parameter or update of norm 0 is left unscaled).
  """
  p_norm, u_norm = jnp.maximum(norm(p), min_norm), jnp.maximum(norm(u), min_norm)
  zero = (p_norm == 0) | (u_norm == 0)
  return jnp.where(zero, 1, coefficient * p_norm / jnp.where(zero, 1, u_norm + eps))
