"""``state_bytes``: the memory an optimizer state (any pytree) holds, in bytes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _nbytes(x: Any) -> int | None:
  """Bytes of an array-like leaf (a JAX or NumPy array, a tracer, a ``jax.ShapeDtypeStruct``), or None."""
  shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
  if shape is None or dtype is None:
    return None
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # a typed PRNG key: its key data
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype))
    return int(np.prod(data.shape, dtype=np.int64)) * data.dtype.itemsize
  return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def state_bytes(state: Any, *, per_leaf: bool = False) -> int | dict[str, int]:
  """The bytes held by the array leaves of ``state`` (any pytree: a plain or a compressed optimizer state).

  Counts every array leaf, ``size * itemsize``: a compressed moment counts its codes and its block scales, a key
  its key data. Python numbers and other non-array leaves count 0. Leaves may be ``jax.ShapeDtypeStruct``, so
  ``state_bytes(jax.eval_shape(tx.init, params))`` measures a state without allocating it.

  Args:
    state: a pytree.
    per_leaf: return a dict ``{path: bytes}`` over the array leaves (paths as ``jax.tree_util.keystr``) instead of
      the total.

  Returns:
    The total number of bytes (an int), or the dict.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros((1024, 1024))}
    >>> adamx.state_bytes(jax.eval_shape(adamx.adam(1e-3).init, params)) / 1024**2  # two float32 moments
    8.000003814697266
    >>> tx = adamx.compress_state(adamx.adam(1e-3), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit())
    >>> adamx.state_bytes(jax.eval_shape(tx.init, params)) / 1024**2
    2.0039100646972656
  """
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  sizes = {jax.tree_util.keystr(path) or "<root>": _nbytes(x) for path, x in leaves}
  sizes = {k: v for k, v in sizes.items() if v is not None}
  return sizes if per_leaf else sum(sizes.values())
