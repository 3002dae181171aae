"""Claims made in the classic family's docstrings and README, each checked against an independent computation.

* RAdam's ``rho_t``: adamx's float32 value against a float64 evaluation, and optax's float32 formula's error
  (the reason adamx does not use it).
* Adamax: optax and PyTorch share one eps convention (``eps_mode="max"``), and ``"denominator"`` is Keras's.
* NAdam with ``momentum_decay=None`` is optax's ``nadam``, i.e. Adam with Nesterov momentum.
* LAMB's trust ratio leaves zero-norm parameters and updates unscaled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import adamx
from adamx.optimizers._radam import rho
from tests.trees import assert_close

B2S = [0.9, 0.99, 0.999, 0.9999, 0.99999]


def _rho_exact(b2: float, t: np.ndarray) -> np.ndarray:
  """float64 with expm1: the cancellation costs ~2/(1-b2) / rho_t ulps of float64, below 1e-10 relative here."""
  log_b2 = np.log(b2)
  return (2 / (1 - b2) - 1) - 2 * t * np.exp(t * log_b2) / -np.expm1(t * log_b2)


@pytest.mark.parametrize("b2", B2S)
def test_rho_is_accurate_in_float32(b2):
  t = np.arange(1, 20_001)
  exact = _rho_exact(b2, t.astype(np.float64))
  rho_inf, ours = rho(b2, jnp.asarray(t, jnp.int32), jnp.float32)
  assert ours.dtype == jnp.float32 and float(rho_inf) == np.float32(2 / (1 - b2) - 1)
  rel = np.abs(np.asarray(ours, np.float64) - exact) / np.abs(exact)
  assert rel.max() < 5e-7, (rel.max(), int(t[rel.argmax()]))


@pytest.mark.parametrize("b2,optax_err", [(0.999, 1e-3), (0.9999, 0.1)])
def test_optax_float32_rho_is_far_less_accurate(b2, optax_err):
  """optax computes ``rho_inf - 2 t b2^t / (1 - b2^t)`` in float32 (measured: 1.9e-3 and 0.16 relative where
  rho_t >= 4); adamx is within 5e-7 on the same steps."""
  t = np.arange(1, 20_001)
  exact = _rho_exact(b2, t.astype(np.float64))
  tt, b = jnp.asarray(t, jnp.int32), jnp.float32(b2)
  b2t = b**tt
  optax_rho = 2 / (1 - b) - 1 - 2 * tt * b2t / (1 - b2t)
  tractable = exact >= 4
  rel = np.abs(np.asarray(optax_rho, np.float64) - exact)[tractable] / exact[tractable]
  assert rel.max() > optax_err
  ours = np.asarray(rho(b2, tt, jnp.float32)[1], np.float64)
  assert (np.abs(ours - exact)[tractable] / exact[tractable]).max() < 5e-7


@pytest.mark.parametrize("b2", B2S + [0.95, 0.973, 0.988])
def test_rho_is_accurate_in_float64(b2, x64):
  """The series of the cancellation-free form must be cut earlier in float64 (a float32-accurate series left
  RAdam's float64 updates 1e-10 off a float64 reference)."""
  import mpmath

  t = np.arange(1, 3001)
  mpmath.mp.dps = 50
  b = mpmath.mpf(b2)
  exact = np.array([float((2 / (1 - b) - 1) - 2 * k * b**k / (1 - b**k)) for k in t])
  ours = np.asarray(rho(b2, jnp.asarray(t, jnp.int32), jnp.float64)[1])
  assert ours.dtype == np.float64
  rel = np.abs(ours - exact) / np.abs(exact)
  assert rel.max() < 1e-14, (rel.max(), int(t[rel.argmax()]))


def test_rho_edge_cases():
  t = jnp.arange(1, 6, dtype=jnp.int32)
  # b2 = 0: v_t = g_t^2, rho_inf = rho_t = 1 (never tractable); traced b2 agrees with the concrete one.
  np.testing.assert_allclose(rho(0.0, t, jnp.float32)[1], 1.0)
  for b2 in (0.0, 0.5, 0.999):
    np.testing.assert_allclose(rho(jnp.float32(b2), t, jnp.float32)[1], rho(b2, t, jnp.float32)[1], rtol=1e-5)
  top = rho(0.999, jnp.asarray([np.iinfo(np.int32).max], jnp.int32), jnp.float32)[1]
  np.testing.assert_allclose(top, 1999.0, rtol=1e-6)  # rho_t -> rho_inf, finite at the saturated count


def test_adamax_eps_convention_is_shared_by_optax_and_torch():
  """optax 0.2.8 and PyTorch both put eps inside the max (``eps_mode="max"``); ``"denominator"`` is Keras's
  ``m_hat / (u + eps)`` with ``u = max(b2 u, |g|)``. Step 1 is the same in both forms; steps with zero gradient
  then decay ``u`` towards ``eps`` (``"max"``) or towards 0 (``"denominator"``), which tells them apart."""
  b1, b2, eps = 0.9, 0.5, 1e-3
  grads = [np.array([0.0, 1e-9, 0.3, -2.0], np.float32)] + [np.zeros(4, np.float32)] * 6
  p = jnp.zeros(4, jnp.float32)
  tp = torch.tensor(np.zeros(4, np.float32), requires_grad=True)
  topt, otx = torch.optim.Adamax([tp], lr=1.0, betas=(b1, b2), eps=eps), optax.adamax(1.0, b1, b2, eps)
  txs = {mode: adamx.adamax(1.0, b1, b2, eps, eps_mode=mode) for mode in ("max", "denominator")}
  states = {mode: tx.init(p) for mode, tx in txs.items()}
  ostate, torch_before = otx.init(p), np.zeros(4)
  m, u = np.zeros(4), np.zeros(4)
  for t, g in enumerate(grads, start=1):
    ours = {}
    for mode, tx in txs.items():
      ours[mode], states[mode] = tx.update(jnp.asarray(g), states[mode], p)
    theirs, ostate = otx.update(jnp.asarray(g), ostate)
    tp.grad = torch.tensor(g)
    topt.step()
    torch_step = tp.detach().numpy().astype(np.float64) - torch_before
    torch_before = tp.detach().numpy().astype(np.float64)
    np.testing.assert_allclose(ours["max"], theirs, rtol=1e-6)
    np.testing.assert_allclose(ours["max"], torch_step, rtol=1e-5)
    m, u = b1 * m + (1 - b1) * g, np.maximum(b2 * u, np.abs(g))  # Keras, in float64
    np.testing.assert_allclose(ours["denominator"], -m / (1 - b1**t) / (u + eps), rtol=1e-5)
  # entry 3 after 6 zero gradients: u = b2^6 (2 + eps) = 0.0313 vs b2^6 2 + eps = 0.0323, 3% apart
  assert abs(ours["max"][3] / ours["denominator"][3] - 1) > 0.02


def test_nadam_without_momentum_decay_is_adam_with_nesterov():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  a, b = adamx.nadam(1e-2), adamx.adam(1e-2, nesterov=True)
  sa, sb = a.init(params), b.init(params)
  for _ in range(20):
    g = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    ua, sa = a.update(g, sa, params)
    ub, sb = b.update(g, sb, params)
    assert_close(ua, ub, 1e-6)
  assert_close(sa[1].mu, sb[1].mu, 0.0)
  np.testing.assert_allclose(float(sa[1].mu_product), 0.9**20, rtol=1e-5)


def test_lamb_zero_norms_leave_the_update_unscaled():
  """A zero parameter (fresh bias) or a zero update keeps ratio 1 (the authors' code and optax), instead of 0 or
  a division by zero."""
  params = {"zero": jnp.zeros(3), "w": jnp.full((2,), 3.0)}
  grads = {"zero": jnp.array([1.0, -2.0, 0.5]), "w": jnp.zeros(2)}
  tx = adamx.scale_by_lamb()
  u, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(u["zero"], np.sign(grads["zero"]), rtol=1e-5)  # Adam's first step, ratio 1
  assert np.all(np.asarray(u["w"]) == 0) and np.all(np.isfinite(u["w"]))
  ou, _ = optax.chain(optax.scale_by_adam(eps=1e-6), optax.scale_by_trust_ratio()).update(
      grads, optax.chain(optax.scale_by_adam(eps=1e-6), optax.scale_by_trust_ratio()).init(params), params)
  # optax's float32 1 - b2**1 is off by 6.7e-6 relative (see adamx.adam); adamx's by ~1e-7
  np.testing.assert_allclose(u["zero"], ou["zero"], rtol=2e-5)
  np.testing.assert_allclose(u["w"], ou["w"])


def test_trust_ratio_matches_optax_with_min_norm_and_coefficient():
  rng = np.random.default_rng(1)
  params = {"a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.asarray([1e-4, -1e-4], jnp.float32)}
  updates = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  kw = dict(min_norm=1e-2, trust_coefficient=0.5, eps=1e-3)
  ours, _ = adamx.scale_by_trust_ratio(**kw).update(updates, adamx.EmptyState(), params)
  theirs, _ = optax.scale_by_trust_ratio(**kw).update(updates, optax.EmptyState(), params)
  assert_close(ours, theirs, 1e-6)
