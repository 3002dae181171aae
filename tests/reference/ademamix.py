"""Float64 NumPy reference for AdEMAMix, transcribed from the paper's pseudocode and its schedulers.

Written from the paper, one pseudocode line per statement with the line quoted, and not from adamx's code (which
computes the schedulers differently, see :func:`f_beta3`). Options the libraries add are marked ``DEPARTURE:``;
their neutral values (the defaults) give the paper's algorithm.

Pagliardini, Ablin & Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older" (ICLR 2025), Algorithm 1,
numbered as in the paper (quoted in ASCII):

.. code-block:: text

   (1)  Input: data D, theta_0, T, eta, eps; AdamW parameters beta_1, beta_2, lambda; AdEMAMix parameters
        beta_3, alpha; warmup parameter T_{alpha,beta_3} (usually T); beta_start (usually beta_1)
   (2)  Initialize timestep: t <- 0
   (3)  Initialize EMAs: m1_0 <- 0, m2_0 <- 0, nu_0 <- 0
   (4)  for t in [T] do
   (5)    t <- t + 1
   (6)    Optional: use schedulers eta(t), beta_3(t) <- f_beta3(t, beta_3, beta_start, T_{alpha,beta_3}) and
          alpha(t) <- f_alpha(t, alpha, T_{alpha,beta_3})
   (7)    Sample batch: x ~ D
   (8)    Compute gradient: g_t <- grad_theta L_{theta_{t-1}}(x)
   (9)    Update the fast EMA m1: m1_t <- beta_1 m1_{t-1} + (1 - beta_1) g_t
   (10)   Update the slow EMA m2: m2_t <- beta_3(t) m2_{t-1} + (1 - beta_3(t)) g_t
   (11)   Update the second moment estimate: nu_t <- beta_2 nu_{t-1} + (1 - beta_2) g_t^2
   (12)   Apply bias corrections: m1hat_t <- m1_t / (1 - beta_1^t), nuhat_t <- nu_t / (1 - beta_2^t)
   (13)   Update parameters: theta_t <- theta_{t-1} - eta(t) ((m1hat_t + alpha(t) m2_t) / (sqrt(nuhat_t) + eps)
          + lambda theta_{t-1})
   (14) end for
   (15) Return optimized parameters theta_T

The schedulers (Section 3, "Schedulers"), with warmup length ``T``:

.. code-block:: text

   f_alpha(t, alpha, T) = min(t alpha / T, alpha)
   f_beta3(t, beta_3, beta_start, T) = min(exp(log(beta_start) log(beta_3) /
                                              ((1 - t/T) log(beta_3) + (t/T) log(beta_start))), beta_3)

Caveat: the PDF was not reachable from the search corpus while this was written; Algorithm 1 is quoted from a
plain-text copy of the ICLR version, the schedulers from memory, cross-checked against the authors' code
(``apple/ml-ademamix``: ``linear_warmup_scheduler`` and ``linear_hl_warmup_scheduler``, which interpolates the
half-life ``log(0.5) / log(beta) - 1`` linearly and is the same function, see :func:`f_beta3`) and against optax.

Where the libraries depart (each an option here):

* ``lagged_schedulers``: line (6) evaluates the schedulers at ``t`` after line (5)'s increment (so is the authors'
  PyTorch code). adamx, optax and the authors' optax code call a schedule with the number of earlier updates,
  ``t - 1``, as they do the learning rate: ``lagged_schedulers=True``.
* ``b3``/``alpha`` as library schedules ``count -> value`` (evaluated at ``t - 1``, like the learning rate), instead
  of the paper's schedulers (``b3_warmup``/``alpha_warmup``).
* ``eps_root`` inside the square root (optax, adamx); 0 is the paper.
* ``mask``: the leaves that decay (all of them in the paper).
* ``alpha_warmup`` and ``b3_warmup`` are separate (as in the authors' code); the paper's single
  ``T_{alpha,beta_3}`` is both equal.

Conventions (those of :mod:`tests.reference.adam`): ``t`` is 1-based; a learning-rate schedule is evaluated at
``t - 1`` (the paper's ``eta(t)`` is a library schedule); complex leaves keep complex EMAs and a real second moment
of ``|g|^2``; float64 / complex128 throughout.

API: ``state = opt.init(params)``; ``delta, state = opt.update(grads, params, state, t)`` or ``params, state =
opt.step(grads, params, state, t)``. ``state`` is a dict ``count``, ``mu`` (m1_t), ``nu`` (nu_t), ``mu_slow``
(m2_t), named like adamx's state fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _like_zeros, _map, _rate, _real_zeros, apply

__all__ = ["AdEMAMix", "f_alpha", "f_beta3"]


def f_alpha(t: float, alpha: float, warmup: int) -> float:
  """Section 3: ``f_alpha(t, alpha, T) = min(t alpha / T, alpha)``."""
  return min(t * alpha / warmup, alpha)


def f_beta3(t: float, beta_3: float, beta_start: float, warmup: int) -> float:
  """Section 3: ``f_beta3(t, beta_3, beta_start, T) = min(exp(log(beta_start) log(beta_3) / ((1 - t/T) log(beta_3)
  + (t/T) log(beta_start))), beta_3)``, for ``0 < beta_start`` and ``0 <= t <= T``; ``beta_3`` from ``t = T`` on
  (there the formula is exactly ``beta_3``; past ``T`` its denominator would change sign).

  The authors' code interpolates ``f(beta) = log(0.5) / log(beta) - 1`` (the half-life minus one) linearly,
  ``f^{-1}((1 - a) f(beta_start) + a f(beta_3))`` with ``f^{-1}(x) = 0.5^(1 / (x + 1))``: since the ``-1`` terms cancel,
  ``log beta = 1 / ((1 - a) / log(beta_start) + a / log(beta_3))``, which is this formula with ``a = t/T``.
  """
  if t >= warmup:
    return float(beta_3)
  a = t / warmup
  log_s, log_3 = math.log(beta_start), math.log(beta_3)
  return min(math.exp(log_s * log_3 / ((1.0 - a) * log_3 + a * log_s)), beta_3)


@dataclasses.dataclass(frozen=True)
class AdEMAMix:
  """AdEMAMix, Pagliardini et al. 2024, Algorithm 1.

  ``learning_rate`` is ``eta(t)`` (a number, or a schedule evaluated at ``t - 1``), ``weight_decay`` is ``lambda``.
  ``b3``/``alpha`` are numbers, or (DEPARTURE) library schedules evaluated at ``t - 1``; ``b3_warmup``/
  ``alpha_warmup`` (not None) instead use line (6)'s schedulers ``f_beta3(t, b3, b3_start, b3_warmup)`` and
  ``f_alpha(t, alpha, alpha_warmup)`` with the numbers ``b3``, ``alpha`` as their final values; ``b3_start=None`` is
  the paper's usual ``beta_start = beta_1``. Departures: ``lagged_schedulers``, ``eps_root``, ``mask`` (see the
  module docstring).
  """

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  b3: Rate = 0.9999
  alpha: Rate = 5.0
  eps: float = 1e-8
  eps_root: float = 0.0
  weight_decay: float = 0.0
  mask: Any = None
  alpha_warmup: int | None = None
  b3_warmup: int | None = None
  b3_start: float | None = None
  lagged_schedulers: bool = False

  def init(self, params: Any) -> dict:
    # (2): t <- 0.  (3): m1_0 <- 0, m2_0 <- 0, nu_0 <- 0 (the EMAs of g have the parameter's type, nu is real).
    return {
        "count": 0,
        "mu": jax.tree_util.tree_map(_like_zeros, params),
        "nu": jax.tree_util.tree_map(_real_zeros, params),
        "mu_slow": jax.tree_util.tree_map(_like_zeros, params),
    }

  def hyperparameters(self, t: int) -> tuple[float, float]:
    """``(beta_3(t), alpha(t))`` of line (6) at step ``t``."""
    # DEPARTURE (lagged_schedulers=True): the schedulers see t - 1, the count of earlier updates.
    s = t - 1 if self.lagged_schedulers else t
    b1 = float(self.b1)
    if self.b3_warmup is not None:
      start = b1 if self.b3_start is None else float(self.b3_start)
      b3 = f_beta3(s, float(self.b3), start, self.b3_warmup)
    else:
      b3 = _rate(self.b3, t)  # a number, or DEPARTURE: a library schedule at t - 1
    if self.alpha_warmup is not None:
      alpha = f_alpha(s, float(self.alpha), self.alpha_warmup)
    else:
      alpha = _rate(self.alpha, t)
    return b3, alpha

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    """One step: ``(delta, new_state)`` with ``theta_t = theta_{t-1} + delta``."""
    _check_t(state, t)  # (5): t <- t + 1 (the caller passes the new t)
    # (6): beta_3(t), alpha(t) (the schedulers, optional) and eta(t).
    b3, alpha = self.hyperparameters(t)
    eta = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))
    if self.mask is None:
      mask = jax.tree_util.tree_map(lambda _: True, params)
    else:
      mask = self.mask(params) if callable(self.mask) else self.mask

    def leaf(g, theta, m1, nu, m2, decays):
      g, theta, m1, nu, m2 = _f64(g), _f64(theta), _f64(m1), _f64(nu), _f64(m2)
      # (7)-(8): g_t <- grad_theta L_{theta_{t-1}}(x)  -- given.
      # (9): m1_t <- beta_1 m1_{t-1} + (1 - beta_1) g_t
      m1 = b1 * m1 + (1.0 - b1) * g
      # (10): m2_t <- beta_3(t) m2_{t-1} + (1 - beta_3(t)) g_t
      m2 = b3 * m2 + (1.0 - b3) * g
      # (11): nu_t <- beta_2 nu_{t-1} + (1 - beta_2) g_t^2                 (|g_t|^2 for complex g_t)
      nu = b2 * nu + (1.0 - b2) * _abs_sq(g)
      # (12): m1hat_t <- m1_t / (1 - beta_1^t), nuhat_t <- nu_t / (1 - beta_2^t)     (m2_t is not corrected)
      m1_hat = m1 / (1.0 - b1**t)
      nu_hat = nu / (1.0 - b2**t)
      # (13): theta_t <- theta_{t-1} - eta(t) ((m1hat_t + alpha(t) m2_t) / (sqrt(nuhat_t) + eps) + lambda theta_{t-1})
      # DEPARTURE (eps_root > 0): sqrt(nuhat_t + eps_root). DEPARTURE (mask): lambda = 0 where False.
      decay = lam * theta if bool(np.all(np.asarray(decays, bool))) else np.zeros_like(theta)
      delta = -eta * ((m1_hat + alpha * m2) / (np.sqrt(nu_hat + eps_root) + eps) + decay)
      return delta, m1, nu, m2

    delta, mu, nu, mu_slow = _map(leaf, 4, grads, params, state["mu"], state["nu"], state["mu_slow"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu, "mu_slow": mu_slow}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
