"""Sophia against its float64 paper reference (``tests/reference/sophia.py``) and against ``optax.contrib.sophia``.

What is compared, every step: params, updates, the momentum ``mu`` and the Hessian EMA ``nu``, on the real leaves of
``tests.trees.mixed_params`` (Sophia has no complex support), with seeded gradients and hyperparameters.

The Hessian estimates. The reference cannot draw JAX's random numbers, so the test draws Hutchinson's probes itself
with the schedule adamx documents (``key, sub = split(key)`` at each refresh, one key per leaf from
``split(sub, n_leaves)``, ``rademacher``/``normal`` in float32), and the reference multiplies them by the exact
Hessian-vector product of ``adamx.check.example_loss`` (``H u = 3 x^2 u + sum(u)`` per leaf): the probe schedule,
the HVP and the update rule are all checked. optax derives its probes from the same key the same way, so the
trajectories against optax use optax's own Hutchinson estimator with the same seed: an exact match of the random
probes, not a deterministic stand-in. The ``hessian_estimate=`` path is checked against optax too, with a
precomputed estimate per step passed to both (optax through a ``hessian_diagonal_fn`` that returns it).

The clip makes a comparison weak where every coordinate is clipped (then only signs matter), so the random
hyperparameters (``gamma`` up to 10, ``clip_threshold`` up to 4, ``b2`` down to 0.5) keep a good part of the
coordinates unclipped, and each reference trajectory test asserts that between 5% and 99% of them were (``_win_rate``).

Errors are measured as in ``tests/test_reference.py``: for each leaf, ``max|x_t - ref_t| / max_{s <= t} max|ref_s|``
(the normwise relative error of the trajectory so far). Tolerances:

* float64 (x64), ``F64_RTOL = 1e-10``: both sides compute the same formulas in a different order (the HVP by
  ``jvp`` of ``grad`` against the analytic product), a few roundings of ``2**-53`` per step. The step divides by
  ``max(gamma h, eps)``, and ``h`` (an EMA of Hutchinson estimates of either sign) can cancel to near zero while the
  step is not clipped: there the relative error of ``h``, and so of the update, is amplified by ``|terms| / |h|``
  (measured up to ~1e3). Measured worst over 512 steps, 3 seeds, both conventions: 5.7e-13 on the updates,
  9e-15 on params and state; 1e-10 leaves a factor 175.
* float32, per field (``F32_TOL`` over 50 steps, ``F32_TOL_SLOW`` over 512): ``mu`` is the plain float32 EMA,
  ``u32 (8 + 1 / (1 - b1))`` (``tests/test_reference.py::_f32_tol``) <= 3.5e-6 for ``b1 <= 0.98``; ``nu`` sums
  float32 HVPs of ``n``-entry leaves (a few ``u32 n``, relative to the trajectory's largest ``h``); the updates
  carry the cancellation amplification above (float32: ``u32 * 1e3`` ~ 1e-4), and the params sum ``lr *`` those
  errors. Measured worst (3 seeds, both conventions), 50 / 512 steps: updates 2.7e-5 / 4.6e-4, params 8.9e-7 /
  8.8e-6, ``nu`` 6.8e-7 / 2.1e-6, ``mu`` 2.7e-7 / 3.5e-7. Every deliberate change of
  ``test_a_wrong_reference_is_caught`` (``b2`` or the clip off by 1e-3 relative, ``gamma`` or the decay by 1e-2,
  a convention, the probes) exceeds some field's tolerance more than 5 times.
* against optax (float32, same probes), ``OPTAX_RTOL = 1e-4``: adamx's bias correction ``-expm1(t log b1)`` and
  optax's float32 ``1 - b1**t`` differ by ~1e-7 relative, everything else is the same float32 arithmetic, so the
  differences are rounding amplified as above; measured <= 3.6e-6 (updates), 9.3e-8 (params) over 500 steps.
"""

from __future__ import annotations

import functools
import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx import check
from adamx.optimizers import _sophia
from tests import trees
from tests.reference import sophia as ref

F64_RTOL = 1e-10
F32_TOL = {"params": 2e-5, "updates": 2e-4, "mu": 2e-6, "nu": 2e-5}  # 50 steps
F32_TOL_SLOW = {"params": 2e-4, "updates": 2e-3, "mu": 4e-6, "nu": 2e-5}  # 512 steps
OPTAX_RTOL = 1e-4
N_SHORT, N_LONG = 50, 512
FIELDS = ("params", "updates", "mu", "nu")

PROBES = ("rademacher", "normal")
PAPER = {"bias_correction": False, "fresh_hessian": True, "probe": "normal"}
CONVENTIONS = {"optax": {}, "paper": PAPER}


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _hyper(seed: int, convention: str) -> dict:
  """Seeded hyperparameters that leave a good part of the coordinates unclipped (see the module docstring)."""
  rng = np.random.default_rng(seed)
  return {
      "learning_rate": float(10 ** rng.uniform(-3, -1.5)),
      "b1": float(rng.uniform(0.5, 0.98)),
      "b2": float(rng.uniform(0.5, 0.99)),
      "eps": float(10 ** rng.uniform(-10, -6)),
      "weight_decay": float(rng.uniform(0.0, 0.1)),
      "gamma": float(10 ** rng.uniform(-1, 1)),
      "clip_threshold": float(rng.uniform(0.5, 4.0)),
      "update_interval": int(rng.choice([1, 2, 3, 7, 10])),
      "seed": int(rng.integers(0, 1000)),
      **CONVENTIONS[convention],
  }


def _params(seed: int, dtype) -> dict:
  return trees.mixed_params(np.random.default_rng(seed), bf16=False, complex_leaf=False, real_dtype=dtype)


def _grads(seed: int, params, n: int) -> list:
  rng = np.random.default_rng(seed + 1000)
  return [trees.random_like(rng, params) for _ in range(n)]


def _exact_hvp(params, u):
  """``H u`` of ``adamx.check.example_loss`` (``sum x^4 / 4 + (sum x)^2 / 2`` per leaf), in float64."""
  return jax.tree.map(lambda x, v: 3.0 * x * x * v + np.sum(v), params, u)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw_probes(key, shapes: tuple, probe: str, n: int):
  """``n`` refreshes' probes, one leaf of each shape per refresh, stacked: the documented schedule."""
  sample = jax.random.rademacher if probe == "rademacher" else jax.random.normal

  def one(key, _):
    key, sub = jax.random.split(key)
    keys = jax.random.split(sub, len(shapes))
    return key, [sample(k, shape, jnp.float32) for k, shape in zip(keys, shapes)]

  return jax.lax.scan(one, key, None, length=n)[1]


def _probes(seed, params, probe: str, n: int = N_LONG):
  """Hutchinson's probes in the order adamx (and optax) draws them, as float64 NumPy trees (at most ``n``)."""
  key = seed if isinstance(seed, jax.Array) else jax.random.PRNGKey(seed)
  leaves, treedef = jax.tree.flatten(params)
  drawn = [np.asarray(x, np.float64) for x in _draw_probes(key, tuple(np.shape(p) for p in leaves), probe, n)]
  for i in range(n):
    yield treedef.unflatten([x[i] for x in drawn])


def _reference(hp: dict) -> ref.Sophia:
  return ref.Sophia(**{k: v for k, v in hp.items() if k not in ("seed", "probe")})


def _run_reference(hp: dict, params, grads) -> dict[str, list]:
  opt, probes = _reference(hp), _probes(hp["seed"], params, hp.get("probe", "rademacher"))
  estimate = lambda p: ref.hutchinson(_exact_hvp, p, next(probes))  # noqa: E731 (called on refresh steps only)
  p, s, out = params, opt.init(params), {f: [] for f in FIELDS}
  for t, g in enumerate(grads, start=1):
    p, s, delta = opt.step(g, p, s, t, estimate)
    for f, x in zip(FIELDS, (p, delta, s["mu"], s["nu"])):
      out[f].append(x)
  return out


def _moments(state):
  return next(s for s in state if hasattr(s, "nu"))


def _run_jax(tx, params, grads, **update_kwargs) -> dict[str, list]:
  """The trajectory of ``tx`` in one jitted scan; ``update_kwargs`` are constant (functions or trees)."""

  def body(carry, g):
    p, s = carry
    u, s = tx.update(g, s, p, **update_kwargs)
    p = adamx.apply_updates(p, u)
    m = _moments(s)
    return (p, s), (p, u, m.mu, m.nu)

  stacked = jax.tree.map(lambda *xs: np.stack(xs), *grads)
  _, outs = jax.jit(lambda p, gs: jax.lax.scan(body, (p, tx.init(p)), gs))(params, stacked)
  outs = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(outs))
  return {f: [jax.tree.map(lambda x: x[t], o) for t in range(len(grads))] for f, o in zip(FIELDS, outs)}


def _errors(actual: dict, expected: dict) -> dict[str, float]:
  """The worst trajectory-normwise relative error of each field (module docstring)."""
  worst = {}
  for f in FIELDS:
    n_leaves = len(jax.tree.leaves(expected[f][0]))
    for i in range(n_leaves):
      a = np.stack([jax.tree.leaves(x)[i] for x in actual[f]]).reshape(len(actual[f]), -1)
      e = np.stack([jax.tree.leaves(x)[i] for x in expected[f]]).reshape(len(expected[f]), -1)
      scale = np.maximum.accumulate(np.max(np.abs(e), axis=1))
      err = np.max(np.abs(a - e), axis=1) / np.maximum(scale, 1e-300)
      worst[f] = max(worst.get(f, 0.0), float(np.max(err)))
  return worst


def _win_rate(hp: dict, params, expected: dict) -> float:
  """The fraction of coordinates whose step was not clipped (the authors' "win rate") over the trajectory: the
  reference's ``delta`` is ``-eta (clip(...) + lambda theta)``."""
  lr, c, wd = hp["learning_rate"], hp["clip_threshold"], hp["weight_decay"]
  hits = total = 0
  prev = params
  for new, delta in zip(expected["params"], expected["updates"]):
    for d, p in zip(jax.tree.leaves(delta), jax.tree.leaves(prev)):
      step = np.abs(d + lr * wd * np.asarray(p, np.float64))
      hits += int(np.sum(step < lr * c * (1 - 1e-6)))
      total += np.size(d)
    prev = new
  return hits / total


def _adamx_sophia(hp: dict, **kw):
  return adamx.sophia(**{**hp, **kw})


# ---------------------------------------------------------------------------------------------------------------
# Against the float64 paper reference
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _case(seed: int, convention: str, dtype: type, n: int = N_SHORT):
  """``(hp, params, grads, adamx's trajectory, the reference's)``, computed once per case: the float32 runs are
  shared by the reference, wrong-reference and optax tests (each trajectory is one compilation)."""
  with jax.enable_x64(dtype == np.float64):
    hp = _hyper(seed, convention)
    params = _params(seed, dtype)
    grads = _grads(seed, params, n)
    actual = _run_jax(_adamx_sophia(hp), params, grads, obj_fn=check.example_loss)
    return hp, params, grads, actual, _run_reference(hp, params, grads)


# The default suite runs the paper's convention in float64 and optax's in float32 (each trajectory with the Hessian
# estimator is one compilation, the time of these tests); the slow suite runs both in both, 512 steps.
@pytest.mark.parametrize("convention", ["paper"])
def test_reference_float64(convention):
  """adamx in float64 (x64) equals the paper's pseudocode every step."""
  _, _, _, actual, expected = _case(0, convention, np.float64)
  errs = _errors(actual, expected)
  assert max(errs.values()) <= F64_RTOL, errs


@pytest.mark.parametrize("convention", ["optax"])
def test_reference_float32(convention):
  hp, params, _, actual, expected = _case(0, convention, np.float32)
  errs = _errors(actual, expected)
  assert all(errs[f] <= F32_TOL[f] for f in FIELDS), errs
  assert 0.05 <= _win_rate(hp, params, expected) <= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_reference_long(convention, seed):
  """512 steps in float64 and in float32."""
  for dtype, tol in ((np.float64, dict.fromkeys(FIELDS, F64_RTOL)), (np.float32, F32_TOL_SLOW)):
    hp, params, _, actual, expected = _case(seed, convention, dtype, N_LONG)
    errs = _errors(actual, expected)
    assert all(errs[f] <= tol[f] for f in FIELDS), (dtype, errs)
    assert 0.05 <= _win_rate(hp, params, expected) <= 0.99


def test_a_wrong_reference_is_caught():
  """Each deliberate change of the reference (a constant, a convention, the probe draws) fails by a wide margin."""
  hp, params, grads, actual, _ = _case(0, "optax", np.float32)
  changes = {"b2": {"b2": hp["b2"] * (1 + 1e-3)}, "clip_threshold": {"clip_threshold": hp["clip_threshold"] * 1.001},
             "gamma": {"gamma": hp["gamma"] * 1.01}, "weight_decay": {"weight_decay": hp["weight_decay"] * 1.01},
             "bias_correction": {"bias_correction": False}, "fresh_hessian": {"fresh_hessian": True},
             "probe seed": {"seed": hp["seed"] + 1}, "probe distribution": {"probe": "normal"}}
  for what, change in changes.items():
    errs = _errors(actual, _run_reference({**hp, **change}, params, grads))
    assert max(errs[f] / F32_TOL[f] for f in FIELDS) > 5, (what, errs)


# ---------------------------------------------------------------------------------------------------------------
# Against optax.contrib.sophia
# ---------------------------------------------------------------------------------------------------------------


def _optax_sophia(hp: dict, hessian_diagonal_fn=None):
  estimator = hessian_diagonal_fn or optax.contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(hp["seed"]))
  return optax.contrib.sophia(hp["learning_rate"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"],
                              weight_decay=hp["weight_decay"], gamma=hp["gamma"], clip_threshold=hp["clip_threshold"],
                              update_interval=hp["update_interval"], hessian_diagonal_fn=estimator)


# The default suite compares with optax through ``python -m adamx check`` (tests/test_check.py runs it: Sophia vs
# optax.contrib.sophia, same probes, 20 steps); these are the longer runs, one compilation of optax's step each.
@pytest.mark.slow
@pytest.mark.parametrize("seed,n", [(0, N_SHORT), (1, 500), (2, 500)], ids=["50", "500-1", "500-2"])
def test_optax_same_probes(seed, n):
  """optax's own Hutchinson estimator, same seed: the same random probes."""
  hp, params, grads, actual, _ = _case(seed, "optax", np.float32, n)
  errs = _errors(actual, _run_jax(_optax_sophia(hp), params, grads, obj_fn=check.example_loss))
  assert max(errs.values()) <= OPTAX_RTOL, errs


@pytest.mark.slow  # two more compilations; the hessian_estimate path is also checked by the refresh tests below
def test_optax_precomputed_estimate():
  """``hessian_estimate=`` (a pytree) against optax fed the same estimate through its ``hessian_diagonal_fn``."""
  hp = _hyper(3, "optax")
  params = _params(3, np.float32)
  grads = _grads(3, params, N_SHORT)
  estimate = trees.random_like(np.random.default_rng(7), params, scale=2.0)  # either sign, as Hutchinson's

  def given(updates, state, params=None, hessian_estimate=None, **extra):
    del updates, params, extra
    return hessian_estimate, state

  passthrough = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), given)
  expected = _run_jax(_optax_sophia(hp, passthrough), params, grads, hessian_estimate=estimate)
  errs = _errors(_run_jax(_adamx_sophia(hp), params, grads, hessian_estimate=estimate), expected)
  assert max(errs.values()) <= OPTAX_RTOL, errs


def test_defaults_are_optax():
  ours = inspect.signature(adamx.sophia).parameters
  theirs = inspect.signature(optax.contrib.sophia).parameters
  for name in ("b1", "b2", "eps", "weight_decay", "gamma", "clip_threshold", "update_interval"):
    assert ours[name].default == theirs[name].default, name


# ---------------------------------------------------------------------------------------------------------------
# The refresh: lax.cond on the counter, one compilation, the estimator evaluated on refresh steps only
# ---------------------------------------------------------------------------------------------------------------


def test_refresh_compiles_once_and_estimates_on_refresh_steps_only():
  k, steps = 3, 8  # refreshes at steps 1, 4, 7: the run crosses two refresh boundaries
  calls = []

  def estimate(params, key):
    del key
    jax.debug.callback(lambda: calls.append(1))
    return jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)

  params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
  tx = adamx.sophia(1e-2, update_interval=k)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s, g):
    u, s = tx.update(g, s, p, hessian_estimate=estimate)
    return adamx.apply_updates(p, u), s

  state, p, counts = tx.init(params), params, []
  for _ in range(steps):
    p, state = step(p, state, jax.tree.map(jnp.ones_like, params))
    jax.effects_barrier()
    counts.append(len(calls))
  chex.clear_trace_counter()
  assert step._cache_size() == 1
  assert counts == [1, 1, 1, 2, 2, 2, 3, 3]
  # the EMA after three refreshes of 2.0 with b2 = 0.99
  np.testing.assert_allclose(state[0].nu["w"], 2.0 * (1 - 0.99**3), rtol=1e-6)
  # eagerly (the counter is concrete): the same calls, the same numbers
  calls.clear()
  eager_state, q = tx.init(params), params
  for _ in range(steps):
    u, eager_state = tx.update(jax.tree.map(jnp.ones_like, params), eager_state, q, hessian_estimate=estimate)
    q = adamx.apply_updates(q, u)
  jax.effects_barrier()
  assert len(calls) == 3
  chex.assert_trees_all_close(q, p, rtol=1e-6)


def test_key_advances_at_refresh_only_and_seeds_are_deterministic():
  """The estimator gets ``split(key)[1]`` on refresh steps, the state keeps ``split(key)[0]``; an int seed and the
  same typed key give the same draws, another seed other draws."""
  params = {"w": jnp.ones(4)}
  g = {"w": jnp.ones(4)}
  draw = lambda p, key: jax.tree.map(lambda x: jax.random.normal(key, x.shape) ** 2, p)  # noqa: E731

  def two_steps(seed):
    tx = adamx.scale_by_sophia(b2=0.0, update_interval=2, seed=seed)
    step = jax.jit(lambda s: tx.update(g, s, params, hessian_estimate=draw)[1])
    s0 = tx.init(params)
    s1 = step(s0)  # step 1: a refresh
    return s0, s1, step(s1)  # step 2: none

  s0, s1, s2 = two_steps(5)
  key, sub = jax.random.split(jax.random.PRNGKey(5))
  np.testing.assert_array_equal(s0.key, jax.random.PRNGKey(5))
  np.testing.assert_array_equal(s1.key, key)
  np.testing.assert_array_equal(s2.key, key)
  np.testing.assert_array_equal(s1.nu["w"], draw(params, sub)["w"])
  np.testing.assert_array_equal(s2.nu["w"], s1.nu["w"])
  np.testing.assert_array_equal(two_steps(jax.random.key(5))[1].nu["w"], s1.nu["w"])
  assert not np.array_equal(two_steps(6)[1].nu["w"], s1.nu["w"])


def test_first_step_is_the_clipped_momentum_sign_by_default():
  """optax's order: step 1 sees h = 0, so every coordinate is clipped; the paper's uses the fresh estimate."""
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  g = {"w": jnp.array([0.3, -1e-3, 2.0])}
  u, _ = adamx.sophia(0.1, weight_decay=0.0).update(g, adamx.sophia(0.1).init(params), params,
                                                    hessian_estimate={"w": jnp.full(3, 4.0)})
  np.testing.assert_allclose(u["w"], -0.1 * np.sign(g["w"]), rtol=1e-6)
  paper = adamx.sophia(0.1, weight_decay=0.0, gamma=1.0, b2=0.0, **PAPER)
  u, s = paper.update(g, paper.init(params), params, hessian_estimate={"w": jnp.array([4.0, 4.0, 40.0])})
  np.testing.assert_allclose(u["w"], -0.1 * np.clip((1 - 0.965) * g["w"] / np.array([4.0, 4.0, 40.0]), -1, 1),
                             rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The estimators: Gauss-Newton-Bartlett against Algorithm 2, both unbiased
# ---------------------------------------------------------------------------------------------------------------


def _softmax_problem(seed=0, batch=16, dim=3, classes=4):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(dim, classes)), jnp.float32)
  return x, {"w": w}, (lambda p: x @ p["w"])


def test_gnb_is_algorithm_2():
  """One refresh with b2 = 0: nu is B * grad(Lhat)^2 on the labels adamx samples with the documented key (float32
  against the float64 reference on the same labels: a few float32 roundings)."""
  x, params, logits_fn = _softmax_problem()
  tx = adamx.scale_by_sophia(b2=0.0, estimator="gnb", seed=3)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, logits_fn=logits_fn))
  _, state = step(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  sub = jax.random.split(jax.random.PRNGKey(3))[1]
  labels = np.asarray(jax.random.categorical(sub, logits_fn(params), axis=-1))
  expected = ref.gauss_newton_bartlett({"w": ref.softmax_ce_grad(x, params["w"], labels)}, batch=len(labels))
  trees.assert_close(state.nu, expected, 1e-5)


def _many_estimates(tx, params, n, **kw):
  """``n`` independent estimates (b2 = 0: nu is the estimate), one key each, under vmap."""
  state = tx.init(params)
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  g = jax.tree.map(jnp.zeros_like, params)
  return jax.jit(jax.vmap(lambda key: tx.update(g, state._replace(key=key), params, **kw)[1].nu))(keys)


@pytest.mark.slow  # statistical; the exact formulas are checked above
def test_hutchinson_is_unbiased():
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(5,)), jnp.float32)}
  diag = 3 * np.asarray(params["w"], np.float64) ** 2 + 1  # the Hessian diagonal of example_loss
  for probe in PROBES:
    tx = adamx.scale_by_sophia(b2=0.0, probe=probe)
    est = np.asarray(_many_estimates(tx, params, 2048, obj_fn=check.example_loss)["w"], np.float64)
    se = np.std(est, axis=0) / math.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - diag) < 5 * se + 1e-6), probe


@pytest.mark.slow  # statistical; the exact formulas are checked above
def test_gnb_is_unbiased_for_the_gauss_newton_diagonal():
  x, params, logits_fn = _softmax_problem(batch=8)
  est = np.asarray(_many_estimates(adamx.scale_by_sophia(b2=0.0, estimator="gnb"), params, 2048,
                                   logits_fn=logits_fn)["w"], np.float64)
  p = np.asarray(jax.nn.softmax(logits_fn(params)), np.float64)
  # diag of (1/B) sum_b J_b^T (diag(p_b) - p_b p_b^T) J_b for logits x_b W: x_bi^2 (p_bc - p_bc^2)
  gn = np.mean(np.asarray(x, np.float64)[:, :, None] ** 2 * (p - p**2)[:, None, :], axis=0)
  se = np.std(est, axis=0) / math.sqrt(est.shape[0])
  assert np.all(np.abs(est.mean(axis=0) - gn) < 5 * se + 1e-7)


# ---------------------------------------------------------------------------------------------------------------
# The update's keyword arguments, composition, errors
# ---------------------------------------------------------------------------------------------------------------


def test_update_without_an_objective_raises_a_clear_error():
  params = {"w": jnp.ones(3)}
  g = {"w": jnp.ones(3)}
  tx = adamx.sophia()
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"adamx.scale_by_sophia: update needs params and exactly one of obj_fn= "
                                       r"\(estimator='hutchinson'\) or hessian_estimate=.*got none of them"):
    tx.update(g, state, params)
  with pytest.raises(ValueError, match="got logits_fn"):
    tx.update(g, state, params, logits_fn=lambda p: p["w"])
  with pytest.raises(ValueError, match="got obj_fn, hessian_estimate"):
    tx.update(g, state, params, obj_fn=check.example_loss, hessian_estimate=g)
  with pytest.raises(ValueError, match="params are missing"):
    tx.update(g, state, obj_fn=check.example_loss)
  with pytest.raises(ValueError, match=r"exactly one of logits_fn= \(estimator='gnb'\)"):
    adamx.sophia(estimator="gnb").update(g, state, params, obj_fn=check.example_loss)
  with pytest.raises(ValueError, match="tree structure of hessian_estimate"):
    tx.update(g, state, params, hessian_estimate={"v": jnp.ones(3)})


def test_optax_chain_needs_the_extra_args_wrapper_adamx_chain_does_not():
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  g = {"w": jnp.array([0.3, -1.0, 2.0])}
  # with fresh_hessian, the first step divides by gamma (1 - b2) h = [1, 2, 4]: unclipped, it depends on h
  h = {"w": jnp.array([1e4, 2e4, 4e4])}
  tx = adamx.sophia(1e-2, fresh_hessian=True)
  plain = optax.chain(optax.clip(1.0), tx)
  with pytest.raises(ValueError, match=r"optax.GradientTransformationExtraArgs\(\*tx\)"):
    plain.update(g, plain.init(params), params, hessian_estimate=h)
  wrapped = optax.chain(optax.clip(1.0), optax.GradientTransformationExtraArgs(*tx))
  ours = adamx.chain(optax.clip(1.0), tx)
  u1, _ = wrapped.update(g, wrapped.init(params), params, hessian_estimate=h)
  u2, _ = ours.update(g, ours.init(params), params, hessian_estimate=h)
  chex.assert_trees_all_equal(u1, u2)
  assert np.all(np.abs(np.asarray(u2["w"])) < 1e-2 * 0.999)  # unclipped
  injected = adamx.inject_hyperparams(adamx.sophia)(learning_rate=1e-2, fresh_hessian=True)
  u3, _ = injected.update(g, injected.init(params), params, hessian_estimate=h)
  # injected hyperparameters are float32 arrays: the traced bias correction, a few float32 roundings
  chex.assert_trees_all_close(u3, tx.update(g, tx.init(params), params, hessian_estimate=h)[0], rtol=1e-5)


def test_complex_parameters_are_a_type_error_at_init():
  with pytest.raises(TypeError, match=r"adamx.scale_by_sophia: parameter \['z'\] is complex \(complex64\)"):
    adamx.sophia().init({"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)})


@pytest.mark.parametrize("fn", [adamx.sophia, adamx.scale_by_sophia], ids=["sophia", "scale_by_sophia"])
@pytest.mark.parametrize("kwargs,exc,message", [
    ({"b1": 1.0}, ValueError, "b1 must be in [0, 1), got 1.0"),
    ({"gamma": -1.0}, ValueError, "gamma must be a finite number >= 0, got -1.0"),
    ({"clip_threshold": -0.5}, ValueError, "clip_threshold must be a number >= 0, got -0.5"),
    ({"update_interval": 0}, ValueError, "update_interval must be an integer >= 1, got 0"),
    ({"update_interval": 2.5}, TypeError, "update_interval must be an integer >= 1, got 2.5"),
    ({"update_interval": jnp.float32(2)}, TypeError, "update_interval must be an integer or an integer array"),
    ({"estimator": "newton"}, ValueError, "estimator must be one of 'hutchinson', 'gnb', got 'newton'"),
    ({"probe": "gauss"}, ValueError, "probe must be one of 'rademacher', 'normal', got 'gauss'"),
    ({"seed": -1}, TypeError, "seed must be a non-negative int or a JAX PRNG key, got -1"),
    ({"seed": 1.5}, TypeError, "seed must be a non-negative int or a JAX PRNG key, got 1.5"),
    ({"fresh_hessian": 1}, TypeError, "fresh_hessian must be a Python bool, got 1"),
    ({"bias_correction": None}, TypeError, "bias_correction must be a Python bool, got None"),
    ({"nu_dtype": jnp.int32}, ValueError, "nu_dtype must be None or a real floating dtype"),
])
def test_validation(fn, kwargs, exc, message):
  name = fn.__name__
  with pytest.raises(exc, match=f"adamx.{name}: " + message.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[")):
    fn(**kwargs)


def test_sophia_validation_of_its_own_arguments():
  with pytest.raises(ValueError, match=r"adamx.sophia: weight_decay must be a finite number >= 0, got -1.0"):
    adamx.sophia(weight_decay=-1.0)
  with pytest.raises(TypeError, match=r"adamx.sophia: learning_rate must be"):
    adamx.sophia(learning_rate="fast")


def test_traced_hyperparameters_are_accepted():
  """Arrays and tracers pass validation (jit over gamma, an int32 update_interval array)."""
  params = {"w": jnp.ones(3)}
  g = {"w": jnp.ones(3)}

  h = {"w": jnp.array([0.5, 4.0, 40.0])}

  @jax.jit
  def step(gamma):
    tx = adamx.sophia(1e-2, gamma=gamma, update_interval=jnp.int32(4), fresh_hessian=True)
    return tx.update(g, tx.init(params), params, hessian_estimate=h)[0]

  tx = adamx.sophia(1e-2, gamma=0.5, update_interval=4, fresh_hessian=True)
  chex.assert_trees_all_close(step(jnp.float32(0.5)), tx.update(g, tx.init(params), params, hessian_estimate=h)[0],
                              rtol=1e-6)


def test_docstring_examples_run():
  import doctest

  result = doctest.testmod(_sophia, optionflags=doctest.ELLIPSIS)
  assert result.attempted >= 10 and result.failed == 0, result

