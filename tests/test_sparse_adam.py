"""Lazy sparse-row Adam (``adamx.sparse_adam``): ``torch.optim.SparseAdam``, the float64 reference
(``tests/reference/sparse_adam.py``), the dense path against the indices path, and the semantics of untouched,
repeated and out-of-range rows.

Each step looks up a random batch of rows of an embedding table, with repeats (``K`` draws with replacement), and
the gradient of the looked-up rows is a seeded random ``(K, D)`` array (the loss ``sum(c * table[tokens])``), so
both libraries see the same float32 row gradients: PyTorch through ``F.embedding(..., sparse=True)`` and backward
(an uncoalesced sparse gradient that ``SparseAdam`` coalesces), adamx through ``update(rows, ..., indices=tokens)``.
Params, ``exp_avg``/``mu`` and ``exp_avg_sq``/``nu`` are compared after every step, normwise per array:
``max|x_t - ref_t| / max_{s <= t} max|ref_s|``.

Tolerances (``u = 2^-24``):

* adamx vs PyTorch, float32: both round the same EMAs in float32, PyTorch as ``old + (1 - b) (new - old)``, adamx as
  ``(1 - b) new + b old``: a few roundings per step carried by the EMA, bounded by ``tests.test_reference._f32_tol``
  for ``mu`` (``b1``) and ``nu`` (``b2``). The step size: PyTorch forms ``lr sqrt(1 - b2^t) / (1 - b1^t)`` in float64,
  adamx in float32 (``~2e-7`` relative); per step the update is off by ``tol_mu + tol_nu / 2 + 4 u`` relative and the
  params accumulate ``8 u sqrt(n)`` of rounding plus ``lr n`` times that. Measured at most 0.3 of each bound.
* adamx vs the reference: float64 ``1e-12`` (the same formula in another order); float32 the bounds above.
* dense path vs indices path: bit for bit eagerly (each primitive compiled alone, so the same IEEE operations).
  Under ``jit`` XLA CPU's fusion emitters may contract a multiply and an add of the EMA into one FMA in one program
  and not in the other (with ``--xla_cpu_use_fusion_emitters=false`` the jitted paths agree bit for bit too): the
  state stays equal, the update differs by up to two roundings relative to its own entries, ``JIT_RTOL = 8 u`` of
  the largest entry (measured 3.7 u over 100 steps).

Every random input is seeded.
"""

from __future__ import annotations

import doctest
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adamx
from adamx.optimizers import _sparse_adam
from tests.reference import sparse_adam as ref
from tests.test_reference import U32, _f32_tol

JIT_RTOL = 8 * U32


def _seed(*names: str) -> int:
  return zlib.crc32("/".join(("sparse_adam",) + names).encode())


def _batches(seed: str, n: int, rows: int, k: int, dim: int):
  """``n`` seeded steps of ``(tokens, row_grads)``: ``k`` lookups with replacement, float32 gradients."""
  rng = np.random.default_rng(_seed(seed))
  for _ in range(n):
    yield rng.integers(0, rows, size=k), rng.normal(size=(k, dim)).astype(np.float32)


def _rel(actual, expected, scale: float) -> float:
  return float(np.max(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)))) / max(scale, 1e-30)


class _Worst:
  """Running trajectory-normwise errors of named arrays (see the module docstring)."""

  def __init__(self, tol: dict[str, float]):
    self.tol, self.scale, self.worst = tol, dict.fromkeys(tol, 0.0), dict.fromkeys(tol, 0.0)

  def __call__(self, t: int, name: str, actual, expected) -> None:
    self.scale[name] = max(self.scale[name], float(np.max(np.abs(expected))))
    err = _rel(actual, expected, self.scale[name])
    self.worst[name] = max(self.worst[name], err)
    assert err <= self.tol[name], (f"step {t}, {name}: trajectory-normwise relative error {err:.3e} > "
                                   f"{self.tol[name]:.3e}")


def _f32_tols(lr: float, b1: float, b2: float, n: int) -> dict[str, float]:
  tol_mu, tol_nu = _f32_tol(b1, n), _f32_tol(b2, n)
  tol_updates = tol_mu + tol_nu / 2 + 4 * U32
  return {"mu": tol_mu, "nu": tol_nu, "params": 8 * U32 * math.sqrt(n) + lr * n * tol_updates}


def _rows_step(tx):
  @jax.jit
  def step(table, state, tokens, rows):
    updates, state = tx.update(rows, state, table, indices=tokens)
    return table.at[tokens].add(updates), state

  return step


# ---------------------------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------------------------


def _against_torch(n: int, rows: int, k: int, dim: int, lr: float, b1: float, b2: float, eps: float, seed: str):
  table0 = np.random.default_rng(_seed(seed, "table")).normal(size=(rows, dim)).astype(np.float32)
  weight = torch.nn.Parameter(torch.tensor(table0))
  opt = torch.optim.SparseAdam([weight], lr=lr, betas=(b1, b2), eps=eps)
  tx = adamx.sparse_adam(lr, b1, b2, eps)
  table, state = jnp.asarray(table0), tx.init(jnp.asarray(table0))
  step = _rows_step(tx)
  check = _Worst(_f32_tols(lr, b1, b2, n))
  for t, (tokens, c) in enumerate(_batches(seed, n, rows, k, dim), start=1):
    opt.zero_grad()
    with torch.sparse.check_sparse_tensor_invariants(False):
      loss = (torch.nn.functional.embedding(torch.tensor(tokens), weight, sparse=True) * torch.tensor(c)).sum()
      loss.backward()
      assert weight.grad.is_sparse
      opt.step()
    table, state = step(table, state, tokens, c)
    st = opt.state[weight]
    check(t, "params", table, weight.detach().numpy())
    check(t, "mu", state[0].mu, st["exp_avg"].numpy())
    check(t, "nu", state[0].nu, st["exp_avg_sq"].numpy())
    assert int(state[0].count) == st["step"] == t
  return {k: v / check.tol[k] for k, v in check.worst.items()}


def test_torch_trajectory_short():
  worst = _against_torch(30, rows=64, k=24, dim=8, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, seed="torch")
  print("of tol: " + ", ".join(f"{k}={v:.2f}" for k, v in worst.items()))


@pytest.mark.slow
@pytest.mark.parametrize("n, b1, b2, eps", [(320, 0.9, 0.999, 1e-8), (1500, 0.0, 0.99, 1e-6),
                                            (1500, 0.8, 0.9999, 1e-3)])
def test_torch_trajectory(n, b1, b2, eps):
  worst = _against_torch(n, rows=500, k=40, dim=16, lr=3e-3, b1=b1, b2=b2, eps=eps, seed=f"torch{n}{b1}{b2}")
  print("of tol: " + ", ".join(f"{k}={v:.2f}" for k, v in worst.items()))


# ---------------------------------------------------------------------------------------------------------------
# The float64 reference
# ---------------------------------------------------------------------------------------------------------------


def _against_reference(n: int, dtype, tol: dict[str, float], lr: float = 1e-2, b1: float = 0.85, b2: float = 0.99,
                       eps: float = 1e-7, schedule: bool = False, make_ref=ref.SparseAdam):
  rows, k, dim = 40, 12, (3, 2)  # rows with a 2-D shape
  table0 = np.random.default_rng(_seed("ref", "table")).normal(size=(rows, *dim))
  rate = adamx.linear_schedule(lr, lr / 10, n) if schedule else lr
  ref_rate = (lambda count: lr + (lr / 10 - lr) * min(count, n) / n) if schedule else lr
  tx, r = adamx.sparse_adam(rate, b1, b2, eps), make_ref(ref_rate, b1, b2, eps)
  table = jnp.asarray(table0, dtype)
  state, rstate, rtable = tx.init(table), r.init(table0), table0
  step = _rows_step(tx)
  check = _Worst(tol)
  for t, (tokens, c) in enumerate(_batches("ref", n, rows, k, 6), start=1):
    c = c.reshape(k, *dim)
    table, state = step(table, state, tokens, jnp.asarray(c, dtype))
    delta, rstate = r.update(tokens, c, rtable, rstate, t)
    rtable = rtable + delta
    check(t, "params", table, rtable)
    check(t, "mu", state[0].mu, rstate["mu"])
    check(t, "nu", state[0].nu, rstate["nu"])
  return check.worst


@pytest.mark.parametrize("schedule", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_float64_reference(schedule, x64):
  worst = _against_reference(150, jnp.float64, dict.fromkeys(("params", "mu", "nu"), 1e-12), schedule=schedule)
  print(", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.slow
def test_float32_reference():
  n = 150
  worst = _against_reference(n, jnp.float32, _f32_tols(1e-2, 0.85, 0.99, n))
  print(", ".join(f"{k}={v / U32:.1f} u" for k, v in worst.items()))


class _PerRowCount(ref.SparseAdam):
  """A wrong reference: bias-corrects each row with the number of steps that touched it, not the global step."""

  def update(self, indices, row_grads, table, state, t):
    touches = state.get("touches", np.zeros(np.shape(table)[0], int)).copy()
    touches[np.unique(indices)] += 1
    delta, new = super().update(indices, row_grads, table, {k: v for k, v in state.items() if k != "touches"}, t)
    s = np.maximum(touches, 1).reshape((-1,) + (1,) * (np.ndim(table) - 1))
    fix = (np.sqrt(1 - self.b2**s) / (1 - self.b1**s)) / (math.sqrt(1 - self.b2**t) / (1 - self.b1**t))
    return delta * fix, {**new, "touches": touches}


@pytest.mark.parametrize("make_ref", [
    _PerRowCount,
    pytest.param(lambda lr, b1, b2, eps: ref.SparseAdam(lr, b1, b2 * (1 + 1e-7), eps), marks=pytest.mark.slow),
    pytest.param(lambda lr, b1, b2, eps: ref.SparseAdam(lr, b1, b2, 2 * eps), marks=pytest.mark.slow)],
                         ids=["per_row_count", "b2_perturbed", "eps_doubled"])
def test_comparison_detects_a_wrong_reference(make_ref, x64):
  with pytest.raises(AssertionError, match="relative error"):
    _against_reference(30, jnp.float64, dict.fromkeys(("params", "mu", "nu"), 1e-12), make_ref=make_ref)


# ---------------------------------------------------------------------------------------------------------------
# The dense path and the indices path
# ---------------------------------------------------------------------------------------------------------------


def _both_paths(tx, dtype, n: int, jit: bool, seed: str, rows: int = 30, k: int = 10, dim: int = 4):
  """Run the dense and the indices paths side by side; yield ``(t, dense, indexed)`` with each a tuple
  ``(table, state, dense-shaped updates)``."""
  table0 = jnp.asarray(np.random.default_rng(_seed(seed, "table")).normal(size=(rows, dim)), dtype)
  dense_update = jax.jit(tx.update) if jit else tx.update
  rows_update = jax.jit(lambda g, s, p, i: tx.update(g, s, p, indices=i)) if jit else (
      lambda g, s, p, i: tx.update(g, s, p, indices=i))
  pd = pi = table0
  sd = si = tx.init(table0)
  for t, (tokens, c) in enumerate(_batches(seed, n, rows, k, dim), start=1):
    c = jnp.asarray(c, dtype)
    grads = jnp.zeros_like(table0).at[tokens].add(c)  # what jax.grad of a lookup gives: repeats summed
    ud, sd = dense_update(grads, sd, pd)
    ui, si = rows_update(c, si, pi, tokens)
    pd, pi = adamx.apply_updates(pd, ud), pi.at[tokens].add(ui)
    yield t, (pd, sd, ud), (pi, si, jnp.zeros_like(ud).at[tokens].add(ui))


@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.bfloat16, marks=pytest.mark.slow)])
def test_dense_and_indices_paths_are_bitwise_equal_eagerly(dtype):
  """Eagerly (each primitive compiled alone): 3 steps, with repeated rows (k = 10 draws from 30 rows)."""
  tx = adamx.sparse_adam(adamx.linear_schedule(1e-2, 1e-3, 50), b1=0.9, b2=0.99)
  for t, dense, indexed in _both_paths(tx, dtype, 3, jit=False, seed=f"bitwise{dtype.__name__}"):
    for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(indexed)):
      np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), err_msg=f"step {t}")


def test_dense_and_indices_paths_agree_jitted():
  tx = adamx.sparse_adam(1e-2, b1=0.9, b2=0.99)
  worst = 0.0
  for t, dense, indexed in _both_paths(tx, jnp.float32, 100, jit=True, seed="jit"):
    (pd, sd, ud), (pi, si, ui) = dense, indexed
    for a, b in [(ud, ui), (sd[0].mu, si[0].mu), (sd[0].nu, si[0].nu)]:
      worst = max(worst, _rel(a, b, float(jnp.max(jnp.abs(b)))))
    assert worst <= JIT_RTOL, (t, worst)
    assert int(sd[0].count) == int(si[0].count) == t
  print(f"worst {worst / U32:.1f} u")


def test_untouched_rows_are_left_exactly_alone():
  tx = adamx.sparse_adam(1e-1)
  table = jnp.asarray(np.random.default_rng(_seed("untouched")).normal(size=(6, 3)), jnp.float32)
  state = tx.init(table)
  update = jax.jit(tx.update)
  g1 = jnp.zeros_like(table).at[jnp.array([1, 4])].set(1.0)
  u, state = update(g1, state, table)
  table1 = adamx.apply_updates(table, u)
  g2 = jnp.zeros_like(table).at[jnp.array([4])].set(-2.0)
  u2, state2 = update(g2, state, table1)
  np.testing.assert_array_equal(u2[1], 0.0)
  np.testing.assert_array_equal(state2[0].mu[1], state[0].mu[1])  # row 1: touched at step 1 only, not decayed
  np.testing.assert_array_equal(state2[0].nu[1], state[0].nu[1])
  np.testing.assert_array_equal(state2[0].mu[np.array([0, 2, 3, 5])], 0.0)
  assert float(u[4, 0]) != 0.0 and float(u2[4, 0]) != 0.0
  # dense Adam would move row 1 at step 2 (its momentum): lazy Adam does not
  adam = adamx.adam(1e-1)
  adam_update = jax.jit(adam.update)
  dense_u = adam_update(g2, adam_update(g1, adam.init(table))[1])[0]
  assert float(jnp.abs(dense_u[1]).max()) > 0


def test_a_listed_row_with_zero_gradient_is_touched():
  """The indices path treats every listed row as touched (PyTorch: every stored row of a sparse gradient), so its
  moments decay; the dense path cannot see it and leaves it alone."""
  tx = adamx.scale_by_sparse_adam(b1=0.5, b2=0.5)
  table = jnp.zeros((4, 2))
  rows_update = jax.jit(lambda g, s: tx.update(g, s, table, indices=jnp.array([2])))
  _, state = rows_update(jnp.ones((1, 2)), tx.init(table))
  u, state2 = rows_update(jnp.zeros((1, 2)), state)
  np.testing.assert_allclose(state2.mu[2], 0.5 * state.mu[2])
  np.testing.assert_allclose(state2.nu[2], 0.5 * state.nu[2])
  assert float(u[0, 0]) > 0  # the momentum keeps moving it
  ud, state3 = jax.jit(tx.update)(jnp.zeros((4, 2)), state, table)
  np.testing.assert_array_equal(state3.mu, state.mu)
  np.testing.assert_array_equal(ud, 0.0)


def test_repeated_indices_are_summed_once():
  """A row listed three times gets one update with the summed gradient (torch's coalesce), placed at its first
  position; table.at[tokens].add applies it once."""
  tx = adamx.sparse_adam(1e-2, b1=0.9, b2=0.99)
  table = jnp.asarray(np.random.default_rng(_seed("repeats")).normal(size=(5, 3)), jnp.float32)
  rows = jnp.asarray(np.random.default_rng(_seed("repeats", "g")).normal(size=(4, 3)), jnp.float32)
  update = jax.jit(lambda g, i: tx.update(g, tx.init(table), table, indices=i))
  u, s = update(rows, jnp.array([3, 1, 3, 3]))
  summed = rows[0] + rows[2] + rows[3]
  u1, s1 = update(jnp.stack([summed, rows[1]]), jnp.array([3, 1]))
  # two programs (k = 4 and k = 2): the same numbers up to XLA's FMA contraction (JIT_RTOL)
  np.testing.assert_allclose(u[:2], u1, rtol=JIT_RTOL)
  np.testing.assert_array_equal(u[2:], 0.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=JIT_RTOL), s, s1)


def test_trees_empty_batches_and_a_global_count():
  params = {"user": jnp.ones((7, 2)), "item": jnp.ones((9,))}
  tx = adamx.sparse_adam(1e-2)
  state = tx.init(params)
  update = jax.jit(lambda g, s, i: tx.update(g, s, params, indices=i))
  indices = {"user": jnp.array([0, 6]), "item": jnp.array([], jnp.int32)}
  u, state = update({"user": jnp.ones((2, 2)), "item": jnp.zeros((0,))}, state, indices)
  assert u["item"].shape == (0,) and int(state[0].count) == 1
  np.testing.assert_array_equal(state[0].mu["item"], 0.0)
  # one index array for every leaf
  u, state = update({"user": jnp.ones((1, 2)), "item": jnp.ones((1,))}, state, jnp.array([5]))
  assert int(state[0].count) == 2 and float(state[0].mu["item"][5]) > 0
  # the first touch of row 5 of "user" at step 2 is bias-corrected with t = 2: m = (1 - b1) g, v = (1 - b2) g^2
  expected = 1e-2 * math.sqrt(1 - 0.999**2) / (1 - 0.9**2) * 0.1 / (math.sqrt(0.001) + 1e-8)
  np.testing.assert_allclose(-u["user"][0], expected, rtol=1e-6)


def test_out_of_range_indices():
  tx = adamx.sparse_adam(1e-2)
  table = jnp.zeros((5, 2))
  state = tx.init(table)
  for bad in ([0, 5], [-1, 2]):
    with pytest.raises(IndexError, match=r"adamx\.scale_by_sparse_adam: indices for leaf <root> must be in \[0, 5\)"):
      tx.update(jnp.ones((2, 2)), state, table, indices=jnp.array(bad))
  # under jit they cannot be checked and are ignored
  u, s = jax.jit(lambda i: tx.update(jnp.ones((2, 2)), state, table, indices=i))(jnp.array([1, 5]))
  np.testing.assert_array_equal(u[1], 0.0)
  assert float(u[0, 0]) != 0.0
  np.testing.assert_array_equal(s[0].mu[np.array([0, 2, 3, 4])], 0.0)


def test_shape_errors():
  tx = adamx.sparse_adam(1e-2)
  table = jnp.zeros((5, 2))
  state = tx.init(table)
  with pytest.raises(ValueError, match=r"must have shape \(len\(indices\), \*row_shape\) = \(2, 2\), got \(2, 3\)"):
    tx.update(jnp.ones((2, 3)), state, table, indices=jnp.array([0, 1]))
  with pytest.raises(TypeError, match="must be a 1-D integer array"):
    tx.update(jnp.ones((2, 2)), state, table, indices=jnp.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="a scalar"):
    tx.update(jnp.ones(()), tx.init(jnp.zeros(())), jnp.zeros(()), indices=jnp.array([0]))
  with pytest.raises(ValueError, match="tree structure of updates does not match"):
    tx.update({"a": table}, state, table)


def test_cost_does_not_grow_with_the_table():
  """The indices path's compiled flop count is independent of the number of rows (the dense path's is not)."""
  tx = adamx.sparse_adam(1e-2)

  def flops(fn, *args):
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]

  counts = []
  for rows in (1_000, 20_000):
    table = jnp.zeros((rows, 16))
    state = tx.init(table)
    counts.append((flops(lambda t, s, i, g: tx.update(g, s, t, indices=i), table, state, jnp.zeros(8, jnp.int32),
                         jnp.ones((8, 16))),
                   flops(lambda t, s, g: tx.update(g, s, t), table, state, table)))
  assert counts[0][0] == counts[1][0], counts
  assert counts[1][1] > 10 * counts[0][1], counts


def test_jit_once_with_donation():
  tx = adamx.sparse_adam(1e-2)
  traces = []

  @jax.jit
  def step(table, state, tokens, rows):
    traces.append(1)
    updates, state = tx.update(rows, state, table, indices=tokens)
    return table.at[tokens].add(updates), state

  step = jax.jit(step, donate_argnums=(0, 1))
  table = jnp.zeros((20, 4))
  state = tx.init(table)
  for tokens, c in _batches("donate", 3, 20, 5, 4):
    table, state = step(table, state, tokens, c)
  assert len(traces) == 1 and int(state[0].count) == 3


# ---------------------------------------------------------------------------------------------------------------
# Validation and docs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["sparse_adam", "scale_by_sparse_adam"])
def test_validation(fn):
  factory = getattr(adamx, fn)
  args = (1e-3,) if fn == "sparse_adam" else ()
  with pytest.raises(ValueError, match=rf"adamx\.{fn}: b1 must be in \[0, 1\), got 1\.0"):
    factory(*args, b1=1.0)
  with pytest.raises(ValueError, match=rf"adamx\.{fn}: b2 must be in \[0, 1\), got -0\.5"):
    factory(*args, b2=-0.5)
  with pytest.raises(ValueError, match=rf"adamx\.{fn}: eps must be a finite number >= 0, got -1e-08"):
    factory(*args, eps=-1e-8)
  with pytest.raises(ValueError, match=rf"adamx\.{fn}: mu_dtype must be"):
    factory(*args, mu_dtype="int8")
  if fn == "sparse_adam":
    with pytest.raises(ValueError, match=r"adamx\.sparse_adam: learning_rate must be a finite number >= 0, got -1"):
      factory(-1.0)


def test_docstring_example_runs():
  failures, tried = doctest.testmod(_sparse_adam, optionflags=doctest.ELLIPSIS)
  assert tried >= 8 and failures == 0
