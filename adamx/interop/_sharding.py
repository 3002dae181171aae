"""Sharded optimizer state: the state of sharded params follows their ``NamedSharding``; ZeRO-1 shards the state of
replicated params across the data axis.

``tx.init(params)`` creates each moment with ``jnp.zeros_like(param)``, so the moments of a sharded parameter are
created sharded like it, on its devices (eagerly; under ``jit`` with explicit mesh axes too). The helpers here add
one axis to that layout: every state leaf that is replicated along ``axis`` and has a dimension divisible by the
axis size is split along it (ZeRO stage 1, Rajbhandari et al. 2020, arXiv:1910.02054). An elementwise optimizer
computes each entry from the same inputs whatever the layout, so the numbers are bitwise those of the unsharded
run; under ``jax.jit`` with these shardings XLA's partitioner updates each shard where it lives and all-gathers
the updates of replicated params, with no host round-trip.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def _axes(entry: Any) -> tuple[str, ...]:
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _leaf_spec(x: Any, mesh: Mesh) -> list[Any]:
  """The leaf's PartitionSpec on ``mesh`` as a list of one entry per dimension (replicated if it has none)."""
  ndim = np.ndim(x)
  sharding = getattr(x, "sharding", None)
  spec: list[Any] = []
  if isinstance(sharding, NamedSharding) and dict(sharding.mesh.shape) == dict(mesh.shape):
    spec = list(sharding.spec)
  return (spec + [None] * ndim)[:ndim]


def state_sharding(state: Any, mesh: Mesh, axis: str | None = "data") -> Any:
  """The ``NamedSharding`` of every leaf of ``state`` on ``mesh``, with ``axis`` added where it fits (ZeRO-1).

  A leaf keeps the ``NamedSharding`` it has (the state of a sharded param follows the param); others start
  replicated. If ``axis`` is given and the leaf is not yet split along it, its largest dimension that is unsharded
  and divisible by ``mesh.shape[axis]`` is split along ``axis``; scalars (the step count, injected
  hyperparameters) and leaves with no such dimension stay replicated along it.

  Args:
    state: an optimizer state (arrays, or ``ShapeDtypeStruct`` from ``jax.eval_shape(tx.init, params)``).
    mesh: the device mesh.
    axis: the mesh axis to split the state across (``None``: only the params' own layout).

  Returns:
    A pytree of ``NamedSharding`` with ``state``'s structure, for ``jax.device_put`` or as the ``out_shardings``
    (and ``in_shardings``) of a jitted training step.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> state = adamx.adamw(1e-3).init({"w": jnp.zeros((4, 2))})
    >>> adamx.interop.state_sharding(state, mesh)[0].mu["w"].spec == jax.sharding.PartitionSpec("data")
    True
  """
  if axis is not None and axis not in mesh.shape:
    raise ValueError(f"adamx.interop.state_sharding: axis must be an axis of the mesh ({', '.join(mesh.axis_names)}), "
                     f"got {axis!r}")
  size = mesh.shape[axis] if axis is not None else 1

  def leaf(x):
    spec = _leaf_spec(x, mesh)
    used = {a for e in spec for a in _axes(e)}
    if axis is not None and axis not in used:
      shape = np.shape(x)
      free = [d for d in range(len(shape)) if spec[d] is None and shape[d] % size == 0]
      if free:
        d = max(free, key=lambda d: (shape[d], -d))
        spec[d] = axis
    while spec and spec[-1] is None:
      spec.pop()
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(leaf, state)


def shard_state(state: Any, mesh: Mesh, axis: str | None = "data") -> Any:
  """``state`` placed with :func:`state_sharding` (ZeRO-1 along ``axis``): each device keeps its slice only.

  Args:
    state: the optimizer state, e.g. ``tx.init(params)``.
    mesh: the device mesh.
    axis: the mesh axis to split the state across.

  Returns:
    The same state, resharded (``jax.device_put``, device to device).

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    >>> params = {"w": jnp.zeros((8, 4))}
    >>> tx = adamx.adamw(1e-3)
    >>> state = adamx.interop.shard_state(tx.init(params), mesh, axis="data")
    >>> shardings = jax.tree.map(lambda x: x.sharding, (params, state))
    >>> def step(params, state, grads):
    ...   updates, state = tx.update(grads, state, params)
    ...   return adamx.apply_updates(params, updates), state
    >>> step = jax.jit(step, out_shardings=shardings)
    >>> params, state = step(params, state, {"w": jnp.ones((8, 4))})
  """
  return jax.device_put(state, state_sharding(state, mesh, axis))


def bytes_per_device(tree: Any) -> dict[Any, int]:
  """The bytes of ``tree``'s arrays held by each device (the sum of its shards' sizes), for memory accounting.

  Args:
    tree: a pytree of ``jax.Array``.

  Returns:
    ``{device: bytes}``.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> sum(adamx.interop.bytes_per_device({"w": jnp.zeros((8, 4))}).values())
    128
  """
  out: dict[Any, int] = {}
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out
