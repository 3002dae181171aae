"""``ema``: an exponential moving average of the parameters (Polyak averaging) for evaluation, and ``ema_params``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, OptState, Params


class EmaState(NamedTuple):
  """State of :func:`ema`; read the average with :func:`adamx.ema_params`."""

  count: jax.Array  # int32 scalar: the number of updates averaged so far, saturating at the int32 maximum
  ema: Params  # the average itself (debiased if asked), each leaf in promote(param dtype, float32)


def ema(decay: jax.typing.ArrayLike, debias: bool = True) -> GradientTransformation:
  r"""Keep an exponential moving average of the parameters for evaluation (Polyak averaging).

  Averaged weights usually evaluate better than the last iterate (less noise from the last few steps). Put it
  *last* in the chain: it passes the updates through unchanged and averages the params that they produce,
  :math:`\theta_t = \theta_{t-1} + u_t` (rounded to the param's dtype exactly as ``adamx.apply_updates`` does),
  so ``update`` needs ``params``. Read the average with :func:`adamx.ema_params` (``adamx.ema_params(state)``
  finds it anywhere in the optimizer's state). With decay :math:`\beta` = ``decay``, after :math:`t` updates:

  .. math::
    \bar\theta_t = \bar\theta_{t-1} + w_t\,(\theta_t - \bar\theta_{t-1}), \qquad
    w_t = \frac{1 - \beta}{1 - \beta^t} \ (\texttt{debias=True}), \qquad
    w_1 = 1,\ w_{t>1} = 1 - \beta \ (\texttt{debias=False}).

  ``debias=True`` is Adam's bias correction: the zero-initialised average
  :math:`m_t = \beta m_{t-1} + (1-\beta)\theta_t` divided by :math:`1 - \beta^t`, i.e. a weighted mean of
  :math:`\theta_1..\theta_t` with weights :math:`\propto \beta^{t-i}`; it is kept in that divided form, so the
  state *is* the average. ``debias=False`` is PyTorch's convention
  (``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``): the first average
  copies :math:`\theta_1`, then a constant weight :math:`1-\beta`; the first params stay in the average with
  weight :math:`\beta^{t-1}`. Both start from :math:`\bar\theta_1 = \theta_1` (before any update the state holds
  the initial params), and agree as :math:`t \to \infty`. The average is kept in ``promote(param dtype, float32)``:
  in bfloat16, increments :math:`(1-\beta)(\theta - \bar\theta)` below half an ulp (:math:`2^{-9}` relative) would
  be lost and the average would freeze.

  Wrappers that skip or postpone steps should wrap it with the optimizer, so that only real steps are averaged:
  ``adamx.accumulate_gradients(adamx.chain(opt, adamx.ema(0.999)), k)`` (outside, it would count each of the
  :math:`k` micro-steps), ``adamx.skip_non_finite(adamx.chain(opt, adamx.ema(0.999)))``; after
  :func:`adamx.lookahead` put it outside, ``adamx.chain(adamx.lookahead(opt), adamx.ema(0.999))``, to average the
  params the user holds.

  Args:
    decay: :math:`\beta`, in [0, 1) (a number, an array or a traced value).
    debias: ``True`` for the bias-corrected average, ``False`` for PyTorch's ``AveragedModel`` convention.

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`EmaState`; ``update`` needs ``params`` and returns the
    updates unchanged.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.chain(adamx.adamw(1e-2), adamx.ema(0.99))
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> for _ in range(10):
    ...   grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = adamx.apply_updates(params, updates)
    >>> eval_params = adamx.ema_params(state)  # evaluate with these
    >>> bool(jnp.all(eval_params["w"] > params["w"]))  # lags behind the iterate
    True

  References:
    Polyak & Juditsky, `Acceleration of Stochastic Approximation by Averaging
    <https://doi.org/10.1137/0330046>`_, SIAM J. Control Optim. 1992.

  .. warning::
    ``optax.ema`` averages the *updates* it receives, not the params, and keeps the undivided :math:`m_t` in its
    state (its ``debias=True`` output equals this average when fed the params; its ``debias=False`` is the
    zero-initialised :math:`m_t`, biased towards 0, which is not offered here).
  """
  decay = _checks.check_interval("ema", "decay", decay, 0.0, 1.0)
  _checks.check_bool("ema", "debias", debias)
  concrete = _checks.concrete_number(decay)

  def weight(count: jax.Array, dtype: Any) -> jax.Array:
    """:math:`w_t` in ``dtype`` (a real dtype of at least float32)."""
    one_minus = jnp.asarray(1.0 - concrete if concrete is not None else 1 - jnp.asarray(decay, dtype), dtype)
    if debias:
      return one_minus / _tree.bias_correction(decay, count, dtype)
    return jnp.where(count == 1, jnp.ones([], dtype), one_minus)

  def init(params):
    # A copy, not an alias of the params: donating both params and state to a jitted step must stay legal.
    return EmaState(count=jnp.zeros([], jnp.int32),
                    ema=jax.tree.map(lambda p: jnp.array(p, jnp.promote_types(jnp.result_type(p), jnp.float32),
                                                         copy=True), params))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("adamx.ema: params are required (it averages params + updates); call "
                       "update(updates, state, params)")
    _tree.check_structure("ema", "updates", updates, "params", params)
    count = _tree.safe_increment(state.count)
    weights = {}

    def average(avg, p, u):
      dt = _tree.compute_dtype(avg, p)
      rdt = _tree.real_dtype(dt)
      if rdt not in weights:
        weights[rdt] = weight(count, rdt)
      w = weights[rdt]
      new = (jnp.asarray(p) + u).astype(jnp.result_type(p)).astype(dt)  # the params apply_updates returns
      out_dtype, avg = avg.dtype, avg.astype(dt)
      # torch.lerp's two-sided form: exact at w = 1 (the first update copies the params) and at w = 0.
      return jnp.where(w < 0.5, avg + w * (new - avg), new - (new - avg) * (1 - w)).astype(out_dtype)

    new_ema = jax.tree.map(average, state.ema, params, updates)
    return updates, EmaState(count=count, ema=new_ema)

  return GradientTransformation(init, update)


def ema_params(state: OptState) -> Params:
  """The averaged params kept by :func:`adamx.ema`, found anywhere in an optimizer state.

  Args:
    state: the state of any optimizer that contains one :func:`adamx.ema` (inside ``adamx.chain``,
      ``optax.chain`` or a wrapper such as :func:`adamx.skip_non_finite`), or an :class:`EmaState`.

  Returns:
    The average, a pytree shaped like the params; each leaf in ``promote(param dtype, float32)`` (float32 for
    bfloat16 params: cast it if the model needs bfloat16). Before the first update it holds the initial params.

  Raises:
    ValueError: if ``state`` holds no :class:`EmaState` or more than one.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.chain(adamx.adam(1e-3), adamx.ema(0.999))
    >>> state = tx.init({"w": jnp.ones(2)})
    >>> adamx.ema_params(state)
    {'w': Array([1., 1.], dtype=float32)}
  """
  is_ema = lambda x: isinstance(x, EmaState)  # noqa: E731
  found = [s for s in jax.tree.leaves(state, is_leaf=is_ema) if is_ema(s)]
  if len(found) != 1:
    raise ValueError(f"adamx.ema_params: state must contain exactly one EmaState (add adamx.ema(decay) as the last "
                     f"transform of the chain), got {len(found)}")
  return found[0].ema
