"""Cautious optimizers: the ``cautious`` wrapper, and ``cautious_adamw`` (C-AdamW), ``cautious_lion`` (C-Lion).

Use ``cautious`` on a momentum method to drop, at every step, the coordinates where the update points against the
current gradient; Liang et al. (2024) report that C-AdamW and C-Lion reach lower losses than AdamW and Lion in the
same number of steps (LLaMA and MAE pretraining), with the base optimizer's hyperparameters unchanged.

C-AdamW and C-Lion are defined here rather than in ``optimizers/``: each is ``scale_by_adam``/``scale_by_lion``
inside this wrapper, and an optimizer module never imports another optimizer module. Nothing in ``optimizers/``
imports this module, so there is no import cycle.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, chain
from adamx.optimizers import _common
from adamx.optimizers._adam import scale_by_adam
from adamx.optimizers._lion import _ARGS as _LION_ARGS
from adamx.optimizers._lion import scale_by_lion
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay
from adamx.transforms._wrapping import check_transform

OUTPUTS = ("direction", "update")
NORMALIZATIONS = ("mean", "count", "none")
#: The floor on ``mean(phi)`` for ``normalize="mean"``: the authors' ``c_adamw.py`` (after timm) divides by
#: ``max(mean(phi), 1e-3)``, so a leaf in which fewer than 0.1% of the entries agree is scaled up at most 1000 times.
MIN_MEAN = 1e-3

_NORMALIZE_ARG = """\
    normalize: how each leaf's surviving entries are scaled, per leaf (per tensor, as in the authors' code):
      ``"mean"``: by ``1 / max(mean(phi), 1e-3)`` (the authors' current ``c_adamw.py``, from timm; the paper's
      one-line Algorithm 1 writes ``1 / (mean(phi) + eps)``, which differs only when fewer than 0.1% of the entries
      agree); ``"count"``: by ``n / (sum(phi) + 1)`` for a leaf of ``n`` entries (the authors' first
      ``c_adamw.py`` and their ``c_lion.py``; a leaf whose ``n`` entries all agree moves ``n / (n + 1)`` of the
      base step, a scalar parameter half of it); ``"none"``: not scaled (the mask alone)."""


def _masked(u: jax.Array, g: jax.Array, output: str, normalize: str) -> jax.Array:
  """One leaf of :func:`cautious`: ``u`` masked where it disagrees with ``g``, rescaled, in ``u``'s dtype."""
  dt = _tree.compute_dtype(u, g)
  u_, g_ = u.astype(dt), g.astype(dt)
  # Complex leaves (not in the paper): the agreement is the real inner product of u and g seen as pairs of reals,
  # Re(conj(u) g) = Re(u) Re(g) + Im(u) Im(g), the sign of the directional derivative along u.
  agreement = jnp.real(jnp.conj(u_) * g_) if jnp.iscomplexobj(u_) else u_ * g_
  # Liang et al. 2024, Algorithm 1, line 1: m = (u * g > 0), u a direction; an update -lr * u flips the test.
  phi = (agreement > 0 if output == "direction" else agreement < 0).astype(_tree.real_dtype(dt))
  if normalize == "mean":
    phi = phi / jnp.maximum(jnp.mean(phi), MIN_MEAN)
  elif normalize == "count":
    phi = phi * (phi.size / (jnp.sum(phi) + 1))
  # A product, not a select: a NaN or Inf of the inner update stays in the update (NaN * 0 = NaN, as in the
  # authors' code), where adamx.skip_non_finite can see it, instead of being zeroed while it lives on in the state.
  return (u_ * phi).astype(u.dtype)


def cautious(transform: GradientTransformation, *, output: str, normalize: str = "mean") -> GradientTransformation:
  r"""Make ``transform`` cautious (Liang et al., 2024): keep only the entries of its update that agree in sign with
  the gradient, and scale those up to compensate.

  Use it on momentum methods (Adam, Lion, SGD with momentum), whose update can point uphill for the current
  gradient after the gradient changed sign. With :math:`g_t` the updates the wrapper receives (the gradient),
  :math:`u_t` what ``transform`` returns and :math:`n` the size of a leaf, each leaf becomes

  .. math::
    \begin{aligned}
    \phi_t &= \mathbb{1}\bigl[\sigma\, \mathrm{Re}(\bar u_t\, g_t) > 0\bigr] \qquad \text{elementwise; }
      \sigma = +1 \text{ for } \texttt{output="direction"},\ -1 \text{ for } \texttt{"update"} \\
    s_t &= 1 / \max(\operatorname{mean}(\phi_t), 10^{-3}) \ (\texttt{"mean"}), \qquad
      n / (\textstyle\sum \phi_t + 1) \ (\texttt{"count"}), \qquad 1 \ (\texttt{"none"}) \\
    u_t &\leftarrow s_t\, \phi_t \odot u_t
    \end{aligned}

  For real leaves :math:`\mathrm{Re}(\bar u g) = u g`; for complex ones it is the real inner product of :math:`u`
  and :math:`g` as pairs of reals (the paper has no complex case). The state is ``transform``'s own, unchanged:
  the mask is recomputed every step, so a checkpoint of ``transform`` resumes under ``cautious(transform)`` and back.
  Extra keyword arguments of ``update`` are passed on to ``transform`` (if it accepts them).

  **Which sign.** The paper masks where the *descent direction* (the base optimizer steps by
  :math:`-\eta\, u_t`) disagrees with the gradient. Nothing is guessed from ``transform``; say what it returns:

  * ``output="direction"`` for a ``scale_by_*`` transform (:func:`adamx.scale_by_adam`, ``optax.scale_by_adam``, ...),
    whose output points along the gradient. Then chain decay and the learning rate after the wrapper, as
    :func:`adamx.cautious_adamw` does: the decay is then not masked, as in the authors' C-AdamW.
  * ``output="update"`` for a whole optimizer (:func:`adamx.adamw`, ``optax.adamw(...)``), whose output is the
    update :math:`-\eta_t \times` direction added to the params. Any decoupled decay inside it is then part of the
    masked and rescaled update, which is not the paper's C-AdamW.

  There is no default: the wrong choice inverts the mask (it keeps exactly the disagreeing entries) without any
  error. With :func:`adamx.maximize`, put ``cautious`` inside it (``maximize(cautious(...))``) so that it sees the
  negated gradient its transform follows.

  Args:
    transform: the transform or optimizer to make cautious (adamx or optax).
    output: ``"direction"`` or ``"update"``, what ``transform`` returns (see above).
{normalize}

  Returns:
    A :class:`adamx.GradientTransformation` with ``transform``'s state.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.chain(adamx.cautious(adamx.scale_by_adam(), output="direction"),
    ...                  adamx.add_decoupled_weight_decay(1e-2), adamx.scale_by_learning_rate(1e-3))
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Liang, Chen, Liu & Liu, `Cautious Optimizers: Improving Training with One Line of Code
    <https://arxiv.org/abs/2411.16085>`_, 2024 (Algorithm 1); the authors' code,
    `kyleliang919/C-Optim <https://github.com/kyleliang919/C-Optim>`_ (``c_adamw.py``, ``c_lion.py``).

  .. warning::
    * The authors' ``c_adamw.py`` compares the first moment :math:`m_t` with :math:`g_t`; this wrapper compares
      the transform's output, as the paper's Algorithm 1 does. For Adam without Nesterov they have the same sign
      (:math:`u_t` is :math:`m_t` times a positive factor).
    * The scale is per leaf, as the authors' per-tensor loop; under ``normalize="count"`` small leaves (biases,
      scalars) move noticeably less than the base optimizer even when every entry agrees.
    * Neither optax nor ``torch.optim`` has a cautious wrapper.
  """
  fn = "cautious"
  inner_update = check_transform(fn, "transform", transform)
  _checks.check_choice(fn, "output", output, OUTPUTS)
  _checks.check_choice(fn, "normalize", normalize, NORMALIZATIONS)

  def update(updates, state, params=None, **extra_args):
    new_updates, state = inner_update(updates, state, params, **extra_args)
    _tree.check_structure(fn, "the transform's updates", new_updates, "updates", updates)
    return jax.tree.map(lambda u, g: _masked(u, g, output, normalize), new_updates, updates), state

  return GradientTransformation(transform.init, update)


def cautious_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    *,
    mask: Mask = None,
    normalize: str = "mean",
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""C-AdamW (Liang et al., 2024): AdamW whose Adam step is masked where it disagrees in sign with the gradient.

  A drop-in replacement for :func:`adamx.adamw` with its hyperparameters (but no ``nesterov``) and the same state
  (checkpoints move between the two). Symbols as in :func:`adamx.adam` and :func:`adamx.cautious`; ``weight_decay`` is
  :math:`\lambda`. At step :math:`t = 1, 2, \dots`, for each leaf of :math:`n` entries:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t) + \epsilon_\text{root}} + \epsilon} \\
    \phi_t &= \mathbb{1}\bigl[\mathrm{Re}(\bar u_t\, g_t) > 0\bigr], \qquad
      s_t = 1 / \max(\operatorname{mean}(\phi_t), 10^{-3}) \ \ (\text{or } n / (\textstyle\sum\phi_t + 1),
      \text{ or } 1) \\
    \theta_t &= \theta_{t-1} - \eta_t \bigl( s_t\, \phi_t \odot u_t + \lambda\, \theta_{t-1} \bigr)
    \end{aligned}

  The mask multiplies the Adam step only, before the decoupled decay and the learning rate: the decay is never
  masked, as in the authors' code, where it is a separate in-place step on the weights.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``.
{args}
    weight_decay: :math:`\lambda`, >= 0 (default ``1e-4``, :func:`adamx.adamw`'s).
    mask: which parameters decay (not the cautious mask): ``None`` (all), a pytree of bools shaped like the params
      (or a prefix), or a callable ``params -> pytree of bools``.
{normalize}

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(cautious(scale_by_adam(...), output="direction",
    normalize=normalize), add_decoupled_weight_decay(weight_decay, mask), scale_by_learning_rate(learning_rate))``,
    whose state has the structure of :func:`adamx.adamw`'s.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.cautious_adamw(learning_rate=1e-2, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Liang, Chen, Liu & Liu, `Cautious Optimizers: Improving Training with One Line of Code
    <https://arxiv.org/abs/2411.16085>`_, 2024; the authors' ``c_adamw.py`` in
    `kyleliang919/C-Optim <https://github.com/kyleliang919/C-Optim>`_.

  .. warning::
    * The authors' ``c_adamw.py`` starts from Hugging Face's ``AdamW``: it adds ``eps`` to :math:`\sqrt{v_t}`
      before the bias correction (an effective :math:`\epsilon \sqrt{1 - \beta_2^t}`) and defaults to
      ``weight_decay=0``, ``eps=1e-6``. adamx keeps :func:`adamx.adamw`'s (optax's) placement and defaults; the
      difference is of the order of ``eps``.
    * It masks where :math:`m_t g_t > 0`, adamx where :math:`u_t g_t > 0`: the same sign, since :math:`u_t` is
      :math:`m_t` times a positive factor.
    * Neither optax nor ``torch.optim`` has C-AdamW; it is checked against a float64 transcription of the paper.
  """
  fn = "cautious_adamw"
  _common.validate(fn, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  _checks.check_choice(fn, "normalize", normalize, NORMALIZATIONS)
  return chain(
      cautious(scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype), output="direction",
               normalize=normalize),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


def cautious_lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    weight_decay: jax.typing.ArrayLike = 1e-3,
    *,
    mask: Mask = None,
    normalize: str = "count",
    mu_dtype: Any = None,
) -> GradientTransformation:
  r"""C-Lion (Liang et al., 2024): Lion whose sign step is masked where it disagrees in sign with the gradient.

  A drop-in replacement for :func:`adamx.lion` with the same hyperparameters and state. Symbols as in
  :func:`adamx.lion` and :func:`adamx.cautious`. At step :math:`t = 1, 2, \dots`, for each leaf of :math:`n`
  entries:

  .. math::
    \begin{aligned}
    u_t &= \operatorname{sign}\bigl(\beta_1 m_{t-1} + (1 - \beta_1)\, g_t\bigr) \\
    \phi_t &= \mathbb{1}\bigl[\mathrm{Re}(\bar u_t\, g_t) > 0\bigr], \qquad
      s_t = n / (\textstyle\sum\phi_t + 1) \ \ (\text{or } 1 / \max(\operatorname{mean}(\phi_t), 10^{-3}),
      \text{ or } 1) \\
    \theta_t &= \theta_{t-1} - \eta_t \bigl( s_t\, \phi_t \odot u_t + \lambda\, \theta_{t-1} \bigr) \\
    m_t &= \beta_2 m_{t-1} + (1 - \beta_2)\, g_t
    \end{aligned}

  The decay is not masked, as in the authors' ``c_lion.py``.

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      1e-4 (Lion's, 3-10x smaller than AdamW's).
{args}
    weight_decay: :math:`\lambda`, >= 0 (default 1e-3, :func:`adamx.lion`'s).
    mask: which parameters decay (not the cautious mask): ``None`` (all), a pytree of bools shaped like the params
      (or a prefix), or a callable ``params -> pytree of bools``.
{normalize}
      The default here is ``"count"``, the authors' ``c_lion.py``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(cautious(scale_by_lion(...), output="direction",
    normalize=normalize), add_decoupled_weight_decay(weight_decay, mask), scale_by_learning_rate(learning_rate))``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.cautious_lion(learning_rate=1e-4, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = adamx.apply_updates(params, updates)

  References:
    Liang, Chen, Liu & Liu, `Cautious Optimizers: Improving Training with One Line of Code
    <https://arxiv.org/abs/2411.16085>`_, 2024; the authors' ``c_lion.py`` in
    `kyleliang919/C-Optim <https://github.com/kyleliang919/C-Optim>`_. Chen et al., `Symbolic Discovery of
    Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_, NeurIPS 2023 (Lion, Algorithm 2).

  .. warning::
    * Its default ``normalize="count"`` differs from :func:`adamx.cautious_adamw`'s ``"mean"``: each follows the
      authors' code for that optimizer. With ``"count"`` a leaf whose entries all agree moves ``n / (n + 1)`` of
      Lion's step.
    * The authors' ``c_lion.py`` defaults to ``betas=(0.95, 0.98)`` and ``weight_decay=0``; adamx keeps
      :func:`adamx.lion`'s defaults (the Lion paper's ``b1=0.9, b2=0.99``).
    * Neither optax nor ``torch.optim`` has C-Lion; it is checked against a float64 transcription of the paper.
  """
  fn = "cautious_lion"
  _checks.check_interval(fn, "b1", b1, 0.0, 1.0)
  _checks.check_interval(fn, "b2", b2, 0.0, 1.0)
  _checks.canonicalize_dtype(fn, "mu_dtype", mu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  _checks.check_choice(fn, "normalize", normalize, NORMALIZATIONS)
  return chain(
      cautious(scale_by_lion(b1, b2, mu_dtype=mu_dtype), output="direction", normalize=normalize),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


for _f in (cautious, cautious_adamw, cautious_lion):
  if _f.__doc__:  # None under python -OO
    _f.__doc__ = _f.__doc__.replace("{normalize}\n", _NORMALIZE_ARG + "\n")
_common.document(cautious_adamw)
_common.document(cautious_lion, args=_LION_ARGS)
