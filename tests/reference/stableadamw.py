"""A float64 NumPy reference for StableAdamW, transcribed from the paper's pseudocode.

Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt 2023, "Stable and low-precision training for
large-scale vision-language models" (NeurIPS), Algorithm 2 ("StableAdamW (AdamW + update clipping from
AdaFactor)"). Its statements, numbered here from the first line after ``Require: learning rate {alpha_t}, weight
decay {lambda_t}, beta_1, beta_2, eps`` (comments in the pseudocode are not numbered):

.. code-block:: text

   (1) v_0, u_0 = 0
   (2) for t = 1 to T do
   (3)   g_t = grad f(theta_t)
         // apply correction term to debias moving avg.
   (4)   beta1hat = beta_1 (1 - beta_1^(t-1)) / (1 - beta_1^t)
   (5)   beta2hat = beta_2 (1 - beta_2^(t-1)) / (1 - beta_2^t)
         // update moving averages.
   (6)   v_t = beta1hat v_{t-1} + (1 - beta1hat) g_t
   (7)   u_t = beta2hat u_{t-1} + (1 - beta2hat) g_t^2
         // for implementation convenience, the steps below occur independently for each tensor.
   (8)   RMS_t = sqrt(E[g_t^2 / max(u_t, eps^2)])
         // update parameters.
   (9)   eta_t = alpha_t / max(1, RMS_t)
   (10)  theta_{t+1} = theta_t - eta_t lambda_t theta_t - eta_t v_t / (sqrt(u_t) + eps)

The paper's iterate ``theta_t -> theta_{t+1}`` is ``theta_{t-1} -> theta_t`` here, as in :mod:`tests.reference.adam`.
Caveat: the PDF was not reachable from the search corpus while this was written; the lines are quoted from memory
and cross-checked against the authors' published code (Wortsman's ``StableAdamWUnfused`` gist, whose later versions
decay with the clipped rate ``eta_t`` as line (10) does, and an earlier one with ``alpha_t``: ``clip_decay=False``
below) and the optimi library's ``StableAdamW`` (line (10) as above).

``v_t`` and ``u_t`` are the *debiased* moments (line (4) makes ``v_t = m_t / (1 - beta_1^t)`` of Adam's raw EMA
``m_t``), so no separate bias correction appears. ``E`` is the mean over the tensor's entries; a "tensor" is one
pytree leaf.

Options that are not in Algorithm 2 (marked ``DEPARTURE:``; their neutral values give the paper):
``clipping_threshold`` (Adafactor's ``d`` and the gist's ``clip_thresh``: ``eta_t = alpha_t / max(1, RMS_t / d)``,
``d = 1`` is the paper), ``eps_root`` (``sqrt(u_t + eps_root)``, 0), ``mask`` (``lambda = 0`` where False; ``None``),
``clip_decay`` (``False``: the early gist's ``theta_t (1 - alpha_t lambda)``; ``True`` is the paper). A constant
``weight_decay`` is ``lambda_t``; ``learning_rate`` is ``alpha_t`` (a number or a schedule, evaluated at ``t - 1``).

Conventions (those of :mod:`tests.reference.adam`): ``t`` is 1-based; complex leaves keep a complex first moment and
a real second moment of ``|g|^2`` (``g_t^2`` reads ``|g_t|^2``); all maths in float64 / complex128.

API: ``state = opt.init(params)``; ``delta, state = opt.update(grads, params, state, t)`` or
``params, state = opt.step(grads, params, state, t)``. ``state`` has ``count``, ``mu`` (the paper's ``v_t``), ``nu``
(its ``u_t``) and ``rms`` (each leaf's ``RMS_t``, a float, for the tests to see how often the clip acted).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _like_zeros, _map, _rate, _real_zeros, apply

__all__ = ["StableAdamW"]


@dataclasses.dataclass(frozen=True)
class StableAdamW:
  """StableAdamW, Wortsman et al. 2023, Algorithm 2 (see the module docstring for the options)."""

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.99
  eps: float = 1e-6
  eps_root: float = 0.0
  weight_decay: float = 1e-4
  clipping_threshold: float = 1.0
  mask: Any = None
  clip_decay: bool = True

  def init(self, params: Any) -> dict:
    # (1): v_0, u_0 = 0   (v complex for complex leaves, u real)
    return {
        "count": 0,
        "mu": jax.tree_util.tree_map(_like_zeros, params),
        "nu": jax.tree_util.tree_map(_real_zeros, params),
        "rms": jax.tree_util.tree_map(lambda _: 0.0, params),
    }

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (2): for t = 1 to T
    alpha_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam, d = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                     float(self.weight_decay), float(self.clipping_threshold))
    # (4): beta1hat = beta_1 (1 - beta_1^(t-1)) / (1 - beta_1^t)    (0 at t = 1)
    b1hat = b1 * (1.0 - b1 ** (t - 1)) / (1.0 - b1**t)
    # (5): beta2hat = beta_2 (1 - beta_2^(t-1)) / (1 - beta_2^t)
    b2hat = b2 * (1.0 - b2 ** (t - 1)) / (1.0 - b2**t)

    def leaf(g, theta, v, u, decays):
      g, theta, v, u = _f64(g), _f64(theta), _f64(v), _f64(u)
      # (3): g_t -- given.
      # (6): v_t = beta1hat v_{t-1} + (1 - beta1hat) g_t
      v = b1hat * v + (1.0 - b1hat) * g
      # (7): u_t = beta2hat u_{t-1} + (1 - beta2hat) g_t^2      (|g_t|^2 for complex g_t)
      u = b2hat * u + (1.0 - b2hat) * _abs_sq(g)
      # (8): RMS_t = sqrt(E[g_t^2 / max(u_t, eps^2)]), E the mean over this tensor
      rms = float(np.sqrt(np.mean(_abs_sq(g) / np.maximum(u, eps * eps)))) if g.size else 0.0
      # (9): eta_t = alpha_t / max(1, RMS_t)          (DEPARTURE: RMS_t / d)
      eta_t = alpha_t / max(1.0, rms / d)
      # (10): theta_{t+1} = theta_t - eta_t lambda_t theta_t - eta_t v_t / (sqrt(u_t) + eps)
      #       (DEPARTURE: sqrt(u_t + eps_root); lambda = 0 where the mask is False; clip_decay=False: alpha_t lambda)
      lam_leaf = lam if bool(np.all(np.asarray(decays, bool))) else 0.0
      decay_rate = eta_t if self.clip_decay else alpha_t
      delta = -decay_rate * lam_leaf * theta - eta_t * v / (np.sqrt(u + eps_root) + eps)
      return delta, v, u, rms

    mask = (jax.tree_util.tree_map(lambda _: True, params) if self.mask is None
            else self.mask(params) if callable(self.mask) else self.mask)
    delta, mu, nu, rms = _map(leaf, 4, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu, "rms": rms}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
