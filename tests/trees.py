"""Test helpers: the mixed pytrees every parity test runs on, seeded gradients and tree comparisons.

The pytree and gradient generators are those of ``python -m adamx check``, so the CLI and the tests exercise the
same trees.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from adamx.check import random_like, rel_err, to_numpy
from adamx.check import example_params as _example_params

__all__ = ["mixed_params", "random_like", "to_numpy", "max_rel_err", "assert_close"]

max_rel_err = rel_err


def mixed_params(rng: np.random.Generator, *, bf16: bool = True, complex_leaf: bool = True,
                 real_dtype: Any = np.float32) -> dict[str, Any]:
  """The check's mixed pytree, with a bfloat16 leaf by default (see ``adamx.check.example_params``)."""
  return _example_params(rng, bf16=bf16, complex_leaf=complex_leaf, real_dtype=real_dtype)


def assert_close(actual: Any, expected: Any, rtol: float, what: str = "", scale: float = 0.0) -> None:
  """Leaf by leaf, ``max|a - e| / max(max|e|, scale) <= rtol`` (see ``adamx.check.rel_err``), naming the failing
  leaf."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected), (what, jax.tree.structure(actual),
                                                                      jax.tree.structure(expected))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
  for path, x, y in zip(paths, jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert np.shape(x) == np.shape(y), (what, path, np.shape(x), np.shape(y))
    err = rel_err(x, y, scale)
    assert err <= rtol, f"{what}{path}: normwise relative error {err:.3e} > {rtol:.1e}"


def first_variant_default(cases: list[tuple[Any, Any]], ids: list[str]) -> list[Any]:
  """``pytest.param``s of ``(spec, variant)`` cases in which every variant but each optimizer's first is marked
  ``slow``: for checks that do not depend on the convention a variant selects, the default suite runs the first
  variant and ``-m slow`` the others."""
  import pytest

  return [pytest.param(spec, variant, id=ident, marks=[pytest.mark.slow] if variant is not spec.variants[0] else [])
          for (spec, variant), ident in zip(cases, ids)]


def bound_factory(spec: Any) -> Any:
  """``spec.factory`` with the keyword arguments its ``update`` needs bound (``OptimizerSpec.update_kwargs``:
  Sophia's objective, here ``adamx.check.example_loss``), so that wrappers written for the plain protocol
  (``optax.lookahead``, ``optax.chain``) can hold it. The factory itself for every other optimizer."""
  if not spec.update_kwargs:
    return spec.factory
  import functools

  from adamx import _base, check

  @functools.wraps(spec.factory)
  def make(*args: Any, **kwargs: Any) -> Any:
    tx = spec.factory(*args, **kwargs)

    def update(updates, state, params=None, **extra_args):
      return tx.update(updates, state, params, **{**check.update_kwargs(spec, params), **extra_args})

    return _base.GradientTransformation(tx.init, update)

  return make
