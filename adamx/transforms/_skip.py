"""``skip_non_finite``: drop a step whose gradients hold a NaN or an Inf, and stop after too many in a row."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import GradientTransformation, OptState
from adamx.transforms._wrapping import all_finite, check_transform, cond, is_traced, zero_updates_of

# ---------------------------------------------------------------------------------------------------------------
# skip_non_finite
# ---------------------------------------------------------------------------------------------------------------


class SkipNonFiniteState(NamedTuple):
  """State of :func:`skip_non_finite`."""

  inner_state: OptState  # the wrapped transform's state, untouched by skipped steps
  total_skips: jax.Array  # int32 scalar: steps skipped since init, saturating at the int32 maximum
  consecutive_skips: jax.Array  # int32 scalar: skipped steps since the last applied one


def _limit_message(consecutive: int, total: int, limit: int) -> str:
  steps = "step" if consecutive == 1 else "steps"
  return (f"adamx.skip_non_finite: the gradients held a NaN or an Inf on {consecutive} consecutive {steps}, more than "
          f"max_consecutive={limit} (steps skipped since init: {total}). Lower the learning rate, clip the "
          "gradients or check the data and the loss; max_consecutive=None skips without limit")


def _raise_if_over(consecutive: Any, total: Any, limit: int) -> None:
  """Host side of the check under ``jit``. Under ``vmap`` the ``lax.cond`` around the callback becomes a select
  and this runs on every step of every batch element, so the condition is tested again here."""
  consecutive, total = np.asarray(consecutive), np.asarray(total)
  if np.any(consecutive > limit):
    raise RuntimeError(_limit_message(int(consecutive.max()), int(total.max()), limit))


def _check_limit(consecutive: jax.Array, total: jax.Array, limit: int) -> None:
  if is_traced(consecutive):
    # Under jit the count is known only on the device: a debug callback raises from the host when it runs. It sits
    # in a lax.cond so that the host is only reached on the failing step (no per-step device-host round trip).
    jax.lax.cond(consecutive > limit, lambda c, t: jax.debug.callback(_raise_if_over, c, t, limit),
                 lambda c, t: None, consecutive, total)
  elif int(consecutive) > limit:
    raise RuntimeError(_limit_message(int(consecutive), int(total), limit))


def skip_non_finite(transform: GradientTransformation, max_consecutive: int | None = None) -> GradientTransformation:
  r"""Skip every step whose gradients hold a NaN or an Inf: zero updates, the wrapped state left as it was.

  Use it to survive the rare bad batch (an overflow in a loss, a corrupted example) without restarting from a
  checkpoint. On a skipped step the updates are zeros, so ``adamx.apply_updates`` leaves the params unchanged, and
  the wrapped transform's state (moments, step count, schedule position) is returned unchanged, so the next good
  step is computed exactly as if the bad one had never been seen. The state counts the skipped steps,
  ``total_skips`` and ``consecutive_skips`` (reset to 0 by every applied step), for logging:

  .. math::
    (u_t, s_t) = \begin{cases} \mathrm{inner}(g_t, s_{t-1}, \theta_{t-1}) & g_t \text{ all finite} \\
      (0, s_{t-1}) & \text{otherwise.} \end{cases}

  **Stopping.** With ``max_consecutive=n``, the step that would be the :math:`(n+1)`-th skip in a row raises a
  ``RuntimeError`` naming the limit and the count (``n=0``: the first non-finite step raises). Called
  eagerly, ``update`` raises it directly. Under ``jax.jit`` (and ``lax.scan``, ``vmap``) the count lives on the
  device, so a ``jax.debug.callback`` raises it from the host when the step runs; JAX then re-raises it as a
  ``jax.errors.JaxRuntimeError`` (a ``RuntimeError``) whose message ends with the same text (after the host
  traceback; JAX also logs it), from the jitted call, or, where dispatch is asynchronous (accelerators), possibly
  only when the step's results are next read. The callback sits in a ``lax.cond`` and only runs on the failing
  step (under ``vmap`` the cond becomes a select and it runs every step). ``jax.experimental.checkify`` would
  give a cleaner exception, but only if the caller wraps their step in ``checkify.checkify`` and calls
  ``err.throw()``; otherwise ``checkify.check`` fails to trace, so it cannot be the default. Without
  ``max_consecutive`` nothing ever raises.

  Put anything that should also be skipped inside the wrapped transform (``adamx.ema``, a schedule): a skipped step
  does not advance them. Wrapping :func:`adamx.accumulate_gradients` drops a bad micro-batch and keeps
  accumulating; wrapping the other way round, a bad micro-batch makes the whole accumulated step non-finite and
  it is skipped.

  Args:
    transform: the wrapped transform (an adamx or optax transform or optimizer).
    max_consecutive: ``None`` (skip without limit) or a non-negative integer: the most non-finite steps in a row
      that are skipped before raising.

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`SkipNonFiniteState`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.skip_non_finite(adamx.adamw(1e-3), max_consecutive=5)
    >>> params = {"w": jnp.ones(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
    >>> updates["w"], int(state.total_skips), int(state.consecutive_skips)
    (Array([0., 0.], dtype=float32), 1, 1)

  .. warning::
    ``optax.apply_if_finite(inner, max_consecutive_errors=n)`` also skips, with the same updates and inner
    state, but after :math:`n` skips in a row it *applies* the non-finite update (the params become NaN); here the
    step raises instead, and without a limit it keeps skipping. ``torch.amp.GradScaler`` skips
    ``optimizer.step()`` the same way when the unscaled gradients hold an Inf or a NaN, without limit, and also
    halves its loss scale (loss scaling is not part of this transform).
  """
  inner_update = check_transform("skip_non_finite", "transform", transform)
  if max_consecutive is not None:
    max_consecutive = _checks.check_steps("skip_non_finite", "max_consecutive", max_consecutive)

  def init(params):
    return SkipNonFiniteState(inner_state=transform.init(params), total_skips=jnp.zeros([], jnp.int32),
                              consecutive_skips=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra_args):
    finite = all_finite(updates)
    step = lambda: inner_update(updates, state.inner_state, params, **extra_args)  # noqa: E731
    skip = lambda: (zero_updates_of(step, updates, is_traced(finite)), state.inner_state)  # noqa: E731
    updates, inner_state = cond(finite, step, skip)
    consecutive = jnp.where(finite, 0, _tree.safe_increment(state.consecutive_skips)).astype(jnp.int32)
    total = jnp.where(finite, state.total_skips, _tree.safe_increment(state.total_skips)).astype(jnp.int32)
    if max_consecutive is not None:
      _check_limit(consecutive, total, max_consecutive)
    return updates, SkipNonFiniteState(inner_state=inner_state, total_skips=total, consecutive_skips=consecutive)

  return GradientTransformation(init, update)
