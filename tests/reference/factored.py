"""Float64 NumPy reference for Adam with a factored second moment, and for Adafactor's rescaling it comes from.

Written from the pseudocode of Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
(ICML, arXiv 1804.04235), not from adamx's or optax's code. For a weight matrix ``X`` in ``R^{n x m}``, Algorithm 4
("Adafactor for weight matrices"), its statements numbered here from the first line after ``Inputs``:

.. code-block:: text

   (1)  for t = 1 to T do
   (2)    alpha_t = max(eps_2, RMS(X_{t-1})) rho_t
   (3)    G_t = grad f_t(X_{t-1})
   (4)    R_t = beta2hat_t R_{t-1} + (1 - beta2hat_t) (G_t^2 + eps_1 1_n 1_m^T) 1_m
   (5)    C_t = beta2hat_t C_{t-1} + (1 - beta2hat_t) 1_n^T (G_t^2 + eps_1 1_n 1_m^T)
   (6)    Vhat_t = R_t C_t / (1_n^T R_t)
   (7)    U_t = G_t / sqrt(Vhat_t)
   (8)    Uhat_t = U_t / max(1, RMS(U_t) / d)
   (9)    X_t = X_{t-1} - alpha_t Uhat_t
   (10) end for

and Algorithm 5 ("Adafactor for weight vectors") with lines (4)-(6) replaced by
``Vhat_t = beta2hat_t Vhat_{t-1} + (1 - beta2hat_t) (G_t^2 + eps_1 1_n)``. ``R_t`` is the vector of row sums and
``C_t`` of column sums; ``R_0 = 0, C_0 = 0, Vhat_0 = 0``. Section 7.2's schedule is ``beta2hat_t = 1 - t^(-c)``.
Caveat: the PDF was not reachable from the search corpus while this was written; the lines are quoted from the
published paper as transcribed in secondary sources and agree with them.

Two optimizers are transcribed:

* :class:`Adafactor`: lines (3)-(7) and (9) with ``alpha_t`` a plain learning rate: no relative step size (line 2,
  optax's ``multiply_by_parameter_scale=False``) and no update clipping (line 8, ``clipping_threshold=None``). This
  is ``optax.scale_by_factored_rms`` followed by a learning rate, and is used to check this reference against optax.
* :class:`FactoredAdam`: Kingma & Ba 2015, Algorithm 1 (``tests/reference/adam.py``), with its second-moment line
  (8) ``v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2`` replaced by lines (4)-(6) with the constant ``beta2hat_t =
  beta_2`` (DEPARTURE from Adafactor: Adam's first moment, bias correction ``vhat_t = Vhat_t / (1 - beta_2^t)`` and
  ``eps``; ``R_t``, ``C_t`` are EMAs from zero, so ``R_t C_t / 1^T R_t`` carries the factor ``1 - beta_2^t`` once).
  Optional decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2 line 12) as in AdamW.

Which leaves are factored (not in the paper, which treats matrices and vectors only): a leaf with at least two axes
whose second-largest axis has at least ``min_dim_size_to_factor`` entries. Its largest axis plays the paper's column
index ``j`` (summed over in ``R_t``), its second-largest the row index ``i`` (summed over in ``C_t``); ties go to the
later axis for the largest; any other axes are batch axes (one factorisation per index). Every other leaf follows
Algorithm 5 (:class:`Adafactor`) or Adam's line (8) (:class:`FactoredAdam`).

State (a dict): ``count``; ``mu`` (``m_t``, :class:`FactoredAdam` only); ``nu``: per leaf the full ``v_t`` (or
``Vhat_t``), or for a factored leaf a dict ``{"R": R_t, "C": C_t}`` of the paper's *sums*, kept with a length-1 axis
where the sum was taken. :func:`statistics` converts them to the means (``v_row = R_t / size``, ``v_col = C_t /
size``) that adamx and optax store. API as :mod:`tests.reference.adam`: ``state = opt.init(params)``; ``delta, state
= opt.update(grads, params, state, t)`` for ``t = 1, 2, ...``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from tests.reference.adam import Rate, _check_t, _f64, _like_zeros, _map, _rate, apply

__all__ = ["Adafactor", "FactoredAdam", "RowCol", "factored_axes", "statistics", "apply"]


class RowCol(NamedTuple):
  """The statistics of a factored leaf as means (see :func:`statistics`)."""

  v_row: np.ndarray
  v_col: np.ndarray


def factored_axes(shape: tuple[int, ...], min_dim_size_to_factor: int) -> tuple[int, int] | None:
  """``(i_axis, j_axis)``: the second-largest and the largest axis, or None if the leaf is not factored."""
  if len(shape) < 2:
    return None
  # Sort axes by (size, position): the last in this order is the largest, later axes winning ties.
  by_size = sorted(range(len(shape)), key=lambda a: (shape[a], a))
  i_axis, j_axis = by_size[-2], by_size[-1]
  return (i_axis, j_axis) if shape[i_axis] >= min_dim_size_to_factor else None


def _is_factored(v: Any) -> bool:
  return isinstance(v, dict)


def _zeros_nu(p: Any, min_dim_size_to_factor: int) -> Any:
  shape = np.shape(p)
  axes = factored_axes(shape, min_dim_size_to_factor)
  if axes is None:
    return np.zeros(shape, np.float64)
  i_axis, j_axis = axes
  r_shape, c_shape = list(shape), list(shape)
  r_shape[j_axis] = 1  # R_t = (...) 1_m: summed over the columns j
  c_shape[i_axis] = 1  # C_t = 1_n^T (...): summed over the rows i
  return {"R": np.zeros(r_shape), "C": np.zeros(c_shape)}


def _second_moment(g: np.ndarray, v: Any, beta: float, eps1: float, min_dim_size_to_factor: int,
                   eps1_full: bool) -> tuple[np.ndarray, Any]:
  """``(Vhat_t, new state)`` for one leaf with decay ``beta``: lines (4)-(6) for a factored leaf; for the others
  Algorithm 5 (``eps1_full=True``) or Adam's line (8) (``eps1_full=False``)."""
  if not _is_factored(v):
    sq = g * g + (eps1 if eps1_full else 0.0)
    new = beta * v + (1.0 - beta) * sq
    return new, new
  i_axis, j_axis = factored_axes(g.shape, min_dim_size_to_factor)
  sq = g * g + eps1  # G_t^2 + eps_1 1_n 1_m^T
  # (4): R_t = beta2hat_t R_{t-1} + (1 - beta2hat_t) (G_t^2 + eps_1) 1_m
  r = beta * v["R"] + (1.0 - beta) * np.sum(sq, axis=j_axis, keepdims=True)
  # (5): C_t = beta2hat_t C_{t-1} + (1 - beta2hat_t) 1_n^T (G_t^2 + eps_1)
  c = beta * v["C"] + (1.0 - beta) * np.sum(sq, axis=i_axis, keepdims=True)
  # (6): Vhat_t = R_t C_t / (1_n^T R_t)
  vhat = r * c / np.sum(r, axis=i_axis, keepdims=True)
  return vhat, {"R": r, "C": c}


def statistics(nu: Any, params: Any, min_dim_size_to_factor: int) -> Any:
  """The state's ``nu`` with each factored leaf as :class:`RowCol` means, the form adamx and optax store:
  ``v_row = R_t / (size of the j axis)`` without that axis, ``v_col = C_t / (size of the i axis)`` without it."""

  def convert(p, v):
    if not _is_factored(v):
      return v
    i_axis, j_axis = factored_axes(np.shape(p), min_dim_size_to_factor)
    shape = np.shape(p)
    return RowCol(np.squeeze(v["R"], j_axis) / shape[j_axis], np.squeeze(v["C"], i_axis) / shape[i_axis])

  leaves, treedef = jax.tree_util.tree_flatten(params)
  return treedef.unflatten([convert(p, v) for p, v in zip(leaves, treedef.flatten_up_to(nu))])


def power_decay(c: float) -> Callable[[int], float]:
  """Section 7.2: ``beta2hat_t = 1 - t^(-c)`` (so ``beta2hat_1 = 0``)."""
  return lambda t: 1.0 - float(t) ** (-c)


def _mask_tree(mask: Any, params: Any) -> Any:
  if mask is None:
    return jax.tree_util.tree_map(lambda _: True, params)
  return mask(params) if callable(mask) else mask


@dataclasses.dataclass(frozen=True)
class Adafactor:
  """Algorithms 4 and 5 without the relative step size and update clipping: ``X_t = X_{t-1} - alpha_t U_t``.

  ``decay`` is ``t -> beta2hat_t`` (default Section 7.2's ``1 - t^(-0.8)``). Real parameters only.
  """

  learning_rate: Rate = 1.0
  decay: Callable[[int], float] = power_decay(0.8)
  eps1: float = 1e-30
  min_dim_size_to_factor: int = 128

  def init(self, params: Any) -> dict:
    return {"count": 0, "nu": jax.tree_util.tree_map(lambda p: _zeros_nu(p, self.min_dim_size_to_factor), params)}

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)
    alpha, beta = _rate(self.learning_rate, t), float(self.decay(t))

    def leaf(g, v):
      # (3): G_t given.  (4)-(6), or Algorithm 5's Vhat_t line.
      vhat, v = _second_moment(_f64(g), v, beta, self.eps1, self.min_dim_size_to_factor, eps1_full=True)
      # (7): U_t = G_t / sqrt(Vhat_t).  (9): X_t = X_{t-1} - alpha_t U_t (no line 8).
      return -alpha * _f64(g) / np.sqrt(vhat), v

    delta, nu = _map(leaf, 2, grads, state["nu"])
    return delta, {"count": t, "nu": nu}


@dataclasses.dataclass(frozen=True)
class FactoredAdam:
  """Adam (Kingma & Ba 2015, Algorithm 1) with Algorithm 4's factored second moment for factored leaves, plus
  optional decoupled weight decay ``lambda`` (AdamW). Real parameters only."""

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  eps1: float = 1e-30
  min_dim_size_to_factor: int = 128
  weight_decay: float = 0.0
  mask: Any = None

  def init(self, params: Any) -> dict:
    # Algorithm 1 (1)-(3): m_0 = 0, v_0 = 0 (R_0 = C_0 = 0), t = 0.
    return {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params),
            "nu": jax.tree_util.tree_map(lambda p: _zeros_nu(p, self.min_dim_size_to_factor), params)}

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)
    alpha = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))

    def leaf(g, theta, m, v, decays):
      g, theta = _f64(g), _f64(theta)
      # Algorithm 1 (7): m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
      m = b1 * m + (1.0 - b1) * g
      # Algorithm 1 (8), replaced for factored leaves (DEPARTURE, see the module docstring) by Algorithm 4 (4)-(6)
      # with beta2hat_t = beta_2.
      v_full, v = _second_moment(g, v, b2, self.eps1, self.min_dim_size_to_factor, eps1_full=False)
      # (9), (10): mhat_t <- m_t / (1 - beta_1^t), vhat_t <- v_t / (1 - beta_2^t)
      mhat, vhat = m / (1.0 - b1**t), v_full / (1.0 - b2**t)
      # (11): theta_t <- theta_{t-1} - alpha mhat_t / (sqrt(vhat_t) + eps)   [DEPARTURE: + eps_root inside]
      step = mhat / (np.sqrt(vhat + eps_root) + eps)
      # DEPARTURE (weight_decay > 0): Loshchilov & Hutter line 12, - eta_t lambda theta_{t-1} (decoupled).
      decay = lam * theta if bool(np.all(np.asarray(decays, bool))) else 0.0 * theta
      return -alpha * (step + decay), m, v

    mask = _mask_tree(self.mask, params)
    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], mask)
    return delta, {"count": t, "mu": mu, "nu": nu}
