"""Schedules: parity with optax and ``torch.optim.lr_scheduler`` over the whole range and well past the end, float64
references (``tests/reference/schedules.py``) for the schedules neither has, the documented optax/PyTorch
differences, jit/vmap/inject_hyperparams, validation, edge cases, and use as adamw's learning rate.

Tolerance: adamx computes in float32, optax in float32 with its own operation order, PyTorch in float64 (often by
a recursion). Differences are measured against the largest value of the schedule on the range (``_SCALE_RTOL`` of
it): near-zero values are compared with the same absolute tolerance, which a relative one per entry would not allow.
"""

from __future__ import annotations

import doctest
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import adamx
from tests.reference import schedules as ref

_SCALE_RTOL = 1e-6  # float32: a few ulps of the schedule's largest value (measured: see each test)


_N = 12_000  # every evaluation uses counts of this one shape, so eager JAX compiles each operation once for all tests


def _values(schedule: Callable, n: int) -> np.ndarray:
  """The schedule at counts 0..n-1 (int32 counts, as an optimizer's state has them), in float64."""
  assert n <= _N
  return np.asarray(jax.vmap(schedule)(jnp.arange(_N, dtype=jnp.int32)), np.float64)[:n]


def _torch_lrs(make: Callable, lr: float, n: int) -> np.ndarray:
  """``get_last_lr()`` after k scheduler steps, k = 0..n-1, on a dummy SGD optimizer stepped before each step."""
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
  scheduler = make(opt)
  lrs = [scheduler.get_last_lr()[0]]
  for _ in range(n - 1):
    opt.step()
    scheduler.step()
    lrs.append(scheduler.get_last_lr()[0])
  return np.asarray(lrs, np.float64)


def _assert_close(got: np.ndarray, want: np.ndarray, rtol: float = _SCALE_RTOL) -> None:
  scale = np.max(np.abs(want))
  np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


# ------------------------------------------------------------------------------------------------------------------
# Parity with optax (same arguments, same numbers) over the whole range and well past the end.
# ------------------------------------------------------------------------------------------------------------------

_OPTAX_CASES = [
    ("constant_schedule", dict(value=0.25), 10),
    ("linear_schedule", dict(init_value=1e-3, end_value=1e-5, transition_steps=50, transition_begin=7), 90),
    ("linear_schedule", dict(init_value=0.0, end_value=2.0, transition_steps=1), 10),
    ("linear_schedule", dict(init_value=0.3, end_value=2.0, transition_steps=0, transition_begin=4), 10),  # init
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.01, power=2.0, transition_steps=100,
                                 transition_begin=5), 150),
    ("polynomial_schedule", dict(init_value=0.5, end_value=1.5, power=0.5, transition_steps=33), 60),
    ("exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=0.9), 300),
    ("exponential_decay", dict(init_value=2.0, transition_steps=7, decay_rate=0.5, transition_begin=11,
                               staircase=True, end_value=0.01), 120),
    ("exponential_decay", dict(init_value=1e-3, transition_steps=5, decay_rate=1.1, end_value=2e-3), 60),  # upper
    ("exponential_decay", dict(init_value=1.0, transition_steps=3, decay_rate=0.8, end_value=0.3), 40),
    ("cosine_decay_schedule", dict(init_value=1e-3, decay_steps=100), 150),
    ("cosine_decay_schedule", dict(init_value=2.0, decay_steps=37, alpha=0.1, exponent=2.0), 60),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={30: 0.1, 10: 0.5, 60: 2.0}), 90),
    ("piecewise_constant_schedule", dict(init_value=0.1, boundaries_and_scales={0: 0.5, 5: 0.0}), 10),
    ("warmup_constant_schedule", dict(init_value=1e-5, peak_value=1e-3, warmup_steps=25), 60),
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=1.0), 140),
    ("cosine_onecycle_schedule", dict(transition_steps=37, peak_value=3e-3, pct_start=0.25, div_factor=10.0,
                                      final_div_factor=100.0), 60),
    ("cosine_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, pct_start=0.0), 20),
    ("cosine_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, pct_start=0.95), 20),
    ("linear_onecycle_schedule", dict(transition_steps=100, peak_value=1.0), 140),
    ("linear_onecycle_schedule", dict(transition_steps=57, peak_value=0.5, pct_start=0.2, pct_final=0.7,
                                      div_factor=5.0, final_div_factor=50.0), 80),
]


@pytest.mark.parametrize("name, kwargs, n", _OPTAX_CASES, ids=lambda x: x if isinstance(x, str) else "")
def test_matches_optax(name, kwargs, n):
  """Measured: at most 1.2e-7 of the schedule's scale (1 ulp at the peak)."""
  got = _values(getattr(adamx, name)(**kwargs), n)
  want = _values(getattr(optax, name)(**kwargs), n)
  _assert_close(got, want)


def test_join_schedules_matches_optax():
  parts = [("linear_schedule", dict(init_value=0.0, end_value=1.0, transition_steps=10)),
           ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=20, alpha=0.2)),
           ("constant_schedule", dict(value=0.5)),
           ("exponential_decay", dict(init_value=0.5, transition_steps=4, decay_rate=0.5))]
  boundaries = [10, 30, 30]  # the constant schedule has zero length
  ours = adamx.join_schedules([getattr(adamx, n)(**k) for n, k in parts], boundaries)
  theirs = optax.join_schedules([getattr(optax, n)(**k) for n, k in parts], boundaries)
  _assert_close(_values(ours, 60), _values(theirs, 60))
  assert float(ours(30)) == 0.5  # the last schedule starts at its own count 0


@pytest.mark.parametrize("cycles", [
    [dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=20)] * 3,
    [dict(init_value=0.1, peak_value=1.0, warmup_steps=0, decay_steps=10, end_value=0.05),
     dict(init_value=0.0, peak_value=0.5, warmup_steps=5, decay_steps=25, exponent=2.0),
     dict(init_value=0.2, peak_value=0.2, warmup_steps=1, decay_steps=2)],
])
def test_sgdr_matches_optax(cycles):
  n = sum(c["decay_steps"] for c in cycles) + 30
  got = _values(adamx.sgdr_schedule(iter(cycles)), n)  # any iterable
  _assert_close(got, _values(optax.sgdr_schedule(cycles), n))


# ------------------------------------------------------------------------------------------------------------------
# warmup_cosine_schedule and constant_schedule (the first two schedules).
# ------------------------------------------------------------------------------------------------------------------

CONFIGS = [
    dict(init_value=0.0, peak_value=1e-3, warmup_steps=100, decay_steps=1000, end_value=0.0, exponent=1.0),
    dict(init_value=1e-5, peak_value=3e-4, warmup_steps=7, decay_steps=50, end_value=1e-6, exponent=2.0),
    dict(init_value=0.1, peak_value=0.1, warmup_steps=0, decay_steps=10, end_value=0.05, exponent=0.5),
    dict(init_value=0.5, peak_value=1.0, warmup_steps=10, decay_steps=11, end_value=2.0, exponent=1.0),  # increase
]


def _exact(count, init_value, peak_value, warmup_steps, decay_steps, end_value, exponent):
  """The documented formula in float64."""
  if count < warmup_steps:
    return init_value + (peak_value - init_value) * count / warmup_steps
  done = min(count - warmup_steps, decay_steps - warmup_steps)
  cosine = 0.5 * (1 + math.cos(math.pi * done / (decay_steps - warmup_steps)))
  return end_value + (peak_value - end_value) * cosine**exponent


@pytest.mark.parametrize("cfg", CONFIGS)
def test_warmup_cosine_matches_optax_and_formula(cfg):
  ours, theirs = adamx.warmup_cosine_schedule(**cfg), optax.warmup_cosine_decay_schedule(**cfg)
  n = cfg["decay_steps"] + 30  # past the end too
  got, want = _values(ours, n), _values(theirs, n)
  exact = np.array([_exact(c, **cfg) for c in range(n)])
  scale = max(abs(cfg["peak_value"]), abs(cfg["end_value"]), abs(cfg["init_value"]))
  # float32 evaluation of the same formula: a few ulps of the largest value (optax orders operations differently).
  np.testing.assert_allclose(got, exact, rtol=0, atol=4e-7 * scale)
  np.testing.assert_allclose(got, want, rtol=0, atol=4e-7 * scale)
  assert got[cfg["warmup_steps"]] == pytest.approx(cfg["peak_value"], rel=1e-6)
  assert np.all(got[cfg["decay_steps"]:] == pytest.approx(cfg["end_value"], rel=1e-6))


def test_warmup_cosine_python_int_count_and_large_count():
  sched = adamx.warmup_cosine_schedule(0.0, 1.0, warmup_steps=4, decay_steps=8)
  assert float(sched(2)) == pytest.approx(0.5)
  assert float(sched(6)) == pytest.approx(0.5, abs=1e-7)
  assert float(sched(2**31 - 1)) == 0.0  # no int32 overflow at the counter's saturation value
  assert float(jax.jit(sched)(jnp.int32(2**31 - 1))) == 0.0


def test_warmup_cosine_both_zero_is_constant_end_value():
  sched = adamx.warmup_cosine_schedule(1.0, 2.0, warmup_steps=0, decay_steps=0, end_value=0.25)
  np.testing.assert_array_equal(jax.vmap(sched)(jnp.arange(5)), 0.25)


def test_schedule_values_can_be_traced_and_vmapped():
  def value_at(peak):
    return adamx.warmup_cosine_schedule(0.0, peak, warmup_steps=10, decay_steps=20)(5)

  np.testing.assert_allclose(jax.vmap(value_at)(jnp.array([1.0, 2.0, 4.0])), [0.5, 1.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(jax.jit(value_at)(3.0), 1.5, rtol=1e-6)


def test_constant_schedule():
  sched = adamx.constant_schedule(3e-4)
  assert sched(0) == sched(10**9) == 3e-4
  np.testing.assert_array_equal(jax.vmap(adamx.constant_schedule(jnp.float32(2.0)))(jnp.arange(3)), 2.0)


def test_schedule_drives_an_optimizer_without_recompiling():
  sched = adamx.warmup_cosine_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
  tx = adamx.chain(adamx.scale_by_learning_rate(sched))
  traces = []

  @jax.jit
  def step(s):
    traces.append(1)
    return tx.update({"w": jnp.ones(())}, s)

  state, lrs = tx.init({"w": jnp.ones(())}), []
  for _ in range(8):
    u, state = step(state)
    lrs.append(-float(u["w"]))
  assert len(traces) == 1
  np.testing.assert_allclose(lrs, [float(sched(i)) for i in range(8)], rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# Parity with torch.optim.lr_scheduler: the value at count k is get_last_lr() after k scheduler steps.
# ------------------------------------------------------------------------------------------------------------------

_S = torch.optim.lr_scheduler
_TORCH_CASES = [
    # name, adamx kwargs, base lr, scheduler factory, counts
    ("linear_schedule", dict(init_value=0.1 * 0.5, end_value=0.5, transition_steps=20), 0.5,
     lambda o: _S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20), 60),
    ("linear_schedule", dict(init_value=2.0, end_value=2.0 * 0.05, transition_steps=13), 2.0,
     lambda o: _S.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=13), 40),
    ("linear_schedule", dict(init_value=0.25, end_value=1.0, transition_steps=0), 1.0,
     lambda o: _S.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=0), 10),
    ("warmup_constant_schedule", dict(init_value=0.3 * 1e-3, peak_value=1e-3, warmup_steps=17), 1e-3,
     lambda o: _S.LinearLR(o, start_factor=0.3, total_iters=17), 50),
    ("polynomial_schedule", dict(init_value=0.1, end_value=0.0, power=1.0, transition_steps=30), 0.1,
     lambda o: _S.PolynomialLR(o, total_iters=30, power=1.0), 70),
    ("polynomial_schedule", dict(init_value=0.1, end_value=0.0, power=0.9, transition_steps=50), 0.1,
     lambda o: _S.PolynomialLR(o, total_iters=50, power=0.9), 90),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.0, power=2.0, transition_steps=7), 1.0,
     lambda o: _S.PolynomialLR(o, total_iters=7, power=2.0), 20),
    ("exponential_decay", dict(init_value=0.1, transition_steps=1, decay_rate=0.97), 0.1,
     lambda o: _S.ExponentialLR(o, gamma=0.97), 300),
    ("exponential_decay", dict(init_value=0.1, transition_steps=15, decay_rate=0.5, staircase=True), 0.1,
     lambda o: _S.StepLR(o, step_size=15, gamma=0.5), 200),
    ("cosine_decay_schedule", dict(init_value=0.1, decay_steps=40, alpha=0.05), 0.1,
     lambda o: _S.CosineAnnealingLR(o, T_max=40, eta_min=0.005), 41),  # within its period: see below
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=7), 1.0,
     lambda o: _S.CosineAnnealingLR(o, T_max=7), 8),
    ("piecewise_constant_schedule", dict(init_value=0.1, boundaries_and_scales={0: 0.5, 10: 0.5, 25: 0.5}), 0.1,
     lambda o: _S.MultiStepLR(o, milestones=[0, 10, 25], gamma=0.5), 50),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={7: 0.1, 8: 0.1}), 1.0,
     lambda o: _S.MultiStepLR(o, milestones=[8, 7], gamma=0.1), 20),
    ("cosine_warm_restarts_schedule", dict(init_value=0.1, period_steps=10), 0.1,
     lambda o: _S.CosineAnnealingWarmRestarts(o, T_0=10), 95),
    ("cosine_warm_restarts_schedule", dict(init_value=0.1, period_steps=3, period_mult=2, end_value=0.01), 0.1,
     lambda o: _S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01), 200),
    ("cosine_warm_restarts_schedule", dict(init_value=1.0, period_steps=1, period_mult=3, end_value=0.5), 1.0,
     lambda o: _S.CosineAnnealingWarmRestarts(o, T_0=1, T_mult=3, eta_min=0.5), 130),
    ("cosine_warm_restarts_schedule", dict(init_value=1.0, period_steps=1), 1.0,
     lambda o: _S.CosineAnnealingWarmRestarts(o, T_0=1), 5),
]


@pytest.mark.parametrize("name, kwargs, lr, make, n", _TORCH_CASES, ids=lambda x: x if isinstance(x, str) else "")
def test_matches_torch(name, kwargs, lr, make, n):
  """Measured: at most 1.1e-7 of the schedule's scale (PolynomialLR; ExponentialLR 5e-8 over 300 steps)."""
  _assert_close(_values(getattr(adamx, name)(**kwargs), n), _torch_lrs(make, lr, n))


def test_exponential_decay_is_accurate_entry_by_entry():
  """gamma^p from ln(gamma) in float64: measured 7.5e-7 relative to ExponentialLR at every step of 300, where a
  float32 power of the rounded gamma (optax's) drifts to 8.8e-6 at the tail (300 times gamma's rounding error)."""
  want = _torch_lrs(lambda o: _S.ExponentialLR(o, gamma=0.97), 0.1, 300)
  got = _values(adamx.exponential_decay(0.1, transition_steps=1, decay_rate=0.97), 300)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  theirs = _values(optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.97), 300)
  assert np.max(np.abs(theirs - want) / want) > 5e-6


_ONECYCLE_TORCH = [  # total_steps, pct_start, div_factor, final_div_factor
    (100, 0.3, 25.0, 1e4),
    (10, 0.25, 10.0, 100.0),  # phase end 1.5: a fractional step
    (57, 0.5, 3.0, 7.0),
    (10, 0.0, 25.0, 1e4),  # no rising phase: torch's first phase ends at step -1
    (10, 1.0, 25.0, 1e4),
    (1, 0.5, 25.0, 1e4),
]


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("total, pct, div, final_div", _ONECYCLE_TORCH)
def test_onecycle_matches_torch_onecyclelr(anneal, total, pct, div, final_div):
  """convention="torch" is OneCycleLR(three_phase=False) on all the steps it allows (0..total_steps - 1), and keeps
  the final value after them (PyTorch extrapolates at step total_steps and raises after). Measured: <= 1.3e-7."""
  peak = 0.4
  kwargs = dict(transition_steps=total, peak_value=peak, pct_start=pct, div_factor=div, final_div_factor=final_div,
                convention="torch")
  ours = (adamx.cosine_onecycle_schedule(**kwargs) if anneal == "cos"
          else adamx.linear_onecycle_schedule(pct_final=None, **kwargs))
  want = _torch_lrs(lambda o: _S.OneCycleLR(o, max_lr=peak, total_steps=total, pct_start=pct, anneal_strategy=anneal,
                                            div_factor=div, final_div_factor=final_div, cycle_momentum=False,
                                            three_phase=False), peak, total)
  got = _values(ours, total + 20)
  _assert_close(got[:total], want)
  np.testing.assert_array_equal(got[total:], np.float32(peak / div / final_div))


# ------------------------------------------------------------------------------------------------------------------
# Where optax and PyTorch differ, each convention reproduces its library, and the difference is real.
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_onecycle_optax_and_torch_differ_by_the_documented_shift(anneal):
  total, peak = 50, 1.0
  if anneal == "cos":
    optax_sched = optax.cosine_onecycle_schedule(total, peak)
    ours = {c: adamx.cosine_onecycle_schedule(total, peak, convention=c) for c in ("optax", "torch")}
  else:  # optax's linear one-cycle has three phases; pct_final=2 pct_start approximates torch's three_phase=True
    optax_sched = optax.linear_onecycle_schedule(total, peak, pct_start=0.3, pct_final=0.6)
    ours = {c: adamx.linear_onecycle_schedule(total, peak, pct_final=0.6, convention=c) for c in ("optax", "torch")}
  want_optax = _values(optax_sched, total + 10)
  want_torch = _torch_lrs(lambda o: _S.OneCycleLR(o, max_lr=peak, total_steps=total, anneal_strategy=anneal,
                                                  cycle_momentum=False, three_phase=anneal == "linear"),
                          peak, total)
  got_optax, got_torch = _values(ours["optax"], total + 10), _values(ours["torch"], total + 10)
  _assert_close(got_optax, want_optax)
  # The peak: optax at int(0.3 * 50) = 15, torch at 0.3 * 50 - 1 = 14; the end: optax at 50, torch at 49.
  assert got_optax[15] == pytest.approx(peak) and got_torch[14] == pytest.approx(peak)
  assert abs(got_optax[14] - peak) > 1e-3 and abs(got_torch[15] - peak) > 1e-3
  assert got_torch[49] == pytest.approx(peak / 25 / 1e4) and got_optax[49] > 2 * peak / 25 / 1e4
  assert np.max(np.abs(want_optax[:total] - want_torch)) > 1e-2  # the libraries really differ
  if anneal == "cos":
    _assert_close(got_torch[:total], want_torch)
  else:  # torch's three_phase=True ends its second phase at 2 * 15 - 2 = 28, "torch" with pct_final=0.6 at 29
    assert np.max(np.abs(got_torch[:total] - want_torch)) > 1e-3
    _assert_close(got_torch[:15], want_torch[:15])


def test_torch_onecycle_extrapolates_one_step_past_the_end_then_raises():
  """What adamx does not copy: at step total_steps OneCycleLR continues the last phase (a negative learning rate
  for the linear strategy), after it it raises. adamx keeps the final value."""
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
  scheduler = _S.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="linear", cycle_momentum=False)
  for _ in range(10):
    opt.step()
    scheduler.step()
  assert scheduler.get_last_lr()[0] < 0
  opt.step()
  with pytest.raises(ValueError, match="Tried to step 11 times"):
    scheduler.step()
  ours = adamx.linear_onecycle_schedule(10, 1.0, pct_final=None, convention="torch")
  assert float(ours(10)) == float(ours(11)) == float(ours(10**6)) == pytest.approx(1.0 / 25 / 1e4)


def test_optax_onecycle_loses_a_phase_when_boundaries_coincide():
  """optax keys its phases by boundary step. Linear, pct_final=1: the phase back to the initial value is dropped and
  the end value becomes peak / final_div_factor. Cosine, pct_start=1: the rise is dropped and the peak never
  reached. adamx keeps such a phase with zero length."""
  theirs = optax.linear_onecycle_schedule(100, 1.0, pct_final=1.0)
  ours = adamx.linear_onecycle_schedule(100, 1.0, pct_final=1.0)
  theirs, ours = _values(theirs, 101), _values(ours, 101)
  assert theirs[100] == pytest.approx(1e-4)
  assert ours[100] == pytest.approx(1.0 / 25 / 1e4)
  _assert_close(ours[:30], theirs[:30])  # the same up to the peak
  theirs = _values(optax.cosine_onecycle_schedule(10, 1.0, pct_start=1.0), 12)
  ours = _values(adamx.cosine_onecycle_schedule(10, 1.0, pct_start=1.0), 12)
  assert np.max(theirs) == pytest.approx(1.0 / 25) and theirs[-1] == pytest.approx(1.0 / 25 / 25 / 1e4)
  assert np.argmax(ours) == 9 and ours[10] == pytest.approx(1.0 / 25 / 1e4)


def test_cosine_decay_stays_where_torch_cosine_annealing_climbs_back():
  ours = _values(adamx.cosine_decay_schedule(1.0, decay_steps=10, alpha=0.1), 25)
  want = _torch_lrs(lambda o: _S.CosineAnnealingLR(o, T_max=10, eta_min=0.1), 1.0, 25)
  _assert_close(ours[:11], want[:11])
  np.testing.assert_allclose(ours[10:], 0.1, rtol=1e-6)
  assert want[20] == pytest.approx(1.0)  # PyTorch: back at the initial value after 2 T_max


def test_warmup_constant_with_zero_warmup_starts_at_peak_unlike_optax():
  ours = adamx.warmup_constant_schedule(0.0, 1.0, warmup_steps=0)
  theirs = optax.warmup_constant_schedule(0.0, 1.0, warmup_steps=0)
  np.testing.assert_array_equal(_values(ours, 5), 1.0)
  np.testing.assert_array_equal(_values(theirs, 5), 0.0)  # optax: init_value forever
  # ... which is how optax's own warmup_cosine_decay_schedule (and adamx's) treat a zero warmup:
  assert float(optax.warmup_cosine_decay_schedule(0.0, 1.0, 0, 10)(0)) == 1.0


def test_sgdr_and_warm_restarts_agree_within_the_listed_cycles():
  cycles = [dict(init_value=1.0, peak_value=1.0, warmup_steps=0, decay_steps=5 * 2**i, end_value=0.1)
            for i in range(3)]
  restarts = adamx.cosine_warm_restarts_schedule(1.0, period_steps=5, period_mult=2, end_value=0.1)
  _assert_close(_values(adamx.sgdr_schedule(cycles), 35), _values(restarts, 35))
  assert float(adamx.sgdr_schedule(cycles)(40)) == pytest.approx(0.1)  # after its cycles: the end value
  assert float(restarts(35)) == pytest.approx(1.0)  # restarted


# ------------------------------------------------------------------------------------------------------------------
# Float64 references for the schedules neither library has.
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("init, peak, warmup, stable, cooldown, end", [
    (0.0, 1e-3, 20, 50, 30, 0.0),
    (1e-5, 3e-4, 7, 13, 11, 3e-5),
    (0.5, 0.5, 0, 10, 1, 0.05),
    (0.0, 2.0, 5, 0, 40, 0.1),
])
def test_wsd_matches_reference(decay_type, init, peak, warmup, stable, cooldown, end):
  """Measured: <= 1.1e-7 of the peak (1-sqrt's steep start included)."""
  ours = adamx.warmup_stable_decay_schedule(init, peak, warmup, stable, cooldown, end_value=end,
                                            decay_type=decay_type)
  n = warmup + stable + cooldown + 30
  want = np.array([ref.wsd(init, peak, warmup, stable, cooldown, end, decay_type)(k) for k in range(n)])
  _assert_close(_values(ours, n), want)


@pytest.mark.parametrize("warmup, stable, cooldown, expected", [
    (0, 0, 0, [0.1] * 4),  # every phase empty: the end value
    (0, 2, 0, [1.0, 1.0, 0.1, 0.1]),  # no cooldown: a jump to the end value
    (2, 0, 0, [0.0, 0.5, 0.1, 0.1]),
    (0, 0, 2, [1.0, 1 - (1 - 0.1) * math.sqrt(0.5), 0.1, 0.1]),
])
def test_wsd_zero_length_phases(warmup, stable, cooldown, expected):
  sched = adamx.warmup_stable_decay_schedule(0.0, 1.0, warmup, stable, cooldown, end_value=0.1)
  np.testing.assert_allclose(_values(sched, 4), expected, rtol=1e-6)


@pytest.mark.parametrize("d_model, warmup", [(512, 4000), (64, 10)])
def test_inverse_sqrt_is_the_transformer_schedule(d_model, warmup):
  """Vaswani et al. 2017 with peak = (d_model warmup)^-1/2 and init 0, at every step_num >= 1 (the paper's).
  Measured: <= 1.6e-7 of the peak."""
  peak = (d_model * warmup) ** -0.5
  ours = _values(adamx.inverse_sqrt_schedule(0.0, peak, warmup), 3 * warmup)
  want = np.array([ref.noam(d_model, warmup)(k) for k in range(1, 3 * warmup)])
  _assert_close(ours[1:], want)
  assert ours[0] == 0.0


@pytest.mark.parametrize("init, peak, warmup, timescale",
                         [(1e-4, 1e-3, 50, 10.0), (0.0, 1.0, 0, 100), (0.0, 1.0, 1, 3)])
def test_inverse_sqrt_with_timescale_matches_reference(init, peak, warmup, timescale):
  ours = _values(adamx.inverse_sqrt_schedule(init, peak, warmup, timescale=timescale), 500)
  want = np.array([ref.inverse_sqrt(init, peak, warmup, timescale)(k) for k in range(500)])
  _assert_close(ours, want)


# ------------------------------------------------------------------------------------------------------------------
# Every schedule: jit, vmap over a numeric argument, float dtype, large counts, adamw, inject_hyperparams, doctest.
# ------------------------------------------------------------------------------------------------------------------

# name -> (constructor arguments, a numeric argument to vmap over, the value at a huge count or None if cyclic)
_REGISTRY: dict[str, tuple[dict[str, Any], str, float | None]] = {
    "constant_schedule": (dict(value=0.5), "value", 0.5),
    "linear_schedule": (dict(init_value=1.0, end_value=0.1, transition_steps=20, transition_begin=3), "end_value",
                        0.1),
    "polynomial_schedule": (dict(init_value=1.0, end_value=0.1, power=2.0, transition_steps=20), "power", 0.1),
    "exponential_decay": (dict(init_value=1.0, transition_steps=5, decay_rate=0.5, end_value=0.01), "decay_rate",
                          0.01),
    "cosine_decay_schedule": (dict(init_value=1.0, decay_steps=20, alpha=0.1), "alpha", 0.1),
    "piecewise_constant_schedule": (dict(init_value=1.0, boundaries_and_scales={5: 0.5, 10: 0.2}), "init_value",
                                    0.1),
    "warmup_constant_schedule": (dict(init_value=0.0, peak_value=1.0, warmup_steps=5), "peak_value", 1.0),
    "warmup_cosine_schedule": (dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=20, end_value=0.1),
                               "peak_value", 0.1),
    "warmup_stable_decay_schedule": (dict(init_value=0.0, peak_value=1.0, warmup_steps=3, stable_steps=5,
                                          cooldown_steps=7, end_value=0.1), "end_value", 0.1),
    "inverse_sqrt_schedule": (dict(init_value=0.0, peak_value=1.0, warmup_steps=4, timescale=2.0), "timescale",
                              None),
    "sgdr_schedule": (dict(cosine_kwargs=[dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=8,
                                               end_value=0.1)] * 2), "", 0.1),
    "cosine_warm_restarts_schedule": (dict(init_value=1.0, period_steps=4, period_mult=2, end_value=0.1),
                                      "init_value", None),
    "cosine_onecycle_schedule": (dict(transition_steps=20, peak_value=1.0, div_factor=25.0), "div_factor",
                                 1.0 / 25 / 1e4),
    "linear_onecycle_schedule": (dict(transition_steps=20, peak_value=1.0, final_div_factor=1e4), "final_div_factor",
                                 1.0 / 25 / 1e4),
    "join_schedules": (dict(schedules=[adamx.linear_schedule(0.0, 1.0, 5), adamx.cosine_decay_schedule(1.0, 10)],
                            boundaries=[5]), "", 0.0),
}


def test_registry_covers_every_public_schedule():
  """Every general-purpose public schedule is in this suite's registry. Schedules that belong to one optimizer
  (AdEMAMix's b3 and alpha warmups) live in its module and are tested with it."""
  public = {n for n in adamx.__all__ if (n.endswith("_schedule") or n.endswith("_schedules")
                                         or n == "exponential_decay")
            and not getattr(adamx, n).__module__.startswith("adamx.optimizers.")}
  assert {n for n in adamx.__all__ if n.endswith("_schedule")} - public <= {"ademamix_alpha_schedule",
                                                                           "ademamix_b3_schedule"}
  assert public == set(_REGISTRY) == set(adamx.schedules.__all__)


def _make(name: str, **override) -> Callable:
  kwargs, _, _ = _REGISTRY[name]
  return getattr(adamx, name)(**{**kwargs, **override})


def test_jit_matches_eager_returns_float32_and_does_not_overflow():
  """Every schedule in one jitted function (one compilation), at counts up to an int32 counter's saturation value;
  eagerly at a Python int past the int32 range."""
  schedules = {name: _make(name) for name in _REGISTRY}
  counts = [0, 1, 4, 5, 9, 17, 30, 2**31 - 1]
  jitted = jax.jit(lambda c: {name: jax.vmap(sched)(c) for name, sched in schedules.items()})
  got_all = jitted(jnp.array(counts, jnp.int32))
  for name, sched in schedules.items():
    got, final = got_all[name], _REGISTRY[name][2]
    assert got.dtype == jnp.float32, name
    _assert_close(np.asarray(got[:-1], np.float64), _values(sched, 31)[counts[:-1]])
    eager = sched(10**12)
    if name != "constant_schedule":  # which returns its value as given
      assert isinstance(eager, jax.Array) and eager.dtype == jnp.float32, name
    assert math.isfinite(float(got[-1])) and math.isfinite(float(eager)), name
    if final is not None:
      assert float(got[-1]) == pytest.approx(final, rel=1e-6), name
      assert float(eager) == pytest.approx(final, rel=1e-6), name


@pytest.mark.parametrize("name", sorted(n for n in _REGISTRY if n != "constant_schedule"))
def test_float64_under_x64(name, x64):
  del x64
  assert _make(name)(jnp.arange(3)).dtype == jnp.float64


@pytest.mark.parametrize("name", sorted(n for n in _REGISTRY if _REGISTRY[n][1]))
def test_vmap_over_a_numeric_argument(name):
  """The schedule built from a batch of values of one numeric argument (a tracer at construction), vmapped, matches
  the schedules built from each value."""
  _, arg, _ = _REGISTRY[name]
  values = jnp.array([0.5, 1.5]) * _REGISTRY[name][0][arg]
  counts = jnp.arange(_N, dtype=jnp.int32)
  got = jax.jit(jax.vmap(lambda v: jax.vmap(_make(name, **{arg: v}))(counts)))(values)
  want = np.stack([_values(_make(name, **{arg: float(v)}), _N) for v in values])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)


def test_cyclic_and_decaying_schedules_at_huge_counts():
  # inverse sqrt: peak / sqrt(1 + (t - W) / tau)
  assert float(_make("inverse_sqrt_schedule")(10**12)) == pytest.approx((1 + (1e12 - 4) / 2) ** -0.5, rel=1e-6)
  # warm restarts with period 1: every count starts a cycle, exactly, however large
  sched = adamx.cosine_warm_restarts_schedule(1.0, period_steps=1, end_value=0.0)
  assert float(sched(2**31 - 1)) == float(sched(10**9)) == 1.0
  # period 4, mult 2: cycles start at 4 (2^k - 1); 4 (2^30 - 1) is a restart, the count before it the cycle's end
  sched = _make("cosine_warm_restarts_schedule")
  assert float(sched(4 * (2**20 - 1))) == 1.0
  assert float(sched(4 * (2**20 - 1) - 1)) == pytest.approx(0.1, abs=1e-6)


def test_learning_rate_of_adamw_under_jit_without_recompiling():
  """adamw with b1 = b2 = 0 and g = 1 updates by -lr(count) / (1 + eps): each schedule is read off the updates. All
  schedules step in one jitted function, traced once for all steps."""
  txs = {name: adamx.adamw(learning_rate=_make(name), b1=0.0, b2=0.0, eps=1e-8, weight_decay=0.0)
         for name in _REGISTRY}
  traces = []

  @jax.jit
  def step(params, states):
    traces.append(1)
    out = {name: tx.update({"w": jnp.ones(())}, states[name], params) for name, tx in txs.items()}
    return {name: u["w"] for name, (u, _) in out.items()}, {name: state for name, (_, state) in out.items()}

  params = {"w": jnp.zeros(())}
  states, lrs = {name: tx.init(params) for name, tx in txs.items()}, []
  for _ in range(24):
    updates, states = step(params, states)
    lrs.append({name: -float(u) * (1 + 1e-8) for name, u in updates.items()})
  assert len(traces) == 1
  for name in txs:  # jit fuses operations: a few ulps of the peak
    _assert_close(np.array([lr[name] for lr in lrs]), _values(_make(name), 24))


@pytest.mark.parametrize("name", ["linear_onecycle_schedule", "warmup_stable_decay_schedule"])
def test_inside_optax_inject_hyperparams(name):
  sched = _make(name)
  tx = optax.inject_hyperparams(adamx.adamw)(learning_rate=sched, b1=0.0, b2=0.0, weight_decay=0.0)
  state = tx.init({"w": jnp.zeros(())})
  for k in range(6):
    updates, state = tx.update({"w": jnp.ones(())}, state, {"w": jnp.zeros(())})
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(sched(k)), rel=1e-6)
    assert -float(updates["w"]) == pytest.approx(float(sched(k)), rel=1e-6)


def test_schedules_built_inside_jit_from_traced_values():
  @jax.jit
  def value_at(peak, rate, count):
    return (adamx.cosine_onecycle_schedule(20, peak, div_factor=rate)(count)
            + adamx.exponential_decay(peak, 5, rate / 20, end_value=peak / 10)(count)
            + adamx.piecewise_constant_schedule(peak, {3: rate / 20})(count))

  got = value_at(2.0, 10.0, 4)
  want = (adamx.cosine_onecycle_schedule(20, 2.0, div_factor=10.0)(4)
          + adamx.exponential_decay(2.0, 5, 0.5, end_value=0.2)(4)
          + adamx.piecewise_constant_schedule(2.0, {3: 0.5})(4))
  assert float(got) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("name", sorted(_REGISTRY))
def test_docstring_example_runs(name):
  fn = getattr(adamx, name)
  for section in ("Args:", "Returns:", "Example:", ">>>"):
    assert section in fn.__doc__, section
  for test in doctest.DocTestFinder().find(fn, name, globs={}):
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=lambda s: None)
    assert result.failed == 0, name


# ------------------------------------------------------------------------------------------------------------------
# Zero-length phases and other edges.
# ------------------------------------------------------------------------------------------------------------------


def test_zero_length_transitions():
  np.testing.assert_array_equal(_values(adamx.polynomial_schedule(0.3, 1.0, 2.0, transition_steps=0), 4),
                                np.float32(0.3))
  np.testing.assert_array_equal(_values(adamx.join_schedules([adamx.constant_schedule(1.0),
                                                              adamx.constant_schedule(2.0),
                                                              adamx.constant_schedule(3.0)], [2, 2]), 4),
                                [1.0, 1.0, 3.0, 3.0])
  np.testing.assert_array_equal(_values(adamx.join_schedules([adamx.linear_schedule(0.0, 1.0, 4)], []), 3),
                                [0.0, 0.25, 0.5])
  np.testing.assert_array_equal(_values(adamx.piecewise_constant_schedule(2.0), 3), 2.0)
  # three-phase one-cycle with pct_final == pct_start: the way back down has zero length
  sched = adamx.linear_onecycle_schedule(10, 1.0, pct_start=0.5, pct_final=0.5, div_factor=2.0, final_div_factor=2.0)
  np.testing.assert_allclose(_values(sched, 12), [0.5, 0.6, 0.7, 0.8, 0.9, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.25],
                             rtol=1e-6)
  # torch convention with pct_start * total_steps == 1: PyTorch divides by zero, adamx starts at the peak
  assert float(adamx.cosine_onecycle_schedule(10, 1.0, pct_start=0.1, convention="torch")(0)) == 1.0


def test_counts_are_array_friendly():
  """An array of counts gives the array of values (no vmap needed)."""
  counts = jnp.arange(_N)  # the shape every test uses: no new compilations
  sched = adamx.warmup_stable_decay_schedule(0.0, 1.0, 2, 2, 2, decay_type="linear")
  np.testing.assert_allclose(sched(counts)[:7], [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0])
  np.testing.assert_allclose(adamx.cosine_warm_restarts_schedule(1.0, 2, 2)(counts)[:4],
                             [1.0, 0.5, 1.0, 0.5 + 0.5 * math.cos(math.pi / 4)], rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# Validation: every argument of every schedule, by kind.
# ------------------------------------------------------------------------------------------------------------------

_NOT_NUMBERS = ["0.5", None, [0.5], 1j, True, np.str_("1")]
_BAD = {
    "number": [(v, TypeError) for v in _NOT_NUMBERS],
    "positive": [(v, ValueError) for v in [0.0, -1.0, math.nan, math.inf, np.float32(-2.0)]]
                + [(v, TypeError) for v in _NOT_NUMBERS],
    "non_negative": [(v, ValueError) for v in [-0.1, math.nan, math.inf]] + [(v, TypeError) for v in _NOT_NUMBERS],
    "steps": [(v, ValueError) for v in [-1, 2.5, math.nan, math.inf]] + [(v, TypeError) for v in ["10", None, True]],
    "positive_steps": [(v, ValueError) for v in [0, -1, 2.5, math.nan]] + [(v, TypeError) for v in ["10", None, True]],
    "fraction": [(v, ValueError) for v in [-0.1, 1.5, math.nan]] + [(v, TypeError) for v in ["0.3", None, True]],
    "bool": [(v, TypeError) for v in [1, "yes", None]],
    "choice": [(v, ValueError) for v in ["sqrt", "", None, 1]],
}

# name -> {argument: kind}; the base arguments are the registry's.
_ARG_KINDS: dict[str, dict[str, str]] = {
    "constant_schedule": {"value": "number"},
    "linear_schedule": {"init_value": "number", "end_value": "number", "transition_steps": "steps",
                        "transition_begin": "steps"},
    "polynomial_schedule": {"init_value": "number", "end_value": "number", "power": "positive",
                            "transition_steps": "steps", "transition_begin": "steps"},
    "exponential_decay": {"init_value": "number", "transition_steps": "positive_steps", "decay_rate": "positive",
                          "transition_begin": "steps", "staircase": "bool", "end_value": "number"},
    "cosine_decay_schedule": {"init_value": "number", "decay_steps": "positive_steps", "alpha": "number",
                              "exponent": "positive"},
    "piecewise_constant_schedule": {"init_value": "number"},
    "warmup_constant_schedule": {"init_value": "number", "peak_value": "number", "warmup_steps": "steps"},
    "warmup_cosine_schedule": {"init_value": "number", "peak_value": "number", "end_value": "number",
                               "exponent": "positive"},
    "warmup_stable_decay_schedule": {"init_value": "number", "peak_value": "number", "warmup_steps": "steps",
                                     "stable_steps": "steps", "cooldown_steps": "steps", "end_value": "number",
                                     "decay_type": "choice"},
    "inverse_sqrt_schedule": {"init_value": "number", "peak_value": "number", "warmup_steps": "steps",
                              "timescale": "positive"},
    "cosine_warm_restarts_schedule": {"init_value": "number", "period_steps": "positive_steps",
                                      "period_mult": "positive_steps", "end_value": "number"},
    "cosine_onecycle_schedule": {"transition_steps": "positive_steps", "peak_value": "number",
                                 "pct_start": "fraction", "div_factor": "positive", "final_div_factor": "positive",
                                 "convention": "choice"},
    "linear_onecycle_schedule": {"transition_steps": "positive_steps", "peak_value": "number",
                                 "pct_start": "fraction", "pct_final": "fraction", "div_factor": "positive",
                                 "final_div_factor": "positive", "convention": "choice"},
}


def _message(fn: str, *words: str, value: Any) -> str:
  """A regex that holds iff ``adamx.<fn>``, each word and the value (its repr or str) all appear in the message."""
  shown = "|".join(sorted({re.escape(repr(value)), re.escape(str(value))}, key=len, reverse=True))
  parts = [rf"adamx\.{fn}\b"] + [rf"{re.escape(w)}" for w in words] + [rf"(?<![\w.])(?:{shown})(?![\w.])"]
  return "(?s)^" + "".join(f"(?=.*{p})" for p in parts)


_NONE_IS_VALID = {("exponential_decay", "end_value"), ("inverse_sqrt_schedule", "timescale"),
                  ("linear_onecycle_schedule", "pct_final")}


def _validation_cases():
  for name, kinds in _ARG_KINDS.items():
    for arg, kind in kinds.items():
      for i, (value, exc) in enumerate(_BAD[kind]):
        if value is None and (name, arg) in _NONE_IS_VALID:
          continue
        yield pytest.param(name, arg, value, exc, id=f"{name}-{arg}-{i}")


@pytest.mark.parametrize("name, arg, value, exc", list(_validation_cases()))
def test_bad_argument_raises_naming_function_argument_and_value(name, arg, value, exc):
  with pytest.raises(exc, match=_message(name, arg, value=value)):
    _make(name, **{arg: value})


@pytest.mark.parametrize("name, kwargs, exc, words, value", [
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={-5: 0.1}), ValueError,
     ("boundaries_and_scales",), -5),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={5: -0.1}), ValueError,
     ("boundaries_and_scales[5]",), -0.1),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={2.5: 0.1}), ValueError,
     ("boundaries_and_scales",), 2.5),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales=[(5, 0.1)]), TypeError,
     ("boundaries_and_scales",), [(5, 0.1)]),
    ("inverse_sqrt_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=0), ValueError, ("timescale",), None),
    ("warmup_cosine_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=10), ValueError,
     ("decay_steps",), 10),
    ("linear_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, pct_start=0.5, pct_final=0.4),
     ValueError, ("pct_final", "pct_start"), 0.4),
    ("join_schedules", dict(schedules=[], boundaries=[]), TypeError, ("schedules",), []),
    ("join_schedules", dict(schedules=[1.0, 2.0], boundaries=[3]), TypeError, ("schedules",), [1.0, 2.0]),
    ("join_schedules", dict(schedules=[abs, abs], boundaries=[]), ValueError, ("boundaries",), []),
    ("join_schedules", dict(schedules=[abs, abs], boundaries=3), TypeError, ("boundaries",), 3),
    ("join_schedules", dict(schedules=[abs, abs, abs], boundaries=[5, 4]), ValueError, ("boundaries",), [5, 4]),
    ("join_schedules", dict(schedules=[abs, abs], boundaries=[-1]), ValueError, ("boundaries[0]",), -1),
    ("sgdr_schedule", dict(cosine_kwargs=[]), ValueError, ("cosine_kwargs",), []),
    ("sgdr_schedule", dict(cosine_kwargs=dict(init_value=0.0)), TypeError, ("cosine_kwargs",), dict(init_value=0.0)),
    ("sgdr_schedule", dict(cosine_kwargs=[dict(init_value=0.0, peak_value=1.0, warmup_steps=1)]), TypeError,
     ("cosine_kwargs[0]", "decay_steps"), dict(init_value=0.0, peak_value=1.0, warmup_steps=1)),
    ("sgdr_schedule", dict(cosine_kwargs=[dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=5),
                                          dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=-5)]),
     ValueError, ("cosine_kwargs[1]['decay_steps']",), -5),
    ("sgdr_schedule", dict(cosine_kwargs=[dict(init_value="0", peak_value=1.0, warmup_steps=1, decay_steps=5)]),
     TypeError, ("cosine_kwargs[0]['init_value']",), "0"),
    ("sgdr_schedule", dict(cosine_kwargs=[dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=5,
                                               alpha=0.1)]), TypeError, ("cosine_kwargs[0]",), 0.1),
])
def test_structural_arguments_are_validated(name, kwargs, exc, words, value):
  with pytest.raises(exc, match=_message(name, *words, value=value)):
    getattr(adamx, name)(**kwargs)


@pytest.mark.parametrize("name, arg", [("cosine_onecycle_schedule", "pct_start"),
                                       ("linear_schedule", "transition_steps"),
                                       ("cosine_warm_restarts_schedule", "period_steps")])
def test_shape_arguments_must_be_concrete(name, arg):
  """Step counts and phase fractions place the phases, so a tracer for one is a clear TypeError, not a crash."""
  value = 0.3 if arg == "pct_start" else 7
  with pytest.raises(TypeError, match=rf"adamx\.{name}: {arg} must be a concrete"):
    jax.jit(lambda v: _make(name, **{arg: v})(3))(jnp.asarray(value))
