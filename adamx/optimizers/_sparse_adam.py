"""Lazy (sparse-row) Adam for embedding tables: ``scale_by_sparse_adam`` and ``sparse_adam``.

Only the rows a step touches update their moments and parameters, as ``torch.optim.SparseAdam``: the rows of an
embedding table that are not looked up in a batch keep their moments (they are not decayed) and their values.
Two ways to give the gradient, with the same state and the same numbers:

* dense (optax's protocol): ``update(grads, state, params)``, a gradient shaped like the table; a row (index along
  axis 0) whose gradient is exactly zero is untouched. The cost is that of dense Adam.
* rows: ``update(row_grads, state, params, indices=indices)``, the gradient of the ``k`` rows ``indices`` only,
  shaped ``(k, *row_shape)``; the update comes back shaped like ``row_grads`` and is applied with
  ``table.at[indices].add(updates)``. The cost is ``O(k log k + k * row size)`` (a sort of the indices, gathers and
  scatters); under ``jit`` with the state and the table donated the scatters update them in place.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate

_TRACER_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError)


class ScaleBySparseAdamState(NamedTuple):
  """State of :func:`scale_by_sparse_adam`."""

  count: jax.Array  # int32 scalar: the number of updates so far (every call, touched rows or not), saturating
  mu: Updates  # first moment m, mu_dtype; a row changes only at the steps that touch it
  nu: Updates  # second moment v, real, nu_dtype; likewise


def _validate(fn: str, b1: Any, b2: Any, eps: Any, mu_dtype: Any, nu_dtype: Any) -> tuple:
  b1, b2, eps, _, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, 0.0, mu_dtype, nu_dtype)
  return b1, b2, eps, mu_dtype, nu_dtype


def _rows(g: jax.Array, m: jax.Array, v: jax.Array, b1: Any, b2: Any, eps: Any, step: jax.Array) -> tuple:
  """The new moments and the update of touched rows, in the compute dtype (``torch.optim.SparseAdam``'s form)."""
  _, m_new, v_new = _common.moments(g, m, v, b1, b2)
  # Kingma & Ba 2015, Section 2 (the "more efficient" order), as torch's sparse_adam: the bias corrections are
  # folded into the step size, sqrt(1 - b2^t) / (1 - b1^t), and eps is added to the *uncorrected* sqrt(v).
  return step * (m_new / (jnp.sqrt(v_new) + eps)), m_new, v_new


def _touched(g: jax.Array) -> jax.Array:
  """Per row (index along axis 0), whether any entry of the gradient is nonzero; shaped to broadcast against g."""
  nonzero = g != 0
  return jnp.any(nonzero, axis=tuple(range(1, g.ndim)), keepdims=True) if g.ndim > 1 else nonzero


def _host(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array if it is concrete, else None (a tracer)."""
  try:
    return np.asarray(x)
  except _TRACER_ERRORS:
    return None


def _check_rows(fn: str, path: str, idx: Any, g: jax.Array, m: jax.Array) -> None:
  """Shapes and dtype of one leaf's indices and row gradients; the range of concrete indices."""
  if jnp.ndim(m) < 1:
    raise ValueError(f"adamx.{fn}: leaf {path} is a scalar; the indices path needs parameters with rows (axis 0)")
  if jnp.ndim(idx) != 1 or not jnp.issubdtype(jnp.result_type(idx), jnp.integer):
    raise TypeError(f"adamx.{fn}: indices for leaf {path} must be a 1-D integer array, got shape {jnp.shape(idx)} "
                    f"and dtype {jnp.result_type(idx)}")
  if jnp.shape(g) != (jnp.shape(idx)[0], *jnp.shape(m)[1:]):
    raise ValueError(f"adamx.{fn}: the row gradients of leaf {path} must have shape (len(indices), *row_shape) = "
                     f"{(jnp.shape(idx)[0], *jnp.shape(m)[1:])}, got {jnp.shape(g)}")
  host = _host(idx)
  n = jnp.shape(m)[0]
  if host is not None and host.size and (host.min() < 0 or host.max() >= n):
    raise IndexError(f"adamx.{fn}: indices for leaf {path} must be in [0, {n}) (the rows of the parameter), got "
                     f"values from {host.min()} to {host.max()}")


def _row_update(idx: jax.Array, g: jax.Array, m: jax.Array, v: jax.Array, b1: Any, b2: Any, eps: Any,
                corrections: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The indices path for one leaf: ``(row updates like g, new mu, new nu)``."""
  n, k = m.shape[0], idx.shape[0]
  if k == 0:
    return jnp.zeros_like(g), m, v
  # Coalesce, as torch does before the update (which is not linear in the gradient): one row per distinct index,
  # the gradients of repeated indices summed in their order. unique(size=k) pads with n, an index that is dropped.
  uniq, inverse = jnp.unique(idx, size=k, fill_value=n, return_inverse=True)
  inverse = inverse.reshape(k)
  valid = (uniq >= 0) & (uniq < n)  # under jit, out-of-range indices are ignored (eagerly they raise)
  rows = jnp.where(valid, uniq, n)
  g_sum = jnp.zeros_like(g).at[inverse].add(g)
  m_rows, v_rows = m.at[rows].get(mode="fill", fill_value=0), v.at[rows].get(mode="fill", fill_value=0)
  step = corrections(_tree.real_dtype(_tree.compute_dtype(g, m, v)))
  u, m_new, v_new = _rows(g_sum, m_rows, v_rows, b1, b2, eps, step)
  m = m.at[rows].set(m_new.astype(m.dtype), mode="drop")
  v = v.at[rows].set(v_new.astype(v.dtype), mode="drop")
  # The update of each distinct row at its first position in idx, zero at the repeats: table.at[idx].add applies it
  # once.
  positions = jnp.arange(k)
  first = jnp.full((k,), k, positions.dtype).at[inverse].min(positions)[inverse] == positions
  keep = (first & valid[inverse]).reshape((k,) + (1,) * (g.ndim - 1))
  return jnp.where(keep, u[inverse], 0).astype(g.dtype), m, v


def scale_by_sparse_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale the touched rows by lazy Adam's moments (no learning rate, no sign flip); other rows get 0.

  The transform behind :func:`adamx.sparse_adam`, whose docstring gives the update rule and the two ways to pass
  the gradient (dense, or ``indices=`` with row gradients).

  Args:
    b1: :math:`\\beta_1`, decay of the first moment, in [0, 1).
    b2: :math:`\\beta_2`, decay of the second moment, in [0, 1).
    eps: :math:`\\epsilon`, added to :math:`\\sqrt{v}` (uncorrected, as PyTorch's ``SparseAdam``), >= 0.
    mu_dtype: dtype of the first moment (``None``: the parameter's dtype).
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype).

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleBySparseAdamState`; its ``update`` takes the
    keyword argument ``indices``.
  """
  fn = "scale_by_sparse_adam"
  b1, b2, eps, mu_dtype, nu_dtype = _validate(fn, b1, b2, eps, mu_dtype, nu_dtype)

  def init(params):
    return ScaleBySparseAdamState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def step_size(count):
    cache: dict = {}

    def get(rdt):
      if rdt not in cache:
        cache[rdt] = jnp.sqrt(_tree.bias_correction(b2, count, rdt)) / _tree.bias_correction(b1, count, rdt)
      return cache[rdt]

    return get

  def update(updates, state, params=None, *, indices=None, **extra_args):
    del params, extra_args
    count = _tree.safe_increment(state.count)
    steps = step_size(count)
    if indices is None:
      _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)

      def leaf(g, m, v):
        u, m_new, v_new = _rows(g, m, v, b1, b2, eps, steps(_tree.real_dtype(_tree.compute_dtype(g, m, v))))
        touched = _touched(g)
        return (jnp.where(touched, u, 0).astype(g.dtype), jnp.where(touched, m_new.astype(m.dtype), m),
                jnp.where(touched, v_new.astype(v.dtype), v))

      updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
      return updates, ScaleBySparseAdamState(count=count, mu=mu, nu=nu)

    treedef = jax.tree.structure(state.mu)
    if jax.tree.structure(updates) != treedef:
      raise ValueError(f"adamx.{fn}: the tree structure of the row gradients does not match that of state.mu\n  "
                       f"updates: {jax.tree.structure(updates)}\n  state.mu: {treedef}")
    if isinstance(indices, (jax.Array, np.ndarray)):
      index_leaves = [indices] * treedef.num_leaves
    else:
      try:
        index_leaves = treedef.flatten_up_to(indices)
      except (TypeError, ValueError) as e:
        raise ValueError(f"adamx.{fn}: indices must be one integer array (for every leaf) or a tree of them shaped "
                         f"like the params ({treedef})") from e
    paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_flatten_with_path(state.mu)[0]]
    g_leaves, m_leaves, v_leaves = (treedef.flatten_up_to(t) for t in (updates, state.mu, state.nu))
    outs = []
    for path, idx, g, m, v in zip(paths, index_leaves, g_leaves, m_leaves, v_leaves):
      _check_rows(fn, path, idx, g, m)
      outs.append(_row_update(jnp.asarray(idx), g, m, v, b1, b2, eps, steps))
    updates, mu, nu = (treedef.unflatten([o[i] for o in outs]) for i in range(3))
    return updates, ScaleBySparseAdamState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def sparse_adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""Lazy Adam (``torch.optim.SparseAdam``): only the rows a step touches update their moments and values.

  For embedding tables, where a batch looks up a few rows of a large table: dense Adam decays the moments of every
  row at every step and moves rows that were not looked up; lazy Adam leaves them exactly as they are, and with
  ``indices=`` costs ``O(rows touched)`` instead of ``O(table)``. ``learning_rate`` is :math:`\eta_t`,
  ``b1``/``b2``/``eps`` are :math:`\beta_1, \beta_2, \epsilon`. At step :math:`t = 1, 2, \dots` (counted globally,
  touched or not) with the set :math:`S_t` of touched rows and :math:`m_0 = v_0 = 0`, for :math:`i \in S_t`:

  .. math::
    \begin{aligned}
    m_{t,i} &= \beta_1 m_{t-1,i} + (1 - \beta_1)\, g_{t,i} \\
    v_{t,i} &= \beta_2 v_{t-1,i} + (1 - \beta_2)\, |g_{t,i}|^2 \\
    \theta_{t,i} &= \theta_{t-1,i} - \eta_t \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\,
      \frac{m_{t,i}}{\sqrt{v_{t,i}} + \epsilon}
    \end{aligned}

  and :math:`m_{t,i} = m_{t-1,i},\ v_{t,i} = v_{t-1,i},\ \theta_{t,i} = \theta_{t-1,i}` for :math:`i \notin S_t`.
  Rows are indices along axis 0 (a whole embedding vector); a scalar leaf is one row.

  The gradient can be passed two ways, on the same state:

  * dense: ``tx.update(grads, state, params)`` with ``grads`` shaped like the params; :math:`S_t` is the set of
    rows whose gradient is not exactly zero.
  * rows: ``tx.update(row_grads, state, params, indices=indices)`` with ``indices`` an integer array of ``k``
    row numbers (one array for every leaf, or a tree of them shaped like the params) and ``row_grads`` shaped
    ``(k, *row_shape)``. :math:`S_t` is the set of indices, even where a row gradient is zero (as PyTorch, which
    treats every stored row of a sparse gradient as touched). Repeated indices are coalesced: their gradients are
    summed, as ``torch.Tensor.coalesce``. The updates come back shaped like ``row_grads``, the full update of a row
    at its first position and zeros at its repeats, so ``table.at[indices].add(updates)`` applies them. Indices
    outside ``[0, rows)`` raise an IndexError eagerly; under ``jit`` they cannot be checked and are ignored.

  Where every touched row has a nonzero gradient the two give the same numbers, bit for bit.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
    b1: :math:`\beta_1`, decay of the first moment, in [0, 1).
    b2: :math:`\beta_2`, decay of the second moment, in [0, 1).
    eps: :math:`\epsilon`, added to the uncorrected :math:`\sqrt{v}`, >= 0 (PyTorch requires > 0).
    mu_dtype: dtype of the first moment (``None``: the parameter's dtype).
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype).

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_sparse_adam(...), scale_by_learning_rate(
    learning_rate))``; ``update`` accepts ``indices=``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> table = jnp.zeros((10_000, 16))                  # an embedding table
    >>> tx = adamx.sparse_adam(learning_rate=1e-2)
    >>> state = tx.init(table)
    >>> tokens = jnp.array([3, 17, 3, 9_999])            # a batch of lookups (3 twice)
    >>> def loss(rows):                                  # the loss as a function of the rows looked up
    ...   return jnp.sum((rows - 1.0) ** 2)
    >>> row_grads = jax.grad(loss)(table[tokens])        # (4, 16): one gradient per lookup
    >>> @jax.jit
    ... def step(table, state, tokens, row_grads):
    ...   updates, state = tx.update(row_grads, state, table, indices=tokens)
    ...   return table.at[tokens].add(updates), state
    >>> table, state = step(table, state, tokens, row_grads)
    >>> print(f"{table[3, 0]:.4f} {table[0, 0]:.4f}")    # row 3 moved by about lr, row 0 untouched
    0.0100 0.0000

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization <https://arxiv.org/abs/1412.6980>`_, ICLR 2015
    (Algorithm 1, with the step size of Section 2's last paragraph). PyTorch's ``torch.optim.SparseAdam``
    (``torch/optim/_functional.py::sparse_adam``), whose numbers this reproduces.

  .. warning::
    * ``eps`` is added to the uncorrected :math:`\sqrt{v_t}` (PyTorch's ``SparseAdam``), not to
      :math:`\sqrt{\hat v_t}` as in :func:`adamx.adam` and ``torch.optim.Adam``: the two agree for ``eps = 0``.
    * The dense path cannot tell a touched row whose gradient is exactly zero from an untouched one (it leaves it
      alone); the indices path updates it (its moments decay), as PyTorch does.
    * No weight decay: decaying every row at every step would defeat the laziness (PyTorch's ``SparseAdam`` has
      none either). Complex parameters are accepted (one real second moment per entry, as :func:`adamx.adam`);
      PyTorch refuses them.
  """
  fn = "sparse_adam"
  _validate(fn, b1, b2, eps, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, 0.0)
  return chain(
      scale_by_sparse_adam(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )
