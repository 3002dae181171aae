"""The parity table behind ``python -m adamx check``.

For every optimizer in :mod:`adamx.registry` and each of its variants, run a short trajectory on seeded random
gradients over a mixed pytree with adamx and with the optax and PyTorch counterparts, and report the largest
relative difference of params and optimizer state over all steps. Then every schedule of
``adamx.registry.SCHEDULES`` against optax's schedule of the same numbers. optax and torch are imported lazily; a
missing library is reported as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _base, registry
from adamx import schedules as _schedules

#: Normwise relative tolerance of the table. adamx's float32 bias correction is ~1e-5 closer to the float64 value
#: than optax's (see ``adamx.adam``), and a few hundred float32 roundings add ~1e-6; 1e-4 leaves room for both while
#: any real difference of convention (a missing bias correction, a misplaced decay) shows up at 1e-2 or more.
TOLERANCE = 1e-4
#: Schedules are one float32 evaluation each, so a few ulps of the largest value: anything else is a real difference.
SCHEDULE_TOLERANCE = 1e-6


@dataclasses.dataclass
class Row:
  optimizer: str
  variant: str
  against: str
  max_rel_err: float | None
  status: str  # "pass", "FAIL", or "skipped: <why>"


def example_params(rng: np.random.Generator, *, bf16: bool = False, complex_leaf: bool = True,
                   real_dtype: Any = np.float32) -> dict[str, Any]:
  """A small mixed pytree: nested dict/list/tuple with scalar, 1-D, 2-D and 3-D leaves of ``real_dtype``,
  optionally a bfloat16 leaf and a complex leaf (complex128 when ``real_dtype`` is float64, else complex64)."""
  params = {
      "dense": {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))},
      "blocks": [rng.normal(size=(2, 3, 2)), (rng.normal(size=()), rng.normal(size=(5,)))],
  }
  params = jax.tree.map(lambda x: jnp.asarray(x, real_dtype), params)
  if bf16:
    params["half"] = jnp.asarray(rng.normal(size=(6,)), jnp.bfloat16)
  if complex_leaf:
    ctype = np.complex128 if np.dtype(real_dtype) == np.float64 else np.complex64
    params["phase"] = jnp.asarray(rng.normal(size=(3,)) + 1j * rng.normal(size=(3,)), ctype)
  return params


def random_like(rng: np.random.Generator, tree: Any, scale: float = 1.0) -> Any:
  """Seeded standard-normal values shaped and typed like ``tree`` (complex leaves get a complex draw)."""

  def draw(x):
    g = rng.normal(size=jnp.shape(x)) * scale
    if jnp.iscomplexobj(x):
      g = g + 1j * rng.normal(size=jnp.shape(x)) * scale
    return jnp.asarray(g, jnp.result_type(x))

  return jax.tree.map(draw, tree)


def example_loss(params: Any) -> jax.Array:
  """A smooth loss over any pytree, ``sum over leaves of sum(|x|^4) / 4 + |sum(x)|^2 / 2``, for optimizers whose
  ``update`` needs the objective (``OptimizerSpec.update_kwargs``); its Hessian is not diagonal."""
  leaves = [x.astype(jnp.promote_types(x.dtype, jnp.float32)) for x in jax.tree.leaves(params)]
  return sum(jnp.sum(jnp.abs(x) ** 4) / 4 + jnp.abs(jnp.sum(x)) ** 2 / 2 for x in leaves)


def update_kwargs(spec: registry.OptimizerSpec, params: Any, loss: Callable[[Any], Any] = example_loss
                  ) -> dict[str, Any]:
  """The keyword arguments ``spec``'s ``update`` needs for ``loss`` (``OptimizerSpec.update_kwargs``), or ``{}``."""
  return spec.update_kwargs(loss, params) if spec.update_kwargs else {}


def to_numpy(tree: Any) -> Any:
  """float64 / complex128 NumPy copies of the leaves (bfloat16 converts exactly)."""
  return jax.tree.map(lambda x: np.asarray(x, np.complex128 if jnp.iscomplexobj(x) else np.float64), tree)


def rel_err(a: Any, b: Any, scale: float = 0.0) -> float:
  """Largest normwise relative difference over the leaves, ``max|a - b| / max(max|b|, scale)``.

  ``scale`` is the typical magnitude of the quantity: a leaf whose values all happen to be near zero (a scalar
  momentum crossing zero) is measured against it rather than against itself.
  """
  errs = [float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(y))), scale, 1e-30)
          for x, y in zip(jax.tree.leaves(to_numpy(a)), jax.tree.leaves(to_numpy(b)), strict=True) if np.size(y)]
  return max(errs, default=0.0)


#: The parameter-shaped state fields compared by the parity table, by their family-wide names (first moments,
#: AdEMAMix's slow EMA, Schedule-Free's base sequence, second moments and AMSGrad's maximum).
MOMENT_FIELDS = ("mu", "mu_slow", "z", "nu", "nu_max")
_REAL_FIELDS = ("nu", "nu_max")


def _named_tuples(tree: Any) -> Iterator[Any]:
  """Every NamedTuple inside ``tree`` (chain tuples, lists and dicts of states), depth first, outer before inner."""
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    yield tree
  if isinstance(tree, (tuple, list)):
    for x in tree:
      yield from _named_tuples(x)
  elif isinstance(tree, dict):
    for x in tree.values():
      yield from _named_tuples(x)


def moments(state: Any, fields: Iterable[str] | None = None) -> dict[str, Any]:
  """The parameter-shaped fields (:data:`MOMENT_FIELDS`) of a (chain) state: for each name, its first occurrence in
  the state's NamedTuples. ``fields`` asks for exactly those names (a missing one raises).

  optax keeps the second moment of a complex leaf as a complex array with zero imaginary part; it is returned as
  its real part, so adamx and optax states compare leaf for leaf.
  """
  found: dict[str, Any] = {}
  for s in _named_tuples(state):
    for k in MOMENT_FIELDS:
      if k not in found and k in s._fields:
        found[k] = jax.tree.map(jnp.real, getattr(s, k)) if k in _REAL_FIELDS else getattr(s, k)
  if fields is not None:
    fields = tuple(fields)
    missing = [k for k in fields if k not in found]
    if missing:
      raise ValueError(f"no state field(s) {missing} in the optimizer state (found {sorted(found)})")
    found = {k: found[k] for k in fields}
  if not found:
    raise ValueError(f"no moment state (a NamedTuple with a field among {MOMENT_FIELDS}) in the optimizer state")
  return found


Step = tuple[Any, Any, dict[str, Any], dict[str, Any]]


def optax_trajectory(spec: registry.OptimizerSpec, kwargs: dict[str, Any], params: Any, grads: Iterable[Any],
                     optax: Any) -> Iterator[Step] | None:
  """Run adamx and its optax counterpart side by side; yield ``(params, optax params, moments, optax moments)``
  after every step, or return None if ``kwargs`` has no optax counterpart."""
  otx = spec.optax(optax, spec.full_kwargs(**kwargs))
  if otx is None:
    return None
  tx = spec.factory(**kwargs)

  def steps():
    p1, s1, p2, s2 = params, tx.init(params), params, otx.init(params)
    kw = update_kwargs(spec, params)
    step1, step2 = jax.jit(functools.partial(tx.update, **kw)), jax.jit(functools.partial(otx.update, **kw))
    for g in grads:
      u1, s1 = step1(g, s1, p1)
      u2, s2 = step2(g, s2, p2)
      p1, p2 = _base.apply_updates(p1, u1), optax.apply_updates(p2, u2)
      ours = moments(s1)
      yield p1, p2, ours, moments(s2, fields=ours)

  return steps()


def torch_trajectory(spec: registry.OptimizerSpec, kwargs: dict[str, Any], params: Any, grads: Iterable[Any],
                     torch: Any, lr_lambda: Callable[[int], float] | None = None) -> Iterator[Step] | None:
  """As :func:`optax_trajectory`, against ``torch.optim`` (``lr_lambda``: an optional ``LambdaLR`` multiplier, the
  torch side of a schedule). Returns None if ``kwargs`` has no torch counterpart."""
  made = spec.torch(torch, spec.full_kwargs(**kwargs))
  if made is None:
    return None
  cls, torch_kwargs = made
  tx = spec.factory(**kwargs)

  def steps():
    leaves, treedef = jax.tree.flatten(params)
    tparams = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
    opt = cls(tparams, **torch_kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
    p, s = params, tx.init(params)
    step = jax.jit(functools.partial(tx.update, **update_kwargs(spec, params)))
    for g in grads:
      for tp, gl in zip(tparams, jax.tree.leaves(g)):
        tp.grad = torch.tensor(np.array(gl))
      opt.step()
      if sched:
        sched.step()
      u, s = step(g, s, p)
      p = _base.apply_updates(p, u)
      ours = moments(s)
      theirs = {k: treedef.unflatten([opt.state[tp][spec.torch_state[k]].detach().numpy() for tp in tparams])
                for k in ours}
      yield p, treedef.unflatten([tp.detach().numpy() for tp in tparams]), ours, theirs

  return steps()


def max_trajectory_err(trajectory: Iterator[Step] | None) -> float | None:
  """The largest :func:`rel_err` of params and moments over a trajectory, measured against the O(1) scale of the
  unit-normal params and gradients of :func:`example_params` and :func:`random_like`."""
  if trajectory is None:
    return None
  return max((max(rel_err(p1, p2, scale=1.0), rel_err(m1, m2, scale=1.0)) for p1, p2, m1, m2 in trajectory),
             default=0.0)


def _grads(seed: int, params: Any, steps: int) -> Iterator[Any]:
  rng = np.random.default_rng(seed)
  return (random_like(rng, params) for _ in range(steps))


def run(steps: int = 50, seed: int = 0, names: Sequence[str] | None = None,
        specs: Sequence[registry.OptimizerSpec] | None = None) -> list[Row]:
  """Compute the parity table (see the module docstring)."""
  specs = list(specs if specs is not None else registry.OPTIMIZERS)
  if names:
    schedule_names = {s.name for s in registry.SCHEDULES}
    specs = [registry.get(n) for n in names if n not in schedule_names]
    if not specs:
      return []
  libs = {}
  for lib in ("optax", "torch"):
    try:
      libs[lib] = importlib.import_module(lib)
    except ImportError:
      libs[lib] = None
  rows = []
  for spec in specs:
    for i, variant in enumerate(spec.variants):
      kwargs = {**spec.sample(np.random.default_rng(seed + i)), **variant}
      label = ", ".join(f"{k}={v!r}" for k, v in variant.items()) or "default"
      for lib, trajectory in (("optax", optax_trajectory), ("torch", torch_trajectory)):
        if getattr(spec, lib) is None:
          continue
        if libs[lib] is None:
          rows.append(Row(spec.name, label, lib, None, f"skipped: {lib} is not installed"))
          continue
        # torch treats complex tensors as pairs of reals (see adamx.adam): its comparison uses real leaves only.
        rng = np.random.default_rng(seed + i)
        params = example_params(rng, complex_leaf=spec.supports_complex and lib == "optax")
        err = max_trajectory_err(trajectory(spec, kwargs, params, _grads(seed + i, params, steps), libs[lib]))
        if err is None:
          continue  # this variant has no counterpart in lib
        rows.append(Row(spec.name, label, lib, err, "pass" if err <= TOLERANCE else "FAIL"))
  return rows


def schedule_rows(names: Sequence[str] | None = None) -> list[Row]:
  """Each schedule of :data:`adamx.registry.SCHEDULES` against its optax counterpart: the largest difference over
  counts ``0 .. steps - 1`` relative to the schedule's largest value."""
  try:
    optax = importlib.import_module("optax")
  except ImportError:
    optax = None
  rows = []
  for spec in registry.SCHEDULES:
    if names and spec.name not in names:
      continue
    if optax is None:
      rows.append(Row(spec.name, "schedule", "optax", None, "skipped: optax is not installed"))
      continue
    counts = jnp.arange(spec.steps, dtype=jnp.int32)
    ours = np.asarray(jax.vmap(getattr(_schedules, spec.name)(**spec.kwargs))(counts), np.float64)
    theirs = np.asarray(jax.vmap(getattr(optax, spec.optax)(**spec.kwargs))(counts), np.float64)
    err = float(np.max(np.abs(ours - theirs)) / max(float(np.max(np.abs(theirs))), 1e-30))
    rows.append(Row(spec.name, "schedule", "optax", err, "pass" if err <= SCHEDULE_TOLERANCE else "FAIL"))
  return rows


def format_table(rows: Sequence[Row]) -> str:
  header = ("name", "variant", "against", "max rel err", "result")
  body = [(r.optimizer, r.variant, r.against, "-" if r.max_rel_err is None else f"{r.max_rel_err:.2e}", r.status)
          for r in rows]
  widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
  lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (header, *body)]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m adamx check", description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=50, help="trajectory length (default 50)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the gradients and hyperparameters")
  parser.add_argument("--optimizer", action="append", dest="names", metavar="NAME",
                      help="check only this optimizer or schedule (repeatable); default: the whole registry")
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f"--steps must be a positive integer, got {args.steps}")
  try:
    rows = run(steps=args.steps, seed=args.seed, names=args.names)
  except KeyError as e:
    parser.error(str(e.args[0]))
  rows += schedule_rows(args.names)
  print(format_table(rows))
  failed = [r for r in rows if r.status == "FAIL"]
  print(f"\n{len(rows) - len(failed)} of {len(rows)} comparisons within tolerance ({TOLERANCE:g} for optimizers "
        f"over {args.steps} steps, {SCHEDULE_TOLERANCE:g} for schedules)"
        + (f"; {len(failed)} FAILED" if failed else ""))
  return 1 if failed else 0
