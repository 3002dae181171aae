"""Adamax and AdamaxW: ``scale_by_adamax`` and the ``adamax``, ``adamaxw`` optimizers.

Adamax replaces Adam's root-mean-square denominator by an exponentially decaying infinity norm, so the step of a
coordinate is bounded by the learning rate however small its gradients become; reach for it when gradients are
sparse or heavy-tailed (embeddings), where Adam's second moment can collapse. The paper (Kingma & Ba 2015, Sec. 7.1)
claims it is "surprisingly simple and stable"; nothing here measures a speed-up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay, add_l2_regularization

EPS_MODES = ("max", "denominator")

_ARGS = """\
    b1: :math:`\\beta_1`, decay of the first moment (the EMA of gradients), in [0, 1).
    b2: :math:`\\beta_2`, decay of the infinity norm, in [0, 1).
    eps: :math:`\\epsilon`, >= 0; where it enters is set by ``eps_mode``.
    eps_mode: ``"max"`` (optax and PyTorch): :math:`u_t = \\max(\\beta_2 u_{t-1}, |g_t| + \\epsilon)` and no
      :math:`\\epsilon` in the step; ``"denominator"`` (Keras): :math:`u_t = \\max(\\beta_2 u_{t-1}, |g_t|)` and the
      step divides by :math:`u_t + \\epsilon`.
    mu_dtype: dtype of the first moment (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision).
    nu_dtype: dtype of the infinity norm :math:`u_t` (``None``: the parameter's real dtype)."""


class ScaleByAdamaxState(NamedTuple):
  """State of :func:`scale_by_adamax`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # exponentially weighted infinity norm u_t (torch: exp_inf), real, nu_dtype


def scale_by_adamax(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    eps_mode: str = "max",
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by Adamax's bias-corrected momentum over the infinity norm (no learning rate, no sign flip).

  The transform behind :func:`adamx.adamax` and :func:`adamx.adamaxw`, whose docstrings give the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByAdamaxState`.
  """
  fn = "scale_by_adamax"
  b1, b2, eps, _, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, 0.0, mu_dtype, nu_dtype)
  _checks.check_choice(fn, "eps_mode", eps_mode, EPS_MODES)

  def init(params):
    return ScaleByAdamaxState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, 0.0, count, False)

    def leaf(g, m, u):
      g_, m_ = _common.upcast(g, m, u)
      rdt = _tree.real_dtype(g_.dtype)
      m_new = _tree.ema(m_, g_, b1)
      decayed = b2 * u.astype(rdt)
      c1 = corrections(rdt)[0]
      if eps_mode == "max":
        # Kingma & Ba 2015, Algorithm 2 has u_t = max(b2 u_{t-1}, |g_t|) and no eps; optax and PyTorch put eps
        # inside the max, which keeps u_t > 0 (and the division defined) when a gradient is exactly zero.
        u_new = jnp.maximum(decayed, jnp.abs(g_) + eps)
        step = (m_new / c1) / u_new
      else:
        u_new = jnp.maximum(decayed, jnp.abs(g_))
        step = (m_new / c1) / (u_new + eps)
      return step.astype(g.dtype), m_new.astype(m.dtype), u_new.astype(u.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamaxState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    eps_mode: str = "max",
    weight_decay: jax.typing.ArrayLike = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""Adamax (Kingma & Ba, 2015, Section 7.1): Adam with the infinity norm in place of the second moment.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps`` is :math:`\epsilon`,
  ``weight_decay`` is :math:`\lambda` (coupled L2, as ``torch.optim.Adamax``; for decoupled decay use
  :func:`adamx.adamaxw`). At step :math:`t = 1, 2, \dots` with :math:`m_0 = u_0 = 0`, with ``eps_mode="max"``:

  .. math::
    \begin{aligned}
    g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    u_t &= \max\bigl(\beta_2 u_{t-1},\ |g_t| + \epsilon\bigr) \\
    \theta_t &= \theta_{t-1} - \eta_t\, \frac{m_t}{(1 - \beta_1^t)\, u_t}
    \end{aligned}

  With ``eps_mode="denominator"`` the last two lines are :math:`u_t = \max(\beta_2 u_{t-1}, |g_t|)` and
  :math:`\theta_t = \theta_{t-1} - \eta_t\, m_t / \bigl((1 - \beta_1^t)(u_t + \epsilon)\bigr)`. The paper's
  Algorithm 2 is either form with :math:`\epsilon = 0`. The infinity norm needs no bias correction.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      0.002, the paper's (and PyTorch's).
{args}
    weight_decay: :math:`\lambda`, coupled L2 added to the gradient before the moments, >= 0.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(add_l2_regularization(weight_decay), scale_by_adamax(...),
    scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.adamax(learning_rate=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization <https://arxiv.org/abs/1412.6980>`_, ICLR 2015
    (Algorithm 2).

  .. warning::
    * optax's ``adamax`` and ``torch.optim.Adamax`` both use ``eps_mode="max"`` (the default); Keras's ``Adamax``
      is ``"denominator"``. With ``eps = 0`` a coordinate whose gradients have all been exactly zero divides
      0 by 0 in either form, as in optax and PyTorch.
    * Complex parameters: :math:`|g_t|` is the modulus (one norm per complex entry, as optax); PyTorch takes the
      real and imaginary parts separately (``view_as_real``).
  """
  fn = "adamax"
  _common.validate(fn, b1, b2, eps, 0.0, mu_dtype, nu_dtype)
  _checks.check_choice(fn, "eps_mode", eps_mode, EPS_MODES)
  _common.validate_optimizer(fn, learning_rate, weight_decay)
  return chain(
      add_l2_regularization(weight_decay),
      scale_by_adamax(b1, b2, eps, eps_mode=eps_mode, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


def adamaxw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    *,
    mask: Mask = None,
    eps_mode: str = "max",
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""AdamaxW: Adamax with decoupled weight decay (Loshchilov & Hutter, 2019), as ``optax.adamaxw``.

  Symbols as in :func:`adamx.adamax`; the update rule is Adamax's with no :math:`\lambda` term in :math:`g_t` and
  the last line replaced by

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \Bigl( \frac{m_t}{(1 - \beta_1^t)\, u_t} + \lambda\, \theta_{t-1} \Bigr)

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, >= 0 (default ``1e-4``, optax's).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_adamax(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import adamx
    >>> tx = adamx.adamaxw(learning_rate=2e-3, weight_decay=1e-2)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization <https://arxiv.org/abs/1412.6980>`_, ICLR 2015
    (Algorithm 2); Loshchilov & Hutter, `Decoupled Weight Decay Regularization <https://arxiv.org/abs/1711.05101>`_,
    ICLR 2019.

  .. warning::
    PyTorch has no decoupled Adamax. ``eps_mode`` and complex parameters as in :func:`adamx.adamax`.
  """
  fn = "adamaxw"
  _common.validate(fn, b1, b2, eps, 0.0, mu_dtype, nu_dtype)
  _checks.check_choice(fn, "eps_mode", eps_mode, EPS_MODES)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_adamax(b1, b2, eps, eps_mode=eps_mode, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_adamax, adamax, adamaxw, args=_ARGS)
