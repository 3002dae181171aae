"""Adam-mini: ``scale_by_adam_mini``, the ``adam_mini`` optimizer and ``adam_mini_partition``, its transformer rule.

Adam-mini keeps Adam's first moment but one second moment per *block* of parameters (a row, a head, a whole
tensor) instead of one per entry, so the second-moment state shrinks from the size of the model to the number of
blocks. Use it where Adam's memory is the constraint; the paper (Zhang et al. 2024) reports performance on par with
or better than AdamW on language models with 45-50% less optimizer memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay

#: ``None`` (the default rule), ``"leaf"``, ``"element"``, or a callable ``(path: str, leaf) -> block grid``.
Partition = Union[None, str, Callable[[str, Any], Sequence[int]]]
PARTITIONS = ("leaf", "element")

_PARTITION_ARGS = """\
    partition: how each leaf is cut into blocks, one second moment per block. A block grid is a tuple of ints,
      one per axis of the leaf, each dividing that axis: the grid ``(r_0, ..., r_{n-1})`` of a leaf of shape
      ``(s_0, ..., s_{n-1})`` makes ``r_0 ... r_{n-1}`` blocks, the tiles of ``s_i / r_i`` consecutive entries along
      each axis, and ``nu`` has the grid's shape. ``None`` (default): one block per row for leaves with >= 2 axes
      (grid ``(s_0, 1, ..., 1)``: one per token of an ``(vocab, d)`` embedding, one per output neuron of a
      PyTorch-layout ``(out, in)`` weight), one block per leaf for vectors and scalars; ``"leaf"``: one block per
      leaf (the paper's Algorithm 3); ``"element"``: one block per entry (exactly Adam); or a callable
      ``(path, leaf) -> grid`` with ``path`` the leaf's ``jax.tree_util.keystr``, such as
      :func:`adamx.adam_mini_partition` (the paper's transformer rule). Static: it runs once, at ``init``."""


class ScaleByAdamMiniState(NamedTuple):
  """State of :func:`scale_by_adam_mini`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating at the int32 maximum
  mu: Updates  # first moment m_t, one per entry (param-shaped), mu_dtype
  nu: Updates  # second moment v_t, one per block: the leaf's block-grid shape (same rank, fewer entries), real


def _check_partition(fn: str, partition: Any) -> None:
  if partition is None or callable(partition):
    return
  if isinstance(partition, str):
    _checks.check_choice(fn, "partition", partition, PARTITIONS)
    return
  raise TypeError(f"adamx.{fn}: partition must be None, one of {', '.join(map(repr, PARTITIONS))}, or a callable "
                  f"(path, leaf) -> block grid, got {partition!r}")


def _default_grid(shape: tuple[int, ...]) -> tuple[int, ...]:
  return (shape[0],) + (1,) * (len(shape) - 1) if len(shape) >= 2 else (1,) * len(shape)


def _grid(fn: str, partition: Partition, path: str, leaf: Any) -> tuple[int, ...]:
  """The validated block grid of one leaf."""
  shape = tuple(jnp.shape(leaf))
  if partition is None:
    return _default_grid(shape)
  if partition == "leaf":
    return (1,) * len(shape)
  if partition == "element":
    return shape
  returned = partition(path, leaf)
  ok = (isinstance(returned, Sequence) and not isinstance(returned, str) and len(returned) == len(shape)
        and all(isinstance(r, (int, np.integer)) and not isinstance(r, (bool, np.bool_)) for r in returned))
  grid = tuple(int(r) for r in returned) if ok else ()
  if not ok or not all(r == s or (r >= 1 and s % r == 0) for r, s in zip(grid, shape)):
    raise ValueError(f"adamx.{fn}: partition returned {returned!r} for leaf {path or '<root>'} of shape {shape}; a "
                     "block grid is a tuple of one int per axis, each dividing that axis (1: one block along it, the "
                     "axis' size: one block per entry)")
  return grid


def _tiled(shape: tuple[int, ...], grid: tuple[int, ...]) -> tuple[int, ...]:
  """The shape ``(r_0, s_0 / r_0, r_1, s_1 / r_1, ...)`` that separates blocks (even axes) from their entries."""
  return tuple(x for s, r in zip(shape, grid) for x in (r, s // r if r else 1))


def _expanded(grid: tuple[int, ...]) -> tuple[int, ...]:
  """``(r_0, 1, r_1, 1, ...)``: a block grid broadcast against :func:`_tiled`."""
  return tuple(x for r in grid for x in (r, 1))


def scale_by_adam_mini(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    partition: Partition = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by Adam-mini's moments: Adam with one second moment per block (no learning rate, no sign flip).

  The transform behind :func:`adamx.adam_mini`, whose docstring gives the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByAdamMiniState`.
  """
  fn = "scale_by_adam_mini"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _check_partition(fn, partition)

  def init(params):
    def zeros(path, p):
      grid = _grid(fn, partition, jax.tree_util.keystr(path), p)
      return jnp.zeros(grid, _tree.moment_dtype(jnp.result_type(p), nu_dtype, real=True))

    mu = _tree.zeros_like(fn, params, mu_dtype)  # also rejects non-float leaves; nu never exists at full size
    return ScaleByAdamMiniState(count=jnp.zeros([], jnp.int32), mu=mu,
                                nu=jax.tree_util.tree_map_with_path(zeros, params))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v):
      g_, m_ = _common.upcast(g, m, v)
      rdt = _tree.real_dtype(g_.dtype)
      shape, grid = g_.shape, v.shape
      tiled = _tiled(shape, grid)
      # Zhang et al. 2024, Algorithm 1: m = (1 - b1) g + b1 m; v = (1 - b2) mean(g * g) + b2 v, the mean over the
      # block (|g|^2 for complex g: one real second moment per block, as adam keeps one per complex entry).
      m_new = _tree.ema(m_, g_, b1)
      block_sq = jnp.mean(_tree.abs_sq(g_).reshape(tiled), axis=tuple(range(1, 2 * len(grid), 2)))
      v_new = _tree.ema(v.astype(rdt), block_sq, b2)
      bc1, bc2, _ = corrections(rdt)
      # m_hat = m / (1 - b1^t); v_hat = v / (1 - b2^t); update m_hat / (sqrt(v_hat) + eps), each block's v_hat
      # shared by its entries.
      denom = (jnp.sqrt(_common.unbias(v_new, bc2) + eps_root) + eps).reshape(_expanded(grid))
      u = (_common.unbias(m_new, bc1).reshape(tiled) / denom).reshape(shape)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamMiniState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def adam_mini(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    partition: Partition = None,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""Adam-mini (Zhang et al., 2024): AdamW with one second moment per block of parameters instead of per entry.

  The paper argues that within a dense Hessian sub-block (a head, a neuron, a token's embedding) one learning rate
  serves as well as many, and keeps one :math:`v` per block: the second-moment memory shrinks from the model's size
  to the number of blocks. ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`,
  ``eps``/``eps_root`` are :math:`\epsilon, \epsilon_\text{root}`, ``weight_decay`` is :math:`\lambda`, and
  ``partition`` chooses the blocks :math:`b`. At step :math:`t = 1, 2, \dots` with :math:`m_0 = v_0 = 0`, for every
  block :math:`b` with entries :math:`\theta_b` (and :math:`\operatorname{mean}_b` the mean over them):

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
      v_{t,b} = \beta_2 v_{t-1,b} + (1 - \beta_2)\, \operatorname{mean}_b |g_t|^2 \\
    \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_{t,b} = v_{t,b} / (1 - \beta_2^t) \\
    \theta_{t,b} &= \theta_{t-1,b} - \eta_t \bigl( \hat m_{t,b} / (\sqrt{\hat v_{t,b} + \epsilon_\text{root}}
      + \epsilon) + \lambda\, \theta_{t-1,b} \bigr)
    \end{aligned}

  With ``partition="element"`` every block is one entry and this is :func:`adamx.adamw` exactly.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, decoupled decay, >= 0 (default 0, the authors' code's).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``; the authors' code exempts norms and biases, as
      :func:`adamx.decay_mask` does (which also exempts embeddings).

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_adam_mini(...), add_decoupled_weight_decay(
    weight_decay, mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"embed": jnp.ones((100, 8)), "mlp": {"kernel": jnp.ones((8, 32)), "bias": jnp.zeros(32)}}
    >>> tx = adamx.adam_mini(learning_rate=1e-3, partition=adamx.adam_mini_partition())
    >>> state = tx.init(params)
    >>> jax.tree.map(jnp.shape, state[0].nu)  # one v per token, per output neuron, and per entry of the bias
    {'embed': (100, 1), 'mlp': {'bias': (32,), 'kernel': (1, 32)}}

  References:
    Zhang, Chen, Li, Ding, Chen, Ye, Luo & Sun, `Adam-mini: Use Fewer Learning Rates To Gain More
    <https://arxiv.org/abs/2406.16793>`_, 2024 (Algorithms 1-3; the authors' code ``zyushun/Adam-mini`` v1.1.1).

  .. warning::
    * Neither optax nor ``torch.optim`` has Adam-mini; adamx checks it against a float64 transcription of the
      paper (and, with ``partition="element"``, against ``optax.adamw``).
    * The default ``partition`` is per row, which is per output neuron only for PyTorch-layout ``(out, in)``
      weights; Flax and Haiku kernels are ``(in, out)``. For transformers use :func:`adamx.adam_mini_partition`
      (with ``out_axis=-1`` for ``(in, out)`` kernels), or your own rule.
    * Under ``optax.inject_hyperparams`` list a callable ``partition`` in ``static_args`` (optax would take it for a
      schedule); :func:`adamx.inject_hyperparams` keeps it static by itself.
  """
  fn = "adam_mini"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  _check_partition(fn, partition)
  return chain(
      scale_by_adam_mini(b1, b2, eps, eps_root, partition=partition, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


# The authors' name rules (zyushun/Adam-mini v1.1.1, ``Adam_mini.__init__``), matched as substrings of the leaf's
# lower-case dotted path, in this order.
ADAM_NAMES = ("bias",)
QUERY_NAMES = ("q_proj", "wq", "query")
KEY_NAMES = ("k_proj", "wk", "key")
EMBED_NAMES = ("embed", "embd", "wte")
NEURON_NAMES = ("lm_head", "output", "final_layer", "v_proj", "wv", "value", "o_proj", "wo", "attn.proj",
                "feed_forward", "linear", "mlp")


def _heads_grid(fn: str, path: str, shape: tuple[int, ...], axis: int, heads: int | None) -> tuple[int, ...]:
  if heads is None:
    raise ValueError(f"adamx.{fn}: leaf {path} is a query or key weight (one block per head): pass n_heads")
  if len(shape) != 2 or shape[axis] % heads:
    raise ValueError(f"adamx.{fn}: query/key leaf {path} has shape {shape}: the rule splits the output axis "
                     f"({axis}) of a 2-D kernel into {heads} heads; for other layouts pass your own partition, e.g. "
                     "lambda path, leaf: (1, n_heads, 1) for a Flax DenseGeneral (d, n_heads, head_dim) kernel")
  grid = [1, 1]
  grid[axis] = heads
  return tuple(grid)


def adam_mini_partition(
    n_heads: int | None = None,
    *,
    n_kv_heads: int | None = None,
    out_axis: int = -1,
) -> Callable[[str, Any], tuple[int, ...]]:
  """The paper's partition of a transformer (Zhang et al. 2024, Algorithm 2), by parameter names.

  A rule for ``partition=`` of :func:`adamx.adam_mini`. The names are those of the authors' code (v1.1.1), matched
  as substrings of the leaf's lower-case path with keys joined by dots (``"['attn']['proj']['kernel']"`` reads
  ``attn.proj.kernel``), first match wins:

  * ``bias``: one block per entry (Adam);
  * query (``q_proj``, ``wq``, ``query``) and key (``k_proj``, ``wk``, ``key``) 2-D kernels: one block per head,
    the output axis split into ``n_heads`` (keys: ``n_kv_heads`` if given, for grouped-query attention) runs of
    consecutive neurons;
  * embeddings (``embed``, ``embd``, ``wte``): one block per token, i.e. per row of the ``(vocab, d)`` table;
  * output layer (``lm_head``, ``output``, ``final_layer``), value (``v_proj``, ``wv``, ``value``), attention
    projection (``o_proj``, ``wo``, ``attn.proj``) and MLP (``feed_forward``, ``linear``, ``mlp``) weights: one
    block per output neuron (the index along ``out_axis``);
  * everything else (norms, vectors and scalars in any rule above): one block per leaf.

  Args:
    n_heads: the number of attention heads; needed if the tree has query or key weights.
    n_kv_heads: the number of key heads (grouped-query attention); ``None``: ``n_heads``.
    out_axis: the axis of the output neurons of a weight: ``-1`` for Flax/Haiku ``(in, out)`` kernels (default),
      ``0`` for PyTorch/Equinox ``(out, in)`` weights.

  Returns:
    ``rule(path: str, leaf) -> block grid``, to pass as ``partition``.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> rule = adamx.adam_mini_partition(n_heads=4)
    >>> rule("['layer_0']['q_proj']['kernel']", jnp.zeros((16, 16)))  # 4 heads of 4 output neurons each
    (1, 4)
    >>> rule("['wte']['embedding']", jnp.zeros((100, 16)))  # one block per token
    (100, 1)

  References:
    Zhang et al., `Adam-mini: Use Fewer Learning Rates To Gain More <https://arxiv.org/abs/2406.16793>`_, 2024
    (Algorithm 2).
  """
  fn = "adam_mini_partition"
  for name, value in (("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
    if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
                              or value < 1):
      raise ValueError(f"adamx.{fn}: {name} must be None or a positive int, got {value!r}")
  if out_axis not in (0, -1):
    raise ValueError(f"adamx.{fn}: out_axis must be 0 (PyTorch layout) or -1 (Flax layout), got {out_axis!r}")

  def rule(path: str, leaf: Any) -> tuple[int, ...]:
    name = ".".join(re.findall(r"[A-Za-z0-9_]+", path)).lower()
    shape = tuple(jnp.shape(leaf))
    if any(n in name for n in ADAM_NAMES):
      return shape
    if len(shape) < 2:
      return (1,) * len(shape)
    if any(n in name for n in QUERY_NAMES):
      return _heads_grid(fn, path, shape, out_axis, n_heads)
    if any(n in name for n in KEY_NAMES):
      return _heads_grid(fn, path, shape, out_axis, n_kv_heads if n_kv_heads is not None else n_heads)
    if any(n in name for n in EMBED_NAMES):
      return (shape[0],) + (1,) * (len(shape) - 1)
    if any(n in name for n in NEURON_NAMES):
      axis = out_axis % len(shape)
      return tuple(s if i == axis else 1 for i, s in enumerate(shape))
    return (1,) * len(shape)

  return rule


_common.document(scale_by_adam_mini, adam_mini, args=_common.MOMENT_ARGS + "\n" + _PARTITION_ARGS)
