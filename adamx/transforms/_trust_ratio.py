"""Layer-wise trust ratio scaling (LARS, LAMB): each leaf's update rescaled to a fixed fraction of its parameter."""

from __future__ import annotations

import jax

from adamx import _checks, _tree
from adamx._base import EmptyState, GradientTransformation


def scale_by_trust_ratio(
    min_norm: jax.typing.ArrayLike = 0.0,
    trust_coefficient: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 0.0,
) -> GradientTransformation:
  r"""Scale each leaf's update by its trust ratio :math:`\lVert\theta\rVert / \lVert u\rVert` (as optax's).

  For every leaf (a "layer"), with :math:`c` = ``trust_coefficient`` and :math:`n_0` = ``min_norm``:

  .. math::
    u \leftarrow c\, \frac{\max(\lVert\theta\rVert, n_0)}{\max(\lVert u\rVert, n_0) + \epsilon}\, u,

  and :math:`u` is left unchanged where either norm (after the ``min_norm`` clip) is 0. Norms are Euclidean over
  the leaf's entries (complex entries by their modulus), computed in at least float32.

  Args:
    min_norm: lower bound applied to both norms, >= 0.
    trust_coefficient: :math:`c`, >= 0.
    eps: :math:`\epsilon`, added to the update's norm, >= 0.

  Returns:
    A stateless :class:`adamx.GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import adamx
    >>> lars_like = adamx.chain(adamx.add_decoupled_weight_decay(1e-4), adamx.scale_by_trust_ratio(),
    ...                         adamx.scale_by_learning_rate(0.1))

  References:
    You, Gitman & Ginsburg, `Large Batch Training of Convolutional Networks <https://arxiv.org/abs/1708.03888>`_,
    2017; You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
    <https://arxiv.org/abs/1904.00962>`_, ICLR 2020.
  """
  fn = "scale_by_trust_ratio"
  min_norm = _checks.check_non_negative(fn, "min_norm", min_norm)
  trust_coefficient = _checks.check_non_negative(fn, "trust_coefficient", trust_coefficient)
  eps = _checks.check_non_negative(fn, "eps", eps)

  def init(params):
    del params
    return EmptyState()

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(f"adamx.{fn}: params are required; call update(updates, state, params)")
    _tree.check_structure(fn, "updates", updates, "params", params)

    def leaf(u, p):
      ratio = _tree.trust_ratio(p, u, min_norm, trust_coefficient, eps)
      return (ratio * u.astype(_tree.compute_dtype(u, ratio))).astype(u.dtype)

    return jax.tree.map(leaf, updates, params), state

  return GradientTransformation(init, update)
