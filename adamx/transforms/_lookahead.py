"""``lookahead``: Zhang et al.'s Lookahead around any optimizer, with the slow weights kept in the state."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, OptState, Params
from adamx.transforms._wrapping import check_positive_int, check_transform, cond


class LookaheadState(NamedTuple):
  """State of :func:`lookahead`."""

  steps_since_sync: jax.Array  # int32 scalar in [0, sync_period): fast steps since the last synchronisation
  slow: Params  # the slow weights phi, in the params' dtypes
  inner_state: OptState  # the fast (wrapped) optimizer's state, never reset


def lookahead(transform: GradientTransformation, sync_period: int = 6,
              slow_step_size: jax.typing.ArrayLike = 0.5) -> GradientTransformation:
  r"""Lookahead (Zhang et al., 2019): ``sync_period`` fast steps forward, then the slow weights move part way.

  Lookahead reduces the variance of the wrapped ("fast") optimizer and makes it less sensitive to its
  hyperparameters. The params you hold are the *fast* weights :math:`\theta`; the *slow* weights :math:`\phi` are
  kept in the state (``state.slow``), so no special params type is needed. Every ``sync_period``-th step (with
  :math:`k` = ``sync_period``, :math:`\alpha` = ``slow_step_size``, as Algorithm 1 of the paper):

  .. math::
    \theta_{t,i} = \theta_{t,i-1} + \mathrm{inner}(g, \theta_{t,i-1}), \quad i = 1..k; \qquad
    \phi_t = \phi_{t-1} + \alpha\,(\theta_{t,k} - \phi_{t-1}); \qquad \theta_{t+1,0} = \phi_t,

  so the update returned by that step is :math:`\phi_t - \theta_{t,k-1}`, which moves the params you hold onto the
  new slow weights (up to one rounding of :math:`\theta + (\phi - \theta)`). The other steps return the fast
  optimizer's updates unchanged. ``update`` needs ``params``, the fast optimizer sees them (its weight decay
  decays the fast weights), and its state carries over a synchronisation (the paper's default; it is not reset).

  **Which params to evaluate.** The paper evaluates the slow weights. Right after a synchronisation (when
  ``state.steps_since_sync == 0``) they are the params you hold; at any other time read ``state.slow`` (or evaluate
  every ``sync_period`` steps). Put :func:`adamx.ema` outside, ``adamx.chain(adamx.lookahead(...), adamx.ema(...))``,
  to average the params you hold.

  Args:
    transform: the fast optimizer.
    sync_period: :math:`k`, fast steps per synchronisation, a positive integer (``1`` with :math:`\alpha = 1` is
      ``transform`` itself).
    slow_step_size: :math:`\alpha`, in (0, 1] (a number, an array or a traced value).

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`LookaheadState`; ``update`` needs ``params``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.lookahead(adamx.adam(1e-2), sync_period=5, slow_step_size=0.5)
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> for _ in range(5):
    ...   grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = adamx.apply_updates(params, updates)
    >>> int(state.steps_since_sync), bool(jnp.allclose(params["w"], state.slow["w"]))  # just synchronised
    (0, True)

  References:
    Zhang, Lucas, Hinton & Ba, `Lookahead Optimizer: k steps forward, 1 step back
    <https://arxiv.org/abs/1907.08610>`_, NeurIPS 2019.

  .. warning::
    ``optax.lookahead`` computes the same steps but requires params of type ``optax.LookaheadParams(fast, slow)``
    and returns updates for both; here ``params`` is the fast weights and the slow weights live in the state.
    Its ``reset_state`` option (re-initialise the fast optimizer at each synchronisation) is not offered.
  """
  inner_update = check_transform("lookahead", "transform", transform)
  sync_period = check_positive_int("lookahead", "sync_period", sync_period)
  slow_step_size = _checks.check_type("lookahead", "slow_step_size", slow_step_size)
  alpha = _checks.concrete_number(slow_step_size)
  if alpha is not None and not 0.0 < alpha <= 1.0:
    raise ValueError(f"adamx.lookahead: slow_step_size must be in (0, 1], got {slow_step_size!r}")

  def init(params):
    # A copy, not an alias of the params: donating both params and state to a jitted step must stay legal.
    return LookaheadState(steps_since_sync=jnp.zeros([], jnp.int32),
                          slow=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
                          inner_state=transform.init(params))

  def sync_leaf(u, p, slow):
    dt = _tree.compute_dtype(u, p, slow)
    p = jnp.asarray(p)
    fast = (p + u).astype(p.dtype).astype(dt)  # theta_{t,k}: the params apply_updates would return
    a = jnp.asarray(slow_step_size, _tree.real_dtype(dt))
    new_slow = (slow.astype(dt) + a * (fast - slow.astype(dt))).astype(slow.dtype)  # Algorithm 1, phi_t
    return (new_slow.astype(dt) - p.astype(dt)).astype(u.dtype), new_slow  # theta_{t+1,0} = phi_t

  def update(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("adamx.lookahead: params are required (the fast weights, which the synchronisation moves to "
                       "the slow weights); call update(updates, state, params)")
    _tree.check_structure("lookahead", "params", params, "the slow weights of state", state.slow)
    updates, inner_state = inner_update(updates, state.inner_state, params, **extra_args)
    sync = state.steps_since_sync == sync_period - 1

    def synchronise(u, slow):
      return _tree.map_leaves(sync_leaf, 2, u, params, slow)

    updates, slow = cond(sync, synchronise, lambda u, slow: (u, slow), updates, state.slow)
    steps = jnp.where(sync, 0, state.steps_since_sync + 1).astype(jnp.int32)
    return updates, LookaheadState(steps_since_sync=steps, slow=slow, inner_state=inner_state)

  return GradientTransformation(init, update)
