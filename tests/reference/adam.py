"""Float64 NumPy references for Adam, AdamW and AMSGrad, transcribed from the papers' pseudocode.

Every optimizer here is written from the paper it is named after, one pseudocode line per statement, with the
line quoted in a comment. It was written from the pseudocode, not from adamx's code, so that the tests comparing
the two are meaningful. Options that the libraries (adamx, optax, PyTorch) add to a paper are marked
``DEPARTURE:`` in the code; their neutral values give the paper's algorithm exactly: ``eps_root=0``,
``weight_decay=0`` (Adam, AMSGrad), ``nesterov=False``, ``mask=None`` (AdamW), and for AMSGrad
``bias_correction=False, eps=0`` (its defaults are the libraries' bias-corrected form).

Line numbers:

* Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1. The paper's pseudocode is not
  numbered; here its statements are numbered from the first line after the four ``Require:`` lines:

  .. code-block:: text

     (1)  m_0 <- 0                      (2)  v_0 <- 0                  (3)  t <- 0
     (4)  while theta_t not converged do
     (5)    t <- t + 1                  (6)  g_t <- grad_theta f_t(theta_{t-1})
     (7)    m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
     (8)    v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2
     (9)    mhat_t <- m_t / (1 - beta_1^t)
     (10)   vhat_t <- v_t / (1 - beta_2^t)
     (11)   theta_t <- theta_{t-1} - alpha mhat_t / (sqrt(vhat_t) + eps)
     (12) end while                     (13) return theta_t

* Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2 (its lines are numbered):
  4: ``t <- t + 1``, 6: ``g_t <- grad f_t(theta_{t-1}) [+ lambda theta_{t-1}]`` (the bracket is the L2 variant),
  7-10: Adam's moments and bias corrections, 11: ``eta_t <- SetScheduleMultiplier(t)``,
  12: ``theta_t <- theta_{t-1} - eta_t (alpha mhat_t / (sqrt(vhat_t) + eps) [+ lambda theta_{t-1}])``.

* Reddi, Kale & Kumar 2018, "On the Convergence of Adam and Beyond", Algorithm 2 (AMSGrad), its lines numbered
  from the ``Input`` line as 1: 2: ``m_0 = 0, v_0 = 0, vhat_0 = 0``, 3: ``for t = 1 to T``, 4: ``g_t = grad f_t(x_t)``,
  5: ``m_t = beta_1t m_{t-1} + (1 - beta_1t) g_t``, 6: ``v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2``,
  7: ``vhat_t = max(vhat_{t-1}, v_t)``, 8: ``x_{t+1} = Pi_{F, sqrt(Vhat_t)}(x_t - alpha_t m_t / sqrt(vhat_t))``.
  The paper indexes the iterate it updates as ``x_t -> x_{t+1}``; here it is ``theta_{t-1} -> theta_t`` like the
  other two papers. ``F = R^d``, so the projection ``Pi`` is the identity.

Conventions shared by all three (and by adamx):

* ``t`` is the 1-based step number: the ``t``-th call of ``step`` uses ``t`` in the bias corrections, and a
  learning-rate *schedule* ``lr(count)`` is evaluated at ``count = t - 1`` (optax's and PyTorch's convention:
  the first step uses ``lr(0)``).
* Complex parameters (not in any of the papers): the first moment is complex, the second moment is the EMA of the
  real ``|g|^2 = Re(g)^2 + Im(g)^2`` (one second moment per complex entry), so ``g_t^2`` in the papers reads
  ``|g_t|^2`` and ``sqrt`` is applied to a real, non-negative array.
* Everything is computed in float64 / complex128 from Python-float hyperparameters; inputs of any float dtype
  (bfloat16 included) are converted exactly first.

API: ``opt = Adam(learning_rate=..., ...)``; ``state = opt.init(params)``; then for ``t = 1, 2, ...``
``params, state = opt.step(grads, params, state, t)`` (or ``delta, state = opt.update(grads, params, state, t)``
for the additive update ``theta_t - theta_{t-1}`` itself). ``params``/``grads`` are pytrees (dicts, lists,
tuples) of NumPy arrays; ``state`` is a dict with ``count`` (an int, ``t`` after step ``t``) and the pytrees
``mu`` (m_t), ``nu`` (v_t) and, for AMSGrad, ``nu_max`` (the running maximum), named like adamx's state fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Union

import jax
import numpy as np

Rate = Union[float, Callable[[int], float]]


# ---------------------------------------------------------------------------------------------------------------
# Helpers (no algorithm here)
# ---------------------------------------------------------------------------------------------------------------


def _f64(x: Any) -> np.ndarray:
  """An exact float64 / complex128 copy (bfloat16, float16, float32 and complex64 all convert exactly)."""
  x = np.asarray(x)
  return np.array(x, np.complex128 if np.iscomplexobj(x) else np.float64)


def _abs_sq(g: np.ndarray) -> np.ndarray:
  """``|g|^2`` as a real array: the papers' ``g_t^2`` for real ``g``; for complex ``g`` see the module docstring."""
  if np.iscomplexobj(g):
    return g.real * g.real + g.imag * g.imag
  return g * g


def _rate(rate: Rate, t: int) -> float:
  """The value of a constant or scheduled rate at step ``t``: ``rate(t - 1)`` for a schedule (first step: rate(0))."""
  return float(rate(t - 1)) if callable(rate) else float(rate)


def _real_zeros(x: Any) -> np.ndarray:
  return np.zeros(np.shape(x), np.float64)


def _like_zeros(x: Any) -> np.ndarray:
  return np.zeros(np.shape(x), np.complex128 if np.iscomplexobj(x) else np.float64)


def _check_t(state: dict, t: int) -> None:
  if not (isinstance(t, int) and t >= 1):
    raise ValueError(f"t must be a positive int (the 1-based step number), got {t!r}")
  if state["count"] != t - 1:
    raise ValueError(f"state['count'] is {state['count']} but step t={t} expects {t - 1}: steps must be consecutive")


def _map(fn: Callable[..., tuple], n_out: int, tree: Any, *rest: Any) -> tuple[Any, ...]:
  """Apply ``fn`` leaf by leaf to trees of the same structure; return ``n_out`` trees."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  others = [treedef.flatten_up_to(r) for r in rest]
  outs = [fn(*args) for args in zip(leaves, *others)]
  return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(n_out))


def apply(params: Any, delta: Any) -> Any:
  """``theta_{t-1} + delta`` leaf by leaf, in float64 / complex128."""
  return jax.tree_util.tree_map(lambda p, d: _f64(p) + d, params, delta)


def _init(params: Any, *, with_max: bool) -> dict:
  # Kingma & Ba (1)-(3), L&H line 2, Reddi line 2: m_0 = 0, v_0 = 0 (vhat_0 = 0), t = 0.
  # The first moment has the parameter's (complex) type, the second moment is real (see the module docstring).
  state = {
      "count": 0,
      "mu": jax.tree_util.tree_map(_like_zeros, params),
      "nu": jax.tree_util.tree_map(_real_zeros, params),
  }
  if with_max:
    state["nu_max"] = jax.tree_util.tree_map(_real_zeros, params)
  return state


def _first_moment_hat(g: np.ndarray, m: np.ndarray, b1: float, t: int, nesterov: bool) -> np.ndarray:
  if not nesterov:
    # Kingma & Ba (9): mhat_t <- m_t / (1 - beta_1^t)
    return m / (1.0 - b1**t)
  # DEPARTURE (nesterov=True): Dozat 2016, "Incorporating Nesterov Momentum into Adam", Algorithm 2 (NAdam) with a
  # constant momentum schedule mu_t = beta_1, in the simplified form of optax/adamx: the momentum term is corrected
  # with the *next* step's factor and the gradient term with the current one,
  #   mhat_t = beta_1 m_t / (1 - beta_1^(t+1)) + (1 - beta_1) g_t / (1 - beta_1^t).
  return b1 * m / (1.0 - b1 ** (t + 1)) + (1.0 - b1) * g / (1.0 - b1**t)


# ---------------------------------------------------------------------------------------------------------------
# Adam: Kingma & Ba 2015, Algorithm 1
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Adam:
  """Adam, Kingma & Ba 2015, Algorithm 1, with adamx's options as labelled departures.

  ``learning_rate`` is the paper's ``alpha`` (a number, or a schedule ``count -> alpha`` evaluated at ``t - 1``).
  Departures (defaults reproduce the paper): ``eps_root`` (inside the square root), ``weight_decay`` (coupled L2,
  as ``torch.optim.Adam``), ``nesterov`` (Dozat 2016).
  """

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  weight_decay: float = 0.0
  nesterov: bool = False

  def init(self, params: Any) -> dict:
    return _init(params, with_max=False)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    """One step: ``(delta, new_state)`` with ``theta_t = theta_{t-1} + delta``."""
    _check_t(state, t)  # Kingma & Ba (5): t <- t + 1 (the caller passes the new t)
    alpha = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))

    def leaf(g, theta, m, v):
      g, theta, m, v = _f64(g), _f64(theta), _f64(m), _f64(v)
      # Kingma & Ba (6): g_t <- grad_theta f_t(theta_{t-1})  -- given.
      if lam != 0.0:
        # DEPARTURE (weight_decay > 0): coupled L2 regularization, as torch.optim.Adam(weight_decay=lambda) and
        # Loshchilov & Hutter 2019, Algorithm 2, line 6 (the "Adam with L2" variant):
        #   g_t <- grad f_t(theta_{t-1}) + lambda theta_{t-1}
        g = g + lam * theta
      # Kingma & Ba (7): m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # Kingma & Ba (8): v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2      (|g_t|^2 for complex g_t)
      v = b2 * v + (1.0 - b2) * _abs_sq(g)
      # Kingma & Ba (9): mhat_t <- m_t / (1 - beta_1^t)                  (or Dozat's Nesterov form)
      m_hat = _first_moment_hat(g, m, b1, t, self.nesterov)
      # Kingma & Ba (10): vhat_t <- v_t / (1 - beta_2^t)
      v_hat = v / (1.0 - b2**t)
      # Kingma & Ba (11): theta_t <- theta_{t-1} - alpha mhat_t / (sqrt(vhat_t) + eps)
      # DEPARTURE (eps_root > 0): sqrt(vhat_t + eps_root) + eps, as optax/adamx; eps_root = 0 is the paper.
      delta = -alpha * m_hat / (np.sqrt(v_hat + eps_root) + eps)
      return delta, m, v

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"])
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    """One step: ``(theta_t, new_state)``."""
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# AdamW: Loshchilov & Hutter 2019, Algorithm 2 (decoupled weight decay)
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdamW:
  """AdamW, Loshchilov & Hutter 2019, Algorithm 2 (the decoupled, "green" variant), with the paper's ``alpha``
  and schedule multiplier ``eta_t`` kept separate:

      theta_t = theta_{t-1} - eta_t (alpha mhat_t / (sqrt(vhat_t) + eps) + lambda theta_{t-1}).

  optax, PyTorch and adamx have a single ``learning_rate`` that multiplies *both* terms: they are this algorithm
  with ``alpha = 1`` and ``eta_t = learning_rate(t - 1)``. (Conversely the paper's ``(alpha, eta_t, lambda)`` is
  adamx's ``adamw(learning_rate=alpha * eta_t, weight_decay=lambda / alpha)``.) Hence ``alpha`` defaults to 1 and
  ``eta`` takes the library learning rate (a number or a schedule evaluated at ``t - 1``).

  ``weight_decay`` is ``lambda``. ``mask`` (``None``, a pytree of bools shaped like the params, or a callable
  ``params -> pytree of bools``) selects the parameters that decay (not in the paper: the libraries' option; a
  mask of all ``True`` is the paper). Departures as in :class:`Adam`: ``eps_root``, ``nesterov``.
  """

  eta: Rate = 1e-3
  alpha: float = 1.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  weight_decay: float = 1e-4
  mask: Any = None
  nesterov: bool = False

  def init(self, params: Any) -> dict:
    return _init(params, with_max=False)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # line 4: t <- t + 1
    b1, b2, eps, eps_root, lam, alpha = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                         float(self.weight_decay), float(self.alpha))
    # line 11: eta_t <- SetScheduleMultiplier(t)   (a schedule is evaluated at t - 1, see the module docstring)
    eta_t = _rate(self.eta, t)
    if self.mask is None:
      mask = jax.tree_util.tree_map(lambda _: True, params)
    else:
      mask = self.mask(params) if callable(self.mask) else self.mask

    def leaf(g, theta, m, v, decays):
      g, theta, m, v = _f64(g), _f64(theta), _f64(m), _f64(v)
      # line 6: g_t <- grad f_t(theta_{t-1})   (no "+ lambda theta_{t-1}": that is the L2 variant, not AdamW)
      # line 7: m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # line 8: v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2          (|g_t|^2 for complex g_t)
      v = b2 * v + (1.0 - b2) * _abs_sq(g)
      # line 9: mhat_t <- m_t / (1 - beta_1^t)                      (or Dozat's Nesterov form)
      m_hat = _first_moment_hat(g, m, b1, t, self.nesterov)
      # line 10: vhat_t <- v_t / (1 - beta_2^t)
      v_hat = v / (1.0 - b2**t)
      # line 12: theta_t <- theta_{t-1} - eta_t (alpha mhat_t / (sqrt(vhat_t) + eps) + lambda theta_{t-1})
      # DEPARTURE (eps_root > 0): sqrt(vhat_t + eps_root), as in Adam. DEPARTURE (mask): lambda = 0 where False.
      decay = np.where(np.asarray(decays, bool), lam * theta, np.zeros_like(theta))
      delta = -eta_t * (alpha * m_hat / (np.sqrt(v_hat + eps_root) + eps) + decay)
      return delta, m, v

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# AMSGrad: Reddi, Kale & Kumar 2018, Algorithm 2
# ---------------------------------------------------------------------------------------------------------------

MAX_OVER = ("corrected", "raw")


@dataclasses.dataclass(frozen=True)
class AMSGrad:
  """AMSGrad, Reddi et al. 2018, Algorithm 2, with constant ``beta_1t = beta_1`` and ``alpha_t = learning_rate``
  (a number, or a schedule evaluated at ``t - 1``).

  ``bias_correction=False`` is the paper's algorithm (no bias correction; the maximum is over the raw ``v_t``;
  ``max_over`` is then irrelevant, both conventions reduce to it). ``bias_correction=True`` (the default, as both
  libraries) adds Adam's bias corrections in one of two conventions:

  * ``max_over="corrected"`` (optax, adamx's default): ``nu_max_t = max(nu_max_{t-1}, v_t / (1 - beta_2^t))`` and
    ``theta_t = theta_{t-1} - alpha mhat_t / (sqrt(nu_max_t + eps_root) + eps)``;
  * ``max_over="raw"`` (``torch.optim.Adam(amsgrad=True)``): ``nu_max_t = max(nu_max_{t-1}, v_t)`` (the paper's
    line 7) and ``theta_t = theta_{t-1} - alpha mhat_t / (sqrt(nu_max_t / (1 - beta_2^t) + eps_root) + eps)``.

  Departures as in :class:`Adam`: ``eps`` (the paper divides by ``sqrt(vhat_t)`` alone; ``eps=0`` is the paper),
  ``eps_root``, ``weight_decay`` (coupled L2).
  """

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  weight_decay: float = 0.0
  max_over: str = "corrected"
  bias_correction: bool = True

  def __post_init__(self):
    if self.max_over not in MAX_OVER:
      raise ValueError(f"max_over must be one of {MAX_OVER}, got {self.max_over!r}")

  def init(self, params: Any) -> dict:
    # line 2: m_0 = 0, v_0 = 0 and vhat_0 = 0   (vhat is stored as nu_max)
    return _init(params, with_max=True)

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # line 3: for t = 1 to T
    alpha_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))

    def leaf(g, theta, m, v, v_max):
      g, theta, m, v, v_max = _f64(g), _f64(theta), _f64(m), _f64(v), _f64(v_max)
      # line 4: g_t = grad f_t(x_t)  -- given.
      if lam != 0.0:
        # DEPARTURE (weight_decay > 0): coupled L2, g_t <- g_t + lambda theta_{t-1} (torch.optim.Adam).
        g = g + lam * theta
      # line 5: m_t = beta_1t m_{t-1} + (1 - beta_1t) g_t      with beta_1t = beta_1 constant
      m = b1 * m + (1.0 - b1) * g
      # line 6: v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2      (|g_t|^2 for complex g_t)
      v = b2 * v + (1.0 - b2) * _abs_sq(g)
      if not self.bias_correction:
        # line 7: vhat_t = max(vhat_{t-1}, v_t)
        v_max = np.maximum(v_max, v)
        # line 8: x_{t+1} = Pi_{F, sqrt(Vhat_t)}(x_t - alpha_t m_t / sqrt(vhat_t)); Pi = identity on F = R^d.
        # DEPARTURE: sqrt(vhat_t + eps_root) + eps (both 0 reproduce the paper).
        delta = -alpha_t * m / (np.sqrt(v_max + eps_root) + eps)
        return delta, m, v, v_max
      # DEPARTURE (bias_correction=True): Adam's corrections, Kingma & Ba (9)-(10).
      m_hat = m / (1.0 - b1**t)
      if self.max_over == "corrected":
        # optax: the running maximum is over the bias-corrected vhat_t = v_t / (1 - beta_2^t).
        v_max = np.maximum(v_max, v / (1.0 - b2**t))
        denom = np.sqrt(v_max + eps_root) + eps
      else:
        # PyTorch: line 7 as in the paper (maximum of the raw v_t), bias-corrected with the current step's factor.
        v_max = np.maximum(v_max, v)
        denom = np.sqrt(v_max / (1.0 - b2**t) + eps_root) + eps
      delta = -alpha_t * m_hat / denom
      return delta, m, v, v_max

    delta, mu, nu, nu_max = _map(leaf, 4, grads, params, state["mu"], state["nu"], state["nu_max"])
    return delta, {"count": t, "mu": mu, "nu": nu, "nu_max": nu_max}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state


# ---------------------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------------------


def warmup_cosine(init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0,
                  exponent: float = 1.0) -> Callable[[int], float]:
  """Linear warmup (Goyal et al. 2017) then cosine annealing (Loshchilov & Hutter 2017, SGDR, eq. 5:
  ``eta_t = eta_min + (eta_max - eta_min) (1 + cos(pi T_cur / T_i)) / 2`` with a single period
  ``T_i = decay_steps - warmup_steps``), optionally raised to ``exponent``; ``end_value`` from ``decay_steps`` on.
  ``decay_steps`` is the total length, warmup included (optax's ``warmup_cosine_decay_schedule`` convention).
  """
  init_value, peak_value, end_value, exponent = map(float, (init_value, peak_value, end_value, exponent))

  def schedule(count: int) -> float:
    if count < warmup_steps:
      return init_value + (peak_value - init_value) * count / warmup_steps
    t_cur = min(count - warmup_steps, decay_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * t_cur / (decay_steps - warmup_steps)))
    return end_value + (peak_value - end_value) * cosine**exponent

  return schedule
