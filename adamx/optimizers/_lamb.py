"""LAMB: ``scale_by_lamb`` and the ``lamb`` optimizer.

LAMB is AdamW whose step for each layer (pytree leaf) is rescaled to a fixed fraction of that layer's weight norm,
the trust ratio :math:`\\lVert\\theta\\rVert / \\lVert r_t\\rVert`. Use it for very large batches, where one global
learning rate suits no layer; the paper (You et al. 2020) trains BERT with batches of 32k-64k in 76 minutes.
Nothing here measures a speed-up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, leaf_masks

_DECAY_ARGS = """\
    weight_decay: :math:`\\lambda`, decoupled decay added to the Adam direction *before* the trust ratio, >= 0.
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``. The trust ratio applies to every leaf either way."""


class ScaleByLambState(NamedTuple):
  """State of :func:`scale_by_lamb`."""

  count: jax.Array  # int32 scalar, saturating
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # second moment v_t, real, nu_dtype


def scale_by_lamb(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-6,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Replace updates by LAMB's trust-ratio-scaled Adam direction (no learning rate, no sign flip).

  The transform behind :func:`adamx.lamb`, whose docstring gives the update rule. Unlike other ``scale_by_``
  transforms it takes the weight decay, because the trust ratio is the norm ratio of the *decayed* direction; it
  computes a leaf's moments, decay and ratio in one pass. ``update`` needs ``params``.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByLambState`.
  """
  fn = "scale_by_lamb"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  weight_decay = _checks.check_non_negative(fn, "weight_decay", weight_decay)
  _checks.check_mask(fn, mask)
  no_decay = _checks.concrete_number(weight_decay) == 0.0

  def init(params):
    return ScaleByLambState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(f"adamx.{fn}: params are required (the trust ratio is a ratio of norms of the params and the "
                       "update); call update(updates, state, params)")
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    _tree.check_structure(fn, "params", params, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v, p, decays):
      _, m_new, v_new = _common.moments(g, m, v, b1, b2)
      bc1, bc2, _ = corrections(v_new.dtype)
      # You et al. 2020, Algorithm 2: r_t = m_hat / (sqrt(v_hat) + eps); the step is
      # phi(||x||) / ||r_t + lambda x|| (r_t + lambda x), with phi the identity (as the authors' code and optax).
      r = (m_new / bc1) / (jnp.sqrt(v_new / bc2 + eps_root) + eps)
      p_ = p.astype(r.dtype)
      if not (no_decay or (isinstance(decays, (bool, np.bool_)) and not decays)):
        decayed = r + jnp.asarray(weight_decay, v_new.dtype) * p_
        r = decayed if isinstance(decays, (bool, np.bool_)) else jnp.where(decays, decayed, r)
      u = _tree.trust_ratio(p_, r) * r
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    leaves, treedef = jax.tree.flatten(updates)
    rest = [treedef.flatten_up_to(t) for t in (state.mu, state.nu, params)]
    outs = [leaf(*args) for args in zip(leaves, *rest, leaf_masks(fn, mask, params))]
    updates, mu, nu = (treedef.unflatten([o[i] for o in outs]) for i in range(3))
    return updates, ScaleByLambState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def lamb(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-6,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""LAMB (You et al., 2020): AdamW with each layer's step scaled by its trust ratio.

  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps``/``eps_root`` are
  :math:`\epsilon, \epsilon_\text{root}`, ``weight_decay`` is :math:`\lambda`. For every leaf (layer)
  :math:`\theta` at step :math:`t = 1, 2, \dots` with :math:`m_0 = v_0 = 0`:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    r_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t) + \epsilon_\text{root}} + \epsilon}
      + \lambda\, \theta_{t-1} \\
    \theta_t &= \theta_{t-1} - \eta_t\, \frac{\lVert\theta_{t-1}\rVert}{\lVert r_t\rVert}\, r_t
    \end{aligned}

  with the ratio replaced by 1 where :math:`\lVert\theta_{t-1}\rVert = 0` or :math:`\lVert r_t\rVert = 0`.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_lamb(...), scale_by_learning_rate(learning_rate))``;
    the same numbers as optax's ``chain(scale_by_adam, add_decayed_weights, scale_by_trust_ratio,
    scale_by_learning_rate)``, in one pass per leaf.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    >>> tx = adamx.lamb(learning_rate=1e-3, weight_decay=1e-2, mask={"w": True, "b": False})
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] @ jnp.ones(3) + p["b"].sum() - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
    <https://arxiv.org/abs/1904.00962>`_, ICLR 2020 (Algorithm 2).

  .. warning::
    * The paper's scaling function :math:`\phi` is the identity here (as optax and the authors' code); the
      authors' code also exempts some layers from the ratio (``exclude_from_layer_adaptation``), which adamx does
      not offer: ``mask`` only selects which leaves decay.
    * ``torch.optim`` has no LAMB. The defaults (``eps=1e-6``, ``weight_decay=0``) are optax's; the paper trains
      BERT with ``weight_decay=0.01``.
  """
  fn = "lamb"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_lamb(b1, b2, eps, eps_root, weight_decay, mask=mask, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_lamb, lamb, args=_common.MOMENT_ARGS + "\n" + _DECAY_ARGS)
