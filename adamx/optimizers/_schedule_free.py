"""Schedule-Free AdamW: ``schedule_free_adamw``, ``scale_by_schedule_free_adamw``, the ``schedule_free`` wrapper and
``schedule_free_eval_params``.

Use it to train without choosing a learning-rate schedule or a training length: momentum is replaced by an
interpolation between a momentum-free AdamW sequence and a running average of it, and the average is what you
evaluate. The paper (Defazio et al. 2024) reports that it matches or beats tuned cosine and linear-decay schedules
without knowing the stopping time; nothing here measures a speed-up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import GradientTransformation, OptState, Params, ScalarOrSchedule, Updates
from adamx.optimizers import _common
from adamx.transforms._weight_decay import Mask, leaf_masks
from adamx.transforms._wrapping import check_transform

CONVENTIONS = ("optax", "paper")

_ARGS = """\
    b1: :math:`\\beta_1`, the interpolation weight of the average in :math:`y`, in (0, 1] (0.9 default; the
      authors also suggest 0.95 and 0.98). 1 evaluates gradients at the average (primal averaging).
    b2: :math:`\\beta_2`, decay of the second moment (the EMA of squared gradients), in [0, 1).
    eps: :math:`\\epsilon`, added to the denominator outside the square root, >= 0.
    weight_decay: :math:`\\lambda`, decoupled decay taken at :math:`y` and applied to :math:`z`, >= 0.
    weight_lr_power: :math:`p`, the averaging weights are :math:`(\\max_{i \\le t} \\gamma_i)^p`, >= 0 (2.0, the
      paper's; 0 is the uniform average).
    warmup_steps: ``None`` or ``0`` (no warmup) or the length :math:`W` of a linear warmup of the rate.
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.
    convention: ``"optax"`` (default, ``optax.contrib.schedule_free_adamw``'s numbers) or ``"paper"`` (Algorithm 1
      of the paper and the authors' ``schedulefree.AdamWScheduleFree``); see :func:`adamx.schedule_free_adamw`.
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype).
    state_dtype: dtype of the stored sequence (``None``: the parameter's dtype; complex parameters get the complex
      dtype of that precision), optax's name."""


class ScheduleFreeAdamWState(NamedTuple):
  """State of :func:`schedule_free_adamw`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating
  b1: jax.Array  # the b1 of the last update (schedule_free_eval_params needs it), float32 (float64 for f64 params)
  weight_sum: jax.Array  # sum of the averaging weights so far, same dtype
  max_lr: jax.Array  # largest rate of the averaging weights so far, same dtype
  z: Params  # the base sequence z_t, state_dtype
  nu: Updates  # second moment v_t, real, nu_dtype


class ScaleByScheduleFreeAdamWState(NamedTuple):
  """State of :func:`scale_by_schedule_free_adamw`."""

  count: jax.Array
  b1: jax.Array
  weight_sum: jax.Array
  max_lr: jax.Array  # largest warmup factor so far (the rate itself is applied after this transform)
  delta: Updates  # (y_t - z_t) / learning_rate: the offset of z in units of this transform's output, state_dtype
  nu: Updates


class ScheduleFreeState(NamedTuple):
  """State of :func:`schedule_free`."""

  count: jax.Array
  b1: jax.Array
  weight_sum: jax.Array
  max_lr: jax.Array
  z: Params
  base_state: OptState  # the wrapped transform's state (optax: base_optimizer_state)


def _check_b1(fn: str, b1: Any) -> Any:
  b1 = _checks.check_type(fn, "b1", b1)
  x = _checks.concrete_number(b1)
  if x is not None and not 0.0 < x <= 1.0:
    # b1 = 0 would train (y = z), but the average x could not be recovered from (y, z): x = y + (1-b1)/b1 (y - z).
    raise ValueError(f"adamx.{fn}: b1 must be in (0, 1], got {b1!r}")
  return b1


def _validate(fn: str, b1, b2, eps, weight_decay, weight_lr_power, warmup_steps, mask, convention, nu_dtype,
              state_dtype) -> tuple:
  """The validated ``(b1, b2, eps, weight_decay, weight_lr_power, warmup_steps, nu_dtype, state_dtype)``."""
  _checks.check_mask(fn, mask)
  _checks.check_choice(fn, "convention", convention, CONVENTIONS)
  return (_check_b1(fn, b1), _checks.check_interval(fn, "b2", b2, 0.0, 1.0), _checks.check_non_negative(fn, "eps", eps),
          _checks.check_non_negative(fn, "weight_decay", weight_decay),
          _checks.check_non_negative(fn, "weight_lr_power", weight_lr_power),
          None if warmup_steps is None else _checks.check_steps(fn, "warmup_steps", warmup_steps),
          _checks.canonicalize_dtype(fn, "nu_dtype", nu_dtype),
          _checks.canonicalize_dtype(fn, "state_dtype", state_dtype))


def _scalars(params: Any, b1: Any) -> tuple:
  """``(count, b1, weight_sum, max_lr)`` at init, the floats in the real compute dtype of the params (>= float32:
  optax keeps them in the params' lowest dtype, bfloat16 if one leaf is bfloat16, where the weight sum stalls)."""
  sdt = _tree.real_dtype(_tree.compute_dtype(*jax.tree.leaves(params)))
  return jnp.zeros([], jnp.int32), jnp.asarray(b1, sdt), jnp.zeros([], sdt), jnp.zeros([], sdt)


def _copy_params(fn: str, params: Any, dtype: Any) -> Any:
  """z_1 = x_1 = y_1: a copy of the params (a distinct buffer, so that params and state can both be donated)."""
  zeros = _tree.zeros_like(fn, params, dtype)
  return jax.tree.map(lambda p, zero: jnp.array(p, dtype=zero.dtype, copy=True), params, zeros)


def _warmup(n: jax.Array, warmup_steps: int | None, dtype: Any) -> jax.Array:
  """``min(1, n / W)``: the linear warmup factor after ``n`` steps (1 without warmup)."""
  if not warmup_steps:
    return jnp.ones([], dtype)
  return jnp.minimum(n.astype(dtype) / warmup_steps, 1)


def _rate_at(learning_rate: ScalarOrSchedule, n: jax.Array, dtype: Any) -> jax.Array:
  return jnp.asarray(learning_rate(n) if callable(learning_rate) else learning_rate, dtype)


def _rates(learning_rate, warmup_steps, b2, count, convention, dtype) -> tuple:
  """``(step rate, averaging rate, 1 - b2^t)`` of step ``t = count + 1``.

  ``"paper"`` (Algorithm 1, line 8): both rates are ``gamma_t = lr(count) min(1, t/W) sqrt(1 - b2^t)``.
  ``"optax"``: the z-step is ``scale_by_learning_rate`` of the warmup schedule, evaluated at ``count``; the
  averaging weight evaluates the same schedule at ``t`` (optax's ``step_count`` starts at 1), without ``sqrt``.
  """
  t = _tree.safe_increment(count)
  rate = lambda n: _rate_at(learning_rate, n, dtype)  # noqa: E731
  bc2 = _tree.bias_correction(b2, t, dtype)
  if convention == "paper":
    gamma = rate(count) * _warmup(t, warmup_steps, dtype) * jnp.sqrt(bc2)
    return gamma, gamma, bc2
  return rate(count) * _warmup(count, warmup_steps, dtype), rate(t) * _warmup(t, warmup_steps, dtype), bc2


def _average_weight(state: Any, rate: jax.Array, weight_lr_power: Any) -> tuple:
  """``(c_{t+1}, max_lr, weight_sum)``: the weight of z_{t+1} in the running average x_{t+1}.

  The paper's ``c_{t+1} = gamma_t^2 / sum_i gamma_i^2`` (Algorithm 1, line 10), with the authors' code's (and
  optax's) running maximum of ``gamma`` and power ``p``; 0 while every rate so far was 0 (optax: 0/0 -> 0).
  """
  max_lr = jnp.maximum(state.max_lr, rate.astype(state.max_lr.dtype))
  weight = max_lr ** jnp.asarray(weight_lr_power, max_lr.dtype)
  total = state.weight_sum + weight
  zero = total == 0
  return jnp.where(zero, 0, weight / jnp.where(zero, 1, total)), max_lr, total


def _check_params(fn: str, params: Any, state_tree: Any, name: str) -> None:
  if params is None:
    raise ValueError(f"adamx.{fn}: params are required (the current y, which the step interpolates from); call "
                     "update(updates, state, params)")
  _tree.check_structure(fn, "params", params, name, state_tree)


def _direction(fn, b2, eps, weight_decay, mask, convention, params):
  """``leaf(g, y, v, bc2, decays) -> (d, v_t)``: AdamW's direction without momentum, ``g / (sqrt(v_hat) + eps)``
  (optax, ``scale_by_rms(eps_in_sqrt=False, bias_correction=True)``) or ``g / (sqrt(v) + eps)`` (the paper, which
  moves the bias correction into the rate), plus the decay ``lambda y``. Also returns the per-leaf masks."""
  no_decay = _checks.concrete_number(weight_decay) == 0.0

  def leaf(g, y, v, bc2, decays):
    dt = _tree.compute_dtype(g, y, v)
    rdt = _tree.real_dtype(dt)
    g_ = g.astype(dt)
    v_new = _tree.ema(v.astype(rdt), _tree.abs_sq(g_), b2)
    v_hat = v_new / bc2.astype(rdt) if convention == "optax" else v_new
    d = g_ / (jnp.sqrt(v_hat) + eps)
    if not no_decay and not (isinstance(decays, (bool, np.bool_)) and not decays):
      decayed = d + jnp.asarray(weight_decay, rdt) * y.astype(dt)
      d = decayed if isinstance(decays, (bool, np.bool_)) else jnp.where(decays, decayed, d)
    return d, v_new

  return leaf, jax.tree.structure(params).unflatten(leaf_masks(fn, mask, params))


def _interpolate(c: jax.Array, b1: Any, z_minus_y: jax.Array, dz: jax.Array) -> jax.Array:
  """``y_{t+1} - y_t`` from ``x_{t+1} = (1 - c) x_t + c z_{t+1}``, ``y = b1 x + (1 - b1) z`` and
  ``z_{t+1} = z_t + dz``, without forming x (the authors' ``AdamWScheduleFree.step``; no division by b1)."""
  return c * z_minus_y + (1 - b1 * (1 - c)) * dz


def scale_by_schedule_free_adamw(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 0.0,
    weight_lr_power: jax.typing.ArrayLike = 2.0,
    *,
    warmup_steps: int | None = None,
    mask: Mask = None,
    convention: str = "optax",
    nu_dtype: Any = None,
    state_dtype: Any = None,
) -> GradientTransformation:
  r"""Schedule-Free AdamW for a unit learning rate; chain it with a *constant* rate only.

  ``chain(scale_by_schedule_free_adamw(...), scale_by_learning_rate(lr))`` with a constant ``lr`` (a number or an
  array) is :func:`adamx.schedule_free_adamw` with that rate, up to rounding: with a constant rate the averaging
  weights do not depend on it and every offset between the sequences scales with it, so the state keeps
  :math:`(y_t - z_t)/\eta` and the rate is applied last. With a *schedule* it is not Schedule-Free (the current
  rate would rescale the whole past offset): pass the schedule to :func:`adamx.schedule_free_adamw`. Read the
  evaluation params with ``schedule_free_eval_params(state, params, learning_rate=lr)``. Update rule: see
  :func:`adamx.schedule_free_adamw`; ``warmup_steps`` shapes the rate as there. ``update`` needs ``params``.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByScheduleFreeAdamWState`.
  """
  fn = "scale_by_schedule_free_adamw"
  b1, b2, eps, weight_decay, weight_lr_power, warmup_steps, nu_dtype, state_dtype = _validate(
      fn, b1, b2, eps, weight_decay, weight_lr_power, warmup_steps, mask, convention, nu_dtype, state_dtype)

  def init(params):
    return ScaleByScheduleFreeAdamWState(*_scalars(params, b1), delta=_tree.zeros_like(fn, params, state_dtype),
                                         nu=_tree.zeros_like(fn, params, nu_dtype, real=True))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.check_structure(fn, "updates", updates, "state.nu", state.nu)
    _check_params(fn, params, state.nu, "state.nu")
    sdt = state.max_lr.dtype
    step_rate, avg_rate, bc2 = _rates(1.0, warmup_steps, b2, state.count, convention, sdt)
    c, max_lr, total = _average_weight(state, avg_rate, weight_lr_power)
    direction, masks = _direction(fn, b2, eps, weight_decay, mask, convention, params)

    def leaf(g, y, delta, v, decays):
      d, v_new = direction(g, y, v, bc2, decays)
      rdt = _tree.real_dtype(d.dtype)
      c_, b1_, dv = c.astype(rdt), jnp.asarray(b1, rdt), step_rate.astype(rdt) * d
      delta_ = delta.astype(d.dtype)
      # In units of -learning_rate: y_t - z_t = -lr * delta, z_{t+1} - z_t = -lr * dv (see _interpolate).
      u = _interpolate(c_, b1_, delta_, dv)
      return u.astype(g.dtype), ((1 - c_) * (delta_ + b1_ * dv)).astype(delta.dtype), v_new.astype(v.dtype)

    out, delta, nu = _tree.map_leaves(leaf, 3, updates, params, state.delta, state.nu, masks)
    return out, ScaleByScheduleFreeAdamWState(_tree.safe_increment(state.count), jnp.asarray(b1, sdt), total, max_lr,
                                              delta, nu)

  return GradientTransformation(init, update)


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 0.0,
    weight_lr_power: jax.typing.ArrayLike = 2.0,
    *,
    mask: Mask = None,
    convention: str = "optax",
    nu_dtype: Any = None,
    state_dtype: Any = None,
) -> GradientTransformation:
  r"""Schedule-Free AdamW (Defazio et al., 2024): AdamW without momentum and without a decaying schedule.

  Momentum is replaced by averaging: a momentum-free AdamW sequence :math:`z_t` takes the steps, :math:`x_t` is a
  weighted running average of it (the params to *evaluate*, :func:`adamx.schedule_free_eval_params`), and
  gradients are taken at the interpolation :math:`y_t` (the params this optimizer's updates produce, to *train*).
  Use a constant rate, optionally with ``warmup_steps``; no decay. ``learning_rate`` is :math:`\eta`, ``b1`` is
  :math:`\beta_1`, ``b2`` :math:`\beta_2`, ``eps`` :math:`\epsilon`, ``weight_decay`` :math:`\lambda`,
  ``weight_lr_power`` :math:`p`, ``warmup_steps`` :math:`W`. With :math:`y_1 = x_1 = z_1` the initial params,
  :math:`v_0 = 0`, and at step :math:`t = 1, 2, \dots` the gradient :math:`g_t` taken at :math:`y_t`
  (``convention="optax"``, the default):

  .. math::
    \begin{aligned}
    v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    z_{t+1} &= z_t - \gamma_t \bigl( g_t / (\sqrt{v_t / (1 - \beta_2^t)} + \epsilon) + \lambda\, y_t \bigr),
      \qquad \gamma_t = \eta_{t-1} \min(1, (t - 1)/W) \\
    c_{t+1} &= \bar\gamma_t^{\,p} \big/ \textstyle\sum_{i \le t} \bar\gamma_i^{\,p}, \qquad
      \bar\gamma_t = \max_{i \le t} \eta_i \min(1, i/W) \\
    x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1} \\
    y_{t+1} &= \beta_1 x_{t+1} + (1 - \beta_1)\, z_{t+1}
    \end{aligned}

  (:math:`\eta_n` is ``learning_rate(n)`` for a schedule; without ``warmup_steps`` the ``min`` is 1.) With
  ``convention="paper"`` (Algorithm 1) the second and third lines are
  :math:`z_{t+1} = z_t - \gamma_t ( g_t / (\sqrt{v_t} + \epsilon) + \lambda y_t )` and
  :math:`c_{t+1} = \bar\gamma_t^{\,p} / \sum_{i \le t} \bar\gamma_i^{\,p}` with
  :math:`\gamma_t = \eta_{t-1} \min(1, t/W) \sqrt{1 - \beta_2^t}` and :math:`\bar\gamma_t = \max_{i \le t}
  \gamma_i`. The state keeps :math:`z` (and :math:`v`); :math:`x = y + \frac{1 - \beta_1}{\beta_1}(y - z)` is
  recomputed from the params when needed.

  **The learning rate is part of the algorithm**: it sets the averaging weights, and the update
  :math:`y_{t+1} - y_t` is not proportional to it, so this is not a ``chain(..., scale_by_learning_rate)``.
  :func:`adamx.scale_by_schedule_free_adamw` followed by ``scale_by_learning_rate`` is the same optimizer for a
  *constant* rate only; :func:`adamx.schedule_free` wraps any other base optimizer (which then holds the rate).

  Args:
    learning_rate: :math:`\eta`, a non-negative number, an array, or a schedule ``count -> value`` (constant is
      the point; default 0.0025, optax's and the authors').
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScheduleFreeAdamWState`; ``update`` needs ``params``
    (:math:`y_t`).

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.schedule_free_adamw(learning_rate=1e-1, warmup_steps=10)
    >>> state = tx.init(params)
    >>> for _ in range(300):
    ...   updates, state = tx.update(jax.grad(loss)(params), state, params)
    ...   params = adamx.apply_updates(params, updates)
    >>> x = adamx.schedule_free_eval_params(state, params)  # evaluate at x, train at params (y)
    >>> bool(loss(x) < 1e-3)
    True

  References:
    Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, `The Road Less Scheduled
    <https://arxiv.org/abs/2405.15682>`_, NeurIPS 2024 (Algorithm 1); the authors' code,
    `facebookresearch/schedule_free <https://github.com/facebookresearch/schedule_free>`_.

  .. warning::
    * ``convention="optax"`` (default) gives ``optax.contrib.schedule_free_adamw``'s numbers; ``"paper"`` those of
      Algorithm 1 and of the authors' ``AdamWScheduleFree`` (``r=0``). They differ in three places. (1) Bias
      correction: optax divides :math:`v_t` by :math:`1 - \beta_2^t` inside the root (so :math:`\epsilon` and
      the decay are not rescaled); the paper multiplies the rate by :math:`\sqrt{1 - \beta_2^t}`, which also
      enters the averaging weights and the decay (at :math:`t = 1`, :math:`\beta_2 = 0.999`: 32 times less decay).
      (2) Warmup: optax's z-step uses the schedule at :math:`t - 1` and its averaging weight at :math:`t`, so with
      ``warmup_steps`` its first step does not move :math:`z`; the paper uses :math:`\min(1, t/W)` for both.
      (3) ``warmup_steps=0`` is no warmup here and in the paper; ``optax`` then never trains (its warmup
      schedule with 0 steps is 0 forever).
    * Both take the decay at :math:`y` (the authors' ``decay_at_z=False``; the paper's Algorithm 1 also).
    * ``b1`` must be > 0 (as in optax): :math:`x` is recovered from :math:`y` and :math:`z` by dividing by it.
      adamx stores the current ``b1`` in the state at each update (optax keeps the one of ``init``, stale under
      ``inject_hyperparams``) and keeps ``b1``, the weight sum and the maximal rate in float32 (optax: the params'
      lowest dtype, bfloat16 when one leaf is bfloat16).
    * Bias correction is computed as in :func:`adamx.adam` (about 1e-5 closer to exact than optax's in float32),
      and :math:`y_{t+1} - y_t` without forming :math:`x` (optax forms it), so float32 numbers differ from
      optax's by rounding.
  """
  fn = "schedule_free_adamw"
  b1, b2, eps, weight_decay, weight_lr_power, warmup_steps, nu_dtype, state_dtype = _validate(
      fn, b1, b2, eps, weight_decay, weight_lr_power, warmup_steps, mask, convention, nu_dtype, state_dtype)
  learning_rate = _checks.check_scalar_or_schedule(fn, "learning_rate", learning_rate)

  def init(params):
    return ScheduleFreeAdamWState(*_scalars(params, b1), z=_copy_params(fn, params, state_dtype),
                                  nu=_tree.zeros_like(fn, params, nu_dtype, real=True))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.check_structure(fn, "updates", updates, "state.z", state.z)
    _check_params(fn, params, state.z, "state.z")
    sdt = state.max_lr.dtype
    step_rate, avg_rate, bc2 = _rates(learning_rate, warmup_steps, b2, state.count, convention, sdt)
    c, max_lr, total = _average_weight(state, avg_rate, weight_lr_power)
    direction, masks = _direction(fn, b2, eps, weight_decay, mask, convention, params)

    def leaf(g, y, z, v, decays):
      d, v_new = direction(g, y, v, bc2, decays)
      dt = _tree.compute_dtype(d, z)
      rdt = _tree.real_dtype(dt)
      z_ = z.astype(dt)
      dz = -step_rate.astype(rdt) * d
      u = _interpolate(c.astype(rdt), jnp.asarray(b1, rdt), z_ - y.astype(dt), dz)
      return u.astype(g.dtype), (z_ + dz).astype(z.dtype), v_new.astype(v.dtype)

    out, z, nu = _tree.map_leaves(leaf, 3, updates, params, state.z, state.nu, masks)
    return out, ScheduleFreeAdamWState(_tree.safe_increment(state.count), jnp.asarray(b1, sdt), total, max_lr, z, nu)

  return GradientTransformation(init, update)


def schedule_free(
    base_transform: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    weight_lr_power: jax.typing.ArrayLike = 2.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
  r"""Make any optimizer Schedule-Free (Defazio et al., 2024), as ``optax.contrib.schedule_free``.

  ``base_transform`` computes the step of :math:`z` *including its learning rate* (an optimizer such as
  ``adamx.chain(adamx.scale_by_adam(b1=0.0), adamx.scale_by_learning_rate(lr))``; switch its momentum off, the
  interpolation replaces it). ``learning_rate`` must be the same rate: it only sets the averaging weights
  :math:`c_{t+1}`, from ``learning_rate(t)`` at step :math:`t = 1, 2, \dots` (optax's convention; the base's
  ``scale_by_learning_rate`` evaluates the schedule at :math:`t - 1`). Update rule as in
  :func:`adamx.schedule_free_adamw` with the base's update in place of :math:`-\gamma_t(\dots)`:
  :math:`z_{t+1} = z_t + \mathrm{base}(g_t)`. ``update`` needs ``params`` (:math:`y_t`) and passes them to the
  base (a decay in the base is taken at :math:`y`).

  Args:
    base_transform: the optimizer whose updates move :math:`z` (adamx or optax).
    learning_rate: its learning rate (a number, an array or a schedule), for the averaging weights.
    b1: :math:`\beta_1`, in (0, 1].
    weight_lr_power: :math:`p`, >= 0.
    state_dtype: dtype of :math:`z` (``None``: the parameter's dtype).

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScheduleFreeState`.

  Example:
    >>> import adamx
    >>> sgd = adamx.scale_by_learning_rate(1.0)
    >>> tx = adamx.schedule_free(sgd, learning_rate=1.0, b1=0.9)  # optax.contrib.schedule_free_sgd(1.0)

  References:
    Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_, NeurIPS 2024.

  .. warning::
    As :func:`adamx.schedule_free_adamw` (``convention="optax"``): ``b1`` > 0, and float32 scalars in the state.
  """
  fn = "schedule_free"
  base_update = check_transform(fn, "base_transform", base_transform)
  learning_rate = _checks.check_scalar_or_schedule(fn, "learning_rate", learning_rate)
  b1 = _check_b1(fn, b1)
  weight_lr_power = _checks.check_non_negative(fn, "weight_lr_power", weight_lr_power)
  state_dtype = _checks.canonicalize_dtype(fn, "state_dtype", state_dtype)

  def init(params):
    return ScheduleFreeState(*_scalars(params, b1), z=_copy_params(fn, params, state_dtype),
                             base_state=base_transform.init(params))

  def update(updates, state, params=None, **extra_args):
    _tree.check_structure(fn, "updates", updates, "state.z", state.z)
    _check_params(fn, params, state.z, "state.z")
    sdt = state.max_lr.dtype
    avg_rate = _rate_at(learning_rate, _tree.safe_increment(state.count), sdt)  # optax: step_count = count + 1
    c, max_lr, total = _average_weight(state, avg_rate, weight_lr_power)
    steps, base_state = base_update(updates, state.base_state, params, **extra_args)

    def leaf(g, y, z, dz):
      dt = _tree.compute_dtype(y, z, dz)
      rdt = _tree.real_dtype(dt)
      z_ = z.astype(dt)
      u = _interpolate(c.astype(rdt), jnp.asarray(b1, rdt), z_ - y.astype(dt), dz.astype(dt))
      return u.astype(g.dtype), (z_ + dz.astype(dt)).astype(z.dtype)

    out, z = _tree.map_leaves(leaf, 2, updates, params, state.z, steps)
    return out, ScheduleFreeState(_tree.safe_increment(state.count), jnp.asarray(b1, sdt), total, max_lr, z,
                                  base_state)

  return GradientTransformation(init, update)


_STATES = (ScheduleFreeAdamWState, ScaleByScheduleFreeAdamWState, ScheduleFreeState)


def schedule_free_eval_params(state: OptState, params: Params, *, learning_rate: Any = None) -> Params:
  r"""The evaluation params :math:`x_t` of a Schedule-Free optimizer: :math:`x = y + \frac{1 - \beta_1}{\beta_1}
  (y - z)`, from the params :math:`y` you train and the :math:`z` kept in the state.

  Args:
    state: the state of :func:`adamx.schedule_free_adamw` or :func:`adamx.schedule_free`, or of a chain that
      contains exactly one of them (or one :func:`adamx.scale_by_schedule_free_adamw`).
    params: the current params :math:`y` (after the update that produced ``state``).
    learning_rate: only for :func:`adamx.scale_by_schedule_free_adamw`, whose state does not know it: the constant
      rate of the ``scale_by_learning_rate`` that follows it.

  Returns:
    :math:`x`, shaped like ``params``, each leaf in its parameter's dtype. Before the first update, the params.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.schedule_free_adamw(1e-2)
    >>> params = {"w": jnp.ones(2)}
    >>> adamx.schedule_free_eval_params(tx.init(params), params)
    {'w': Array([1., 1.], dtype=float32)}
  """
  fn = "schedule_free_eval_params"
  is_state = lambda x: isinstance(x, _STATES)  # noqa: E731
  found = [s for s in jax.tree.leaves(state, is_leaf=is_state) if is_state(s)]
  if len(found) != 1:
    raise ValueError(f"adamx.{fn}: state must contain exactly one Schedule-Free state (of schedule_free_adamw, "
                     f"schedule_free or scale_by_schedule_free_adamw), got {len(found)}")
  s = found[0]
  unit = isinstance(s, ScaleByScheduleFreeAdamWState)
  if unit and learning_rate is None:
    raise ValueError(f"adamx.{fn}: the state of scale_by_schedule_free_adamw does not know the learning rate; pass "
                     "learning_rate= (the constant rate of the scale_by_learning_rate that follows it)")
  if not unit and learning_rate is not None:
    raise ValueError(f"adamx.{fn}: learning_rate is only for the state of scale_by_schedule_free_adamw; this state "
                     "knows its rate")
  offsets = s.delta if unit else s.z
  _tree.check_structure(fn, "params", params, "the state's sequence", offsets)

  def leaf(y, o):
    dt = _tree.compute_dtype(y, o)
    rdt = _tree.real_dtype(dt)
    b1 = s.b1.astype(rdt)
    y_, o_ = jnp.asarray(y).astype(dt), o.astype(dt)
    y_minus_z = jnp.asarray(learning_rate, rdt) * o_ if unit else y_ - o_
    return (y_ + (1 - b1) / b1 * y_minus_z).astype(jnp.result_type(y))

  return jax.tree.map(leaf, params, offsets)


_common.document(scale_by_schedule_free_adamw, schedule_free_adamw, args=_ARGS)
