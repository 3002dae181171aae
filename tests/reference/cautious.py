"""Float64 NumPy references for C-AdamW and C-Lion, transcribed from the cautious-optimizer paper and its code.

Liang, Chen, Liu & Liu 2024, "Cautious Optimizers: Improving Training with One Line of Code" (arXiv 2411.16085),
Algorithm 1 of the arXiv v4 ("Caution an Optimizer (Opt) in PyTorch"), numbered here:

.. code-block:: text

   # param p, update u from Opt, grad g
   (1)  m = (u * g > 0).to(g.dtype)
   (2)  p.add_(u * m / (m.mean() + eps), alpha=-lr)

``u`` is the base optimizer's update *direction* (the base optimizer itself would step ``p <- p - lr * u``), so
line (1) keeps the entries where the direction agrees in sign with the gradient, and line (2) steps along them,
rescaled by the inverse fraction kept. Written from this and the authors' code (``c_adamw.py``, ``c_lion.py`` in
github.com/kyleliang919/C-Optim), not from adamx's. The base optimizers are written out line by line here as well,
with the lines of their own papers (the same transcriptions as :mod:`tests.reference.adam` and
:mod:`tests.reference.classic`):

* C-AdamW: Loshchilov & Hutter 2019 Algorithm 2, lines 7-10 (Adam's moments and bias corrections) give
  ``u_t = mhat_t / (sqrt(vhat_t) + eps)``; the cautious lines (1)-(2) replace the Adam term of line 12,
  ``theta_t <- theta_{t-1} - eta_t (alpha mhat_t / (sqrt(vhat_t) + eps) + lambda theta_{t-1})`` (``alpha = 1``,
  one library learning rate ``eta_t``, as :class:`tests.reference.adam.AdamW`).
* C-Lion: Chen et al. 2023 Algorithm 2, line (5) ``c_t <- beta_1 m_{t-1} + (1 - beta_1) g_t`` gives
  ``u_t = sign(c_t)``; the cautious lines replace ``sign(c_t)`` in line (6)
  ``theta_t <- theta_{t-1} - eta_t (sign(c_t) + lambda theta_{t-1})``; line (7) updates the momentum.

The scale of line (2), ``1 / (mean(m) + eps)``, has three forms in the authors' work, the option ``normalize``:

* ``"mean"``: ``1 / max(mean(phi), 1e-3)``: the authors' current ``c_adamw.py`` (``mask.div_(mask.mean()
  .clamp_(min=1e-3))``, taken from timm). The same as line (2) whenever at least 0.1% of a leaf's entries agree.
* ``"count"``: ``n / (sum(phi) + 1)`` for a leaf of ``n`` entries: the authors' ``c_lion.py`` and first
  ``c_adamw.py`` (``mask * (mask.numel() / (mask.sum() + 1))``, kept there as a comment "original implementation").
* ``"none"``: 1, the mask alone.

The mean and the sum run over one tensor (one leaf of the pytree), as the authors' per-parameter loops do.

Departures (marked ``DEPARTURE:`` in the code):

* Complex leaves (no complex case in the paper): ``u * g > 0`` reads ``Re(conj(u) g) > 0``, the real inner product
  of ``u`` and ``g`` as pairs of reals; Lion's ``sign(c)`` is ``c / |c|`` (0 at 0) and ``g_t^2`` reads ``|g_t|^2``.
* Decay: the paper's line (2) has none; the authors' code decays every weight by a separate in-place step *before*
  the cautious step (``p.mul_(1 - lr * wd)`` in ``c_lion.py``, ``p.add_(p, alpha=-lr * wd)`` in ``c_adamw.py``),
  which is ``- eta_t lambda theta_{t-1}``, never masked. ``mask`` (a library option) selects the leaves that decay.
* Adam's ``eps``: ``c_adamw.py`` (Hugging Face's AdamW) divides by ``sqrt(v_t) + eps`` and multiplies the step by
  ``sqrt(1 - beta_2^t) / (1 - beta_1^t)``; this reference keeps Kingma & Ba's ``sqrt(vhat_t) + eps`` (adamx's,
  optax's and PyTorch's ``AdamW``), plus ``eps_root`` inside the root (0 is the paper).
* ``c_adamw.py`` tests ``exp_avg * grad > 0`` (``m_t g_t``), this reference ``u_t g_t``: the same sign, as ``u_t``
  is ``m_t`` times a positive number.

API: as :mod:`tests.reference.adam`: ``state = opt.init(params)``; ``delta, state = opt.update(grads, params,
state, t)`` or ``params, state = opt.step(grads, params, state, t)``; ``state`` has ``count``, ``mu`` and (C-AdamW)
``nu``. ``opt.sign_argument(grads, state, t)`` is, before step ``t``, the quantity whose sign the step depends on
(C-AdamW's ``u_t``, C-Lion's ``c_t``): the tests use it to check that no rounding-size error can flip a mask entry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _like_zeros, _map, _rate, _real_zeros, apply
from tests.reference.classic import _decay_mask, _sign

NORMALIZATIONS = ("mean", "count", "none")


def _check_normalize(normalize: str) -> None:
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def agreement(u: np.ndarray, g: np.ndarray) -> np.ndarray:
  """``u * g``, whose sign line (1) tests; DEPARTURE (complex leaves): ``Re(conj(u) g)``."""
  if np.iscomplexobj(u) or np.iscomplexobj(g):
    return (np.conj(u) * g).real
  return u * g


def cautious_step(u: np.ndarray, g: np.ndarray, normalize: str, min_mean: float = 1e-3) -> np.ndarray:
  """Lines (1)-(2) without the learning rate: ``u * phi * scale`` for one leaf (the direction actually taken)."""
  # (1): m = (u * g > 0).to(g.dtype)        (called phi here, as m is the first moment)
  phi = (agreement(u, g) > 0).astype(np.float64)
  # (2): u * m / (m.mean() + eps), in the form chosen by normalize (see the module docstring)
  if normalize == "mean":
    scale = 1.0 / max(float(np.mean(phi)), min_mean)
  elif normalize == "count":
    scale = phi.size / (float(np.sum(phi)) + 1.0)
  else:
    scale = 1.0
  return u * phi * scale


def _decay(decays: Any, lam: float, theta: np.ndarray) -> np.ndarray:
  """DEPARTURE (decay, the authors' code): ``lambda theta_{t-1}`` where the leaf decays (elementwise mask), else 0."""
  return np.where(np.asarray(decays, bool), lam * theta, np.zeros_like(theta))


@dataclasses.dataclass(frozen=True)
class CAdamW:
  """C-AdamW: AdamW (Loshchilov & Hutter 2019, Algorithm 2) with the cautious lines (1)-(2) on its Adam term.

  ``learning_rate`` is ``eta_t`` (a number, or a schedule evaluated at ``t - 1``), ``weight_decay`` is ``lambda``,
  ``mask`` selects the decaying leaves, ``normalize`` the form of line (2), ``min_mean`` its floor for ``"mean"``.
  """

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  weight_decay: float = 1e-4
  mask: Any = None
  normalize: str = "mean"
  min_mean: float = 1e-3

  def __post_init__(self):
    _check_normalize(self.normalize)

  def init(self, params: Any) -> dict:
    # Kingma & Ba (1)-(3): m_0 = 0, v_0 = 0 (complex first moment for complex params, real second moment), t = 0.
    return {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params),
            "nu": jax.tree_util.tree_map(_real_zeros, params)}

  def _moments(self, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int) -> tuple:
    b1, b2, eps, eps_root = float(self.b1), float(self.b2), float(self.eps), float(self.eps_root)
    g, m, v = _f64(g), _f64(m), _f64(v)
    # L&H line 7: m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
    m = b1 * m + (1.0 - b1) * g
    # L&H line 8: v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2            (|g_t|^2 for complex g_t)
    v = b2 * v + (1.0 - b2) * _abs_sq(g)
    # L&H lines 9-10: mhat_t <- m_t / (1 - beta_1^t), vhat_t <- v_t / (1 - beta_2^t)
    m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)
    # The Adam term of L&H line 12 (alpha = 1): u_t = mhat_t / (sqrt(vhat_t) + eps). DEPARTURE: + eps_root inside.
    u = m_hat / (np.sqrt(v_hat + eps_root) + eps)
    return u, m, v

  def sign_argument(self, grads: Any, state: dict, t: int) -> Any:
    """``u_t`` (before masking) for the coming step ``t``."""
    return _map(lambda g, m, v: (self._moments(g, m, v, t)[0],), 1, grads, state["mu"], state["nu"])[0]

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # L&H line 4: t <- t + 1
    # L&H line 11: eta_t <- SetScheduleMultiplier(t)   (a schedule is evaluated at t - 1)
    eta_t, lam = _rate(self.learning_rate, t), float(self.weight_decay)

    def leaf(g, theta, m, v, decays):
      # L&H line 6: g_t <- grad f_t(theta_{t-1})  -- given.
      u, m, v = self._moments(g, m, v, t)
      # Cautious (1)-(2), then L&H line 12 with the Adam term replaced:
      #   theta_t <- theta_{t-1} - eta_t (u_t * phi_t * scale_t + lambda theta_{t-1})
      delta = -eta_t * (cautious_step(u, _f64(g), self.normalize, self.min_mean) + _decay(decays, lam, _f64(theta)))
      return delta, m, v

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], _decay_mask(self.mask, params))
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


@dataclasses.dataclass(frozen=True)
class CLion:
  """C-Lion: Lion (Chen et al. 2023, Algorithm 2) with the cautious lines (1)-(2) on its sign step (options as
  :class:`CAdamW`; the default ``normalize="count"`` is the authors' ``c_lion.py``)."""

  learning_rate: Rate = 1e-4
  b1: float = 0.9
  b2: float = 0.99
  weight_decay: float = 1e-3
  mask: Any = None
  normalize: str = "count"
  min_mean: float = 1e-3

  def __post_init__(self):
    _check_normalize(self.normalize)

  def init(self, params: Any) -> dict:
    # Lion (2): m_0 <- 0
    return {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params)}

  def sign_argument(self, grads: Any, state: dict, t: int) -> Any:
    """``c_t`` for the coming step ``t``."""
    b1 = float(self.b1)
    return jax.tree_util.tree_map(lambda g, m: b1 * _f64(m) + (1.0 - b1) * _f64(g), grads, state["mu"])

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # Lion (3): while not converged
    eta_t, b1, b2, lam = _rate(self.learning_rate, t), float(self.b1), float(self.b2), float(self.weight_decay)

    def leaf(g, theta, m, decays):
      g, theta, m = _f64(g), _f64(theta), _f64(m)
      # Lion (4): g_t -- given. (5): c_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      c = b1 * m + (1.0 - b1) * g
      # Lion (6) with the cautious (1)-(2) on u_t = sign(c_t)  (c / |c| for complex c):
      #   theta_t <- theta_{t-1} - eta_t (sign(c_t) * phi_t * scale_t + lambda theta_{t-1})
      delta = -eta_t * (cautious_step(_sign(c), g, self.normalize, self.min_mean) + _decay(decays, lam, theta))
      # Lion (7): m_t <- beta_2 m_{t-1} + (1 - beta_2) g_t
      m = b2 * m + (1.0 - b2) * g
      return delta, m

    delta, mu = _map(leaf, 2, grads, params, state["mu"], _decay_mask(self.mask, params))
    return delta, {"count": t, "mu": mu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
