"""``update_diagnostics``: values against float64 NumPy, the SGD identity, zero conventions, jit and stability."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from tests.test_validation import _message
from tests.trees import mixed_params, random_like, to_numpy


def _norm(x):
  return float(np.sqrt(np.sum(np.abs(np.asarray(x)) ** 2)))


def _paths(tree):
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_values_match_float64_on_mixed_tree():
  params = mixed_params(np.random.default_rng(0))
  grads = random_like(np.random.default_rng(1), params)
  updates = random_like(np.random.default_rng(2), params, scale=1e-2)
  logs = jax.jit(adamx.update_diagnostics)(params, updates, grads)
  p64, u64, g64 = (jax.tree.leaves(to_numpy(t)) for t in (params, updates, grads))
  all_u, all_p, all_g = (np.sqrt(sum(_norm(x) ** 2 for x in leaves)) for leaves in (u64, p64, g64))
  expected = {"update_norm": all_u, "param_norm": all_p, "update_param_ratio": all_u / all_p, "grad_norm": all_g,
              "step_size": all_u / all_g}
  for path, p, u, g in zip(_paths(params), p64, u64, g64):
    expected[f"update_param_ratio/{path}"] = _norm(u) / _norm(p)
    expected[f"step_size/{path}"] = _norm(u) / _norm(g)
  assert set(logs) == set(expected)
  for k, v in logs.items():
    assert v.dtype == jnp.float32 and v.shape == (), k
    assert float(v) == pytest.approx(expected[k], rel=2e-6), k


def test_sgd_step_size_is_the_learning_rate_everywhere():
  params = mixed_params(np.random.default_rng(2), complex_leaf=False, bf16=False)
  grads = random_like(np.random.default_rng(3), params)
  updates, _ = optax.sgd(0.05).update(grads, optax.sgd(0.05).init(params))
  logs = adamx.update_diagnostics(params, updates, grads)
  for k, v in logs.items():
    if k.startswith("step_size"):
      assert float(v) == pytest.approx(0.05, rel=1e-6), k


def test_zero_norm_conventions_and_no_grads():
  params = {"bias": jnp.zeros(3), "w": jnp.ones((2, 2))}
  updates = {"bias": jnp.full(3, 0.1), "w": jnp.zeros((2, 2))}
  logs = adamx.update_diagnostics(params, updates)
  assert set(logs) == {"update_norm", "param_norm", "update_param_ratio", "update_param_ratio/['bias']",
                       "update_param_ratio/['w']"}
  assert float(logs["update_param_ratio/['bias']"]) == np.inf  # x / 0
  assert float(logs["update_param_ratio/['w']"]) == 0.0
  zero = adamx.update_diagnostics(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))
  assert float(zero["update_param_ratio/<root>"]) == 0.0 and float(zero["step_size"]) == 0.0  # 0 / 0
  # finite gradients through the diagnostics (usable inside a differentiated loss)
  grad = jax.jit(jax.grad(lambda p: adamx.update_diagnostics(p, updates)["update_param_ratio"]))(
      {"bias": jnp.ones(3), "w": jnp.ones((2, 2))})
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grad))


def test_inside_a_jitted_training_step_no_recompilation():
  params = {"w": jnp.ones((3, 2)), "h": jnp.ones(4, jnp.bfloat16), "z": jnp.ones(2, jnp.complex64)}
  tx = adamx.chain(adamx.clip_by_global_norm(1.0), adamx.adam(learning_rate=1e-2))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s, adamx.update_diagnostics(p, u, g)

  state = tx.init(params)
  rng = np.random.default_rng(4)
  keys = None
  for _ in range(3):
    params, state, logs = step(params, state, random_like(rng, params))
    keys = keys or set(logs)
    assert set(logs) == keys and all(bool(jnp.isfinite(v)) for v in logs.values())
  chex.clear_trace_counter()


def test_structure_mismatch_is_a_clear_error():
  with pytest.raises(ValueError, match=_message("update_diagnostics", "updates", "params")):
    adamx.update_diagnostics({"w": jnp.ones(2)}, {"v": jnp.ones(2)})
  with pytest.raises(ValueError, match=_message("update_diagnostics", "grads", "params")):
    adamx.update_diagnostics({"w": jnp.ones(2)}, {"w": jnp.ones(2)}, {"w": jnp.ones(3)})
