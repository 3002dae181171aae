"""The parity table behind ``python -m adamx check``.

For every optimizer in :mod:`adamx.registry` and each of its variants, run a short trajectory on seeded random
gradients over a mixed pytree with adamx and with the optax and PyTorch counterparts, and report the largest
relative difference of params and optimizer state over all steps. optax and torch are imported lazily; a missing
library is reported as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _base, registry

#: Normwise relative tolerance of the table. adamx's float32 bias correction is ~1e-5 closer to the float64 value
#: than optax's (see ``adamx.adam``), and a few hundred float32 roundings add ~1e-6; 1e-4 leaves room for both while
#: any real difference of convention (a missing bias correction, a misplaced decay) shows up at 1e-2 or more.
TOLERANCE = 1e-4


@dataclasses.dataclass
class Row:
  optimizer: str
  variant: str
  against: str
  max_rel_err: float | None
  status: str  # "pass", "FAIL", or "skipped: <why>"


def example_params(rng: np.random.Generator, *, complex_leaf: bool = True) -> dict[str, Any]:
  """A small mixed pytree: nested dict/list/tuple, scalar, 1-D, 2-D and 3-D float32 leaves (+ complex64)."""
  params = {
      "dense": {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))},
      "blocks": [rng.normal(size=(2, 3, 2)), (rng.normal(size=()), rng.normal(size=(5,)))],
  }
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  if complex_leaf:
    params["phase"] = (rng.normal(size=(3,)) + 1j * rng.normal(size=(3,))).astype(np.complex64)
  return params


def random_like(rng: np.random.Generator, tree: Any) -> Any:
  def draw(x):
    g = rng.normal(size=x.shape)
    if np.iscomplexobj(x):
      g = g + 1j * rng.normal(size=x.shape)
    return np.asarray(g, x.dtype)

  return jax.tree.map(draw, tree)


def rel_err(a: Any, b: Any) -> float:
  """Largest normwise relative difference over the leaves: ``max|a - b| / max(max|b|, 1e-30)``."""
  errs = [float(np.max(np.abs(np.asarray(x, np.complex128) - np.asarray(y, np.complex128))))
          / max(float(np.max(np.abs(np.asarray(y, np.complex128)))), 1e-30)
          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.size(y)]
  return max(errs, default=0.0)


def _adam_state(state: Any) -> Any:
  """The moment state inside an optimizer's chain state: the first entry that has a ``mu`` field."""
  for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "mu")):
    if hasattr(s, "mu"):
      return s
  raise ValueError("no moment state found")


def _moments(state: Any) -> dict[str, Any]:
  s = _adam_state(state)
  return {k: getattr(s, k) for k in ("mu", "nu", "nu_max") if hasattr(s, k)}


def trajectory_vs_optax(spec: registry.OptimizerSpec, kwargs: dict[str, Any], steps: int, seed: int,
                        optax: Any) -> float | None:
  full = spec.full_kwargs(**kwargs)
  otx = spec.optax(optax, full)
  if otx is None:
    return None
  rng = np.random.default_rng(seed)
  params = example_params(rng, complex_leaf=spec.supports_complex)
  tx = spec.factory(**kwargs)
  p1, s1, p2, s2 = params, tx.init(params), params, otx.init(params)
  step1, step2 = jax.jit(tx.update), jax.jit(otx.update)
  err = 0.0
  for _ in range(steps):
    g = random_like(rng, params)
    u1, s1 = step1(g, s1, p1)
    u2, s2 = step2(g, s2, p2)
    p1, p2 = _base.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    # optax keeps the second moment of a complex leaf as a complex array with zero imaginary part.
    theirs = {k: v if k == "mu" else jax.tree.map(jnp.real, v) for k, v in _moments(s2).items()}
    err = max(err, rel_err(p1, p2), rel_err(_moments(s1), theirs))
  return err


def trajectory_vs_torch(spec: registry.OptimizerSpec, kwargs: dict[str, Any], steps: int, seed: int,
                        torch: Any) -> float | None:
  full = spec.full_kwargs(**kwargs)
  made = spec.torch(torch, full)
  if made is None:
    return None
  cls, torch_kwargs = made
  rng = np.random.default_rng(seed)
  # torch treats complex tensors as pairs of reals (see adamx.adam), so the torch comparison uses real leaves only.
  params = example_params(rng, complex_leaf=False)
  leaves, treedef = jax.tree.flatten(params)
  tparams = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
  opt = cls(tparams, **torch_kwargs)
  tx = spec.factory(**kwargs)
  p, s = params, tx.init(params)
  step = jax.jit(tx.update)
  err = 0.0
  for _ in range(steps):
    g = random_like(rng, params)
    for tp, gl in zip(tparams, jax.tree.leaves(g)):
      tp.grad = torch.tensor(np.array(gl))
    opt.step()
    u, s = step(g, s, p)
    p = _base.apply_updates(p, u)
    torch_p = treedef.unflatten([tp.detach().numpy() for tp in tparams])
    names = {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"}
    ours = _moments(s)
    theirs = {k: treedef.unflatten([opt.state[tp][names[k]].numpy() for tp in tparams]) for k in ours}
    err = max(err, rel_err(p, torch_p), rel_err(ours, theirs))
  return err


def run(steps: int = 50, seed: int = 0, names: Sequence[str] | None = None,
        specs: Sequence[registry.OptimizerSpec] | None = None) -> list[Row]:
  """Compute the parity table (see the module docstring)."""
  specs = list(specs if specs is not None else registry.OPTIMIZERS)
  if names:
    specs = [registry.get(n) for n in names]
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
      for lib, fn in (("optax", trajectory_vs_optax), ("torch", trajectory_vs_torch)):
        if getattr(spec, lib) is None:
          continue
        if libs[lib] is None:
          rows.append(Row(spec.name, label, lib, None, f"skipped: {lib} is not installed"))
          continue
        err = fn(spec, kwargs, steps, seed + i, libs[lib])
        if err is None:
          continue  # this variant has no counterpart in lib
        rows.append(Row(spec.name, label, lib, err, "pass" if err <= TOLERANCE else "FAIL"))
  return rows


def format_table(rows: Sequence[Row]) -> str:
  header = ("optimizer", "variant", "against", "max rel err", "result")
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
                      help="check only this optimizer (repeatable); default: the whole registry")
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f"--steps must be a positive integer, got {args.steps}")
  try:
    rows = run(steps=args.steps, seed=args.seed, names=args.names)
  except KeyError as e:
    parser.error(str(e.args[0]))
  print(format_table(rows))
  failed = [r for r in rows if r.status == "FAIL"]
  print(f"\n{len(rows) - len(failed)} of {len(rows)} comparisons within {TOLERANCE:g} over {args.steps} steps"
        + (f"; {len(failed)} FAILED" if failed else ""))
  return 1 if failed else 0
