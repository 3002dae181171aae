"""Schedules with a linear warmup: constant, cosine, warmup-stable-decay (WSD) and inverse square root."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from adamx import _checks
from adamx import _schedule_checks as _sc
from adamx._base import Schedule
from adamx._schedules_decay import float_count, lerp

DECAY_TYPES = ("linear", "cosine", "1-sqrt")


def _warmup(t: jax.Array, init_value, peak_value, warmup_steps: int) -> jax.Array:
  """``init_value`` at step 0 to ``peak_value`` at step ``warmup_steps``, linearly (Goyal et al. 2017)."""
  return lerp(init_value, peak_value, jnp.clip(t / max(warmup_steps, 1), 0.0, 1.0))


def warmup_constant_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
) -> Schedule:
  r"""Linear warmup from ``init_value`` to ``peak_value``, then constant.

  With :math:`W` = ``warmup_steps``:

  .. math::
    \eta(t) = \eta_0 + (\eta_\text{peak} - \eta_0) \min(t / W, 1)

  PyTorch's ``LinearLR(start_factor=init_value / lr, end_factor=1, total_iters=W)`` with ``lr = peak_value``.

  Args:
    init_value: value at step 0.
    peak_value: value from step ``warmup_steps`` on.
    warmup_steps: length of the warmup, a non-negative integer (0: the constant ``peak_value``).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.warmup_constant_schedule(0.0, 1e-3, warmup_steps=100)
    >>> print(f"{lr(50):.4g} {lr(100):.4g} {lr(10**9):.4g}")
    0.0005 0.001 0.001

  References:
    Goyal et al., `Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour <https://arxiv.org/abs/1706.02677>`_,
    2017.

  .. warning::
    With ``warmup_steps=0`` optax's ``warmup_constant_schedule`` (a ``linear_schedule`` of 0 steps) stays at
    ``init_value`` forever; this one is ``peak_value`` from step 0, like ``warmup_cosine_schedule`` in both
    libraries.
  """
  fn = "warmup_constant_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  peak_value = _checks.check_type(fn, "peak_value", peak_value)
  warmup_steps = _checks.check_steps(fn, "warmup_steps", warmup_steps)

  def schedule(count):
    t = float_count(count)
    if warmup_steps == 0:
      return jnp.full_like(t, peak_value)
    return _warmup(t, init_value, peak_value, warmup_steps)

  return schedule


def make_warmup_cosine(fn: str, label: Callable[[str], str], init_value, peak_value, warmup_steps, decay_steps,
                       end_value, exponent) -> Schedule:
  """:func:`warmup_cosine_schedule` with errors naming ``fn`` and the argument ``label(name)``."""
  for name, value in [("init_value", init_value), ("peak_value", peak_value), ("end_value", end_value)]:
    _checks.check_type(fn, label(name), value)
  exponent = _sc.check_positive(fn, label("exponent"), exponent)
  warmup_steps = _checks.check_steps(fn, label("warmup_steps"), warmup_steps)
  decay_steps = _checks.check_steps(fn, label("decay_steps"), decay_steps)
  if decay_steps <= warmup_steps and (warmup_steps, decay_steps) != (0, 0):
    raise ValueError(f"adamx.{fn}: {label('decay_steps')} must be greater than warmup_steps ({warmup_steps}), "
                     f"got {decay_steps}")
  cosine_steps = decay_steps - warmup_steps

  def schedule(count):
    t = float_count(count)
    if cosine_steps == 0:
      return jnp.full_like(t, end_value)
    frac = jnp.clip(t / max(warmup_steps, 1), 0.0, 1.0)
    warm = init_value + (peak_value - init_value) * frac
    done = jnp.clip(t - warmup_steps, 0.0, cosine_steps)
    cosine = (0.5 * (1.0 + jnp.cos(jnp.pi * done / cosine_steps))) ** exponent
    decayed = end_value + (peak_value - end_value) * cosine
    return jnp.where(t < warmup_steps, warm, decayed)

  return schedule


def warmup_cosine_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
  r"""Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

  With :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps`` (the *total* length, warmup included, as in optax's
  ``warmup_cosine_decay_schedule``, which gives the same numbers), :math:`p` = ``exponent``:

  .. math::
    \eta(t) = \begin{cases}
      \eta_0 + (\eta_\text{peak} - \eta_0)\, t / W & t < W \\
      \eta_\text{end} + (\eta_\text{peak} - \eta_\text{end})
        \left[\tfrac12\left(1 + \cos\frac{\pi \min(t - W,\, D - W)}{D - W}\right)\right]^{p} & t \ge W
    \end{cases}

  The value is ``end_value`` from step ``decay_steps`` on. With ``warmup_steps == decay_steps == 0`` the schedule
  is the constant ``end_value``.

  Args:
    init_value: value at step 0.
    peak_value: value at the end of the warmup (step ``warmup_steps``).
    warmup_steps: length of the linear warmup, a non-negative integer (0: start at ``peak_value``).
    decay_steps: step at which ``end_value`` is reached; greater than ``warmup_steps``.
    end_value: final value.
    exponent: power applied to the cosine factor, a number > 0 (1: the usual cosine).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.warmup_cosine_schedule(0.0, 1e-3, warmup_steps=100, decay_steps=1_000, end_value=1e-5)
    >>> tx = adamx.adamw(learning_rate=lr, weight_decay=1e-2)

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, ICLR 2017; Goyal et al., `Accurate, Large Minibatch SGD: Training ImageNet
    in 1 Hour <https://arxiv.org/abs/1706.02677>`_, 2017 (linear warmup).
  """
  return make_warmup_cosine("warmup_cosine_schedule", lambda name: name, init_value, peak_value, warmup_steps,
                            decay_steps, end_value, exponent)


def warmup_stable_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    stable_steps: int,
    cooldown_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    decay_type: str = "1-sqrt",
) -> Schedule:
  r"""Warmup-stable-decay (WSD): linear warmup, a constant phase, then a short cooldown to ``end_value``.

  Unlike a cosine, the constant phase does not depend on the training length: a run can be continued from any
  checkpoint of the stable phase and cooled down when it is stopped. With :math:`W, S, C` = ``warmup_steps``,
  ``stable_steps``, ``cooldown_steps``:

  .. math::
    \eta(t) = \begin{cases}
      \eta_0 + (\eta_\text{peak} - \eta_0)\, t / W & t < W \\
      \eta_\text{end} + (\eta_\text{peak} - \eta_\text{end})\, f(x),
        \quad x = \min\!\left(\max\!\left(\frac{t - W - S}{C}, 0\right), 1\right) & t \ge W
    \end{cases}

  with the cooldown shape :math:`f(x) = 1 - x` (``"linear"``), :math:`\tfrac12 (1 + \cos \pi x)` (``"cosine"``) or
  :math:`1 - \sqrt{x}` (``"1-sqrt"``, Hägele et al.'s best). The value is ``end_value`` from step ``W + S + C`` on;
  a zero-length phase is skipped (``C = 0``: ``end_value`` from step ``W + S``).

  Args:
    init_value: value at step 0.
    peak_value: value from step ``warmup_steps`` to the start of the cooldown.
    warmup_steps: length of the linear warmup, a non-negative integer.
    stable_steps: length of the constant phase, a non-negative integer.
    cooldown_steps: length of the cooldown, a non-negative integer (not the total length: see
      ``warmup_cosine_schedule``'s ``decay_steps`` for that convention).
    end_value: value at the end of the cooldown and after.
    decay_type: the cooldown shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.warmup_stable_decay_schedule(0.0, 1.0, warmup_steps=10, stable_steps=80, cooldown_steps=10)
    >>> print(f"{lr(5):.4g} {lr(50):.4g} {lr(92):.4g} {lr(100):.4g}")
    0.5 1 0.5528 0

  References:
    Hägele et al., `Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations
    <https://arxiv.org/abs/2405.18392>`_, NeurIPS 2024 (1-sqrt cooldown); Hu et al., `MiniCPM: Unveiling the
    Potential of Small Language Models with Scalable Training Strategies <https://arxiv.org/abs/2404.06395>`_, 2024
    (WSD).
  """
  fn = "warmup_stable_decay_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  peak_value = _checks.check_type(fn, "peak_value", peak_value)
  end_value = _checks.check_type(fn, "end_value", end_value)
  warmup_steps = _checks.check_steps(fn, "warmup_steps", warmup_steps)
  stable_steps = _checks.check_steps(fn, "stable_steps", stable_steps)
  cooldown_steps = _checks.check_steps(fn, "cooldown_steps", cooldown_steps)
  _checks.check_choice(fn, "decay_type", decay_type, DECAY_TYPES)
  cooldown_start = warmup_steps + stable_steps

  def schedule(count):
    t = float_count(count)
    if cooldown_steps == 0:
      x = (t >= cooldown_start).astype(t.dtype)
    else:
      x = jnp.clip((t - cooldown_start) / cooldown_steps, 0.0, 1.0)
    if decay_type == "linear":
      f = 1.0 - x
    elif decay_type == "cosine":
      f = 0.5 * (1.0 + jnp.cos(jnp.pi * x))
    else:
      f = 1.0 - jnp.sqrt(x)
    decayed = lerp(end_value, peak_value, f)
    return jnp.where(t < warmup_steps, _warmup(t, init_value, peak_value, warmup_steps), decayed)

  return schedule


def inverse_sqrt_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    timescale: jax.typing.ArrayLike | None = None,
) -> Schedule:
  r"""Linear warmup to ``peak_value``, then decay as the inverse square root of the step.

  With :math:`W` = ``warmup_steps`` and :math:`\tau` = ``timescale`` (default :math:`W`):

  .. math::
    \eta(t) = \begin{cases}
      \eta_0 + (\eta_\text{peak} - \eta_0)\, t / W & t < W \\
      \eta_\text{peak} \big/ \sqrt{1 + (t - W) / \tau} & t \ge W
    \end{cases}

  With :math:`\tau = W` the decay is :math:`\eta_\text{peak} \sqrt{W / t}`: the Transformer schedule of Vaswani et
  al. (:math:`d^{-1/2} \min(t^{-1/2}, t W^{-3/2})`, with :math:`\eta_\text{peak} = (d W)^{-1/2}` and
  ``init_value=0``) and fairseq's ``inverse_sqrt``. A separate :math:`\tau` is the form of big_vision's ``rsqrt``
  and Hugging Face's ``get_inverse_sqrt_schedule``. optax and PyTorch have no such schedule.

  Args:
    init_value: value at step 0.
    peak_value: value at step ``warmup_steps``.
    warmup_steps: length of the linear warmup, a non-negative integer.
    timescale: number of steps over which the value falls to :math:`1/\sqrt2` of its peak, a number > 0;
      None means ``warmup_steps`` (which must then be positive).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.inverse_sqrt_schedule(0.0, 1e-3, warmup_steps=100)
    >>> print(f"{lr(50):.4g} {lr(100):.4g} {lr(400):.4g}")
    0.0005 0.001 0.0005

  References:
    Vaswani et al., `Attention Is All You Need <https://arxiv.org/abs/1706.03762>`_, NeurIPS 2017, Section 5.3;
    Zhai et al., `Scaling Vision Transformers <https://arxiv.org/abs/2106.04560>`_, CVPR 2022 (the timescale).
  """
  fn = "inverse_sqrt_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  peak_value = _checks.check_type(fn, "peak_value", peak_value)
  warmup_steps = _checks.check_steps(fn, "warmup_steps", warmup_steps)
  if timescale is None:
    if warmup_steps == 0:
      raise ValueError(f"adamx.{fn}: timescale must be a number > 0 when warmup_steps is 0, got None")
    timescale = warmup_steps
  timescale = _sc.check_positive(fn, "timescale", timescale)

  def schedule(count):
    t = float_count(count)
    decayed = peak_value / jnp.sqrt(1.0 + jnp.maximum(t - warmup_steps, 0.0) / timescale)
    return jnp.where(t < warmup_steps, _warmup(t, init_value, peak_value, warmup_steps), decayed)

  return schedule
