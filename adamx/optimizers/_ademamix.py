"""AdEMAMix: ``scale_by_ademamix``, the ``ademamix`` optimizer and the paper's two warmup schedules.

AdEMAMix is AdamW whose numerator adds a second, much slower EMA of the gradients to the usual fast one, so that
gradients tens of thousands of steps old still count; reach for it on long runs (the slow EMA needs many steps to
fill) where AdamW is the baseline. The paper (Pagliardini, Ablin & Grangier 2024) reports that a 1.3B-parameter
language model trained with it on 101B tokens matches an AdamW model trained on 197B tokens, and that it forgets
training data more slowly; nothing here measures that.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, Schedule, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay

_ARGS = """\
    b1: :math:`\\beta_1`, decay of the fast EMA of gradients (Adam's first moment), in [0, 1).
    b2: :math:`\\beta_2`, decay of the second moment (the EMA of squared gradients), in [0, 1).
    b3: :math:`\\beta_3`, decay of the slow EMA, in [0, 1): a number, an array, or a schedule ``count -> value``
      such as :func:`adamx.ademamix_b3_schedule` (default 0.9999, the paper's).
    alpha: :math:`\\alpha`, the weight of the slow EMA, >= 0: a number, an array, or a schedule ``count -> value``
      such as :func:`adamx.ademamix_alpha_schedule` (default 5.0; the paper uses 5 or 8).
    eps: :math:`\\epsilon`, added to the denominator outside the square root, >= 0.
    eps_root: :math:`\\epsilon_\\text{root}`, added inside the square root, >= 0 (0 is the paper).
    mu_dtype: dtype of both EMAs of gradients (``None``: the parameter's dtype; complex parameters get the complex
      dtype of that precision). ``jnp.bfloat16`` halves their memory.
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype)."""


class ScaleByAdemamixState(NamedTuple):
  """State of :func:`scale_by_ademamix`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating; the b3 and alpha schedules read it
  mu: Updates  # the fast EMA m1_t (Adam's first moment), mu_dtype
  nu: Updates  # second moment nu_t, real, nu_dtype
  # The slow EMA m2_t, never bias-corrected; mu_dtype. Named ``mu_slow`` (not the paper's m2 or optax's ``m2``) so
  # that every first-moment EMA in adamx is a ``mu*`` field and ``mu``/``nu`` keep their meaning family-wide.
  mu_slow: Updates


def _check_b3(fn: str, b3: Any) -> Any:
  if callable(b3) and not isinstance(b3, jax.Array):
    return b3
  return _checks.check_interval(fn, "b3", b3, 0.0, 1.0)


def _check_alpha(fn: str, alpha: Any) -> Any:
  if callable(alpha) and not isinstance(alpha, jax.Array):
    return alpha
  return _checks.check_non_negative(fn, "alpha", alpha)


def _validate(fn: str, b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype) -> tuple:
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  return b1, b2, _check_b3(fn, b3), _check_alpha(fn, alpha), eps, eps_root, mu_dtype, nu_dtype


def scale_by_ademamix(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by AdEMAMix's mixture of a fast and a slow EMA (no learning rate, no sign flip).

  The transform behind :func:`adamx.ademamix`, whose docstring gives the update rule and the differences from optax
  (whose ``scale_by_ademamix`` defaults to ``alpha=6.0``; here both layers default to 5.0).

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByAdemamixState`.
  """
  fn = "scale_by_ademamix"
  b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype = _validate(fn, b1, b2, b3, alpha, eps, eps_root, mu_dtype,
                                                                   nu_dtype)

  def init(params):
    count, mu, nu = _common.init_moments(fn, params, mu_dtype, nu_dtype)
    return ScaleByAdemamixState(count=count, mu=mu, nu=nu, mu_slow=_tree.zeros_like(fn, params, mu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    # Pagliardini et al. 2024, Algorithm 1, line 6 evaluates the schedulers at t after line 5's t <- t + 1. Here,
    # as for the learning rate (and in optax and the authors' optax code), a schedule receives the number of earlier
    # updates, t - 1: the paper's indexing is ``lambda count: schedule(count + 1)`` (see the warning of ademamix).
    b3_t = b3(state.count) if callable(b3) else b3
    alpha_t = alpha(state.count) if callable(alpha) else alpha
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v, m_slow):
      # Algorithm 1, lines 9 and 11: the fast EMA m1 and the second moment nu, Adam's.
      g_, m_new, v_new = _common.moments(g, m, v, b1, b2)
      # Line 10: the slow EMA, m2_t = b3_t m2_{t-1} + (1 - b3_t) g_t. For a Python-number b3, 1 - b3 is formed in
      # double precision and rounded to float32 once (see _tree.ema), not computed from a float32 b3.
      m_slow_new = _tree.ema(m_slow.astype(g_.dtype), g_, b3_t)
      bc1, bc2, _ = corrections(v_new.dtype)
      # Line 12: bias corrections of m1 and nu only. The slow EMA is not corrected, as in the paper and optax: it
      # fills over ~1 / (1 - b3) steps, and a correction would give its first gradients the weight of a full EMA.
      # Line 13's step, with eps_root (optax's addition; 0 is the paper) inside the root.
      u = (m_new / bc1 + alpha_t * m_slow_new) / (jnp.sqrt(v_new / bc2 + eps_root) + eps)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype), m_slow_new.astype(m_slow.dtype)

    updates, mu, nu, mu_slow = _tree.map_leaves(leaf, 4, updates, state.mu, state.nu, state.mu_slow)
    return updates, ScaleByAdemamixState(count=count, mu=mu, nu=nu, mu_slow=mu_slow)

  return GradientTransformation(init, update)


def ademamix(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024): AdamW plus a slow EMA of the gradients in the numerator.

  One EMA cannot both follow the recent gradients and remember old ones; AdEMAMix keeps Adam's fast EMA
  :math:`m_1` and adds a slow one, :math:`m_2` (:math:`\beta_3 \approx 0.9999`, a half-life of ~7000 steps), weighted
  by :math:`\alpha`. Use it for long runs; the paper warms :math:`\alpha` and :math:`\beta_3` up over the whole run
  (:func:`adamx.ademamix_alpha_schedule`, :func:`adamx.ademamix_b3_schedule`) to avoid early instabilities.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2``/``b3`` are :math:`\beta_1,\beta_2,\beta_3`, ``alpha`` is
  :math:`\alpha`, ``eps``/``eps_root`` are :math:`\epsilon, \epsilon_\text{root}`, ``weight_decay`` is
  :math:`\lambda` (decoupled, as AdamW). At step :math:`t = 1, 2, \dots` with :math:`m_{1,0} = m_{2,0} = \nu_0 = 0`,
  and :math:`\beta_3(t-1)`, :math:`\alpha(t-1)` the values of ``b3``/``alpha`` (schedules read the count
  :math:`t - 1`):

  .. math::
    \begin{aligned}
    m_{1,t} &= \beta_1 m_{1,t-1} + (1 - \beta_1)\, g_t \\
    m_{2,t} &= \beta_3(t-1)\, m_{2,t-1} + (1 - \beta_3(t-1))\, g_t \\
    \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \hat m_{1,t} &= m_{1,t} / (1 - \beta_1^t), \qquad \hat \nu_t = \nu_t / (1 - \beta_2^t) \\
    \theta_t &= \theta_{t-1} - \eta_t \Bigl( \frac{\hat m_{1,t} + \alpha(t-1)\, m_{2,t}}
      {\sqrt{\hat \nu_t + \epsilon_\text{root}} + \epsilon} + \lambda\, \theta_{t-1} \Bigr)
    \end{aligned}

  (Algorithm 1 of the paper, with :math:`\epsilon_\text{root} = 0` there.) The slow EMA :math:`m_{2,t}` is not
  bias-corrected, by design: it fills slowly, and :math:`\alpha` multiplies it as it is. It is stored as
  ``mu_slow``, :math:`m_1` as ``mu`` and :math:`\nu` as ``nu``.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, decoupled, >= 0 (default 0, optax's and the authors' code's).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_ademamix(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> steps = 100_000  # the paper warms alpha and b3 up over the whole run
    >>> tx = adamx.ademamix(learning_rate=adamx.warmup_cosine_schedule(0.0, 1e-3, 3_000, steps),
    ...                     b3=adamx.ademamix_b3_schedule(0.9999, steps, b3_start=0.9),
    ...                     alpha=adamx.ademamix_alpha_schedule(8.0, steps), weight_decay=0.1)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Pagliardini, Ablin & Grangier, `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, ICLR 2025 (Algorithm 1; the schedulers of Section 3).

  .. warning::
    * Defaults: ``alpha=5.0`` in both ``ademamix`` and ``scale_by_ademamix``. ``optax.contrib.ademamix`` also
      defaults to 5.0, but ``optax.contrib.scale_by_ademamix`` to 6.0 (and the authors' PyTorch class to 2.0); pass
      ``alpha`` explicitly when comparing. ``b3=0.9999`` everywhere. ``mu_dtype`` is keyword-only here (optax's is
      positional, before ``weight_decay``).
    * Schedules for ``b3`` and ``alpha`` are called with the number of earlier updates (0 at the first update), like
      the learning rate, ``optax.contrib.ademamix`` and the authors' optax code; the paper's Algorithm 1 (and the
      authors' PyTorch code) evaluates its schedulers at :math:`t` = that number + 1. The warmup therefore lags the
      paper's by one step; ``b3=lambda count: schedule(count + 1)`` reproduces the paper exactly.
    * An array or scheduled ``b3`` is a float32 value, so :math:`1 - \beta_3` carries a relative error of up to
      :math:`2^{-25} / (1 - \beta_3)` (3e-4 at 0.9999), in adamx and optax alike; for a Python-number ``b3`` it is
      formed in double precision and rounded once (relative error :math:`2^{-24}`).
    * Bias correction is accurate to ~2e-7 in float32 (see :func:`adamx.adam`; optax's ``1 - b**t`` is off by up to
      ~2e-5). optax's ``mu_dtype`` also sets the dtype of ``nu`` and its state is not cast back to it; here
      ``nu_dtype`` is separate and every state leaf keeps its declared dtype.
    * Complex parameters are not in the paper: as in :func:`adamx.adam` (and optax), both EMAs are complex and
      :math:`\nu` is the EMA of :math:`|g|^2`. ``torch.optim`` has no AdEMAMix.
  """
  fn = "ademamix"
  _validate(fn, b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


def ademamix_alpha_schedule(alpha: jax.typing.ArrayLike, warmup_steps: int) -> Schedule:
  r"""The paper's warmup of AdEMAMix's :math:`\alpha`: linear from 0 to ``alpha`` over ``warmup_steps`` steps.

  With :math:`T_\alpha` = ``warmup_steps`` (the paper's :math:`f_\alpha`, Section 3):

  .. math::
    \alpha(t) = \min(t \alpha / T_\alpha,\ \alpha)

  The same numbers as ``adamx.linear_schedule(0.0, alpha, warmup_steps)`` up to float32 rounding.

  Args:
    alpha: the final :math:`\alpha`, >= 0.
    warmup_steps: :math:`T_\alpha`, a non-negative integer (0: the constant ``alpha``); the paper sets it to the
      total number of steps.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array; pass it as
    ``ademamix(alpha=...)``, which calls it with the number of earlier updates.

  Example:
    >>> import adamx
    >>> alpha = adamx.ademamix_alpha_schedule(8.0, warmup_steps=1_000)
    >>> print(f"{alpha(0):.4g} {alpha(250):.4g} {alpha(10**6):.4g}")
    0 2 8

  References:
    Pagliardini, Ablin & Grangier, `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, ICLR 2025 (Section 3, "Schedulers").
  """
  fn = "ademamix_alpha_schedule"
  alpha = _checks.check_non_negative(fn, "alpha", alpha)
  warmup_steps = _checks.check_steps(fn, "warmup_steps", warmup_steps)

  def schedule(count):
    t = jnp.asarray(count, dtype=float)
    if warmup_steps == 0:
      return jnp.full_like(t, alpha)
    return jnp.minimum(t * alpha / warmup_steps, alpha)

  return schedule


def _inv_log(b: Any) -> Any:
  """``1 / log(b)`` (``-0.0`` at ``b = 0``), from the float64 log of a Python number."""
  x = _checks.concrete_number(b)
  if x is not None:
    return 1.0 / math.log(x) if x > 0 else -0.0
  return 1.0 / jnp.log(b)


def ademamix_b3_schedule(b3: jax.typing.ArrayLike, warmup_steps: int,
                         b3_start: jax.typing.ArrayLike = 0.9) -> Schedule:
  r"""The paper's warmup of AdEMAMix's :math:`\beta_3`: from ``b3_start`` to ``b3``, linear in the EMA's half-life.

  An EMA of decay :math:`\beta` has half-life :math:`\log(1/2) / \log\beta` steps. Interpolating :math:`\beta`
  itself linearly would keep the half-life short for most of the warmup (it explodes only as :math:`\beta \to 1`);
  the paper's :math:`f_{\beta_3}` (Section 3) instead interpolates :math:`1 / \log\beta`, hence the half-life,
  linearly. With :math:`T` = ``warmup_steps`` and :math:`\beta_\text{start}` = ``b3_start``:

  .. math::
    \beta_3(t) = \min\Bigl( \exp\Bigl( \frac{\log\beta_\text{start} \log\beta_3}
      {(1 - t/T) \log\beta_3 + (t/T) \log\beta_\text{start}} \Bigr),\ \beta_3 \Bigr)

  for :math:`t < T`, and :math:`\beta_3` from :math:`t = T` on. (The authors' code writes it as
  :math:`f^{-1}((1 - t/T) f(\beta_\text{start}) + (t/T) f(\beta_3))` with :math:`f(\beta) = \log(1/2)/\log\beta - 1`,
  the same function, and omits the ``min``, which matters only for ``b3_start > b3``: then the paper's
  formula is ``b3`` throughout.) No adamx schedule is this function.

  Args:
    b3: the final :math:`\beta_3`, in [0, 1).
    warmup_steps: :math:`T`, a non-negative integer (0: the constant ``b3``); the paper sets it to the total number
      of steps.
    b3_start: :math:`\beta_\text{start}`, in [0, 1); the paper uses :math:`\beta_1` (0.9, the default here).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array; pass it as
    ``ademamix(b3=...)``, which calls it with the number of earlier updates.

  Example:
    >>> import adamx
    >>> b3 = adamx.ademamix_b3_schedule(0.9999, warmup_steps=1_000, b3_start=0.9)
    >>> print(f"{b3(0):.4g} {b3(500):.4g} {b3(10**6):.4g}")  # half-lives 6.6, ~3470, 6931 steps
    0.9 0.9998 0.9999

  References:
    Pagliardini, Ablin & Grangier, `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, ICLR 2025 (Section 3, "Schedulers").

  .. warning::
    The value is a float32 (see :func:`adamx.ademamix` for what that does to :math:`1 - \beta_3`).
  """
  fn = "ademamix_b3_schedule"
  b3 = _checks.check_interval(fn, "b3", b3, 0.0, 1.0)
  b3_start = _checks.check_interval(fn, "b3_start", b3_start, 0.0, 1.0)
  warmup_steps = _checks.check_steps(fn, "warmup_steps", warmup_steps)
  inv_start, inv_end = _inv_log(b3_start), _inv_log(b3)

  def schedule(count):
    t = jnp.asarray(count, dtype=float)
    if warmup_steps == 0:
      return jnp.full_like(t, b3)
    frac = jnp.minimum(t / warmup_steps, 1.0)
    # 1 / log b3(t) = (1 - frac) / log b_start + frac / log b3: the paper's formula, its denominator divided by
    # log b_start log b3 (so that b_start = 0, where 1 / log 0 = -0, needs no special case).
    log_b = 1.0 / ((1.0 - frac) * inv_start + frac * inv_end)
    return jnp.where(t >= warmup_steps, jnp.full_like(t, b3), jnp.minimum(jnp.exp(log_b), b3))

  return schedule


_common.document(scale_by_ademamix, ademamix, args=_ARGS)
