"""A float64 NumPy reference for Adam-mini, transcribed from the paper's pseudocode.

Zhang, Chen, Li, Ding, Chen, Ye, Luo & Sun 2024, "Adam-mini: Use Fewer Learning Rates To Gain More"
(arXiv 2406.16793). Algorithm 1 ("Adam-mini (General form)"), its lines as numbered in the paper:

.. code-block:: text

   1: Input weight-decay coefficient lambda and current step t
   2: Choose param_blocks from Algorithm 2 or 3
   3: for param in param_blocks do
   4:   g = param.grad
   5:   param = param - eta_t * lambda * param
   6:   m = (1 - beta_1) * g + beta_1 * m
   7:   mhat = m / (1 - beta_1^t)
   8:   v = (1 - beta_2) * mean(g * g) + beta_2 * v
   9:   vhat = v / (1 - beta_2^t)
   10:  param = param - eta_t * mhat / (sqrt(vhat) + eps)
   11: end for

Algorithm 2 ("Partition for Transformers"): ``embed``/``output`` parameters are partitioned by tokens
(``param_blocks[name + i] = param[i]``), ``query``/``key`` by heads, ``value``/``attn.proj``/``mlp`` by output
neurons, every other parameter is one block. Algorithm 3 ("default PyTorch partition"): every parameter (tensor) is
one block. The names are the authors' code's (``zyushun/Adam-mini`` v1.1.1, which also gives ``bias`` terms one
block per entry, i.e. Adam); :func:`transformer_blocks` transcribes them. Caveat: the PDF was not reachable from the
search corpus while this was written; the lines are quoted from memory and cross-checked against the authors' code
(v1.1.1: ``vmean = beta2 vmean + (1 - beta2) mean(g * g)``, ``h = sqrt(vmean) / sqrt(1 - beta2^t) + eps``, ``p *=
1 - lr * weight_decay`` before the step).

Lines 5 and 10 together are ``theta_t = theta_{t-1} - eta_t (lambda theta_{t-1} + mhat / (sqrt(vhat) + eps))``
(line 10's step does not read ``param``), AdamW's decoupled decay. A block is given here as an integer label per
entry (entries with the same label in a leaf form one block), computed by slicing, independently of adamx's block
grids.

Options that are not in the paper (marked ``DEPARTURE:``; neutral values give the paper): ``eps_root``
(``sqrt(vhat + eps_root)``, 0) and ``mask`` (``lambda = 0`` where False; ``None``).

Conventions (those of :mod:`tests.reference.adam`): ``t`` is 1-based; complex leaves keep a complex ``m`` and a real
``v`` of ``mean |g|^2``; all maths in float64 / complex128.

API: ``opt = AdamMini(blocks=..., ...)`` with ``blocks`` a callable ``params -> pytree of int label arrays`` (or such
a pytree); ``state = opt.init(params)``; ``delta, state = opt.update(grads, params, state, t)`` or ``params, state =
opt.step(grads, params, state, t)``. ``state`` has ``count``, ``mu`` (m, per entry) and ``nu`` (v, stored per entry:
each entry holds its block's v).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import numpy as np

from tests.reference.adam import Rate, _abs_sq, _check_t, _f64, _like_zeros, _map, _rate, _real_zeros, apply

__all__ = ["AdamMini", "whole", "elementwise", "by_rows", "by_index", "by_runs", "grid_blocks", "transformer_blocks"]


# ---------------------------------------------------------------------------------------------------------------
# Block labels (Algorithms 2 and 3): one int per entry, equal within a block
# ---------------------------------------------------------------------------------------------------------------


def whole(x: Any) -> np.ndarray:
  """Algorithm 3 (and Algorithm 2's else branch): the whole tensor is one block."""
  return np.zeros(np.shape(x), np.int64)


def elementwise(x: Any) -> np.ndarray:
  """One block per entry (Adam; the authors' code for ``bias``)."""
  return np.arange(np.size(x)).reshape(np.shape(x))


def by_index(x: Any, axis: int) -> np.ndarray:
  """``param_blocks[name + i] = param[i]`` along ``axis``: one block per index (token, output neuron)."""
  shape = np.shape(x)
  axis = axis % len(shape)
  idx = np.arange(shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(shape))])
  return np.broadcast_to(idx, shape).copy()


def by_rows(x: Any) -> np.ndarray:
  """Partition by tokens: one block per row of a ``(vocab, d)`` table."""
  return by_index(x, 0)


def by_runs(x: Any, axis: int, n: int) -> np.ndarray:
  """Partition by heads: ``axis`` cut into ``n`` runs of consecutive indices (``np.array_split``)."""
  shape = np.shape(x)
  axis = axis % len(shape)
  runs = np.concatenate([np.full(len(c), k) for k, c in enumerate(np.array_split(np.arange(shape[axis]), n))])
  return np.broadcast_to(runs.reshape([-1 if i == axis else 1 for i in range(len(shape))]), shape).copy()


def grid_blocks(x: Any, grid: tuple[int, ...]) -> np.ndarray:
  """The blocks of adamx's block grid ``grid``: entry ``(i_0, ..., i_{n-1})`` is in block
  ``(i_0 // (s_0 / r_0), ..., i_{n-1} // (s_{n-1} / r_{n-1}))``."""
  shape = np.shape(x)
  if not shape:
    return np.zeros((), np.int64)
  coords = [i // (s // r) for i, s, r in zip(np.indices(shape), shape, grid)]
  return np.ravel_multi_index(coords, grid)


def transformer_blocks(params: Any, n_heads: int | None = None, n_kv_heads: int | None = None, out_axis: int = -1
                       ) -> Any:
  """Algorithm 2 with the authors' (v1.1.1) names, as substrings of the lower-case dotted path, first match wins:
  ``bias`` per entry; query/key per head (``n_kv_heads`` for keys if given) along ``out_axis``; embeddings per token
  (row); output layer, value, attention projection, MLP per output neuron (index along ``out_axis``); the rest, and
  any vector or scalar, one block."""

  def label(path, x):
    name = ".".join(re.findall(r"[A-Za-z0-9_]+", jax.tree_util.keystr(path))).lower()
    if "bias" in name:
      return elementwise(x)
    if np.ndim(x) < 2:
      return whole(x)
    if any(k in name for k in ("q_proj", "wq", "query")):
      return by_runs(x, out_axis, n_heads)
    if any(k in name for k in ("k_proj", "wk", "key")):
      return by_runs(x, out_axis, n_kv_heads or n_heads)
    if any(k in name for k in ("embed", "embd", "wte")):
      return by_rows(x)
    if any(k in name for k in ("lm_head", "output", "final_layer", "v_proj", "wv", "value", "o_proj", "wo",
                               "attn.proj", "feed_forward", "linear", "mlp")):
      return by_index(x, out_axis)
    return whole(x)

  return jax.tree_util.tree_map_with_path(label, params)


# ---------------------------------------------------------------------------------------------------------------
# Algorithm 1
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdamMini:
  """Adam-mini, Zhang et al. 2024, Algorithm 1 (``learning_rate`` is ``eta_t``, ``weight_decay`` is ``lambda``)."""

  learning_rate: Rate = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  eps_root: float = 0.0
  weight_decay: float = 0.0
  mask: Any = None
  blocks: Any = None  # params -> pytree of labels (or the pytree); None: Algorithm 3, one block per tensor

  def _labels(self, params: Any) -> Any:
    if self.blocks is None:
      return jax.tree_util.tree_map(whole, params)
    return self.blocks(params) if callable(self.blocks) else self.blocks

  def init(self, params: Any) -> dict:
    # m and v start at 0 (v kept per entry, the same for every entry of a block)
    return {"count": 0, "mu": jax.tree_util.tree_map(_like_zeros, params),
            "nu": jax.tree_util.tree_map(_real_zeros, params)}

  def update(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    _check_t(state, t)  # 1: current step t
    eta_t = _rate(self.learning_rate, t)
    b1, b2, eps, eps_root, lam = (float(self.b1), float(self.b2), float(self.eps), float(self.eps_root),
                                  float(self.weight_decay))
    mask = (jax.tree_util.tree_map(lambda _: True, params) if self.mask is None
            else self.mask(params) if callable(self.mask) else self.mask)

    def leaf(g, theta, m, v, labels, decays):
      g, theta, m, v = _f64(g), _f64(theta), _f64(m), _f64(v)
      labels = np.asarray(labels)
      assert labels.shape == g.shape, (labels.shape, g.shape)
      # 2-3: for param in param_blocks (the blocks of this leaf, one label each; all blocks at once: ``block`` is the
      # index of each entry's block, ``first`` an entry of each block)
      _, first, block = np.unique(labels.ravel(), return_index=True, return_inverse=True)
      # 4: g = param.grad
      # 8: v = (1 - beta_2) * mean(g * g) + beta_2 * v     (|g|^2 for complex g; v is the same on the block)
      mean_sq = np.bincount(block, weights=_abs_sq(g).ravel()) / np.bincount(block)
      v_block = (1.0 - b2) * mean_sq + b2 * v.ravel()[first]
      v_new = v_block[block].reshape(v.shape)
      # 6: m = (1 - beta_1) * g + beta_1 * m    (elementwise, so the whole leaf at once)
      m = (1.0 - b1) * g + b1 * m
      # 7: mhat = m / (1 - beta_1^t);  9: vhat = v / (1 - beta_2^t)
      m_hat, v_hat = m / (1.0 - b1**t), v_new / (1.0 - b2**t)
      # 5: param = param - eta_t * lambda * param     (DEPARTURE: lambda = 0 where the mask is False)
      lam_leaf = lam if bool(np.all(np.asarray(decays, bool))) else 0.0
      # 10: param = param - eta_t * mhat / (sqrt(vhat) + eps)     (DEPARTURE: sqrt(vhat + eps_root))
      delta = -eta_t * lam_leaf * theta - eta_t * m_hat / (np.sqrt(v_hat + eps_root) + eps)
      return delta, m, v_new

    delta, mu, nu = _map(leaf, 3, grads, params, state["mu"], state["nu"], self._labels(params), mask)
    return delta, {"count": t, "mu": mu, "nu": nu}

  def step(self, grads: Any, params: Any, state: dict, t: int) -> tuple[Any, dict]:
    delta, state = self.update(grads, params, state, t)
    return apply(params, delta), state
