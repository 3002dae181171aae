"""``accumulate_gradients``: one optimizer step per ``k`` micro-batches, equal to a step on the whole batch."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from adamx._base import GradientTransformation, OptState, Updates
from adamx.transforms._wrapping import check_positive_int, check_transform, cond, is_traced, zero_updates_of


class AccumulateGradientsState(NamedTuple):
  """State of :func:`accumulate_gradients`."""

  micro_step: jax.Array  # int32 scalar in [0, k): micro-batches accumulated since the last optimizer step
  acc: Updates  # sum of their gradients, each leaf in promote(param dtype, float32)
  inner_state: OptState  # the wrapped transform's state, advanced once per k micro-batches


def accumulate_gradients(transform: GradientTransformation, k: int) -> GradientTransformation:
  r"""Accumulate the gradients of ``k`` micro-batches and take one step of ``transform`` on their mean.

  Use it when the batch you want does not fit in memory: split it into ``k`` equal micro-batches, call
  ``update`` with each micro-batch's gradient in turn (and ``apply_updates`` every time, as usual). The first
  ``k - 1`` calls return zero updates and leave ``transform``'s state untouched; the ``k``-th passes the mean
  gradient to ``transform`` and returns its updates. For a loss that is a mean over examples, the mean of the
  micro-batch gradients is the full-batch gradient, so the result is one step on the whole batch:

  .. math::
    a_j = \sum_{i=1}^{j} g^{(i)}, \qquad
    (u, s) = \begin{cases} (0, s) & j < k \\ \mathrm{inner}(a_k / k,\ s,\ \theta) & j = k. \end{cases}

  The sum :math:`a_j` is kept in ``promote(param dtype, float32)``: float32 for bfloat16 (and float16) params, so
  ``k`` bfloat16 gradients are added without rounding each partial sum to 8 bits; the mean is rounded to the
  gradient's dtype once, before ``transform`` sees it. ``micro_step`` is 0 right after a step was taken (so
  ``state.micro_step == 0`` after ``update`` tells that the params just changed). ``k`` is a static Python integer;
  the micro-step counter is an array, so the ``k`` calls share one compiled step.

  Args:
    transform: the wrapped transform or optimizer.
    k: the number of micro-batches per step, a positive integer (``k=1`` is ``transform`` itself).

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`AccumulateGradientsState`.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.accumulate_gradients(adamx.adamw(1e-3), k=4)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> batch = jnp.arange(8.0 * 3).reshape(8, 3) / 24
    >>> loss = lambda p, x: jnp.mean((x @ p["w"] - 1.0) ** 2)  # a mean over the examples
    >>> for micro_batch in jnp.split(batch, 4):
    ...   grads = jax.grad(loss)(params, micro_batch)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = adamx.apply_updates(params, updates)
    >>> int(state.micro_step), int(state.inner_state[0].count)
    (0, 1)

  .. warning::
    ``optax.MultiSteps(opt, every_k_schedule=k)`` computes the same steps (its mean is a running Welford mean,
    equal up to float32 rounding; measured below 1e-6 relative), but it runs the inner ``update`` on every
    micro-batch and discards the result; here it runs on the ``k``-th only. Its ``every_k_schedule`` may vary ``k``
    over training and ``use_grad_mean=False`` sums instead of averaging; neither is offered here. Its float32
    accumulator drops the imaginary part of complex gradients (here a complex64 gradient is summed in complex64).
    In PyTorch the same is done by dividing the loss by ``k``, calling ``backward()`` ``k`` times (``.grad`` sums,
    in the parameter's dtype) and ``step()`` once.
  """
  inner_update = check_transform("accumulate_gradients", "transform", transform)
  k = check_positive_int("accumulate_gradients", "k", k)

  def init(params):
    acc = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32)),
                       params)
    return AccumulateGradientsState(micro_step=jnp.zeros([], jnp.int32), acc=acc, inner_state=transform.init(params))

  def update(updates, state, params=None, **extra_args):
    acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype), state.acc, updates)
    # The mean is formed inside the branch that uses it: the k - 1 other micro-steps only add.
    mean = lambda: jax.tree.map(lambda a, g: (a / k).astype(g.dtype), acc, updates)  # noqa: E731
    step = lambda: inner_update(mean(), state.inner_state, params, **extra_args)  # noqa: E731

    last = state.micro_step == k - 1

    def emit():
      new_updates, inner_state = step()
      return new_updates, inner_state, jax.tree.map(jnp.zeros_like, acc)

    def accumulate():
      return zero_updates_of(step, updates, is_traced(last)), state.inner_state, acc

    new_updates, inner_state, acc = cond(last, emit, accumulate)
    micro_step = jnp.where(last, 0, state.micro_step + 1).astype(jnp.int32)
    return new_updates, AccumulateGradientsState(micro_step=micro_step, acc=acc, inner_state=inner_state)

  return GradientTransformation(init, update)
