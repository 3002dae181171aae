"""Float64 NumPy reference for lazy (sparse-row) Adam, ``torch.optim.SparseAdam``'s algorithm.

Written from Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization" (Algorithm 1 and the last paragraph of
Section 2) and the documented semantics of ``torch.optim.SparseAdam`` ("SparseAdam approximates the Adam algorithm
by masking out the parameter and moment updates corresponding to the zero values in the gradients"), not from
adamx's code. Kingma & Ba's Section 2 notes that lines (9)-(11) of Algorithm 1 can be replaced by

.. code-block:: text

   alpha_t = alpha sqrt(1 - beta_2^t) / (1 - beta_1^t)
   theta_t <- theta_{t-1} - alpha_t m_t / (sqrt(v_t) + epshat)

which is the form PyTorch's ``SparseAdam`` uses (its ``eps`` is this ``epshat``). The lazy version restricts lines
(7), (8) and the parameter update to the set ``S_t`` of rows present in the step's sparse gradient; ``t`` counts
every step (every call, touched or not), so a row touched for the first time at step ``t`` is bias-corrected with
``t``, not with the number of times it was touched:

.. code-block:: text

   (5)  t <- t + 1
   (6)  g_t <- the gradient rows, g_{t,i} for i in S_t (repeated indices coalesced: their rows summed)
   for i in S_t:
   (7)    m_{t,i} <- beta_1 m_{t-1,i} + (1 - beta_1) g_{t,i}
   (8)    v_{t,i} <- beta_2 v_{t-1,i} + (1 - beta_2) g_{t,i}^2
   (11')  theta_{t,i} <- theta_{t-1,i} - alpha_t m_{t,i} / (sqrt(v_{t,i}) + epshat)
   for i not in S_t: m, v, theta unchanged

A row is an index along axis 0. Real parameters only (PyTorch refuses complex ones). API: ``state = opt.init(table)``;
``delta, state = opt.update(indices, row_grads, table, state, t)`` with ``delta`` the dense additive update
``theta_t - theta_{t-1}``; ``state`` is a dict with ``count``, ``mu`` (m) and ``nu`` (v).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tests.reference.adam import Rate, _check_t, _rate

__all__ = ["SparseAdam", "coalesce"]


def coalesce(indices: Any, rows: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
  """``(sorted distinct indices, their summed rows)`` in float64, as ``torch.Tensor.coalesce``."""
  indices = np.asarray(indices).reshape(-1)
  rows = np.asarray(rows, np.float64).reshape((indices.size, -1))
  assert indices.size == 0 or (indices.min() >= 0 and indices.max() < n), (indices, n)
  unique, inverse = np.unique(indices, return_inverse=True)
  summed = np.zeros((unique.size, rows.shape[1]))
  np.add.at(summed, inverse.reshape(-1), rows)
  return unique, summed


@dataclasses.dataclass(frozen=True)
class SparseAdam:
  """Lazy Adam with PyTorch's ``SparseAdam`` step size (see the module docstring)."""

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8

  def init(self, table: Any) -> dict:
    # (1)-(3): m_0 <- 0, v_0 <- 0, t <- 0.
    shape = np.shape(table)
    return {"count": 0, "mu": np.zeros(shape), "nu": np.zeros(shape)}

  def update(self, indices: Any, row_grads: Any, table: Any, state: dict, t: int) -> tuple[np.ndarray, dict]:
    _check_t(state, t)
    shape = np.shape(table)
    b1, b2, eps, alpha = float(self.b1), float(self.b2), float(self.eps), _rate(self.learning_rate, t)
    rows, g = coalesce(indices, row_grads, shape[0])
    m = state["mu"].reshape((shape[0], -1)).copy()
    v = state["nu"].reshape((shape[0], -1)).copy()
    delta = np.zeros_like(m)
    # (7), (8) on the rows of S_t only.
    m[rows] = b1 * m[rows] + (1.0 - b1) * g
    v[rows] = b2 * v[rows] + (1.0 - b2) * g * g
    # (11'): alpha_t = alpha sqrt(1 - beta_2^t) / (1 - beta_1^t), with the global step t.
    alpha_t = alpha * np.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    delta[rows] = -alpha_t * m[rows] / (np.sqrt(v[rows]) + eps)
    return delta.reshape(shape), {"count": t, "mu": m.reshape(shape), "nu": v.reshape(shape)}
