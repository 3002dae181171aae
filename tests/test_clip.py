"""Clipping: ``global_norm``, ``clip_by_global_norm``, ``clip``, ``clip_by_block_rms``.

Compared with optax and with float64 NumPy on the mixed pytree (float32, bfloat16 and complex64 leaves). The dtype
contract: adamx computes in float32 and rounds once to the update's dtype; optax computes bfloat16 leaves (and the
bfloat16 part of a global norm) in bfloat16. So float32/complex64 results agree with optax bit for bit on trees
without bfloat16 leaves; with a bfloat16 leaf, optax's global norm is off by bfloat16 rounding (measured 1.3e-4
relative on the mixed tree) and adamx's is within float32 rounding of float64.
"""

from __future__ import annotations

import doctest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx.transforms import _clip, _diagnostics, _inject, _partition
from tests.test_validation import _message
from tests.trees import assert_close, mixed_params, random_like, to_numpy

BF16_RTOL = 2.0 ** -7  # two bfloat16 ulps, relative


def _np_norm(tree):
  return float(np.sqrt(sum(np.sum(np.abs(x) ** 2) for x in jax.tree.leaves(to_numpy(tree)))))


def _split(tree, like):
  """(leaves where ``like`` is bfloat16, the other leaves) of ``tree``."""
  pairs = list(zip(jax.tree.leaves(tree), jax.tree.leaves(like), strict=True))
  return [x for x, y in pairs if y.dtype == jnp.bfloat16], [x for x, y in pairs if y.dtype != jnp.bfloat16]


def _bitwise(a, b):
  chex.assert_trees_all_equal_dtypes(a, b)
  chex.assert_trees_all_equal(a, b)


# ----------------------------------------------------------------------------------------------------------------
# global_norm
# ----------------------------------------------------------------------------------------------------------------


def test_global_norm_matches_float64_on_mixed_tree():
  g = random_like(np.random.default_rng(0), mixed_params(np.random.default_rng(1)), scale=3.0)
  n = adamx.global_norm(g)
  assert n.shape == () and n.dtype == jnp.float32
  assert abs(float(n) - _np_norm(g)) <= 1e-6 * _np_norm(g)
  # optax sums the bfloat16 leaf in bfloat16: measurably further from float64 than adamx.
  assert abs(float(optax.tree.norm(g)) - _np_norm(g)) > 10 * abs(float(n) - _np_norm(g))


def test_global_norm_accumulates_bfloat16_in_float32():
  """4096 entries of 3 in bfloat16: a bfloat16 running sum would stall at 256 * 9; the float32 one is exact."""
  x = jnp.full((4096,), 3.0, jnp.bfloat16)
  assert float(adamx.global_norm({"h": x})) == pytest.approx(3.0 * 64.0, rel=1e-7)


def test_global_norm_complex_uses_modulus():
  z = jnp.array([3 + 4j, 0 - 12j], jnp.complex64)
  assert float(adamx.global_norm([z])) == pytest.approx(13.0, rel=1e-7)


def test_global_norm_is_optax_bit_for_bit_without_bf16_leaves():
  g = random_like(np.random.default_rng(2), mixed_params(np.random.default_rng(3), bf16=False), scale=3.0)
  assert adamx.global_norm(g) == optax.tree.norm(g)


def test_global_norm_empty_and_float64(x64):
  assert float(adamx.global_norm({})) == 0.0
  n = adamx.global_norm({"a": jnp.ones(4, jnp.float64), "b": jnp.ones(5, jnp.float32)})
  assert n.dtype == jnp.float64 and float(n) == 3.0


# ----------------------------------------------------------------------------------------------------------------
# clip_by_global_norm
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.1, 3.0], ids=["below", "above"])
def test_clip_by_global_norm_matches_optax_and_float64(scale):
  params = mixed_params(np.random.default_rng(4))
  g = random_like(np.random.default_rng(5), params, scale=scale)
  max_norm = 2.0
  tx, otx = adamx.clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
  u, state = tx.update(g, tx.init(params))
  ou, _ = otx.update(g, otx.init(params))
  chex.assert_trees_all_equal_dtypes(u, g)
  assert state.global_norm.dtype == jnp.float32 and state.global_norm.shape == ()
  assert abs(float(state.global_norm) - _np_norm(g)) <= 1e-6 * _np_norm(g)
  norm = _np_norm(g)
  expected = to_numpy(g) if norm < max_norm else jax.tree.map(lambda x: x * (max_norm / norm), to_numpy(g))
  bf, rest = _split(u, g)
  ebf, erest = _split(expected, g)
  assert_close(rest, erest, 1e-6)
  assert_close(bf, ebf, BF16_RTOL)
  # optax: equal when nothing is clipped; when clipping, its bfloat16 norm shifts the factor by ~1e-4.
  obf, orest = _split(ou, g)
  assert_close(rest, orest, 0.0 if norm < max_norm else 2e-4)
  assert_close(bf, obf, 0.0 if norm < max_norm else BF16_RTOL)
  # Without the bfloat16 leaf the two are the same computation.
  g32 = {k: v for k, v in g.items() if k != "half"}
  _bitwise(tx.update(g32, tx.init(g32))[0], otx.update(g32, otx.init(g32))[0])


def test_clip_by_global_norm_state_reports_norm_and_is_stable():
  params = mixed_params(np.random.default_rng(6))
  tx = adamx.clip_by_global_norm(1.0)
  state = tx.init(params)
  assert state == adamx.ClipByGlobalNormState(global_norm=jnp.zeros([], jnp.float32))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(g, s):
    return tx.update(g, s)

  rng = np.random.default_rng(7)
  for scale in (0.01, 10.0, 1.0):
    g = random_like(rng, params, scale=scale)
    u, new_state = step(g, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert new_state.global_norm.dtype == jnp.float32 and new_state.global_norm.shape == ()
    assert float(new_state.global_norm) == pytest.approx(_np_norm(g), rel=1e-6)
    assert float(adamx.global_norm(u)) <= 1.0 * (1 + 1e-6)
    state = new_state
  chex.clear_trace_counter()


def test_clip_by_global_norm_traced_and_vmapped_max_norm():
  g = {"w": jnp.array([3.0, 4.0])}
  clipped = jax.jit(lambda m: adamx.clip_by_global_norm(m).update(g, adamx.clip_by_global_norm(m).init(g))[0])
  np.testing.assert_allclose(clipped(1.0)["w"], [0.6, 0.8], rtol=1e-6)
  batch = jax.vmap(lambda m: adamx.clip_by_global_norm(m).update(g, None)[0]["w"])(jnp.array([1.0, 10.0]))
  np.testing.assert_allclose(batch, [[0.6, 0.8], [3.0, 4.0]], rtol=1e-6)
  # finite gradients through the clip at a zero update (meta-learning through the optimizer)
  grad = jax.grad(lambda g: jnp.sum(adamx.clip_by_global_norm(1.0).update(g, None)[0]["w"]))({"w": jnp.zeros(2)})
  np.testing.assert_array_equal(grad["w"], [1.0, 1.0])
  # inf: measure only
  u, s = adamx.clip_by_global_norm(float("inf")).update(g, None)
  _bitwise(u, g)
  assert float(s.global_norm) == 5.0


def test_clip_by_global_norm_inside_adamx_and_optax_chain():
  """The same pipeline in adamx.chain and optax.chain, jitted, no recompilation; and adamx's clip can replace
  optax's (float32 tree: bit for bit)."""
  params = {"w": jnp.ones((3, 2)), "z": jnp.ones(2, jnp.complex64)}
  parts = (adamx.clip_by_global_norm(1.0), adamx.adamw(learning_rate=1e-2, weight_decay=0.1))
  txs = [adamx.chain(*parts), optax.chain(*parts),
         adamx.chain(optax.clip_by_global_norm(1.0), parts[1])]
  states = [tx.init(params) for tx in txs]
  traces = []
  steps = [jax.jit(lambda g, s, p, tx=tx: (traces.append(tx), tx.update(g, s, p))[1]) for tx in txs[:2]]
  steps.append(txs[2].update)  # op by op
  rng = np.random.default_rng(9)
  for _ in range(3):
    g = random_like(rng, params, scale=3.0)
    outs = [step(g, s, params) for step, s in zip(steps, states)]
    states = [s for _, s in outs]
    _bitwise(outs[0][0], outs[1][0])
    assert_close(outs[0][0], outs[2][0], 1e-6)  # jit and op by op may round differently: float32 rounding
    assert float(states[0][0].global_norm) == float(states[1][0].global_norm) > 1.0
  assert len(traces) == 2  # one trace each: no recompilation


# ----------------------------------------------------------------------------------------------------------------
# clip (by value) and clip_by_block_rms
# ----------------------------------------------------------------------------------------------------------------


def test_clip_matches_optax_on_real_leaves_bit_for_bit():
  g = random_like(np.random.default_rng(10), mixed_params(np.random.default_rng(11), complex_leaf=False), scale=2.0)
  for delta in (0.0, 0.7, 1.3):
    u, _ = adamx.clip(delta).update(g, None)
    _bitwise(u, optax.clip(delta).update(g, None)[0])


def test_clip_complex_clips_the_modulus_and_keeps_the_phase():
  z = jnp.asarray(np.random.default_rng(12).normal(size=(50, 2)) @ np.array([1, 1j]) * 2, jnp.complex64)
  u, _ = adamx.clip(1.5).update({"z": z}, None)
  zn = np.asarray(z, np.complex128)
  expected = np.where(np.abs(zn) > 1.5, zn * 1.5 / np.abs(zn), zn)
  assert u["z"].dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(u["z"]), expected, rtol=1e-6)
  assert np.max(np.abs(np.asarray(u["z"]))) <= 1.5 * (1 + 1e-6)
  with pytest.raises(ValueError):  # optax cannot: jnp.clip rejects complex values
    optax.clip(1.5).update({"z": z}, None)
  # the gradient through the clip is finite, also at entries that are not clipped
  grad = jax.grad(lambda z: jnp.sum(jnp.abs(adamx.clip(1.5).update(z, None)[0]) ** 2))(z)
  assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("threshold", [0.3, 1.0, 100.0])
def test_clip_by_block_rms_matches_optax_and_float64(threshold):
  g = random_like(np.random.default_rng(13), mixed_params(np.random.default_rng(14)), scale=1.5)
  tx, otx = adamx.clip_by_block_rms(threshold), optax.clip_by_block_rms(threshold)
  u, _ = tx.update(g, tx.init(g))
  ou, _ = otx.update(g, otx.init(g))
  chex.assert_trees_all_equal_dtypes(u, g)
  expected = jax.tree.map(lambda x: x / max(1.0, np.sqrt(np.mean(np.abs(x) ** 2)) / threshold), to_numpy(g))
  bf, rest = _split(u, g)
  (ebf, erest), (obf, orest) = _split(expected, g), _split(ou, g)
  assert_close(rest, erest, 1e-6)
  assert_close(bf, ebf, BF16_RTOL)
  _bitwise(rest, orest)
  assert_close(bf, obf, BF16_RTOL)


def test_clip_and_block_rms_inside_optax_chain_no_recompilation():
  params = {"w": jnp.ones((3, 2)), "h": jnp.ones(4, jnp.bfloat16)}
  tx = optax.chain(adamx.clip(0.5), adamx.clip_by_block_rms(0.3), adamx.adam(learning_rate=1e-2))
  ref = adamx.chain(adamx.clip(0.5), adamx.clip_by_block_rms(0.3), adamx.adam(learning_rate=1e-2))
  step, ref_step = jax.jit(chex.assert_max_traces(tx.update, n=1)), ref.update
  s, rs = tx.init(params), ref.init(params)
  rng = np.random.default_rng(16)
  for _ in range(3):
    g = random_like(rng, params, scale=2.0)
    u, new = step(g, s, params)
    ru, rs = ref_step(g, rs, params)
    assert jax.tree.structure(new) == jax.tree.structure(s)
    assert_close(u, ru, 1e-6)
    s = new
  chex.clear_trace_counter()


# ----------------------------------------------------------------------------------------------------------------
# Construction errors and the docstring examples
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory,arg,bad", [
    (adamx.clip_by_global_norm, "max_norm", -1.0),
    (adamx.clip_by_global_norm, "max_norm", 0.0),
    (adamx.clip_by_global_norm, "max_norm", float("nan")),
    (adamx.clip_by_global_norm, "max_norm", np.float32(-2.0)),
    (adamx.clip_by_block_rms, "threshold", 0),
    (adamx.clip_by_block_rms, "threshold", -0.5),
    (adamx.clip, "max_delta", -1e-3),
    (adamx.clip, "max_delta", float("inf")),
])
def test_bad_values_name_function_argument_and_value(factory, arg, bad):
  with pytest.raises(ValueError, match=_message(factory.__name__, arg, value=bad)):
    factory(bad)


@pytest.mark.parametrize("factory,arg", [(adamx.clip_by_global_norm, "max_norm"), (adamx.clip, "max_delta"),
                                         (adamx.clip_by_block_rms, "threshold")])
@pytest.mark.parametrize("bad", ["1.0", None, True, 1j, [1.0]])
def test_non_numbers_are_type_errors(factory, arg, bad):
  with pytest.raises(TypeError, match=_message(factory.__name__, arg)):
    factory(bad)


@pytest.mark.parametrize("module", [_clip, _partition, _inject, _diagnostics], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
  failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert tried > 0 and failures == 0
