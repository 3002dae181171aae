"""Schedules: warmup_cosine_schedule against optax's warmup_cosine_decay_schedule and a float64 formula."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx

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
  counts = np.arange(0, cfg["decay_steps"] + 30)  # past the end too
  got = np.asarray(jax.vmap(ours)(jnp.asarray(counts)))
  want = np.asarray(jax.vmap(theirs)(jnp.asarray(counts)))
  exact = np.array([_exact(int(c), **cfg) for c in counts])
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
