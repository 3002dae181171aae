"""Yogi: ``scale_by_yogi`` and the ``yogi`` optimizer.

Yogi changes Adam's second-moment update from an EMA to an additive step of size :math:`(1 - \\beta_2) g_t^2`
whose sign follows :math:`g_t^2 - v_{t-1}`, so the effective learning rate cannot grow quickly when gradients
suddenly shrink. Use it where Adam's steps blow up when gradients become small or sparse; the paper (Zaheer et
al. 2018) reports better results than Adam on several tasks with little tuning. Nothing here measures a speed-up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate

_ARGS = """\
    b1: :math:`\\beta_1`, decay of the first moment (the EMA of gradients), in [0, 1).
    b2: :math:`\\beta_2`, in [0, 1): the second moment moves by :math:`(1 - \\beta_2) |g_t|^2` per step.
    eps: :math:`\\epsilon`, added to the denominator outside the square root, >= 0 (default 1e-3, the paper's).
    eps_root: :math:`\\epsilon_\\text{root}`, added inside the square root, >= 0.
    initial_accumulator_value: :math:`v_0` (and :math:`m_0`, as optax), >= 0 (default 1e-6, the paper's).
    bias_correction: divide by :math:`1 - \\beta_1^t` and :math:`1 - \\beta_2^t` as optax does (default); ``False``
      is the paper's Algorithm 2, which has no bias correction.
    mu_dtype: dtype of the first moment (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision).
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype)."""


class ScaleByYogiState(NamedTuple):
  """State of :func:`scale_by_yogi`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # second moment v_t, real, nu_dtype


def scale_by_yogi(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-3,
    eps_root: jax.typing.ArrayLike = 0.0,
    initial_accumulator_value: jax.typing.ArrayLike = 1e-6,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by Yogi's moments (no learning rate, no sign flip).

  The transform behind :func:`adamx.yogi`, whose docstring gives the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByYogiState`.
  """
  fn = "scale_by_yogi"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  v0 = _checks.check_non_negative(fn, "initial_accumulator_value", initial_accumulator_value)
  _checks.check_bool(fn, "bias_correction", bias_correction)

  def init(params):
    count, mu, nu = _common.init_moments(fn, params, mu_dtype, nu_dtype)
    fill = lambda z: (z + jnp.asarray(v0, _tree.real_dtype(z.dtype))).astype(z.dtype)  # noqa: E731
    return ScaleByYogiState(count=count, mu=jax.tree.map(fill, mu), nu=jax.tree.map(fill, nu))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v):
      g_, m_ = _common.upcast(g, m, v)
      rdt = _tree.real_dtype(g_.dtype)
      m_new = _tree.ema(m_, g_, b1)
      g2, v_ = _tree.abs_sq(g_), v.astype(rdt)
      # Zaheer et al. 2018, Algorithm 2: v_t = v_{t-1} - (1 - b2) sign(v_{t-1} - g_t^2) g_t^2.
      v_new = v_ - (1 - b2) * jnp.sign(v_ - g2) * g2
      if bias_correction:
        bc1, bc2, _ = corrections(rdt)
        u = (m_new / bc1) / (jnp.sqrt(v_new / bc2 + eps_root) + eps)
      else:
        u = m_new / (jnp.sqrt(v_new + eps_root) + eps)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByYogiState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def yogi(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-3,
    eps_root: jax.typing.ArrayLike = 0.0,
    initial_accumulator_value: jax.typing.ArrayLike = 1e-6,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""Yogi (Zaheer et al., 2018): Adam whose second moment moves additively, in the direction of :math:`g_t^2`.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps``/``eps_root`` are
  :math:`\epsilon, \epsilon_\text{root}`, ``initial_accumulator_value`` is :math:`v_0`. At step
  :math:`t = 1, 2, \dots` with :math:`m_0 = v_0`:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &= v_{t-1} - (1 - \beta_2)\, \operatorname{sign}\bigl(v_{t-1} - |g_t|^2\bigr)\, |g_t|^2 \\
    \theta_t &= \theta_{t-1} - \eta_t\, \frac{m_t / (1 - \beta_1^t)}
      {\sqrt{v_t / (1 - \beta_2^t) + \epsilon_\text{root}} + \epsilon}
    \end{aligned}

  With ``bias_correction=False`` (the paper's Algorithm 2) the last line is
  :math:`\theta_t = \theta_{t-1} - \eta_t\, m_t / (\sqrt{v_t + \epsilon_\text{root}} + \epsilon)`.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      0.01, the paper's.
{args}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_yogi(...), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.yogi(learning_rate=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Zaheer et al., `Adaptive Methods for Nonconvex Optimization
    <https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization>`_, NeurIPS 2018
    (Algorithm 2).

  .. warning::
    * optax (and adamx by default) bias-correct both moments and start the *first* moment at
      ``initial_accumulator_value`` too, which adds :math:`\beta_1^t v_0` to :math:`m_t`; the paper has no bias
      correction (``bias_correction=False``).
    * ``torch.optim`` has no Yogi. Complex parameters: :math:`|g_t|^2`, one real :math:`v_t` per complex entry.
  """
  fn = "yogi"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_non_negative(fn, "initial_accumulator_value", initial_accumulator_value)
  _checks.check_bool(fn, "bias_correction", bias_correction)
  _common.validate_optimizer(fn, learning_rate, 0.0)
  return chain(
      scale_by_yogi(b1, b2, eps, eps_root, initial_accumulator_value, bias_correction=bias_correction,
                    mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_yogi, yogi, args=_ARGS)
