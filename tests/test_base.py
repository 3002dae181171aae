"""The protocol: chain, apply_updates, identity, scale, and interchangeability with optax in both directions."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from tests.trees import mixed_params, random_like


def test_gradient_transformation_is_a_namedtuple_like_optax():
  tx = adamx.adam()
  init, update = tx  # unpacks like optax's
  assert tx._fields == optax.GradientTransformation._fields == ("init", "update")
  assert init is tx.init and update is tx.update


def test_chain_state_and_order():
  params = {"w": jnp.array([1.0, -2.0])}
  tx = adamx.chain(adamx.scale(2.0), adamx.scale(-3.0), adamx.identity())
  state = tx.init(params)
  assert state == (adamx.EmptyState(), adamx.EmptyState(), adamx.EmptyState())
  updates, _ = tx.update({"w": jnp.array([1.0, 0.5])}, state, params)
  np.testing.assert_array_equal(updates["w"], [-6.0, -3.0])


def test_chain_rejects_non_transforms_and_bad_state():
  with pytest.raises(TypeError, match=r"adamx\.chain: argument 1 must be a gradient transformation"):
    adamx.chain(adamx.identity(), lambda x: x)
  tx = adamx.chain(adamx.identity(), adamx.identity())
  with pytest.raises(ValueError, match=r"adamx\.chain: state must be a tuple of 2 entries"):
    tx.update({"w": jnp.ones(2)}, (adamx.EmptyState(),))


def test_optax_transforms_inside_adamx_chain():
  """optax pieces (a plain GradientTransformation and one with extra args) inside adamx.chain match optax.chain."""
  params = mixed_params(np.random.default_rng(0))
  parts = (optax.clip_by_global_norm(0.5), adamx.scale_by_adam(b1=0.8), optax.add_decayed_weights(1e-2),
           optax.scale_by_learning_rate(3e-3))
  otx, atx = optax.chain(*parts), adamx.chain(*parts)
  os_, as_ = otx.init(params), atx.init(params)
  chex.assert_trees_all_equal_structs(tuple(os_), as_)
  rng = np.random.default_rng(1)
  for _ in range(5):
    g = random_like(rng, params, scale=2.0)
    ou, os_ = otx.update(g, os_, params)
    au, as_ = atx.update(g, as_, params, unused_extra=1)  # extra args dropped for the plain optax transforms
    chex.assert_trees_all_equal(au, ou)


def test_chain_forwards_extra_args_only_to_transforms_that_take_them():
  seen = []

  def init(params):
    del params
    return adamx.EmptyState()

  def update(updates, state, params=None, **extra_args):
    seen.append(dict(extra_args))
    return updates, state

  def strict_update(updates, state, params=None):  # an optax-style update without **extra_args
    return updates, state

  tx = adamx.chain(adamx.GradientTransformation(init, update), adamx.GradientTransformation(init, strict_update))
  tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}), None, value=3.0)
  assert seen == [{"value": 3.0}]


def test_apply_updates_keeps_param_dtypes_and_checks_structure():
  params = {"h": jnp.ones(3, jnp.bfloat16), "f": jnp.ones(2, jnp.float32), "z": jnp.ones(2, jnp.complex64)}
  updates = {"h": jnp.full(3, 0.25, jnp.float32), "f": jnp.full(2, 0.5, jnp.bfloat16),
             "z": jnp.full(2, 1j, jnp.complex64)}
  new = adamx.apply_updates(params, updates)
  assert {k: v.dtype for k, v in new.items()} == {k: v.dtype for k, v in params.items()}
  np.testing.assert_array_equal(np.asarray(new["h"], np.float32), 1.25)
  np.testing.assert_array_equal(new["z"], 1 + 1j)
  chex.assert_trees_all_equal(new, optax.apply_updates(params, updates))
  with pytest.raises(ValueError, match=r"adamx\.apply_updates: the tree structure of updates does not match"):
    adamx.apply_updates(params, {"h": updates["h"]})


def test_apply_updates_skips_none_leaves():
  params = {"a": jnp.ones(2), "b": None}
  new = adamx.apply_updates(params, {"a": jnp.ones(2), "b": None})
  assert new["b"] is None
  np.testing.assert_array_equal(new["a"], 2.0)


def test_scale_and_scale_by_learning_rate():
  u = {"w": jnp.array([1.0, -2.0]), "h": jnp.array([4.0], jnp.bfloat16)}
  out, _ = adamx.scale(0.5).update(u, adamx.EmptyState())
  np.testing.assert_array_equal(out["w"], [0.5, -1.0])
  assert out["h"].dtype == jnp.bfloat16
  out, _ = adamx.scale_by_learning_rate(0.1).update(u, adamx.EmptyState())
  np.testing.assert_allclose(out["w"], [-0.1, 0.2], rtol=1e-7)


def test_scale_by_learning_rate_schedule_uses_count_before_increment():
  calls = []
  tx = adamx.scale_by_learning_rate(lambda count: calls.append(int(count)) or 0.1 * (count + 1))
  state = tx.init({"w": jnp.ones(1)})
  assert isinstance(state, adamx.ScaleByScheduleState) and state.count.dtype == jnp.int32
  outs = []
  for _ in range(3):
    u, state = tx.update({"w": jnp.ones(1)}, state)
    outs.append(float(u["w"][0]))
  assert calls == [0, 1, 2] and int(state.count) == 3
  np.testing.assert_allclose(outs, [-0.1, -0.2, -0.3], rtol=1e-6)


@pytest.mark.parametrize("make", [adamx.add_decoupled_weight_decay, adamx.add_l2_regularization])
def test_weight_decay_masks(make):
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "nested": {"x": jnp.full(3, 2.0)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  by_tree, _ = make(0.5, mask={"w": True, "b": False, "nested": {"x": True}}).update(zeros, adamx.EmptyState(), params)
  by_fn, _ = make(0.5, mask=lambda p: jax.tree.map(lambda x: x.ndim != 1 or x.shape[0] == 3, p)).update(
      zeros, adamx.EmptyState(), params)
  by_prefix, _ = make(0.5, mask={"w": True, "b": False, "nested": True}).update(zeros, adamx.EmptyState(), params)
  elementwise, _ = make(0.5, mask={"w": jnp.array([[True, False], [False, True]]), "b": False,
                                   "nested": True}).update(zeros, adamx.EmptyState(), params)
  expected = {"w": jnp.full((2, 2), 0.5), "b": jnp.zeros(2), "nested": {"x": jnp.full(3, 1.0)}}
  for out in (by_tree, by_fn, by_prefix):
    chex.assert_trees_all_equal(out, expected)
  np.testing.assert_array_equal(elementwise["w"], [[0.5, 0.0], [0.0, 0.5]])
  masked_optax = optax.add_decayed_weights(0.5, mask={"w": True, "b": False, "nested": {"x": True}})
  chex.assert_trees_all_equal(by_tree, masked_optax.update(zeros, masked_optax.init(params), params)[0])


def test_decoupled_and_l2_differ_only_by_placement():
  """adamw's decay bypasses the second moment; adam's L2 goes through it. Same transform, different place."""
  params = {"w": jnp.array([3.0, -1.0])}
  g = {"w": jnp.array([0.1, 0.2])}
  adamw = adamx.chain(adamx.scale_by_adam(), adamx.add_decoupled_weight_decay(0.1), adamx.scale_by_learning_rate(1.0))
  adam_l2 = adamx.chain(adamx.add_l2_regularization(0.1), adamx.scale_by_adam(), adamx.scale_by_learning_rate(1.0))
  uw, _ = adamw.update(g, adamw.init(params), params)
  ul, _ = adam_l2.update(g, adam_l2.init(params), params)
  # First Adam step is sign-like (m_hat / sqrt(v_hat) = +-1): AdamW adds lr * wd * p on top; L2 stays +-1.
  np.testing.assert_allclose(uw["w"], -(np.sign([0.1, 0.2]) + 0.1 * np.array([3.0, -1.0])), rtol=1e-6)
  np.testing.assert_allclose(ul["w"], -np.sign([0.1 + 0.3, 0.2 - 0.1]), rtol=1e-6)
