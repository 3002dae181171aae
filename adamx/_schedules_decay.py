"""Decay schedules: linear, polynomial, exponential, cosine, piecewise constant (optax's names and semantics)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from adamx import _checks
from adamx import _schedule_checks as _sc
from adamx._base import Schedule


def float_count(count: jax.typing.ArrayLike) -> jax.Array:
  """The step count as a float array: no int32 overflow for large counts, one result dtype for every branch."""
  return jnp.asarray(count, dtype=float)


def lerp(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, frac: jax.Array) -> jax.Array:
  """``a`` at ``frac = 0`` and ``b`` at ``frac = 1``, both exactly (``a + (b - a) frac`` can miss ``b`` by an ulp)."""
  return a * (1.0 - frac) + b * frac


def linear_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  r"""Linear interpolation from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

  With :math:`I` = ``init_value``, :math:`E` = ``end_value``, :math:`B` = ``transition_begin``,
  :math:`T` = ``transition_steps``:

  .. math::
    \eta(t) = I + (E - I)\, \min\!\left(\max\!\left(\tfrac{t - B}{T}, 0\right), 1\right)

  ``init_value`` up to step ``transition_begin``, ``end_value`` from step ``transition_begin + transition_steps`` on.
  It is PyTorch's ``LinearLR(start_factor=I / lr, end_factor=E / lr, total_iters=T)`` for ``B = 0``. With
  ``transition_steps == 0`` the schedule is the constant ``init_value``, as in optax and ``LinearLR``.

  Args:
    init_value: value up to step ``transition_begin``.
    end_value: value from step ``transition_begin + transition_steps`` on.
    transition_steps: length of the transition, a non-negative integer.
    transition_begin: step at which the transition starts, a non-negative integer.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.linear_schedule(1e-3, 1e-5, transition_steps=1_000, transition_begin=100)
    >>> print(f"{lr(0):.4g} {lr(600):.4g} {lr(5_000):.4g}")
    0.001 0.000505 1e-05

  References:
    optax ``linear_schedule``; PyTorch ``torch.optim.lr_scheduler.LinearLR``.
  """
  fn = "linear_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  end_value = _checks.check_type(fn, "end_value", end_value)
  steps = _checks.check_steps(fn, "transition_steps", transition_steps)
  begin = _checks.check_steps(fn, "transition_begin", transition_begin)

  def schedule(count):
    t = float_count(count)
    if steps == 0:
      return jnp.full_like(t, init_value)
    return lerp(init_value, end_value, jnp.clip((t - begin) / steps, 0.0, 1.0))

  return schedule


def polynomial_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    power: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  r"""Polynomial decay from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

  With :math:`I` = ``init_value``, :math:`E` = ``end_value``, :math:`p` = ``power``, :math:`B` =
  ``transition_begin``, :math:`T` = ``transition_steps``:

  .. math::
    \eta(t) = E + (I - E) \left(1 - \min\!\left(\max\!\left(\tfrac{t - B}{T}, 0\right), 1\right)\right)^{p}

  PyTorch's ``PolynomialLR(total_iters=T, power=p)`` is the case ``I = lr``, ``E = 0``, ``B = 0``. With
  ``transition_steps == 0`` the schedule is the constant ``init_value``, as in optax.

  Args:
    init_value: value up to step ``transition_begin``.
    end_value: value from step ``transition_begin + transition_steps`` on.
    power: exponent of the polynomial, a number > 0 (1: linear).
    transition_steps: length of the transition, a non-negative integer.
    transition_begin: step at which the transition starts, a non-negative integer.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.polynomial_schedule(1.0, 0.0, power=2.0, transition_steps=10)
    >>> print(f"{lr(5):.4g} {lr(10):.4g}")
    0.25 0

  References:
    optax ``polynomial_schedule``; PyTorch ``torch.optim.lr_scheduler.PolynomialLR``.
  """
  fn = "polynomial_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  end_value = _checks.check_type(fn, "end_value", end_value)
  power = _sc.check_positive(fn, "power", power)
  steps = _checks.check_steps(fn, "transition_steps", transition_steps)
  begin = _checks.check_steps(fn, "transition_begin", transition_begin)

  def schedule(count):
    t = float_count(count)
    if steps == 0:
      return jnp.full_like(t, init_value)
    frac = 1.0 - jnp.clip((t - begin) / steps, 0.0, 1.0)
    return end_value + (init_value - end_value) * frac**power

  return schedule


def exponential_decay(
    init_value: jax.typing.ArrayLike,
    transition_steps: int,
    decay_rate: jax.typing.ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: jax.typing.ArrayLike | None = None,
) -> Schedule:
  r"""Exponential decay: ``init_value`` times ``decay_rate`` per ``transition_steps`` steps, optionally stepwise.

  With :math:`I` = ``init_value``, :math:`\gamma` = ``decay_rate``, :math:`B` = ``transition_begin``,
  :math:`T` = ``transition_steps``:

  .. math::
    \eta(t) = I\, \gamma^{\,p(t)}, \qquad p(t) = \frac{\max(t - B, 0)}{T}
    \quad\text{(staircase: } p(t) = \lfloor \max(t - B, 0) / T \rfloor\text{)}

  then clipped to ``end_value`` if given: a lower bound when :math:`\gamma < 1`, an upper bound otherwise. PyTorch's
  ``ExponentialLR(gamma)`` is ``T = 1``; ``StepLR(step_size, gamma)`` is ``T = step_size, staircase=True``.

  Args:
    init_value: value up to step ``transition_begin``.
    transition_steps: number of steps over which the value is multiplied by ``decay_rate``, a positive integer.
    decay_rate: the factor, a number > 0 (> 1 grows).
    transition_begin: step at which the decay starts, a non-negative integer.
    staircase: if True, decay in discrete jumps every ``transition_steps`` steps.
    end_value: optional bound on the value (see above); None for no bound.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.exponential_decay(1.0, transition_steps=10, decay_rate=0.5, staircase=True, end_value=0.2)
    >>> print(f"{lr(9):.4g} {lr(10):.4g} {lr(25):.4g} {lr(100):.4g}")
    1 0.5 0.25 0.2

  References:
    optax ``exponential_decay``; PyTorch ``torch.optim.lr_scheduler.ExponentialLR`` and ``StepLR``.

  .. warning::
    optax turns ``transition_steps <= 0`` or ``decay_rate == 0`` into a constant schedule and a negative
    ``transition_begin`` into 0, silently; adamx rejects them.
  """
  fn = "exponential_decay"
  init_value = _checks.check_type(fn, "init_value", init_value)
  steps = _sc.check_positive_steps(fn, "transition_steps", transition_steps)
  decay_rate = _sc.check_positive(fn, "decay_rate", decay_rate)
  begin = _checks.check_steps(fn, "transition_begin", transition_begin)
  _checks.check_bool(fn, "staircase", staircase)
  if end_value is not None:
    end_value = _checks.check_type(fn, "end_value", end_value)
  # gamma^p = exp(p ln gamma) with ln gamma in float64 when gamma is a number: rounding gamma to float32 first costs
  # p times its rounding error (9e-6 relative at gamma = 0.97, p = 300, where optax's float32 power is that far off).
  rate = _checks.concrete_number(decay_rate)
  log_rate = math.log(rate) if rate is not None else None

  def schedule(count):
    p = jnp.maximum(float_count(count) - begin, 0.0) / steps
    if staircase:
      p = jnp.floor(p)
    value = init_value * (jnp.exp(p * log_rate) if log_rate is not None else jnp.power(decay_rate, p))
    if end_value is not None:
      # A traced decay_rate cannot pick the bound's side in Python.
      value = jnp.where(decay_rate < 1.0, jnp.maximum(value, end_value), jnp.minimum(value, end_value))
    return value

  return schedule


def cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    decay_steps: int,
    alpha: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
  r"""Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps`` steps, then constant.

  With :math:`I` = ``init_value``, :math:`D` = ``decay_steps``, :math:`\alpha` = ``alpha``, :math:`p` =
  ``exponent``:

  .. math::
    \eta(t) = I \left[\alpha + (1 - \alpha) \left(\tfrac12 \left(1 + \cos \frac{\pi \min(t, D)}{D}\right)\right)^{p}
    \right]

  Within its first period it is PyTorch's ``CosineAnnealingLR(T_max=D, eta_min=alpha * lr)`` (``p = 1``).

  Args:
    init_value: value at step 0.
    decay_steps: length of the decay, a positive integer.
    alpha: final value as a fraction of ``init_value``.
    exponent: power applied to the cosine factor, a number > 0 (1: the usual cosine).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.cosine_decay_schedule(1.0, decay_steps=100, alpha=0.1)
    >>> print(f"{lr(0):.4g} {lr(50):.4g} {lr(100):.4g} {lr(1_000):.4g}")
    1 0.55 0.1 0.1

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.

  .. warning::
    PyTorch's ``CosineAnnealingLR`` does not stop at ``T_max``: it keeps following the cosine and climbs back to
    ``lr`` at ``2 T_max``. This schedule, like optax's, stays at ``alpha * init_value``; for restarts use
    :func:`cosine_warm_restarts_schedule`.
  """
  fn = "cosine_decay_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  steps = _sc.check_positive_steps(fn, "decay_steps", decay_steps)
  alpha = _checks.check_type(fn, "alpha", alpha)
  exponent = _sc.check_positive(fn, "exponent", exponent)

  def schedule(count):
    t = jnp.minimum(float_count(count), steps)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / steps))
    return init_value * ((1.0 - alpha) * cosine**exponent + alpha)

  return schedule


def piecewise_constant_schedule(
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Mapping[int, jax.typing.ArrayLike] | None = None,
) -> Schedule:
  r"""``init_value`` multiplied by ``scale`` at each ``boundary`` of ``boundaries_and_scales``, cumulatively.

  With :math:`\eta_0` = ``init_value`` and ``boundaries_and_scales = {b_i: s_i}``:

  .. math::
    \eta(t) = \eta_0 \prod_{i:\ t \ge b_i} s_i

  PyTorch's ``MultiStepLR(milestones, gamma)`` is ``{m: gamma for m in milestones}``.

  Args:
    init_value: value before the first boundary.
    boundaries_and_scales: a mapping ``{step: scale}`` with non-negative integer steps and scales >= 0, or None
      (a constant schedule).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.5})
    >>> print(f"{lr(99):.4g} {lr(100):.4g} {lr(200):.4g}")
    1 0.1 0.05

  References:
    optax ``piecewise_constant_schedule``; PyTorch ``torch.optim.lr_scheduler.MultiStepLR``.
  """
  fn = "piecewise_constant_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  if boundaries_and_scales is None:
    boundaries_and_scales = {}
  if not isinstance(boundaries_and_scales, Mapping):
    raise TypeError(f"adamx.{fn}: boundaries_and_scales must be None or a mapping {{step: scale}}, "
                    f"got {boundaries_and_scales!r}")
  pieces = []
  for boundary, scale in boundaries_and_scales.items():
    boundary = _checks.check_steps(fn, "boundaries_and_scales key", boundary)
    pieces.append((boundary, _checks.check_non_negative(fn, f"boundaries_and_scales[{boundary}]", scale)))
  pieces.sort(key=lambda piece: piece[0])  # multiply in step order, like optax (same rounding)

  def schedule(count):
    t = float_count(count)
    value = jnp.full_like(t, init_value)
    for boundary, scale in pieces:
      value = jnp.where(t >= boundary, value * scale, value)
    return value

  return schedule
