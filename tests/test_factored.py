"""Adam with a factored second moment (``factored=True``): the float64 paper reference, optax's factored statistics,
algebraic checks, memory and validation.

Errors are measured as in ``tests/test_reference.py`` (whose ``_track`` is reused): per leaf,
``max|x_t - ref_t| / max_{s <= t} max|ref_s|`` for params, updates, ``mu``, ``nu`` (its ``v_row``/``v_col`` for a
factored leaf) and the counts after every step, on ``tests.trees.mixed_params`` without the complex leaf, with
``min_dim_size_to_factor=2`` so that the ``(4, 3)`` matrix and the ``(2, 3, 2)`` tensor (a batch of two factored
``3 x 2`` matrices, largest axis before the second-largest) are factored and the other leaves are not.

What coincides with optax: ``optax.scale_by_factored_rms`` keeps the same row and column statistics (same axes,
``v_row`` the mean over the largest axis) as EMAs of ``|g|^2 + epsilon``; given the same decay sequence they are the
same numbers. Its update is ``g / sqrt(v)`` with no first moment, no bias correction and no ``eps``: so with
``b1=0, eps=eps_root=0`` and a constant ``b2`` (optax's ``decay_rate_fn`` returning ``b2``) adamx's update is
optax's times ``sqrt(1 - b2^t)``; with optax's default schedule ``1 - (t)^(-0.8)`` (``adamx.inject_hyperparams``
feeding ``b2`` as a schedule) only the statistics coincide (adamx's bias correction assumes a constant ``b2``).
Non-factored leaves: optax adds ``epsilon = 1e-30`` to ``g^2``, adamx does not, which changes nothing in float32 for
these standard-normal gradients.

Tolerances:

* float64, adamx vs the reference: ``F64_RTOL = 1e-10`` as the other reference tests (a few roundings per step,
  carried by the EMAs; the reference sums where adamx averages). Measured below 1e-14 (500 steps).
* float32 vs the reference: ``tests.test_reference._f32_tols`` for the EMAs (the decays rounded to float32), with
  ``nu`` allowed ``8 u`` more for the row/column means and the updates ``2 tol_nu`` for the reconstruction
  ``v_row v_col / mean(v_row)`` (three quantities with ``nu``'s error, under a square root) plus ``8 u``; params the
  random walk ``8 u sqrt(n)`` plus ``lr n tol_updates``. Measured at most 0.4 of each bound (500 steps).
* adamx vs optax (float32): the statistics are the same operations on the same values: bit for bit eagerly. Jitted,
  XLA CPU compiles the two programs separately and may contract a multiply and an add of the EMA into one FMA in
  one and not the other: a rounding per step, carried by the EMA, bounded by ``_f32_tol(b2, n)``. The updates
  differ by the factor ``sqrt(1 - b2^t)`` (float32 here, float64 in the test) and by optax's two reciprocal square
  roots (``x^-0.5`` twice instead of one ``sqrt`` of the product): ``16 u``, plus the statistics' bound when jitted.
  Measured: eagerly 0 (statistics) and 3 u (updates); jitted 7 u / 5 u (40 steps) and 16 u / 11 u (400 steps).
* the reference's Adafactor vs ``optax.adafactor`` (no parameter scaling, no clipping) in float64: ``F64_RTOL``; this
  checks the reference's lines (4)-(7) independently of adamx.

Every random input is seeded.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx.optimizers import _common
from tests import trees
from tests.reference import factored as ref
from tests.test_reference import U32, Pair, _f32_tol, _gradients, _seed, _track

N_SHORT = 20
N_LONG = 500
MIN_DIM = 2
F64_RTOL = 1e-10


def _params(mode: str, seed: str) -> dict[str, Any]:
  return trees.mixed_params(np.random.default_rng(_seed("factored", mode, seed)), bf16=False, complex_leaf=False,
                            real_dtype=np.float64 if mode == "f64" else np.float32)


def _as_moments(view: Any) -> Any:
  """The reference's ``nu`` in adamx's layout: its ``RowCol`` statistics as :class:`adamx.FactoredMoment`."""
  return jax.tree.map(lambda x: adamx.FactoredMoment(*x) if isinstance(x, ref.RowCol) else x, view,
                      is_leaf=lambda x: isinstance(x, ref.RowCol))


@dataclasses.dataclass
class _InAdamxLayout:
  """The reference seen through adamx's state layout (means instead of the paper's sums); keeps the raw state."""

  opt: Any
  raw: Any = None
  params: Any = None

  def _view(self) -> dict:
    nu = _as_moments(ref.statistics(self.raw["nu"], self.params, self.opt.min_dim_size_to_factor))
    return {**self.raw, "nu": nu}

  def init(self, params):
    self.params, self.raw = params, self.opt.init(params)
    return self._view()

  def update(self, grads, params, state, t):
    delta, self.raw = self.opt.update(grads, params, self.raw, t)
    return delta, self._view()


# ---------------------------------------------------------------------------------------------------------------
# adamx against the reference
# ---------------------------------------------------------------------------------------------------------------


def _hyper(rng: np.random.Generator) -> dict[str, float]:
  return {"learning_rate": float(10 ** rng.uniform(-3, -1.5)), "b1": float(rng.uniform(0.6, 0.95)),
          "b2": float(rng.uniform(0.95, 0.999)), "eps": float(10 ** rng.uniform(-10, -6)),
          "weight_decay": float(10 ** rng.uniform(-4, -1))}


_CASES = ["adam", "adamw_mask", "eps_root", "factored_eps"]


def _decay_matrices(params):
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _case(name: str, h: dict[str, float]) -> Pair:
  kw = dict(learning_rate=h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"])
  fac = dict(factored=True, min_dim_size_to_factor=MIN_DIM)
  rkw = dict(kw, min_dim_size_to_factor=MIN_DIM)
  if name == "adam":
    tx, r = adamx.adam(**kw, **fac), ref.FactoredAdam(**rkw)
  elif name == "adamw_mask":
    tx = adamx.adamw(**kw, weight_decay=h["weight_decay"], mask=_decay_matrices, **fac)
    r = ref.FactoredAdam(**rkw, weight_decay=h["weight_decay"], mask=_decay_matrices)
  elif name == "eps_root":
    tx, r = adamx.adam(**kw, eps_root=1e-6, **fac), ref.FactoredAdam(**rkw, eps_root=1e-6)
  else:
    assert name == "factored_eps", name
    tx, r = adamx.adam(**kw, factored_eps=0.3, **fac), ref.FactoredAdam(**rkw, eps1=0.3)
  return Pair(tx, _InAdamxLayout(r))


@functools.cache
def _hyper_of(mode: str, case: str) -> dict[str, float]:
  return _hyper(np.random.default_rng(_seed("factored", mode, case, "hyper")))


def _f32_tols(h: dict[str, float], n: int) -> dict[str, float]:
  tol_mu, tol_nu = _f32_tol(h["b1"], n), _f32_tol(h["b2"], n) + 8 * U32
  tol_updates = tol_mu + 2 * tol_nu + 8 * U32
  return {"mu": tol_mu, "nu": tol_nu, "updates": tol_updates,
          "params": 8 * U32 * math.sqrt(n) + h["learning_rate"] * n * tol_updates}


def _against_reference(mode: str, case: str, n: int, change=None) -> dict[str, float]:
  h = _hyper_of(mode, case)
  pair = _case(case, h)
  if change is not None:
    pair = Pair(pair.tx, _InAdamxLayout(change(pair.ref.opt)))
  tol = dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL) if mode == "f64" else _f32_tols(h, n)
  return _track(pair, _params(mode, case), seed=_seed("factored", mode, case, "grads"), n_steps=n, tol=tol)


@pytest.mark.parametrize("case", ["adamw_mask"])
def test_float64_trajectory_short(case, x64):
  worst = _against_reference("f64", case, N_SHORT)
  print(f"float64 {case}: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.slow
def test_float32_trajectory_short():
  worst = _against_reference("f32", "adamw_mask", N_SHORT)
  tol = _f32_tols(_hyper_of("f32", "adamw_mask"), N_SHORT)
  print("float32: " + ", ".join(f"{k}={v / tol[k]:.2f} of tol" for k, v in worst.items()))


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_float64_trajectory(case, x64):
  worst = _against_reference("f64", case, N_LONG)
  print(f"float64 {case}: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_float32_trajectory(case):
  worst = _against_reference("f32", case, N_LONG)
  tol = _f32_tols(_hyper_of("f32", case), N_LONG)
  print(f"float32 {case}: " + ", ".join(f"{k}={v / tol[k]:.2f} of tol" for k, v in worst.items()))


# A deliberately wrong reference must fail the float64 comparison.
_WRONG = {
    "b1_perturbed": ("adam", lambda r: dataclasses.replace(r, b1=r.b1 * (1 - 1e-7))),
    "eps1_dropped": ("factored_eps", lambda r: dataclasses.replace(r, eps1=0.0)),
    "b2_perturbed": ("adam", lambda r: dataclasses.replace(r, b2=r.b2 * (1 - 1e-7))),
}


@pytest.mark.parametrize("wrong", [w if w == "eps1_dropped" else pytest.param(w, marks=pytest.mark.slow)
                                   for w in _WRONG])
def test_comparison_detects_a_wrong_reference(wrong, x64):
  case, change = _WRONG[wrong]
  with pytest.raises(AssertionError, match="relative error"):
    _against_reference("f64", case, 10, change)


# ---------------------------------------------------------------------------------------------------------------
# optax: the same statistics
# ---------------------------------------------------------------------------------------------------------------


def _split(nu: Any, params: Any) -> tuple[list, list]:
  """``(factored, full)``: the ``(v_row, v_col)`` of the factored leaves and the full ``nu`` of the others."""
  leaves = jax.tree.structure(params).flatten_up_to(nu)
  return ([(v.v_row, v.v_col) for v in leaves if isinstance(v, adamx.FactoredMoment)],
          [v for v in leaves if not isinstance(v, adamx.FactoredMoment)])


def _optax_split(state: Any, params: Any) -> tuple[list, list]:
  ours = _split(adamx.adam(factored=True, min_dim_size_to_factor=MIN_DIM).init(params)[1].nu, params)
  n_fac = len(ours[0])
  treedef = jax.tree.structure(params)
  rows, cols, full = (treedef.flatten_up_to(x) for x in (state.v_row, state.v_col, state.v))
  facs = [(r, c) for r, c, p in zip(rows, cols, jax.tree.leaves(params))
          if _common.factored_dims(np.shape(p), MIN_DIM) is not None]
  assert len(facs) == n_fac
  return facs, [v for v, p in zip(full, jax.tree.leaves(params))
                if _common.factored_dims(np.shape(p), MIN_DIM) is None]


def _optax_trajectory(tx, otx, n: int, seed: str, check_updates, tol: float, jit: bool = True) -> float:
  params = _params("f32", seed)
  state, ostate = tx.init(params), otx.init(params)
  update, oupdate = (jax.jit(tx.update), jax.jit(otx.update)) if jit else (tx.update, otx.update)
  worst = 0.0
  for t, g in enumerate(_gradients(np.random.default_rng(_seed("factored", "optax", seed)), params, n), start=1):
    g = jax.tree.map(jnp.asarray, g)  # optax's abs_sq refuses NumPy scalars eagerly
    u, state = update(g, state, params)
    ou, ostate = oupdate(g, ostate, params)
    inner = state if isinstance(state, adamx.ScaleByAdamState) else state.inner_state
    (fac, full), (ofac, ofull) = _split(inner.nu, params), _optax_split(ostate, params)
    for (r, c), (o_r, o_c) in zip(fac, ofac):
      worst = max(worst, trees.max_rel_err(r, o_r), trees.max_rel_err(c, o_c))
    for v, ov in zip(full, ofull):
      worst = max(worst, trees.max_rel_err(v, ov))
    assert worst <= tol, (t, worst)
    check_updates(t, u, ou)
  return worst


def _constant_decay(b2: float):
  return (adamx.scale_by_adam(b1=0.0, b2=b2, eps=0.0, factored=True, min_dim_size_to_factor=MIN_DIM),
          optax.scale_by_factored_rms(min_dim_size_to_factor=MIN_DIM, decay_rate_fn=lambda step, rate: b2))


def _check_updates(b2: float, tol: float, worst: list):
  def check(t, u, ou):
    worst[0] = max(worst[0], trees.max_rel_err(u, jax.tree.map(lambda x: x * math.sqrt(1 - b2**t), ou)))
    assert worst[0] <= tol, (t, worst[0])

  return check


@pytest.mark.slow  # op-by-op dispatch compiles every primitive once: ~10 s for a few steps
def test_statistics_match_optax_bitwise_eagerly():
  """Eagerly the statistics are bit for bit optax's; the updates differ by the factor sqrt(1 - b2^t)."""
  b2, worst_u = 0.97, [0.0]
  worst = _optax_trajectory(*_constant_decay(b2), 3, "eager", _check_updates(b2, 16 * U32, worst_u), tol=0.0,
                            jit=False)
  print(f"statistics {worst / U32:.1f} u, updates {worst_u[0] / U32:.1f} u")


@pytest.mark.parametrize("b2, n", [(0.97, 40), pytest.param(0.995, 400, marks=pytest.mark.slow)])
def test_statistics_and_updates_match_optax_jitted(b2, n):
  worst_u = [0.0]
  worst = _optax_trajectory(*_constant_decay(b2), n, f"jit{n}", _check_updates(b2, 16 * U32 + _f32_tol(b2, n), worst_u),
                            tol=_f32_tol(b2, n))
  print(f"statistics {worst / U32:.1f} u, updates {worst_u[0] / U32:.1f} u (tol {_f32_tol(b2, n) / U32:.0f} u)")


def test_statistics_match_optax_with_its_decay_schedule():
  """optax's default ``decay_rate_fn`` is ``1 - (count + 1)^(-0.8)``; adamx gets it as a schedule for ``b2``."""
  tx = adamx.inject_hyperparams(adamx.scale_by_adam)(
      b1=0.0, b2=lambda count: 1.0 - (count + 1.0) ** -0.8, factored=True, min_dim_size_to_factor=MIN_DIM)
  otx = optax.scale_by_factored_rms(min_dim_size_to_factor=MIN_DIM)
  n = 20
  _optax_trajectory(tx, otx, n, "schedule", lambda t, u, ou: None, tol=_f32_tol(1.0 - n**-0.8, n))


def test_reference_adafactor_matches_optax(x64):
  """The reference's Algorithm 4/5 lines against optax.adafactor without parameter scaling or clipping."""
  params = _params("f64", "adafactor")
  lr = 0.01
  otx = optax.adafactor(lr, min_dim_size_to_factor=MIN_DIM, multiply_by_parameter_scale=False,
                        clipping_threshold=None)
  # optax evaluates its decay schedule 1 - t^(-0.8) in float32 even under x64: the reference is given that value.
  r = ref.Adafactor(lr, decay=lambda t: float(1 - jnp.asarray(t, jnp.float32) ** -0.8), min_dim_size_to_factor=MIN_DIM)
  ostate, rstate = otx.init(params), r.init(trees.to_numpy(params))
  update = jax.jit(otx.update)
  for t, g in enumerate(_gradients(np.random.default_rng(_seed("factored", "adafactor")), params, 20), start=1):
    ou, ostate = update(g, ostate, params)
    delta, rstate = r.update(g, trees.to_numpy(params), rstate, t)
    trees.assert_close(ou, delta, F64_RTOL, f"step {t} updates")
    fac, full = _optax_split(ostate[0], params)
    stats = jax.tree.structure(params).flatten_up_to(ref.statistics(rstate["nu"], params, MIN_DIM))
    trees.assert_close(fac + full, [tuple(s) for s in stats if isinstance(s, ref.RowCol)] +
                       [s for s in stats if not isinstance(s, ref.RowCol)], F64_RTOL, f"step {t} statistics")
    params = jax.tree.map(lambda p, u: p + u, params, ou)


# ---------------------------------------------------------------------------------------------------------------
# Algebra, structure, memory
# ---------------------------------------------------------------------------------------------------------------


def test_no_leaf_factored_is_bitwise_plain_adam():
  """factored=True where no leaf qualifies: the same state layout and bit-for-bit the same numbers."""
  params = _params("f32", "plain")
  plain, fac = adamx.adamw(1e-2, weight_decay=0.1), adamx.adamw(1e-2, weight_decay=0.1, factored=True)
  s1, s2 = plain.init(params), fac.init(params)
  assert jax.tree.structure(s1) == jax.tree.structure(s2)
  u1f, u2f = jax.jit(plain.update), jax.jit(fac.update)
  for g in _gradients(np.random.default_rng(3), params, 5):
    (u1, s1), (u2, s2) = u1f(g, s1, params), u2f(g, s2, params)
    jax.tree.map(np.testing.assert_array_equal, (u1, s1), (u2, s2))


def test_rank_one_squared_gradients_make_factoring_exact():
  """If every g_t^2 is the same rank-one matrix up to a scale (g_t = s_t a b^T), the EMA of g^2 is rank one and the
  reconstruction v_row v_col / mean(v_row) is exact (factored_eps=0): factored Adam equals Adam."""
  rng = np.random.default_rng(11)
  a, b = rng.normal(size=(5, 1)), rng.normal(size=(1, 7))
  p = jnp.zeros((5, 7))
  tx, fac = adamx.adam(1e-2), adamx.adam(1e-2, factored=True, min_dim_size_to_factor=5, factored_eps=0.0)
  s, sf = tx.init(p), fac.init(p)
  assert isinstance(sf[1].nu, adamx.FactoredMoment)
  update, fac_update = jax.jit(tx.update), jax.jit(fac.update)
  for scale in rng.uniform(0.5, 2.0, size=20):
    g = jnp.asarray(scale * a * b, jnp.float32)
    (u, s), (uf, sf) = update(g, s, p), fac_update(g, sf, p)
    trees.assert_close(uf, u, 16 * U32, "updates")
    nu_row = np.mean(np.asarray(s[1].nu), axis=1)
    trees.assert_close(sf[1].nu.v_row, nu_row, 16 * U32, "v_row")


def test_factored_axes_follow_optax():
  """Which leaves are factored and over which axes: the same as optax's init on shapes with ties and batch axes."""
  shapes = [(128, 128), (300, 129), (129, 300), (4, 200, 300), (300, 4, 200), (127, 1000), (1000,), (), (64, 64, 2)]
  params = {str(s): jnp.zeros(s) for s in shapes}
  ours = adamx.scale_by_adam(factored=True).init(params).nu
  theirs = optax.scale_by_factored_rms().init(params)
  for k in params:
    if isinstance(ours[k], adamx.FactoredMoment):
      assert ours[k].v_row.shape == theirs.v_row[k].shape and ours[k].v_col.shape == theirs.v_col[k].shape, k
      assert theirs.v[k].shape == (1,), k
    else:
      assert ours[k].shape == theirs.v[k].shape, k


def _nbytes(tree: Any) -> int:
  return sum(x.nbytes for x in jax.tree.leaves(tree))


def test_memory_of_the_second_moment():
  """nu of a (n, m) matrix is n + m numbers; the vector leaves keep their full nu."""
  params = {"w": jnp.zeros((256, 512)), "b": jnp.zeros(512), "emb": jnp.zeros((1000, 64), jnp.bfloat16)}
  full, fac = adamx.adam().init(params)[1], adamx.adam(factored=True, min_dim_size_to_factor=64).init(params)[1]
  assert _nbytes(full.nu) == sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(params))
  assert _nbytes(fac.nu) == (256 + 512 + 512) * 4 + (1000 + 64) * 2
  assert _nbytes(fac.mu) == _nbytes(full.mu)
  assert fac.nu["emb"].v_row.dtype == jnp.bfloat16


def test_dtypes_and_one_trace():
  params = {"w": jnp.ones((6, 4), jnp.bfloat16), "v": jnp.ones((4, 5))}
  tx = adamx.adamw(1e-3, nu_dtype=jnp.bfloat16, mu_dtype=jnp.bfloat16, factored=True, min_dim_size_to_factor=4)
  state = tx.init(params)
  assert {x.dtype for x in jax.tree.leaves(state[0].nu)} == {jnp.dtype(jnp.bfloat16)}
  traces = []

  @jax.jit
  def step(p, s, g):
    traces.append(1)
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s, u

  for g in _gradients(np.random.default_rng(5), params, 3):
    new_params, new_state, u = step(params, state, g)
    assert jax.tree.map(lambda x: x.dtype, u) == jax.tree.map(lambda x: x.dtype, g)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
    params, state = new_params, new_state
  assert len(traces) == 1
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


def test_inside_optax_inject_hyperparams_with_static_min_dim():
  params = {"w": jnp.ones((6, 4))}
  itx = optax.inject_hyperparams(adamx.adamw, static_args=("min_dim_size_to_factor",))(
      learning_rate=1e-2, factored=True, min_dim_size_to_factor=4)
  state = itx.init(params)
  u, state = jax.jit(itx.update)(params, state, params)
  assert isinstance(state.inner_state[0].nu["w"], adamx.FactoredMoment)
  assert bool(jnp.all(jnp.isfinite(u["w"])))


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["adam", "adamw", "scale_by_adam"])
def test_validation(fn):
  factory = getattr(adamx, fn)
  with pytest.raises(ValueError, match=rf"adamx\.{fn}: min_dim_size_to_factor must be a positive integer, got 0"):
    factory(factored=True, min_dim_size_to_factor=0)
  with pytest.raises(TypeError, match=rf"adamx\.{fn}: min_dim_size_to_factor must be a positive integer, got 2\.5"):
    factory(factored=True, min_dim_size_to_factor=2.5)
  with pytest.raises(TypeError, match=rf"adamx\.{fn}: min_dim_size_to_factor must be a positive integer, got True"):
    factory(factored=True, min_dim_size_to_factor=True)
  for name, value in (("min_dim_size_to_factor", 64), ("factored_eps", 1e-20)):  # would be silently ignored
    with pytest.raises(ValueError, match=rf"adamx\.{fn}: {name} is used only with factored=True"):
      factory(**{name: value})
  with pytest.raises(TypeError, match=rf"adamx\.{fn}: factored must be a Python bool, got 'yes'"):
    factory(factored="yes")
  with pytest.raises(ValueError, match=rf"adamx\.{fn}: factored_eps must be a finite number >= 0, got -1\.0"):
    factory(factored=True, factored_eps=-1.0)


def test_complex_leaves_that_would_be_factored_are_rejected():
  params = {"c": jnp.ones((3, 4), jnp.complex64), "v": jnp.ones(4, jnp.complex64)}
  with pytest.raises(TypeError, match=r"adamx\.scale_by_adam: factored=True cannot factor the complex parameter "
                                      r"\['c'\] \(shape \(3, 4\), complex64\)"):
    adamx.adamw(factored=True, min_dim_size_to_factor=3).init(params)
  # A complex vector, or a complex matrix below the threshold, keeps its full second moment.
  state = adamx.adamw(factored=True, min_dim_size_to_factor=4).init(params)
  assert state[0].nu["c"].shape == (3, 4)


def test_traced_min_dim_size_to_factor():
  """Traced (optax.inject_hyperparams without static_args) it is refused with factored=True; a plain Adam's
  defaults are None, so injecting all of its arguments leaves the factored ones out of the state."""
  with pytest.raises(TypeError, match=r"adamx\.adam: min_dim_size_to_factor must be a concrete positive int with "
                                      r"factored=True"):
    jax.jit(lambda k: adamx.adam(factored=True, min_dim_size_to_factor=k).init(jnp.ones((3, 3))))(jnp.asarray(2))
  state = optax.inject_hyperparams(adamx.adam)(learning_rate=1e-2).init({"w": jnp.ones((3, 3))})
  assert "min_dim_size_to_factor" not in state.hyperparams and "factored_eps" not in state.hyperparams
