"""Adam, AdamW and AMSGrad: ``scale_by_adam``, ``scale_by_amsgrad`` and the ``adam``, ``adamw``, ``amsgrad`` optimizers.

Use Adam/AdamW as the default for deep networks; AMSGrad when you want the effective per-coordinate step size to
be non-increasing (the fix of Reddi et al. for Adam's non-convergence counter-example).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks, _fused, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay, add_l2_regularization

MAX_OVER = ("corrected", "raw")


class ScaleByAdamState(NamedTuple):
  """State of :func:`scale_by_adam`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating at the int32 maximum
  mu: Updates  # first moment m_t, mu_dtype
  nu: Updates  # second moment v_t, real, nu_dtype; with factored=True a FactoredMoment for each factored leaf


class ScaleByAmsgradState(NamedTuple):
  """State of :func:`scale_by_amsgrad`."""

  count: jax.Array
  mu: Updates
  nu: Updates
  nu_max: Updates  # running maximum of v_hat_t ("corrected") or of v_t ("raw"), real, nu_dtype


def scale_by_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    nesterov: bool = False,
    factored: bool = False,
    min_dim_size_to_factor: int | None = None,
    factored_eps: jax.typing.ArrayLike | None = None,
) -> GradientTransformation:
  """Rescale updates by Adam's bias-corrected moments (no learning rate, no sign flip).

  The transform behind :func:`adamx.adam` and :func:`adamx.adamw`, whose docstrings give the update rule; chain it
  with :func:`adamx.scale_by_learning_rate` to descend.

  Args:
{args}
    nesterov: use Dozat's Nesterov momentum (NAdam's simplified form, as optax's ``nesterov=True``).
{factored_args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByAdamState`.
  """
  fn = "scale_by_adam"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_bool(fn, "nesterov", nesterov)
  factored, min_dim, factored_eps = _common.validate_factored(fn, factored, min_dim_size_to_factor, factored_eps)

  def init(params):
    return ScaleByAdamState(*_common.init_moments(fn, params, mu_dtype, nu_dtype, min_dim if factored else None))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, nesterov)

    def leaf(g, m, v):
      if isinstance(v, _common.FactoredMoment):  # only with factored=True
        g_, m_new, v_new, v_out = _common.factored_moments(g, m, v, b1, b2, factored_eps, min_dim)
      else:
        g_, m_new, v_new = _common.moments(g, m, v, b1, b2)
        v_out = None
      bc1, bc2, bc1_next = corrections(v_new.dtype)
      m_hat = (_common.unbias(m_new, bc1) if bc1_next is None
               else _common.first_moment_hat(g_, m_new, b1, bc1, bc1_next))
      # The factored statistics are EMAs from zero like v_t, so v_row v_col / mean(v_row) carries the same factor
      # 1 - b2^t and is corrected by the same bc2.
      u = m_hat / (jnp.sqrt(_common.unbias(v_new, bc2) + eps_root) + eps)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype) if v_out is None else v_out

    updates, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return GradientTransformation(init, update)


def scale_by_amsgrad(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    max_over: str = "corrected",
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Rescale updates by AMSGrad's moments: Adam with a running maximum of the second moment.

  The transform behind :func:`adamx.amsgrad`, whose docstring gives the update rule and the two conventions of
  ``max_over``.

  Args:
{args}
    max_over: ``"corrected"`` (optax) keeps the maximum of the bias-corrected second moment; ``"raw"`` (PyTorch)
      keeps the maximum of the raw second moment and bias-corrects it with the current step.

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleByAmsgradState`.
  """
  fn = "scale_by_amsgrad"
  b1, b2, eps, eps_root, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_choice(fn, "max_over", max_over, MAX_OVER)

  def init(params):
    count, mu, nu = _common.init_moments(fn, params, mu_dtype, nu_dtype)
    return ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=_tree.zeros_like(fn, params, nu_dtype, real=True))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, b2, count, False)

    def leaf(g, m, v, v_max):
      _, m_new, v_new = _common.moments(g, m, v, b1, b2)
      bc1, bc2, _ = corrections(v_new.dtype)
      if max_over == "corrected":
        v_max_new = jnp.maximum(v_max.astype(v_new.dtype), _common.unbias(v_new, bc2))
        v_hat = v_max_new
      else:
        v_max_new = jnp.maximum(v_max.astype(v_new.dtype), v_new)
        v_hat = _common.unbias(v_max_new, bc2)
      u = _common.unbias(m_new, bc1) / (jnp.sqrt(v_hat + eps_root) + eps)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype), v_max_new.astype(v_max.dtype)

    updates, mu, nu, nu_max = _tree.map_leaves(leaf, 4, updates, state.mu, state.nu, state.nu_max)
    return updates, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return GradientTransformation(init, update)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    nesterov: bool = False,
    factored: bool = False,
    min_dim_size_to_factor: int | None = None,
    factored_eps: jax.typing.ArrayLike | None = None,
) -> GradientTransformation:
  r"""Adam (Kingma & Ba, 2015): momentum divided by the root of an EMA of squared gradients, both bias-corrected.

  The default for training deep networks. ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are
  :math:`\beta_1,\beta_2`, ``eps``/``eps_root`` are :math:`\epsilon, \epsilon_\text{root}`, ``weight_decay`` is
  :math:`\lambda` (coupled L2, as ``torch.optim.Adam``; for decoupled decay use :func:`adamx.adamw`). At step
  :math:`t = 1, 2, \dots` with gradient :math:`g_t` and :math:`m_0 = v_0 = 0`:

  .. math::
    \begin{aligned}
    g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
    \theta_t &= \theta_{t-1} - \eta_t\, \hat m_t / \bigl(\sqrt{\hat v_t + \epsilon_\text{root}} + \epsilon\bigr)
    \end{aligned}

  With ``nesterov=True`` (Dozat 2016) the line for :math:`\hat m_t` becomes
  :math:`\hat m_t = \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1)\, g_t / (1 - \beta_1^t)`.

  With ``factored=True`` (Shazeer & Stern 2018, Algorithm 4), for a leaf factored over its largest axis
  :math:`a` and second-largest axis :math:`b` the line for :math:`v_t` becomes (means over an axis, the ratio
  broadcast back to the leaf's shape)

  .. math::
    r_t = \beta_2 r_{t-1} + (1 - \beta_2) \operatorname{mean}_a(|g_t|^2 + \epsilon_1), \quad
    c_t = \beta_2 c_{t-1} + (1 - \beta_2) \operatorname{mean}_b(|g_t|^2 + \epsilon_1), \quad
    v_t = \frac{r_t\, c_t}{\operatorname{mean}_b r_t}

  and only :math:`r_t, c_t` are stored (``nu`` holds a :class:`adamx.FactoredMoment`).

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, coupled L2 added to the gradient before the moments, >= 0.
    nesterov: use Dozat's Nesterov momentum (as optax's ``adam(nesterov=True)``).
{factored_args}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(add_l2_regularization(weight_decay), scale_by_adam(...),
    scale_by_learning_rate(learning_rate))``. The state always has these three entries (the L2 stage is stateless
    and a concrete zero decay costs nothing), so changing ``weight_decay`` keeps checkpoints compatible; optax's
    ``adam`` state is the last two.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.adam(learning_rate=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization <https://arxiv.org/abs/1412.6980>`_, ICLR 2015
    (Algorithm 1). Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, ICLR workshop 2016. Shazeer & Stern, `Adafactor:
    Adaptive Learning Rates with Sublinear Memory Cost <https://arxiv.org/abs/1804.04235>`_, ICML 2018
    (Algorithm 4, ``factored=True``).

  .. warning::
    * Complex parameters: :math:`|g|^2` is one real second moment per complex entry, as in optax. PyTorch treats a
      complex tensor as pairs of reals (``view_as_real``) with a separate second moment for the real and imaginary
      parts, so complex trajectories differ from ``torch.optim.Adam``.
    * Bias correction is computed as ``-expm1(t * log(b))`` with ``log(b)`` taken in float64 when ``b`` is a Python
      number, accurate to ~2e-7 in float32. optax computes ``1 - b**t`` in float32 from ``b`` rounded to float32,
      which is off by up to ~2e-5 relative for ``b2 = 0.999``; PyTorch computes it in double precision like adamx.
      Trajectories therefore agree with PyTorch more closely than with optax.
    * ``weight_decay`` here is coupled L2 (PyTorch's ``Adam``); optax's ``adam`` has no weight decay argument.
    * ``factored=True`` is Adam with Adafactor's second moment, not ``optax.adafactor``: it keeps Adam's first
      moment, constant ``b2``, bias correction and ``eps``, and has no update clipping or relative step size.
      Its row and column statistics are those of ``optax.scale_by_factored_rms`` given the same decay.
  """
  fn = "adam"
  valid = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_bool(fn, "nesterov", nesterov)
  _common.validate_factored(fn, factored, min_dim_size_to_factor, factored_eps)
  valid_lr, valid_wd = _common.validate_optimizer(fn, learning_rate, weight_decay)
  tx = chain(
      add_l2_regularization(weight_decay),
      scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype, nesterov=nesterov, factored=factored,
                    min_dim_size_to_factor=min_dim_size_to_factor, factored_eps=factored_eps),
      scale_by_learning_rate(learning_rate),
  )
  return _fused_spec(tx, fn, _fused.L2, 1, valid_lr, valid_wd, None, valid, nesterov or factored, lambda mask: tx)


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    nesterov: bool = False,
    factored: bool = False,
    min_dim_size_to_factor: int | None = None,
    factored_eps: jax.typing.ArrayLike | None = None,
) -> GradientTransformation:
  r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay.

  The decay :math:`\lambda\theta` bypasses the adaptive scaling and is multiplied by the learning rate only, so
  every parameter decays at the same relative rate (with Adam's coupled L2, parameters with large gradients barely
  decay). Symbols as in :func:`adamx.adam`; the update rule is Adam's with the last line replaced by

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \bigl( \hat m_t / (\sqrt{\hat v_t + \epsilon_\text{root}} + \epsilon)
      + \lambda\, \theta_{t-1} \bigr)

  (Algorithm 2 of the paper with the schedule multiplier :math:`\eta_t` folded into the learning rate, as optax and
  PyTorch do) and no :math:`\lambda` term in :math:`g_t`. ``factored=True`` replaces :math:`v_t` by Adafactor's
  factored estimate as in :func:`adamx.adam`.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, >= 0 (default ``1e-4``, optax's).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.
    nesterov: use Dozat's Nesterov momentum.
{factored_args}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_adam(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, adamx
    >>> lr = adamx.warmup_cosine_schedule(0.0, 3e-4, warmup_steps=1_000, decay_steps=100_000)
    >>> decay_matrices_only = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    >>> tx = adamx.adamw(learning_rate=lr, weight_decay=0.1, mask=decay_matrices_only)

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization <https://arxiv.org/abs/1711.05101>`_, ICLR 2019
    (Algorithm 2). Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
    <https://arxiv.org/abs/1804.04235>`_, ICML 2018 (Algorithm 4, ``factored=True``).

  .. warning::
    * ``torch.optim.AdamW`` defaults to ``weight_decay=1e-2``; adamx (like optax) defaults to ``1e-4``. Pass
      ``weight_decay=1e-2`` to reproduce a PyTorch run.
    * Complex parameters and bias correction differ from PyTorch/optax as described in :func:`adamx.adam`.
  """
  fn = "adamw"
  valid = _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _checks.check_bool(fn, "nesterov", nesterov)
  _common.validate_factored(fn, factored, min_dim_size_to_factor, factored_eps)
  valid_lr, valid_wd = _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  tx = chain(
      scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype, nesterov=nesterov, factored=factored,
                    min_dim_size_to_factor=min_dim_size_to_factor, factored_eps=factored_eps),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )

  def with_mask(other_mask):  # the same optimizer with another mask: apply_step's XLA step for some leaves
    return adamw(learning_rate, b1, b2, eps, eps_root, weight_decay, mask=other_mask, mu_dtype=mu_dtype,
                 nu_dtype=nu_dtype)

  return _fused_spec(tx, fn, _fused.DECOUPLED, 0, valid_lr, valid_wd, mask, valid, nesterov or factored, with_mask)


def _fused_spec(tx: GradientTransformation, fn: str, decay: int, adam_index: int, learning_rate: Any,
                weight_decay: Any, mask: Any, valid: tuple, unfusible: bool, rebuild: Any) -> GradientTransformation:
  """Register ``tx`` with :func:`adamx.apply_step`'s fused kernel (every hyperparameter as validated)."""
  b1, b2, eps, eps_root, _, _ = valid
  return _fused.register(tx, _fused.FusedSpec(
      name=fn, decay=decay, adam_index=adam_index, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
      eps_root=eps_root, weight_decay=weight_decay, mask=mask, fusible=not unfusible, rebuild=rebuild))


def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    max_over: str = "corrected",
    weight_decay: jax.typing.ArrayLike = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""AMSGrad (Reddi et al., 2018): Adam whose second-moment estimate never decreases.

  Symbols as in :func:`adamx.adam`. The update rule is Adam's with the last line replaced by one of two
  conventions, chosen by ``max_over``:

  .. math::
    \begin{aligned}
    \texttt{"corrected"}\ \text{(optax)}:&\quad \tilde v_t = \max(\tilde v_{t-1}, \hat v_t), &
      \theta_t &= \theta_{t-1} - \eta_t\, \hat m_t / \bigl(\sqrt{\tilde v_t + \epsilon_\text{root}} + \epsilon\bigr)\\
    \texttt{"raw"}\ \text{(PyTorch)}:&\quad \tilde v_t = \max(\tilde v_{t-1}, v_t), &
      \theta_t &= \theta_{t-1} - \eta_t\, \hat m_t / \bigl(\sqrt{\tilde v_t / (1 - \beta_2^t)
      + \epsilon_\text{root}} + \epsilon\bigr)
    \end{aligned}

  :math:`\tilde v_t` is stored as ``nu_max``. The paper's Algorithm 2 has no bias correction at all
  (:math:`\theta_t = \theta_{t-1} - \eta_t m_t / \sqrt{\tilde v_t}` with the ``"raw"`` maximum); both libraries add
  Adam's. The two conventions differ only while :math:`\hat v_t` would decrease: ``"raw"`` compares uncorrected
  values, so early, small :math:`v_t` rarely win the maximum and the effective step can grow as
  :math:`1 - \beta_2^t` does.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    max_over: ``"corrected"`` (default, optax's ``amsgrad``) or ``"raw"`` (``torch.optim.Adam(amsgrad=True)``).
    weight_decay: :math:`\lambda`, coupled L2 added to the gradient (as PyTorch's ``Adam``), >= 0.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(add_l2_regularization(weight_decay), scale_by_amsgrad(...),
    scale_by_learning_rate(learning_rate))``, always these three entries (see :func:`adamx.adam`).

  Example:
    >>> import adamx
    >>> tx = adamx.amsgrad(learning_rate=1e-3, max_over="raw")  # the numbers of torch.optim.Adam(amsgrad=True)

  References:
    Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond <https://arxiv.org/abs/1904.09237>`_, ICLR 2018
    (Algorithm 2).

  .. warning::
    optax's ``amsgrad`` is ``max_over="corrected"``; PyTorch's ``Adam(amsgrad=True)`` is ``max_over="raw"``.
    Complex parameters and bias correction differ as described in :func:`adamx.adam`.
  """
  fn = "amsgrad"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay)
  _checks.check_choice(fn, "max_over", max_over, MAX_OVER)
  return chain(
      add_l2_regularization(weight_decay),
      scale_by_amsgrad(b1, b2, eps, eps_root, max_over=max_over, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      scale_by_learning_rate(learning_rate),
  )


_common.document(scale_by_adam, scale_by_amsgrad, adam, adamw, amsgrad)
_common.document(scale_by_adam, adam, adamw, args=_common.FACTORED_ARGS, placeholder="{factored_args}")
