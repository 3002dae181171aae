"""Test helpers: the mixed pytrees every parity test runs on, seeded gradient streams, and tree comparisons."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def mixed_params(rng: np.random.Generator, *, bf16: bool = True, complex_leaf: bool = True,
                 real_dtype: Any = np.float32) -> dict[str, Any]:
  """Nested dict/list/tuple with scalar, 1-D, 2-D and 3-D leaves; optionally a bfloat16 and a complex leaf.

  Real leaves have ``real_dtype`` (float32, or float64 under x64); the complex leaf is complex64 (complex128 when
  ``real_dtype`` is float64).
  """
  params = {
      "dense": {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))},
      "blocks": [rng.normal(size=(2, 3, 2)), (rng.normal(size=()), rng.normal(size=(5,)))],
  }
  params = jax.tree.map(lambda x: jnp.asarray(x, real_dtype), params)
  if bf16:
    params["half"] = jnp.asarray(rng.normal(size=(6,)), jnp.bfloat16)
  if complex_leaf:
    ctype = np.complex128 if np.dtype(real_dtype) == np.float64 else np.complex64
    params["phase"] = jnp.asarray(rng.normal(size=(3,)) + 1j * rng.normal(size=(3,)), ctype)
  return params


def random_like(rng: np.random.Generator, tree: Any, scale: float = 1.0) -> Any:
  """Seeded standard-normal values shaped and typed like ``tree`` (complex leaves get a complex draw)."""

  def draw(x):
    g = rng.normal(size=x.shape) * scale
    if jnp.iscomplexobj(x):
      g = g + 1j * rng.normal(size=x.shape) * scale
    return jnp.asarray(g, x.dtype)

  return jax.tree.map(draw, tree)


def to_numpy(tree: Any) -> Any:
  """float64 / complex128 NumPy copies of the leaves (bfloat16 converted exactly)."""
  return jax.tree.map(lambda x: np.asarray(np.asarray(x, np.complex128 if jnp.iscomplexobj(x) else np.float64)), tree)


def max_rel_err(a: Any, b: Any, floor: float = 1e-30) -> float:
  """``max over leaves of max|a - b| / max|b|`` (normwise relative; ``floor`` guards all-zero leaves)."""
  errs = []
  for x, y in zip(jax.tree.leaves(to_numpy(a)), jax.tree.leaves(to_numpy(b)), strict=True):
    if np.size(y):
      errs.append(float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(y))), floor))
  return max(errs, default=0.0)


def assert_close(actual: Any, expected: Any, rtol: float, what: str = "") -> None:
  """Leafwise normwise relative comparison with a message naming the leaf."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected), (what, jax.tree.structure(actual),
                                                                      jax.tree.structure(expected))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
  for path, x, y in zip(paths, jax.tree.leaves(to_numpy(actual)), jax.tree.leaves(to_numpy(expected))):
    assert np.shape(x) == np.shape(y), (what, path, np.shape(x), np.shape(y))
    if not np.size(y):
      continue
    err = float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(y))), 1e-30)
    assert err <= rtol, f"{what}{path}: normwise relative error {err:.3e} > {rtol:.1e}"


def split_dtype(tree: Any, predicate) -> tuple[Any, Any]:
  """Two copies of ``tree``: the leaves where ``predicate(leaf)`` holds, and the others (the rest set to None)."""
  keep = jax.tree.map(lambda x: x if predicate(x) else None, tree)
  rest = jax.tree.map(lambda x: None if predicate(x) else x, tree)
  return keep, rest
