"""Float64 NumPy reference for Sophia (Liu, Li, Hall, Liang & Ma 2023, arXiv 2305.14342), written from the paper.

Like :mod:`tests.reference.classic`: one pseudocode line per statement, the line quoted in a comment, not written
from adamx's code; the options that the libraries add are marked ``DEPARTURE:`` and default to adamx's defaults.

The paper's Algorithm 3 (ICLR 2024 version; lines numbered as in the paper; ``<-`` is assignment, products,
divisions, ``max`` and ``clip`` are per coordinate):

.. code-block:: text

   (1)  Input: theta_1, learning rate {eta_t}, hyperparameters lambda, gamma, beta_1, beta_2, eps, and estimator
        choice Estimator in {Hutchinson, Gauss-Newton-Bartlett}
   (2)  Set m_0 = 0, v_0 = 0, h_{1-k} = 0
   (3)  for t = 1 to T do
   (4)    Compute minibatch loss L_t(theta_t).
   (5)    Compute g_t = grad L_t(theta_t).
   (6)    m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
   (7)    if t mod k = 1 then
   (8)      Compute hhat_t = Estimator(theta_t).
   (9)      h_t = beta_2 h_{t-k} + (1 - beta_2) hhat_t
   (10)   else
   (11)     h_t = h_{t-1}
   (12)   theta_t = theta_t - eta_t lambda theta_t            (weight decay)
   (13)   theta_{t+1} = theta_t - eta_t clip(m_t / max{gamma h_t, eps}, 1)

with ``clip(z, rho) = max(min(z, rho), -rho)``. ``v_0`` of line (2) is never used. The estimators:

* Algorithm 1 (Hutchinson): draw ``u ~ N(0, I_d)``; return ``u * grad(<grad L(theta), u>)`` ``= u * (H u)``.
* Algorithm 2 (Gauss-Newton-Bartlett): draw ``yhat_b ~ softmax(f(theta, x_b))`` for ``b = 1..B``; with
  ``Lhat(theta) = (1/B) sum_b l_ce(f(theta, x_b), yhat_b)``, return ``B * grad Lhat(theta) * grad Lhat(theta)``.

Caveat: the PDF was not reachable from the search corpus while this was written; the lines are quoted from memory
and cross-checked against the docstring of ``optax.contrib.sophia`` and the authors' code (``Liuhong99/Sophia``,
``sophia.py`` and ``train_sophiag.py``). Indices here are the paper's: step ``t`` reads ``theta_t`` and writes
``theta_{t+1}``; adamx's docstrings write the same step as ``theta_{t-1} -> theta_t``.

Departures (options of :class:`Sophia`; ``bias_correction=False, fresh_hessian=True, clip_threshold=1`` with a
normal probe is the paper):

* ``bias_correction=True`` (optax, adamx's default): line (13) uses ``m_t / (1 - beta_1^t)``.
* ``fresh_hessian=False`` (optax, adamx's default): line (13) uses ``h_{t-1}``, the EMA before this step's refresh
  (optax computes the step first and refreshes after it), so the estimate of step ``t`` first acts at ``t + 1``.
* ``clip_threshold``: the bound 1 of line (13) (``rho`` in the paper's first version, before ``gamma`` existed).

The estimate is a callback (:meth:`Sophia.step`'s ``estimate``), so that the caller provides the probe or the
sampled labels: a NumPy reference cannot draw JAX's random numbers. :func:`hutchinson` and
:func:`gauss_newton_bartlett` are Algorithms 1 and 2 for a given probe / given labels.

API: ``state = opt.init(params)``; ``params, state = opt.step(grads, params, state, t, estimate)`` with ``t`` the
1-based step and ``estimate(params) -> hhat`` (called only when ``t mod k = 1``); ``state`` holds ``count``, ``mu``
(``m_t``) and ``nu`` (``h_t``), named like adamx's state. All maths in float64 from exact copies of the inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _check_t, _f64, _map, _rate, _real_zeros

__all__ = ["Sophia", "hutchinson", "gauss_newton_bartlett", "softmax_ce_grad"]


@dataclasses.dataclass(frozen=True)
class Sophia:
  """Sophia, Liu et al. 2023, Algorithm 3, with adamx's options as labelled departures (see the module docstring).

  ``learning_rate`` is ``eta_t`` (a number, or a schedule evaluated at ``t - 1``); ``weight_decay`` is ``lambda``;
  ``update_interval`` is ``k``; ``mask`` (a pytree of bools or None) selects the leaves that decay.
  """

  learning_rate: Rate = 2e-4
  b1: float = 0.965
  b2: float = 0.99
  eps: float = 1e-8
  weight_decay: float = 1e-4
  gamma: float = 0.01
  clip_threshold: float = 1.0
  update_interval: int = 10
  bias_correction: bool = True
  fresh_hessian: bool = False
  mask: Any = None

  def init(self, params: Any) -> dict:
    # (2): m_0 = 0, h_{1-k} = 0 (v_0 is unused)
    return {"count": 0, "mu": jax.tree_util.tree_map(_real_zeros, params),
            "nu": jax.tree_util.tree_map(_real_zeros, params)}

  def step(self, grads: Any, params: Any, state: dict, t: int, estimate: Callable[[Any], Any]
           ) -> tuple[Any, dict, Any]:
    """One step: ``(theta_{t+1}, state_t, delta)`` with ``delta = theta_{t+1} - theta_t``."""
    _check_t(state, t)
    eta, b1, b2, k = _rate(self.learning_rate, t), float(self.b1), float(self.b2), int(self.update_interval)
    params = jax.tree_util.tree_map(_f64, params)
    # (4)-(5): g_t is given (seeded gradients in the tests)
    grads = jax.tree_util.tree_map(_f64, grads)
    # (6): m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
    mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state["mu"], grads)
    h_prev = state["nu"]
    if t % k == 1 % k:  # (7): if t mod k = 1 (for k = 1: every step, t mod 1 = 0 = 1 mod 1)
      # (8): hhat_t = Estimator(theta_t)
      h_hat = jax.tree_util.tree_map(_f64, estimate(params))
      # (9): h_t = beta_2 h_{t-k} + (1 - beta_2) hhat_t   (h_{t-k} = h_{t-1}: h is constant in between)
      nu = jax.tree_util.tree_map(lambda h, e: b2 * h + (1.0 - b2) * e, h_prev, h_hat)
    else:
      # (11): h_t = h_{t-1}
      nu = h_prev
    # DEPARTURE (fresh_hessian=False): optax steps with h_{t-1}, the EMA before this step's refresh.
    h_step = nu if self.fresh_hessian else h_prev
    masks = (jax.tree_util.tree_leaves(self.mask) if self.mask is not None
             else [True] * len(jax.tree_util.tree_leaves(params)))
    mask_tree = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), masks)

    def leaf(p, m, h, decays):
      # DEPARTURE (bias_correction=True): optax divides m_t by 1 - beta_1^t.
      m_used = m / (1.0 - b1**t) if self.bias_correction else m
      # (12): theta_t = theta_t - eta_t lambda theta_t
      decayed = p - eta * float(self.weight_decay) * p if decays else p
      # (13): theta_{t+1} = theta_t - eta_t clip(m_t / max{gamma h_t, eps}, 1)   (1 -> clip_threshold)
      c = float(self.clip_threshold)
      new = decayed - eta * np.clip(m_used / np.maximum(float(self.gamma) * h, float(self.eps)), -c, c)
      return new, new - p

    new_params, delta = _map(leaf, 2, params, mu, h_step, mask_tree)
    return new_params, {"count": t, "mu": mu, "nu": nu}, delta


def hutchinson(hvp: Callable[[Any, Any], Any], params: Any, u: Any) -> Any:
  """Algorithm 1 for the probe ``u``: ``u * (H u)``, with ``hvp(params, u) = H u`` the exact Hessian-vector
  product of the loss at ``params``."""
  u = jax.tree_util.tree_map(_f64, u)
  return jax.tree_util.tree_map(lambda a, b: a * b, u, hvp(jax.tree_util.tree_map(_f64, params), u))


def gauss_newton_bartlett(grad_sampled: Any, batch: int) -> Any:
  """Algorithm 2 given ``grad Lhat(theta)`` on the sampled labels: ``B * grad Lhat * grad Lhat``."""
  return jax.tree_util.tree_map(lambda g: batch * _f64(g) * _f64(g), grad_sampled)


def softmax_ce_grad(x: np.ndarray, w: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """``grad_W (1/B) sum_b l_ce(x_b W, y_b)`` for a linear softmax model: ``x^T (softmax(x W) - onehot(y)) / B``."""
  x, w = _f64(x), _f64(w)
  z = x @ w
  p = np.exp(z - z.max(axis=-1, keepdims=True))
  p /= p.sum(axis=-1, keepdims=True)
  p[np.arange(len(labels)), labels] -= 1.0
  return x.T @ p / len(labels)
