"""RAdam: ``scale_by_radam`` and the ``radam`` optimizer.

Rectified Adam turns the adaptive step off while the second-moment estimate rests on too few gradients to be
trusted (an un-adapted momentum step instead), then phases it in with a rectification factor. Use it to train
without a learning-rate warmup; the paper (Liu et al. 2020) reports that it removes the need for warmup and is more
robust to the choice of learning rate. Nothing here measures a speed-up.
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
from adamx.transforms._weight_decay import add_decoupled_weight_decay, add_l2_regularization

_THRESHOLD = """\
    threshold: rectify (adapt) once :math:`\\rho_t \\ge` ``threshold``, a number >= 4 (the rectification factor is
      real only for :math:`\\rho_t \\ge 4`); default 5, the authors' code, optax and PyTorch (the paper's text
      says 4); ``inf`` never adapts.
    nesterov: use Dozat's Nesterov momentum for :math:`\\hat m_t` (as optax's ``radam(nesterov=True)``)."""


class ScaleByRadamState(NamedTuple):
  """State of :func:`scale_by_radam`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # second moment v_t, real, nu_dtype


def _series_cutoff(dtype: Any) -> float:
  """Where :func:`_coth_minus_inv`'s series stops being accurate to the dtype: its first omitted term is
  ``6.5e-6 y^10`` relative, 6e-9 at 0.5 (enough for float32); float64 needs ``y < 0.089``."""
  return min(0.5, (float(jnp.finfo(dtype).eps) / 6.5e-6) ** 0.1)


def _coth_minus_inv(y: jax.Array) -> jax.Array:
  """``coth(y) - 1/y`` for small ``y >= 0`` by its Laurent series, up to the ``y^9`` term."""
  y2 = y * y
  return y * (1 / 3 + y2 * (-1 / 45 + y2 * (2 / 945 + y2 * (-1 / 4725 + y2 * (2 / 93555)))))


def rho(b2: Any, count: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
  r"""``(rho_inf, rho_t)``: the maximum and the step-``t`` length of the approximated simple moving average.

  :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)` subtracts two numbers close to
  :math:`2 / (1 - \beta_2)` while :math:`t (1 - \beta_2)` is small (about 2,000 at :math:`\beta_2 = 0.999`) to
  get a number near 5, so computed as written in float32 (optax's case) it has a relative error of up to 2e-3 at
  :math:`\beta_2 = 0.999` and 0.16 at 0.9999 in the steps where :math:`\rho_t \ge 4`. There, with
  :math:`L = -\log \beta_2`, :math:`y = tL/2` and :math:`f(y) = \coth y - 1/y`, the identity
  :math:`\rho_t = t + f(L/2) - t\, f(y)` is free of the cancellation (evaluated by a series, below
  :math:`y = 1/2` in float32 and :math:`y = 0.089` in float64); above, the formula as written loses less than a
  factor 3 (float32) or 12 (float64). Measured: at most 3.5e-7 relative in float32 and 1e-14 in float64 for ``b2``
  from 0.9 to 0.99999 (``tests/test_classic.py`` checks these and optax's error).
  """
  t = count.astype(dtype)
  x = _checks.concrete_number(b2)
  if x is not None:  # exact constants from the Python number
    log_b2 = -math.inf if x == 0 else math.log(x)
    rho_inf = jnp.asarray(2 / (1 - x) - 1, dtype)
  else:
    log_b2 = jnp.log(jnp.asarray(b2, dtype))
    rho_inf = 2 / (1 - jnp.asarray(b2, dtype)) - 1
  y = -log_b2 * t / 2
  small = y < _series_cutoff(dtype)
  ys, yl = jnp.where(small, y, 0), jnp.where(small, 1, y)  # each branch sees only arguments it is accurate for
  cancelled = t + _coth_minus_inv(jnp.asarray(-log_b2 / 2, dtype) * small) - t * _coth_minus_inv(ys)
  direct = rho_inf - 2 * t * jnp.exp(-2 * yl) / -jnp.expm1(-2 * yl)
  return rho_inf, jnp.where(small, cancelled, direct)


def scale_by_radam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    threshold: jax.typing.ArrayLike = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by RAdam's rectified moments (no learning rate, no sign flip).

  The transform behind :func:`adamx.radam`, whose docstring gives the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByRadamState`.
  """
  fn = "scale_by_radam"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  threshold = _checks.check_at_least(fn, "threshold", threshold, 4.0)
  _checks.check_bool(fn, "nesterov", nesterov)

  def init(params):
    return ScaleByRadamState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, nesterov)
    cache: dict = {}

    def rectification(rdt):
      if rdt not in cache:
        rho_inf, rho_t = rho(b2, count, rdt)
        adapt = rho_t >= threshold
        # Liu et al. 2020, Algorithm 2: r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)).
        # The double where keeps the branch that is not taken (where the ratio may be negative) out of the gradient.
        ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / jnp.where(adapt, (rho_inf - 4) * (rho_inf - 2) * rho_t, 1)
        cache[rdt] = adapt, jnp.sqrt(jnp.where(adapt, ratio, 1))
      return cache[rdt]

    def leaf(g, m, v):
      g_, m_new, v_new = _common.moments(g, m, v, b1, b2)
      rdt = v_new.dtype
      bc1, bc2, bc1_next = corrections(rdt)
      adapt, r = rectification(rdt)
      m_hat = _common.first_moment_hat(g_, m_new, b1, bc1, bc1_next)
      # While the variance is intractable (rho_t < threshold) the step is the un-adapted momentum m_hat.
      u = jnp.where(adapt, r * m_hat / (jnp.sqrt(v_new / bc2 + eps_root) + eps), m_hat)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByRadamState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    threshold: jax.typing.ArrayLike = 5.0,
    *,
    nesterov: bool = False,
    weight_decay: jax.typing.ArrayLike = 0.0,
    decoupled_weight_decay: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""RAdam (Liu et al., 2020): Adam whose adaptive step is switched on, and rectified, once it can be trusted.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``threshold`` is :math:`\tau`,
  ``weight_decay`` is :math:`\lambda`. At step :math:`t = 1, 2, \dots` with :math:`m_0 = v_0 = 0` and
  :math:`\rho_\infty = 2 / (1 - \beta_2) - 1`:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \hat m_t &= m_t / (1 - \beta_1^t), \qquad
      \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
    \theta_t &= \theta_{t-1} - \eta_t \begin{cases}
      r_t\, \hat m_t / \bigl(\sqrt{v_t / (1 - \beta_2^t) + \epsilon_\text{root}} + \epsilon\bigr) &
        \rho_t \ge \tau, \quad r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
        {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
      \hat m_t & \rho_t < \tau
    \end{cases}
    \end{aligned}

  With ``nesterov=True``, :math:`\hat m_t` is Dozat's form (see :func:`adamx.adam`). With ``weight_decay``,
  :math:`g_t \leftarrow g_t + \lambda \theta_{t-1}` first (coupled L2, PyTorch's default), or with
  ``decoupled_weight_decay=True`` :math:`\eta_t \lambda \theta_{t-1}` is subtracted from the step (AdamW's decay,
  ``torch.optim.RAdam(decoupled_weight_decay=True)``).

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, >= 0.
    decoupled_weight_decay: apply ``weight_decay`` as decoupled (AdamW) decay instead of coupled L2.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(add_l2_regularization(weight_decay), scale_by_radam(...),
    scale_by_learning_rate(learning_rate))``, or with ``decoupled_weight_decay=True``
    ``chain(scale_by_radam(...), add_decoupled_weight_decay(weight_decay), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.radam(learning_rate=1e-3)  # no warmup needed
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond <https://arxiv.org/abs/1908.03265>`_,
    ICLR 2020 (Algorithm 2).

  .. warning::
    * :math:`\rho_t` is computed without float32 cancellation; optax computes it as written in float32, with a
      relative error of up to 2e-3 at :math:`\beta_2 = 0.999` (0.16 at 0.9999) in its first rectified steps, which
      changes those steps by up to ~1% (PyTorch computes it in float64, as accurately as adamx).
    * PyTorch adapts when :math:`\rho_t > 5` (strictly; optax and adamx: :math:`\ge`) and adds :math:`\epsilon` to
      :math:`\sqrt{v_t}` before the bias correction, i.e. divides by :math:`\sqrt{\hat v_t} + \epsilon /
      \sqrt{1 - \beta_2^t}`: a difference of order :math:`\epsilon` relative to :math:`\sqrt{\hat v_t}`.
    * Complex parameters and bias correction differ from PyTorch/optax as described in :func:`adamx.adam`.
  """
  fn = "radam"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_at_least(fn, "threshold", threshold, 4.0)
  _checks.check_bool(fn, "nesterov", nesterov)
  _checks.check_bool(fn, "decoupled_weight_decay", decoupled_weight_decay)
  _common.validate_optimizer(fn, learning_rate, weight_decay)
  scaler = scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
  if decoupled_weight_decay:
    return chain(scaler, add_decoupled_weight_decay(weight_decay), scale_by_learning_rate(learning_rate))
  return chain(add_l2_regularization(weight_decay), scaler, scale_by_learning_rate(learning_rate))


_common.document(scale_by_radam, radam, args=_common.MOMENT_ARGS + "\n" + _THRESHOLD)
