"""AdEMAMix against the float64 paper reference (``tests/reference/ademamix.py``) and ``optax.contrib.ademamix``.

(a) The reference against optax in float64 (x64, a complex128 leaf included), warmup schedules included: checks
    the reference independently of adamx.
(b) adamx against the reference in float64 on ``tests.trees.mixed_params``: params, updates and every state field
    (``mu``, ``nu``, ``mu_slow``) every step, for numbers, masks, ``eps_root``, a learning-rate schedule, the paper's
    two warmup schedules in adamx's indexing (``lagged_schedulers``) and in the paper's own (``count + 1``).
(c) The same in float32 / complex64, within tolerances derived from float32 rounding.
(d) adamx against ``optax.contrib.ademamix`` with every argument explicit (its ``scale_by_ademamix`` defaults to
    ``alpha=6.0``, its ``ademamix`` to 5.0), float32 and complex64 leaves; bfloat16 one step at a time.
(e) The schedules against the paper's formulas, defaults, validation, dtypes, a first step by hand, AdEMAMix with
    ``alpha=0`` is AdamW, and deliberately wrong references are caught.

Errors are the trajectory-normwise measure of ``tests/test_reference.py`` (per leaf, ``max|x_t - ref_t| /
max_{s<=t} max|ref_s|``) for (a)-(c); (d) uses ``tests/test_parity.py``'s per-step ``max|a - b| / max(max|b|, 1)``.

Tolerances:

* float64 (a), (b): ``1e-10``, as ``tests/test_reference_classic.py``: the two sides evaluate the same formula in a
  different order (~10 roundings of 1.1e-16 per step), accumulated through EMAs of at most ``min(n, 1/(1-b))`` steps
  and over ``n <= 512`` parameter updates, worst case ~1e-12. adamx's schedules compute ``beta_3(t)`` through
  ``1 / log`` interpolation, the reference through the paper's closed form (different roundings, same function).
* float32 (c), per field, with ``u = 2**-24`` and the EMA bound ``_f32_tol(b, n) = u (8 + min(n, 1 / (1 - b)))`` of
  ``tests/test_reference.py`` (``b`` rounded to float32 once, a few roundings per step):

  - ``mu``: ``_f32_tol(b1, n)``; ``nu``: ``_f32_tol(b2, n)``;
  - ``mu_slow`` with a Python-number ``b3``: ``_f32_tol(b3, n)`` (``1 - b3`` is formed in double precision);
    with a scheduled ``b3`` the float32 value is off by ``delta <= 2`` ulps (``2 u``; ``jnp.exp`` and the final
    rounding), so each increment's weight ``1 - b3`` is off by ``2 u / (1 - b3)`` relative and each decay factor by
    ``2 u``, over at most ``1 / (1 - b3)`` steps of memory: ``u (8 + 4 / (1 - b3))``;
  - updates ``(mhat1 + alpha m2) / (sqrt(nuhat) + eps)``: the three relative errors added;
  - params: ``8 u sqrt(n)`` (one rounding per step, a random walk, as ``tests/test_reference.py``) plus the update
    errors summed, ``4 lr n tol_updates`` (the unit-normal params have scale >= 1, and a step is at most a few lr:
    measured max|update| / lr <= 2.5 on the 512-step float32 runs), a bound that holds even when the update errors
    are systematic, as the rounding of ``b3`` makes them. It is loose (measured <= 23 u against bounds of ~1000 u:
    the errors of random-signed steps add up like a random walk); the float64 comparisons are the strict ones.
* optax, float32 (d): params 1e-6 and state 2e-6, ``tests/test_parity.py``'s bounds: the same arithmetic except
  bias correction (optax's float32 ``1 - b**t``, ~2e-5 relative, on ``mhat1`` and ``nuhat`` only; ``m2`` is not
  corrected and computed with the same operations, ``b3`` included).
* bfloat16 (d): from the same state, adamx (float32 arithmetic, one rounding) and optax (bfloat16 arithmetic) agree
  within 4 bf16 ulps, ``2**-6``, as ``tests/test_parity.py``; and adamx's step equals the float64 reference's step
  from adamx's own state rounded to bfloat16 within 1 ulp (its arithmetic is float32).
"""

from __future__ import annotations

import dataclasses
import doctest
import functools
import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx import registry
from adamx.optimizers import _ademamix as _ademamix_module
from tests import trees
from tests.reference import ademamix as ref
from tests.reference.adam import apply as ref_apply
from tests.test_reference import U32, _bf16_ordinal, _f32_tol, _gradients, _seed
from tests.test_reference_classic import _adamx_steps, _compare, _optax_steps, _record, _state_fields

N_SHORT = 64
N_LONG = 512
F64_RTOL = 1e-10
PARAMS_RTOL = 1e-6  # tests/test_parity.py
MOMENT_RTOL = 2e-6
BF16 = jnp.bfloat16


# ---------------------------------------------------------------------------------------------------------------
# Cases: seeded hyperparameters, adamx optimizer, reference
# ---------------------------------------------------------------------------------------------------------------


def _hyper(rng: np.random.Generator) -> dict[str, float]:
  """Seeded hyperparameters in the ranges used in practice; ``b3`` up to the paper's 0.9999."""
  return {
      "learning_rate": float(10 ** rng.uniform(-4, -1.5)),
      "b1": float(rng.uniform(0.6, 0.95)),
      "b2": float(rng.uniform(0.95, 0.9995)),
      "b3": float(rng.uniform(0.99, 0.9999)),
      "alpha": float(rng.uniform(1.0, 8.0)),
      "eps": float(10 ** rng.uniform(-10, -6)),
      "eps_root": float(10 ** rng.uniform(-14, -8)),
      "weight_decay": float(10 ** rng.uniform(-4, -1)),
  }


def _decay_matrices(params: Any) -> Any:
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _lr_schedules(lr: float, n: int):
  args = dict(init_value=lr / 100, peak_value=lr, warmup_steps=n // 10, decay_steps=(3 * n) // 4, end_value=lr / 10)
  return adamx.warmup_cosine_schedule(**args), optax.warmup_cosine_decay_schedule(**args)


def _case(name: str, h: dict[str, float], n: int) -> tuple[Any, Any, dict[str, Any]]:
  """``(adamx optimizer, reference, optax kwargs)`` of case ``name`` (features joined by ``_``) for ``n`` steps.

  ``warmup``: the paper's schedulers over ``0.6 n`` steps (their end is on the trajectory), adamx's helpers in
  adamx's indexing (the reference with ``lagged_schedulers=True``); ``paper``: the same helpers shifted by one
  (``count + 1``) against the reference's Algorithm 1 exactly.
  """
  features = set(name.split("_"))
  kw = {k: h[k] for k in ("learning_rate", "b1", "b2", "b3", "alpha", "eps", "eps_root", "weight_decay")}
  ref_kw = dict(kw)
  if "root" not in features:
    kw["eps_root"] = ref_kw["eps_root"] = 0.0
  if "mask" in features:
    kw["mask"] = ref_kw["mask"] = _decay_matrices
  if "schedule" in features:
    kw["learning_rate"], _ = _lr_schedules(h["learning_rate"], n)
    ref_kw["learning_rate"] = lambda count: float(kw["learning_rate"](count))
  if features & {"warmup", "paper"}:
    warmup = int(0.6 * n)
    b3 = adamx.ademamix_b3_schedule(h["b3"], warmup, b3_start=h["b1"])
    alpha = adamx.ademamix_alpha_schedule(h["alpha"], warmup)
    if "paper" in features:
      kw["b3"], kw["alpha"] = (lambda count: b3(count + 1)), (lambda count: alpha(count + 1))
    else:
      kw["b3"], kw["alpha"] = b3, alpha
    ref_kw.update(b3_warmup=warmup, alpha_warmup=warmup, lagged_schedulers="paper" not in features)
  return adamx.ademamix(**kw), ref.AdEMAMix(**ref_kw), kw


@functools.cache
def _adamx_run(mode: str, case: str, n: int):
  """The seeded case's reference, hyperparameters, params, gradients and adamx trajectory (recorded once)."""
  rng = np.random.default_rng(_seed("ademamix", mode, case))
  h = _hyper(rng)
  tx, reference, _ = _case(case, h, n)
  real_dtype = np.float64 if mode == "f64" else np.float32
  params = trees.mixed_params(rng, bf16=False, real_dtype=real_dtype)
  grads_seq = _gradients(rng, params, n)
  fields = _state_fields(reference.init(trees.to_numpy(params)))
  return reference, h, params, grads_seq, _record(_adamx_steps(tx, params, grads_seq, fields))


def _f64_tols() -> dict[str, float]:
  return dict.fromkeys(("params", "updates", "mu", "nu", "mu_slow"), F64_RTOL)


def _f32_tols(case: str, h: dict[str, float], n: int) -> dict[str, float]:
  """The float32 bounds of the module docstring."""
  tol_mu, tol_nu = _f32_tol(h["b1"], n), _f32_tol(h["b2"], n)
  scheduled = bool(set(case.split("_")) & {"warmup", "paper"})
  tol_slow = U32 * (8 + 4 / (1 - h["b3"])) if scheduled else _f32_tol(h["b3"], n)
  tol_updates = tol_mu + tol_nu + tol_slow
  return {"mu": tol_mu, "nu": tol_nu, "mu_slow": tol_slow, "updates": tol_updates,
          "params": 8 * U32 * math.sqrt(n) + 4 * h["learning_rate"] * n * tol_updates}


def _fmt(worst: dict[str, float], unit: float | None = None) -> str:
  return ", ".join(f"{k}={v:.1e}" if unit is None else f"{k}={v / unit:.1f}u" for k, v in worst.items())


# ---------------------------------------------------------------------------------------------------------------
# (a) The reference against optax (float64)
# ---------------------------------------------------------------------------------------------------------------


def _optax_tx(kw: dict[str, Any]) -> Any:
  """``optax.contrib.ademamix`` with every argument explicit, through the registry's builder (which relabels its
  state ``m1, m2`` as ``mu, mu_slow``); schedules are passed as they are (optax calls them with the count of earlier
  updates, as adamx)."""
  spec = registry.get("ademamix")
  return spec.optax(optax, spec.full_kwargs(**kw))


@functools.cache
def _optax_run(case: str, n: int):
  rng = np.random.default_rng(_seed("ademamix", "optax64", case))
  h = _hyper(rng)
  _, reference, kw = _case(case, h, n)
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  grads_seq = _gradients(rng, params, n)
  fields = _state_fields(reference.init(trees.to_numpy(params)))
  return reference, params, grads_seq, _record(_optax_steps(_optax_tx(kw), params, grads_seq, fields))


def test_reference_matches_optax(x64):
  """The reference configured like optax (schedulers at ``t - 1``) reproduces ``optax.contrib.ademamix`` in
  float64 / complex128 (mask, eps_root, learning-rate and warmup schedules), params, updates and state, every step
  (measured ~1e-15)."""
  case = "mask_root_warmup_schedule"
  reference, params, grads_seq, run = _optax_run(case, N_SHORT)
  worst = _compare(reference, params, grads_seq, run, _f64_tols(), f"optax {case}: ")
  print(f"reference vs optax {case}: {_fmt(worst)}")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["plain", "mask_root_schedule", "warmup"])
def test_reference_matches_optax_long(case, x64):
  """As :func:`test_reference_matches_optax`, 512 steps (the warmup ends at step 307)."""
  reference, params, grads_seq, run = _optax_run(case, N_LONG)
  worst = _compare(reference, params, grads_seq, run, _f64_tols(), f"optax {case}: ")
  print(f"reference vs optax {case}: {_fmt(worst)}")


# ---------------------------------------------------------------------------------------------------------------
# (b), (c) adamx against the reference
# ---------------------------------------------------------------------------------------------------------------

_F64_SHORT = ["mask_root_schedule", "warmup", "paper_mask"]
_F64_CASES = ["plain", *_F64_SHORT]


@pytest.mark.parametrize("case", _F64_SHORT)
def test_float64_short(case, x64):
  """float64 / complex128: adamx is Algorithm 1 to rounding level, 64 steps (measured <= 1e-15)."""
  reference, _, params, grads_seq, run = _adamx_run("f64", case, N_SHORT)
  worst = _compare(reference, params, grads_seq, run, _f64_tols(), f"float64 {case}: ")
  print(f"float64 {case}: {_fmt(worst)}")


@pytest.mark.slow
@pytest.mark.parametrize("case", _F64_CASES)
def test_float64_trajectory(case, x64):
  """As :func:`test_float64_short` over 512 steps (the schedulers' warmup ends at step 307)."""
  reference, _, params, grads_seq, run = _adamx_run("f64", case, N_LONG)
  worst = _compare(reference, params, grads_seq, run, _f64_tols(), f"float64 {case}: ")
  print(f"float64 {case}: {_fmt(worst)}")


def test_float32_short():
  """float32 / complex64, the paper's schedulers and a mask, 64 steps, within ``_f32_tols``."""
  case = "warmup_mask"
  reference, h, params, grads_seq, run = _adamx_run("f32", case, N_SHORT)
  tol = _f32_tols(case, h, N_SHORT)
  worst = _compare(reference, params, grads_seq, run, tol, f"float32 {case}: ", unit=U32)
  print(f"float32 {case}: {_fmt(worst, U32)} (tol " + ", ".join(f"{k}={v / U32:.0f}u" for k, v in tol.items()) + ")")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["plain", "mask_root_schedule", "warmup_mask"])
def test_float32_trajectory(case):
  """float32 / complex64, 512 steps, within ``_f32_tols``."""
  reference, h, params, grads_seq, run = _adamx_run("f32", case, N_LONG)
  tol = _f32_tols(case, h, N_LONG)
  worst = _compare(reference, params, grads_seq, run, tol, f"float32 {case}: ", unit=U32)
  print(f"float32 {case} (b3={h['b3']:.5f}): {_fmt(worst, U32)} (tol "
        + ", ".join(f"{k}={v / U32:.0f}u" for k, v in tol.items()) + ")")


# ---------------------------------------------------------------------------------------------------------------
# (d) adamx against optax.contrib.ademamix (float32, complex64, bfloat16)
# ---------------------------------------------------------------------------------------------------------------


def _optax_parity(case: str, n: int) -> dict[str, float]:
  rng = np.random.default_rng(_seed("ademamix", "optax32", case))
  h = _hyper(rng)
  tx, _, kw = _case(case, h, n)
  if "schedule" in case:  # the same numbers from optax's own schedule
    kw = {**kw, "learning_rate": _lr_schedules(h["learning_rate"], n)[1]}
  otx = optax.contrib.ademamix(kw["learning_rate"], b1=kw["b1"], b2=kw["b2"], b3=kw["b3"], alpha=kw["alpha"],
                               eps=kw["eps"], eps_root=kw["eps_root"], weight_decay=kw["weight_decay"],
                               mask=kw.get("mask"))
  params = trees.mixed_params(rng, bf16=False)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.complex64)}
  step, ostep = jax.jit(tx.update), jax.jit(otx.update)
  p1, s1, p2, s2 = params, tx.init(params), params, otx.init(params)
  worst = dict.fromkeys(("params", "mu", "nu", "mu_slow"), 0.0)
  for t, g in enumerate(_gradients(rng, params, n), start=1):
    u1, s1 = step(g, s1, p1)
    u2, s2 = ostep(g, s2, p2)
    p1, p2 = adamx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    ours, theirs = s1[0], s2[0]
    pairs = {"params": (p1, p2), "mu": (ours.mu, theirs.m1), "mu_slow": (ours.mu_slow, theirs.m2),
             "nu": (ours.nu, jax.tree.map(jnp.real, theirs.nu))}  # optax's nu of a complex leaf is complex
    for name, (a, b) in pairs.items():
      trees.assert_close(a, b, PARAMS_RTOL if name == "params" else MOMENT_RTOL, f"step {t} {name}", scale=1.0)
      worst[name] = max(worst[name], trees.max_rel_err(a, b, 1.0))
    assert int(ours.count) == int(theirs.count) == int(theirs.count_m2) == t
  assert trees.max_rel_err(p1, params) > 1e-3  # the trajectory went somewhere
  return worst


def test_optax_short():
  """40 steps against ``optax.contrib.ademamix`` (sampled b3 and alpha; a mask, eps_root, a learning-rate schedule
  and the paper's warmup schedules, passed to both)."""
  case = "mask_root_warmup_schedule"
  print(f"optax {case}: {_fmt(_optax_parity(case, 40))}")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["plain", "mask_root", "warmup_schedule"])
def test_optax_trajectory(case):
  """As :func:`test_optax_short` over 500 steps."""
  print(f"optax {case}: {_fmt(_optax_parity(case, 500))}")


def _bf16_setup():
  rng = np.random.default_rng(_seed("ademamix", "bf16"))
  h = {"b1": 0.9, "b2": 0.99, "b3": 0.999, "alpha": 5.0, "eps": 1e-8}
  p = jnp.asarray(rng.normal(size=(64,)), BF16)
  grads = [jnp.asarray(rng.normal(size=(64,)), BF16) for _ in range(200)]
  return h, p, grads


def test_bf16_one_step_from_optax_state():
  """On bfloat16 leaves, each adamx step from optax's own state equals optax's step within bf16 rounding (optax
  computes in bfloat16, adamx in float32 and rounds once): 4 ulps, ``2**-6``, as ``tests/test_parity.py``."""
  h, p, grads = _bf16_setup()
  tx, otx = adamx.scale_by_ademamix(**h), optax.contrib.scale_by_ademamix(**h)
  step, ostep = jax.jit(tx.update), jax.jit(otx.update)
  ostate = otx.init(p)
  for t, g in enumerate(grads, start=1):
    state = adamx.ScaleByAdemamixState(count=ostate.count, mu=ostate.m1, nu=ostate.nu, mu_slow=ostate.m2)
    ours, new = step(g, state, p)
    theirs, ostate = ostep(g, ostate, p)
    assert ours.dtype == BF16 and all(x.dtype == BF16 for x in (new.mu, new.nu, new.mu_slow))
    for what, a, b in (("update", ours, theirs), ("mu", new.mu, ostate.m1), ("nu", new.nu, ostate.nu),
                       ("mu_slow", new.mu_slow, ostate.m2)):
      trees.assert_close(a, b, 2.0**-6, f"step {t} {what} ", scale=1.0)


def test_bf16_computes_in_float32_and_rounds_once():
  """bfloat16 params, grads and state: from adamx's own state, one float64 reference step rounded to bfloat16 is
  adamx's new state and update within 1 ulp (a float32 result within ~1e-7 of a rounding boundary may round to the
  neighbour; bfloat16 arithmetic is off by far more, as optax's ``m2`` with ``b3`` rounded to bf16's 1.0), or, where
  the EMA cancels to ~0 (``0.9 m + 0.1 g = 0`` exactly for some bf16 pairs, while float32's rounded 0.9 and 0.1 leave
  ~5e-9, measured), within float32 rounding of the vector's scale, ``2**-20 max|ref|``."""
  h, p, grads = _bf16_setup()
  tx, reference = adamx.scale_by_ademamix(**h), ref.AdEMAMix(learning_rate=-1.0, **h)  # delta = +update
  step = jax.jit(tx.update)
  state = tx.init(p)
  worst = {}
  for t, g in enumerate(grads, start=1):
    own = {"count": t - 1, **{k: np.asarray(getattr(state, k), np.float64) for k in ("mu", "nu", "mu_slow")}}
    delta, expected = reference.update(np.asarray(g, np.float64), np.asarray(p, np.float64), own, t)
    updates, state = step(g, state, p)
    for name, a, b in (("update", updates, delta), *((k, getattr(state, k), expected[k])
                                                      for k in ("mu", "nu", "mu_slow"))):
      a64 = np.asarray(a, np.float64)
      near_zero = np.abs(a64 - b) <= 2.0**-20 * np.max(np.abs(b))
      ulps = int(np.max(np.where(near_zero, 0, np.abs(_bf16_ordinal(a64) - _bf16_ordinal(b)))))
      worst[name] = max(worst.get(name, 0), ulps)
      assert a.dtype == BF16 and ulps <= 1, f"step {t}: {name} is {ulps} bfloat16 ulps from the reference"
  print(f"bfloat16: max ulps {worst}")


# ---------------------------------------------------------------------------------------------------------------
# (e) Schedules, defaults, validation, dtypes, equivalences, and the comparisons can fail
# ---------------------------------------------------------------------------------------------------------------


def test_defaults_are_the_papers_and_shared():
  """Both layers share every default (optax's do not: alpha 5.0 vs 6.0); b3 = 0.9999 and alpha = 5 (the paper
  uses 5 or 8); the state is (count, mu, nu, mu_slow)."""
  opt = inspect.signature(adamx.ademamix).parameters
  sb = inspect.signature(adamx.scale_by_ademamix).parameters
  shared = set(opt) & set(sb)
  assert shared == {"b1", "b2", "b3", "alpha", "eps", "eps_root", "mu_dtype", "nu_dtype"}
  assert all(opt[k].default == sb[k].default for k in shared)
  assert (sb["b3"].default, sb["alpha"].default, opt["learning_rate"].default, opt["weight_decay"].default) == (
      0.9999, 5.0, 1e-3, 0.0)
  optax_defaults = [inspect.signature(f).parameters["alpha"].default
                    for f in (optax.contrib.ademamix, optax.contrib.scale_by_ademamix)]
  assert optax_defaults == [5.0, 6.0]  # the drift the docstring warns about; if optax fixes it, update the warning
  assert adamx.ScaleByAdemamixState._fields == ("count", "mu", "nu", "mu_slow")


def test_first_step_by_hand(x64):
  """m1_1 = (1 - b1) g (mhat1 = g), m2_1 = (1 - b3) g (not corrected), nuhat_1 = |g|^2, so the first update is
  ``-lr ((1 + alpha (1 - b3)) g / (|g| + eps) + lambda theta)``: for the reference and adamx, complex leaf included."""
  g = {"r": np.array([0.5, -2.0, 3.0]), "c": np.array([3.0 + 4.0j, -1.0j])}
  theta = {"r": np.array([1.0, 2.0, -1.0]), "c": np.array([1.0 + 1.0j, 2.0])}
  lr, b1, b2, b3, alpha, eps, lam = 0.1, 0.9, 0.999, 0.99, 8.0, 1e-8, 0.01
  expected = jax.tree.map(lambda g_, p: -lr * ((1 + alpha * (1 - b3)) * g_ / (np.abs(g_) + eps) + lam * p), g, theta)
  kw = dict(learning_rate=lr, b1=b1, b2=b2, b3=b3, alpha=alpha, eps=eps, weight_decay=lam)
  reference = ref.AdEMAMix(**kw)
  delta, state = reference.update(g, theta, reference.init(theta), 1)
  trees.assert_close(delta, expected, 1e-15, "reference ")
  trees.assert_close(state["mu_slow"], jax.tree.map(lambda x: (1 - b3) * x, g), 1e-15)
  tx = adamx.ademamix(**kw)
  jg, jp = jax.tree.map(jnp.asarray, g), jax.tree.map(jnp.asarray, theta)
  updates, s = jax.jit(lambda g_, p: tx.update(g_, tx.init(p), p))(jg, jp)
  trees.assert_close(jax.device_get(updates), expected, 1e-15, "adamx ")
  trees.assert_close(jax.device_get(s[0].mu_slow), state["mu_slow"], 1e-15, "adamx mu_slow ")


_T = 1000
_COUNTS = np.arange(0, _T + 50)


@pytest.mark.parametrize("b3,b3_start", [(0.9999, 0.9), (0.999, 0.5), (0.99999, 0.99)])
def test_b3_schedule_is_the_papers(b3, b3_start):
  """``ademamix_b3_schedule`` against the paper's closed form (float64, ``tests.reference.ademamix.f_beta3``): in
  float32 within 2 ulps, at every count of the warmup and after it; its half-life is linear in the count (the
  midpoint's is the mean of the two ends'), so it is not a linear interpolation of b3."""
  sched = jax.jit(jax.vmap(adamx.ademamix_b3_schedule(b3, _T, b3_start=b3_start)))
  ours = np.asarray(sched(jnp.asarray(_COUNTS, jnp.int32)), np.float64)
  exact = np.array([ref.f_beta3(float(c), b3, b3_start, _T) for c in _COUNTS])
  assert np.max(np.abs(ours - exact)) <= 2 * 2.0**-24, np.max(np.abs(ours - exact))
  assert ours[0] == np.float32(b3_start) and np.all(ours[_T:] == np.float32(b3)) and np.all(np.diff(ours) >= 0)
  half_life = lambda b: math.log(0.5) / math.log(b)  # noqa: E731
  mid = ref.f_beta3(_T / 2, b3, b3_start, _T)
  assert abs(half_life(mid) - (half_life(b3) + half_life(b3_start)) / 2) < 1e-9 * half_life(b3)
  assert abs((1 - mid) / (1 - (b3 + b3_start) / 2) - 1) > 0.5  # far from the linear interpolation of b3


def test_b3_schedule_float64_and_edges(x64):
  """Under x64 the schedule is the paper's formula to ~1e-14 relative on ``1 - b3(t)``; ``b3_start = 0`` starts at
  0 (``1 / log 0 = -0``) and is finite after; ``b3_start > b3`` is the constant ``b3`` (the paper's ``min``);
  ``warmup_steps = 0`` is constant; huge counts are ``b3``."""
  b3, start = 0.9999, 0.9
  ours = np.asarray(jax.jit(adamx.ademamix_b3_schedule(b3, _T, b3_start=start))(jnp.asarray(_COUNTS)))
  exact = np.array([ref.f_beta3(float(c), b3, start, _T) for c in _COUNTS])
  assert ours.dtype == np.float64 and np.max(np.abs((1 - ours) / (1 - exact) - 1)) < 1e-12
  zero = np.asarray(jax.jit(adamx.ademamix_b3_schedule(b3, 10, b3_start=0.0))(jnp.arange(12)))
  assert zero[0] == 0.0 and np.all(np.isfinite(zero)) and np.all(np.diff(zero[:11]) > 0) and zero[10] == b3
  assert np.all(np.asarray(jax.jit(adamx.ademamix_b3_schedule(0.99, 10, b3_start=0.999))(jnp.arange(12))) == 0.99)
  assert float(adamx.ademamix_b3_schedule(b3, 0)(0)) == b3 == float(adamx.ademamix_b3_schedule(b3, 10)(10**12))


def test_alpha_schedule_is_the_papers():
  """``ademamix_alpha_schedule`` is ``min(t alpha / T, alpha)`` (float32: alpha rounded, then two roundings, 4 u),
  constant for ``warmup_steps=0``, and the same as ``linear_schedule(0, alpha, T)`` (8 u)."""
  alpha = 7.3
  ours = np.asarray(adamx.ademamix_alpha_schedule(alpha, _T)(jnp.asarray(_COUNTS)), np.float64)
  exact = np.array([ref.f_alpha(float(c), alpha, _T) for c in _COUNTS])
  np.testing.assert_allclose(ours, exact, rtol=4 * U32, atol=0)
  linear = np.asarray(adamx.linear_schedule(0.0, alpha, _T)(jnp.asarray(_COUNTS)), np.float64)
  np.testing.assert_allclose(ours, linear, rtol=8 * U32, atol=0)
  assert float(adamx.ademamix_alpha_schedule(alpha, 0)(0)) == np.float32(alpha)


def test_alpha_zero_is_adamw(rng):
  """With ``alpha = 0`` the slow EMA drops out and AdEMAMix is AdamW (its state plus ``mu_slow``), on float32,
  bfloat16 and complex64 leaves: the moments bit for bit, the updates and params within float32 rounding (XLA
  compiles ``(m / bc1 + 0 m2) / d`` and Adam's ``m / bc1 / d`` to different roundings: measured 2.5 u)."""
  h = {"b1": 0.85, "b2": 0.99, "eps": 1e-7, "eps_root": 1e-12, "weight_decay": 0.03}
  params = trees.mixed_params(rng)
  grads_seq = _gradients(rng, params, 16)
  a, b = adamx.ademamix(3e-3, alpha=0.0, **h), adamx.adamw(3e-3, **h)
  sa, sb, pa, pb = a.init(params), b.init(params), params, params
  step_a, step_b = jax.jit(a.update), jax.jit(b.update)
  for g in grads_seq:
    (ua, sa), (ub, sb) = step_a(g, sa, pa), step_b(g, sb, pb)
    pa, pb = adamx.apply_updates(pa, ua), adamx.apply_updates(pb, ub)
    for x, y in zip(jax.tree.leaves((sa[0].mu, sa[0].nu)), jax.tree.leaves((sb[0].mu, sb[0].nu))):
      assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves((ua, pa)), jax.tree.leaves((ub, pb))):
      # a rounding or two of the leaf's dtype: 4 u for float32, 2**-8 for bfloat16
      assert x.dtype == y.dtype and trees.max_rel_err(x, y) <= (2.0**-8 if x.dtype == BF16 else 4 * U32)


def test_dtypes():
  """``mu_dtype`` sets both EMAs of g (``mu`` and ``mu_slow``; complex parameters keep a complex dtype), ``nu_dtype``
  the real second moment; updates keep the gradients' dtype."""
  params = {"w": jnp.ones((3, 2)), "z": jnp.ones(2, jnp.complex64), "h": jnp.ones(2, BF16)}
  tx = adamx.ademamix(1e-2, mu_dtype=BF16, nu_dtype=jnp.float32)
  state = tx.init(params)
  g = trees.random_like(np.random.default_rng(0), params)
  updates, state = jax.jit(tx.update)(g, state, params)
  s = state[0]
  expect_mu = {"w": BF16, "z": jnp.complex64, "h": BF16}
  for field in ("mu", "mu_slow"):
    assert {k: v.dtype for k, v in getattr(s, field).items()} == expect_mu, field
  assert {k: v.dtype for k, v in s.nu.items()} == dict.fromkeys("wzh", jnp.float32)
  assert {k: v.dtype for k, v in updates.items()} == {k: v.dtype for k, v in params.items()}
  s = adamx.scale_by_ademamix().init(params)
  assert {k: v.dtype for k, v in s.mu_slow.items()} == {k: v.dtype for k, v in params.items()}


def test_hyperparameters_traced_and_vmapped():
  """b3 and alpha may be arrays or tracers (jit, vmap over b3): the same numbers as Python floats."""
  params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(4,)), jnp.float32)}
  g = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(4,)), jnp.float32)}

  def updates(b3, alpha):
    tx = adamx.scale_by_ademamix(b3=b3, alpha=alpha)
    s = tx.init(params)
    for _ in range(3):
      u, s = tx.update(g, s)
    return u["w"]

  b3s = jnp.array([0.9, 0.99], jnp.float32)
  batched = jax.jit(jax.vmap(updates, in_axes=(0, None)))(b3s, jnp.float32(4.0))
  for i, b3 in enumerate((0.9, 0.99)):
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(updates(b3, 4.0)), rtol=1e-6)


_BAD = [
    (adamx.ademamix, {"b3": 1.0}, ValueError, "adamx.ademamix: b3 must be in [0, 1), got 1.0"),
    (adamx.scale_by_ademamix, {"b3": -0.1}, ValueError, "adamx.scale_by_ademamix: b3 must be in [0, 1), got -0.1"),
    (adamx.ademamix, {"alpha": -1.0}, ValueError, "adamx.ademamix: alpha must be a finite number >= 0, got -1.0"),
    (adamx.scale_by_ademamix, {"alpha": math.inf}, ValueError, "adamx.scale_by_ademamix: alpha must be a finite"),
    (adamx.ademamix, {"b3": "0.9"}, TypeError, "adamx.ademamix: b3 must be a real number or array"),
    (adamx.ademamix, {"b1": 1.5}, ValueError, "adamx.ademamix: b1 must be in [0, 1), got 1.5"),
    (adamx.ademamix, {"weight_decay": -1.0}, ValueError, "adamx.ademamix: weight_decay must be a finite"),
    (adamx.ademamix, {"nu_dtype": jnp.int32}, ValueError, "adamx.ademamix: nu_dtype must be None or a real"),
    (adamx.ademamix_b3_schedule, {"b3": 0.9999, "warmup_steps": 10, "b3_start": 1.0}, ValueError,
     "adamx.ademamix_b3_schedule: b3_start must be in [0, 1), got 1.0"),
    (adamx.ademamix_b3_schedule, {"b3": 0.9999, "warmup_steps": -1}, ValueError,
     "adamx.ademamix_b3_schedule: warmup_steps must be a non-negative integer, got -1"),
    (adamx.ademamix_alpha_schedule, {"alpha": -2.0, "warmup_steps": 10}, ValueError,
     "adamx.ademamix_alpha_schedule: alpha must be a finite number >= 0, got -2.0"),
    (adamx.ademamix_alpha_schedule, {"alpha": 5.0, "warmup_steps": 2.5}, ValueError,
     "adamx.ademamix_alpha_schedule: warmup_steps must be a non-negative integer"),
]


@pytest.mark.parametrize("fn,kwargs,exc,message", _BAD, ids=[f"{b[0].__name__}-{next(iter(b[1]))}" for b in _BAD])
def test_validation(fn, kwargs, exc, message):
  with pytest.raises(exc, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
    fn(**kwargs)


def test_schedules_and_arrays_are_accepted_unchecked():
  """A schedule or an array for b3/alpha is not validated at construction (it may be traced)."""
  adamx.ademamix(b3=lambda count: 2.0, alpha=jnp.array(-1.0))
  adamx.scale_by_ademamix(b3=jnp.array(1.5), alpha=lambda count: -1.0)


def test_registry_optax_builder():
  """The registry's optax counterpart is ``optax.contrib.ademamix`` with its state relabelled (the same numbers);
  non-default dtypes have no counterpart (optax's ``mu_dtype`` also types ``nu`` and is not cast back)."""
  spec = registry.get("ademamix")
  assert spec.optax(optax, spec.full_kwargs(mu_dtype=BF16)) is None
  kw = dict(learning_rate=1e-2, b3=0.995, alpha=6.0, weight_decay=0.01)
  view = spec.optax(optax, spec.full_kwargs(**kw))
  direct = optax.contrib.ademamix(1e-2, b3=0.995, alpha=6.0, weight_decay=0.01)
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "z": jnp.array([1.0 + 2.0j, -0.5j], jnp.complex64)}
  sv, sd = view.init(params), direct.init(params)
  step_v, step_d = jax.jit(view.update), jax.jit(direct.update)
  for g in _gradients(np.random.default_rng(4), params, 3):
    (uv, sv), (ud, sd) = step_v(g, sv, params), step_d(g, sd, params)
    assert jax.tree.structure(uv) == jax.tree.structure(ud)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(uv), jax.tree.leaves(ud)))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves((sv[0].mu, sv[0].mu_slow, sv[0].nu)),
                                                    jax.tree.leaves((sd[0].m1, sd[0].m2, sd[0].nu))))


# A deliberately wrong reference for a float64 case (reused, so is its recorded trajectory): name -> (case, change).
_WRONG = {
    "b3_off_by_1e-7": ("mask_root_schedule", lambda r: dataclasses.replace(r, b3=r.b3 + 1e-7)),
    "alpha_off_by_1e-6": ("mask_root_schedule", lambda r: dataclasses.replace(r, alpha=r.alpha * (1 + 1e-6))),
    "b1_b3_swapped": ("mask_root_schedule", lambda r: dataclasses.replace(r, b1=r.b3, b3=r.b1)),
    "no_mask": ("mask_root_schedule", lambda r: dataclasses.replace(r, mask=None)),
    "eps_root_dropped": ("mask_root_schedule", lambda r: dataclasses.replace(r, eps_root=0.0)),
    "paper_indexing_for_lagged": ("warmup", lambda r: dataclasses.replace(r, lagged_schedulers=False)),
    "lagged_indexing_for_paper": ("paper_mask", lambda r: dataclasses.replace(r, lagged_schedulers=True)),
    "b3_start_b2": ("warmup", lambda r: dataclasses.replace(r, b3_start=r.b2)),
    "b3_linear_warmup": ("warmup", lambda r: dataclasses.replace(
        r, b3_warmup=None, b3=lambda c: r.b1 + (r.b3 - r.b1) * min(c / r.b3_warmup, 1.0))),
    "no_alpha_warmup": ("warmup", lambda r: dataclasses.replace(r, alpha_warmup=None)),
}


@pytest.mark.parametrize("wrong", list(_WRONG))
def test_comparison_detects_a_wrong_reference(wrong, x64):
  """The float64 comparison can fail: each deliberately wrong reference is caught (b3 off by 1e-7 and alpha by 1e-6
  relative included)."""
  case, change = _WRONG[wrong]
  reference, _, params, grads_seq, run = _adamx_run("f64", case, N_SHORT)
  with pytest.raises(AssertionError, match="relative error"):
    _compare(change(reference), params, grads_seq, run, _f64_tols(), f"{wrong}: ")


def test_docstring_examples():
  """The examples of ``ademamix`` and of the two schedules run and print what they say."""
  failures, tried = doctest.testmod(_ademamix_module, optionflags=doctest.ELLIPSIS)
  assert tried >= 10 and failures == 0


def test_reference_apply_matches_step():
  """``step`` is ``update`` then ``apply`` (the tests above use ``update``)."""
  theta = {"r": np.array([1.0, -2.0])}
  g = {"r": np.array([0.3, 0.1])}
  r = ref.AdEMAMix(1e-2)
  delta, s1 = r.update(g, theta, r.init(theta), 1)
  p, s2 = r.step(g, theta, r.init(theta), 1)
  trees.assert_close(p, ref_apply(theta, delta), 0.0)
  trees.assert_close(s1["mu_slow"], s2["mu_slow"], 0.0)
