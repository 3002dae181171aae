"""The optax-compatible protocol: ``GradientTransformation``, ``chain``, ``apply_updates``.

An adamx transform is a NamedTuple ``(init, update)`` with exactly optax's calling convention, so an adamx
transform works inside ``optax.chain`` and an optax transform works inside :func:`adamx.chain`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp

from adamx import _tree

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
ScalarOrSchedule = Union[float, jax.typing.ArrayLike, Schedule]


class TransformInitFn(Protocol):

  def __call__(self, params: Params) -> OptState:
    ...


class TransformUpdateFn(Protocol):

  def __call__(
      self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
  ) -> tuple[Updates, OptState]:
    ...


class GradientTransformation(NamedTuple):
  """A pure gradient transformation: ``init(params) -> state`` and
  ``update(updates, state, params=None, **extra_args) -> (updates, state)``.

  The same shape as ``optax.GradientTransformation`` (and ``GradientTransformationExtraArgs``): either library's
  transforms can be used inside the other's ``chain``. ``update`` must be a pure function of its inputs so that it
  can be ``jax.jit``-compiled; ``state`` is a pytree of arrays.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.adam(learning_rate=1e-2)
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    >>> params = adamx.apply_updates(params, updates)
  """

  init: TransformInitFn
  update: TransformUpdateFn


class EmptyState(NamedTuple):
  """The state of a stateless transform."""


def identity() -> GradientTransformation:
  """A transform that returns its updates unchanged and keeps no state."""

  def init(params):
    del params
    return EmptyState()

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return updates, state

  return GradientTransformation(init, update)


def _accepts_extra_args(update: Callable[..., Any]) -> bool:
  try:
    parameters = inspect.signature(update).parameters.values()
  except (TypeError, ValueError):
    return True
  return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
  """Compose transforms: each one's output updates are the next one's input.

  The state is a tuple with one entry per transform. Extra keyword arguments given to ``update`` are passed to
  every transform whose ``update`` accepts ``**extra_args`` (adamx transforms, optax's
  ``GradientTransformationExtraArgs``) and dropped for the others (plain optax ``GradientTransformation``).

  Args:
    *transforms: adamx or optax transforms (anything with ``init`` and ``update``).

  Returns:
    A :class:`GradientTransformation` whose state is ``tuple(t.init(params) for t in transforms)``.

  Example:
    >>> import adamx
    >>> tx = adamx.chain(adamx.scale_by_adam(), adamx.scale_by_learning_rate(1e-3))
  """
  for i, t in enumerate(transforms):
    if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
      raise TypeError(f"adamx.chain: argument {i} must be a gradient transformation with init and update, got {t!r}")
  pass_extra = tuple(_accepts_extra_args(t.update) for t in transforms)

  def init(params):
    return tuple(t.init(params) for t in transforms)

  def update(updates, state, params=None, **extra_args):
    if not isinstance(state, tuple) or len(state) != len(transforms):
      raise ValueError(
          f"adamx.chain: state must be a tuple of {len(transforms)} entries (one per transform, as returned by "
          f"init), got {type(state).__name__} of length {len(state) if isinstance(state, tuple) else '?'}")
    new_state = []
    for t, s, extra in zip(transforms, state, pass_extra):
      updates, s = t.update(updates, s, params, **extra_args) if extra else t.update(updates, s, params)
      new_state.append(s)
    return updates, tuple(new_state)

  return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
  """``params + updates``, leaf by leaf, each result keeping its parameter's dtype.

  Args:
    params: a pytree of arrays.
    updates: a pytree of the same structure (the output of a transform's ``update``).

  Returns:
    The new parameters; a bfloat16 parameter stays bfloat16 even if its update is float32.
  """
  _tree.check_structure("apply_updates", "updates", updates, "params", params)

  def add(p, u):
    if p is None:
      return None
    p = jnp.asarray(p)
    return (p + u).astype(p.dtype)

  return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)
