"""``inject_hyperparams``: numeric hyperparameters as optimizer state, readable and changeable between steps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _fused, _tree
from adamx._base import GradientTransformation, _accepts_extra_args

_NUMERIC_ANNOTATIONS = ("ArrayLike", "Schedule", "float")
_OTHER_ANNOTATIONS = ("Any", "Mask", "Tree")  # masks and pytrees: optax's mask is Union[Any, Callable[[ArrayTree]...
_TRACER_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError,
                  jax.errors.TracerArrayConversionError)


class InjectHyperparamsState(NamedTuple):
  """State of a transform made by :func:`inject_hyperparams`."""

  count: jax.Array  # int32 scalar: the number of updates so far (the step at which schedules are evaluated)
  hyperparams: dict[str, jax.Array]  # every numeric hyperparameter, a scalar array: the value of the last step
  inner_state: Any  # the state of the wrapped optimizer


def _is_numeric_array(value: Any) -> bool:
  return isinstance(value, (jax.Array, np.ndarray)) and jnp.issubdtype(value.dtype, jnp.number)


def _schedulable(param: inspect.Parameter) -> bool:
  """Whether a callable passed for ``param`` is a schedule: its default is a number, or it has no (or a None)
  default and its annotation is numeric (mentions ``ArrayLike``, ``Schedule`` or ``float``, and not ``Any``,
  ``Mask`` or ``Tree``: a mask is a callable too)."""
  default = param.default
  if default is not inspect.Parameter.empty and default is not None:
    return _checks.concrete_number(default) is not None
  annotation = param.annotation
  if annotation is inspect.Parameter.empty:
    return False
  text = annotation if isinstance(annotation, str) else repr(annotation)
  return any(w in text for w in _NUMERIC_ANNOTATIONS) and not any(w in text for w in _OTHER_ANNOTATIONS)


def _int_parameter(param: inspect.Parameter) -> bool:
  """Whether ``param`` takes a Python int that shapes the computation: its default is an int, or its annotation
  is ``int`` or ``int | None`` (a ``None`` default standing for an int one, as ``min_dim_size_to_factor``)."""
  if type(param.default) is int:  # noqa: E721 (bool is excluded on purpose)
    return True
  annotation = param.annotation
  text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
  return text.replace(" ", "") in ("int", "int|None", "Optional[int]")


def _classify(signature: inspect.Signature, arguments: dict[str, Any], static_args: set[str]):
  """Split bound arguments into ``(numeric, schedules, static)`` dicts (see :func:`inject_hyperparams`)."""
  numeric, schedules, static = {}, {}, {}
  for name, value in arguments.items():
    param = signature.parameters[name]
    if (name in static_args or _int_parameter(param) or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        or isinstance(value, (bool, np.bool_))):
      static[name] = value
    elif _checks.concrete_number(value) is not None or _is_numeric_array(value):
      numeric[name] = value
    elif callable(value) and _schedulable(param):
      schedules[name] = value
    else:
      static[name] = value
  return numeric, schedules, static


def _as_hyperparam(value: Any, dtype: Any) -> jax.Array:
  """A scalar array of ``dtype``; ``dtype=None`` keeps a floating array's own dtype (a user's assignment)."""
  if jnp.iscomplexobj(value):
    value = jnp.real(value)  # as adamx._checks.check_type: only the real part of a hyperparameter is meaningful
  if dtype is None:
    dtype = value.dtype if _is_numeric_array(value) and jnp.issubdtype(value.dtype, jnp.floating) else jnp.float32
  return jnp.asarray(value, jax.dtypes.canonicalize_dtype(dtype))  # float64 is float32 unless x64 is on


def _params_dtype(params: Any) -> Any:
  """``result_type(float32, real dtypes of the params)``: float32, or float64 for float64 params."""
  return jnp.result_type(jnp.float32, *[_tree.real_dtype(_tree.compute_dtype(x)) for x in jax.tree.leaves(params)
                                        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)])


def inject_hyperparams(
    factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
  """Make every numeric hyperparameter of an optimizer part of its state: log it, change it, schedule it.

  ``inject_hyperparams(adamx.adamw)`` is a factory with ``adamw``'s signature. The transform it returns keeps each
  numeric argument in ``state.hyperparams[name]`` (a scalar array) and rebuilds ``adamw`` from those values inside
  every ``update``. So a training loop can read the learning rate actually used for logging, set a new value
  between two steps of a jitted step function without recompiling it, ``vmap`` over hyperparameters, and use a
  schedule (a callable ``count -> value``) for *any* numeric hyperparameter, evaluated at the step count
  (``state.count``, from 0) every step. The numbers are those of the plain optimizer (see the warning).

  Which arguments become state is decided from their values and the factory's signature, so ``static_args`` is
  rarely needed:

  * numeric: real numbers and numeric arrays (not bools); stored as arrays of ``hyperparam_dtype``;
  * schedules: callables passed for an argument whose default is a number, or which has no (or a ``None``)
    default and a numeric annotation (``ArrayLike``, ``ScalarOrSchedule``, ``float``; not a mask's); the value of
    the step is stored in ``state.hyperparams``;
  * static (closed over, never traced): everything else (bools, strings, ``None``, dtypes, masks and other
    callables, transforms, tuples), arguments whose default is a Python ``int`` or whose annotation is ``int`` or
    ``int | None`` (step counts, periods and sizes shape the computation), ``*args``/``**kwargs``, and the names
    in ``static_args``.

  Concrete values are validated once at construction by the factory itself (``inject_hyperparams(adamx.adamw)(
  learning_rate=-1.0)`` raises ``adamx.adamw``'s error), and the factory is traced once with abstract
  hyperparameters so that an argument that must stay concrete is reported now, not at the first jitted step.

  Args:
    factory: a function returning an adamx or optax transform (an adamx optimizer, ``adamx.clip_by_global_norm``,
      ``optax.adam``, your own).
    static_args: a name or names of ``factory``'s parameters to keep static even though their values are numbers
      or callables.
    hyperparam_dtype: the dtype of the stored hyperparameters; ``None``: ``result_type(float32, params)`` at
      ``init`` (float32, or float64 for float64 params; never bfloat16, which would round a learning rate to
      three digits).

  Returns:
    A factory with ``factory``'s signature whose transforms have :class:`InjectHyperparamsState`.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> sched = adamx.warmup_cosine_schedule(0.0, 1e-2, warmup_steps=10, decay_steps=100)
    >>> tx = adamx.inject_hyperparams(adamx.adamw)(learning_rate=sched, weight_decay=0.1)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> step = jax.jit(tx.update)
    >>> updates, state = step({"w": jnp.ones(3)}, state, params)
    >>> sorted(state.hyperparams)
    ['b1', 'b2', 'eps', 'eps_root', 'learning_rate', 'weight_decay']
    >>> state.hyperparams["weight_decay"] = jnp.asarray(0.01, jnp.float32)  # same dtype: no recompilation
    >>> updates, state = step({"w": jnp.ones(3)}, state, params)

  .. warning::
    * A value written into ``state.hyperparams`` for a *scheduled* name is overwritten by the schedule.
    * Write arrays of the stored dtype (``jnp.asarray(x, old.dtype)``): a Python float changes the jitted step's
      input types and compiles it once more.
    * Learning rate, weight decay and ``eps`` give bit for bit the plain optimizer's numbers (op by op; a jitted
      step may differ by float32 rounding where XLA fuses the two programs differently). Decay rates such as
      ``b1``/``b2`` do not quite: the plain optimizer computes ``1 - b`` and the bias correction ``-expm1(t log b)``
      from the Python float in float64 on the host (see :func:`adamx.adam`), the injected one in float32 from
      ``b`` rounded to float32. Measured on Adam over 200 steps: updates within 1.3e-6 relative and params within
      1e-7 for ``b2`` = 0.999 or 0.9999; within float32 rounding (most often bit for bit) when the values are
      float32 numbers such as 0.875. List them in ``static_args`` to keep the plain arithmetic.
    * Like ``optax.inject_hyperparams``, except: the hyperparameter dtype is at least float32 (optax uses the
      params' highest dtype, bfloat16 for bfloat16 params and complex64 for complex ones); non-numeric
      callables (masks, dtypes) are static without ``static_args``; the state has no per-schedule state.
  """
  fn = "inject_hyperparams"
  if not callable(factory):
    raise TypeError(f"adamx.{fn}: factory must be a callable returning a gradient transformation, got {factory!r}")
  static_args = {static_args} if isinstance(static_args, str) else set(static_args)
  signature = inspect.signature(factory)
  unknown = static_args - set(signature.parameters)
  if unknown:
    raise ValueError(f"adamx.{fn}: static_args must name parameters of {getattr(factory, '__name__', factory)} "
                     f"({', '.join(signature.parameters)}), got {sorted(unknown)}")
  hyperparam_dtype = _checks.canonicalize_dtype(fn, "hyperparam_dtype", hyperparam_dtype)
  name = getattr(factory, "__name__", repr(factory))

  @functools.wraps(factory)
  def injected(*args: Any, **kwargs: Any) -> GradientTransformation:
    try:
      bound = signature.bind(*args, **kwargs)
    except TypeError as e:
      raise TypeError(f"adamx.{fn}: {name}{signature}: {e}") from None
    bound.apply_defaults()
    numeric, schedules, static = _classify(signature, bound.arguments, static_args)
    names = [k for k in bound.arguments if k in numeric or k in schedules]

    def build(hyperparams):
      call = inspect.BoundArguments(signature, {**bound.arguments, **hyperparams})
      return factory(*call.args, **call.kwargs)

    # Concrete values are validated by the factory itself, now; then one abstract trace checks that every
    # injected hyperparameter may be a traced value.
    zero = jnp.zeros([], jnp.int32)
    build({**numeric, **{k: s(zero) for k, s in schedules.items()}})
    try:
      jax.eval_shape(lambda hp: (build(hp), zero)[1], {k: jax.ShapeDtypeStruct((), jnp.float32) for k in names})
    except _TRACER_ERRORS as e:
      raise TypeError(
          f"adamx.{fn}: {name} needs a concrete value for one of the injected hyperparameters "
          f"({', '.join(names)}); list it in static_args. The error under tracing was:\n{e}") from None

    def init(params):
      dtype = hyperparam_dtype or _params_dtype(params)
      count = jnp.zeros([], jnp.int32)
      hyperparams = {k: _as_hyperparam(schedules[k](count) if k in schedules else numeric[k], dtype) for k in names}
      return InjectHyperparamsState(count=count, hyperparams=hyperparams, inner_state=build(hyperparams).init(params))

    def next_hyperparams(state):
      if not isinstance(state, InjectHyperparamsState) or set(state.hyperparams) != set(names):
        got = sorted(state.hyperparams) if isinstance(state, InjectHyperparamsState) else type(state).__name__
        raise ValueError(f"adamx.{fn}: state must be the InjectHyperparamsState of init with hyperparams "
                         f"{sorted(names)}, got {got}")
      hyperparams = {}
      for k in names:
        old = state.hyperparams[k]
        if k in schedules:
          hyperparams[k] = _as_hyperparam(schedules[k](state.count), jnp.result_type(old))
        else:
          hyperparams[k] = _as_hyperparam(old, hyperparam_dtype)
      return hyperparams

    def update(updates, state, params=None, **extra_args):
      hyperparams = next_hyperparams(state)
      inner = build(hyperparams)
      if _accepts_extra_args(inner.update):
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
      else:
        updates, inner_state = inner.update(updates, state.inner_state, params)
      return updates, InjectHyperparamsState(count=_tree.safe_increment(state.count), hyperparams=hyperparams,
                                             inner_state=inner_state)

    def step(grads, state, params, kernel, extra_args):  # adamx.apply_step: the inner optimizer's fused step
      hyperparams = next_hyperparams(state)
      params, inner_state = _fused.apply_step(build(hyperparams), grads, state.inner_state, params, kernel=kernel,
                                              **extra_args)
      return params, InjectHyperparamsState(count=_tree.safe_increment(state.count), hyperparams=hyperparams,
                                            inner_state=inner_state)

    return _fused.register_step(GradientTransformation(init, update), step)

  return injected
