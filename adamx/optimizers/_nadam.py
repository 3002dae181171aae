"""NAdam and NAdamW: ``scale_by_nadam`` and the ``nadam``, ``nadamw`` optimizers.

NAdam is Adam with Nesterov momentum: the step looks ahead with the next step's momentum. Use it where Adam works
and you want the faster early progress Nesterov momentum gives; the paper (Dozat 2016) reports faster convergence
than Adam on word2vec and language models. Nothing here measures a speed-up.

Two conventions are in use, selected by ``momentum_decay``: optax's ``nadam`` keeps the momentum constant (Dozat's
simplification, ``momentum_decay=None``, the default), ``torch.optim.NAdam`` warms it up with Dozat's schedule
:math:`\\mu_t = \\beta_1 (1 - \\tfrac12\\, 0.96^{t\\psi})` (``momentum_decay=4e-3``, PyTorch's value).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay, add_l2_regularization

_MOMENTUM_DECAY = """\
    momentum_decay: :math:`\\psi`. ``None`` (optax's ``nadam``): a constant momentum :math:`\\mu_t = \\beta_1`;
      a number >= 0 (``torch.optim.NAdam``, which uses 4e-3): Dozat's schedule
      :math:`\\mu_t = \\beta_1 (1 - \\tfrac12\\, 0.96^{t\\psi})`."""

_LOG_096 = math.log(0.96)


class ScaleByNadamState(NamedTuple):
  """State of :func:`scale_by_nadam`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # second moment v_t, real, nu_dtype
  mu_product: jax.Array  # prod_{i <= t} mu_i (torch: mu_product), a float scalar (float64 under x64)


def _schedule(b1: Any, psi: Any, t: jax.Array) -> jax.Array:
  """Dozat's momentum schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))``."""
  return b1 * (1 - 0.5 * jnp.exp(t * psi * _LOG_096))


def scale_by_nadam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    momentum_decay: jax.typing.ArrayLike | None = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by NAdam's Nesterov-corrected moments (no learning rate, no sign flip).

  The transform behind :func:`adamx.nadam` and :func:`adamx.nadamw`, whose docstrings give the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByNadamState`.
  """
  fn = "scale_by_nadam"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  psi = _checks.check_optional_non_negative(fn, "momentum_decay", momentum_decay)

  def init(params):
    count, mu, nu = _common.init_moments(fn, params, mu_dtype, nu_dtype)
    return ScaleByNadamState(count=count, mu=mu, nu=nu, mu_product=jnp.ones([], float))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, psi is None)
    pdt = state.mu_product.dtype
    if psi is None:
      mu_product = state.mu_product * jnp.asarray(b1, pdt)
    else:
      t = count.astype(pdt)
      mu_t, mu_next = _schedule(b1, psi, t), _schedule(b1, psi, t + 1)
      mu_product = state.mu_product * mu_t
      # Dozat 2016, Algorithm 2: m_hat = mu_{t+1} m_t / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g_t / (1 - prod_{i<=t}).
      coef_m, coef_g = mu_next / (1 - mu_product * mu_next), (1 - mu_t) / (1 - mu_product)

    def leaf(g, m, v):
      g_, m_new, v_new = _common.moments(g, m, v, b1, b2)
      rdt = v_new.dtype
      _, bc2, bc1_next = corrections(rdt)
      if psi is None:
        # The constant-momentum simplification: Dozat's line with mu_t = b1, whose products are b1^t (optax).
        m_hat = _common.first_moment_hat(g_, m_new, b1, corrections(rdt)[0], bc1_next)
      else:
        m_hat = coef_m.astype(rdt) * m_new + coef_g.astype(rdt) * g_
      u = m_hat / (jnp.sqrt(v_new / bc2 + eps_root) + eps)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByNadamState(count=count, mu=mu, nu=nu, mu_product=mu_product.astype(pdt))

  return GradientTransformation(init, update)


_RULE = r"""
  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \hat m_t &= \frac{\mu_{t+1}\, m_t}{1 - \prod_{i=1}^{t+1} \mu_i} + \frac{(1 - \mu_t)\, g_t}{1 - \prod_{i=1}^{t}
      \mu_i}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t} \\
    \theta_t &= \theta_{t-1} - \eta_t\, \hat m_t / \bigl(\sqrt{\hat v_t + \epsilon_\text{root}} + \epsilon\bigr)
    \end{aligned}

  with :math:`\mu_t = \beta_1` (``momentum_decay=None``: the products are :math:`\beta_1^t`, and this is
  ``optax.nadam``, i.e. ``adam(nesterov=True)``) or :math:`\mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t\psi})`
  (``momentum_decay=psi``: ``torch.optim.NAdam``)."""


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    momentum_decay: jax.typing.ArrayLike | None = None,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""NAdam (Dozat, 2016): Adam with Nesterov momentum.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``momentum_decay`` is
  :math:`\psi`, ``weight_decay`` is :math:`\lambda` (coupled L2 added to :math:`g_t` first, as
  ``torch.optim.NAdam``; for decoupled decay use :func:`adamx.nadamw`). At step :math:`t = 1, 2, \dots` with
  :math:`m_0 = v_0 = 0`:
{rule}

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      0.002, the paper's (and PyTorch's).
{args}
    weight_decay: :math:`\lambda`, coupled L2 added to the gradient before the moments, >= 0.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(add_l2_regularization(weight_decay), scale_by_nadam(...),
    scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import adamx
    >>> tx = adamx.nadam(learning_rate=2e-3)                        # optax.nadam's numbers
    >>> tx_torch = adamx.nadam(learning_rate=2e-3, momentum_decay=4e-3)  # torch.optim.NAdam's numbers

  References:
    Dozat, `Incorporating Nesterov Momentum into Adam <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_,
    ICLR workshop 2016 (Algorithm 2); Kingma & Ba, `Adam <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.

  .. warning::
    * optax's ``nadam`` is ``momentum_decay=None`` (the default); ``torch.optim.NAdam`` is ``momentum_decay=4e-3``.
      PyTorch keeps :math:`\prod \mu_i` as a float32 tensor; adamx keeps it as ``mu_product`` in the state.
    * Complex parameters and bias correction differ from PyTorch/optax as described in :func:`adamx.adam`.
  """
  fn = "nadam"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_optional_non_negative(fn, "momentum_decay", momentum_decay)
  _common.validate_optimizer(fn, learning_rate, weight_decay)
  return chain(
      add_l2_regularization(weight_decay),
      scale_by_nadam(b1, b2, eps, eps_root, momentum_decay=momentum_decay, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


def nadamw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    *,
    mask: Mask = None,
    momentum_decay: jax.typing.ArrayLike | None = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""NAdamW: NAdam with decoupled weight decay (``optax.nadamw``, ``torch.optim.NAdam(decoupled_weight_decay=True)``).

  Symbols as in :func:`adamx.nadam`; no :math:`\lambda` term in :math:`g_t`, and the last line is
  :math:`\theta_t = \theta_{t-1} - \eta_t \bigl(\hat m_t / (\sqrt{\hat v_t + \epsilon_\text{root}} + \epsilon)
  + \lambda\, \theta_{t-1}\bigr)`, where
{rule}

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, >= 0 (default ``1e-4``, optax's).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_nadam(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import adamx
    >>> tx = adamx.nadamw(learning_rate=2e-3, weight_decay=1e-2, momentum_decay=4e-3)

  References:
    Dozat, `Incorporating Nesterov Momentum into Adam <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_,
    ICLR workshop 2016; Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.

  .. warning::
    ``torch.optim.NAdam(decoupled_weight_decay=True)`` defaults to ``weight_decay=0``; optax's and adamx's
    ``nadamw`` to ``1e-4``. ``momentum_decay`` as in :func:`adamx.nadam`.
  """
  fn = "nadamw"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_optional_non_negative(fn, "momentum_decay", momentum_decay)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_nadam(b1, b2, eps, eps_root, momentum_decay=momentum_decay, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


for _f in (nadam, nadamw):
  if _f.__doc__:  # None under python -OO
    _f.__doc__ = _f.__doc__.replace("{rule}\n", _RULE + "\n")
del _f
_common.document(scale_by_nadam, nadam, nadamw, args=_common.MOMENT_ARGS + "\n" + _MOMENTUM_DECAY)
