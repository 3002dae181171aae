"""``inject_hyperparams``: every registry optimizer, schedules for any numeric hyperparameter, no recompilation,
composition, and agreement with ``optax.inject_hyperparams``.

What "the plain optimizer's numbers" means here, measured:

* op by op (eager), with the learning rate, weight decay and eps injected and the rest static: bit for bit, every
  registry optimizer and variant (the same float32 operations on the same float32 values);
* everything injected, jitted: the plain optimizer computes ``1 - b`` and the bias correction ``-expm1(t log b)``
  from the Python float on the host in float64, the injected one in float32 from ``b`` rounded to float32. With
  hyperparameters that are float32 numbers (as here: sampled, then rounded) the two agree to float32 rounding
  (measured 0 to 2e-7 relative on updates over 20 steps; XLA may also fuse two different programs differently);
  with arbitrary decimals (``b2 = 0.9999``) updates differ by up to 1.3e-6 relative and params by 1e-7 over 200
  steps (``test_decimal_decay_rates_differ_by_float32_rounding_only``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx import registry
from tests.test_validation import _message
from tests.trees import assert_close, bound_factory, first_variant_default, random_like

CASES = [(spec, variant) for spec in registry.OPTIMIZERS for variant in spec.variants]
IDS = [f"{spec.name}-{'-'.join(f'{k}={v}' for k, v in variant.items()) or 'default'}" for spec, variant in CASES]
# Injection does not depend on the convention a variant selects: the default suite runs each optimizer's first
# variant, ``-m slow`` the others.
FIRST_VARIANT_DEFAULT = first_variant_default(CASES, IDS)


def _small_params(complex_leaf: bool = True):
  """Three leaves (float32 matrix, bfloat16 vector, complex64 vector): every dtype path, one cheap compile."""
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            "h": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16)}
  if complex_leaf:
    params["z"] = jnp.asarray(rng.normal(size=(2,)) + 1j * rng.normal(size=(2,)), jnp.complex64)
  return params


def _float32_hyperparams(spec, variant, seed=6):
  """Sampled hyperparameters rounded to float32 numbers, plus the variant's keywords."""
  return {**{k: float(np.float32(v)) for k, v in spec.sample(np.random.default_rng(seed)).items()}, **variant}


def _bitwise(a, b):
  chex.assert_trees_all_equal_dtypes(a, b)
  chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("spec,variant", FIRST_VARIANT_DEFAULT)
def test_every_optimizer_injected_equals_plain(spec, variant):
  params = _small_params(spec.supports_complex)
  factory = bound_factory(spec)
  hp = _float32_hyperparams(spec, variant)
  numeric = sorted(k for k, v in {**spec.defaults(), **hp}.items() if isinstance(v, float))
  rng = np.random.default_rng(7)
  grads = [random_like(rng, params) for _ in range(4)]

  # 1. Op by op, with the sampled (decimal) values, learning rate, weight decay and eps injected: bit for bit,
  # updates and inner state.
  dynamic = {"learning_rate", "weight_decay", "eps", "eps_root"}
  hp_decimal = {**spec.sample(np.random.default_rng(6)), **variant}
  itx = adamx.inject_hyperparams(factory, static_args=[k for k in numeric if k not in dynamic])(**hp_decimal)
  tx = factory(**hp_decimal)
  s_inj, s_ref = itx.init(params), tx.init(params)
  assert set(s_inj.hyperparams) == dynamic & set(numeric)
  for g in grads[:2]:
    u_inj, s_inj = itx.update(g, s_inj, params)
    u_ref, s_ref = tx.update(g, s_ref, params)
    _bitwise(u_inj, u_ref)
    _bitwise(s_inj.inner_state, s_ref)
  tx = factory(**hp)

  # 2. Everything injected (no static_args: strings, bools, None are static by themselves), jitted once; the
  # learning rate changes after two steps without a new trace.
  itx = adamx.inject_hyperparams(factory)(**hp)
  state = itx.init(params)
  assert sorted(state.hyperparams) == numeric
  assert all(v.dtype == jnp.float32 and v.shape == () for v in state.hyperparams.values())

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s, g):
    u, s = itx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  p_inj, p_ref, s_ref = params, params, tx.init(params)
  for i, g in enumerate(grads):
    if i == 2:
      old = state.hyperparams["learning_rate"]
      state.hyperparams["learning_rate"] = jnp.asarray(hp["learning_rate"] / 4, old.dtype)
      tx = factory(**{**hp, "learning_rate": hp["learning_rate"] / 4})
    new_p, new_state = step(p_inj, state, g)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
    p_inj, state = new_p, new_state
    u, s_ref = tx.update(g, s_ref, p_ref)
    p_ref = adamx.apply_updates(p_ref, u)
    assert_close(p_inj, p_ref, 1e-6, f"step {i} ", scale=1.0)
  assert float(state.hyperparams["learning_rate"]) == np.float32(hp["learning_rate"] / 4)
  assert int(state.count) == 4
  chex.clear_trace_counter()

  # 3. Inside optax.chain and adamx.chain (one step: the wrappers add no arithmetic).
  g = grads[0]
  u, _ = itx.update(g, itx.init(params), params)
  for chained in (optax.chain(itx), adamx.chain(itx)):
    _bitwise(chained.update(g, chained.init(params), params)[0], u)


def test_decimal_decay_rates_differ_by_float32_rounding_only():
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(50,)), jnp.float32)}
  for b2 in (0.9999,):
    itx = adamx.inject_hyperparams(adamx.adam)(learning_rate=1e-3, b1=0.9, b2=b2)
    tx = adamx.adam(learning_rate=1e-3, b1=0.9, b2=b2)

    def run(tx):
      def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        return (adamx.apply_updates(p, u), s), u
      grads = jnp.asarray(np.random.default_rng(1).normal(size=(200, 50)), jnp.float32)
      (p, _), us = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), {"w": grads}))(params)
      return p, us

    (p1, u1), (p2, u2) = run(itx), run(tx)
    assert_close(u1, u2, 3e-6)  # measured 1.3e-6
    assert_close(p1, p2, 5e-7, scale=1.0)  # measured 1e-7


def test_schedule_for_learning_rate_is_the_plain_schedule():
  sched = adamx.warmup_cosine_schedule(0.0, 1e-2, warmup_steps=3, decay_steps=10)
  params = _small_params()
  itx = adamx.inject_hyperparams(adamx.adamw)(learning_rate=sched, weight_decay=0.1)
  tx = adamx.adamw(learning_rate=sched, weight_decay=0.1)
  s_inj, s_ref = itx.init(params), tx.init(params)
  assert float(s_inj.hyperparams["learning_rate"]) == float(sched(0))
  rng = np.random.default_rng(1)
  step = jax.jit(chex.assert_max_traces(itx.update, n=1))
  for t in range(5):
    g = random_like(rng, params)
    s_inj.hyperparams["learning_rate"] = jnp.float32(123.0)  # ignored: the schedule wins
    u_inj, s_inj = step(g, s_inj, params)
    u_ref, s_ref = tx.update(g, s_ref, params)
    assert_close(u_inj, u_ref, 1e-6)
    assert s_inj.hyperparams["learning_rate"] == sched(t)  # the value used by this step, for logging
  chex.clear_trace_counter()


def test_schedule_for_any_numeric_hyperparameter():
  """Schedules for weight_decay and b1: each step equals the plain optimizer built with the values that step stored
  in ``state.hyperparams``, and those are the schedules' values at the step count."""
  wd_sched = lambda t: 0.2 / (1.0 + t)  # noqa: E731
  b1_sched = lambda t: jnp.where(t < 2, 0.5, 0.75)  # noqa: E731
  params = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)), jnp.float32)}
  itx = adamx.inject_hyperparams(adamx.adamw)(learning_rate=1e-2, b1=b1_sched, weight_decay=wd_sched)
  s_inj = itx.init(params)
  s_ref = adamx.adamw().init(params)
  rng = np.random.default_rng(3)
  for t in range(4):
    g = random_like(rng, params)
    u_inj, s_inj = itx.update(g, s_inj, params)
    used = s_inj.hyperparams
    assert float(used["weight_decay"]) == pytest.approx(wd_sched(t), rel=1e-6)
    assert float(used["b1"]) == (0.5 if t < 2 else 0.75)
    tx = adamx.adamw(**used)  # every stored value, b2 and eps included (float32 arrays, as injected)
    u_ref, s_ref = tx.update(g, s_ref, params)
    _bitwise(u_inj, u_ref)


def test_non_numeric_arguments_are_static_without_static_args():
  decay_matrices = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731
  params = _small_params()
  itx = adamx.inject_hyperparams(adamx.adamw)(learning_rate=1e-2, mask=decay_matrices, mu_dtype=jnp.bfloat16,
                                              nesterov=True)
  tx = adamx.adamw(learning_rate=1e-2, mask=decay_matrices, mu_dtype=jnp.bfloat16, nesterov=True)
  state = itx.init(params)
  assert sorted(state.hyperparams) == ["b1", "b2", "eps", "eps_root", "learning_rate", "weight_decay"]
  g = random_like(np.random.default_rng(4), params)
  u, new = jax.jit(itx.update)(g, state, params)
  assert new.inner_state[0].mu["w"].dtype == jnp.bfloat16
  assert_close(u, tx.update(g, tx.init(params), params)[0], 1e-6)
  # optax's adamw: its mask is a callable too, its learning rate a required argument that takes a schedule
  otx = adamx.inject_hyperparams(optax.adamw)(learning_rate=optax.linear_schedule(1e-2, 0.0, 10),
                                              mask=decay_matrices)
  s = otx.init(params)
  assert "mask" not in s.hyperparams and s.hyperparams["learning_rate"] == np.float32(1e-2)
  _, s = jax.jit(otx.update)(g, s, params)
  assert s.hyperparams["learning_rate"] == np.float32(1e-2) and int(s.count) == 1
  # a schedule for a required numeric argument of a transform
  clip = adamx.inject_hyperparams(adamx.clip_by_global_norm)(lambda t: 1.0 / (1.0 + t))
  s = clip.init(params)
  for t in range(2):
    u, s = clip.update(g, s)
  assert float(s.hyperparams["max_norm"]) == 0.5
  assert float(adamx.global_norm(u)) == pytest.approx(0.5, rel=2.0**-8)  # the bfloat16 leaf rounds
  # a factory with an integer default (a step count) and a string choice keeps both static
  def factory(learning_rate=0.1, every=3, mode="a"):
    assert isinstance(every, int) and mode == "a"
    return adamx.scale_by_learning_rate(learning_rate)

  s = adamx.inject_hyperparams(factory)(every=5).init(params)
  assert list(s.hyperparams) == ["learning_rate"]


def test_matches_optax_inject_hyperparams():
  """adamx's and optax's wrappers around the same factory (adamx.adamw, optax.adam) give the same numbers on a
  float32/bfloat16 tree (optax stores hyperparameters in the params' highest dtype: float32 here)."""
  params = _small_params(complex_leaf=False)
  hp = dict(learning_rate=3e-3, b1=0.875, b2=0.9921875, eps=1e-8)
  pairs = [(adamx.inject_hyperparams(adamx.adamw)(weight_decay=0.25, **hp),
            optax.inject_hyperparams(adamx.adamw)(weight_decay=0.25, **hp)),
           (adamx.inject_hyperparams(optax.adam)(**hp), optax.inject_hyperparams(optax.adam)(**hp))]
  rng = np.random.default_rng(6)
  grads = [random_like(rng, params) for _ in range(3)]
  for ours, theirs in pairs:
    s1, s2 = ours.init(params), theirs.init(params)
    for g in grads:
      u1, s1 = ours.update(g, s1, params)
      u2, s2 = theirs.update(g, s2, params)
      _bitwise(u1, u2)
      _bitwise(s1.hyperparams, s2.hyperparams)
  # optax keeps bfloat16 hyperparameters for bfloat16 params; adamx keeps float32 (a learning rate of 3e-3 in
  # bfloat16 is 0.0029907...).
  half = {"h": jnp.ones(3, jnp.bfloat16)}
  assert adamx.inject_hyperparams(adamx.adam)(**hp).init(half).hyperparams["learning_rate"].dtype == jnp.float32
  assert optax.inject_hyperparams(adamx.adam)(**hp).init(half).hyperparams["learning_rate"].dtype == jnp.bfloat16


def test_hyperparam_dtype(x64):
  p64 = {"w": jnp.ones(3, jnp.float64)}
  assert adamx.inject_hyperparams(adamx.adam)().init(p64).hyperparams["b1"].dtype == jnp.float64
  assert adamx.inject_hyperparams(adamx.adam)().init({"w": jnp.ones(3, jnp.float32)}).hyperparams["b1"].dtype == (
      jnp.float32)
  s = adamx.inject_hyperparams(adamx.adam, hyperparam_dtype=jnp.float32)().init(p64)
  assert s.hyperparams["b1"].dtype == jnp.float32


def test_vmap_over_learning_rates():
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  g = {"w": jnp.array([0.5, 0.5, -1.0])}
  itx = adamx.inject_hyperparams(adamx.adam)(learning_rate=1e-2)
  state = itx.init(params)

  def one(lr):
    s = state._replace(hyperparams={**state.hyperparams, "learning_rate": lr})
    return itx.update(g, s, params)[0]["w"]

  lrs = jnp.array([1e-3, 1e-2, 1e-1], jnp.float32)
  batched = jax.vmap(one)(lrs)
  for i, lr in enumerate([1e-3, 1e-2, 1e-1]):
    np.testing.assert_allclose(batched[i], adamx.adam(learning_rate=lr).update(g, adamx.adam().init(params),
                                                                               params)[0]["w"], rtol=1e-6)


def test_inside_chain_with_clipping_and_under_cond():
  params = _small_params()
  itx = adamx.inject_hyperparams(adamx.adamw)(learning_rate=1e-2)
  tx = optax.chain(adamx.clip_by_global_norm(1.0), itx)
  state = tx.init(params)
  g = random_like(np.random.default_rng(8), params, scale=3.0)
  new = jax.jit(lambda s, flag: jax.lax.cond(flag, lambda s: tx.update(g, s, params)[1], lambda s: s, s))(
      state, True)
  chex.assert_trees_all_equal_shapes_and_dtypes(new, state)
  assert int(new[1].count) == 1 and float(new[0].global_norm) > 1.0
  # optax's state helpers find the injected values by name, for logging and for setting them
  assert float(optax.tree_utils.tree_get(new, "learning_rate")) == np.float32(1e-2)
  new = optax.tree_utils.tree_set(new, learning_rate=jnp.float32(5e-3))
  assert float(new[1].hyperparams["learning_rate"]) == np.float32(5e-3)


def test_extra_args_reach_the_inner_transform():
  seen = {}

  def factory(learning_rate=1.0):
    def update(updates, state, params=None, **extra_args):
      seen.update(extra_args)
      return jax.tree.map(lambda u: -learning_rate * u, updates), state
    return adamx.GradientTransformation(lambda p: (), update)

  tx = adamx.inject_hyperparams(factory)(learning_rate=0.5)
  u, _ = tx.update({"a": jnp.ones(2)}, tx.init({"a": jnp.ones(2)}), value=jnp.float32(2.0))
  assert float(seen["value"]) == 2.0 and float(u["a"][0]) == -0.5


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def test_errors():
  with pytest.raises(TypeError, match=_message("inject_hyperparams", "factory")):
    adamx.inject_hyperparams(adamx.adam())
  with pytest.raises(ValueError, match=_message("inject_hyperparams", "static_args", fragments=("'lr'",))):
    adamx.inject_hyperparams(adamx.adam, static_args=("lr",))
  with pytest.raises(ValueError, match=_message("inject_hyperparams", "hyperparam_dtype")):
    adamx.inject_hyperparams(adamx.adam, hyperparam_dtype=jnp.int32)
  # concrete values are checked by the factory itself, at construction
  with pytest.raises(ValueError, match=_message("adamw", "learning_rate", value=-1.0)):
    adamx.inject_hyperparams(adamx.adamw)(learning_rate=-1.0)
  with pytest.raises(ValueError, match=_message("adam", "b2", value=1.5)):
    adamx.inject_hyperparams(adamx.adam)(b2=1.5)
  with pytest.raises(TypeError, match=_message("inject_hyperparams", fragments=("adam", "lr"))):
    adamx.inject_hyperparams(adamx.adam)(lr=0.1)

  def needs_concrete(learning_rate=0.1):
    if learning_rate > 0.05:  # Python control flow on a hyperparameter
      return adamx.scale_by_learning_rate(learning_rate)
    return adamx.identity()

  with pytest.raises(TypeError, match=_message("inject_hyperparams", "static_args", fragments=("needs_concrete",))):
    adamx.inject_hyperparams(needs_concrete)()
  adamx.inject_hyperparams(needs_concrete, static_args="learning_rate")()  # the way out
  tx = adamx.inject_hyperparams(adamx.adam)()
  state = tx.init({"w": jnp.ones(2)})
  state.hyperparams.pop("b1")
  with pytest.raises(ValueError, match=_message("inject_hyperparams", "state", fragments=("b1",))):
    tx.update({"w": jnp.ones(2)}, state, {"w": jnp.ones(2)})
