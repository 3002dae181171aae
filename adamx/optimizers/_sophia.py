"""Sophia: ``scale_by_sophia`` and the ``sophia`` optimizer.

Sophia divides the momentum by an exponential moving average of a diagonal Hessian estimate, refreshed every few
steps, and clips every coordinate of the result: a cheap, clipped diagonal Newton step. Use it for language-model
pre-training when you can afford one Hessian-vector product (Hutchinson) or one extra backward pass on sampled
labels (Gauss-Newton-Bartlett) every ``update_interval`` steps; the paper (Liu et al. 2023) reports reaching
GPT-2's validation loss in half as many steps as AdamW. Nothing here measures a speed-up.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import GradientTransformation, ScalarOrSchedule, Updates, chain
from adamx.optimizers import _common
from adamx.transforms._scale import scale_by_learning_rate
from adamx.transforms._weight_decay import Mask, add_decoupled_weight_decay

ESTIMATORS = ("hutchinson", "gnb")
PROBES = ("rademacher", "normal")

_ARGS = """\
    b1: :math:`\\beta_1`, decay of the momentum, in [0, 1).
    b2: :math:`\\beta_2`, decay of the EMA of Hessian-diagonal estimates, in [0, 1). It decays once per refresh, so
      its effective per-step value is :math:`1 - (1 - \\beta_2)/k`.
    eps: :math:`\\epsilon`, the floor of the denominator :math:`\\max(\\gamma h, \\epsilon)`, >= 0.
    gamma: :math:`\\gamma`, the scale of the Hessian in the denominator, >= 0 (the ``rho`` of the authors' code).
    clip_threshold: :math:`c`, the per-coordinate bound of the step before the learning rate, >= 0
      (``float("inf")``: no clipping).
    update_interval: :math:`k`, refresh the Hessian estimate every ``k`` steps (steps 1, k + 1, 2k + 1, ...), an
      integer >= 1.
    estimator: ``"hutchinson"`` (Sophia-H, needs ``obj_fn=`` at ``update``) or ``"gnb"`` (Gauss-Newton-Bartlett,
      Sophia-G, needs ``logits_fn=``); either is replaced by an explicit ``hessian_estimate=``.
    probe: the distribution of Hutchinson's probe :math:`u`: ``"rademacher"`` (optax) or ``"normal"`` (the paper).
    seed: the seed of the probes and sampled labels: a non-negative int or a JAX PRNG key. The key lives in the state
      and advances at every refresh, so a run is deterministic given the seed.
    bias_correction: divide the momentum by :math:`1 - \\beta_1^t` (optax); ``False`` is the paper's Algorithm 3.
    fresh_hessian: precondition step :math:`t` with the estimate refreshed at step :math:`t` (the paper's
      Algorithm 3, lines 7-13); ``False`` (optax) uses it from step :math:`t + 1` on, so the first step sees
      :math:`h = 0` and is the clipped sign of the momentum.
    mu_dtype: dtype of the momentum (``None``: the parameter's dtype). ``jnp.bfloat16`` halves its memory.
    nu_dtype: dtype of the Hessian EMA :math:`h` (``None``: the parameter's dtype)."""

_UPDATE_ARGS = """\
  ``update(updates, state, params, **kwargs)`` needs ``params`` and one of these keyword arguments:

  * ``obj_fn``: ``params -> scalar loss`` on the current batch (``estimator="hutchinson"``). The estimate is
    :math:`u \\odot (\\nabla^2 L\\, u)`, a Hessian-vector product by ``jax.jvp`` of ``jax.grad(obj_fn)``;
  * ``logits_fn``: ``params -> logits`` of shape ``(..., num_classes)`` on the current batch (``estimator="gnb"``).
    adamx samples one label per row from ``softmax(logits)`` and computes
    :math:`B\\, \\nabla \\hat L \\odot \\nabla \\hat L` with :math:`\\hat L` the mean cross-entropy on those labels and
    :math:`B` the number of rows (``logits.size // num_classes``);
  * ``hessian_estimate``: a pytree shaped like the params, or a function ``(params, key) -> such a pytree`` called
    only on refresh steps: any other estimator (padding masks, data-parallel averaging, a precomputed estimate).

  The refresh runs inside ``jax.lax.cond`` on the step counter: the estimator is evaluated on refresh steps only,
  and the step compiles once. Without any of the three, ``update`` raises a ValueError."""


class ScaleBySophiaState(NamedTuple):
  """State of :func:`scale_by_sophia`."""

  count: jax.Array  # int32 scalar: the number of updates so far, saturating at the int32 maximum
  mu: Updates  # momentum m_t, mu_dtype
  nu: Updates  # EMA h_t of the Hessian-diagonal estimates, nu_dtype
  key: jax.Array  # PRNG key of the probes / sampled labels, split at every refresh


def _validate(fn: str, b1: Any, b2: Any, eps: Any, gamma: Any, clip_threshold: Any, update_interval: Any,
              estimator: str, probe: str, seed: Any, bias_correction: bool, fresh_hessian: bool, mu_dtype: Any,
              nu_dtype: Any) -> tuple:
  """The validated ``(b1, b2, eps, gamma, clip_threshold, update_interval, mu_dtype, nu_dtype)``; errors name ``fn``."""
  b1, b2, eps, _, mu_dtype, nu_dtype = _common.validate(fn, b1, b2, eps, 0.0, mu_dtype, nu_dtype)
  gamma = _checks.check_non_negative(fn, "gamma", gamma)
  clip_threshold = _checks.check_at_least(fn, "clip_threshold", clip_threshold, 0.0)
  if isinstance(update_interval, (jax.Array, np.ndarray)):  # an array or tracer (optax.inject_hyperparams)
    if not jnp.issubdtype(update_interval.dtype, jnp.integer):
      raise TypeError(f"adamx.{fn}: update_interval must be an integer or an integer array, got {update_interval!r}")
  elif isinstance(update_interval, (bool, np.bool_)) or not isinstance(update_interval, numbers.Integral):
    raise TypeError(f"adamx.{fn}: update_interval must be an integer >= 1, got {update_interval!r}")
  elif update_interval < 1:
    raise ValueError(f"adamx.{fn}: update_interval must be an integer >= 1, got {update_interval!r}")
  _checks.check_choice(fn, "estimator", estimator, ESTIMATORS)
  _checks.check_choice(fn, "probe", probe, PROBES)
  # a typed key, a raw uint32[2] key, or an integer array (a seed injected by optax.inject_hyperparams)
  is_array = isinstance(seed, (jax.Array, np.ndarray)) and (jnp.issubdtype(seed.dtype, jax.dtypes.prng_key)
                                                            or jnp.issubdtype(seed.dtype, jnp.integer))
  is_int = isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)) and seed >= 0
  if not (is_array or is_int):
    raise TypeError(f"adamx.{fn}: seed must be a non-negative int or a JAX PRNG key, got {seed!r}")
  _checks.check_bool(fn, "bias_correction", bias_correction)
  _checks.check_bool(fn, "fresh_hessian", fresh_hessian)
  return b1, b2, eps, gamma, clip_threshold, update_interval, mu_dtype, nu_dtype


def _key(seed: Any) -> jax.Array:
  """A PRNG key from a seed; an int becomes ``jax.random.PRNGKey(seed)``, optax's key format (uint32[2])."""
  is_key = isinstance(seed, jax.Array) and (jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) or seed.shape == (2,))
  return seed if is_key else jax.random.PRNGKey(seed)


def _hutchinson(obj_fn: Callable, params: Any, key: jax.Array, probe: str) -> Any:
  """``u * (H u)`` per leaf (Liu et al. 2023, Algorithm 1), with one key per leaf split from ``key`` as
  ``optax.contrib.hutchinson_estimator_diag_hessian`` does, so that a Rademacher probe is optax's, bit for bit."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  sample = jax.random.rademacher if probe == "rademacher" else jax.random.normal
  # optax casts all probes to the lowest dtype of the tree (which jvp rejects for mixed trees); here each probe has
  # its parameter's dtype, the same values (+-1 are exact in every float dtype).
  u = treedef.unflatten([sample(k, jnp.shape(p), jnp.float32).astype(jnp.result_type(p)) for k, p in
                         zip(keys, leaves)])
  hvp = jax.jvp(jax.grad(obj_fn), (params,), (u,))[1]

  def product(a, b):
    dt = _tree.compute_dtype(a, b)
    return a.astype(dt) * b.astype(dt)

  return jax.tree.map(product, u, hvp)


def _gauss_newton_bartlett(logits_fn: Callable, params: Any, key: jax.Array) -> Any:
  """``B * grad(L_hat) * grad(L_hat)`` with ``L_hat`` the mean cross-entropy on labels sampled from the model's own
  predictions (Liu et al. 2023, Algorithm 2)."""
  rows = []

  def sampled_loss(p):
    logits = logits_fn(p)
    rows.append(int(np.prod(jnp.shape(logits)[:-1])))
    logits = logits.astype(_tree.compute_dtype(logits))
    labels = jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))

  g = jax.grad(sampled_loss)(params)
  return jax.tree.map(lambda x: rows[0] * _tree.abs_sq(x.astype(_tree.compute_dtype(x))), g)


def scale_by_sophia(
    b1: jax.typing.ArrayLike = 0.965,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    gamma: jax.typing.ArrayLike = 0.01,
    clip_threshold: jax.typing.ArrayLike = 1.0,
    update_interval: int = 10,
    *,
    estimator: str = "hutchinson",
    probe: str = "rademacher",
    seed: int | jax.Array = 0,
    bias_correction: bool = True,
    fresh_hessian: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  """Replace updates by Sophia's clipped, Hessian-preconditioned momentum (no learning rate, no sign flip).

  The transform behind :func:`adamx.sophia`, whose docstring gives the update rule.

{update_args}

  Args:
{args}

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`ScaleBySophiaState`.
  """
  fn = "scale_by_sophia"
  b1, b2, eps, gamma, clip_threshold, update_interval, mu_dtype, nu_dtype = _validate(
      fn, b1, b2, eps, gamma, clip_threshold, update_interval, estimator, probe, seed, bias_correction, fresh_hessian,
      mu_dtype, nu_dtype)

  def init(params):
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
      if jnp.iscomplexobj(p):
        raise TypeError(
            f"adamx.{fn}: parameter {jax.tree_util.keystr(path) or '<root>'} is complex ({jnp.result_type(p)}); "
            "Sophia's Hessian-diagonal estimate is defined for real parameters only: optimize the real and "
            "imaginary parts as separate real parameters")
    count, mu, nu = _common.init_moments(fn, params, mu_dtype, nu_dtype)
    return ScaleBySophiaState(count=count, mu=mu, nu=nu, key=_key(seed))

  def estimate_fn(params, obj_fn, logits_fn, hessian_estimate):
    """The estimator of this call, as ``key -> tree of h_hat``; raises if the call does not provide one."""
    given = [name for name, v in (("obj_fn", obj_fn), ("logits_fn", logits_fn),
                                  ("hessian_estimate", hessian_estimate)) if v is not None]
    needed = "obj_fn" if estimator == "hutchinson" else "logits_fn"
    if params is None or len(given) != 1 or given[0] not in (needed, "hessian_estimate"):
      problem = ("params are missing" if params is None else f"got {', '.join(given) or 'none of them'}")
      raise ValueError(
          f"adamx.{fn}: update needs params and exactly one of {needed}= (estimator={estimator!r}) or "
          f"hessian_estimate= to refresh the Hessian estimate; {problem}. Call update(updates, state, params, "
          f"{needed}=...). optax.chain, optax.inject_hyperparams and optax.MultiSteps pass such keyword arguments "
          "only to an optax.GradientTransformationExtraArgs: wrap an adamx transform as "
          "optax.GradientTransformationExtraArgs(*tx) there (adamx's chain and wrappers forward them).")
    if hessian_estimate is not None:
      def given_estimate(key):
        h = hessian_estimate(params, key) if callable(hessian_estimate) else hessian_estimate
        _tree.check_structure(fn, "hessian_estimate", h, "params", params)
        return h
      return given_estimate
    if estimator == "hutchinson":
      return lambda key: _hutchinson(obj_fn, params, key, probe)
    return lambda key: _gauss_newton_bartlett(logits_fn, params, key)

  def update(updates, state, params=None, *, obj_fn=None, logits_fn=None, hessian_estimate=None, **extra_args):
    del extra_args
    _tree.check_structure(fn, "updates", updates, "state.mu", state.mu)
    estimate = estimate_fn(params, obj_fn, logits_fn, hessian_estimate)
    count = _tree.safe_increment(state.count)
    corrections = _common.corrections(b1, 0.0, count, False)

    def refresh(nu_key):
      # Liu et al. 2023, Algorithm 3, lines 7-9: h_t = b2 h_{t-k} + (1 - b2) h_hat_t at t mod k = 1.
      nu, key = nu_key
      key, subkey = jax.random.split(key)

      def ema_leaf(h, h_hat):
        dt = _tree.compute_dtype(h, h_hat)
        return _tree.ema(h.astype(dt), h_hat.astype(dt), b2).astype(h.dtype)

      return jax.tree.map(ema_leaf, nu, estimate(subkey)), key

    # state.count = t - 1, so t mod k = 1 is state.count mod k = 0: steps 1, k + 1, 2k + 1, ...
    due = state.count % update_interval == 0
    if isinstance(due, jax.core.Tracer):  # under jit/scan/vmap: one compiled step whatever the count
      nu, key = jax.lax.cond(due, refresh, lambda nu_key: nu_key, (state.nu, state.key))
    else:  # eager: an eager lax.cond would compile both branches (the estimator) again at every call
      nu, key = refresh((state.nu, state.key)) if due else (state.nu, state.key)
    # Algorithm 3, line 13 preconditions step t with the h_t just refreshed. optax (and the authors' code, which
    # refreshes after the step) use it from the next step on: fresh_hessian=False reads the previous h.
    h_used = nu if fresh_hessian else state.nu

    def leaf(g, m, h):
      g_, m_ = _common.upcast(g, m, h)
      m_new = _tree.ema(m_, g_, b1)  # Algorithm 3, line 6
      # Algorithm 3 has no bias correction; optax divides m_t by 1 - b1^t (the authors' Sophia-H code divides the
      # clipped step instead, a third convention not offered here).
      m_hat = m_new / corrections(m_new.dtype)[0] if bias_correction else m_new
      # Algorithm 3, line 13: clip(m_t / max(gamma h_t, eps), 1), with the bound 1 generalised to clip_threshold.
      ratio = m_hat / jnp.maximum(gamma * h.astype(m_new.dtype), eps)
      return jnp.clip(ratio, -clip_threshold, clip_threshold).astype(g.dtype), m_new.astype(m.dtype)

    updates, mu = _tree.map_leaves(leaf, 2, updates, state.mu, h_used)
    return updates, ScaleBySophiaState(count=count, mu=mu, nu=nu, key=key)

  return GradientTransformation(init, update)


def sophia(
    learning_rate: ScalarOrSchedule = 2e-4,
    b1: jax.typing.ArrayLike = 0.965,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 1e-4,
    gamma: jax.typing.ArrayLike = 0.01,
    clip_threshold: jax.typing.ArrayLike = 1.0,
    update_interval: int = 10,
    *,
    mask: Mask = None,
    estimator: str = "hutchinson",
    probe: str = "rademacher",
    seed: int | jax.Array = 0,
    bias_correction: bool = True,
    fresh_hessian: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
  r"""Sophia (Liu et al., 2023): momentum over an EMA of diagonal Hessian estimates, clipped per coordinate.

  A light-weight second-order method for language-model pre-training: the diagonal Hessian adapts the step to the
  curvature of each coordinate, and the clip bounds the step where the estimate is small, negative or stale.
  ``learning_rate`` is :math:`\eta_t`, ``b1``/``b2`` are :math:`\beta_1,\beta_2`, ``eps`` is :math:`\epsilon`,
  ``gamma`` is :math:`\gamma`, ``clip_threshold`` is :math:`c`, ``update_interval`` is :math:`k`, ``weight_decay``
  is :math:`\lambda` (decoupled). At step :math:`t = 1, 2, \dots` with gradient :math:`g_t`, :math:`m_0 = 0`,
  :math:`h_{1-k} = 0`, and :math:`\hat h_t` the estimator's Hessian diagonal at :math:`\theta_{t-1}`:

  .. math::
    \begin{aligned}
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad \hat m_t = m_t / (1 - \beta_1^t) \\
    h_t &= \begin{cases} \beta_2 h_{t-k} + (1 - \beta_2)\, \hat h_t & t \bmod k = 1 \\ h_{t-1} & \text{otherwise}
      \end{cases} \\
    \theta_t &= \theta_{t-1} - \eta_t \bigl(\operatorname{clip}\bigl(\hat m_t / \max(\gamma\, h_{t-1},
      \epsilon),\ c\bigr) + \lambda\, \theta_{t-1}\bigr)
    \end{aligned}

  with :math:`\operatorname{clip}(x, c) = \max(\min(x, c), -c)` per coordinate. ``fresh_hessian=True`` uses
  :math:`h_t` in place of :math:`h_{t-1}`, and ``bias_correction=False`` :math:`m_t` in place of :math:`\hat m_t`:
  both together, with ``probe="normal"`` and ``c = 1``, are the paper's Algorithm 3. The estimators (Algorithms 1
  and 2 of the paper) are Hutchinson's :math:`\hat h = u \odot (\nabla^2 L(\theta)\, u)` for a random probe
  :math:`u` (Sophia-H) and Gauss-Newton-Bartlett's :math:`\hat h = B\, \nabla \hat L(\theta) \odot \nabla \hat
  L(\theta)`, :math:`\hat L` the mean cross-entropy of the :math:`B` predictions on labels sampled from the model
  itself (Sophia-G).

{update_args}

  Args:
    learning_rate: :math:`\eta_t`, a non-negative number, an array, or a schedule ``count -> value``; default
      ``2e-4``, the authors' README example (the step is bounded by :math:`\eta_t c` per coordinate).
{args}
    weight_decay: :math:`\lambda`, decoupled, >= 0 (default ``1e-4``, optax's; the paper uses 0.1 to 0.2).
    mask: which parameters decay: ``None`` (all), a pytree of bools shaped like the params (or a prefix), or a
      callable ``params -> pytree of bools``.

  Returns:
    A :class:`adamx.GradientTransformation`: ``chain(scale_by_sophia(...), add_decoupled_weight_decay(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``. :func:`adamx.chain` passes ``obj_fn``/``logits_fn``/
    ``hessian_estimate`` on to ``scale_by_sophia``; ``optax.chain`` drops them unless the adamx transform is wrapped
    as ``optax.GradientTransformationExtraArgs(*tx)``.

  Example:
    Sophia-H, with the loss of the current batch as ``obj_fn``:

    >>> import jax, jax.numpy as jnp, adamx
    >>> x = jax.random.normal(jax.random.key(0), (32, 3))
    >>> y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda params: jnp.mean((x @ params["w"] - y) ** 2)
    >>> tx = adamx.sophia(learning_rate=0.02)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p, obj_fn=loss))
    >>> for _ in range(300):
    ...   updates, state = step(params, state)
    ...   params = adamx.apply_updates(params, updates)
    >>> bool(loss(params) < 1e-2 * loss({"w": jnp.zeros(3)}))
    True

    Sophia-G on a softmax classifier: ``logits_fn`` gives the logits of the batch, adamx samples the labels:

    >>> labels = jnp.argmax(x @ jax.random.normal(jax.random.key(1), (3, 4)), axis=-1)  # a linear teacher
    >>> def logits_fn(params):
    ...   return x @ params["w"]
    >>> def ce(params):
    ...   logp = jax.nn.log_softmax(logits_fn(params))
    ...   return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
    >>> tx = adamx.sophia(learning_rate=0.05, estimator="gnb", seed=1)
    >>> params = {"w": jnp.zeros((3, 4))}
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(ce)(p), s, p, logits_fn=logits_fn))
    >>> for _ in range(100):
    ...   updates, state = step(params, state)
    ...   params = adamx.apply_updates(params, updates)
    >>> bool(ce(params) < 0.5)  # from log(4) = 1.39
    True

  References:
    Liu, Li, Hall, Liang & Ma, `Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
    Pre-training <https://arxiv.org/abs/2305.14342>`_, ICLR 2024 (Algorithms 1-3).

  .. warning::
    * The defaults are ``optax.contrib.sophia``'s conventions (bias-corrected momentum, the refreshed estimate used
      from the next step, Rademacher probes, ``eps = 1e-8``), and with the same seed its probes are optax's, bit for
      bit. The paper's Algorithm 3 is ``bias_correction=False, fresh_hessian=True, probe="normal"`` (with
      :math:`\epsilon = 10^{-12}`). The authors' Sophia-G code refreshes after the step (the same :math:`\theta` as
      the paper, but no estimate before step :math:`k + 1`), adds ``1e-15`` to the denominator instead of taking the
      maximum, and multiplies the denominator by ``bs`` at ``step(bs=...)`` where adamx's GNB estimator includes
      :math:`B` in :math:`\hat h`; its ``rho`` is :math:`\gamma` here.
    * Complex parameters are not supported (a TypeError at ``init``).
    * optax's ``sophia`` has no default learning rate and names the mask ``weight_decay_mask``; it accepts
      ``clip_threshold=None`` for no clipping, adamx ``float("inf")``.
  """
  fn = "sophia"
  _validate(fn, b1, b2, eps, gamma, clip_threshold, update_interval, estimator, probe, seed, bias_correction,
            fresh_hessian, mu_dtype, nu_dtype)
  _common.validate_optimizer(fn, learning_rate, weight_decay, mask)
  return chain(
      scale_by_sophia(b1, b2, eps, gamma, clip_threshold, update_interval, estimator=estimator, probe=probe, seed=seed,
                      bias_correction=bias_correction, fresh_hessian=fresh_hessian, mu_dtype=mu_dtype,
                      nu_dtype=nu_dtype),
      add_decoupled_weight_decay(weight_decay, mask),
      scale_by_learning_rate(learning_rate),
  )


for _fn in (scale_by_sophia, sophia):
  if _fn.__doc__:  # None under python -OO
    _fn.__doc__ = _fn.__doc__.replace("{update_args}\n", _UPDATE_ARGS + "\n")
_common.document(scale_by_sophia, sophia, args=_ARGS)
