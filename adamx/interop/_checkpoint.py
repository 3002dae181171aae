"""Checkpoints of optimizer state with ``orbax-checkpoint``, and the check that a state fits its optimizer.

A checkpoint written by :func:`save_state` holds the leaves of any pytree (an optimizer state, or
``{"params": ..., "opt_state": ...}``) under numbered keys, and next to them a JSON record of every leaf's path,
shape, dtype and a checksum of its bytes. :func:`restore_state` compares that record with the state you expect
(``tx.init(params)``, or its ``jax.eval_shape``) *before* reading any array, and compares the checksums after, so a
checkpoint of another optimizer, another model, another dtype or with damaged bytes raises an error naming the
leaf instead of loading wrong state. orbax is imported only when a checkpoint is read or written.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np

_FORMAT = "adamx.interop.checkpoint/1"


def _leaves_with_paths(tree: Any) -> tuple[list[str], list[Any], Any]:
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [jax.tree_util.keystr(p) or "<root>" for p, _ in flat], [x for _, x in flat], treedef


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], str]:
  return tuple(int(d) for d in np.shape(x)), str(np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x))


def validate_state(state: Any, reference: Any, *, name: str = "state") -> None:
  """Check that ``state`` has the tree structure, leaf shapes and leaf dtypes of ``reference``.

  Use it on a state restored by any means (an orbax ``CheckpointManager`` of your own, ``pickle``, a state
  converted from PyTorch) against ``tx.init(params)`` (or ``jax.eval_shape(tx.init, params)``, which allocates
  nothing): the state of another optimizer, another model or another ``mu_dtype`` then fails here, naming the leaf,
  instead of failing inside a jitted step or, worse, training on with silently reinterpreted state.

  Args:
    state: the pytree to check (arrays, or anything with ``shape`` and ``dtype``).
    reference: the pytree it should look like.
    name: what ``state`` is called in the error message.

  Raises:
    ValueError: naming the first leaf path that is missing, extra, or differs in shape or dtype, or the two tree
      structures when the leaves agree but the containers do not (say, ``adam``'s state against ``adamw``'s).

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> params = {"w": jnp.zeros(3)}
    >>> state = adamx.adamw(1e-3).init(params)
    >>> adamx.interop.validate_state(state, jax.eval_shape(adamx.adamw(1e-3).init, params))
  """
  paths, leaves, treedef = _leaves_with_paths(state)
  ref_paths, ref_leaves, ref_treedef = _leaves_with_paths(reference)
  _compare(paths, [_shape_dtype(x) for x in leaves], ref_paths, [_shape_dtype(x) for x in ref_leaves],
           "adamx.interop.validate_state", name)
  if treedef != ref_treedef:
    raise ValueError(f"adamx.interop.validate_state: the tree structure of {name} does not match that of the "
                     f"reference (another optimizer?)\n  {name}: {treedef}\n  reference: {ref_treedef}")


def _compare(paths: list[str], specs: list[tuple], ref_paths: list[str], ref_specs: list[tuple], fn: str,
             name: str) -> None:
  ref_index = {p: i for i, p in enumerate(ref_paths)}
  index = {p: i for i, p in enumerate(paths)}
  for p in paths:
    if p not in ref_index:
      raise ValueError(f"{fn}: {name} has a leaf {p} that the reference state does not have (another optimizer or "
                       f"another model?); the reference's leaves are {_short(ref_paths)}")
  for p in ref_paths:
    if p not in index:
      raise ValueError(f"{fn}: {name} has no leaf {p}, which the reference state has (another optimizer or another "
                       f"model?); {name}'s leaves are {_short(paths)}")
  for p, (shape, dtype) in zip(paths, specs):
    ref_shape, ref_dtype = ref_specs[ref_index[p]]
    if tuple(shape) != tuple(ref_shape):
      raise ValueError(f"{fn}: leaf {p} of {name} has shape {tuple(shape)} but the reference's has shape "
                       f"{tuple(ref_shape)}")
    if dtype != ref_dtype:
      raise ValueError(f"{fn}: leaf {p} of {name} has dtype {dtype} but the reference's has dtype {ref_dtype} "
                       "(another mu_dtype/nu_dtype?)")
  if paths != ref_paths:
    raise ValueError(f"{fn}: the leaves of {name} are in another order than the reference's")


def _short(paths: list[str], n: int = 6) -> str:
  return ", ".join(paths[:n]) + (f", ... ({len(paths)} in all)" if len(paths) > n else "")


def _checksum(x: Any) -> str | None:
  """sha256 of the leaf's bytes, or None for an array this process cannot read whole (multi-host)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return None
  return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()


def _orbax():
  try:
    import orbax.checkpoint as ocp
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("adamx.interop checkpoints need orbax-checkpoint: pip install orbax-checkpoint") from e
  return ocp


def save_state(directory: str | os.PathLike, state: Any, *, force: bool = False, checksum: bool = True) -> None:
  """Write ``state`` (any pytree of arrays: an optimizer state, or params and state together) as an orbax checkpoint.

  The write is synchronous and atomic (orbax writes to a temporary directory and renames it). Sharded arrays are
  written shard by shard by their devices, as orbax does.

  Args:
    directory: the checkpoint directory; it must not exist unless ``force``.
    state: the pytree.
    force: overwrite an existing checkpoint.
    checksum: record a sha256 of each leaf's bytes, checked by :func:`restore_state` (this copies each leaf to
      the host once; leaves not fully addressable from this process are not checksummed).

  Example:
    >>> import jax.numpy as jnp, adamx, tempfile, os
    >>> params = {"w": jnp.zeros(3)}
    >>> tx = adamx.adamw(1e-3)
    >>> path = os.path.join(tempfile.mkdtemp(), "step_10")
    >>> adamx.interop.save_state(path, {"params": params, "opt_state": tx.init(params)})
    >>> restored = adamx.interop.restore_state(path, {"params": params, "opt_state": tx.init(params)})
  """
  ocp = _orbax()
  paths, leaves, treedef = _leaves_with_paths(state)
  leaves = [x if isinstance(x, jax.Array) else np.asarray(x) for x in leaves]
  record = {
      "format": _FORMAT,
      "treedef": str(treedef),
      "leaves": [{"path": p, "shape": list(_shape_dtype(x)[0]), "dtype": _shape_dtype(x)[1],
                  "sha256": _checksum(x) if checksum else None} for p, x in zip(paths, leaves)],
  }
  arrays = {f"leaf_{i:05d}": x for i, x in enumerate(leaves)}
  args = {"adamx": ocp.args.JsonSave(record)}
  if arrays:
    args["arrays"] = ocp.args.StandardSave(arrays)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(os.fspath(os.path.abspath(directory)), ocp.args.Composite(**args), force=force)


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
  sharding = getattr(x, "sharding", None)
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def restore_state(directory: str | os.PathLike, target: Any, *, strict_structure: bool = True) -> Any:
  """Read a checkpoint written by :func:`save_state` into the structure, shapes, dtypes and shardings of ``target``.

  ``target`` is what the state should be: ``tx.init(params)``, or ``jax.eval_shape(tx.init, params)`` (whose
  ``ShapeDtypeStruct`` leaves may carry a ``sharding``; leaves without one are restored to the first device).
  The checkpoint's record is checked against it before any array is read, and the checksums after.

  Args:
    directory: the checkpoint directory.
    target: the expected pytree.
    strict_structure: also require the same containers (NamedTuple classes, ``EmptyState`` entries), not only the
      same leaf paths, shapes and dtypes.

  Returns:
    The restored pytree, with ``target``'s structure, as JAX arrays with ``target``'s shardings.

  Raises:
    ValueError: the checkpoint is not one of :func:`save_state`, cannot be read, does not match ``target`` (the
      message names the leaf), or a leaf's bytes do not match their checksum.
  """
  ocp = _orbax()
  fn = "adamx.interop.restore_state"
  directory = os.fspath(os.path.abspath(directory))
  if not os.path.isdir(directory):
    raise ValueError(f"{fn}: no checkpoint at {directory}")
  paths, leaves, treedef = _leaves_with_paths(target)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    try:
      record = ckptr.restore(directory, ocp.args.Composite(adamx=ocp.args.JsonRestore()))["adamx"]
    except Exception as e:  # orbax raises many types for a damaged or foreign directory
      raise ValueError(f"{fn}: {directory} is not a readable adamx checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
      raise ValueError(f"{fn}: {directory} is not an adamx checkpoint (its record has format "
                       f"{record.get('format') if isinstance(record, dict) else record!r}, expected {_FORMAT!r})")
    saved = record["leaves"]
    _compare([s["path"] for s in saved], [(tuple(s["shape"]), s["dtype"]) for s in saved], paths,
             [_shape_dtype(x) for x in leaves], fn, f"the checkpoint at {directory}")
    if strict_structure and record["treedef"] != str(treedef):
      raise ValueError(f"{fn}: the checkpoint at {directory} has the leaves of the target but another tree structure "
                       f"(another optimizer?)\n  checkpoint: {record['treedef']}\n  target: {treedef}")
    if not leaves:
      return target
    abstract = {f"leaf_{i:05d}": _abstract(x) for i, x in enumerate(leaves)}
    try:
      arrays = ckptr.restore(directory, ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract)))["arrays"]
    except Exception as e:
      raise ValueError(f"{fn}: could not read the arrays of the checkpoint at {directory} (damaged?) "
                       f"({type(e).__name__}: {e})") from e
  out = [arrays[f"leaf_{i:05d}"] for i in range(len(leaves))]
  for s, x in zip(saved, out):
    if s.get("sha256") is not None:
      digest = _checksum(x)
      if digest is not None and digest != s["sha256"]:
        raise ValueError(f"{fn}: leaf {s['path']} of the checkpoint at {directory} does not match its checksum: "
                         "the checkpoint is damaged")
  return jax.tree.unflatten(treedef, out)
