"""ADOPT: adamx against the float64 paper reference (``tests/reference/adopt.py``) and ``optax.contrib.adopt``.

Errors are measured as in ``tests/test_reference.py`` (whose ``_track`` is reused): per leaf,
``max|x_t - ref_t| / max_{s <= t} max|ref_s|``, params, updates, ``mu``, ``nu`` and the counts after every step, on
``tests.trees.mixed_params`` (nested dict/list/tuple, scalar to 3-D leaves, a complex leaf).

Tolerances:

* float64 / complex128 (x64), adamx vs the reference: ``F64_RTOL = 1e-10``, as ``tests/test_reference_classic.py``:
  both compute the same formula in a different order, a few roundings (``~10 u``, ``u = 1.1e-16``) per step, carried
  by the EMAs over at most ``min(n, 1 / (1 - b))`` steps; ``1e-10`` leaves a factor > 50 on the worst case. Measured
  at most 1e-15 (50 steps) and 3e-15 (512 steps). Every deliberate change tested (``_WRONG``) is far above it.
* float32 / complex64 vs the reference (``_f32_tols``): ``nu`` is an EMA whose decay is rounded to float32, bounded by
  ``tests.test_reference._f32_tol(b2, n)``; the normalised gradient divides by ``sqrt(v)``, so ``mu`` carries half
  of ``nu``'s relative error on top of its own EMA bound ``_f32_tol(b1, n)`` (the clip is 1-Lipschitz and adds
  nothing); the update is ``mu`` (or its Nesterov mix) times the learning rate, one rounding more. Params: the
  ``8 u sqrt(n)`` random walk of ``tests.test_reference`` plus the updates' own error, ``lr n tol_updates``.
  Measured: at most 0.2 of each bound (512 steps).
* adamx vs optax (float32, real leaves): the same operations in the same order on the same float32 values (both
  round the decays to float32 before forming ``1 - b``), so bit for bit eagerly (checked over 4 steps). Jitted, XLA
  compiles the two programs separately and may fuse them differently: ``OPTAX_RTOL = 4 u`` (measured 0 over 500
  steps, every variant).
* the reference vs optax in float64: ``F64_RTOL``; this checks the reference itself independently of adamx.

Every random input is seeded.
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
from adamx import check
from tests import trees
from tests.reference import adopt as ref
from tests.reference.adam import warmup_cosine
from tests.test_reference import U32, Pair, _f32_tol, _gradients, _seed, _track
from tests.test_validation import _BAD, _KIND, _message

N_SHORT = 50
N_LONG = 512
F64_RTOL = 1e-10
OPTAX_RTOL = 4 * U32


# ---------------------------------------------------------------------------------------------------------------
# adamx against the reference
# ---------------------------------------------------------------------------------------------------------------


def _hyper(rng: np.random.Generator) -> dict[str, float]:
  return {
      "learning_rate": float(10 ** rng.uniform(-4, -1.5)),
      "b1": float(rng.uniform(0.6, 0.95)),
      "b2": float(rng.uniform(0.95, 0.9999)),
      "eps": float(10 ** rng.uniform(-10, -6)),
      "weight_decay": float(10 ** rng.uniform(-4, -1)),
  }


def _decay_matrices(params):
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _linear_clip(count):
  return 0.5 + 0.1 * count  # a custom c_t, traceable (adamx) and plain (reference)


# Each option in both settings: the paper (clipped, and unclipped as its first version), Nesterov with masked
# decoupled decay, a warmup-cosine schedule with an eps large enough to be the floor of max(sqrt(v), eps) for many
# entries, and a custom clip schedule.
_CASES = ["default", "noclip", "nesterov_decay_mask", "schedule_eps", "custom_clip"]


def _case(name: str, h: dict[str, float]) -> Pair:
  lr = ref_lr = h["learning_rate"]
  kw = dict(b1=h["b1"], b2=h["b2"], eps=h["eps"])
  opts, ref_opts = {}, {}
  if name == "noclip":
    opts, ref_opts = {"use_clipping": False}, {"clipping": False}
  elif name == "nesterov_decay_mask":
    opts = ref_opts = {"nesterov": True, "weight_decay": h["weight_decay"], "mask": _decay_matrices}
  elif name == "schedule_eps":
    args = dict(init_value=lr / 100, peak_value=lr, warmup_steps=20, decay_steps=400, end_value=lr / 10)
    lr, ref_lr = adamx.warmup_cosine_schedule(**args), warmup_cosine(**args)
    kw["eps"] = 0.7
  elif name == "custom_clip":
    opts, ref_opts = {"clip_value_fn": _linear_clip}, {"clip_value": _linear_clip}
  else:
    assert name == "default", name
  return Pair(adamx.adopt(lr, **kw, **opts), ref.ADOPT(ref_lr, **kw, **ref_opts))


@functools.cache
def _pair(mode: str, case: str) -> tuple[Pair, dict[str, float]]:
  h = _hyper(np.random.default_rng(_seed("adopt", mode, case, "hyper")))
  return _case(case, h), h


def _f32_tols(h: dict[str, float], n: int) -> dict[str, float]:
  tol_nu = _f32_tol(h["b2"], n)
  tol_mu = _f32_tol(h["b1"], n) + tol_nu / 2
  tol_updates = tol_mu + U32
  return {"nu": tol_nu, "mu": tol_mu, "updates": tol_updates,
          "params": 8 * U32 * math.sqrt(n) + h["learning_rate"] * n * tol_updates}


def _f64_tols() -> dict[str, float]:
  return dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL)


def _against_reference(mode: str, case: str, n: int, change=lambda r: r) -> dict[str, float]:
  pair, h = _pair(mode, case)
  pair = Pair(pair.tx, change(pair.ref))
  f64 = mode == "f64"
  params = trees.mixed_params(np.random.default_rng(_seed("adopt", mode, case)), bf16=False,
                              real_dtype=np.float64 if f64 else np.float32)
  tol = _f64_tols() if f64 else _f32_tols(h, n)
  return _track(pair, params, seed=_seed("adopt", mode, case, "grads"), n_steps=n, tol=tol)


@pytest.mark.parametrize("case", _CASES)
def test_float64_trajectory_short(case, x64):
  worst = _against_reference("f64", case, N_SHORT)
  print(f"float64 {case}: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.parametrize("case", ["default", "nesterov_decay_mask"])
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


# A deliberately wrong reference (a changed constant or convention) must fail the float64 comparison.
_WRONG = {
    "clip_one_step_late": ("default", lambda r: dataclasses.replace(r, clip_value=lambda s: (s + 1) ** 0.25)),
    "no_clipping": ("default", lambda r: dataclasses.replace(r, clipping=False)),
    "b2_perturbed": ("noclip", lambda r: dataclasses.replace(r, b2=r.b2 * (1 - 1e-7))),
    "no_nesterov": ("nesterov_decay_mask", lambda r: dataclasses.replace(r, nesterov=False)),
    "decay_every_leaf": ("nesterov_decay_mask", lambda r: dataclasses.replace(r, mask=None)),
    "eps_halved": ("schedule_eps", lambda r: dataclasses.replace(r, eps=r.eps / 2)),
}


@pytest.mark.parametrize("wrong", list(_WRONG))
def test_comparison_detects_a_wrong_reference(wrong, x64):
  case, change = _WRONG[wrong]
  with pytest.raises(AssertionError, match="relative error"):
    _against_reference("f64", case, N_SHORT, change)


def test_first_two_steps_by_hand():
  """The first call only records v_0 = g_0^2 (zero update, m stays 0); the second normalises by |g_0|, clips to
  c_1 = 1 and takes (1 - b1) of it."""
  g0, g1 = jnp.array([2.0, -0.5, 0.0, 1e-3]), jnp.array([1.0, 4.0, 3.0, -1.0])
  tx = adamx.scale_by_adopt(b1=0.75, b2=0.5, eps=1e-6)
  u, s = tx.update(g0, tx.init(g0))
  np.testing.assert_array_equal(u, 0.0)
  np.testing.assert_array_equal(s.mu, 0.0)
  np.testing.assert_allclose(s.nu, g0**2, rtol=1e-7)
  assert int(s.count) == 1
  u, s = tx.update(g1, s)
  normed = np.array([0.5, 8.0, 3.0 / 1e-6, -1000.0])  # g1 / max(|g0|, eps)
  np.testing.assert_allclose(u, 0.25 * np.clip(normed, -1, 1), rtol=1e-6)
  np.testing.assert_allclose(s.nu, 0.5 * g0**2 + 0.5 * g1**2, rtol=1e-6)
  # the third call clips to c_2 = 2^(1/4)
  u, s = tx.update(g1, s)
  c2 = 2.0**0.25
  v1 = 0.5 * np.asarray(g0) ** 2 + 0.5 * np.asarray(g1) ** 2
  m2 = 0.75 * 0.25 * np.clip(normed, -1, 1) + 0.25 * np.clip(np.asarray(g1) / np.maximum(np.sqrt(v1), 1e-6), -c2, c2)
  np.testing.assert_allclose(u, m2, rtol=1e-6)


def test_complex_clip_is_the_modulus():
  """A complex normalised gradient keeps its phase and has its modulus clipped (as adamx.clip)."""
  tx = adamx.scale_by_adopt(b1=0.0)
  g0, g1 = jnp.array([1.0 + 0.0j]), jnp.array([3.0 + 4.0j])  # |g1 / |g0|| = 5 > c_1 = 1
  _, s = tx.update(g0, tx.init(g0))
  u, _ = tx.update(g1, s)
  np.testing.assert_allclose(u, [0.6 + 0.8j], rtol=1e-6)
  assert s.nu.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------------------------
# Against optax.contrib.adopt
# ---------------------------------------------------------------------------------------------------------------

_OPTAX_VARIANTS = {
    "default": {},
    "nesterov": {"nesterov": True},
    "noclip_decay": {"use_clipping": False, "weight_decay": 1e-2},
    "custom_clip_b2": {"clip_value_fn": _linear_clip, "b2": 0.95, "b1": 0.5},
}


def _optax_adopt(lr, weight_decay=0.0, mask=None, **kw):
  return optax.chain(optax.contrib.scale_by_adopt(**kw), optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(lr))


def _optax_trajectory_err(variant: str, n: int, *, jit: bool = True) -> float:
  kw = _OPTAX_VARIANTS[variant]
  rng = np.random.default_rng(_seed("adopt", "optax", variant))
  params = trees.mixed_params(rng, bf16=False, complex_leaf=False)  # optax's clipped ADOPT rejects complex leaves
  if not jit:  # op by op is slow: one matrix and one scalar leaf
    params = {"w": params["dense"]["w"], "s": params["blocks"][1][0]}
  lr = 3e-2
  tx, otx = adamx.adopt(lr, **kw), _optax_adopt(lr, **kw)
  step, ostep = (jax.jit(tx.update), jax.jit(otx.update)) if jit else (tx.update, otx.update)
  p1, s1, p2, s2 = params, tx.init(params), params, otx.init(params)
  worst = 0.0
  for t, g in enumerate(_gradients(rng, params, n), start=1):
    u1, s1 = step(g, s1, p1)
    u2, s2 = ostep(g, s2, p2)
    p1, p2 = adamx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    errs = [check.rel_err(p1, p2, 1.0), check.rel_err(u1, u2, lr),
            check.rel_err(check.moments(s1), check.moments(s2), 1.0)]
    worst = max(worst, *errs)
    assert worst <= OPTAX_RTOL, f"{variant} step {t}: {errs}"
  assert n < 20 or check.rel_err(p1, params) > 1e-2  # the trajectory went somewhere
  return worst


@pytest.mark.parametrize("variant", ["default", "noclip_decay"])  # all of them in test_matches_optax_long
def test_matches_optax_short(variant):
  print(f"optax {variant}: {_optax_trajectory_err(variant, N_SHORT):.1e}")


def test_matches_optax_bit_for_bit_eagerly():
  assert _optax_trajectory_err("default", 4, jit=False) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(_OPTAX_VARIANTS))
def test_matches_optax_long(variant):
  print(f"optax {variant}, 500 steps: {_optax_trajectory_err(variant, 500):.1e}")


def test_reference_matches_optax_float64(x64):
  """The reference reproduces optax in float64 (params and state every step): a check of the reference that does
  not go through adamx."""
  rng = np.random.default_rng(_seed("adopt", "optax-f64"))
  params = trees.mixed_params(rng, bf16=False, complex_leaf=False, real_dtype=np.float64)
  h = _hyper(rng)
  otx = optax.contrib.adopt(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"], nesterov=True)
  reference = ref.ADOPT(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"], nesterov=True)
  ostep = jax.jit(otx.update)
  p, s = params, otx.init(params)
  rp, rs = trees.to_numpy(params), reference.init(trees.to_numpy(params))
  for t, g in enumerate(_gradients(rng, params, N_SHORT), start=1):
    u, s = ostep(g, s, p)
    p = optax.apply_updates(p, u)
    rp, rs = reference.step(g, rp, rs, t)
    trees.assert_close(p, rp, F64_RTOL, f"step {t} params ", scale=1.0)
    trees.assert_close(s[0].mu, rs["mu"], F64_RTOL, f"step {t} mu ", scale=1.0)
    trees.assert_close(s[0].nu, rs["nu"], F64_RTOL, f"step {t} nu ", scale=1.0)


def test_optax_clipped_adopt_rejects_complex_params():
  """Why the registry compares only use_clipping=False with optax (its trees have a complex leaf)."""
  p = {"z": jnp.array([1.0 + 2.0j], jnp.complex64)}
  otx = optax.contrib.adopt(1e-2)
  with pytest.raises(ValueError, match="[Cc]omplex"):
    otx.update(p, otx.init(p), p)
  tx = adamx.adopt(1e-2)
  u, _ = tx.update(p, tx.init(p), p)
  assert u["z"].dtype == jnp.complex64


def test_eps_zero_first_step_stays_finite_where_optax_gives_nan():
  """With eps = 0 and an exactly zero first gradient, optax's first call computes 0 * (0 / 0) = NaN into m; adamx
  skips the unused division. The next step clips g / 0 = inf to c_1 = 1, as optax would from a finite m."""
  g0, g1 = jnp.array([0.0, 1.0]), jnp.array([2.0, 1.0])
  tx, otx = adamx.scale_by_adopt(eps=0.0), optax.contrib.scale_by_adopt(eps=0.0)
  _, s = tx.update(g0, tx.init(g0))
  _, os_ = otx.update(g0, otx.init(g0))
  assert bool(jnp.all(jnp.isfinite(s.mu))) and not bool(jnp.all(jnp.isfinite(os_.mu)))
  u, _ = tx.update(g1, s)
  np.testing.assert_allclose(u, [0.1, 0.1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Validation, arrays and tracers, inject_hyperparams
# ---------------------------------------------------------------------------------------------------------------

_ARGS = {
    "scale_by_adopt": ("b1", "b2", "eps", "use_clipping", "nesterov", "mu_dtype", "nu_dtype"),
    "adopt": ("learning_rate", "b1", "b2", "eps", "weight_decay", "mask", "use_clipping", "nesterov", "mu_dtype",
              "nu_dtype"),
}
_KINDS = {**_KIND, "use_clipping": "bool"}


def _bad_cases():
  for fn, args in _ARGS.items():
    for arg in args:
      for i, (value, excs, fragments) in enumerate(_BAD[_KINDS[arg]]):
        shown = type(value).__name__ if " at 0x" in repr(value) else repr(value)
        yield pytest.param(fn, arg, value, excs, fragments, id=f"{fn}-{arg}-{i}-{shown}")


@pytest.mark.parametrize("fn, arg, value, excs, fragments", list(_bad_cases()))
def test_bad_hyperparameter_raises_naming_function_argument_and_value(fn, arg, value, excs, fragments):
  with pytest.raises(excs, match=_message(fn, arg, value=value, fragments=fragments)):
    getattr(adamx, fn)(**{arg: value})


@pytest.mark.parametrize("fn", list(_ARGS))
@pytest.mark.parametrize("value", [0.25, "t**0.25", jnp.array(1.0)], ids=["float", "str", "array"])
def test_clip_value_fn_must_be_callable(fn, value):
  with pytest.raises(TypeError, match=_message(fn, "clip_value_fn", fragments=("callable",))):
    getattr(adamx, fn)(clip_value_fn=value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_valid_bool_flags(value):
  for fn in _ARGS:
    getattr(adamx, fn)(use_clipping=value, nesterov=value)


@pytest.mark.parametrize("kwargs", [dict(b1=0.0, b2=0.0, eps=0.0), dict(b1=0.999999, b2=0.999999, eps=1.0)])
def test_boundary_hyperparameters_step(kwargs):
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  tx = adamx.adopt(1e-2, **kwargs)
  s = tx.init(params)
  for k in range(3):
    u, s = tx.update({"w": jnp.array([0.3, -1.0, 2.0]) * (k + 1)}, s, params)
    assert bool(jnp.all(jnp.isfinite(u["w"])))


def test_arrays_and_tracers_are_accepted():
  """Hyperparameters as arrays (even out of range: not validated) and as traced values under jit give the plain
  optimizer's numbers."""
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.3)}
  grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)) + 0.1 * k, params) for k in range(4)]
  hp = dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-3, weight_decay=0.01)

  def run(**h):
    tx = adamx.adopt(**h)
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
  adamx.adopt(b1=jnp.array(1.5), b2=np.array(-1.0), eps=jnp.array(-1.0))  # arrays are not validated


def test_inject_hyperparams_keeps_clip_value_fn_static():
  """adamx.inject_hyperparams keeps a custom clip_value_fn static (it is not a schedule); with optax's, list it in
  static_args. Injected hyperparameters give the plain numbers (ADOPT rounds its decays to float32 anyway)."""
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  hp = dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-3, clip_value_fn=_linear_clip)
  tx = adamx.adopt(**hp)
  for itx in (adamx.inject_hyperparams(adamx.adopt)(**hp),
              optax.inject_hyperparams(adamx.adopt, static_args=("clip_value_fn",))(**hp)):
    assert "clip_value_fn" not in itx.init(params).hyperparams
    s, si, p, pi = tx.init(params), itx.init(params), params, params
    for k in range(4):
      g = jax.tree.map(lambda x, k=k: jnp.cos(x * (k + 1)), p)
      u, s = tx.update(g, s, p)
      ui, si = itx.update(g, si, pi)
      p, pi = adamx.apply_updates(p, u), adamx.apply_updates(pi, ui)
    trees.assert_close(pi, p, 1e-7, scale=1.0)
