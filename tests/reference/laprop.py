"""Float64 NumPy reference for LaProp, transcribed from the paper's pseudocode (not from adamx's code).

Ziyin, Wang & Ueda 2020, "LaProp: Separating Momentum and Adaptivity in Adam" (arXiv 2002.04839), Algorithm 1. Its
statements are numbered here from the first line after ``Input: x_1, learning rates eta_t, decay parameters
0 <= mu < 1, 0 <= nu < 1, eps``:

.. code-block:: text

   (1)  m_0 = 0, n_0 = 0
   (2)  for t = 1 to T do
   (3)    g_t = grad_x l(x_t)
   (4)    n_t = nu n_{t-1} + (1 - nu) g_t^2
   (5)    m_t = mu m_{t-1} + (1 - mu) g_t / (sqrt(n_t / c_n) + eps)
   (6)    x_{t+1} = x_t - eta_t m_t / c_m
   (7)  end for

with the bias corrections ``c_n = 1 - nu^t`` and ``c_m = 1 - mu^t``. ``mu``/``nu`` are adamx's ``b1``/``b2``; the
iterate ``x_t -> x_{t+1}`` is ``theta_{t-1} -> theta_t`` here. Caveat: the PDF was not reachable from the search
corpus while this was written; the lines are quoted from the authors' code and README
(github.com/Z-T-WANG/LaProp-Optimizer) and from a published transcription, which agree.

Where the libraries depart from the paper (each is an option here, marked ``DEPARTURE:`` in the code):

* ``eps_root`` inside the square root (adamx; 0 is the paper).
* ``weight_decay``: decoupled, ``theta_t <- theta_t - eta_t lambda theta_{t-1}`` (adamx, as AdamW), optionally
  masked. (The authors' code multiplies the updated params by ``1 - lambda``, not scaled by the learning rate.)
* ``lr_in_momentum=True``: the authors' code, which averages ``eta_k g_k / (...)`` into the momentum and replaces
  ``c_m`` by the same average of ``eta_k`` divided by ``eta_t``; identical to line (6) for a constant learning rate.

Conventions (those of :mod:`tests.reference.adam`): ``t`` is 1-based, a schedule is evaluated at ``t - 1``, complex
leaves keep a complex first moment and a real second moment of ``|g|^2``. API: ``state = opt.init(params)``;
``delta, state = opt.update(grads, params, state, t)``; state is a dict with ``count``, ``mu`` (m_t) and ``nu``
(n_t).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _like_zeros, _map, _rate, _real_zeros
from tests.reference.adam import apply

__all__ = ["LaProp"]


@dataclasses.dataclass(frozen=True)
class LaProp:
  """LaProp, Ziyin et al. 2020, Algorithm 1 (``learning_rate`` is ``eta_t``, ``b1``/``b2`` the paper's ``mu``/``nu``).

  The paper is ``eps_root=0, weight_decay=0, lr_in_momentum=False``.
  """

  learning_rate: Rate = 4e-4
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-15
  eps_root: float = 0.0
  weight_decay: float = 0.0
  mask: Any = None
  lr_in_momentum: bool = False

  def init(self, params: Any) -> dict:
    # (1): m_0 = 0, n_0 = 0
    state = {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params),
             "nu": jax.tree_util.tree_map(_real_zeros, params)}
    return state

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (2): for t = 1 to T
    eta = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))
    c_n, c_m = 1.0 - b2**t, 1.0 - b1**t
    if self.lr_in_momentum:
      # DEPARTURE (the authors' code): exp_avg_lr_1 = mu exp_avg_lr_1 + (1 - mu) eta_t (summed here from the rates of
      # steps 1..t, so that the state keeps adamx's fields only); the step size is eta_t / exp_avg_lr_1.
      lr_avg = sum((1.0 - b1) * b1 ** (t - k) * _rate(self.learning_rate, k) for k in range(1, t + 1))
    mask = (jax.tree_util.tree_map(lambda _: True, params) if self.mask is None
            else self.mask(params) if callable(self.mask) else self.mask)

    def leaf(g, theta, m, n, decays):
      g, theta, m, n = _f64(g), _f64(theta), _f64(m), _f64(n)
      # (3): g_t = grad l(x_t)  -- given.
      # (4): n_t = nu n_{t-1} + (1 - nu) g_t^2      (|g_t|^2 for complex g_t)
      n = b2 * n + (1.0 - b2) * _abs_sq(g)
      # (5): m_t = mu m_{t-1} + (1 - mu) g_t / (sqrt(n_t / c_n) + eps)
      # DEPARTURE (eps_root > 0): sqrt(n_t / c_n + eps_root).
      normed = g / (np.sqrt(n / c_n + eps_root) + eps)
      # DEPARTURE (weight_decay > 0): decoupled decay - eta_t lambda theta_{t-1}, as AdamW.
      decay = lam * theta if bool(np.all(np.asarray(decays, bool))) else np.zeros_like(theta)
      if self.lr_in_momentum:
        # DEPARTURE (the authors' code): exp_avg = mu exp_avg + (1 - mu) eta_t normed; p -= (eta_t / lr_avg) exp_avg.
        m = b1 * m + (1.0 - b1) * eta * normed
        return -(eta / lr_avg) * m - eta * decay, m, n
      m = b1 * m + (1.0 - b1) * normed
      # (6): x_{t+1} = x_t - eta_t m_t / c_m
      return -eta * (m / c_m + decay), m, n

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
