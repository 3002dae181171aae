"""Lion: ``scale_by_lion`` and the ``lion`` optimizer.

Lion (EvoLved Sign Momentum) steps by the sign of an interpolation between the momentum and the gradient, so every
coordinate moves by exactly the learning rate, and it keeps one moment instead of Adam's two (half the optimizer
memory). Use it when optimizer state memory matters, with a learning rate 3-10x smaller and a weight decay 3-10x
larger than AdamW's; the paper (Chen et al. 2023) reports matching or better accuracy than AdamW on image,
language and diffusion models. Nothing here measures a speed-up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay

_ARGS = """\
    b1: :math:`\\beta_1`, the interpolation between momentum and gradient whose sign is the step, in [0, 1).
    b2: :math:`\\beta_2`, decay of the momentum, in [0, 1).
    mu_dtype: dtype of the momentum (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision). ``jnp.bfloat16`` halves its memory."""


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # momentum m_t, mu_dtype


def scale_by_lion(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    *,
    mu_dtype: Any = None,
) -> GradientTransformation:
  """Replace updates by Lion's sign step (no learning rate, no sign flip).

  The transform behind :func:`adamx.lion`, whose docstring gives the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByLionState`.
  """
  fn = "scale_by_lion"
  b1 = _checks.check_interval(fn, "b1", b1, 0.0, 1.0)
  b2 = _checks.check_interval(fn, "b2", b2, 0.0, 1.0)
  mu_dtype = _checks.canonicalize_dtype(fn, "mu_dtype", mu_dtype)

  def init(params):
    return ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=_tree.zeros_like(fn, params, mu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)

    def leaf(g, m):
      g_, m_ = _common.upcast(g, m)
      # Chen et al. 2023, Algorithm 2: c_t = b1 m_{t-1} + (1 - b1) g_t; step sign(c_t); m_t = b2 m_{t-1} + (1 - b2) g_t.
      # jnp.sign of a complex number is c / |c| (0 at 0): a step of modulus 1 in the direction of c_t.
      u = jnp.sign(_tree.ema(m_, g_, b1))
      return u.astype(g.dtype), _tree.ema(m_, g_, b2).astype(m.dtype)

    updates, mu = _tree.map_leaves(leaf, 2, updates, state.mu)
    return updates, ScaleByLionState(count=_tree.safe_increment(state.count), mu=mu)

  return GradientTransformation(init, update)


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    weight_decay: jax.typing.ArrayLike = 1e-3,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> GradientTransformation:
  r"""Lion (Chen et al., 2023): the sign of interpolated momentum, with decoupled weight decay.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``weight_decay`` is
  :math:`\lambda`. At step :math:`t = 1, 2, \dots` with :math:`m_0 = 0`:

  .. math::
    \begin{aligned}
    c_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    \theta_t &= \theta_{t-1} - \eta_t \bigl(\operatorname{sign}(c_t) + \lambda\, \theta_{t-1}\bigr) \\
    m_t &= \beta_2 m_{t-1} + (1 - \beta_2)\, g_t
    \end{aligned}

  For complex parameters :math:`\operatorname{sign}(c) = c / |c|` (0 at 0).

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      1e-4 (the paper advises 3-10x smaller than AdamW's).
{args}
    weight_decay: :math:`\lambda`, >= 0 (default 1e-3, optax's; the paper advises 3-10x larger than AdamW's).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_lion(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.lion(learning_rate=1e-4, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_, NeurIPS 2023
    (Algorithm 2).

  .. warning::
    * ``torch.optim`` has no Lion. optax's ``scale_by_lion`` also offers smoothed signs (``mode="smooth"``,
      ``"refined"``), which are not part of the paper and not offered here.
    * optax's ``lion`` takes ``mu_dtype`` as its fourth positional argument; here ``weight_decay`` is fourth and
      ``mu_dtype`` is keyword-only, as in every adamx optimizer.
  """
  fn = "lion"
  _checks.check_interval(fn, "b1", b1, 0.0, 1.0)
  _checks.check_interval(fn, "b2", b2, 0.0, 1.0)
  _checks.canonicalize_dtype(fn, "mu_dtype", mu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_lion(b1, b2, mu_dtype=mu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_lion, lion, args=_ARGS)
