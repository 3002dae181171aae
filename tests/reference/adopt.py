"""Float64 NumPy reference for ADOPT, transcribed from the paper's pseudocode (not from adamx's code).

Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate" (NeurIPS),
Algorithm 1 in the form with clipping of the authors' November 2024 revision (arXiv 2411.02853 v3; the first
version had no ``Clip``). Its statements are numbered here from the first line after the ``Require:`` lines:

.. code-block:: text

   (1)  v_0 <- g_0 (.) g_0,  m_0 <- 0          (g_0 = grad f_0(theta_0))
   (2)  for t = 1 to T do
   (3)    g_t <- grad_theta f_t(theta_{t-1})
   (4)    m_t <- beta_1 m_{t-1} + (1 - beta_1) Clip(g_t / max{sqrt(v_{t-1}), eps}, c_t)
   (5)    theta_t <- theta_{t-1} - alpha_t m_t
   (6)    v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t (.) g_t
   (7)  end for

with ``Clip(x, c)`` the elementwise projection onto ``[-c, c]`` and ``c_t = t^(1/4)`` (the authors' default
``clip_lambda = lambda step: step ** 0.25``, called with the number of earlier calls, i.e. the paper's ``t``; optax's
``clip_value_fn`` likewise). Caveat: the PDF was not reachable from the search corpus while this was written; the
lines are quoted from the authors' README and code (github.com/iShohei220/adopt) and from published transcriptions
(mlx-optimizers, pytorch_optimizer), which agree with each other.

Where the libraries depart from the paper (each is an option here, marked ``DEPARTURE:`` in the code):

* ``clipping=False``: no ``Clip`` (the paper's first version, optax's ``use_clipping=False``).
* ``nesterov=True`` (optax only): the step uses ``beta_1 m_t + (1 - beta_1) Clip(...)`` instead of ``m_t``.
* ``weight_decay``: decoupled, ``theta_t <- theta_t - alpha_t lambda theta_{t-1}`` at every call, the first one
  included (adamx's chain; the authors' ``decouple=True`` skips the first call), optionally masked.

Conventions (those of :mod:`tests.reference.adam`): the reference's ``t`` is the 1-based number of the call, so the
paper's index is ``s = t - 1`` (the first call is the paper's line (1), ``s = 0``); a learning-rate schedule is
evaluated at ``t - 1 = s``, as adamx and optax do; complex leaves keep a complex first moment and a real second
moment of ``|g|^2``, and ``Clip`` clips the modulus (adamx's convention; the paper is real). API: ``state =
opt.init(params)``; ``delta, state = opt.update(grads, params, state, t)``; state is a dict with ``count``, ``mu``
(m_s) and ``nu`` (v_s).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _like_zeros, _map, _rate, _real_zeros
from tests.reference.adam import apply

__all__ = ["ADOPT", "clip"]


def clip(x: np.ndarray, c: float) -> np.ndarray:
  """``Clip(x, c)``: ``[-c, c]`` for real entries; for complex ones the modulus is clipped and the phase kept."""
  if np.iscomplexobj(x):
    r = np.abs(x)
    return np.where(r > c, x * (c / np.where(r > c, r, 1.0)), x)
  return np.clip(x, -c, c)


def quarter_power(s: int) -> float:
  """``c_s = s^(1/4)``."""
  return float(s) ** 0.25


@dataclasses.dataclass(frozen=True)
class ADOPT:
  """ADOPT, Taniguchi et al. 2024, Algorithm 1 (``learning_rate`` is ``alpha_t``; a number or a schedule).

  The paper is ``nesterov=False, weight_decay=0`` (and ``clipping=False`` its first version); ``clip_value`` is
  ``s -> c_s``.
  """

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.9999
  eps: float = 1e-6
  clipping: bool = True
  clip_value: Callable[[int], float] = quarter_power
  nesterov: bool = False
  weight_decay: float = 0.0
  mask: Any = None

  def init(self, params: Any) -> dict:
    # (1): m_0 <- 0. v_0 is set from g_0 by the first call.
    return {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params),
            "nu": jax.tree_util.tree_map(_real_zeros, params)}

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)
    s = t - 1  # the paper's index
    alpha = _rate(self.learning_rate, t)
    b1, b2, eps, lam = float(self.b1), float(self.b2), float(self.eps), float(self.weight_decay)
    c = float(self.clip_value(s)) if self.clipping else None
    mask = (jax.tree_util.tree_map(lambda _: True, params) if self.mask is None
            else self.mask(params) if callable(self.mask) else self.mask)

    def leaf(g, theta, m, v, decays):
      g, theta, m, v = _f64(g), _f64(theta), _f64(m), _f64(v)
      # DEPARTURE (weight_decay > 0): decoupled decay - alpha lambda theta_{t-1}, at every call (adamx's chain).
      decay = lam * theta if bool(np.all(np.asarray(decays, bool))) else np.zeros_like(theta)
      if s == 0:
        # (1): v_0 <- g_0 (.) g_0 (|g_0|^2 for complex g_0); m_0 <- 0; theta is not updated.
        return -alpha * decay, m, _abs_sq(g)
      # (3): g_t <- grad f_t(theta_{t-1})  -- given.
      # (4): m_t <- beta_1 m_{t-1} + (1 - beta_1) Clip(g_t / max{sqrt(v_{t-1}), eps}, c_t)
      normed = g / np.maximum(np.sqrt(v), eps)
      if c is not None:
        normed = clip(normed, c)  # DEPARTURE (clipping=False, the first version): no Clip.
      m = b1 * m + (1.0 - b1) * normed
      # (5): theta_t <- theta_{t-1} - alpha_t m_t
      # DEPARTURE (nesterov=True, optax): step by beta_1 m_t + (1 - beta_1) Clip(...).
      step = b1 * m + (1.0 - b1) * normed if self.nesterov else m
      delta = -alpha * (step + decay)
      # (6): v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t (.) g_t
      v = b2 * v + (1.0 - b2) * _abs_sq(g)
      return delta, m, v

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
