"""ADOPT: ``scale_by_adopt`` and the ``adopt`` optimizer.

Use ADOPT as a drop-in for Adam when you would rather not tune ``b2`` to the problem: it normalises each gradient by
the second moment of the *previous* steps and only then averages it into the momentum, and the paper (Taniguchi et
al. 2024) proves the optimal O(1/sqrt(T)) rate for any ``b2`` without assuming bounded gradient noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay

_ARGS = """\
    b1: :math:`\\beta_1`, decay of the momentum of the normalised gradients, in [0, 1).
    b2: :math:`\\beta_2`, decay of the second moment (the EMA of squared gradients), in [0, 1); default 0.9999,
      the paper's (any value converges in theory).
    eps: :math:`\\epsilon`, the floor of the denominator :math:`\\max(\\sqrt{v_{t-1}}, \\epsilon)`, >= 0.
    use_clipping: clip the normalised gradient to :math:`[-c_t, c_t]` (keyword-only; default ``True``, the authors'
      current algorithm; ``False`` is the first, unclipped version of the paper).
    clip_value_fn: :math:`c_t` as a callable of the step count :math:`t` (an int32 array: 0 at the initialisation
      step, :math:`t` at the :math:`t`-th update), keyword-only; ``None`` (default) is the authors' and optax's
      :math:`c_t = t^{1/4}`. Ignored when ``use_clipping=False``. Under ``optax.inject_hyperparams`` list it in
      ``static_args``, or optax takes it for a schedule (``adamx.inject_hyperparams`` keeps it static).
    nesterov: use the Nesterov form of the momentum, as optax's ``nesterov=True`` (not in the paper).
    mu_dtype: dtype of the momentum (``None``: the parameter's dtype; complex parameters get the complex dtype of
      that precision). ``jnp.bfloat16`` halves its memory.
    nu_dtype: dtype of the second moment (``None``: the parameter's real dtype)."""


def _default_clip_value(count: jax.Array) -> jax.Array:
  """ADOPT's clipping schedule c_t = t^(1/4) (Taniguchi et al. 2024: the authors' ``clip_lambda`` and optax's
  ``clip_value_fn`` defaults), at the int32 step count ``count``."""
  return count**0.25


class ScaleByAdoptState(NamedTuple):
  """State of :func:`scale_by_adopt`."""

  count: jax.Array  # int32 scalar: the number of updates so far (the initialisation step included), saturating
  mu: Updates  # momentum m_t of the normalised gradients, mu_dtype
  nu: Updates  # second moment v_t (v_0 = |g_0|^2), real, nu_dtype


def _validate(fn: str, b1: Any, b2: Any, eps: Any, use_clipping: Any, clip_value_fn: Any, nesterov: Any,
              mu_dtype: Any, nu_dtype: Any) -> tuple:
  b1, b2, eps, _, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, 0.0, mu_dtype, nu_dtype)
  _checks.check_bool(fn, "use_clipping", use_clipping)
  _checks.check_bool(fn, "nesterov", nesterov)
  if clip_value_fn is not None and not callable(clip_value_fn):
    raise TypeError(f"adamx.{fn}: clip_value_fn must be None or a callable count -> clipping value, got "
                    f"{clip_value_fn!r}")
  return b1, b2, eps, mu_dtype, nu_dtype


def _clip(x: jax.Array, c: jax.Array) -> jax.Array:
  """``x`` clipped to magnitude ``c``: ``[-c, c]`` for real entries, the modulus for complex ones (as
  :func:`adamx.clip`; ``jnp.clip``, and so optax's ADOPT, rejects complex values)."""
  if jnp.iscomplexobj(x):
    modulus = jnp.abs(x)
    over = modulus > c
    return jnp.where(over, x * (c / jnp.where(over, modulus, 1)), x)
  return jnp.clip(x, -c, c)


def scale_by_adopt(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.9999,
    eps: jax.typing.ArrayLike = 1e-6,
    *,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] | None = None,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Replace updates by ADOPT's momentum of normalised gradients (no learning rate, no sign flip).

  The transform behind :func:`adamx.adopt`, whose docstring gives the update rule. The first call only records
  :math:`v_0 = |g_0|^2` and returns zero updates.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByAdoptState`.
  """
  fn = "scale_by_adopt"
  b1, b2, eps, mu_dtype, nu_dtype = _validate(fn, b1, b2, eps, use_clipping, clip_value_fn, nesterov, mu_dtype,
                                              nu_dtype)

  def init(params):
    return ScaleByAdoptState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    first = state.count == 0
    clip_fn = _default_clip_value if clip_value_fn is None else clip_value_fn
    clip_value = clip_fn(state.count) if use_clipping else None

    def leaf(g, m, v):
      g_, m_ = _common.upcast(g, m, v)
      rdt = _tree.real_dtype(g_.dtype)
      v_prev = v.astype(rdt)
      # Taniguchi et al. 2024, Algorithm 1: the call with t = 0 only sets v_0 = g_0^2 (and m_0 = 0). As optax, this
      # is the regular step with the decays replaced by b2 = 0 and b1 = 1; the decays are rounded to the compute
      # dtype first, so that 1 - b is formed there and each EMA's weights sum to exactly 1 (optax's arithmetic).
      b1_ = jnp.where(first, 1, jnp.asarray(b1, rdt))
      b2_ = jnp.where(first, 0, jnp.asarray(b2, rdt))
      # line 4: g_t / max(sqrt(v_{t-1}), eps), with v_{t-1} from the previous steps only, then Clip(., c_t).
      normed = g_ / jnp.maximum(jnp.sqrt(v_prev), jnp.asarray(eps, rdt))
      if clip_value is not None:
        normed = _clip(normed, jnp.asarray(clip_value, rdt))
      # At t = 0 the normalised gradient is unused (weight 1 - b1_ = 0); zeroing it keeps 0 * inf (eps = 0, v = 0)
      # from turning m_0 into NaN.
      normed = jnp.where(first, 0, normed)
      m_new = _tree.ema(m_, normed, b1_)  # line 4: m_t = b1 m_{t-1} + (1 - b1) Clip(...)
      v_new = _tree.ema(v_prev, _tree.abs_sq(g_), b2_)  # line 6: v_t = b2 v_{t-1} + (1 - b2) g_t^2
      # line 5: theta_t = theta_{t-1} - alpha_t m_t. Departure (optax's nesterov=True, not in the paper): step by
      # b1 m_t + (1 - b1) Clip(...) instead.
      u = _tree.ema(m_new, normed, b1_) if nesterov else m_new
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdoptState(count=_tree.safe_increment(state.count), mu=mu, nu=nu)

  return GradientTransformation(init, update)


def adopt(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.9999,
    eps: jax.typing.ArrayLike = 1e-6,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: Mask = None,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] | None = None,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""ADOPT (Taniguchi et al., 2024): Adam with the gradient normalised by the *previous* second moment, then averaged.

  Adam divides its momentum by a second moment that contains the current gradient, which correlates the two and
  breaks convergence unless :math:`\beta_2` is tuned to the problem. ADOPT normalises each gradient by the second
  moment of the steps before it and only then averages it, which converges at the optimal rate for any
  :math:`\beta_2`. Use it where Adam needs careful :math:`\beta_2` tuning or diverges.

  ``learning_rate`` is :math:`\alpha_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps`` is :math:`\epsilon`,
  ``clip_value_fn`` is :math:`c_t`, ``weight_decay`` is :math:`\lambda` (decoupled, as AdamW; 0 by default, the
  paper has none). The first call (:math:`t = 0`, gradient :math:`g_0` at the initial parameters
  :math:`\theta_\text{init}`) only records the second moment; then at :math:`t = 1, 2, \dots` with gradient
  :math:`g_t`:

  .. math::
    \begin{aligned}
    v_0 &= |g_0|^2, \qquad m_0 = 0, \qquad \theta_0 = \theta_\text{init} - \alpha_0 \lambda\, \theta_\text{init} \\
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\,
      \operatorname{clip}\bigl(g_t / \max(\sqrt{v_{t-1}}, \epsilon),\ c_t\bigr) \\
    \theta_t &= \theta_{t-1} - \alpha_t \bigl(m_t + \lambda\, \theta_{t-1}\bigr) \\
    v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2
    \end{aligned}

  with :math:`\operatorname{clip}(x, c)` the projection onto :math:`[-c, c]` (the modulus for complex entries) and
  :math:`c_t = t^{1/4}`; ``use_clipping=False`` drops it. With ``nesterov=True`` the step uses
  :math:`\beta_1 m_t + (1 - \beta_1) \operatorname{clip}(\dots)` in place of :math:`m_t`. The learning rate (and a
  schedule) counts the first call too: step :math:`t` uses ``learning_rate(t)``.

  Args:
    learning_rate: :math:`\alpha_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      1e-3, the authors'.
{args}
    weight_decay: :math:`\lambda`, decoupled weight decay (as :func:`adamx.adamw`), >= 0; default 0.
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_adopt(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.adopt(learning_rate=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)  # the first call only records v_0
    >>> float(jnp.max(jnp.abs(updates["w"])))
    0.0

  References:
    Taniguchi et al., `ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate
    <https://arxiv.org/abs/2411.02853>`_, NeurIPS 2024 (Algorithm 1, with the clipping of the authors' November 2024
    revision, `code <https://github.com/iShohei220/adopt>`_).

  .. warning::
    * The numbers are optax's (``optax.contrib.adopt``) for real parameters: the same first call (zero update,
      :math:`v_0 = g_0^2`), the same :math:`c_t = t^{1/4}` evaluated at the number of previous calls, ``eps`` as a
      floor of :math:`\sqrt{v_{t-1}}`, and the same float arithmetic (each decay rounded to the compute dtype
      before :math:`1 - \beta` is formed, so the EMA weights sum to exactly 1; adamx's other optimizers form
      :math:`1 - \beta` from the Python float). They are also the paper's: neither optax nor the authors' code
      departs from Algorithm 1 (apart from weight decay, below).
    * Complex parameters: one real second moment :math:`|g|^2` per entry and the clip of the modulus (as
      :func:`adamx.clip`). optax's clipped ADOPT raises on complex parameters (``jnp.clip``); the authors' PyTorch
      code treats them as pairs of reals.
    * Weight decay: optax's ``adopt`` has none. The authors' code has ``weight_decay`` with ``decouple=False`` (L2,
      their default: chain :func:`adamx.add_l2_regularization` before :func:`adamx.scale_by_adopt` for that) or
      ``decouple=True``, which, unlike adamx, skips the first call: with :math:`\lambda > 0` adamx decays
      :math:`\theta` by :math:`\alpha_0\lambda\theta` once more.
    * With ``eps = 0`` (allowed) an entry whose second moment is still exactly 0 divides by zero: :math:`g / 0` is
      clipped to :math:`\pm c_t` (it stays infinite without clipping, and is NaN for a zero gradient), as in optax.
      optax's first call already writes NaN into :math:`m` where :math:`g_0 = 0` (:math:`0 \cdot 0/0`); adamx's
      does not.
    * optax's ``adopt`` takes ``mu_dtype`` as its fifth positional argument; here ``weight_decay`` is fifth and
      ``mu_dtype`` is keyword-only, as in every adamx optimizer.
  """
  fn = "adopt"
  _validate(fn, b1, b2, eps, use_clipping, clip_value_fn, nesterov, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_adopt(b1, b2, eps, use_clipping=use_clipping, clip_value_fn=clip_value_fn, nesterov=nesterov,
                     mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_adopt, adopt, args=_ARGS)
