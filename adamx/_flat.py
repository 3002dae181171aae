"""A flat parameter store: every parameter of one dtype in one contiguous 1-D buffer.

Why: a jitted optimizer step over a pytree runs a few loops *per leaf* (on XLA:CPU, which makes no multi-output
fusions, three for Adam: mu, nu, params). With thousands of small leaves the per-loop overhead and the compile
time grow with the leaf count, however few parameters there are. Keeping the parameters flat, one buffer per dtype,
makes the optimizer step a handful of loops whatever the model's tree, and the compile time constant.

The trade-off, which is why this is an explicit opt-in and not what ``adamx.adamw`` does by itself:

* the model reads its parameters through :meth:`FlatLayout.unpack` (static slices and reshapes, which XLA fuses into
  their consumers), and the gradient with respect to the flat buffer is assembled by the backward pass (one more
  write of the gradients, inside the model's step rather than the optimizer's);
* anything that works *per leaf* sees one leaf per dtype: weight-decay masks, ``partition``, LAMB's trust ratio,
  ``clip_by_block_rms`` and per-leaf diagnostics no longer mean what they mean on the tree. Elementwise optimizers
  (Adam, AdamW, AMSGrad, Adamax, NAdam, RAdam, AdaBelief, Yogi, Lion) give bitwise the same numbers on the flat
  store as on the tree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class _Slot:
  group: str  # the dtype name of the buffer the leaf lives in
  offset: int
  shape: tuple[int, ...]

  @property
  def size(self) -> int:
    return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class FlatLayout:
  """Where each leaf of a parameter tree lives in the flat buffers made by :func:`flatten_params`.

  A static, hashable description (tree structure, dtypes, offsets and shapes): close over it inside ``jax.jit``.
  ``pack`` turns a tree shaped like the original parameters (params, gradients, anything of the same structure
  and dtypes) into ``{dtype name: 1-D buffer}``; ``unpack`` turns such buffers back into the tree.
  """

  treedef: Any
  slots: tuple[_Slot, ...]
  sizes: tuple[tuple[str, int], ...]  # (group, total elements), in order of first appearance

  def pack(self, tree: Any) -> dict[str, jax.Array]:
    """``{dtype name: 1-D buffer}`` holding the leaves of ``tree`` (which must match the layout) in order."""
    leaves = self.treedef.flatten_up_to(tree)
    if len(leaves) != len(self.slots):
      raise ValueError(f"adamx.FlatLayout.pack: expected {len(self.slots)} leaves, got {len(leaves)}")
    parts: dict[str, list[jax.Array]] = {g: [] for g, _ in self.sizes}
    for i, (slot, leaf) in enumerate(zip(self.slots, leaves)):
      leaf = jnp.asarray(leaf)
      if tuple(leaf.shape) != slot.shape or leaf.dtype.name != slot.group:
        raise ValueError(
            f"adamx.FlatLayout.pack: leaf {i} has shape {tuple(leaf.shape)} and dtype {leaf.dtype.name}; the "
            f"layout expects {slot.shape} and {slot.group}")
      parts[slot.group].append(leaf.reshape(-1))
    return {g: (jnp.concatenate(p) if len(p) > 1 else p[0]) for g, p in parts.items()}

  def unpack(self, flat: dict[str, jax.Array]) -> Any:
    """The tree whose leaves are the slices of ``flat`` given by the layout (static slices: free under jit)."""
    missing = {g for g, _ in self.sizes} - set(flat)
    if missing:
      raise ValueError(f"adamx.FlatLayout.unpack: no buffer for dtype(s) {sorted(missing)}; got {sorted(flat)}")
    for g, n in self.sizes:
      if jnp.shape(flat[g]) != (n,):
        raise ValueError(f"adamx.FlatLayout.unpack: the {g} buffer must have shape ({n},), got {jnp.shape(flat[g])}")
    leaves = [jax.lax.slice_in_dim(flat[s.group], s.offset, s.offset + s.size).reshape(s.shape)
              for s in self.slots]
    return self.treedef.unflatten(leaves)


def flatten_params(params: Any) -> tuple[dict[str, jax.Array], FlatLayout]:
  """Pack a parameter tree into one contiguous 1-D buffer per dtype, for a faster optimizer step on many leaves.

  Returns ``(flat, layout)``: ``flat`` is ``{dtype name: 1-D array}`` (dtypes kept, bfloat16 and complex leaves
  included, in order of first appearance) and ``layout.unpack(flat)`` rebuilds the tree. Train on ``flat``: write
  the loss as a function of ``flat`` that unpacks it, so gradients come out flat too, and give ``flat`` to the
  optimizer. See the module docstring of ``adamx._flat`` for the trade-off (per-leaf rules such as weight-decay
  masks see one leaf per dtype).

  Args:
    params: a pytree of arrays (any dtypes; each dtype gets its own buffer).

  Returns:
    ``(flat, layout)``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> flat, layout = adamx.flatten_params(params)
    >>> loss = lambda flat, x: jnp.sum((x @ layout.unpack(flat)["w"] + layout.unpack(flat)["b"]) ** 2)
    >>> tx = adamx.adamw(1e-2)
    >>> state = tx.init(flat)
    >>> grads = jax.grad(loss)(flat, jnp.ones((4, 3)))
    >>> updates, state = tx.update(grads, state, flat)
    >>> flat = adamx.apply_updates(flat, updates)
    >>> layout.unpack(flat)["w"].shape
    (3, 2)
  """
  leaves, treedef = jax.tree.flatten(params)
  if not leaves:
    raise ValueError("adamx.flatten_params: params has no leaves")
  offsets: dict[str, int] = {}
  slots = []
  for leaf in leaves:
    dtype = np.dtype(jnp.result_type(leaf)).name
    shape = tuple(int(d) for d in jnp.shape(leaf))
    slot = _Slot(dtype, offsets.get(dtype, 0), shape)
    offsets[dtype] = slot.offset + slot.size
    slots.append(slot)
  layout = FlatLayout(treedef, tuple(slots), tuple(offsets.items()))
  return layout.pack(params), layout
