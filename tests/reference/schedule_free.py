"""Float64 NumPy reference for Schedule-Free AdamW, transcribed from the paper's pseudocode.

Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky 2024, "The Road Less Scheduled" (NeurIPS), Algorithm 1
(Schedule-Free AdamW), quoted in ASCII with the paper's line numbers (``<-`` is assignment, products and powers are
elementwise, ``g_t^2`` is ``|g_t|^2`` for complex leaves):

.. code-block:: text

   1:  Input: x_1, learning rate gamma, decay lambda, warmup steps T_warmup, beta_1, beta_2, epsilon
   2:  z_1 = x_1
   3:  v_0 = 0
   4:  for t = 1 to T do
   5:    y_t = (1 - beta_1) z_t + beta_1 x_t                               (momentum via interpolation)
   6:    g_t in grad f(y_t, zeta_t)                                        (gradient is evaluated at y)
   7:    v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
   8:    gamma_t = gamma sqrt(1 - beta_2^t) min(1, t / T_warmup)           (LR includes warmup and bias correction)
   9:    z_{t+1} = z_t - gamma_t g_t / (sqrt(v_t) + epsilon) - gamma_t lambda y_t
   10:   c_{t+1} = gamma_t^2 / sum_{i=1}^t gamma_i^2
   11:   x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}                     (update weighted iterate average)
   12: end for
   13: Return x_T

Caveat: the PDF was not reachable from the search corpus while this was written; the lines are quoted from memory
and cross-checked line by line against the authors' simplified reference implementation
(``facebookresearch/schedule_free``, ``schedulefree/adamw_schedulefree_reference.py``, ``AdamWScheduleFreeReference
.step``), which keeps ``x``, ``y`` and ``z`` explicitly as this module does, and agrees with every line above.

This module keeps all three sequences, as the authors' reference does (adamx keeps only ``z`` and recovers ``x`` from
the params ``y``), so a comparison checks adamx's algebra too. Options beyond the paper, marked ``DEPARTURE:``:

* ``weight_lr_power`` ``p`` and the running maximum of ``gamma`` in line 10 (the authors' code:
  ``weight = lr_max ** weight_lr_power``); ``p = 2`` with a non-decreasing ``gamma_t`` (a constant rate with
  warmup, as in the paper) is line 10 exactly. ``c = 0`` while the sum is 0 (the code's ``ZeroDivisionError``).
* ``learning_rate`` may be a schedule ``lr(count)``, evaluated at ``count = t - 1`` (adamx's convention for every
  optimizer); the paper's is constant. ``warmup_steps=None`` or ``0``: no warmup (``min(...) = 1``).
* ``mask``: the leaves that decay (``None``: all, the paper).
* ``convention="optax"``: ``optax.contrib.schedule_free_adamw``'s numbers. Line 8 splits into the rate of the
  z-step, ``lr(t - 1) min(1, (t - 1) / T_warmup)`` (optax's ``scale_by_learning_rate`` of its warmup schedule, whose
  count starts at 0), and the rate of the averaging weights, ``lr(t) min(1, t / T_warmup)`` (its ``step_count``
  starts at 1), neither with ``sqrt(1 - beta_2^t)``; line 9 divides by ``sqrt(v_t / (1 - beta_2^t)) + epsilon``.

API: ``opt = ScheduleFreeAdamW(learning_rate=..., ...)``; ``state = opt.init(params)``; then for ``t = 1, 2, ...``
``state = opt.update(grads, state, t)`` with the gradient taken at ``state["y"]`` (line 6). ``state`` is a dict with
``count`` (``t`` after step ``t``), the pytrees ``x``, ``y``, ``z`` (``x_{t+1}``, ``y_{t+1}``, ``z_{t+1}`` after
step ``t``), ``nu`` (``v_t``, real) and the floats ``weight_sum`` (``sum_i weight_i``) and ``max_lr``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _map, _rate, _real_zeros

__all__ = ["ScheduleFreeAdamW", "CONVENTIONS"]

CONVENTIONS = ("paper", "optax")


def _warm(n: int, warmup_steps: int | None) -> float:
  """``min(1, n / T_warmup)``; 1 without warmup."""
  return min(1.0, n / warmup_steps) if warmup_steps else 1.0


@dataclasses.dataclass(frozen=True)
class ScheduleFreeAdamW:
  """Schedule-Free AdamW, Algorithm 1 (``learning_rate`` is ``gamma``; see the module docstring for the options)."""

  learning_rate: Rate = 0.0025
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  warmup_steps: int | None = None
  weight_lr_power: float = 2.0
  mask: Any = None
  convention: str = "paper"

  def __post_init__(self):
    if self.convention not in CONVENTIONS:
      raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")

  def init(self, params: Any) -> dict:
    x = jax.tree_util.tree_map(_f64, params)  # line 1: x_1
    return {
        "count": 0,
        "x": x,
        "z": jax.tree_util.tree_map(np.copy, x),  # line 2: z_1 = x_1
        "y": jax.tree_util.tree_map(np.copy, x),  # line 5 at t = 1: y_1 = x_1 (= z_1)
        "nu": jax.tree_util.tree_map(_real_zeros, params),  # line 3: v_0 = 0
        "weight_sum": 0.0,
        "max_lr": 0.0,
    }

  def _rates(self, t: int) -> tuple[float, float]:
    """``(rate of the z-step, rate of the averaging weight)`` at step ``t``."""
    b2 = float(self.b2)
    if self.convention == "paper":
      # line 8: gamma_t = gamma sqrt(1 - beta_2^t) min(1, t / T_warmup); DEPARTURE: gamma may be a schedule.
      gamma_t = _rate(self.learning_rate, t) * math.sqrt(1.0 - b2**t) * _warm(t, self.warmup_steps)
      return gamma_t, gamma_t
    # DEPARTURE (optax): the step uses the warmup schedule at count t - 1, the weight at count t, no sqrt.
    return (_rate(self.learning_rate, t) * _warm(t - 1, self.warmup_steps),
            _rate(self.learning_rate, t + 1) * _warm(t, self.warmup_steps))

  def update(self, grads: Any, state: dict, t: int) -> dict:
    _check_t(state, t)  # line 4: for t = 1 to T
    b1, b2, eps, lam = float(self.b1), float(self.b2), float(self.eps), float(self.weight_decay)
    step_rate, avg_rate = self._rates(t)
    # line 10: c_{t+1} = gamma_t^2 / sum_{i<=t} gamma_i^2. DEPARTURE (authors' code): the running maximum of gamma
    # and the power weight_lr_power; c = 0 while the sum is 0.
    max_lr = max(state["max_lr"], avg_rate)
    weight = max_lr ** float(self.weight_lr_power)
    weight_sum = state["weight_sum"] + weight
    c = weight / weight_sum if weight_sum != 0 else 0.0
    if self.mask is None:
      decays = jax.tree_util.tree_map(lambda _: True, state["y"])
    else:
      decays = self.mask(state["y"]) if callable(self.mask) else self.mask

    def leaf(g, x, y, z, v, dec):
      g = _f64(g)
      v = b2 * v + (1.0 - b2) * _abs_sq(g)  # line 7: v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
      if self.convention == "paper":
        denom = np.sqrt(v) + eps  # line 9: sqrt(v_t) + epsilon
      else:
        denom = np.sqrt(v / (1.0 - b2**t)) + eps  # DEPARTURE (optax): bias correction inside the root
      lam_leaf = lam if bool(np.all(np.asarray(dec, bool))) else 0.0  # DEPARTURE: the decay mask
      # line 9: z_{t+1} = z_t - gamma_t g_t / (sqrt(v_t) + epsilon) - gamma_t lambda y_t
      z = z - step_rate * g / denom - step_rate * lam_leaf * y
      x = (1.0 - c) * x + c * z  # line 11: x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
      y = (1.0 - b1) * z + b1 * x  # line 5 of step t + 1: y_{t+1} = (1 - beta_1) z_{t+1} + beta_1 x_{t+1}
      return x, y, z, v

    x, y, z, nu = _map(leaf, 4, grads, state["x"], state["y"], state["z"], state["nu"], decays)
    return {"count": t, "x": x, "y": y, "z": z, "nu": nu, "weight_sum": weight_sum, "max_lr": max_lr}
