"""AdaBelief: ``scale_by_belief`` and the ``adabelief`` optimizer.

AdaBelief divides the momentum by the root of an EMA of the *prediction error* ``(g_t - m_t)^2`` instead of
``g_t^2``: a gradient that agrees with the momentum ("belief") gets a large step, a surprising one a small step.
Use it as a drop-in for Adam; the paper (Zhuang et al. 2020) claims Adam's fast convergence with SGD's
generalization and stable GAN training. Nothing here measures a speed-up.
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
    b2: :math:`\\beta_2`, decay of the EMA of the squared prediction error, in [0, 1).
    eps: :math:`\\epsilon`, added to the denominator outside the square root, >= 0 (default 1e-16, the paper's).
    eps_root: :math:`\\epsilon_\\text{root}`, added to :math:`s_t` at every step (the paper's :math:`\\epsilon` in
      the :math:`s_t` line, so it accumulates in the state), >= 0.
    nesterov: use Dozat's Nesterov momentum for :math:`\\hat m_t` (as optax's ``adabelief(nesterov=True)``).
    mu_dtype: dtype of the first moment (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision).
    nu_dtype: dtype of :math:`s_t` (``None``: the parameter's real dtype)."""


class ScaleByBeliefState(NamedTuple):
  """State of :func:`scale_by_belief`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # s_t, the EMA of |g_t - m_t|^2 plus eps_root, real, nu_dtype


def scale_by_belief(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by AdaBelief's moments (no learning rate, no sign flip); optax's name for it.

  The transform behind :func:`adamx.adabelief`, whose docstring gives the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByBeliefState`.
  """
  fn = "scale_by_belief"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_bool(fn, "nesterov", nesterov)

  def init(params):
    return ScaleByBeliefState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, nesterov)

    def leaf(g, m, s):
      g_, m_ = _common.upcast(g, m, s)
      rdt = _tree.real_dtype(g_.dtype)
      m_new = _tree.ema(m_, g_, b1)
      # Zhuang et al. 2020, Algorithm 2: s_t = b2 s_{t-1} + (1 - b2)(g_t - m_t)^2 + eps.
      s_new = _tree.ema(s.astype(rdt), _tree.abs_sq(g_ - m_new), b2) + eps_root
      bc1, bc2, bc1_next = corrections(rdt)
      m_hat = _common.first_moment_hat(g_, m_new, b1, bc1, bc1_next)
      u = m_hat / (jnp.sqrt(s_new / bc2) + eps)
      return u.astype(g.dtype), m_new.astype(m.dtype), s_new.astype(s.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByBeliefState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def adabelief(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""AdaBelief (Zhuang et al., 2020): Adam with the variance of the gradient around its EMA as the denominator.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps``/``eps_root`` are
  :math:`\epsilon, \epsilon_\text{root}`. At step :math:`t = 1, 2, \dots` with :math:`m_0 = s_0 = 0`:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    s_t &= \beta_2 s_{t-1} + (1 - \beta_2)\, |g_t - m_t|^2 + \epsilon_\text{root} \\
    \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat s_t = s_t / (1 - \beta_2^t) \\
    \theta_t &= \theta_{t-1} - \eta_t\, \hat m_t / \bigl(\sqrt{\hat s_t} + \epsilon\bigr)
    \end{aligned}

  With ``nesterov=True``, :math:`\hat m_t` is Dozat's form (see :func:`adamx.adam`).

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_belief(...), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.adabelief(learning_rate=1e-3)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients
    <https://arxiv.org/abs/2010.07468>`_, NeurIPS 2020 (Algorithm 2).

  .. warning::
    * ``torch.optim`` has no AdaBelief. The authors' own package (``adabelief-pytorch``) has options that adamx and
      optax lack (rectification, AMSGrad); for weight decay chain :func:`adamx.add_decoupled_weight_decay`.
    * The paper's :math:`\epsilon` appears twice (in :math:`s_t` and in the denominator); adamx and optax name the
      first ``eps_root``. Complex parameters: :math:`|g_t - m_t|^2`, one real :math:`s_t` per complex entry.
  """
  fn = "adabelief"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_bool(fn, "nesterov", nesterov)
  _common.validate_optimizer(fn, learning_rate, 0.0)
  return chain(
      scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_belief, adabelief, args=_ARGS)
