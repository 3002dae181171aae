"""Schedule-Free AdamW against its float64 paper reference (``tests/reference/schedule_free.py``) and optax.

(a) The reference itself, independently of adamx: with ``convention="optax"`` it gives the numbers of
    ``optax.contrib.schedule_free_adamw`` (and of ``optax.contrib.schedule_free`` with a decay mask) in float64.
(b) adamx against the reference in float64 (x64), both conventions, seeded random hyperparameters (warmup, decay,
    mask, schedule, ``weight_lr_power``), on ``tests.trees.mixed_params`` (a complex leaf included): the params
    ``y``, the state's ``z``, ``nu``, ``weight_sum``, ``max_lr`` and the evaluation params ``x`` of
    :func:`adamx.schedule_free_eval_params`, every step. 50 steps by default, 512 marked slow.
(c) The same in float32 / complex64 against the float64 reference.
(d) adamx against optax in float32 every step (the same quantities), 50 steps by default and 500 marked slow, and
    bfloat16 leaves one step at a time from optax's own state.
(e) ``scale_by_schedule_free_adamw`` chained with a constant rate, the ``schedule_free`` wrapper (vs the optimizer and
    vs optax), hand-computed first steps, convergence of ``x``, validation, and checks that each comparison can fail.

Errors are normwise relative per leaf, ``max|a - b| / max(max|b|, 1)`` (``tests.trees.rel_err`` with scale 1, as in
``tests/test_parity.py``: params and gradients are unit normal, so ``y``, ``z``, ``x`` and ``nu`` are O(1));
``weight_sum`` and ``max_lr`` (of order ``lr^p``) are compared relatively, ``|a - b| / |b|``.

Tolerances:

* float64 (``F64_RTOL = 1e-10``): both sides evaluate the same formulas in a different order (adamx forms
  ``y_{t+1} - y_t`` without ``x``, the reference keeps ``x``), a few roundings ``u = 1.1e-16`` of O(1) values per step;
  the weights' ratios are not amplified and the gradients do not depend on the params, so over 512 steps the errors
  add up to at most ``~512 * 10 u = 6e-13``; 1e-10 leaves a factor 100 while the smallest deliberate change (b1 off
  by 1e-6 relative, ``test_a_wrong_reference_is_caught``) shows at ~1e-8. Measured over 512 steps: adamx <= 5e-15,
  the reference against optax <= 3e-14.
* float32 against the reference (``F32_RTOL = 2e-6`` over 50 steps): each step rounds ``y``, ``z`` and the update a
  few times (``2^-24 = 6e-8`` each) and these add up like a random walk; ``x`` is recovered from ``y`` and ``z``
  with a factor ``(1 - b1) / b1 <= 1`` for ``b1 >= 0.5``. Measured: <= 7e-7.
* float32 against optax (``OPTAX_RTOL = 2e-5``): optax's bias correction ``1 - b2**t`` is computed from ``b2``
  rounded to float32, off by up to ~2e-5 relative (``adamx.adam``), so each of its steps is off by ~1e-5 relative,
  which the random gradients add up like a random walk in ``z`` (measured over 500 steps: up to 6.5e-6 on ``y``,
  8.5e-6 on ``x``; on one configuration optax is 3e-6 from a float64 run of itself, adamx 7e-7). ``nu`` does not
  see the bias correction (``MOMENT_RTOL = 2e-6`` as in ``tests/test_parity.py``; measured 5e-7); the scalars are
  the same float32 operations (``SCALAR_RTOL = 2e-6``; measured 0).
* bfloat16, one step from optax's state: optax computes in bfloat16 (and rounds the new ``y`` once more), adamx in
  float32 and rounds once: ``y``, ``z`` and ``nu`` within 4 bf16 ulps of O(1) values (``2^-6``; measured up to
  ``1.1 * 2^-7`` on ``y``: optax rounds ``x``, the new ``y`` and the update ``y_{t+1} - y_t`` in bfloat16).
"""

from __future__ import annotations

import doctest
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from tests.reference import schedule_free as ref
from tests.trees import assert_close, mixed_params, random_like, rel_err

N_SHORT = 50
N_LONG = 512
N_OPTAX_LONG = 500
F64_RTOL = 1e-10
F32_RTOL = 2e-6
OPTAX_RTOL = 2e-5
MOMENT_RTOL = 2e-6
SCALAR_RTOL = 2e-6
QUANTITIES = ("y", "z", "nu", "x")


# ---------------------------------------------------------------------------------------------------------------
# Runs and comparisons
# ---------------------------------------------------------------------------------------------------------------


def _decay_matrices(params):
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _schedule(count):
  """A decaying rate ``0.03 / (1 + count / 50)``: the same float64 numbers in the reference and under x64."""
  return 0.03 / (1.0 + count / 50.0)


def _hyper(seed: int, convention: str, **overrides) -> dict:
  """Seeded hyperparameters covering every option: warmup (none, 0, short, long), weight_lr_power, mask, schedule."""
  rng = np.random.default_rng(seed)
  kw = dict(learning_rate=float(math.exp(rng.uniform(math.log(1e-3), math.log(5e-2)))),
            b1=float(rng.uniform(0.5, 0.98)), b2=float(rng.uniform(0.9, 0.9999)),
            eps=float(math.exp(rng.uniform(math.log(1e-10), math.log(1e-6)))),
            weight_decay=float(rng.uniform(0.0, 0.1)), warmup_steps=(None, 0, 7, 30)[seed % 4],
            weight_lr_power=(2.0, 1.0, 3.0, 0.0)[seed // 4 % 4], mask=_decay_matrices if seed % 3 == 1 else None,
            convention=convention)
  if seed % 5 == 2:
    kw["learning_rate"] = _schedule
  return {**kw, **overrides}


def _grads(seed: int, params, steps: int):
  rng = np.random.default_rng(seed)
  return [random_like(rng, params) for _ in range(steps)]


def _observe(params, state) -> dict:
  """What is compared after each step: the params y, z, nu, the evaluation params x and the two scalars."""
  return {"y": params, "z": state.z, "nu": state.nu, "x": adamx.schedule_free_eval_params(state, params),
          "weight_sum": state.weight_sum, "max_lr": state.max_lr}


def _run_adamx(tx, params, grads):
  @jax.jit
  def step(g, s, p):
    u, s = tx.update(g, s, p)
    p = adamx.apply_updates(p, u)
    return p, s, _observe(p, s)

  p, s = params, tx.init(params)
  for g in grads:
    p, s, observed = step(g, s, p)
    yield observed


def _run_reference(opt: ref.ScheduleFreeAdamW, params, grads):
  state = opt.init(params)
  for t, g in enumerate(grads, start=1):
    state = opt.update(g, state, t)
    yield {k: state[k] for k in (*QUANTITIES, "weight_sum", "max_lr")}


def _scalar_err(a, b) -> float:
  a, b = float(a), float(b)
  return abs(a - b) / abs(b) if b else abs(a)


def _max_errors(run_a, run_b) -> dict:
  """The largest error of each quantity over two trajectories run side by side."""
  errs = dict.fromkeys((*QUANTITIES, "weight_sum", "max_lr"), 0.0)
  n = 0
  for a, b in zip(run_a, run_b, strict=True):
    for k in QUANTITIES:
      errs[k] = max(errs[k], rel_err(a[k], b[k], 1.0))
    for k in ("weight_sum", "max_lr"):
      errs[k] = max(errs[k], _scalar_err(a[k], b[k]))
    n += 1
  assert n > 0
  return errs


def _assert_within(errs: dict, tol: dict, what: str) -> None:
  bad = {k: f"{v:.2e} > {tol[k]:.0e}" for k, v in errs.items() if not v <= tol[k]}
  assert not bad, f"{what}: {bad}"


# ---------------------------------------------------------------------------------------------------------------
# (a) the reference against optax, float64
# ---------------------------------------------------------------------------------------------------------------


def _optax_sf_adamw(optax, kw):
  """optax's Schedule-Free AdamW with adamx's arguments (a mask or a schedule through ``optax.contrib.schedule_free``,
  exactly as ``optax.contrib.schedule_free_adamw`` builds it)."""
  lr = kw["learning_rate"]
  if kw["warmup_steps"]:  # adamx's warmup: the rate times min(1, count / W), as optax's warmup_constant_schedule
    peak, warmup = lr, kw["warmup_steps"]
    lr = lambda c: (jnp.minimum(jnp.asarray(c, float) / warmup, 1.0)  # noqa: E731
                    * (peak(c) if callable(peak) else peak))
  base = optax.chain(optax.scale_by_rms(decay=kw["b2"], eps=kw["eps"], eps_in_sqrt=False, bias_correction=True),
                     optax.add_decayed_weights(kw["weight_decay"], kw["mask"]), optax.scale_by_learning_rate(lr))
  return optax.contrib.schedule_free(base, learning_rate=lr, b1=kw["b1"], weight_lr_power=kw["weight_lr_power"])


def _observe_optax(params, state) -> dict:
  return {"y": params, "z": state.z, "nu": jax.tree.map(jnp.real, state.base_optimizer_state[0].nu),
          "x": optax.contrib.schedule_free_eval_params(state, params), "weight_sum": state.weight_sum,
          "max_lr": state.max_lr}


def _run_optax(otx, params, grads):
  @jax.jit
  def step(g, s, p):
    u, s = otx.update(g, s, p)
    p = optax.apply_updates(p, u)
    return p, s, _observe_optax(p, s)

  p, s = params, otx.init(params)
  for g in grads:
    p, s, observed = step(g, s, p)
    yield observed


def _reference_vs_optax(seed: int, steps: int) -> None:
  kw = _hyper(seed, "optax")
  params = mixed_params(np.random.default_rng(seed), bf16=False, real_dtype=np.float64)
  grads = _grads(seed, params, steps)
  errs = _max_errors(_run_reference(ref.ScheduleFreeAdamW(**kw), params, grads),
                     _run_optax(_optax_sf_adamw(optax, kw), params, grads))
  _assert_within(errs, dict.fromkeys(errs, F64_RTOL), f"reference vs optax {kw}")


@pytest.mark.slow
def test_reference_optax_convention_is_optax(x64):
  """The reference's ``convention="optax"`` against optax in float64 (float64 and complex128 leaves): seed 7 has a
  30-step warmup of a decaying schedule, a decay mask and ``weight_lr_power=1``."""
  _reference_vs_optax(7, N_SHORT)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_reference_optax_convention_is_optax_long(seed, x64):
  _reference_vs_optax(seed, N_LONG)


# ---------------------------------------------------------------------------------------------------------------
# (b), (c) adamx against the reference
# ---------------------------------------------------------------------------------------------------------------


def _adamx(kw: dict):
  return adamx.schedule_free_adamw(**kw)


def _compare_with_reference(seed: int, convention: str, steps: int, real_dtype) -> dict:
  kw = _hyper(seed, convention)
  params = mixed_params(np.random.default_rng(seed), bf16=False, real_dtype=real_dtype)
  grads = _grads(seed, params, steps)
  return _max_errors(_run_adamx(_adamx(kw), params, grads), _run_reference(ref.ScheduleFreeAdamW(**kw), params, grads))


@pytest.mark.parametrize("convention", ref.CONVENTIONS)
def test_float64_against_reference(convention, x64):
  errs = _compare_with_reference(7, convention, N_SHORT, np.float64)
  _assert_within(errs, dict.fromkeys(errs, F64_RTOL), f"{convention} seed 7")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 18))
@pytest.mark.parametrize("convention", ref.CONVENTIONS)
def test_float64_against_reference_long(convention, seed, x64):
  errs = _compare_with_reference(seed, convention, N_LONG, np.float64)
  _assert_within(errs, dict.fromkeys(errs, F64_RTOL), f"{convention} seed {seed}")


def test_float32_against_reference():
  errs = _compare_with_reference(7, "paper", N_SHORT, np.float32)
  _assert_within(errs, dict.fromkeys(errs, F32_RTOL), "paper seed 7")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("convention", ref.CONVENTIONS)
def test_float32_against_reference_more(convention, seed):
  errs = _compare_with_reference(seed, convention, N_SHORT, np.float32)
  _assert_within(errs, dict.fromkeys(errs, F32_RTOL), f"{convention} seed {seed}")


def test_a_wrong_reference_is_caught(x64):
  """The float64 comparison fails, by orders of magnitude, against a reference that is slightly wrong: b1 off by
  1e-6 relative, the other convention, p = 2.001, a warmup one step longer, the decay 1e-3 larger."""
  kw = _hyper(1, "paper", warmup_steps=7, weight_lr_power=2.0, weight_decay=0.05)
  params = mixed_params(np.random.default_rng(1), bf16=False, real_dtype=np.float64)
  grads = _grads(1, params, N_SHORT)
  ours = list(_run_adamx(_adamx(kw), params, grads))
  good = _max_errors(iter(ours), _run_reference(ref.ScheduleFreeAdamW(**kw), params, grads))
  assert max(good.values()) <= F64_RTOL, good
  for change, value in {"b1": kw["b1"] * (1 + 1e-6), "convention": "optax", "weight_lr_power": 2.001,
                        "warmup_steps": 8, "weight_decay": 0.05 * (1 + 1e-3)}.items():
    bad = _max_errors(iter(ours), _run_reference(ref.ScheduleFreeAdamW(**{**kw, change: value}), params, grads))
    assert max(bad.values()) > 100 * F64_RTOL, (change, bad)


# ---------------------------------------------------------------------------------------------------------------
# (d) adamx against optax, float32 and bfloat16
# ---------------------------------------------------------------------------------------------------------------

OPTAX_TOL = {"y": OPTAX_RTOL, "z": OPTAX_RTOL, "x": OPTAX_RTOL, "nu": MOMENT_RTOL, "weight_sum": SCALAR_RTOL,
             "max_lr": SCALAR_RTOL}


def _compare_with_optax(seed: int, steps: int) -> dict:
  # float32 and complex64 leaves: with a bfloat16 leaf optax keeps b1, weight_sum and max_lr in bfloat16.
  params = mixed_params(np.random.default_rng(seed), bf16=False)
  kw = _hyper(seed, "optax")
  grads = _grads(seed, params, steps)
  return _max_errors(_run_adamx(_adamx(kw), params, grads), _run_optax(_optax_sf_adamw(optax, kw), params, grads))


def test_float32_against_optax():
  """Against the registry's counterpart, ``optax.contrib.schedule_free_adamw`` itself, with sampled hyperparameters
  and a warmup."""
  spec = adamx.registry.get("schedule_free_adamw")
  params = mixed_params(np.random.default_rng(8), bf16=False)
  kw = {**spec.sample(np.random.default_rng(8)), "warmup_steps": 10}
  grads = _grads(8, params, N_SHORT)
  errs = _max_errors(_run_adamx(_adamx(kw), params, grads),
                     _run_optax(spec.optax(optax, spec.full_kwargs(**kw)), params, grads))
  _assert_within(errs, OPTAX_TOL, f"{kw}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20, 26))
def test_float32_against_optax_long(seed):
  _assert_within(_compare_with_optax(seed, N_OPTAX_LONG), OPTAX_TOL, f"seed {seed}")


def test_bfloat16_one_step_from_optax_state():
  """On bfloat16 params and state, each adamx step taken from optax's own state equals optax's within bf16 rounding."""
  rng = np.random.default_rng(11)
  p = {"w": jnp.asarray(rng.normal(size=(64,)), jnp.bfloat16), "m": jnp.asarray(rng.normal(size=(4, 4)), jnp.bfloat16)}
  kw = dict(learning_rate=2e-2, warmup_steps=10, b1=0.9, b2=0.99, weight_decay=0.05)
  tx, otx = adamx.schedule_free_adamw(**kw), optax.contrib.schedule_free_adamw(**kw)
  ostate = otx.init(p)
  step, ostep = jax.jit(tx.update), jax.jit(otx.update)
  for t in range(1, 41):
    g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.bfloat16), p)
    state = adamx.ScheduleFreeAdamWState(
        count=ostate.step_count - 1, b1=jnp.float32(0.9), weight_sum=ostate.weight_sum.astype(jnp.float32),
        max_lr=ostate.max_lr.astype(jnp.float32), z=ostate.z, nu=ostate.base_optimizer_state[0].nu)
    ours, new = step(g, state, p)
    theirs, ostate = ostep(g, ostate, p)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves((ours, new.z, new.nu)))
    assert_close(adamx.apply_updates(p, ours), optax.apply_updates(p, theirs), 2.0**-6, f"step {t} y ", scale=1.0)
    assert_close(new.z, ostate.z, 2.0**-6, f"step {t} z ", scale=1.0)
    assert_close(new.nu, ostate.base_optimizer_state[0].nu, 2.0**-6, f"step {t} nu ")
    p = optax.apply_updates(p, theirs)
  assert int(new.count) == 40


# ---------------------------------------------------------------------------------------------------------------
# (e) composition, first steps, convergence
# ---------------------------------------------------------------------------------------------------------------


def _small_params(seed: int):
  """Two leaves (a float32 matrix, a complex64 vector): enough for the algebraic equivalences, one cheap compile."""
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
          "c": jnp.asarray(rng.normal(size=(2,)) + 1j * rng.normal(size=(2,)), jnp.complex64)}


def _side_by_side(tx_a, tx_b, params, grads, eval_a, eval_b, apply_b=adamx.apply_updates):
  """Both optimizers on the same gradients in one jitted scan (one compilation): per step, ``(y, x)`` of each."""

  def body(carry, g):
    (pa, sa), (pb, sb) = carry
    ua, sa = tx_a.update(g, sa, pa)
    ub, sb = tx_b.update(g, sb, pb)
    pa, pb = adamx.apply_updates(pa, ua), apply_b(pb, ub)
    return ((pa, sa), (pb, sb)), ((pa, eval_a(sa, pa)), (pb, eval_b(sb, pb)))

  stacked = jax.tree.map(lambda *x: jnp.stack(x), *grads)
  init = ((params, tx_a.init(params)), (params, tx_b.init(params)))
  _, runs = jax.jit(lambda: jax.lax.scan(body, init, stacked))()
  runs = jax.tree.map(lambda x: np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64), runs)
  return tuple([jax.tree.map(lambda x: x[t], run) for t in range(len(grads))] for run in runs)


def _assert_runs_close(run_a, run_b, rtol, what=""):
  for t, ((ya, xa), (yb, xb)) in enumerate(zip(run_a, run_b), start=1):
    assert_close(ya, yb, rtol, f"{what}step {t} y ", scale=1.0)
    assert_close(xa, xb, rtol, f"{what}step {t} x ", scale=1.0)


@pytest.mark.parametrize("convention", ref.CONVENTIONS)
def test_scale_by_with_a_constant_rate_is_the_optimizer(convention):
  """``chain(scale_by_schedule_free_adamw, scale_by_learning_rate(lr))`` == ``schedule_free_adamw(lr)`` for a
  constant rate (float32 rounding over 30 steps), evaluation params included."""
  params = _small_params(3)
  kw = dict(b1=0.8, b2=0.995, eps=1e-7, weight_decay=0.05, weight_lr_power=2.0, warmup_steps=10,
            mask=_decay_matrices, convention=convention)
  lr = 3e-2
  chained = adamx.chain(adamx.scale_by_schedule_free_adamw(**kw), adamx.scale_by_learning_rate(lr))
  direct = adamx.schedule_free_adamw(lr, **kw)
  a, b = _side_by_side(chained, direct, params, _grads(3, params, 30),
                       functools.partial(adamx.schedule_free_eval_params, learning_rate=lr),
                       adamx.schedule_free_eval_params)
  _assert_runs_close(a, b, 1e-6)
  assert rel_err(b[-1][0], params) > 1e-2


def test_scale_by_with_a_schedule_is_not_schedule_free():
  """The documented limit: after the constant phase, a rate that changes rescales the whole past offset."""
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(8,)), jnp.float32)}
  schedule = adamx.piecewise_constant_schedule(3e-2, {20: 0.1})
  chained = adamx.chain(adamx.scale_by_schedule_free_adamw(), adamx.scale_by_learning_rate(schedule))
  direct = adamx.schedule_free_adamw(schedule)
  a, b = _side_by_side(chained, direct, params, _grads(0, params, 21),
                       lambda s, p: p, lambda s, p: p)  # the chain's eval params need a constant rate
  _assert_runs_close(a[:20], b[:20], 1e-6)  # the same while the rate is constant
  assert rel_err(a[-1][0], b[-1][0]) > 1e-3


def test_wrapper_around_adam_without_momentum_is_the_optimizer():
  """``schedule_free(chain(scale_by_adam(b1=0), decay, scale_by_learning_rate(warmup)), warmup)`` is
  ``schedule_free_adamw(lr, warmup_steps)`` (Adam with ``b1=0`` is RMSProp with bias correction)."""
  params = _small_params(4)
  lr, warmup, wd = 2e-2, 8, 0.05
  schedule = adamx.warmup_constant_schedule(0.0, lr, warmup)
  base = adamx.chain(adamx.scale_by_adam(b1=0.0, b2=0.99), adamx.add_decoupled_weight_decay(wd),
                     adamx.scale_by_learning_rate(schedule))
  wrapped = adamx.schedule_free(base, schedule, b1=0.85)
  direct = adamx.schedule_free_adamw(lr, warmup, b1=0.85, b2=0.99, weight_decay=wd)
  a, b = _side_by_side(wrapped, direct, params, _grads(4, params, 30), adamx.schedule_free_eval_params,
                       adamx.schedule_free_eval_params)
  _assert_runs_close(a, b, 1e-6)


def test_wrapper_matches_optax_schedule_free():
  """``adamx.schedule_free`` around SGD with a schedule equals ``optax.contrib.schedule_free`` around ``optax.sgd``:
  the averaging weights read the schedule one step ahead of the base, as optax's do."""
  params = _small_params(6)
  schedule = adamx.warmup_constant_schedule(0.0, 0.1, 5)
  oschedule = optax.warmup_constant_schedule(0.0, 0.1, 5)
  tx = adamx.schedule_free(adamx.scale_by_learning_rate(schedule), schedule, b1=0.9, weight_lr_power=1.0)
  otx = optax.contrib.schedule_free(optax.sgd(oschedule), oschedule, b1=0.9, weight_lr_power=1.0)
  a, b = _side_by_side(tx, otx, params, _grads(6, params, 30), adamx.schedule_free_eval_params,
                       optax.contrib.schedule_free_eval_params, apply_b=optax.apply_updates)
  _assert_runs_close(a, b, 1e-6)


def test_first_steps_by_hand(x64):
  """Step 1 (c_2 = 1, so y_2 = x_2 = z_2): optax's is an RMSProp step of size lr; the paper's has eps scaled by
  1 / sqrt(1 - b2) and the warmup factor 1 / W; optax's first step with a warmup does not move at all."""
  g = jnp.array([0.5, -2.0, 1e-9])
  y = jnp.array([1.0, 2.0, 3.0])
  lr, b2, eps = 0.1, 0.99, 1e-8

  def first(**kw):
    tx = adamx.schedule_free_adamw(lr, b2=b2, eps=eps, **kw)
    u, s = tx.update(g, tx.init(y), y)
    return np.asarray(u), s

  u, s = first()
  np.testing.assert_allclose(u, -lr * g / (np.abs(g) + eps), rtol=1e-14)
  np.testing.assert_allclose(adamx.schedule_free_eval_params(s, y + u), y + u, rtol=1e-14)
  u, _ = first(convention="paper", warmup_steps=4)
  r = math.sqrt(1 - b2)
  np.testing.assert_allclose(u, -lr / 4 * r * g / (r * np.abs(g) + eps), rtol=1e-14)
  u, s = first(warmup_steps=4)
  np.testing.assert_array_equal(u, 0.0)
  assert float(s.max_lr) == pytest.approx(lr / 4) and float(s.weight_sum) == pytest.approx((lr / 4) ** 2)
  u, _ = first(warmup_steps=0)  # no warmup (optax: never trains)
  np.testing.assert_allclose(u, -lr * g / (np.abs(g) + eps), rtol=1e-14)


def test_b1_one_evaluates_where_it_trains():
  """b1 = 1 is primal averaging: the gradient is taken at the average, so y = x."""
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(5,)), jnp.float32)}
  tx = adamx.schedule_free_adamw(1e-2, b1=1.0)
  p, s = params, tx.init(params)
  for g in _grads(0, params, 10):
    u, s = tx.update(g, s, p)
    p = adamx.apply_updates(p, u)
    np.testing.assert_array_equal(adamx.schedule_free_eval_params(s, p)["w"], p["w"])


def test_evaluation_params_converge_on_a_noisy_parabola():
  """With noisy gradients (unit noise) at a constant rate, the average x lands much closer to the optimum than the
  base sequence z and than AdamW's last iterate at the same rate (measured 0.08 vs 0.60 and 0.28)."""
  target = jnp.asarray(np.random.default_rng(1).normal(size=(16,)), jnp.float32)

  def run(tx):
    def body(carry, key):
      p, s = carry
      u, s = tx.update(2 * (p - target) + jax.random.normal(key, p.shape), s, p)
      return (adamx.apply_updates(p, u), s), None

    p0 = jnp.zeros(16)
    return jax.jit(lambda: jax.lax.scan(body, (p0, tx.init(p0)), jax.random.split(jax.random.key(0), 1000))[0])()

  err = lambda q: float(jnp.max(jnp.abs(q - target)))  # noqa: E731
  y, s = run(adamx.schedule_free_adamw(5e-2, warmup_steps=50))
  x_err = err(adamx.schedule_free_eval_params(s, y))
  adamw_err = err(run(adamx.adamw(5e-2, weight_decay=0.0))[0])
  assert x_err < 0.15 and x_err < adamw_err / 2 and x_err < err(s.z) / 4, (x_err, adamw_err, err(s.z))


def test_constant_rate_converges_where_a_decaying_schedule_lags():
  """Noise-free parabola from distance 11: with a constant rate and warmup both y and x reach the optimum; with the
  warmup-cosine schedule of ``tests/test_invariants.py`` the uniform average keeps ~1e-3 of the early iterates."""
  target = {"a": jnp.array([1.0, -1.0, 1.0]), "b": jnp.full((2, 2), 0.5)}
  start = {"a": jnp.array([-1.0, 10.0, 1.0]), "b": jnp.zeros((2, 2))}
  loss = lambda p: sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)  # noqa: E731

  def run(tx):
    def body(c, _):
      p, s = c
      u, s = tx.update(jax.grad(loss)(p), s, p)
      return (adamx.apply_updates(p, u), s), None

    (p, s), _ = jax.jit(lambda: jax.lax.scan(body, (start, tx.init(start)), None, length=2000))()
    err = lambda q: max(float(jnp.max(jnp.abs(q[k] - target[k]))) for k in q)  # noqa: E731
    return err(p), err(adamx.schedule_free_eval_params(s, p))

  assert max(run(adamx.schedule_free_adamw(0.3, warmup_steps=100))) < 1e-4
  cosine = adamx.warmup_cosine_schedule(0.0, 0.3, warmup_steps=100, decay_steps=2000)
  assert min(run(adamx.schedule_free_adamw(cosine))) > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# State, dtypes, validation
# ---------------------------------------------------------------------------------------------------------------


def test_state_dtypes_and_copies():
  params = {"w": jnp.ones((3, 2)), "h": jnp.ones(4, jnp.bfloat16), "c": jnp.ones(2, jnp.complex64)}
  s = adamx.schedule_free_adamw().init(params)
  assert s.count.dtype == jnp.int32 and s.weight_sum.dtype == s.max_lr.dtype == s.b1.dtype == jnp.float32
  assert {k: v.dtype for k, v in s.z.items()} == {"w": jnp.float32, "h": jnp.bfloat16, "c": jnp.complex64}
  assert {k: v.dtype for k, v in s.nu.items()} == {"w": jnp.float32, "h": jnp.bfloat16, "c": jnp.float32}
  assert s.z["w"] is not params["w"]  # a distinct buffer: params and state can both be donated
  s = adamx.schedule_free_adamw(state_dtype=jnp.float32, nu_dtype=jnp.bfloat16).init(params)
  assert {k: v.dtype for k, v in s.z.items()} == {"w": jnp.float32, "h": jnp.float32, "c": jnp.complex64}
  assert {k: v.dtype for k, v in s.nu.items()} == {"w": jnp.bfloat16, "h": jnp.bfloat16, "c": jnp.bfloat16}
  with jax.enable_x64(True):
    assert adamx.schedule_free_adamw().init({"w": jnp.ones(2, jnp.float64)}).max_lr.dtype == jnp.float64


def test_injected_b1_is_recorded_for_evaluation():
  """Under inject_hyperparams b1 may change; the state keeps the one that produced y (optax keeps init's)."""
  params = {"w": jnp.ones(3)}
  tx = optax.inject_hyperparams(adamx.schedule_free_adamw)(learning_rate=1e-2, b1=0.9)
  s = tx.init(params)
  s.hyperparams["b1"] = jnp.asarray(0.5)
  _, s = tx.update({"w": jnp.ones(3)}, s, params)
  assert float(s.inner_state.b1) == 0.5


def test_eval_params_finds_the_state_in_a_chain_and_checks_its_arguments():
  params = {"w": jnp.ones(2)}
  tx = adamx.chain(adamx.clip_by_global_norm(1.0), adamx.schedule_free_adamw(1e-2))
  s = tx.init(params)
  np.testing.assert_array_equal(adamx.schedule_free_eval_params(s, params)["w"], params["w"])
  with pytest.raises(ValueError, match="exactly one Schedule-Free state"):
    adamx.schedule_free_eval_params(adamx.adam().init(params), params)
  with pytest.raises(ValueError, match="learning_rate is only for"):
    adamx.schedule_free_eval_params(s, params, learning_rate=1e-2)
  with pytest.raises(ValueError, match="does not know the learning rate"):
    adamx.schedule_free_eval_params(adamx.scale_by_schedule_free_adamw().init(params), params)
  with pytest.raises(ValueError, match="tree structure of params"):
    adamx.schedule_free_eval_params(s, {"v": jnp.ones(2)})


@pytest.mark.parametrize("kwargs,match", [
    (dict(b1=0.0), "b1 must be in \\(0, 1\\], got 0.0"),
    (dict(b1=1.5), "b1 must be in \\(0, 1\\], got 1.5"),
    (dict(b2=1.0), "b2 must be in \\[0, 1\\), got 1.0"),
    (dict(eps=-1.0), "eps must be a finite number >= 0"),
    (dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0"),
    (dict(weight_lr_power=-2.0), "weight_lr_power must be a finite number >= 0"),
    (dict(warmup_steps=-1), "warmup_steps must be a non-negative integer"),
    (dict(warmup_steps=2.5), "warmup_steps must be a non-negative integer"),
    (dict(convention="torch"), "convention must be one of 'optax', 'paper'"),
    (dict(state_dtype=jnp.int32), "state_dtype must be None or a real floating dtype"),
    (dict(nu_dtype="complex64"), "nu_dtype must be None or a real floating dtype"),
    (dict(learning_rate=-1.0), "learning_rate must be a finite number >= 0"),
])
def test_validation(kwargs, match):
  with pytest.raises(ValueError, match="adamx.schedule_free_adamw: " + match):
    adamx.schedule_free_adamw(**kwargs)
  if "learning_rate" not in kwargs:
    with pytest.raises(ValueError, match="adamx.scale_by_schedule_free_adamw: " + match):
      adamx.scale_by_schedule_free_adamw(**kwargs)


def test_validation_of_the_wrapper_and_update_arguments():
  with pytest.raises(TypeError, match="adamx.schedule_free: base_transform must be a gradient transformation"):
    adamx.schedule_free(lambda g: g, 1e-2)
  with pytest.raises(ValueError, match="adamx.schedule_free: b1 must be in \\(0, 1\\]"):
    adamx.schedule_free(adamx.scale_by_learning_rate(1e-2), 1e-2, b1=0.0)
  with pytest.raises(TypeError, match="adamx.schedule_free_adamw: parameter \\['n'\\] has dtype int32"):
    adamx.schedule_free_adamw().init({"n": jnp.ones(2, jnp.int32)})
  tx = adamx.schedule_free_adamw()
  s = tx.init({"w": jnp.ones(2)})
  with pytest.raises(ValueError, match="adamx.schedule_free_adamw: params are required"):
    tx.update({"w": jnp.ones(2)}, s)
  with pytest.raises(ValueError, match="adamx.schedule_free_adamw: the tree structure of updates"):
    tx.update({"v": jnp.ones(2)}, s, {"w": jnp.ones(2)})
  # traced and array hyperparameters are not checked (jit, vmap, inject_hyperparams)
  jax.jit(lambda b1: adamx.schedule_free_adamw(b1=b1).update({"w": jnp.ones(2)}, s, {"w": jnp.ones(2)}))(0.9)



def test_docstring_examples_run():
  from adamx.optimizers import _schedule_free

  failures, tried = doctest.testmod(_schedule_free, optionflags=doctest.ELLIPSIS)
  assert tried >= 10 and failures == 0
