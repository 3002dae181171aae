"""Joined and cyclic schedules: join_schedules, SGDR (optax's and PyTorch's forms) and one-cycle."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp

from adamx import _checks
from adamx import _schedule_checks as _sc
from adamx._base import Schedule
from adamx._schedules_decay import float_count, lerp
from adamx._schedules_warmup import make_warmup_cosine

CONVENTIONS = ("optax", "torch")
_COSINE_KEYS = ("init_value", "peak_value", "warmup_steps", "decay_steps", "end_value", "exponent")
_COSINE_DEFAULTS = {"end_value": 0.0, "exponent": 1.0}
_MAX_COUNT = 2**53  # cycle tables stop past any count a schedule will see (float64 integers are exact to here)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
  r"""Schedules one after the other: from ``boundaries[i]`` on, ``schedules[i + 1]`` gives the value.

  Each later schedule restarts its count at its boundary (optax's convention):

  .. math::
    \eta(t) = \eta_{i}(t - b_{i-1}) \quad \text{for } b_{i-1} \le t < b_i, \qquad b_{-1} = 0

  Args:
    schedules: a non-empty sequence of callables ``count -> value``.
    boundaries: ``len(schedules) - 1`` non-decreasing, non-negative integer steps.

  Returns:
    A function ``count -> value``, jittable if the schedules are. Counts are passed on unchanged (minus the
    boundary), so integer counts stay integers.

  Example:
    >>> import adamx
    >>> warmup = adamx.linear_schedule(0.0, 1.0, transition_steps=10)
    >>> decay = adamx.cosine_decay_schedule(1.0, decay_steps=90)
    >>> lr = adamx.join_schedules([warmup, decay], boundaries=[10])
    >>> print(f"{lr(5):.4g} {lr(10):.4g} {lr(55):.4g} {lr(100):.4g}")
    0.5 1 0.5 0

  References:
    optax ``join_schedules``; PyTorch's ``SequentialLR`` plays the same role for its stateful schedulers.
  """
  fn = "join_schedules"
  if (not isinstance(schedules, Sequence) or isinstance(schedules, str) or not schedules
      or not all(callable(s) for s in schedules)):
    raise TypeError(f"adamx.{fn}: schedules must be a non-empty sequence of callables count -> value, "
                    f"got {schedules!r}")
  if not isinstance(boundaries, Sequence) or isinstance(boundaries, str):
    raise TypeError(f"adamx.{fn}: boundaries must be a sequence of non-negative integers, got {boundaries!r}")
  if len(boundaries) != len(schedules) - 1:
    raise ValueError(f"adamx.{fn}: boundaries must have len(schedules) - 1 = {len(schedules) - 1} entries, "
                     f"got {boundaries!r}")
  bounds = [_checks.check_steps(fn, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
  if any(b > c for b, c in zip(bounds, bounds[1:])):
    raise ValueError(f"adamx.{fn}: boundaries must be non-decreasing, got {boundaries!r}")
  schedules = tuple(schedules)

  def schedule(count):
    value = schedules[0](count)
    for boundary, later in zip(bounds, schedules[1:]):
      value = jnp.where(count < boundary, value, later(count - boundary))
    return value

  return schedule


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, jax.typing.ArrayLike]]) -> Schedule:
  r"""SGDR as optax builds it: :func:`warmup_cosine_schedule` cycles of given lengths, joined end to end.

  Cycle :math:`i` is ``warmup_cosine_schedule(**cosine_kwargs[i])`` and lasts its ``decay_steps`` (warmup
  included); it starts at :math:`\sum_{j<i} D_j`. After the last cycle the value stays at its ``end_value``. For
  restarts that go on forever with lengths :math:`T_0, T_0 m, T_0 m^2, \dots` use
  :func:`cosine_warm_restarts_schedule`.

  Args:
    cosine_kwargs: an iterable of mappings with the arguments of :func:`warmup_cosine_schedule` (``init_value``,
      ``peak_value``, ``warmup_steps``, ``decay_steps``, optionally ``end_value`` and ``exponent``), one per cycle.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
    >>> lr = adamx.sgdr_schedule([cycle, cycle])
    >>> print(f"{lr(2):.4g} {lr(10):.4g} {lr(12):.4g} {lr(100):.4g}")
    1 0 1 0

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.
  """
  fn = "sgdr_schedule"
  if isinstance(cosine_kwargs, (str, Mapping)) or not isinstance(cosine_kwargs, Iterable):
    raise TypeError(f"adamx.{fn}: cosine_kwargs must be a non-empty iterable of mappings, got {cosine_kwargs!r}")
  cycles = list(cosine_kwargs)
  if not cycles:
    raise ValueError(f"adamx.{fn}: cosine_kwargs must be a non-empty iterable of mappings, got {cosine_kwargs!r}")
  schedules, boundaries, start = [], [], 0
  for i, kwargs in enumerate(cycles):
    keys = set(kwargs) if isinstance(kwargs, Mapping) else set()
    if not isinstance(kwargs, Mapping) or not set(_COSINE_KEYS) - set(_COSINE_DEFAULTS) <= keys <= set(_COSINE_KEYS):
      raise TypeError(f"adamx.{fn}: cosine_kwargs[{i}] must be a mapping with keys init_value, peak_value, "
                      f"warmup_steps, decay_steps and optionally end_value, exponent, got {kwargs!r}")
    args = {**_COSINE_DEFAULTS, **kwargs}
    schedules.append(make_warmup_cosine(fn, lambda name, i=i: f"cosine_kwargs[{i}][{name!r}]",
                                        *(args[key] for key in _COSINE_KEYS)))
    start += int(args["decay_steps"])
    boundaries.append(start)
  return join_schedules(schedules, boundaries[:-1])


def cosine_warm_restarts_schedule(
    init_value: jax.typing.ArrayLike,
    period_steps: int,
    period_mult: int = 1,
    end_value: jax.typing.ArrayLike = 0.0,
) -> Schedule:
  r"""Cosine annealing from ``init_value`` towards ``end_value``, restarted at ``init_value`` forever (SGDR).

  Cycle :math:`i` lasts :math:`T_i = T_0 m^i` steps (:math:`T_0` = ``period_steps``, :math:`m` = ``period_mult``)
  and starts at :math:`s_i = \sum_{j<i} T_j`; within it, :math:`t_\text{cur} = t - s_i`:

  .. math::
    \eta(t) = \eta_\text{end} + \tfrac12 (\eta_0 - \eta_\text{end}) \left(1 + \cos \frac{\pi t_\text{cur}}{T_i}
    \right)

  This is PyTorch's ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)`` (``lr = init_value``, ``eta_min =
  end_value``): ``end_value`` itself is never reached, the step that would reach it is the restart.

  Args:
    init_value: value at the start of every cycle.
    period_steps: length of the first cycle, a positive integer.
    period_mult: factor by which each cycle is longer than the one before, a positive integer.
    end_value: the value the cosine anneals towards.

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.cosine_warm_restarts_schedule(1.0, period_steps=10, period_mult=2)
    >>> print(f"{lr(5):.4g} {lr(10):.4g} {lr(20):.4g} {lr(30):.4g}")
    0.5 1 0.5 1

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, ICLR 2017, eq. (5).
  """
  fn = "cosine_warm_restarts_schedule"
  init_value = _checks.check_type(fn, "init_value", init_value)
  period = _sc.check_positive_steps(fn, "period_steps", period_steps)
  mult = _sc.check_positive_steps(fn, "period_mult", period_mult)
  end_value = _checks.check_type(fn, "end_value", end_value)
  starts = [(0, period)]  # (start, length) of each cycle, exact in Python integers
  while mult > 1 and starts[-1][0] < _MAX_COUNT:
    start, length = starts[-1]
    starts.append((start + length, length * mult))

  def schedule(count):
    t = float_count(count)
    if mult == 1:
      t_cur, length = jnp.mod(t, period), period  # fmod is exact: no drift after many cycles
    else:
      start, length = jnp.zeros_like(t), jnp.full_like(t, period)
      for s, n in starts[1:]:
        s, n = float(s), float(n)  # Python ints past the int32 range would not convert
        start, length = jnp.where(t >= s, s, start), jnp.where(t >= s, n, length)
      t_cur = t - start
    return end_value + (init_value - end_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * t_cur / length))

  return schedule


def _interpolate(t: jax.Array, knots: Sequence[float], values: Sequence, anneal: str, convention: str) -> jax.Array:
  """Piecewise ``anneal`` interpolation of ``values`` at ``knots``, each phase as optax or PyTorch delimits it."""

  def phase(start, a, b, span):
    pct = (t - start) / span if span != 0 else jnp.ones_like(t)
    if anneal == "cos":  # optax's and PyTorch's formula, exact at the end
      return b + (a - b) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)
    return lerp(a, b, pct)  # exact at both ends, unlike their (b - a) pct + a (an ulp of the peak off the end)

  value = jnp.full_like(t, values[-1])
  for i in reversed(range(len(knots) - 1)):
    start, end = knots[i], knots[i + 1]
    if convention == "optax":  # phase i is start <= t < end; optax divides by at least 1
      value = jnp.where(t < end, phase(start, values[i], values[i + 1], max(end - start, 1)), value)
    else:  # phase i is t <= end (the first that holds), from the previous phase's end, not clipped to 0
      value = jnp.where(t <= end, phase(start, values[i], values[i + 1], end - start), value)
  return value


def _onecycle(fn: str, anneal: str, transition_steps, peak_value, pct_start, pct_final, div_factor,
              final_div_factor, convention) -> Schedule:
  steps = _sc.check_positive_steps(fn, "transition_steps", transition_steps)
  peak_value = _checks.check_type(fn, "peak_value", peak_value)
  pct_start = _sc.check_fraction(fn, "pct_start", pct_start)
  if pct_final is not None:
    pct_final = _sc.check_fraction(fn, "pct_final", pct_final)
    if pct_final < pct_start:
      raise ValueError(f"adamx.{fn}: pct_final must be None or a number in [pct_start, 1] (pct_start = "
                       f"{pct_start}), got {pct_final!r}")
  div_factor = _sc.check_positive(fn, "div_factor", div_factor)
  final_div_factor = _sc.check_positive(fn, "final_div_factor", final_div_factor)
  _checks.check_choice(fn, "convention", convention, CONVENTIONS)
  fractions = [pct_start] + ([] if pct_final is None else [pct_final])
  if convention == "optax":
    knots = [0] + [int(p * steps) for p in fractions] + [steps]
  else:
    # OneCycleLR's phase ends: pct * total_steps - 1 (a float), and total_steps - 1 for the last one.
    knots = [0.0] + [float(p * steps) - 1 for p in fractions] + [float(steps - 1)]

  def schedule(count):
    init = peak_value / div_factor
    values = [init, peak_value] + ([] if pct_final is None else [init]) + [init / final_div_factor]
    t = float_count(count)
    value = _interpolate(t, knots, values, anneal, convention)
    # Past the end: the final value. PyTorch's step total_steps - 1 stays in the last phase that includes it.
    past = t >= knots[-1] if convention == "optax" else t > knots[-1]
    return jnp.where(past, jnp.full_like(t, values[-1]), value)

  return schedule


_CONVENTIONS_NOTE = """\
  .. warning::
    optax and PyTorch place the phases one step apart. optax (``convention="optax"``, the default) reaches the
    peak at step ``int(pct_start * transition_steps)`` and the final value at step ``transition_steps``. PyTorch's
    ``OneCycleLR(total_steps=transition_steps)`` (``convention="torch"``) reaches the peak at step
    ``pct_start * total_steps - 1`` (not rounded: a fractional step moves the whole curve) and the final value at
    step ``total_steps - 1``, the last step it allows; stepping it once more extrapolates the last phase (below the
    final value, negative for the linear strategy) and again raises an error. Here the final value is kept from
    the end on in both conventions. With ``pct_start * total_steps == 1`` PyTorch divides by zero; here the
    schedule starts at the peak. optax keys its phases by boundary step, so phases whose boundaries coincide
    (``int(pct_start * transition_steps) == transition_steps``, ``pct_final == 1``, or ``int(pct_start T) ==
    int(pct_final T)``) are merged and the values after them change (with ``pct_start=1`` optax's cosine one-cycle
    never rises); here such a phase just has zero length.
"""


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    div_factor: jax.typing.ArrayLike = 25.0,
    final_div_factor: jax.typing.ArrayLike = 1e4,
    *,
    convention: str = "optax",
) -> Schedule:
  r"""One-cycle with cosine phases: up from ``peak_value / div_factor`` to ``peak_value``, then down to the end.

  fastai's two-phase form of Smith's policy, for fast training at a large peak learning rate. With
  :math:`\eta_0 = \eta_\text{peak} / d` (:math:`d` = ``div_factor``), :math:`\eta_\text{end} = \eta_0 / f`
  (:math:`f` = ``final_div_factor``), and the phase boundaries :math:`k_0 = 0 < k_1 < k_2` of ``convention``
  (below), phase :math:`i` anneals from :math:`v_i` to :math:`v_{i+1}` (:math:`v = \eta_0, \eta_\text{peak},
  \eta_\text{end}`):

  .. math::
    \eta(t) = v_{i+1} + \tfrac12 (v_i - v_{i+1}) \left(1 + \cos \frac{\pi (t - k_i)}{k_{i+1} - k_i}\right),
    \qquad \eta(t) = \eta_\text{end} \text{ for } t \ge k_2

  ``convention="optax"``: :math:`k_1 = \lfloor p T \rfloor`, :math:`k_2 = T` (:math:`p` = ``pct_start``,
  :math:`T` = ``transition_steps``), optax's ``cosine_onecycle_schedule``. ``convention="torch"``:
  :math:`k_1 = p T - 1`, :math:`k_2 = T - 1`, PyTorch's ``OneCycleLR(max_lr=peak_value, total_steps=T,
  anneal_strategy="cos", three_phase=False)``.

  Args:
    transition_steps: length of the cycle, a positive integer.
    peak_value: the largest value, reached at the end of the first phase.
    pct_start: fraction of the cycle spent rising, in [0, 1].
    div_factor: ``peak_value / div_factor`` is the initial value, a number > 0.
    final_div_factor: ``initial value / final_div_factor`` is the final value, a number > 0.
    convention: ``"optax"`` or ``"torch"``: where the phases start and end (see the warning).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.cosine_onecycle_schedule(100, 1.0, pct_start=0.3, div_factor=10.0, final_div_factor=10.0)
    >>> print(f"{lr(0):.4g} {lr(30):.4g} {lr(100):.4g}")
    0.1 1 0.01
    >>> lr = adamx.cosine_onecycle_schedule(100, 1.0, div_factor=10.0, final_div_factor=10.0, convention="torch")
    >>> print(f"{lr(29):.4g} {lr(99):.4g}")
    1 0.01

  References:
    Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates
    <https://arxiv.org/abs/1708.07120>`_, 2017.

{conventions}
  """
  return _onecycle("cosine_onecycle_schedule", "cos", transition_steps, peak_value, pct_start, None, div_factor,
                   final_div_factor, convention)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    pct_final: float | None = 0.85,
    div_factor: jax.typing.ArrayLike = 25.0,
    final_div_factor: jax.typing.ArrayLike = 1e4,
    *,
    convention: str = "optax",
) -> Schedule:
  r"""One-cycle with linear phases: up to ``peak_value``, back down to the start, then down to the end.

  By default the paper's three phases (up, down to the initial value, annihilation), optax's
  ``linear_onecycle_schedule``; with ``pct_final=None`` fastai's two (up, then down to the end), PyTorch's. With
  :math:`\eta_0 = \eta_\text{peak} / d` (:math:`d` = ``div_factor``) and :math:`\eta_\text{end} = \eta_0 / f`
  (:math:`f` = ``final_div_factor``), phase :math:`i` goes linearly from :math:`v_i` to :math:`v_{i+1}` between the
  boundaries :math:`k_i` and :math:`k_{i+1}`:

  .. math::
    \eta(t) = v_i + (v_{i+1} - v_i) \frac{t - k_i}{k_{i+1} - k_i}, \qquad \eta(t) = \eta_\text{end}
    \text{ past the last boundary}

  Three phases (``pct_final`` a number): :math:`v = \eta_0, \eta_\text{peak}, \eta_0, \eta_\text{end}` at
  :math:`k = 0, \lfloor p T \rfloor, \lfloor p_f T \rfloor, T` (:math:`p` = ``pct_start``, :math:`p_f` =
  ``pct_final``, :math:`T` = ``transition_steps``). Two phases (``pct_final=None``): :math:`v = \eta_0,
  \eta_\text{peak}, \eta_\text{end}` at :math:`k = 0, \lfloor p T \rfloor, T`. ``convention="torch"`` uses
  :math:`p T - 1` (:math:`p_f T - 1`) and :math:`T - 1` instead; with ``pct_final=None`` that is PyTorch's
  ``OneCycleLR(max_lr=peak_value, total_steps=T, anneal_strategy="linear", three_phase=False)``.

  Args:
    transition_steps: length of the cycle, a positive integer.
    peak_value: the largest value, reached at the end of the first phase.
    pct_start: fraction of the cycle spent rising, in [0, 1].
    pct_final: fraction of the cycle at which the value is back to the initial one, in [pct_start, 1]; None for
      two phases (straight from the peak to the final value).
    div_factor: ``peak_value / div_factor`` is the initial value, a number > 0.
    final_div_factor: ``initial value / final_div_factor`` is the final value, a number > 0.
    convention: ``"optax"`` or ``"torch"``: where the phases start and end (see the warning).

  Returns:
    A function ``count -> value``, jittable, returning a float32 (float64 under x64) array.

  Example:
    >>> import adamx
    >>> lr = adamx.linear_onecycle_schedule(100, 1.0, div_factor=10.0, final_div_factor=10.0)
    >>> print(f"{lr(0):.4g} {lr(30):.4g} {lr(85):.4g} {lr(100):.4g}")
    0.1 1 0.1 0.01
    >>> lr = adamx.linear_onecycle_schedule(100, 1.0, pct_final=None, div_factor=10.0, final_div_factor=10.0,
    ...                                     convention="torch")
    >>> print(f"{lr(29):.4g} {lr(64):.4g} {lr(99):.4g}")
    1 0.505 0.01

  References:
    Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates
    <https://arxiv.org/abs/1708.07120>`_, 2017.

{conventions}

  .. warning::
    PyTorch's ``OneCycleLR(three_phase=True)`` ends its second phase at ``2 * pct_start * total_steps - 2``, which
    no ``pct_final`` reproduces under ``convention="torch"`` (its phases end at ``pct * total_steps - 1``).
  """
  return _onecycle("linear_onecycle_schedule", "linear", transition_steps, peak_value, pct_start, pct_final,
                   div_factor, final_div_factor, convention)


for _fn in (cosine_onecycle_schedule, linear_onecycle_schedule):
  if _fn.__doc__:  # None under python -OO
    _fn.__doc__ = _fn.__doc__.replace("{conventions}\n", _CONVENTIONS_NOTE)
