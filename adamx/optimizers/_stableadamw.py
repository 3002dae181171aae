"""StableAdamW: ``scale_by_stableadamw`` and the ``stableadamw`` optimizer.

AdamW with Adafactor's update clipping applied per tensor: a tensor's learning rate is divided by the root mean
square of ``g_t^2 / v_hat_t`` whenever that exceeds 1, that is whenever the second moment under-estimates the current
squared gradients. Use it in place of AdamW plus gradient clipping when training is prone to loss spikes; the paper
(Wortsman et al. 2023) reports that it avoids the loss spikes of CLIP ViT-Huge training and outperforms gradient
clipping at the scales it tests.
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

_EXTRA_ARGS = """\
    weight_decay: :math:`\\lambda`, decoupled decay, >= 0. It is added to the Adam direction *before* the clip
      factor, which scales both (Algorithm 2, last line); default ``1e-4`` (as :func:`adamx.adamw`).
    clipping_threshold: :math:`d`, the largest :math:`\\mathrm{RMS}_t` left unclipped, > 0 (default 1, the paper's;
      ``math.inf`` disables clipping: AdamW's update rule).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``. The clip applies to every leaf either way."""


class ScaleByStableAdamwState(NamedTuple):
  """State of :func:`scale_by_stableadamw`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating at the int32 maximum
  mu: Updates  # first moment m_t (raw EMA; the paper's debiased v_t is m_t / (1 - b1^t)), mu_dtype
  nu: Updates  # second moment v_t (raw EMA; the paper's u_t is v_t / (1 - b2^t)), real, nu_dtype


def _check_threshold(fn: str, value: Any) -> Any:
  """``clipping_threshold`` is a number > 0 (``inf`` allowed: no clipping); arrays and tracers pass unchecked."""
  value = _checks.check_type(fn, "clipping_threshold", value)
  x = _checks.concrete_number(value)
  if x is not None and not x > 0:
    raise ValueError(f"adamx.{fn}: clipping_threshold must be a number > 0 (math.inf disables clipping), "
                     f"got {value!r}")
  return value


def scale_by_stableadamw(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-6,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    *,
    clipping_threshold: jax.typing.ArrayLike = 1.0,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Replace updates by StableAdamW's clipped, decayed Adam direction (no learning rate, no sign flip).

  The transform behind :func:`adamx.stableadamw`, whose docstring gives the update rule. Like
  :func:`adamx.scale_by_lamb` it takes the weight decay, because the per-tensor clip factor scales the decay term
  too: ``chain(scale_by_adam, add_decoupled_weight_decay, ...)`` cannot express that. ``update`` needs ``params``
  unless ``weight_decay`` is a concrete 0.

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByStableAdamwState`.
  """
  fn = "scale_by_stableadamw"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  weight_decay = _checks.check_non_negative(fn, "weight_decay", weight_decay)
  clipping_threshold = _check_threshold(fn, clipping_threshold)
  _checks.check_mask(fn, mask)
  no_decay = _checks.concrete_number(weight_decay) == 0.0

  def init(params):
    return ScaleByStableAdamwState(*_common.init_moments(fn, params, mu_dtype, nu_dtype))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    if params is None and not no_decay:
      raise ValueError(f"adamx.{fn}: params are required for the weight decay (pass weight_decay=0.0 to run "
                       "without them); call update(updates, state, params)")
    if params is not None:
      _tree.check_structure(fn, "params", params, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v, p, decays):
      g_, m_new, v_new = _common.moments(g, m, v, b1, b2)
      rdt = v_new.dtype
      bc1, bc2, _ = corrections(rdt)
      # Wortsman et al. 2023, Algorithm 2 keeps the debiased moments (EMAs with beta_hat = beta (1 - beta^(t-1)) /
      # (1 - beta^t)); they equal m_t / (1 - b1^t) and v_t / (1 - b2^t) of the raw EMAs kept here, so the state
      # is Adam's and the arithmetic the paper's.
      v_hat = v_new / bc2
      eps_ = jnp.asarray(eps, rdt)
      # Algorithm 2: RMS_t = sqrt(E[g_t^2 / max(u_t, eps^2)]), the mean over the whole tensor (one pytree leaf).
      rms = jnp.sqrt(jnp.mean(_tree.abs_sq(g_) / jnp.maximum(v_hat, eps_ * eps_)))
      # eta_t = alpha_t / max(1, RMS_t); the threshold d (1 in the paper) is Adafactor's and the authors' code's.
      clip = 1 / jnp.maximum(1, rms / jnp.asarray(clipping_threshold, rdt))
      r = (m_new / bc1) / (jnp.sqrt(v_hat + eps_root) + eps_)
      if not (no_decay or (isinstance(decays, (bool, np.bool_)) and not decays)):
        decayed = r + jnp.asarray(weight_decay, rdt) * p.astype(r.dtype)
        r = decayed if isinstance(decays, (bool, np.bool_)) else jnp.where(decays, decayed, r)
      # theta_t = theta_{t-1} - eta_t lambda theta_{t-1} - eta_t v_t / (sqrt(u_t) + eps): the clip scales both.
      u = clip * r
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    leaves, treedef = jax.tree.flatten(updates)
    n = len(leaves)
    ps = treedef.flatten_up_to(params) if params is not None else [None] * n
    masks = leaf_masks(fn, mask, params) if params is not None else [True] * n
    rest = [treedef.flatten_up_to(t) for t in (state.mu, state.nu)]
    outs = [leaf(*args) for args in zip(leaves, *rest, ps, masks)]
    updates, mu, nu = (treedef.unflatten([o[i] for o in outs]) for i in range(3))
    return updates, ScaleByStableAdamwState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def stableadamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-6,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    *,
    clipping_threshold: jax.typing.ArrayLike = 1.0,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""StableAdamW (Wortsman et al., 2023): AdamW whose per-tensor learning rate shrinks when ``g^2 / v`` is large.

  Loss spikes follow steps where the second moment :math:`\hat v_t` under-estimates the squared gradients (it is
  out of date), so Adam's step is too large. StableAdamW ports Adafactor's update clipping into AdamW: for each
  tensor (pytree leaf) it measures :math:`\mathrm{RMS}_t`, the root mean square of :math:`g_t^2 / \hat v_t`, and
  divides that tensor's learning rate by it when it exceeds 1. Use it where you would use AdamW with gradient
  clipping. ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps``/``eps_root`` are
  :math:`\epsilon, \epsilon_\text{root}`, ``weight_decay`` is :math:`\lambda`, ``clipping_threshold`` is :math:`d`.
  For every leaf :math:`\theta` at step :math:`t = 1, 2, \dots` with :math:`m_0 = v_0 = 0`, and :math:`\mathbb{E}`
  the mean over the leaf's entries:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
    \mathrm{RMS}_t &= \sqrt{\mathbb{E}\bigl[\, |g_t|^2 / \max(\hat v_t, \epsilon^2) \,\bigr]}, \qquad
      \eta'_t = \eta_t / \max(1, \mathrm{RMS}_t / d) \\
    \theta_t &= \theta_{t-1} - \eta'_t \bigl( \hat m_t / (\sqrt{\hat v_t + \epsilon_\text{root}} + \epsilon)
      + \lambda\, \theta_{t-1} \bigr)
    \end{aligned}

  At :math:`t = 1`, :math:`\hat v_1 = g_1^2` and :math:`\mathrm{RMS}_1 \le 1`: the first step is never clipped.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_stableadamw(...),
    scale_by_learning_rate(learning_rate))``. With ``clipping_threshold=math.inf`` it computes the numbers of
    :func:`adamx.adamw` (and of ``optax.adamw``).

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    >>> tx = adamx.stableadamw(learning_rate=1e-3, weight_decay=0.1, mask={"w": True, "b": False})
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] @ jnp.ones(3) + p["b"].sum() - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt, `Stable and low-precision training for
    large-scale vision-language models <https://arxiv.org/abs/2304.13013>`_, NeurIPS 2023 (Algorithm 2).
    Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
    <https://arxiv.org/abs/1804.04235>`_, ICML 2018 (update clipping, Section 6).

  .. warning::
    * Neither optax nor ``torch.optim`` has StableAdamW; adamx checks it against a float64 transcription of the
      paper. With ``b1=0`` and ``weight_decay=0`` it is ``optax.chain(scale_by_adam(b1=0), clip_by_block_rms(d),
      scale_by_learning_rate)`` up to :math:`\epsilon` (optax's RMS is that of :math:`g / (\sqrt{\hat v}+\epsilon)`).
    * The clip factor multiplies the weight decay too (Algorithm 2 and the authors' later code, and the optimi
      library's ``StableAdamW``); an early version of the authors' gist decays with the unclipped rate.
    * The state holds Adam's raw EMAs (as :func:`adamx.adamw`, so checkpoints carry over); the paper's
      debiased-beta moments are ``mu / (1 - b1^t)`` and ``nu / (1 - b2^t)``, the same numbers.
    * Defaults: ``b2=0.99`` and ``eps=1e-6`` are the authors' code's (and optimi's); ``weight_decay=1e-4`` is
      :func:`adamx.adamw`'s (the authors train CLIP with 0.2, optimi defaults to 1e-2).
  """
  fn = "stableadamw"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  _check_threshold(fn, clipping_threshold)
  return chain(
      scale_by_stableadamw(b1, b2, eps, eps_root, weight_decay, clipping_threshold=clipping_threshold, mask=mask,
                           mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_stableadamw, stableadamw, args=_common.MOMENT_ARGS + "\n" + _EXTRA_ARGS)
