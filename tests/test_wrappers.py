"""The wrappers: ``skip_non_finite``, ``accumulate_gradients``, ``ema``/``ema_params``, ``maximize``, ``lookahead``.

Each is checked against its counterparts (optax ``apply_if_finite``/``MultiSteps``/``ema``/``lookahead``, PyTorch's
``maximize=True`` and ``swa_utils.AveragedModel``) and a float64 NumPy reference, and run around every optimizer of
``adamx.registry`` (no optimizer is named here). Every random input is seeded.
"""

from __future__ import annotations

import doctest
import functools
import inspect
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import adamx
from adamx import registry
from adamx.transforms import _accumulate, _ema, _lookahead, _maximize, _skip
from tests import trees
from tests.reference import adam as ref_adam

SPECS = list(registry.OPTIMIZERS)
SPEC_IDS = [spec.name for spec in SPECS]

WRAPPERS = {
    "skip_non_finite": lambda opt: adamx.skip_non_finite(opt, max_consecutive=3),
    "accumulate_gradients": lambda opt: adamx.accumulate_gradients(opt, k=2),
    "ema": lambda opt: adamx.chain(opt, adamx.ema(0.9)),
    "maximize": adamx.maximize,
    "lookahead": lambda opt: adamx.lookahead(opt, sync_period=2, slow_step_size=0.5),
}


def _real_params(seed=0, dtype=np.float32):
  return trees.mixed_params(np.random.default_rng(seed), bf16=False, complex_leaf=False, real_dtype=dtype)


def _shape_dtype(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def _with_nan(tree, value=jnp.nan):
  """``tree`` with one entry of its first leaf replaced by ``value``."""
  leaves, treedef = jax.tree.flatten(tree)
  leaves[0] = leaves[0].reshape(-1).at[0].set(value).reshape(leaves[0].shape)
  return treedef.unflatten(leaves)


def _quadratic_grad(params, step, seed=0):
  """A stochastic gradient that depends on the params: ``2 (theta - c) + noise_t``, noise seeded by the step."""
  rng = np.random.default_rng([seed, step])
  noise = trees.random_like(rng, params, scale=0.1)
  return jax.tree.map(lambda p, n: (2 * (p - 0.5) + n).astype(p.dtype), params, noise)


def _mlp_problem(seed=0):
  """A two-layer tanh MLP, a regression data set of 32 examples and its mean squared error."""
  rng = np.random.default_rng(seed)
  params = {"w1": rng.normal(size=(4, 3)) / 2, "b1": rng.normal(size=3) / 4, "w2": rng.normal(size=(3, 1)) / 2,
            "b2": np.zeros(1)}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  x = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
  y = jnp.asarray(np.sin(np.asarray(x).sum(axis=1, keepdims=True)), jnp.float32)

  def loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"][None])
    return jnp.mean((h @ p["w2"] + p["b2"][None] - y) ** 2)

  return params, x, y, loss


_MLP = _mlp_problem()
_MLP_GRAD = jax.jit(jax.grad(_MLP[3]))
# The float32 tree of the eager tests that loop over the registry: with one set of shapes, each optimizer's eager
# operations are compiled once for all of them (compiling them dominates the cost of a short eager run).
_TREE = _MLP[0]


# ---------------------------------------------------------------------------------------------------------------
# Every wrapper around every optimizer of the registry
# ---------------------------------------------------------------------------------------------------------------


def _small_params(spec, *, bf16=True, complex_leaf=True):
  """One float32 matrix, one bfloat16 vector and (if supported) one complex vector: every dtype path, few leaves.
  Parity tests leave out the bf16 leaf (two correct implementations may round a bf16 update differently)."""
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)), jnp.float32)}
  if bf16:
    params["h"] = jnp.linspace(-1, 1, 4, dtype=jnp.bfloat16)
  if complex_leaf and spec.supports_complex:
    params["z"] = jnp.array([1 + 1j, -0.5j], jnp.complex64)
  return params


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_state_structure_and_dtypes_stable_around_every_optimizer(name, spec):
  """Traced, not compiled (``jax.eval_shape``), so that it stays cheap for the whole registry: a step inside one
  branch of a ``lax.cond`` whose other branch returns the gradient and the state unchanged traces only if the
  state keeps its tree, shapes and dtypes and the updates keep the gradient's. Extra arguments are tolerated."""
  params = _small_params(spec)
  tx = WRAPPERS[name](trees.bound_factory(spec)(learning_rate=1e-2))
  state = tx.init(params)

  def step(s, g, flag):  # with extra keyword arguments, which every wrapper must tolerate
    return jax.lax.cond(flag, lambda s: tx.update(g, s, params, value=jnp.float32(1.0)), lambda s: (g, s), s)

  updates, new_state = jax.eval_shape(step, state, params, True)
  assert _shape_dtype(updates) == _shape_dtype(params)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert _shape_dtype(new_state) == _shape_dtype(state)


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_compiled_step_no_recompilation_and_chains_agree(name):
  """Compiled and run (on one optimizer of the registry per wrapper, a different one for each, to keep the compile
  time down): one trace for several steps; the wrapper after an optax piece gives the same numbers inside
  adamx.chain (run in a lax.cond) and optax.chain; the cond's other branch leaves the state as it was."""
  spec = SPECS[sorted(WRAPPERS).index(name) % len(SPECS)]
  params = _small_params(spec)
  tx = WRAPPERS[name](trees.bound_factory(spec)(learning_rate=1e-2))
  atx, otx = adamx.chain(optax.clip_by_global_norm(1.0), tx), optax.chain(optax.clip_by_global_norm(1.0), tx)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, sa, so, g, flag):
    ua, sa = jax.lax.cond(flag, lambda s: atx.update(g, s, p), lambda s: (jax.tree.map(jnp.zeros_like, g), s), sa)
    uo, so = otx.update(g, so, p)
    return adamx.apply_updates(p, ua), sa, so, ua, uo

  sa, so = atx.init(params), otx.init(params)
  rng = np.random.default_rng(1)
  for t in range(4):
    g = trees.random_like(rng, params)
    if name == "skip_non_finite" and t == 1:
      g = _with_nan(g)
    new_params, sa_new, so_new, ua, uo = step(params, sa, so, g, jnp.array(t != 2))
    if t == 2:
      chex.assert_trees_all_equal(sa_new, sa)
      continue
    chex.assert_trees_all_close(ua, uo, rtol=1e-6, atol=0)
    chex.assert_trees_all_close(sa_new, so_new, rtol=1e-6, atol=0)
    params, sa, so = new_params, sa_new, so_new
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
  chex.clear_trace_counter()


def test_buffer_donation():
  """ema and lookahead keep copies of the params in their state: donating params and state together is legal."""
  params = _small_params(SPECS[0])
  tx = adamx.chain(adamx.lookahead(adamx.skip_non_finite(adamx.adam(1e-2)), sync_period=1), adamx.ema(0.9))

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  g = trees.random_like(np.random.default_rng(6), params)
  expected = jax.jit(step)(params, tx.init(params), g)
  p = jax.tree.map(jnp.copy, params)
  donated = jax.jit(step, donate_argnums=(0, 1))(p, tx.init(p), g)
  chex.assert_trees_all_equal(donated, expected)
  assert all(x.is_deleted() for x in jax.tree.leaves(p))


def test_docstring_examples_run():
  for module in (_skip, _accumulate, _ema, _lookahead, _maximize):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, module.__name__


# ---------------------------------------------------------------------------------------------------------------
# skip_non_finite
# ---------------------------------------------------------------------------------------------------------------

BAD_STEPS = {1: jnp.nan, 2: jnp.inf, 4: -jnp.inf}  # step -> the value injected into that step's gradient


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_skip_equals_running_only_the_finite_steps(spec):
  """Skipped steps change nothing: zero updates, params and inner state untouched, and the run equals the
  optimizer run on the finite gradients only (eager, so the whole registry stays cheap)."""
  params = _TREE
  opt = trees.bound_factory(spec)(learning_rate=1e-2)
  tx = adamx.skip_non_finite(opt)
  p, s, pp, sp = params, tx.init(params), params, opt.init(params)
  rng = np.random.default_rng(2)
  consecutive = total = 0
  for t in range(6):
    g = trees.random_like(rng, params)
    if t in BAD_STEPS:
      g = _with_nan(g, BAD_STEPS[t])
      consecutive, total = consecutive + 1, total + 1
    else:
      consecutive = 0
      u_plain, sp = opt.update(g, sp, pp)
      pp = adamx.apply_updates(pp, u_plain)
    before, inner_before = p, s.inner_state
    u, s = tx.update(g, s, p)
    p = adamx.apply_updates(p, u)
    if t in BAD_STEPS:
      assert _shape_dtype(u) == _shape_dtype(g) and all(not bool(jnp.any(x)) for x in jax.tree.leaves(u))
      chex.assert_trees_all_equal(p, before)
      chex.assert_trees_all_equal(s.inner_state, inner_before)
    assert (int(s.consecutive_skips), int(s.total_skips)) == (consecutive, total)
    chex.assert_trees_all_equal(p, pp)
    chex.assert_trees_all_equal(s.inner_state, sp)


def test_skip_matches_optax_apply_if_finite():
  """optax.apply_if_finite(inner, max_consecutive_errors=n) agrees while fewer than n + 1 bad steps come in a row:
  the same updates, inner state and counters (compiled, on one optimizer of the registry)."""
  spec = SPECS[1 % len(SPECS)]
  params = _small_params(spec, bf16=False)
  opt = trees.bound_factory(spec)(learning_rate=1e-2)
  tx, otx = adamx.skip_non_finite(opt), optax.apply_if_finite(opt, max_consecutive_errors=100)
  step, ostep = jax.jit(tx.update), jax.jit(otx.update)
  p, s, po, so = params, tx.init(params), params, otx.init(params)
  rng = np.random.default_rng(2)
  for t in range(6):
    g = trees.random_like(rng, params)
    g = _with_nan(g, BAD_STEPS[t]) if t in BAD_STEPS else g
    u, s = step(g, s, p)
    uo, so = ostep(g, so, po)
    p, po = adamx.apply_updates(p, u), optax.apply_updates(po, uo)
    assert (int(s.consecutive_skips), int(s.total_skips)) == (int(so.notfinite_count), int(so.total_notfinite))
    chex.assert_trees_all_close(u, uo, rtol=1e-6, atol=0)
    chex.assert_trees_all_close(s.inner_state, so.inner_state, rtol=1e-6, atol=0)
  assert int(s.total_skips) == len(BAD_STEPS)


_LIMIT_MSG = r"adamx\.skip_non_finite: the gradients held a NaN or an Inf on 3 consecutive steps, more than " \
             r"max_consecutive=2 \(steps skipped since init: 4\)"


def _nan_steps(tx, params, steps, state=None):
  state = tx.init(params) if state is None else state
  g = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
  for _ in range(steps):
    _, state = tx.update(g, state, params)
  return state


def test_skip_limit_raises_eagerly_and_under_jit_scan_and_vmap():
  params = {"w": jnp.ones(3)}
  good = {"w": jnp.ones(3)}
  tx = adamx.skip_non_finite(adamx.adam(1e-2), max_consecutive=2)
  # One earlier skip, reset by a good step: the message reports consecutive and total counts apart.
  state = _nan_steps(tx, params, 1)
  _, state = tx.update(good, state, params)
  state = _nan_steps(tx, params, 2, state)
  assert (int(state.consecutive_skips), int(state.total_skips)) == (2, 3)

  with pytest.raises(RuntimeError, match=_LIMIT_MSG) as eager:
    _nan_steps(tx, params, 1, state)
  assert type(eager.value) is RuntimeError  # eagerly: a plain Python error, no JAX runtime wrapper

  jitted = adamx.GradientTransformation(tx.init, jax.jit(tx.update))
  with pytest.raises(RuntimeError, match=_LIMIT_MSG):
    jax.block_until_ready(_nan_steps(jitted, params, 1, state))

  def scan(state, n_bad):
    def body(s, bad):
      g = jax.tree.map(lambda x: jnp.where(bad, jnp.nan, x), good)
      return tx.update(g, s, params)[1], None
    return jax.lax.scan(body, state, jnp.arange(4) < n_bad)[0]

  scan = jax.jit(scan)
  ok = jax.block_until_ready(scan(tx.init(params), 2))  # two bad steps, then two good ones: no error
  assert (int(ok.consecutive_skips), int(ok.total_skips)) == (0, 2)
  with pytest.raises(RuntimeError, match=r"adamx\.skip_non_finite: .* on 3 consecutive steps, more than "
                                         r"max_consecutive=2"):
    jax.block_until_ready(scan(tx.init(params), 3))

  # vmap turns the lax.cond around the callback into a select; the host re-checks, so only a real excess raises.
  batched = jax.vmap(lambda s, bad: scan(s, bad), in_axes=(None, 0))
  ok = jax.block_until_ready(batched(tx.init(params), jnp.array([0, 2])))
  np.testing.assert_array_equal(ok.total_skips, [0, 2])
  with pytest.raises(RuntimeError, match=r"on 3 consecutive steps, more than max_consecutive=2"):
    jax.block_until_ready(batched(tx.init(params), jnp.array([0, 4])))


def test_skip_without_limit_never_raises_and_zero_limit_raises_at_once():
  params = {"w": jnp.ones(3)}
  tx = adamx.skip_non_finite(adamx.adam(1e-2))
  state = jax.jit(lambda s: jax.lax.fori_loop(0, 50, lambda i, s: _nan_steps(tx, params, 1, s), s))(tx.init(params))
  assert (int(state.consecutive_skips), int(state.total_skips)) == (50, 50)
  chex.assert_trees_all_equal(state.inner_state, tx.init(params).inner_state)
  with pytest.raises(RuntimeError, match=r"on 1 consecutive step, more than max_consecutive=0"):
    _nan_steps(adamx.skip_non_finite(adamx.adam(1e-2), max_consecutive=0), params, 1)


# ---------------------------------------------------------------------------------------------------------------
# accumulate_gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_accumulate_equals_one_step_on_the_full_batch(spec):
  """k micro-batches accumulated = one step on the whole batch (mean loss), on a small MLP; zero updates between.
  The gradient is compiled once; the optimizer steps run eagerly, so the whole registry stays cheap."""
  params, x, y, _ = _MLP
  k, steps = 4, 3
  opt = trees.bound_factory(spec)(learning_rate=1e-2)
  tx = adamx.accumulate_gradients(opt, k)
  p, s, pf, sf = params, tx.init(params), params, opt.init(params)
  for _ in range(steps):
    for j, (xm, ym) in enumerate(zip(jnp.split(x, k), jnp.split(y, k))):
      u, s = tx.update(_MLP_GRAD(p, xm, ym), s, p)
      if j < k - 1:
        assert all(not bool(jnp.any(leaf)) for leaf in jax.tree.leaves(u))
        assert int(s.micro_step) == j + 1
      p = adamx.apply_updates(p, u)
    u, sf = opt.update(_MLP_GRAD(pf, x, y), sf, pf)
    pf = adamx.apply_updates(pf, u)
    assert int(s.micro_step) == 0
    # float32: the mean of 4 micro-batch means and the mean of 32 terms differ by rounding (~1e-7 of the
    # gradient), which the normalisation by the second moment can amplify in small entries; measured <= 4.2e-7
    # over the registry.
    trees.assert_close(p, pf, rtol=2e-6, what=f"{spec.name} params")
    trees.assert_close(s.inner_state, sf, rtol=2e-6, scale=1e-3, what=f"{spec.name} state")


def test_accumulate_matches_optax_multisteps():
  """Compiled, on one optimizer of the registry; the same calls under jit share one trace."""
  spec = SPECS[2 % len(SPECS)]
  # No complex leaf: optax.MultiSteps accumulates in float32 and drops the imaginary part of complex gradients
  # (adamx accumulates a complex64 gradient in complex64).
  params = _small_params(spec, bf16=False, complex_leaf=False)
  opt = trees.bound_factory(spec)(learning_rate=1e-2)
  tx, otx = adamx.accumulate_gradients(opt, 3), optax.MultiSteps(opt, every_k_schedule=3)
  step, ostep = jax.jit(chex.assert_max_traces(tx.update, n=1)), jax.jit(otx.update)
  s, so, p = tx.init(params), otx.init(params), params
  rng = np.random.default_rng(3)
  for _ in range(9):
    g = trees.random_like(rng, params)
    u, s = step(g, s, p)
    uo, so = ostep(g, so, p)
    # optax averages with a running (Welford) mean, adamx sums then divides: equal up to float32 rounding.
    trees.assert_close(u, uo, rtol=2e-6, scale=1e-2, what="updates")
    trees.assert_close(s.inner_state, so.inner_opt_state, rtol=2e-6, scale=1.0, what="inner state")
    assert int(s.micro_step) == int(so.mini_step)
    p = adamx.apply_updates(p, u)
  chex.clear_trace_counter()


def test_accumulate_sums_bfloat16_gradients_in_float32():
  """The accumulator of a bf16 leaf is float32 and the mean is rounded once: it is the correctly rounded bf16 mean
  (4 bf16 values sum exactly in float32 and dividing by 4 is exact)."""
  params = {"w": jnp.zeros(64, jnp.bfloat16), "v": jnp.zeros(3, jnp.float32)}
  tx = adamx.accumulate_gradients(adamx.identity(), 4)
  state = tx.init(params)
  assert state.acc["w"].dtype == jnp.float32 and state.acc["v"].dtype == jnp.float32
  rng = np.random.default_rng(4)
  grads = [trees.random_like(rng, params) for _ in range(4)]
  for g in grads:
    u, state = tx.update(g, state, params)
  exact = np.mean([np.asarray(g["w"], np.float64) for g in grads], axis=0)
  assert u["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(u["w"], np.float64), np.asarray(jnp.asarray(exact, jnp.bfloat16),
                                                                             np.float64))
  # Summing in bf16 instead rounds every partial sum to 8 bits: on these gradients it is off in many entries.
  naive = functools.reduce(lambda a, b: (a + b).astype(jnp.bfloat16), [g["w"] for g in grads]) / 4
  assert int(jnp.sum(naive != u["w"])) > 0


# ---------------------------------------------------------------------------------------------------------------
# ema and ema_params
# ---------------------------------------------------------------------------------------------------------------


def _ema_run(decay, debias, steps=40):
  """Adam on a noisy quadratic, then ema: the params and the average after every step."""
  tx = adamx.chain(adamx.adam(5e-2), adamx.ema(decay, debias=debias))

  @jax.jit
  def step(p, s, t):
    g = jax.tree.map(lambda x: 2 * (x - 0.5) + 0.3 * jnp.sin(3.0 * t + x), p)
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  p, s, ps, avgs = _real_params(), tx.init(_real_params()), [], []
  for t in range(steps):
    p, s = step(p, s, jnp.float32(t))
    ps.append(p)
    avgs.append(adamx.ema_params(s))
  assert int(s[1].count) == steps
  return ps, avgs


@pytest.mark.parametrize("debias", [True, False], ids=["debias", "torch-convention"])
def test_ema_matches_float64_reference(debias):
  """The average of the float32 params actually produced, against a float64 NumPy EMA of them (measured 1.2e-7)."""
  decay = 0.9
  ps, avgs = _ema_run(decay, debias)
  m = e = None
  for t, (p, avg) in enumerate(zip(ps, avgs), start=1):
    p = trees.to_numpy(p)
    if debias:  # zero-initialised EMA divided by 1 - decay^t (Adam's bias correction)
      m = jax.tree.map(lambda x: (1 - decay) * x, p) if m is None else jax.tree.map(
          lambda mm, x: decay * mm + (1 - decay) * x, m, p)
      e = jax.tree.map(lambda mm: mm / (1 - decay**t), m)
    else:  # the first params copied, then a constant weight
      e = p if e is None else jax.tree.map(lambda ee, x: decay * ee + (1 - decay) * x, e, p)
    trees.assert_close(avg, e, rtol=5e-7, scale=1.0, what=f"step {t}")


def test_ema_matches_torch_averaged_model_and_optax_ema():
  decay = 0.9
  ps, avgs = _ema_run(decay, debias=False)
  leaves0, treedef = jax.tree.flatten(ps[0])
  model = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(np.asarray(x))) for x in leaves0])
  averaged = torch.optim.swa_utils.AveragedModel(model,
                                                 multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay))
  for p, avg in zip(ps, avgs):
    with torch.no_grad():
      for tp, x in zip(model, jax.tree.leaves(p)):
        tp.copy_(torch.tensor(np.asarray(x)))
    averaged.update_parameters(model)
    theirs = treedef.unflatten([tp.detach().numpy() for tp in averaged.module])
    # The same two-sided lerp in float32: measured bit-identical.
    trees.assert_close(avg, theirs, rtol=1e-7, scale=1.0, what="torch AveragedModel")
  # optax.ema(debias=True) averages whatever it is fed; fed the params it gives the debiased average (its float32
  # 1 - decay^t differs in the last bits: measured 5.2e-7).
  ps, avgs = _ema_run(decay, debias=True)
  oema = optax.ema(decay, debias=True)
  so = oema.init(ps[0])
  for p, avg in zip(ps, avgs):
    out, so = oema.update(p, so)
    trees.assert_close(avg, out, rtol=2e-6, scale=1.0, what="optax.ema")


def test_ema_keeps_bfloat16_params_in_float32_and_passes_updates_through():
  params = {"h": jnp.ones(4, jnp.bfloat16), "z": jnp.ones(2, jnp.complex64)}
  tx = adamx.ema(0.999)
  state = tx.init(params)
  assert state.ema["h"].dtype == jnp.float32 and state.ema["z"].dtype == jnp.complex64
  updates = {"h": jnp.full(4, 2.0**-6, jnp.bfloat16), "z": jnp.full(2, 1j, jnp.complex64)}
  out, state = tx.update(updates, state, params)
  assert out is updates
  np.testing.assert_array_equal(state.ema["h"], 1 + 2.0**-6)  # w_1 = 1: the first update copies the params
  for _ in range(5):
    _, state = tx.update(updates, state, params)
  # A bf16 average would freeze: (1 - 0.999) * 2^-6 is far below half a bf16 ulp at 1.
  assert float(state.ema["h"][0]) == 1 + 2.0**-6


def test_ema_params_finds_the_average_anywhere():
  params = {"w": jnp.ones(3)}
  opt = adamx.adam(1e-2)
  for tx in (adamx.chain(opt, adamx.ema(0.9)), optax.chain(opt, adamx.ema(0.9)),
             adamx.skip_non_finite(adamx.chain(opt, adamx.ema(0.9))),
             adamx.accumulate_gradients(adamx.chain(opt, adamx.ema(0.9)), 2),
             adamx.lookahead(adamx.chain(opt, adamx.ema(0.9)))):
    state = tx.init(params)
    chex.assert_trees_all_equal(adamx.ema_params(state), params)
  assert adamx.ema_params(adamx.EmaState(jnp.zeros([], jnp.int32), params)) is params
  with pytest.raises(ValueError, match=r"adamx\.ema_params: state must contain exactly one EmaState .* got 0"):
    adamx.ema_params(opt.init(params))
  with pytest.raises(ValueError, match=r"got 2"):
    adamx.ema_params(adamx.chain(adamx.ema(0.9), adamx.ema(0.5)).init(params))


def test_ema_averages_only_real_steps_inside_wrappers():
  params = {"w": jnp.ones(3)}
  g = {"w": jnp.ones(3)}
  tx = adamx.accumulate_gradients(adamx.chain(adamx.adam(1e-2), adamx.ema(0.9)), 2)
  state = tx.init(params)
  for _ in range(4):
    _, state = tx.update(g, state, params)
  assert int(state.inner_state[1].count) == 2
  tx = adamx.skip_non_finite(adamx.chain(adamx.adam(1e-2), adamx.ema(0.9)))
  _, state = tx.update({"w": jnp.full(3, jnp.nan)}, tx.init(params), params)
  assert int(state.inner_state[1].count) == 0


# ---------------------------------------------------------------------------------------------------------------
# maximize
# ---------------------------------------------------------------------------------------------------------------

MAXIMIZE_STEPS = 120


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_maximize_is_the_optimizer_on_negated_gradients(spec):
  kwargs = spec.sample(np.random.default_rng(zlib.crc32(spec.name.encode())))
  tx, opt = adamx.maximize(trees.bound_factory(spec)(**kwargs)), trees.bound_factory(spec)(**kwargs)
  g = trees.random_like(np.random.default_rng(7), _TREE)
  chex.assert_trees_all_equal(tx.update(g, tx.init(_TREE), _TREE),
                              opt.update(jax.tree.map(lambda x: -x, g), opt.init(_TREE), _TREE))


# Every (optimizer, variant) of the registry with a torch counterpart whose class has maximize.
TORCH_CASES = [(spec, variant) for spec in SPECS for variant in spec.variants
               if spec.torch and (made := spec.torch(torch, spec.full_kwargs(**variant))) is not None
               and "maximize" in inspect.signature(made[0]).parameters]


@pytest.mark.parametrize("spec,variant", TORCH_CASES,
                         ids=[f"{s.name}-{'-'.join(f'{k}={v}' for k, v in v.items()) or 'default'}"
                              for s, v in TORCH_CASES])
def test_maximize_matches_torch_maximize(spec, variant):
  """maximize(opt) is torch's opt(maximize=True) over 120 steps on float32 leaves, with sampled hyperparameters:
  1e-5 normwise plus AdamW's decay drift t 2^-25 (torch rounds its factor 1 - lr wd to float32 every step;
  measured at most 0.25 of that bound)."""
  rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
  kwargs = {**spec.sample(rng), **variant}
  made = spec.torch(torch, spec.full_kwargs(**kwargs))
  assert made is not None, kwargs
  cls, torch_kwargs = made
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  leaves, treedef = jax.tree.flatten(params)
  tparams = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
  topt = cls(tparams, maximize=True, **torch_kwargs)
  tx = adamx.maximize(spec.factory(**kwargs))
  step = jax.jit(tx.update)
  p, s = params, tx.init(params)
  for t in range(1, MAXIMIZE_STEPS + 1):
    g = trees.random_like(rng, params)
    for tp, gl in zip(tparams, jax.tree.leaves(g)):
      tp.grad = torch.tensor(np.array(gl))
    topt.step()
    u, s = step(g, s, p)
    p = adamx.apply_updates(p, u)
    theirs = treedef.unflatten([tp.detach().numpy() for tp in tparams])
    err = trees.max_rel_err(p, theirs, scale=1.0)
    assert err <= 1e-5 + t * 2.0**-25, (spec.name, t, err)


# ---------------------------------------------------------------------------------------------------------------
# lookahead
# ---------------------------------------------------------------------------------------------------------------


def test_lookahead_matches_algorithm_1_in_float64(x64):
  """Zhang et al. 2019, Algorithm 1, with the float64 Adam reference as the inner optimizer A: the params held are
  the fast weights theta_{t,i} after every step, and state.slow is phi_t."""
  params = _real_params(dtype=np.float64)
  k, alpha, lr = 5, 0.5, 5e-2
  tx = adamx.lookahead(adamx.adam(lr), sync_period=k, slow_step_size=alpha)
  step = jax.jit(tx.update)
  p, s = params, tx.init(params)
  inner = ref_adam.Adam(learning_rate=lr)
  phi = trees.to_numpy(params)  # Require: initial parameters phi_0
  inner_state = inner.init(phi)
  t_inner = 0
  for t in range(1, 7):  # for t = 1, 2, ...
    theta = phi  # Synchronize parameters theta_{t,0} <- phi_{t-1}
    for i in range(1, k + 1):  # for i = 1, 2, ..., k
      g = _quadratic_grad(theta, t_inner)  # sample minibatch d ~ D
      t_inner += 1
      theta, inner_state = inner.step(trees.to_numpy(g), theta, inner_state, t_inner)  # theta_{t,i} = ... + A(...)
      if i == k:
        phi = jax.tree.map(lambda f, th: f + alpha * (th - f), phi, theta)  # phi_t = phi_{t-1} + a (theta_{t,k} - ..)
      u, s = step(_quadratic_grad(p, t_inner - 1), s, p)
      p = adamx.apply_updates(p, u)
      trees.assert_close(p, phi if i == k else theta, rtol=1e-12, scale=1.0, what=f"params t={t} i={i}")
      trees.assert_close(s.slow, phi, rtol=1e-12, scale=1.0, what=f"slow t={t} i={i}")
      assert int(s.steps_since_sync) == i % k


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_lookahead_matches_optax_lookahead(spec):
  """optax.lookahead on LookaheadParams(fast, slow): our params are its fast params, our state.slow its slow ones
  (eager, on the shared tree, so that the whole registry stays cheap)."""
  params = _TREE
  opt = trees.bound_factory(spec)(learning_rate=1e-2)
  tx = adamx.lookahead(opt, sync_period=3, slow_step_size=0.4)
  otx = optax.lookahead(opt, sync_period=3, slow_step_size=0.4)
  step, ostep = tx.update, otx.update  # eager: the whole registry stays cheap
  p, s = params, tx.init(params)
  po = optax.LookaheadParams.init_synced(params)
  so = otx.init(po)
  for t in range(10):
    u, s = step(_quadratic_grad(p, t), s, p)
    uo, so = ostep(_quadratic_grad(po.fast, t), so, po)
    p, po = adamx.apply_updates(p, u), optax.apply_updates(po, uo)
    trees.assert_close(p, po.fast, rtol=2e-6, scale=1.0, what=f"fast {t}")
    trees.assert_close(s.slow, po.slow, rtol=2e-6, scale=1.0, what=f"slow {t}")
    trees.assert_close(s.inner_state, so.fast_state, rtol=2e-6, scale=1.0, what=f"inner {t}")
    assert int(s.steps_since_sync) == int(so.steps_since_sync)


def test_lookahead_slow_step_size_one_and_period_one_is_the_inner_optimizer():
  params = _real_params()
  opt = adamx.adamw(1e-2)
  tx = adamx.lookahead(opt, sync_period=1, slow_step_size=1.0)
  g = trees.random_like(np.random.default_rng(5), params)
  u, s = tx.update(g, tx.init(params), params)
  uo, so = opt.update(g, opt.init(params), params)
  trees.assert_close(adamx.apply_updates(params, u), adamx.apply_updates(params, uo), rtol=1e-7, scale=1.0)
  chex.assert_trees_all_equal(s.inner_state, so)


# ---------------------------------------------------------------------------------------------------------------
# Bad arguments: the message names the function, the argument and the value
# ---------------------------------------------------------------------------------------------------------------

_OPT = adamx.adam(1e-3)

BAD = [
    (lambda: adamx.skip_non_finite("adam"), TypeError, r"adamx\.skip_non_finite: transform must be a gradient "
     r"transformation with init and update .*got 'adam'"),
    (lambda: adamx.skip_non_finite(_OPT, max_consecutive=-1), ValueError,
     r"adamx\.skip_non_finite: max_consecutive must be a non-negative integer, got -1"),
    (lambda: adamx.skip_non_finite(_OPT, max_consecutive=1.5), ValueError, r"max_consecutive .* got 1\.5"),
    (lambda: adamx.skip_non_finite(_OPT, max_consecutive=True), TypeError, r"max_consecutive .* got True"),
    (lambda: adamx.accumulate_gradients(optax.adam, 2), TypeError, r"adamx\.accumulate_gradients: transform must"),
    (lambda: adamx.accumulate_gradients(_OPT, 0), ValueError,
     r"adamx\.accumulate_gradients: k must be a positive integer, got 0"),
    (lambda: adamx.accumulate_gradients(_OPT, 2.0), TypeError, r"k must be a positive integer, got 2\.0"),
    (lambda: adamx.accumulate_gradients(_OPT, True), TypeError, r"k must be a positive integer, got True"),
    (lambda: adamx.ema(1.0), ValueError, r"adamx\.ema: decay must be in \[0, 1\), got 1\.0"),
    (lambda: adamx.ema(-0.1), ValueError, r"adamx\.ema: decay must be in \[0, 1\), got -0\.1"),
    (lambda: adamx.ema("0.9"), TypeError, r"adamx\.ema: decay must be a real number or array, got '0\.9'"),
    (lambda: adamx.ema(0.9, debias="yes"), TypeError, r"adamx\.ema: debias must be a Python bool, got 'yes'"),
    (lambda: adamx.maximize(None), TypeError, r"adamx\.maximize: transform must be a gradient transformation"),
    (lambda: adamx.lookahead(_OPT, sync_period=0), ValueError,
     r"adamx\.lookahead: sync_period must be a positive integer, got 0"),
    (lambda: adamx.lookahead(_OPT, sync_period=2.5), TypeError, r"sync_period must be a positive integer, got 2\.5"),
    (lambda: adamx.lookahead(_OPT, slow_step_size=0.0), ValueError,
     r"adamx\.lookahead: slow_step_size must be in \(0, 1\], got 0\.0"),
    (lambda: adamx.lookahead(_OPT, slow_step_size=1.5), ValueError, r"slow_step_size must be in \(0, 1\], got 1\.5"),
    (lambda: adamx.lookahead(_OPT, slow_step_size="a"), TypeError, r"adamx\.lookahead: slow_step_size must be a real"),
    (lambda: adamx.lookahead(_OPT).update({"w": jnp.ones(2)}, adamx.lookahead(_OPT).init({"w": jnp.ones(2)})),
     ValueError, r"adamx\.lookahead: params are required"),
    (lambda: adamx.ema(0.9).update({"w": jnp.ones(2)}, adamx.ema(0.9).init({"w": jnp.ones(2)})), ValueError,
     r"adamx\.ema: params are required"),
]


@pytest.mark.parametrize("make,exc,match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_arguments_raise_clear_errors(make, exc, match):
  with pytest.raises(exc, match=match):
    make()


def test_arrays_and_tracers_are_accepted_for_rates():
  """Injectable hyperparameters: decay and slow_step_size may be arrays or traced, e.g. under vmap."""
  params = {"w": jnp.ones(3)}
  g = {"w": jnp.full(3, 0.5)}

  def run(decay, alpha):
    tx = adamx.chain(adamx.lookahead(adamx.adam(1e-1), sync_period=1, slow_step_size=alpha), adamx.ema(decay))
    state = tx.init(params)
    for _ in range(3):
      u, state = tx.update(g, state, params)
    return adamx.ema_params(state)["w"]

  batched = jax.jit(jax.vmap(run))(jnp.array([0.5, 0.9]), jnp.array([0.5, 1.0]))
  for i, (d, a) in enumerate([(0.5, 0.5), (0.9, 1.0)]):
    np.testing.assert_allclose(batched[i], run(d, a), rtol=1e-6)
