"""Checkpoints with orbax (``adamx.interop.save_state``/``restore_state``) and ``validate_state``.

Everything here is bitwise: a restored state equals the saved one bit for bit (dtypes included: bfloat16 moments,
the int32 counter, ``inject_hyperparams``' float32 hyperparameters), and a run saved at step ``K`` and resumed from
the checkpoint (into the structure of a freshly built ``tx``) gives exactly the params and state of the
uninterrupted run (the same compiled computation on the same bits is deterministic on CPU). Mismatched or damaged
checkpoints must raise a ``ValueError`` naming the problem.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adamx
from adamx import interop

pytest.importorskip("orbax.checkpoint")

K, N = 7, 15


def _params():
  rng = np.random.default_rng(0)
  return {"dense": {"kernel": jnp.asarray(rng.standard_normal((6, 4)), jnp.float32),
                    "bias": jnp.zeros(4, jnp.float32)},
          "embed": jnp.asarray(rng.standard_normal((5, 6)), jnp.bfloat16)}


def _grads(t, params):
  key = jax.random.fold_in(jax.random.key(1), t)
  return jax.tree.map(lambda p, k: jax.random.normal(k, p.shape, p.dtype), params,
                      jax.tree.unflatten(jax.tree.structure(params), list(jax.random.split(key, 3))))


# Each checkpointed piece of state: a schedule mid-way (its position is the count), inject_hyperparams' dict,
# bf16 moments, AMSGrad's nu_max, a clipping state in a chain, compressed moments.
TXS = {
    "adamw_schedule": lambda: adamx.adamw(adamx.warmup_cosine_schedule(0.0, 1e-2, 3, 20), weight_decay=1e-2),
    "inject_bf16": lambda: adamx.inject_hyperparams(adamx.adamw)(
        adamx.warmup_cosine_schedule(0.0, 1e-2, 3, 20), weight_decay=1e-2, mu_dtype=jnp.bfloat16,
        nu_dtype=jnp.bfloat16),
    "clip_amsgrad": lambda: adamx.chain(adamx.clip_by_global_norm(1.0), adamx.amsgrad(1e-2, max_over="raw")),
    # the low-memory states of issue 7: 8-bit codes and block scales, bf16 with its PRNG key (min_size=0, so that
    # this small tree is compressed at all)
    "compressed_8bit_sr": lambda: adamx.compress_state(adamx.adamw(1e-2), mu=adamx.blockwise_8bit(block_size=8),
                                                       nu=adamx.bf16("stochastic"), seed=3, min_size=0),
}


def _step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return adamx.apply_updates(params, updates), state
  return jax.jit(step)


def _assert_bitwise(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.atleast_1d(np.asarray(x)).view(np.uint8), np.atleast_1d(np.asarray(y)).view(np.uint8))


# inject_bf16 (a schedule, injected hyperparameters, bf16 moments) in the default suite, the others under -m slow:
# each case compiles two step functions and writes a checkpoint (about 3 s).
@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n == "inject_bf16" else [pytest.mark.slow])
                                  for n in sorted(TXS)])
def test_interrupted_run_resumes_bitwise(name, tmp_path):
  params = _params()
  tx = TXS[name]()
  step = _step(tx)
  p, s = params, tx.init(params)
  for t in range(N):
    if t == K:
      interop.save_state(tmp_path / "ckpt", {"params": p, "opt_state": s})
    p, s = step(p, s, _grads(t, params))
  # A fresh process would rebuild tx and its jitted step; the target comes from eval_shape (allocates nothing).
  tx2 = TXS[name]()
  target = jax.eval_shape(lambda: {"params": params, "opt_state": tx2.init(params)})
  restored = interop.restore_state(tmp_path / "ckpt", target)
  step2 = step  # the same compiled step (a fresh process compiles the same program again; that costs ~2 s here)
  p2, s2 = restored["params"], restored["opt_state"]
  assert int(jax.tree.leaves(s2)[0]) == K or name == "clip_amsgrad"
  for t in range(K, N):
    p2, s2 = step2(p2, s2, _grads(t, params))
  _assert_bitwise(p2, p)
  _assert_bitwise(s2, s)


def test_round_trip_is_bitwise_and_keeps_dtypes(tmp_path):
  params = _params()
  tx = TXS["inject_bf16"]()
  s = tx.init(params)
  s = _step(tx)(params, s, _grads(0, params))[1]
  interop.save_state(tmp_path / "c", s)
  back = interop.restore_state(tmp_path / "c", tx.init(params))
  _assert_bitwise(back, s)
  assert back.inner_state[0].mu["embed"].dtype == jnp.bfloat16 and back.count.dtype == jnp.int32
  assert isinstance(back.hyperparams, dict) and back.hyperparams["learning_rate"].dtype == jnp.float32
  with pytest.raises(ValueError):  # orbax refuses to overwrite without force
    interop.save_state(tmp_path / "c", s)
  interop.save_state(tmp_path / "c", s, force=True)


def test_mismatched_checkpoints_raise_naming_the_leaf(tmp_path):
  params = _params()
  interop.save_state(tmp_path / "adamw", adamx.adamw(1e-3).init(params))
  with pytest.raises(ValueError, match=r"has a leaf \[0\]\.count that the reference state does not have .*"
                     r"the reference's leaves are \[1\]\.count, \[1\]\.mu\['dense'\]\['bias'\]"):
    interop.restore_state(tmp_path / "adamw", adamx.adam(1e-3).init(params))  # adam's moments are entry [1]
  with pytest.raises(ValueError, match=r"leaf \[0\]\.mu\['embed'\] of the checkpoint at .* has dtype bfloat16 but "
                     "the reference's has dtype float32"):
    interop.restore_state(tmp_path / "adamw", adamx.adamw(1e-3, mu_dtype=jnp.float32).init(params))
  wider = {**params, "embed": jnp.zeros((5, 7), jnp.bfloat16)}
  with pytest.raises(ValueError, match=r"leaf \[0\]\.mu\['embed'\] .* has shape \(5, 6\) but the reference's has "
                     r"shape \(5, 7\)"):
    interop.restore_state(tmp_path / "adamw", adamx.adamw(1e-3).init(wider))
  with pytest.raises(ValueError, match=r"has no leaf \[0\]\.nu_max\['dense'\]\['bias'\]"):
    interop.restore_state(tmp_path / "adamw", adamx.chain(adamx.scale_by_amsgrad(), adamx.identity(),
                                                          adamx.identity()).init(params))
  # Same leaves, other containers: adamw's state against a chain with one stage fewer.
  with pytest.raises(ValueError, match="has the leaves of the target but another tree structure"):
    interop.restore_state(tmp_path / "adamw", adamx.chain(adamx.scale_by_adam(), adamx.identity()).init(params))
  with pytest.raises(ValueError, match="no checkpoint at"):
    interop.restore_state(tmp_path / "missing", params)


# Truncated array data, in a child process. When orbax fails to read a damaged data file, tensorstore callbacks it
# had scheduled fire afterwards on its own threads, into the asyncio event loop orbax has already closed
# ("RuntimeError: Event loop is closed", reported as unraisable). That is orbax's error path, not ours, and when they
# fire is up to the threads: one CI run saw them land in the next test. In a child process they cannot reach this
# suite's tests; the child prints the error restore_state raised, and the test checks it.
_TRUNCATED = """
import pathlib, sys
import jax.numpy as jnp
import adamx
from adamx import interop
params = {"dense": {"kernel": jnp.ones((6, 4)), "bias": jnp.zeros(4)}, "embed": jnp.ones((5, 6), jnp.bfloat16)}
state = adamx.adamw(1e-3).init(params)
directory = pathlib.Path(sys.argv[1])
interop.save_state(directory, state)
data = [p for p in (directory / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"]
assert data, "no OCDBT data files found"  # orbax writes them under arrays/d/
for path in data:
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
try:
  interop.restore_state(directory, state)
except ValueError as e:
  print("ValueError:", e)
else:
  print("restored without an error")
"""


def test_truncated_checkpoint_raises(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  child = subprocess.run([sys.executable, "-c", _TRUNCATED, str(tmp_path / "d")], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
  assert child.returncode == 0, child.stderr
  assert re.match(r"ValueError: adamx.interop.restore_state: (could not read the arrays|.* does not match its "
                  r"checksum)", child.stdout), (child.stdout, child.stderr)


def test_damaged_checkpoints_raise(tmp_path):
  params = _params()
  state = adamx.adamw(1e-3).init(params)
  state = _step(adamx.adamw(1e-3))(params, state, _grads(0, params))[1]
  interop.save_state(tmp_path / "c", state)
  # A checksum that does not match the bytes read (as after a silent bit flip in a data file).
  record_file = next(pathlib.Path(tmp_path / "c" / "adamx").glob("*metadata*"))
  record = json.loads(record_file.read_text())
  record["leaves"][1]["sha256"] = "0" * 64
  record_file.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=r"leaf \[0\]\.mu\['dense'\]\['bias'\] of the checkpoint at .* does not match "
                     "its checksum"):
    interop.restore_state(tmp_path / "c", state)
  # Not an adamx checkpoint.
  (tmp_path / "e").mkdir()
  with pytest.raises(ValueError, match="is not a readable adamx checkpoint"):
    interop.restore_state(tmp_path / "e", state)


def test_validate_state():
  params = _params()
  tx = adamx.adamw(1e-3, mu_dtype=jnp.bfloat16)
  interop.validate_state(tx.init(params), jax.eval_shape(tx.init, params))
  with pytest.raises(ValueError, match=r"leaf \[0\]\.mu\['dense'\]\['bias'\] of state has dtype float32 but the "
                     "reference's has dtype bfloat16"):
    interop.validate_state(adamx.adamw(1e-3).init(params), tx.init(params))
  with pytest.raises(ValueError, match="the tree structure of state does not match that of the reference"):
    interop.validate_state(adamx.chain(adamx.scale_by_adam(mu_dtype=jnp.bfloat16), adamx.identity()).init(params),
                           tx.init(params))
