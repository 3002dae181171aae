"""Run by tests/test_sharding.py in a subprocess with 8 simulated CPU devices; prints one JSON line of results.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharding_script.py [--quick] [--markdown PATH]
(the flag must be set before jax is imported, hence the separate process).
"""

from __future__ import annotations

import json
import os
import sys

if "--xla_force_host_platform_device_count=8" not in os.environ.get("XLA_FLAGS", ""):
  raise SystemExit("set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running this script")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import adamx  # noqa: E402
from adamx import interop  # noqa: E402

STEPS = 20
SHAPES = {"embed": (64, 32), "dense": {"kernel": (32, 48), "bias": (48,)}, "norm": (7,)}


def _params(rng):
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), SHAPES,
                      is_leaf=lambda s: isinstance(s, tuple))


def _grads(rng, params, n):
  return [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params) for _ in range(n)]


def _txs():
  if "--quick" in sys.argv:  # the default test suite: AdamW only
    return {"adamw": adamx.adamw(adamx.warmup_cosine_schedule(0.0, 1e-2, 5, STEPS), weight_decay=1e-2)}
  return {
      "adamw": adamx.adamw(adamx.warmup_cosine_schedule(0.0, 1e-2, 5, STEPS), weight_decay=1e-2),
      "adam_bf16": adamx.adam(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
      "amsgrad": adamx.amsgrad(1e-2, max_over="raw"),
      "amsgrad_inject": adamx.inject_hyperparams(adamx.amsgrad)(1e-2, max_over="raw"),
  }


def _run(tx, params, grads, in_sh=None, out_sh=None, state=None):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return adamx.apply_updates(params, updates), state

  jstep = jax.jit(step) if out_sh is None else jax.jit(step, out_shardings=out_sh)
  state = tx.init(params) if state is None else state
  with jax.transfer_guard("disallow"):  # no implicit host <-> device copies inside the loop
    for g in grads:
      params, state = jstep(params, state, g)
  return params, state


def _bitwise(a, b):
  return all(x.dtype == y.dtype and np.array_equal(np.atleast_1d(np.asarray(x)).view(np.uint8),
                                                   np.atleast_1d(np.asarray(y)).view(np.uint8))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _max_rel(a, b):
  """max over leaves of max|a - b| / max|b| (0 when bitwise equal)."""
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))) /
                   max(float(np.max(np.abs(np.asarray(y, np.float64)))), 1e-30))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _specs(tree):
  return [str(x.sharding.spec) for x in jax.tree.leaves(tree)]


def _per_device(tree):
  counts = interop.bytes_per_device(tree)
  return {"max": max(counts.values()), "min": min(counts.values()), "total": sum(counts.values())}


def main():
  out = {"devices": jax.device_count()}
  rng = np.random.default_rng(0)
  params_host = _params(rng)
  grads_host = _grads(rng, params_host, STEPS)
  auto = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  mesh2d = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))

  # 1. The state of sharded params follows their NamedSharding (eager init).
  model_specs = {"embed": P(None, "model"), "dense": {"kernel": P(None, "model"), "bias": P("model")}, "norm": P()}
  psh = jax.tree.map(lambda s: NamedSharding(mesh2d, s), model_specs, is_leaf=lambda s: isinstance(s, P))
  params_tp = jax.device_put(params_host, psh)
  follows = {}
  for name, tx in _txs().items():
    state = tx.init(params_tp)
    ok = True
    for field in ("mu", "nu", "nu_max"):
      for sub in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, field) and hasattr(x, "count")):
        if hasattr(sub, field):
          ok &= all(m.sharding.is_equivalent_to(p.sharding, p.ndim)
                    for m, p in zip(jax.tree.leaves(getattr(sub, field)), jax.tree.leaves(params_tp)))
    follows[name] = bool(ok)
  out["state_follows_params"] = follows
  # ... and under jit with explicit mesh axes.
  explicit = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit, AxisType.Explicit))
  params_ex = jax.device_put(params_host, jax.tree.map(lambda s: NamedSharding(explicit, s), model_specs,
                                                       is_leaf=lambda s: isinstance(s, P)))
  with jax.set_mesh(explicit):
    st = jax.jit(_txs()["adamw"].init)(params_ex)
  out["jit_init_explicit_follows"] = bool(all(
      m.sharding.is_equivalent_to(p.sharding, p.ndim) for m, p in zip(jax.tree.leaves(st[0].mu),
                                                                      jax.tree.leaves(params_ex))))

  # 2. ZeRO-1: replicated params (data parallel), state split across "data"; numbers as the unsharded run.
  results = {}
  rep = NamedSharding(auto, P())
  for name, tx in _txs().items():
    base_p, base_s = _run(tx, params_host, grads_host)  # one device, no mesh
    params_rep = jax.device_put(params_host, rep)
    grads_rep = [jax.device_put(g, rep) for g in grads_host]
    full = tx.init(params_rep)
    state = interop.shard_state(full, auto, axis="data")
    out_sh = (jax.tree.map(lambda x: x.sharding, params_rep), jax.tree.map(lambda x: x.sharding, state))
    p, s = _run(tx, params_rep, grads_rep, out_sh=out_sh, state=state)
    results[name] = {
        "bitwise_params": _bitwise(p, base_p), "bitwise_state": _bitwise(s, base_s),
        "rel_err_params": _max_rel(p, base_p), "rel_err_state": _max_rel(s, base_s),
        "state_stays_sharded": _specs(s) == _specs(state), "params_stay_replicated": all(
            x.sharding.is_fully_replicated for x in jax.tree.leaves(p)),
        "replicated_bytes": _per_device(full), "zero1_bytes": _per_device(state),
        "specs": _specs(state),
    }
  out["zero1"] = results
  # 3. ZeRO-1 on top of tensor parallelism: the 2-D mesh's params sharded along "model", state along both axes.
  tx = _txs()["adamw"]
  base_p, base_s = _run(tx, params_host, grads_host)
  state = interop.shard_state(tx.init(params_tp), mesh2d, axis="data")
  out_sh = (psh, jax.tree.map(lambda x: x.sharding, state))
  grads_tp = [jax.device_put(g, psh) for g in grads_host]
  p, s = _run(tx, params_tp, grads_tp, out_sh=out_sh, state=state)
  out["zero1_2d"] = {"bitwise_params": _bitwise(p, base_p), "bitwise_state": _bitwise(s, base_s),
                     "tp_bytes": _per_device(tx.init(params_tp)), "zero1_bytes": _per_device(state),
                     "specs": _specs(state)}
  print(json.dumps(out))
  if "--markdown" in sys.argv:
    _markdown(sys.argv[sys.argv.index("--markdown") + 1], out)


def _markdown(path, out):
  n = sum(int(np.prod(s)) for s in jax.tree.leaves(SHAPES, is_leaf=lambda s: isinstance(s, tuple)))
  lines = [
      "# Sharded optimizer state: per-device bytes (8 simulated CPU devices)",
      "",
      f"Generated by `XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharding_script.py --markdown "
      f"benchmarks/sharding_results.md`: a {n:,}-parameter float32 tree ({', '.join(_leaf_desc())}), {STEPS} "
      "jitted steps on seeded gradients. Bytes are the optimizer state held by the busiest and the least busy device "
      "(`adamx.interop.bytes_per_device`); \"bitwise\" compares params and state after the last step with the same "
      "run on one unsharded device.",
      "",
      "| optimizer | layout | state bytes / device (max) | (min) | vs replicated | bitwise params, state |",
      "|---|---|---:|---:|---:|---|",
  ]
  for name, r in out["zero1"].items():
    rep, z = r["replicated_bytes"], r["zero1_bytes"]
    lines.append(f"| {name} | replicated (data parallel) | {rep['max']:,} | {rep['min']:,} | 1.00 | - |")
    lines.append(f"| {name} | ZeRO-1 across `data` (8) | {z['max']:,} | {z['min']:,} | {z['max'] / rep['max']:.3f} | "
                 f"{r['bitwise_params']}, {r['bitwise_state']} (max rel. diff {r['rel_err_params']:.1e}, "
                 f"{r['rel_err_state']:.1e}) |")
  r = out["zero1_2d"]
  lines.append(f"| adamw | params split along `model` (2) of a 4x2 mesh | {r['tp_bytes']['max']:,} | "
               f"{r['tp_bytes']['min']:,} | - | - |")
  lines.append(f"| adamw | ... plus ZeRO-1 across `data` (4) | {r['zero1_bytes']['max']:,} | {r['zero1_bytes']['min']:,} "
               f"| {r['zero1_bytes']['max'] / r['tp_bytes']['max']:.3f} (vs `model` only) | {r['bitwise_params']}, "
               f"{r['bitwise_state']} |")
  lines += [
      "",
      "ZeRO-1 keeps 0.127 rather than 1/8 = 0.125 of the state per device because the 7-entry `norm` vector (no "
      "dimension divisible by 8) and the scalars (step counts, injected hyperparameters) stay replicated. The "
      "replicated rows' max and min differ by the step counter, which an eager `tx.init` leaves on one device. "
      "`adam_bf16` halves the moment bytes; `amsgrad_inject` has a third moment (`nu_max`). Runs that are not bitwise "
      "differ by a few float32 ulps at most (the max rel. diff column; `tests/test_sharding.py` bounds it by 8 u, "
      "u = 2^-24): the partitioned program is another XLA graph, in which XLA:CPU fuses other products of the "
      "moments' multiply-adds into FMAs.",
      "",
  ]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def _leaf_desc():
  return [f"{jax.tree_util.keystr(p)} {s}" for p, s in jax.tree_util.tree_flatten_with_path(
      SHAPES, is_leaf=lambda s: isinstance(s, tuple))[0]]


if __name__ == "__main__":
  main()
