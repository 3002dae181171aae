"""LaProp: adamx against the float64 paper reference (``tests/reference/laprop.py``), optax's composition of the same
algorithm, algebraic identities and the paper's bounded-step property.

Neither optax nor ``torch.optim`` has LaProp. Besides the reference, the registry's counterpart is built from optax
pieces, ``chain(scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True), ema(b1, debias=True))``
(``adamx.registry._optax_laprop``): in float64 it must reproduce the reference itself (a check of the reference that
does not go through adamx).

Errors are measured as in ``tests/test_reference.py`` (whose ``_track`` is reused): per leaf,
``max|x_t - ref_t| / max_{s <= t} max|ref_s|``, params, updates, ``mu``, ``nu`` and the counts after every step, on
``tests.trees.mixed_params`` (a complex leaf included).

Tolerances:

* float64 (x64), adamx vs the reference, and optax's composition vs the reference: ``F64_RTOL = 1e-10`` (as
  ``tests/test_reference_classic.py``: a few roundings per step carried by EMAs of at most ``min(n, 1 / (1 - b))``
  steps, worst case ~2e-12). Measured at most 7e-15 (512 steps).
* float32 vs the reference (``_f32_tols``): ``nu`` is an EMA, ``tests.test_reference._f32_tol(b2, n)``; the
  normalised gradient divides by ``sqrt(nu / (1 - b2^t))``, whose bias correction adamx computes to ~2e-7 (see
  ``adamx.adam``), so ``mu`` carries half of ``nu``'s error plus a few roundings on top of its own EMA bound
  ``_f32_tol(b1, n)``; the update divides by ``1 - b1^t`` (one more ~2e-7). Params: the ``8 u sqrt(n)`` random walk
  of ``tests.test_reference`` plus the updates' own errors, ``lr n tol_updates``. Measured: at most 0.42 of each
  bound (512 steps).
* adamx vs optax's composition (float32): optax's bias corrections ``1 - b**t`` are float32 powers of ``b`` rounded
  to float32, off by up to ``u / 2 * t b^t / (1 - b^t) <= u / (2 (1 - b))`` relative (``adamx.adam``'s warning):
  ``nu_hat`` by that for ``b2``, the normalised gradient by half of it, the update by that for ``b1`` on top.
  ``_optax_tol`` bounds the updates by those plus ``16 u``; the moments (which are not bias-corrected on either side)
  by ``_f32_tol`` as above. Measured: at most 0.26 of each bound (500 steps).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx import check, registry
from tests import trees
from tests.reference import laprop as ref
from tests.reference.adam import warmup_cosine
from tests.test_reference import U32, Pair, _f32_tol, _gradients, _seed, _track
from tests.test_validation import _BAD, _KIND, _message

N_SHORT = 50
N_LONG = 512
F64_RTOL = 1e-10


# ---------------------------------------------------------------------------------------------------------------
# adamx against the reference
# ---------------------------------------------------------------------------------------------------------------


def _hyper(rng: np.random.Generator) -> dict[str, float]:
  return {
      "learning_rate": float(10 ** rng.uniform(-4, -1.5)),
      "b1": float(rng.uniform(0.6, 0.95)),
      "b2": float(rng.uniform(0.95, 0.9995)),
      "eps": float(10 ** rng.uniform(-15, -6)),
      "eps_root": float(10 ** rng.uniform(-14, -8)),
      "weight_decay": float(10 ** rng.uniform(-4, -1)),
  }


def _decay_matrices(params):
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


# The paper (eps_root = 0), eps_root with masked decoupled decay, a warmup-cosine schedule, and the regime the paper
# is about: b1 > b2 (here 0.99 > 0.9, where Adam's step is unbounded).
_CASES = ["default", "eps_root_decay_mask", "schedule", "b1_above_b2"]


def _case(name: str, h: dict[str, float]) -> Pair:
  lr = ref_lr = h["learning_rate"]
  kw = dict(b1=h["b1"], b2=h["b2"], eps=h["eps"])
  if name == "eps_root_decay_mask":
    kw |= dict(eps_root=h["eps_root"], weight_decay=h["weight_decay"], mask=_decay_matrices)
  elif name == "schedule":
    args = dict(init_value=lr / 100, peak_value=lr, warmup_steps=20, decay_steps=400, end_value=lr / 10)
    lr, ref_lr = adamx.warmup_cosine_schedule(**args), warmup_cosine(**args)
  elif name == "b1_above_b2":
    kw |= dict(b1=0.99, b2=0.9)
  else:
    assert name == "default", name
  return Pair(adamx.laprop(lr, **kw), ref.LaProp(ref_lr, **kw))


@functools.cache
def _pair(mode: str, case: str) -> tuple[Pair, dict[str, float]]:
  h = _hyper(np.random.default_rng(_seed("laprop", mode, case, "hyper")))
  pair = _case(case, h)
  return pair, {**h, "b1": pair.ref.b1, "b2": pair.ref.b2}


def _f32_tols(h: dict[str, float], n: int) -> dict[str, float]:
  tol_nu = _f32_tol(h["b2"], n)
  tol_mu = _f32_tol(h["b1"], n) + tol_nu / 2 + 4 * U32
  tol_updates = tol_mu + 4 * U32
  return {"nu": tol_nu, "mu": tol_mu, "updates": tol_updates,
          "params": 8 * U32 * math.sqrt(n) + h["learning_rate"] * n * tol_updates}


def _f64_tols() -> dict[str, float]:
  return dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL)


def _params(mode: str, case: str):
  return trees.mixed_params(np.random.default_rng(_seed("laprop", mode, case)), bf16=False,
                            real_dtype=np.float64 if mode == "f64" else np.float32)


def _against_reference(mode: str, case: str, n: int, change=lambda r: r) -> dict[str, float]:
  pair, h = _pair(mode, case)
  tol = _f64_tols() if mode == "f64" else _f32_tols(h, n)
  return _track(Pair(pair.tx, change(pair.ref)), _params(mode, case), seed=_seed("laprop", mode, case, "grads"),
                n_steps=n, tol=tol)


@pytest.mark.parametrize("case", _CASES)
def test_float64_trajectory_short(case, x64):
  worst = _against_reference("f64", case, N_SHORT)
  print(f"float64 {case}: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.parametrize("case", ["default", "b1_above_b2"])
def test_float32_trajectory_short(case):
  worst = _against_reference("f32", case, N_SHORT)
  tol = _f32_tols(_pair("f32", case)[1], N_SHORT)
  print(f"float32 {case}: " + ", ".join(f"{k}={v / U32:.1f}u ({v / tol[k]:.2f} of tol)" for k, v in worst.items()))


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_float64_trajectory(case, x64):
  worst = _against_reference("f64", case, N_LONG)
  print(f"float64 {case}: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_float32_trajectory(case):
  worst = _against_reference("f32", case, N_LONG)
  tol = _f32_tols(_pair("f32", case)[1], N_LONG)
  print(f"float32 {case}: " + ", ".join(f"{k}={v / tol[k]:.2f} of tol" for k, v in worst.items()))


_WRONG = {
    "b1_perturbed": ("default", lambda r: dataclasses.replace(r, b1=r.b1 * (1 - 1e-7))),
    "b2_perturbed": ("default", lambda r: dataclasses.replace(r, b2=r.b2 * (1 - 1e-7))),
    "no_eps_root": ("eps_root_decay_mask", lambda r: dataclasses.replace(r, eps_root=0.0)),
    "decay_every_leaf": ("eps_root_decay_mask", lambda r: dataclasses.replace(r, mask=None)),
}


@pytest.mark.parametrize("wrong", list(_WRONG))
def test_comparison_detects_a_wrong_reference(wrong, x64):
  case, change = _WRONG[wrong]
  with pytest.raises(AssertionError, match="relative error"):
    _against_reference("f64", case, N_SHORT, change)


def test_authors_lr_in_momentum_differs_only_under_a_schedule(x64):
  """The documented difference from the authors' code is real and only that: their learning rate inside the momentum
  (bias-corrected by the average learning rate) gives the paper's params for a constant rate, not under a schedule."""
  params = trees.to_numpy(_params("f64", "schedule"))
  grads_seq = _gradients(np.random.default_rng(3), params, N_SHORT)
  sched = warmup_cosine(init_value=1e-4, peak_value=1e-2, warmup_steps=20, decay_steps=400, end_value=1e-3)
  for rate, agree in ((1e-2, True), (sched, False)):
    paper, authors = ref.LaProp(rate, b1=0.9, b2=0.99), ref.LaProp(rate, b1=0.9, b2=0.99, lr_in_momentum=True)
    p1, s1, p2, s2 = params, paper.init(params), params, authors.init(params)
    for t, g in enumerate(grads_seq, start=1):
      p1, s1 = paper.step(g, p1, s1, t)
      p2, s2 = authors.step(g, p2, s2, t)
    err = check.rel_err(p2, p1, 1.0)
    assert (err < 1e-13) if agree else (err > 1e-5), (rate, err)


def test_first_step_by_hand():
  """Step 1: n_1 = (1 - b2) g^2, so g / sqrt(n_1 / (1 - b2)) = sign(g), m_1 = (1 - b1) sign(g), update = sign(g)."""
  g = jnp.array([3.0, -0.25, 1e-3])
  tx = adamx.scale_by_laprop(b1=0.8, b2=0.95)
  u, s = tx.update(g, tx.init(g))
  np.testing.assert_allclose(u, np.sign(g), rtol=1e-6)
  np.testing.assert_allclose(s.mu, 0.2 * np.sign(g), rtol=1e-6)
  np.testing.assert_allclose(s.nu, 0.05 * g**2, rtol=1e-6)


def test_b1_zero_equals_adam_b1_zero():
  """With b1 = 0 the momentum is the normalised gradient itself: LaProp is Adam with b1 = 0 (RMSProp with bias
  correction), the same float32 operations up to the order of two divisions."""
  mixed = trees.mixed_params(np.random.default_rng(1), bf16=False)
  params = {"w": mixed["dense"]["w"], "z": mixed["phase"]}  # a real and a complex leaf
  lp, ad = adamx.laprop(1e-2, b1=0.0, b2=0.99, eps=1e-8), adamx.adam(1e-2, b1=0.0, b2=0.99, eps=1e-8)
  s1, s2 = lp.init(params), ad.init(params)
  step1, step2 = jax.jit(lp.update), jax.jit(ad.update)
  for g in _gradients(np.random.default_rng(2), params, 20):
    u1, s1 = step1(g, s1, params)
    u2, s2 = step2(g, s2, params)
    trees.assert_close(u1, u2, 4 * U32, scale=1e-2)
    trees.assert_close(s1[0].nu, s2[1].nu, 0.0)


def test_step_is_bounded_for_any_b1_b2_where_adam_is_not():
  """The paper's point: each normalised gradient has |g_t| / sqrt(n_t / (1 - b2^t)) <= 1 / sqrt(1 - b2) and the
  bias-corrected momentum is a weighted average of them, so |update| <= lr / sqrt(1 - b2) for every b1, b2. Adam
  with b1 > sqrt(b2) exceeds it after a gradient spike (its momentum outlives its second moment)."""
  b1, b2, lr = 0.99, 0.9, 1.0
  grads = [jnp.array([1e3])] + [jnp.array([1e-3 * (-1) ** k]) for k in range(250)]
  bound = lr / math.sqrt(1 - b2)
  worst = {}
  for name, tx in (("laprop", adamx.laprop(lr, b1=b1, b2=b2, eps=0.0)), ("adam", adamx.adam(lr, b1=b1, b2=b2))):
    s, p, worst[name] = tx.init(grads[0]), jnp.zeros(1), 0.0
    step = jax.jit(tx.update)
    for g in grads:
      u, s = step(g, s, p)
      worst[name] = max(worst[name], float(jnp.abs(u[0])))
  assert worst["laprop"] <= bound * (1 + 1e-6), worst
  assert worst["adam"] > 10 * bound, worst


# ---------------------------------------------------------------------------------------------------------------
# Against optax's composition (the registry's counterpart)
# ---------------------------------------------------------------------------------------------------------------


def _optax_tol(h: dict[str, float], n: int) -> dict[str, float]:
  bc = lambda b: U32 / (2 * (1 - b))  # noqa: E731 (optax's float32 bias correction, see the module docstring)
  tol_updates = bc(h["b2"]) / 2 + bc(h["b1"]) + 16 * U32
  return {"nu": _f32_tol(h["b2"], n), "mu": _f32_tol(h["b1"], n) + bc(h["b2"]) / 2 + 8 * U32,
          "updates": tol_updates, "params": 8 * U32 * math.sqrt(n) + h["learning_rate"] * n * tol_updates}


def _registry_kwargs(h: dict[str, float], **extra) -> dict:
  return registry.get("laprop").full_kwargs(learning_rate=h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"],
                                            **extra)


def _optax_err(n: int, *, real_dtype=np.float32, mask: bool = True) -> dict[str, float]:
  rng = np.random.default_rng(_seed("laprop", "optax", str(np.dtype(real_dtype))))
  h = _hyper(rng)
  params = trees.mixed_params(rng, bf16=False, real_dtype=real_dtype)
  extra = dict(weight_decay=h["weight_decay"], mask=_decay_matrices) if mask else {}
  tx = adamx.laprop(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"], **extra)
  otx = registry.get("laprop").optax(optax, _registry_kwargs(h, **extra))
  step, ostep = jax.jit(tx.update), jax.jit(otx.update)
  p1, s1, p2, s2 = params, tx.init(params), params, otx.init(params)
  tol = _optax_tol(h, n) if real_dtype == np.float32 else _f64_tols()
  worst = dict.fromkeys(tol, 0.0)
  for t, g in enumerate(_gradients(rng, params, n), start=1):
    u1, s1 = step(g, s1, p1)
    u2, s2 = ostep(g, s2, p2)
    p1, p2 = adamx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    m1, m2 = check.moments(s1), check.moments(s2)
    errs = {"params": check.rel_err(p1, p2, 1.0), "updates": check.rel_err(u1, u2, h["learning_rate"]),
            "mu": check.rel_err(m1["mu"], m2["mu"], 1.0), "nu": check.rel_err(m1["nu"], m2["nu"], 1.0)}
    for k, e in errs.items():
      assert e <= tol[k], f"step {t} {k}: {e:.2e} > {tol[k]:.2e}"
      worst[k] = max(worst[k], e / tol[k])
  return worst


def test_matches_optax_composition_short():
  print("optax composition, fraction of tol: " + ", ".join(f"{k}={v:.2f}" for k, v in _optax_err(N_SHORT).items()))


@pytest.mark.slow
def test_matches_optax_composition_long():
  print("optax composition, fraction of tol: " + ", ".join(f"{k}={v:.2f}" for k, v in _optax_err(500).items()))


@pytest.mark.slow
def test_optax_composition_matches_adamx_in_float64(x64):
  """In float64 optax's bias corrections are accurate too: the composition and adamx agree to rounding level."""
  _optax_err(N_SHORT, real_dtype=np.float64)


def test_optax_composition_matches_reference_float64(x64):
  """The optax composition reproduces the float64 reference (params and state every step), independently of adamx."""
  rng = np.random.default_rng(_seed("laprop", "optax-ref"))
  h = _hyper(rng)
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  otx = registry.get("laprop").optax(optax, _registry_kwargs(h))
  reference = ref.LaProp(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"])
  ostep = jax.jit(otx.update)
  p, s = params, otx.init(params)
  rp, rs = trees.to_numpy(params), reference.init(trees.to_numpy(params))
  for t, g in enumerate(_gradients(rng, params, N_SHORT), start=1):
    u, s = ostep(g, s, p)
    p = optax.apply_updates(p, u)
    rp, rs = reference.step(g, rp, rs, t)
    m = check.moments(s)
    trees.assert_close(p, rp, F64_RTOL, f"step {t} params ", scale=1.0)
    trees.assert_close(m["mu"], rs["mu"], F64_RTOL, f"step {t} mu ", scale=1.0)
    trees.assert_close(m["nu"], rs["nu"], F64_RTOL, f"step {t} nu ", scale=1.0)


# ---------------------------------------------------------------------------------------------------------------
# Validation, arrays and tracers
# ---------------------------------------------------------------------------------------------------------------

_ARGS = {
    "scale_by_laprop": ("b1", "b2", "eps", "eps_root", "mu_dtype", "nu_dtype"),
    "laprop": ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "mask", "mu_dtype", "nu_dtype"),
}


def _bad_cases():
  for fn, args in _ARGS.items():
    for arg in args:
      for i, (value, excs, fragments) in enumerate(_BAD[_KIND[arg]]):
        shown = type(value).__name__ if " at 0x" in repr(value) else repr(value)
        yield pytest.param(fn, arg, value, excs, fragments, id=f"{fn}-{arg}-{i}-{shown}")


@pytest.mark.parametrize("fn, arg, value, excs, fragments", list(_bad_cases()))
def test_bad_hyperparameter_raises_naming_function_argument_and_value(fn, arg, value, excs, fragments):
  with pytest.raises(excs, match=_message(fn, arg, value=value, fragments=fragments)):
    getattr(adamx, fn)(**{arg: value})


@pytest.mark.parametrize("kwargs", [dict(b1=0.0, b2=0.0, eps=0.0), dict(b1=0.999999, b2=0.999999, eps=1.0)])
def test_boundary_hyperparameters_step(kwargs):
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  tx = adamx.laprop(1e-2, **kwargs)
  s = tx.init(params)
  for k in range(3):
    u, s = tx.update({"w": jnp.array([0.3, -1.0, 2.0]) * (k + 1)}, s, params)
    assert bool(jnp.all(jnp.isfinite(u["w"])))


def test_arrays_and_tracers_are_accepted():
  """Hyperparameters as arrays (even out of range: not validated) and as traced values under jit give the plain
  optimizer's numbers (within float32 rounding: the plain bias correction takes log(b) in float64, see adamx.adam)."""
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.3)}
  grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)) + 0.1 * k, params) for k in range(4)]
  hp = dict(learning_rate=0.05, b1=0.75, b2=0.875, eps=1e-3, eps_root=1e-8, weight_decay=0.01)

  def run(**h):
    tx = adamx.laprop(**h)
    p, s = params, tx.init(params)
    for g in grads:
      u, s = tx.update(g, s, p)
      p = adamx.apply_updates(p, u)
    return p

  plain = run(**hp)
  arrays = run(**{k: jnp.asarray(v, jnp.float32) for k, v in hp.items()})
  traced = jax.jit(lambda h: run(**h))({k: jnp.asarray(v, jnp.float32) for k, v in hp.items()})
  for other in (arrays, traced):
    trees.assert_close(other, plain, 1e-6, scale=1.0)
  adamx.laprop(b1=jnp.array(1.5), b2=np.array(-1.0), eps=jnp.array(-1.0))  # arrays are not validated
