"""The flat parameter store: exact round trips, flat gradients, bitwise-identical elementwise optimizers, fewer
loops in the compiled step, and clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adamx
from benchmarks import hlo
from tests.trees import mixed_params, random_like


def test_round_trip_keeps_values_shapes_and_dtypes(rng):
  params = mixed_params(rng)  # float32 leaves of 0-3 dims, a bfloat16 and a complex64 leaf
  flat, layout = adamx.flatten_params(params)
  assert set(flat) == {"float32", "bfloat16", "complex64"}
  assert all(x.ndim == 1 for x in flat.values())
  assert flat["float32"].size == sum(x.size for x in jax.tree.leaves(params) if x.dtype == jnp.float32)
  back = layout.unpack(flat)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # pack is unpack's inverse, also for another tree of the same layout (the gradients)
  grads = random_like(rng, params)
  for a, b in zip(jax.tree.leaves(layout.unpack(layout.pack(grads))), jax.tree.leaves(grads)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gradient_of_the_flat_loss_is_the_packed_gradient(rng):
  params = mixed_params(rng, bf16=False, complex_leaf=False)
  flat, layout = adamx.flatten_params(params)

  def loss(p):
    return sum(jnp.sum(jnp.sin(x) * (i + 1)) for i, x in enumerate(jax.tree.leaves(p)))

  g_flat = jax.jit(jax.grad(lambda f: loss(layout.unpack(f))))(flat)
  expected = layout.pack(jax.grad(loss)(params))
  np.testing.assert_array_equal(np.asarray(g_flat["float32"]), np.asarray(expected["float32"]))


@pytest.mark.parametrize("make", [lambda: adamx.adamw(1e-2, weight_decay=0.1), lambda: adamx.adam(1e-2),
                                  lambda: adamx.amsgrad(1e-2), lambda: adamx.lion(1e-3)],
                         ids=["adamw", "adam", "amsgrad", "lion"])
def test_elementwise_optimizers_are_bitwise_identical_on_the_flat_store(rng, make):
  """The same elementwise arithmetic on the same values: params and state agree exactly every step."""
  params = mixed_params(rng)
  grads = [random_like(rng, params) for _ in range(10)]
  tx = make()
  flat, layout = adamx.flatten_params(params)

  @jax.jit
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  p_tree, s_tree = params, tx.init(params)
  p_flat, s_flat = flat, tx.init(flat)
  for g in grads:
    p_tree, s_tree = step(p_tree, s_tree, g)
    p_flat, s_flat = step(p_flat, s_flat, layout.pack(g))
    for a, b in zip(jax.tree.leaves(layout.pack(p_tree)), jax.tree.leaves(p_flat)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # every parameter-shaped state leaf (mu, nu, nu_max) agrees too (nu of the complex leaf is real: compare unpacked)
  state_trees = [(x, y) for x, y in zip(jax.tree.leaves(s_tree, is_leaf=_is_moment(params)),
                                        jax.tree.leaves(s_flat, is_leaf=_is_moment(flat)))
                 if _is_moment(params)(x)]
  assert state_trees
  for tree_moment, flat_moment in state_trees:
    for a, b in zip(jax.tree.leaves(tree_moment), jax.tree.leaves(layout.unpack(flat_moment))):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _is_moment(params):
  structure = jax.tree.structure(params)
  return lambda x: isinstance(x, dict) and jax.tree.structure(x) == structure


def test_flat_step_has_a_constant_number_of_loops():
  """200 leaves: the tree step runs 3 loops per leaf on XLA:CPU, the flat step 3 in all."""
  params = {f"p{i}": jnp.ones((50,)) for i in range(200)}
  tx = adamx.adamw(1e-3)

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  tree_text = hlo.compiled_text(step, params, tx.init(params), params)
  flat, _ = adamx.flatten_params(params)
  flat_text = hlo.compiled_text(step, flat, tx.init(flat), flat)
  tree_loops = len(hlo.entry_passes(tree_text, min_elements=50))
  flat_loops = len(hlo.entry_passes(flat_text, min_elements=50))
  assert flat_loops <= 3
  if jax.default_backend() == "cpu":
    assert tree_loops == 3 * 200


def test_layout_is_static_under_jit(rng):
  params = mixed_params(rng)
  flat, layout = adamx.flatten_params(params)
  out = jax.jit(lambda f: jax.tree.map(lambda x: x * 2, layout.unpack(f)))(flat)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b * 2))
  assert hash(layout) == hash(adamx.flatten_params(params)[1])


def test_errors_name_the_function_and_the_problem():
  params = {"a": jnp.ones((2, 3)), "b": jnp.ones(4, jnp.bfloat16)}
  flat, layout = adamx.flatten_params(params)
  with pytest.raises(ValueError, match=r"adamx.flatten_params: params has no leaves"):
    adamx.flatten_params({})
  with pytest.raises(ValueError, match=r"FlatLayout.pack: leaf 0 has shape \(3, 2\) and dtype float32; the layout "
                                       r"expects \(2, 3\)"):
    layout.pack({"a": jnp.ones((3, 2)), "b": jnp.ones(4, jnp.bfloat16)})
  with pytest.raises(ValueError, match=r"expects \(4,\) and bfloat16"):
    layout.pack({"a": jnp.ones((2, 3)), "b": jnp.ones(4)})
  with pytest.raises(ValueError, match=r"FlatLayout.unpack: no buffer for dtype\(s\) \['bfloat16'\]"):
    layout.unpack({"float32": flat["float32"]})
  with pytest.raises(ValueError, match=r"the float32 buffer must have shape \(6,\), got \(5,\)"):
    layout.unpack({"float32": jnp.ones(5), "bfloat16": flat["bfloat16"]})
