"""Parameter groups: ``masked`` (transform some leaves, pass the others through), ``partition`` (a transform per
label, like ``torch.optim`` param groups and ``optax.partition``) and the path-based labelling helpers
``path_labels``, ``decay_mask`` and ``decay_labels``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks
from adamx._base import GradientTransformation, _accepts_extra_args
from adamx.transforms._weight_decay import Mask, leaf_masks

#: Word prefixes of a path that mark a parameter as exempt from weight decay (see :func:`decay_mask`).
NO_DECAY_PATTERNS = ("bias", "norm", "ln", "bn", "scale", "embed")


class MaskedNode(NamedTuple):
  """The placeholder that :func:`masked` puts in place of each masked-out leaf.

  An empty NamedTuple: a pytree node without leaves, so ``jax.tree.map`` and every transform skip it. It appears in
  the inner state of :func:`masked` and :func:`partition` where a parameter belongs to another group (as
  ``optax.MaskedNode`` does in optax's state).
  """


class MaskedState(NamedTuple):
  """State of :func:`masked`: the inner transform's state, built on the params with masked-out leaves replaced by
  :class:`MaskedNode`."""

  inner_state: Any


class PartitionState(NamedTuple):
  """State of :func:`partition`: ``{label: MaskedState}``, one entry per transform."""

  inner_states: dict[Hashable, MaskedState]


def _check_bool(fn: str, m: Any, path: str) -> None:
  if not isinstance(m, (bool, np.bool_)):
    raise TypeError(f"adamx.{fn}: mask leaves must be Python bools (a whole leaf is in or out, and the choice is "
                    f"static), got {m!r} for {path}; for an elementwise weight-decay mask use the mask argument of "
                    "adamx.add_decoupled_weight_decay")


def _leaf_masks(fn: str, mask: Mask, tree: Any) -> list[bool]:
  """One Python bool per leaf of ``tree`` (see ``leaf_masks``); bool arrays (elementwise masks) are rejected."""
  masks = leaf_masks(fn, mask, tree)
  for i, m in enumerate(masks):
    if not isinstance(m, (bool, np.bool_)):
      _check_bool(fn, m, jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(tree)[0][i][0]) or "<root>")
  return [bool(m) for m in masks]


def _keep(masks: list[bool], tree: Any) -> Any:
  leaves, treedef = jax.tree.flatten(tree)
  return treedef.unflatten([x if m else MaskedNode() for m, x in zip(masks, leaves)])


def _masked_fn(fn: str, inner: GradientTransformation, mask: Mask) -> GradientTransformation:
  if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
    raise TypeError(f"adamx.{fn}: inner must be a gradient transformation with init and update, got {inner!r}")
  if mask is None:
    raise TypeError(f"adamx.{fn}: mask must be a pytree of bools or a callable params -> pytree of bools, got None")
  _checks.check_mask(fn, mask)
  if not callable(mask):
    for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
      _check_bool(fn, m, jax.tree_util.keystr(path) or "<root>")
  pass_extra = _accepts_extra_args(inner.update)

  def init(params):
    return MaskedState(inner_state=inner.init(_keep(_leaf_masks(fn, mask, params), params)))

  def update(updates, state, params=None, **extra_args):
    # As optax.masked: a callable mask sees the updates here (the params at init), so update works without params.
    masks = _leaf_masks(fn, mask, updates)
    masked_params = None if params is None else _keep(masks, params)
    if pass_extra:
      new, inner_state = inner.update(_keep(masks, updates), state.inner_state, masked_params, **extra_args)
    else:
      new, inner_state = inner.update(_keep(masks, updates), state.inner_state, masked_params)
    leaves, treedef = jax.tree.flatten(updates)
    new_leaves = treedef.flatten_up_to(new)
    return treedef.unflatten([n if m else u for m, n, u in zip(masks, new_leaves, leaves)]), MaskedState(inner_state)

  return GradientTransformation(init, update)


def masked(inner: GradientTransformation, mask: Mask) -> GradientTransformation:
  """Apply ``inner`` to the leaves where ``mask`` is True; pass the other updates through unchanged.

  The semantics of ``optax.masked``: ``inner`` sees (and keeps state for) only the selected leaves; the others are
  replaced by :class:`MaskedNode` in what it receives, so a stateful ``inner`` stores no moments for them. Where a
  mask is a prefix of the params, optax replaces a masked-out *subtree* by one ``MaskedNode``; adamx replaces each
  of its leaves, so the inner state keeps the params' tree structure (the same arrays either way).

  Args:
    inner: an adamx or optax transform.
    mask: a pytree of Python bools with the structure of the params (or a prefix of it: one bool covers a
      subtree), or a callable returning one; the callable gets the params at ``init`` and the updates at
      ``update``, so it should depend on the tree's structure, paths and shapes only (as :func:`adamx.decay_mask`
      does). The mask is static: it must not depend on traced values.

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`MaskedState`.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    >>> tx = adamx.masked(adamx.clip(0.5), lambda p: jax.tree.map(lambda x: x.ndim > 1, p))  # clip matrices only
    >>> updates, _ = tx.update({"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, tx.init(params))
    >>> updates["w"][0, 0].item(), updates["b"][0].item()
    (0.5, 1.0)
  """
  return _masked_fn("masked", inner, mask)


def partition(transforms: Mapping[Hashable, GradientTransformation],
              param_labels: Any | Callable[[Any], Any]) -> GradientTransformation:
  """A different transform for each group of parameters: ``torch.optim`` param groups, in optax's form.

  The semantics of ``optax.partition`` (``multi_transform``): every leaf has a label, and the transform of that
  label updates it (each transform runs :func:`adamx.masked` to its group, so it keeps state for its own leaves
  only). ``torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}])``
  is ``partition({"decay": adamw(weight_decay=0.1), "no_decay": adamw(weight_decay=0.0)}, adamx.decay_labels)``.

  Args:
    transforms: ``{label: transform}``; labels are any hashable values (strings usually).
    param_labels: a pytree of labels with the structure of the params (or a prefix of it), or a callable
      ``params -> labels`` such as :func:`adamx.decay_labels` or one made by :func:`adamx.path_labels`. The callable
      gets the params at ``init`` and the updates at ``update``. Every label must be a key of ``transforms``;
      a transform whose label no parameter carries keeps an empty state.

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`PartitionState`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    >>> tx = adamx.partition({"decay": adamx.adamw(1e-3, weight_decay=0.1),
    ...                       "no_decay": adamx.adamw(1e-3, weight_decay=0.0)}, adamx.decay_labels)
    >>> state = tx.init(params)
    >>> sorted(state.inner_states)
    ['decay', 'no_decay']

  .. warning::
    optax's label callable and mask callables receive the *updates* in ``update``; so do adamx's. A labelling
    function must therefore depend on structure, paths and shapes only.
  """
  fn = "partition"
  if not isinstance(transforms, Mapping) or not transforms:
    raise TypeError(f"adamx.{fn}: transforms must be a non-empty mapping {{label: transform}}, got {transforms!r}")
  for label, t in transforms.items():
    if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
      raise TypeError(f"adamx.{fn}: transforms[{label!r}] must be a gradient transformation with init and update, "
                      f"got {t!r}")

  def labels_of(tree):
    labels = param_labels(tree) if callable(param_labels) else param_labels
    found = jax.tree.leaves(labels)
    unknown = sorted({repr(x) for x in found if not isinstance(x, Hashable) or x not in transforms})
    if unknown or not found:
      raise ValueError(f"adamx.{fn}: param_labels must be a non-empty pytree of labels that are keys of transforms "
                       f"({', '.join(repr(k) for k in transforms)}); got labels {', '.join(unknown) or 'none'}")
    if tree is not None:
      try:
        jax.tree.structure(labels).flatten_up_to(tree)
      except ValueError:
        raise ValueError(f"adamx.{fn}: param_labels must have the structure of the params (or a prefix of it)\n  "
                         f"param_labels: {jax.tree.structure(labels)}\n  params: {jax.tree.structure(tree)}") from None
    return labels

  if not callable(param_labels):
    labels_of(None)

  def group_mask(label):
    return lambda tree: jax.tree.map(lambda x: x == label, labels_of(tree))

  groups = {label: _masked_fn(fn, t, group_mask(label)) for label, t in transforms.items()}

  def init(params):
    return PartitionState(inner_states={label: g.init(params) for label, g in groups.items()})

  def update(updates, state, params=None, **extra_args):
    inner_states = {}
    for label, g in groups.items():
      updates, inner_states[label] = g.update(updates, state.inner_states[label], params, **extra_args)
    return updates, PartitionState(inner_states=inner_states)

  return GradientTransformation(init, update)


def path_labels(fn: Callable[[str, Any], Any]) -> Callable[[Any], Any]:
  """Turn a rule on one leaf's path into a labelling function for the whole tree.

  ``fn(path, leaf)`` gets the leaf's key path as a string (``jax.tree_util.keystr``: ``"['dense']['bias']"``,
  ``"[0]"``, ``".weight"``) and the leaf, and returns its label (a string for :func:`adamx.partition`, a bool for
  a ``mask=``; never ``None``, which JAX treats as an empty subtree).

  Args:
    fn: the rule, ``(path: str, leaf) -> label``.

  Returns:
    ``labels(tree)``: a pytree of labels with the structure of ``tree``; usable as ``param_labels`` of
    :func:`adamx.partition`, or as a ``mask`` when ``fn`` returns bools.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> labels = adamx.path_labels(lambda path, x: "head" if "head" in path else "body")
    >>> labels({"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}})
    {'body': {'w': 'body'}, 'head': {'w': 'head'}}
  """
  if not callable(fn):
    raise TypeError(f"adamx.path_labels: fn must be a callable (path: str, leaf) -> label, got {fn!r}")

  def labels(tree):
    return jax.tree_util.tree_map_with_path(lambda path, x: fn(jax.tree_util.keystr(path), x), tree)

  return labels


def _words(path: str) -> list[str]:
  """The lower-case words of a key path: split at non-letters and at camelCase boundaries."""
  return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+", path)]


def _check_patterns(fn: str, patterns: Sequence[str]) -> tuple[str, ...]:
  if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
    raise TypeError(f"adamx.{fn}: patterns must be a sequence of non-empty strings, got {patterns!r}")
  return tuple(p.lower() for p in patterns)


def _decays(path: str, leaf: Any, patterns: tuple[str, ...]) -> bool:
  return jnp.ndim(leaf) > 1 and not any(w.startswith(p) for w in _words(path) for p in patterns)


def decay_mask(params: Any, patterns: Sequence[str] = NO_DECAY_PATTERNS) -> Any:
  """``True`` for the parameters that should get weight decay: matrices and kernels, not biases, norms or embeddings.

  The common rule of transformer training recipes (and of the two ``torch.optim`` param groups they build): a leaf
  decays unless it has at most one dimension (biases, norm scales, scalars) or a word of its path starts with one
  of ``patterns``. A path's words are its keys split at non-letters and camelCase boundaries:
  ``"['LayerNorm_0']['scale']"`` has the words ``layer, norm, scale``, ``"['ln_f']"`` has ``ln, f``. The default
  patterns are ``("bias", "norm", "ln", "bn", "scale", "embed")``, so ``embedding`` tables (2-D) do not decay
  either.

  Args:
    params: the params (or updates) pytree.
    patterns: lower-case word prefixes that exempt a leaf from decay.

  Returns:
    A pytree of Python bools with the structure of ``params``: pass the function itself as the ``mask`` of
    :func:`adamx.adamw` or :func:`adamx.add_decoupled_weight_decay`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> params = {"embed": jnp.ones((10, 4)), "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)},
    ...           "ln_f": {"scale": jnp.ones(4)}}
    >>> adamx.decay_mask(params)
    {'dense': {'bias': False, 'kernel': True}, 'embed': False, 'ln_f': {'scale': False}}
    >>> tx = adamx.adamw(learning_rate=1e-3, weight_decay=0.1, mask=adamx.decay_mask)
  """
  pats = _check_patterns("decay_mask", patterns)
  return path_labels(lambda path, x: _decays(path, x, pats))(params)


def decay_labels(params: Any, patterns: Sequence[str] = NO_DECAY_PATTERNS) -> Any:
  """``"decay"`` or ``"no_decay"`` for every parameter, by the rule of :func:`adamx.decay_mask`.

  Args:
    params: the params (or updates) pytree.
    patterns: as in :func:`adamx.decay_mask`.

  Returns:
    A pytree of the two labels: pass the function itself as ``param_labels`` of :func:`adamx.partition`.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> adamx.decay_labels({"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}})
    {'dense': {'bias': 'no_decay', 'kernel': 'decay'}}
  """
  pats = _check_patterns("decay_labels", patterns)
  return path_labels(lambda path, x: "decay" if _decays(path, x, pats) else "no_decay")(params)
