"""LaProp: ``scale_by_laprop`` and the ``laprop`` optimizer.

Use LaProp where Adam is unstable because ``b1`` and ``b2`` are mismatched (``b1 > sqrt(b2)``, or a small ``b2``):
it divides each gradient by the root of the second moment first and only then averages it into the momentum, which
the paper (Ziyin, Wang & Ueda 2020) shows decouples momentum from adaptivity, so that every ``b1``, ``b2`` in [0, 1)
gives a bounded step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay

_ARGS = """\
    b1: :math:`\\beta_1` (the paper's :math:`\\mu`), decay of the momentum of the normalised gradients, in [0, 1).
    b2: :math:`\\beta_2` (the paper's :math:`\\nu`), decay of the second moment (the EMA of squared gradients), in
      [0, 1).
    eps: :math:`\\epsilon`, added to the denominator outside the square root, >= 0; default 1e-15, the authors'.
    eps_root: :math:`\\epsilon_\\text{root}`, added inside the square root, >= 0 (not in the paper; 0 is the
      paper); a small positive value keeps the gradient of the update finite when it is differentiated through.
    mu_dtype: dtype of the momentum (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision). ``jnp.bfloat16`` halves its memory.
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype)."""


class ScaleByLapropState(NamedTuple):
  """State of :func:`scale_by_laprop`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating
  mu: Updates  # momentum m_t of the normalised gradients (not bias-corrected), mu_dtype
  nu: Updates  # second moment n_t (not bias-corrected), real, nu_dtype


def scale_by_laprop(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-15,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Replace updates by LaProp's bias-corrected momentum of normalised gradients (no learning rate, no sign flip).

  The transform behind :func:`adamx.laprop`, whose docstring gives the update rule.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByLapropState`.
  """
  fn = "scale_by_laprop"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)

  def init(params):
    return ScaleByLapropState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v):
      g_, m_ = _common.upcast(g, m, v)
      rdt = _tree.real_dtype(g_.dtype)
      c_m, c_n, _ = corrections(rdt)
      # Ziyin et al. 2020, Algorithm 1: n_t = nu n_{t-1} + (1 - nu) g_t^2
      v_new = _tree.ema(v.astype(rdt), _tree.abs_sq(g_), b2)
      # m_t = mu m_{t-1} + (1 - mu) g_t / (sqrt(n_t / c_n) + eps), c_n = 1 - nu^t. Departure: eps_root inside the
      # root (0, the paper, by default).
      m_new = _tree.ema(m_, g_ / (jnp.sqrt(v_new / c_n + eps_root) + eps), b1)
      # theta_{t+1} = theta_t - eta_t m_t / c_m, c_m = 1 - mu^t (the learning rate is applied by the chain).
      u = m_new / c_m
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByLapropState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def laprop(
    learning_rate: ScalarOrSchedule = 4e-4,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-15,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""LaProp (Ziyin, Wang & Ueda, 2020): momentum over RMSProp-normalised gradients, with decoupled weight decay.

  Adam averages raw gradients and then divides by the root of the second moment, so momentum and adaptivity are
  coupled: for :math:`\beta_1 > \sqrt{\beta_2}` its step can grow without bound after a gradient spike (the momentum
  outlives the second moment). LaProp normalises each gradient first and then averages, so every step is at most
  :math:`\eta_t / \sqrt{1 - \beta_2}` per coordinate, for every :math:`\beta_1, \beta_2` in [0, 1). Use it in place
  of Adam/AdamW when Adam is unstable, or to use a small :math:`\beta_2`.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2` (the paper's :math:`\mu,\nu`),
  ``eps``/``eps_root`` are :math:`\epsilon, \epsilon_\text{root}`, ``weight_decay`` is :math:`\lambda` (decoupled, as
  AdamW). At step :math:`t = 1, 2, \dots` with gradient :math:`g_t` and :math:`m_0 = n_0 = 0`:

  .. math::
    \begin{aligned}
    n_t &= \beta_2 n_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\,
      \frac{g_t}{\sqrt{n_t / (1 - \beta_2^t) + \epsilon_\text{root}} + \epsilon} \\
    \theta_t &= \theta_{t-1} - \eta_t \Bigl(\frac{m_t}{1 - \beta_1^t} + \lambda\, \theta_{t-1}\Bigr)
    \end{aligned}

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default 4e-4,
      the authors'.
{args}
    weight_decay: :math:`\lambda`, decoupled weight decay (as :func:`adamx.adamw`), >= 0; default 0, the authors'.
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_laprop(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.laprop(learning_rate=1e-2, b1=0.99, b2=0.9)  # b1 > sqrt(b2): unbounded for Adam, fine here
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Ziyin, Wang & Ueda, `LaProp: Separating Momentum and Adaptivity in Adam <https://arxiv.org/abs/2002.04839>`_,
    arXiv 2020 (Algorithm 1; `the authors' code <https://github.com/Z-T-WANG/LaProp-Optimizer>`_).

  .. warning::
    * Neither optax nor ``torch.optim`` has LaProp: adamx is checked against a float64 transcription of the paper
      and, in the registry, against the optax composition ``chain(scale_by_rms(decay=b2, eps=eps,
      eps_in_sqrt=False, bias_correction=True), ema(b1, debias=True))``, which is the same algorithm.
    * The authors' code keeps the learning rate inside the momentum (it averages :math:`\eta_k \hat g_k` and divides
      by the average of :math:`\eta_k`); adamx, like the paper's Algorithm 1, applies :math:`\eta_t` to the
      bias-corrected momentum. The two agree for a constant learning rate and differ under a schedule.
    * The authors' ``weight_decay`` multiplies the *updated* parameters by :math:`1 - \lambda` and is not scaled
      by the learning rate; adamx's is AdamW's :math:`\eta_t \lambda \theta_{t-1}`. Pass ``weight_decay =
      lambda_authors / learning_rate`` to reproduce theirs (up to a term of order :math:`\lambda` times the step).
      Their ``amsgrad`` and ``centered`` options are not part of the paper's algorithm and are not offered.
    * Complex parameters: one real second moment :math:`|g|^2` per entry, as :func:`adamx.adam`. Bias correction is
      computed as in :func:`adamx.adam`.
  """
  fn = "laprop"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_laprop(b1, b2, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_laprop, laprop, args=_ARGS)
