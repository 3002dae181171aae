"""Float64 NumPy references for the classic Adam family: Adamax, NAdam, RAdam, AdaBelief, Yogi, Lion and LAMB.

Like :mod:`tests.reference.adam` (whose helpers, conventions and API this module shares): every optimizer is written
from the paper it is named after, one pseudocode line per statement, with the line quoted in a comment, and not from
adamx's code. Options that the libraries (adamx, optax, PyTorch, Keras) add to a paper are marked ``DEPARTURE:``;
each class's docstring says which settings give the paper's algorithm. The defaults of the options are adamx's
defaults (as in :class:`tests.reference.adam.AMSGrad`), not necessarily the paper's.

The papers' pseudocode (quoted in ASCII; ``<-`` is assignment, ``^`` a power, products and sums run over ``i``):

* Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Algorithm 2 (AdaMax). Its statements are numbered
  here from the first line after the ``Require:`` lines, as Algorithm 1 is in :mod:`tests.reference.adam`:

  .. code-block:: text

     (1)  m_0 <- 0                      (2)  u_0 <- 0                  (3)  t <- 0
     (4)  while theta_t not converged do
     (5)    t <- t + 1                  (6)  g_t <- grad_theta f_t(theta_{t-1})
     (7)    m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
     (8)    u_t <- max(beta_2 u_{t-1}, |g_t|)
     (9)    theta_t <- theta_{t-1} - (alpha / (1 - beta_1^t)) m_t / u_t
     (10) end while                     (11) return theta_t

* Dozat 2016, "Incorporating Nesterov Momentum into Adam" (ICLR workshop), Algorithm 2 (Nadam), numbered likewise
  from the first line after ``Require: alpha_0..alpha_T; mu_0..mu_T; nu; eps``:

  .. code-block:: text

     (1)  m_0; n_0 <- 0
     (2)  while theta_t not converged do
     (3)    g_t <- grad_{theta_{t-1}} f_t(theta_{t-1})
     (4)    m_t <- mu_t m_{t-1} + (1 - mu_t) g_t
     (5)    n_t <- nu n_{t-1} + (1 - nu) g_t^2
     (6)    mhat <- mu_{t+1} m_t / (1 - prod_{i=1}^{t+1} mu_i) + (1 - mu_t) g_t / (1 - prod_{i=1}^{t} mu_i)
     (7)    nhat <- nu n_t / (1 - nu^t)
     (8)    theta_t <- theta_{t-1} - alpha_t mhat / (sqrt(nhat) + eps)
     (9)  end while                     (10) return theta_t

  with the momentum schedule ``mu_t = beta_1 (1 - 0.5 * 0.96^(t / 250))`` (``psi = 1/250 = 4e-3``, PyTorch's
  ``momentum_decay``). Caveats: the PDF was not reachable from the search corpus while this was written, so the lines
  are quoted from memory and cross-checked against the transcriptions in the PyTorch and Keras documentation; those
  write line (4) with the constant ``beta_1`` (as every library computes it), see ``paper_ema`` below. The factor
  ``nu`` in line (7) is a known typo of the paper (it is absent from Adam's line (10) and from every implementation,
  and would scale the step by ``1 / sqrt(nu)``); it is not reproduced.

* Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR), Algorithm 2 (RAdam), lines
  numbered in the paper: 1: ``m_0, v_0 <- 0, 0``, 2: ``rho_inf <- 2 / (1 - beta_2) - 1``, 3: ``for t = 1..T``,
  4: ``g_t <- grad_theta f_t(theta_{t-1})``, 5: ``v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2``,
  6: ``m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t``, 7: ``mhat_t <- m_t / (1 - beta_1^t)``,
  8: ``rho_t <- rho_inf - 2 t beta_2^t / (1 - beta_2^t)``, 9: ``if the variance is tractable, i.e., rho_t > 4``,
  10: ``l_t <- sqrt((1 - beta_2^t) / v_t)``,
  11: ``r_t <- sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``,
  12: ``theta_t <- theta_{t-1} - alpha_t r_t mhat_t l_t``, 13: ``else``,
  14: ``theta_t <- theta_{t-1} - alpha_t mhat_t``.

* Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients" (NeurIPS),
  Algorithm 2, numbered here from its first line: (1) ``initialize theta_0, m_0 <- 0, s_0 <- 0, t <- 0``,
  (2) ``while theta_t not converged``, (3) ``t <- t + 1``, (4) ``g_t <- grad_theta f_t(theta_{t-1})``,
  (5) ``m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t``, (6) ``s_t <- beta_2 s_{t-1} + (1 - beta_2)(g_t - m_t)^2 + eps``,
  (7) ``mhat_t <- m_t / (1 - beta_1^t), shat_t <- s_t / (1 - beta_2^t)``,
  (8) ``theta_t <- Pi_{F, sqrt(shat_t)}(theta_{t-1} - alpha mhat_t / (sqrt(shat_t) + eps))``;
  ``F = R^d``, so the projection ``Pi`` is the identity.

* Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization" (NeurIPS), Algorithm 2 (Yogi), numbered here
  from its first line after ``Input``: (1) ``set m_0 = 0, v_0 = 0``, (2) ``for t = 1 to T``, (3)-(4) draw a
  minibatch and compute ``g_t``, (5) ``m_t = beta_1 m_{t-1} + (1 - beta_1) g_t``,
  (6) ``v_t = v_{t-1} - (1 - beta_2) sign(v_{t-1} - g_t^2) g_t^2``,
  (7) ``x_{t+1} = x_t - eta_t m_t / (sqrt(v_t) + eps)``. (The iterate ``x_t -> x_{t+1}`` is ``theta_{t-1} ->
  theta_t`` here.) No bias correction: that, and the initial value of the accumulators, are the libraries'.

* Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms" (NeurIPS), Algorithm 2 (Lion; Program 1 is the
  same in code), numbered here from ``given``: (1) ``given beta_1, beta_2, lambda, eta, f``,
  (2) ``initialize theta_0, m_0 <- 0``, (3) ``while theta_t not converged``, (4) ``g_t <- grad_theta f(theta_{t-1})``,
  (5) ``c_t <- beta_1 m_{t-1} + (1 - beta_1) g_t``, (6) ``theta_t <- theta_{t-1} - eta_t (sign(c_t) + lambda
  theta_{t-1})``, (7) ``m_t <- beta_2 m_{t-1} + (1 - beta_2) g_t``.

* You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes" (ICLR), Algorithm 2
  (LAMB), numbered here from its first line after ``Input``: (1) ``set m_0 = 0, v_0 = 0``, (2) ``for t = 1 to T``,
  (3)-(4) draw a minibatch and compute ``g_t``, (5) ``m_t = beta_1 m_{t-1} + (1 - beta_1) g_t``,
  (6) ``v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2``, (7) ``m_t = m_t / (1 - beta_1^t)``,
  (8) ``v_t = v_t / (1 - beta_2^t)``, (9) ``r_t = m_t / (sqrt(v_t) + eps)``,
  (10) ``x_{t+1}^(i) = x_t^(i) - eta_t phi(||x_t^(i)||) / ||r_t^(i) + lambda x_t^(i)|| (r_t^(i) + lambda x_t^(i))``
  for each layer ``i`` (here: each leaf of the pytree). Lines (7)-(8) overwrite ``m_t, v_t`` in the paper's
  notation; every implementation (and this one) reads them as the bias-corrected copies ``mhat_t, vhat_t`` and keeps
  the raw EMAs as the state (else the EMA of line (5) would run on corrected values). ``phi`` is the identity (the
  paper's experiments and all the libraries).

Where the libraries depart from the papers (each is an option here, marked ``DEPARTURE:`` in the code):

* Adamax: ``eps``. optax and PyTorch take ``u_t = max(beta_2 u_{t-1}, |g_t| + eps)`` (``eps_mode="max"``); Keras
  divides by ``u_t + eps`` (``eps_mode="denominator"``). ``eps = 0`` is the paper in both modes.
* NAdam: PyTorch, Keras and adamx keep ``beta_1`` in line (4) (``paper_ema=False``); optax (and adamx's default,
  ``momentum_decay=None``) has no schedule at all, ``mu_t = beta_1``, where line (4) reads the same either way and
  the update is Adam with Dozat's Nesterov correction (:class:`tests.reference.adam.Adam` with ``nesterov=True``).
* RAdam: the libraries add ``eps``; PyTorch and the authors' code use ``rho_t > 5``, optax and adamx ``rho_t >= 5``
  (``threshold``, ``strict``); optax and adamx divide by ``sqrt(vhat_t + eps_root) + eps``, PyTorch by
  ``(sqrt(v_t) + eps) / sqrt(1 - beta_2^t)`` (``eps_mode="corrected"`` / ``"raw"``).
  ``threshold=4, strict=True, eps=0`` is the paper.
* AdaBelief: the paper adds the same ``eps`` inside ``s_t`` and to the denominator; the libraries have two
  (``eps_root`` inside ``s_t``, ``eps`` outside). ``eps_root == eps`` is the paper.
* Yogi: optax and adamx bias-correct ``m_t`` and ``v_t`` (``bias_correction=True``), fill *both* accumulators with
  ``initial_accumulator_value`` (1e-6) and add ``eps_root``. ``bias_correction=False, initial_accumulator_value=0,
  eps_root=0`` is the paper.
* Lion: none (``mask`` selects the leaves that decay; no mask is the paper).
* LAMB: the libraries set the trust ratio to 1 where ``||x^(i)||`` or ``||r^(i) + lambda x^(i)||`` is zero (the
  paper's ratio is then 0/0 or leaves zero params frozen forever); they add ``eps_root`` and a ``mask`` for lambda.
* Weight decay (not in the Adamax, NAdam, RAdam papers): coupled L2, ``g_t <- g_t + lambda theta_{t-1}`` before the
  moments (``torch.optim`` default), or decoupled, ``theta_t <- theta_t - eta_t lambda theta_{t-1}`` as AdamW
  (``decoupled_weight_decay=True``: optax ``adamaxw``/``nadamw``, ``torch.optim.NAdam/RAdam
  (decoupled_weight_decay=True)``), where one library learning rate multiplies both terms.

Conventions (those of :mod:`tests.reference.adam`): ``t`` is 1-based and a schedule is evaluated at ``t - 1``;
complex leaves keep a complex first moment and a real second moment of ``|g|^2``; Adamax's ``|g_t|`` is the modulus;
Lion's ``sign(c)`` is ``c / |c|`` (0 at 0); LAMB's norms are Euclidean over the complex entries,
``sqrt(sum |x|^2)``; all maths in float64 / complex128 from exact copies of the inputs.

API: as :mod:`tests.reference.adam`: ``state = opt.init(params)``; ``delta, state = opt.update(grads, params, state,
t)`` or ``params, state = opt.step(grads, params, state, t)``. ``state`` is a dict with ``count`` and the fields
named like adamx's state: ``mu`` (m_t), ``nu`` (Adamax's u_t, AdaBelief's s_t, else v_t), and for NAdam
``mu_product`` (``prod_{i<=t} mu_i``, a float); Lion has ``mu`` only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _first_moment_hat, _like_zeros, _map, _rate, _real_zeros
from tests.reference.adam import apply

__all__ = ["Adamax", "NAdam", "RAdam", "AdaBelief", "Yogi", "Lion", "LAMB", "nadam_momentum"]

ADAMAX_EPS_MODES = ("max", "denominator")
RADAM_EPS_MODES = ("corrected", "raw")


# ---------------------------------------------------------------------------------------------------------------
# Helpers (no algorithm here)
# ---------------------------------------------------------------------------------------------------------------


def _moments_init(params: Any, value: float = 0.0) -> dict:
  """``m_0`` (the param's type) and ``v_0`` (real), both ``value`` (0 in every paper)."""
  return {
      "count": 0,
      "mu": jax.tree_util.tree_map(lambda x: _like_zeros(x) + value, params),
      "nu": jax.tree_util.tree_map(lambda x: _real_zeros(x) + value, params),
  }


def _decay_mask(mask: Any, params: Any) -> Any:
  """The pytree of bools selecting the leaves that decay: all of them for ``mask=None`` (the papers)."""
  if mask is None:
    return jax.tree_util.tree_map(lambda _: True, params)
  return mask(params) if callable(mask) else mask


def _decayed(decays: Any, lam: float, theta: np.ndarray) -> np.ndarray:
  """``lambda theta`` where the leaf decays, else 0."""
  return lam * theta if bool(np.all(np.asarray(decays, bool))) else np.zeros_like(theta)


def _sign(c: np.ndarray) -> np.ndarray:
  """``sign(c)``; for complex ``c`` the unit phase ``c / |c|`` (0 at 0)."""
  if np.iscomplexobj(c):
    r = np.abs(c)
    return np.where(r > 0, c / np.where(r > 0, r, 1.0), 0.0)
  return np.sign(c)


def _norm(x: np.ndarray) -> float:
  """Euclidean norm of a whole leaf, over the moduli of complex entries."""
  return math.sqrt(float(np.sum(_abs_sq(x))))


def _check_mode(name: str, value: str, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def nadam_momentum(b1: float, t: int, momentum_decay: float | None) -> float:
  """Dozat's momentum schedule ``mu_t = beta_1 (1 - 0.5 * 0.96^(t psi))``; constant ``beta_1`` for ``None``."""
  if momentum_decay is None:
    return float(b1)
  return float(b1) * (1.0 - 0.5 * 0.96 ** (t * float(momentum_decay)))


# ---------------------------------------------------------------------------------------------------------------
# Adamax: Kingma & Ba 2015, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Adamax:
  """AdaMax, Kingma & Ba 2015, Algorithm 2 (``learning_rate`` is ``alpha``; a number or a schedule).

  Departures: ``eps`` with ``eps_mode`` (``"max"``: optax/PyTorch/adamx; ``"denominator"``: Keras; ``eps=0`` is the
  paper in both), ``weight_decay`` (coupled L2 as ``torch.optim.Adamax``, or with ``decoupled_weight_decay=True``
  AdamaxW as ``optax.adamaxw``, optionally masked).
  """

  learning_rate: Rate = 2e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_mode: str = "max"
  weight_decay: float = 0.0
  decoupled_weight_decay: bool = False
  mask: Any = None

  def __post_init__(self):
    _check_mode("eps_mode", self.eps_mode, ADAMAX_EPS_MODES)

  def init(self, params: Any) -> dict:
    # (1)-(3): m_0 <- 0, u_0 <- 0, t <- 0
    return _moments_init(params)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (5): t <- t + 1
    alpha = _rate(self.learning_rate, t)
    b1, b2, eps, lam = float(self.b1), float(self.b2), float(self.eps), float(self.weight_decay)
    coupled, decoupled = (lam, 0.0) if not self.decoupled_weight_decay else (0.0, lam)

    def leaf(g, theta, m, u, decays):
      g, theta, m, u = _f64(g), _f64(theta), _f64(m), _f64(u)
      # (6): g_t <- grad_theta f_t(theta_{t-1})  -- given.
      # DEPARTURE (coupled weight decay): g_t <- g_t + lambda theta_{t-1}.
      g = g + coupled * theta
      # (7): m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      if self.eps_mode == "max":
        # (8): u_t <- max(beta_2 u_{t-1}, |g_t|)
        # DEPARTURE (eps_mode="max", optax/PyTorch): max(beta_2 u_{t-1}, |g_t| + eps)
        u = np.maximum(b2 * u, np.abs(g) + eps)
        denom = u
      else:
        # (8) as in the paper; DEPARTURE (eps_mode="denominator", Keras): divide by u_t + eps in (9).
        u = np.maximum(b2 * u, np.abs(g))
        denom = u + eps
      # (9): theta_t <- theta_{t-1} - (alpha / (1 - beta_1^t)) m_t / u_t
      # DEPARTURE (decoupled weight decay): - alpha lambda theta_{t-1} as well (optax.adamaxw).
      delta = -alpha * (m / (1.0 - b1**t) / denom + _decayed(decays, decoupled, theta))
      return delta, m, u

    mask = _decay_mask(self.mask, params)
    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# NAdam: Dozat 2016, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NAdam:
  """Nadam, Dozat 2016, Algorithm 2 (``learning_rate`` is ``alpha_t``, ``b2`` the paper's ``nu``).

  ``momentum_decay=psi`` is the schedule ``mu_t = beta_1 (1 - 0.5 * 0.96^(t psi))`` (Dozat: ``psi = 1/250``, PyTorch's
  default ``4e-3``); ``None`` is the constant ``mu_t = beta_1`` (optax, adamx's default). ``paper_ema=True`` uses
  ``mu_t`` in the first-moment EMA as the paper's line (4); the default ``False`` uses ``beta_1`` as PyTorch, Keras
  and adamx (identical when ``momentum_decay=None``). Departures as :class:`Adamax`: ``eps_root``, coupled or
  decoupled (``decoupled_weight_decay=True``: optax ``nadamw``, ``torch.optim.NAdam(decoupled_weight_decay=True)``)
  weight decay with an optional ``mask``.
  """

  learning_rate: Rate = 2e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  momentum_decay: float | None = None
  paper_ema: bool = False
  weight_decay: float = 0.0
  decoupled_weight_decay: bool = False
  mask: Any = None

  def init(self, params: Any) -> dict:
    # (1): m_0; n_0 <- 0.  The empty product prod_{i=1}^{0} mu_i = 1.
    return {**_moments_init(params), "mu_product": 1.0}

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)
    alpha_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))
    coupled, decoupled = (lam, 0.0) if not self.decoupled_weight_decay else (0.0, lam)
    mu_t = nadam_momentum(b1, t, self.momentum_decay)
    mu_next = nadam_momentum(b1, t + 1, self.momentum_decay)
    prod_t = float(state["mu_product"]) * mu_t  # prod_{i=1}^{t} mu_i
    prod_next = prod_t * mu_next  # prod_{i=1}^{t+1} mu_i
    # DEPARTURE (paper_ema=False): the libraries' EMA uses the constant beta_1 instead of the paper's mu_t.
    ema = mu_t if self.paper_ema else b1

    def leaf(g, theta, m, n, decays):
      g, theta, m, n = _f64(g), _f64(theta), _f64(m), _f64(n)
      # (3): g_t <- grad f_t(theta_{t-1})  -- given.  DEPARTURE (coupled weight decay): + lambda theta_{t-1}.
      g = g + coupled * theta
      # (4): m_t <- mu_t m_{t-1} + (1 - mu_t) g_t
      m = ema * m + (1.0 - ema) * g
      # (5): n_t <- nu n_{t-1} + (1 - nu) g_t^2          (|g_t|^2 for complex g_t)
      n = b2 * n + (1.0 - b2) * _abs_sq(g)
      # (6): mhat <- mu_{t+1} m_t / (1 - prod_{i=1}^{t+1} mu_i) + (1 - mu_t) g_t / (1 - prod_{i=1}^{t} mu_i)
      m_hat = mu_next * m / (1.0 - prod_next) + (1.0 - mu_t) * g / (1.0 - prod_t)
      # (7): nhat <- n_t / (1 - nu^t)      (without the paper's typo factor nu, see the module docstring)
      n_hat = n / (1.0 - b2**t)
      # (8): theta_t <- theta_{t-1} - alpha_t mhat / (sqrt(nhat) + eps)
      # DEPARTURE: sqrt(nhat + eps_root); decoupled weight decay - alpha_t lambda theta_{t-1}.
      delta = -alpha_t * (m_hat / (np.sqrt(n_hat + eps_root) + eps) + _decayed(decays, decoupled, theta))
      return delta, m, n

    mask = _decay_mask(self.mask, params)
    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu, "mu_product": prod_t}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# RAdam: Liu et al. 2020, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


def radam_rho(b2: float, t: int) -> tuple[float, float]:
  """``(rho_inf, rho_t)`` of lines 2 and 8, in float64 as written. The subtraction cancels while ``t (1 - b2)`` is
  small, losing about ``log10(rho_inf / rho_t)`` digits: at most 4 of float64's 16 for ``b2 <= 0.9999`` (checked
  against a 50-digit evaluation: 3e-16 relative on ``r_t`` for ``b2 = 0.9537``)."""
  rho_inf = 2.0 / (1.0 - b2) - 1.0
  return rho_inf, rho_inf - 2.0 * t * b2**t / (1.0 - b2**t)


@dataclasses.dataclass(frozen=True)
class RAdam:
  """RAdam, Liu et al. 2020, Algorithm 2 (``learning_rate`` is ``alpha_t``).

  The paper is ``threshold=4, strict=True, eps=0`` (``rho_t > 4``); the defaults are optax's and adamx's
  (``rho_t >= 5``, ``eps_mode="corrected"``); PyTorch is ``threshold=5, strict=True, eps_mode="raw"``.
  ``nesterov=True`` uses Dozat's form of ``mhat_t`` in both branches (optax, adamx). Weight decay: coupled L2, or
  decoupled (``decoupled_weight_decay=True``, ``torch.optim.RAdam(decoupled_weight_decay=True)``).
  """

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  threshold: float = 5.0
  strict: bool = False
  eps_mode: str = "corrected"
  nesterov: bool = False
  weight_decay: float = 0.0
  decoupled_weight_decay: bool = False

  def __post_init__(self):
    _check_mode("eps_mode", self.eps_mode, RADAM_EPS_MODES)

  def init(self, params: Any) -> dict:
    # line 1: m_0, v_0 <- 0, 0
    return _moments_init(params)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # line 3: for t = 1..T
    alpha_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))
    coupled, decoupled = (lam, 0.0) if not self.decoupled_weight_decay else (0.0, lam)
    # line 2: rho_inf <- 2 / (1 - beta_2) - 1;  line 8: rho_t <- rho_inf - 2 t beta_2^t / (1 - beta_2^t)
    rho_inf, rho_t = radam_rho(b2, t)
    # line 9: if the variance is tractable, i.e., rho_t > 4
    # DEPARTURE: the threshold (5 in the authors' code, optax, PyTorch), and >= (optax, adamx) unless strict.
    tractable = rho_t > self.threshold if self.strict else rho_t >= self.threshold
    if tractable:
      # line 11: r_t <- sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
      r_t = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))

    def leaf(g, theta, m, v):
      g, theta, m, v = _f64(g), _f64(theta), _f64(m), _f64(v)
      # line 4: g_t <- grad f_t(theta_{t-1})  -- given.  DEPARTURE (coupled weight decay): + lambda theta_{t-1}.
      g = g + coupled * theta
      # line 5: v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2      (|g_t|^2 for complex g_t)
      v = b2 * v + (1.0 - b2) * _abs_sq(g)
      # line 6: m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # line 7: mhat_t <- m_t / (1 - beta_1^t)      (DEPARTURE nesterov=True: Dozat's form, see adam.py)
      m_hat = _first_moment_hat(g, m, b1, t, self.nesterov)
      if tractable:
        if self.eps_mode == "corrected":
          # line 10: l_t <- sqrt((1 - beta_2^t) / v_t)
          # DEPARTURE (optax, adamx): l_t <- 1 / (sqrt(v_t / (1 - beta_2^t) + eps_root) + eps)
          l_t = 1.0 / (np.sqrt(v / (1.0 - b2**t) + eps_root) + eps)
        else:
          # DEPARTURE (PyTorch): l_t <- sqrt(1 - beta_2^t) / (sqrt(v_t [+ eps_root]) + eps)
          l_t = math.sqrt(1.0 - b2**t) / (np.sqrt(v + eps_root) + eps)
        # line 12: theta_t <- theta_{t-1} - alpha_t r_t mhat_t l_t
        step = r_t * m_hat * l_t
      else:
        # line 14: theta_t <- theta_{t-1} - alpha_t mhat_t
        step = m_hat
      # DEPARTURE (decoupled weight decay): - alpha_t lambda theta_{t-1} in both branches.
      delta = -alpha_t * (step + decoupled * theta)
      return delta, m, v

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"])
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# AdaBelief: Zhuang et al. 2020, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdaBelief:
  """AdaBelief, Zhuang et al. 2020, Algorithm 2 (``learning_rate`` is ``alpha``). The paper's single ``eps`` is split
  in two as in the libraries: ``eps_root`` is added to ``s_t`` (and stored in it), ``eps`` to the denominator;
  ``eps_root == eps`` is the paper. ``nesterov`` (optax, adamx) uses Dozat's form of ``mhat_t``."""

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-16
  eps_root: float = 1e-16
  nesterov: bool = False

  def init(self, params: Any) -> dict:
    # (1): m_0 <- 0, s_0 <- 0, t <- 0
    return _moments_init(params)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (3): t <- t + 1
    alpha = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root = float(self.b1), float(self.b2), float(self.eps), float(self.eps_root)

    def leaf(g, m, s):
      g, m, s = _f64(g), _f64(m), _f64(s)
      # (4): g_t <- grad f_t(theta_{t-1})  -- given.
      # (5): m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # (6): s_t <- beta_2 s_{t-1} + (1 - beta_2)(g_t - m_t)^2 + eps    (|g_t - m_t|^2; DEPARTURE: eps_root)
      s = b2 * s + (1.0 - b2) * _abs_sq(g - m) + eps_root
      # (7): mhat_t <- m_t / (1 - beta_1^t) (or Dozat's form), shat_t <- s_t / (1 - beta_2^t)
      m_hat = _first_moment_hat(g, m, b1, t, self.nesterov)
      s_hat = s / (1.0 - b2**t)
      # (8): theta_t <- Pi_{F, sqrt(shat_t)}(theta_{t-1} - alpha mhat_t / (sqrt(shat_t) + eps)); Pi = identity.
      delta = -alpha * m_hat / (np.sqrt(s_hat) + eps)
      return delta, m, s

    delta, mu, nu = _map(leaf, 3, grads, state["mu"], state["nu"])
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# Yogi: Zaheer et al. 2018, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Yogi:
  """Yogi, Zaheer et al. 2018, Algorithm 2 (``learning_rate`` is ``eta_t``).

  The paper is ``bias_correction=False, initial_accumulator_value=0, eps_root=0``; the defaults are optax's and
  adamx's (bias-corrected ``m_t`` and ``v_t``, both accumulators filled with 1e-6).
  """

  learning_rate: Rate = 1e-2
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-3
  eps_root: float = 0.0
  initial_accumulator_value: float = 1e-6
  bias_correction: bool = True

  def init(self, params: Any) -> dict:
    # (1): set m_0 = 0, v_0 = 0.  DEPARTURE (optax, adamx): both filled with initial_accumulator_value.
    return _moments_init(params, float(self.initial_accumulator_value))

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (2): for t = 1 to T
    eta_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root = float(self.b1), float(self.b2), float(self.eps), float(self.eps_root)

    def leaf(g, m, v):
      g, m, v = _f64(g), _f64(m), _f64(v)
      # (3)-(4): g_t  -- given.
      # (5): m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # (6): v_t = v_{t-1} - (1 - beta_2) sign(v_{t-1} - g_t^2) g_t^2      (|g_t|^2 for complex g_t)
      g2 = _abs_sq(g)
      v = v - (1.0 - b2) * np.sign(v - g2) * g2
      if self.bias_correction:
        # DEPARTURE (optax, adamx): Adam's bias corrections of m_t and v_t.
        m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)
      else:
        m_hat, v_hat = m, v
      # (7): x_{t+1} = x_t - eta_t m_t / (sqrt(v_t) + eps)      (DEPARTURE: sqrt(v_t + eps_root))
      delta = -eta_t * m_hat / (np.sqrt(v_hat + eps_root) + eps)
      return delta, m, v

    delta, mu, nu = _map(leaf, 3, grads, state["mu"], state["nu"])
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# Lion: Chen et al. 2023, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lion:
  """Lion, Chen et al. 2023, Algorithm 2 (``learning_rate`` is ``eta_t``, ``weight_decay`` is ``lambda``;
  ``mask`` selects the leaves that decay, a library option; ``None`` is the paper)."""

  learning_rate: Rate = 1e-4
  b1: float = 0.9
  b2: float = 0.99
  weight_decay: float = 1e-3
  mask: Any = None

  def init(self, params: Any) -> dict:
    # (2): m_0 <- 0
    return {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params)}

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (3): while not converged
    eta_t = _rate(self.learning_rate, t)
    b1, b2, lam = float(self.b1), float(self.b2), float(self.weight_decay)

    def leaf(g, theta, m, decays):
      g, theta, m = _f64(g), _f64(theta), _f64(m)
      # (4): g_t  -- given.
      # (5): c_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      c = b1 * m + (1.0 - b1) * g
      # (6): theta_t <- theta_{t-1} - eta_t (sign(c_t) + lambda theta_{t-1})   (sign(c) = c / |c| for complex c)
      delta = -eta_t * (_sign(c) + _decayed(decays, lam, theta))
      # (7): m_t <- beta_2 m_{t-1} + (1 - beta_2) g_t
      m = b2 * m + (1.0 - b2) * g
      return delta, m

    mask = _decay_mask(self.mask, params)
    delta, mu = _map(leaf, 2, grads, params, state["mu"], mask)
    return delta, {"count": t, "mu": mu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# LAMB: You et al. 2020, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LAMB:
  """LAMB, You et al. 2020, Algorithm 2, with ``phi`` the identity and one "layer" per pytree leaf
  (``learning_rate`` is ``eta_t``, ``weight_decay`` is ``lambda``). Departures: the trust ratio is 1 where either
  norm is 0, ``eps_root``, ``mask`` (lambda = 0 on the leaves where it is False)."""

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-6
  eps_root: float = 0.0
  weight_decay: float = 0.0
  mask: Any = None

  def init(self, params: Any) -> dict:
    # (1): set m_0 = 0, v_0 = 0
    return _moments_init(params)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # (2): for t = 1 to T
    eta_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))

    def leaf(g, x, m, v, decays):
      g, x, m, v = _f64(g), _f64(x), _f64(m), _f64(v)
      # (3)-(4): g_t  -- given.
      # (5): m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # (6): v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2      (|g_t|^2 for complex g_t)
      v = b2 * v + (1.0 - b2) * _abs_sq(g)
      # (7): m_t = m_t / (1 - beta_1^t)   and (8): v_t = v_t / (1 - beta_2^t)   (as copies, see the docstring)
      m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)
      # (9): r_t = m_t / (sqrt(v_t) + eps)      (DEPARTURE: sqrt(v_t + eps_root))
      r = m_hat / (np.sqrt(v_hat + eps_root) + eps)
      # (10): x_{t+1} = x_t - eta_t phi(||x_t||) / ||r_t + lambda x_t|| (r_t + lambda x_t),   phi(z) = z
      u = r + _decayed(decays, lam, x)
      x_norm, u_norm = _norm(x), _norm(u)
      # DEPARTURE: the ratio is 1 where either norm is zero (optax, adamx).
      ratio = x_norm / u_norm if x_norm > 0.0 and u_norm > 0.0 else 1.0
      delta = -eta_t * ratio * u
      return delta, m, v

    mask = _decay_mask(self.mask, params)
    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
