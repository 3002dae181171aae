"""adamx.apply_step: the fused CPU kernel against the XLA step (update + apply_updates), bit for bit.

Only deterministic properties: identical numbers, the loops and bytes of the compiled step (read off its HLO, see
benchmarks/hlo.py), donation and recompilation. Nothing here is timed; benchmarks/ times it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx import _fused
from benchmarks import hlo
from tests import trees

pytestmark = pytest.mark.skipif(_fused._compiler() is None, reason="no C++ compiler to build the kernel")

STEPS = 40


def _tree(rng):
  """The suite's mixed pytree (nested dict/list/tuple; scalar, 1-D, 2-D, 3-D, a bf16 and a complex leaf, the last
  two taking the XLA step inside apply_step), plus a 2-D leaf of odd sizes (vector loops with remainders) and one
  large enough for the kernel to split over threads."""
  params = trees.mixed_params(rng)
  params["w"] = jnp.asarray(rng.standard_normal((67, 33)), jnp.float32)
  params["big"] = jnp.asarray(rng.standard_normal(70_001), jnp.float32)
  return params


def _ulps(a, b):
  """The largest distance in units in the last place between two float32 arrays (0: bitwise equal)."""
  a, b = np.asarray(a), np.asarray(b)
  assert a.dtype == b.dtype == np.float32
  return int(np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)), initial=0))


def _assert_same(got, want, max_ulps=0, where=""):
  g_leaves, w_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for i, (g, w) in enumerate(zip(g_leaves, w_leaves)):
    assert g.dtype == w.dtype and g.shape == w.shape
    if g.dtype == jnp.float32:
      assert _ulps(g, w) <= max_ulps, f"{where}: leaf {i} differs by {_ulps(g, w)} ulps"
    else:  # bf16, complex, int32 counters: the XLA step on both sides, so exactly equal
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=f"{where}: leaf {i}")


OPTIMIZERS = {
    "adamw": (lambda: adamx.adamw(1e-2, weight_decay=1e-1), 0),
    "adamw-no-decay": (lambda: adamx.adamw(3e-3, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.0), 0),
    "adamw-schedule-mask-eps_root": (lambda: adamx.adamw(
        adamx.warmup_cosine_schedule(0.0, 1e-2, 5, 50), eps_root=1e-7, weight_decay=0.1,
        mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)), 0),
    "adam": (lambda: adamx.adam(1e-2), 0),
    # Coupled L2: XLA:CPU contracts the moments' sums into FMAs differently for different leaf shapes (LLVM's
    # choice of which product to fuse), and the kernel makes one fixed choice; the two roundings of the same sum
    # differ by an ulp at most. A one-ulp change in a moment moves the update by about as much, so each step's
    # params and state are compared within a few ulps, each step starting from the XLA step's own result.
    "adam-l2": (lambda: adamx.adam(1e-2, weight_decay=1e-1), 4),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_step_equals_the_xla_step(name, rng):
  """40 jitted steps on a mixed tree: every step, the fused step from the XLA trajectory's params and state gives
  the XLA step's params and whole state, bitwise (so the two trajectories are the same) except with coupled L2."""
  make, max_ulps = OPTIMIZERS[name]
  tx = make()
  params = _tree(rng)
  state = tx.init(params)
  xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"))
  fused = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
  for t in range(STEPS):
    grads = trees.random_like(rng, params)
    got = fused(params, grads, state)
    params, state = xla(params, grads, state)
    _assert_same(got, (params, state), max_ulps, where=f"{name} step {t}")
  assert int(state[0 if name.startswith("adamw") else 1].count) == STEPS


def test_xla_kernel_is_update_plus_apply_updates(rng):
  tx = adamx.adamw(1e-2, weight_decay=1e-1)
  params = _tree(rng)
  state, grads = tx.init(params), trees.random_like(rng, params)
  updates, want_state = tx.update(grads, state, params)
  _assert_same(adamx.apply_step(tx, grads, state, params, kernel="xla"),
               (adamx.apply_updates(params, updates), want_state))


def test_fused_step_matches_the_float64_reference(rng):
  """Not only the XLA step: 200 fused AdamW steps stay within float32 rounding of a float64 NumPy AdamW."""
  lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
  p = rng.standard_normal(1000)
  m, v = np.zeros_like(p), np.zeros_like(p)
  tx = adamx.adamw(lr, b1, b2, eps, weight_decay=wd)
  params = {"p": jnp.asarray(p, jnp.float32)}
  step = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
  state = tx.init(params)
  for t in range(1, 201):
    g = rng.standard_normal(1000).astype(np.float32).astype(np.float64)
    params, state = step(params, {"p": jnp.asarray(g, jnp.float32)}, state)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    p = p - lr * (u + wd * p)
    # float32 rounding of every operation compounds over the steps: 1e-5 relative is ~100 ulps of headroom. mu
    # passes through zero, where the EMA's cancellation leaves an absolute error of a few ulps of |g| ~ 1 (atol).
    np.testing.assert_allclose(np.asarray(state[0].mu["p"]), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state[0].nu["p"]), v, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(params["p"]), p, rtol=1e-5, atol=1e-6)


def test_flat_store_takes_the_fused_step(rng):
  params = _tree(rng)
  flat, layout = adamx.flatten_params(params)
  tx = adamx.adamw(1e-2, weight_decay=1e-1)
  state = tx.init(flat)
  grads, _ = adamx.flatten_params(trees.random_like(rng, params))
  fused = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
  xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"))
  _assert_same(fused(flat, grads, state), xla(flat, grads, state))
  assert layout.unpack(fused(flat, grads, state)[0])["w"].shape == (67, 33)


def _adamw_hlo(shapes, donate=True):
  tx = adamx.adamw(1e-3, weight_decay=1e-2)
  params = [jnp.ones(s, jnp.float32) for s in shapes]
  state = tx.init(params)
  step = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"),
                 donate_argnums=(0, 2) if donate else ())
  return hlo.compiled_text(step, params, params, state)


def test_one_pass_of_28_bytes_per_parameter():
  """The compiled fused step is one custom call over the whole tree: 28 bytes per fp32 parameter, one loop per
  leaf, no copies (params and state are donated and aliased), against 40 bytes and three loops for the XLA step."""
  shapes = [(256, 128), (1000,), (4, 8, 16), (3000,)]
  text = _adamw_hlo(shapes)
  n = sum(int(np.prod(s)) for s in shapes)
  assert hlo.bytes_per_element(text, n) == pytest.approx(28.0, abs=0.1)
  for s in shapes:
    assert hlo.loops_touching(text, s) == 1
  passes = hlo.entry_passes(text, min_elements=64)  # leaves out the 10 hyperparameters the kernel reads
  assert [p.opcode for p in passes] == ["custom-call"]
  assert "copy(" not in text.split("\nENTRY ")[1]
  tx = adamx.adamw(1e-3, weight_decay=1e-2)
  params = [jnp.ones(s, jnp.float32) for s in shapes]
  xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"), donate_argnums=(0, 2))
  xla_text = hlo.compiled_text(xla, params, params, tx.init(params))
  assert hlo.bytes_per_element(xla_text, n) == pytest.approx(40.0, abs=0.1)


def test_many_leaves_are_split_over_several_calls(rng):
  """Past _fused._LEAVES_PER_CALL leaves the step is several custom calls (XLA compiles one call's aliased
  operands in superlinear time): still 28 bytes per parameter, one loop per leaf, and the XLA step's numbers."""
  shapes = [(int(n),) for n in rng.integers(1, 300, size=2 * _fused._LEAVES_PER_CALL + 5)]
  text = _adamw_hlo(shapes)
  n = sum(s[0] for s in shapes)
  assert text.split("\nENTRY ")[1].count("custom-call(") == 3
  assert hlo.bytes_per_element(text, n, min_elements=1) == pytest.approx(28.0, abs=0.5)  # + the 10 scalars, once
  tx = adamx.adamw(1e-3, weight_decay=1e-2)
  params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
  state, grads = tx.init(params), trees.random_like(rng, params)
  fused = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
  xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"))
  _assert_same(fused(params, grads, state), xla(params, grads, state))


def test_without_donation_xla_copies_the_aliased_buffers():
  """What donation buys: without it XLA must keep the inputs and copies params, mu and nu before the kernel."""
  text = _adamw_hlo([(512, 64)], donate=False)
  assert hlo.bytes_per_element(text, 512 * 64) > 28.0 + 3 * 8 - 0.1  # three copies, 8 bytes each per parameter


def test_donated_buffers_are_updated_in_place(rng):
  tx = adamx.adamw(1e-3)
  params = {"w": jnp.asarray(rng.standard_normal((64, 64)), jnp.float32)}
  state = tx.init(params)
  step = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"), donate_argnums=(0, 2))
  ptr = params["w"].unsafe_buffer_pointer()
  new_params, _ = step(params, trees.random_like(rng, params), state)
  assert params["w"].is_deleted()
  assert new_params["w"].unsafe_buffer_pointer() == ptr


def test_no_recompilation_across_steps_with_a_schedule(rng):
  tx = adamx.adamw(adamx.warmup_cosine_schedule(0.0, 1e-2, 3, 20), weight_decay=1e-2)
  params = {"w": jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)}
  state = tx.init(params)
  step = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
  for _ in range(5):
    params, state = step(params, trees.random_like(rng, params), state)
  assert step._cache_size() == 1
  assert int(state[2].count) == 5


def test_traced_hyperparameters_and_vmap(rng):
  """Hyperparameters may be traced (the kernel reads them from an operand), and vmap batches the call."""
  params = {"w": jnp.asarray(rng.standard_normal((4, 16)), jnp.float32)}
  grads = trees.random_like(rng, params)

  def step(lr, wd, p, g):
    tx = adamx.adamw(lr, weight_decay=wd)
    return adamx.apply_step(tx, g, tx.init(p), p, kernel="fused")[0]["w"]

  def xla_step(lr, wd, p, g):
    tx = adamx.adamw(lr, weight_decay=wd)
    return adamx.apply_step(tx, g, tx.init(p), p, kernel="xla")[0]["w"]

  lrs, wds = jnp.asarray([1e-3, 1e-2, 1e-1]), jnp.asarray([0.0, 0.1, 0.2])
  got = jax.jit(jax.vmap(step, in_axes=(0, 0, None, None)))(lrs, wds, params, grads)
  for i in range(3):
    # Against the unbatched XLA step with the same traced hyperparameters. With traced scalars XLA:CPU compiles a
    # different graph around them than with constants, and LLVM contracts its multiply-adds into FMAs in other
    # places than the kernel does: an ulp or so in the update, which lr = 0.1 turns into a few ulps of the params
    # (8 ulps of a float32 is 1e-6 relative). With constant hyperparameters the two are bitwise equal (above).
    assert _ulps(got[i], jax.jit(xla_step)(lrs[i], wds[i], params, grads)) <= 8
  assert not np.array_equal(np.asarray(got[0]), np.asarray(got[2]))


def test_inject_hyperparams_takes_the_inner_optimizers_fused_step(rng):
  """adamx.inject_hyperparams(adamw): the kernel runs with the injected (traced) hyperparameters, a schedule
  among them, and the state (count, hyperparams, inner state) is the XLA step's. The hyperparameters are arrays
  here, as in test_traced_hyperparameters_and_vmap, hence ulps rather than bits."""
  tx = adamx.inject_hyperparams(adamx.adamw)(adamx.linear_schedule(1e-2, 1e-3, 10), weight_decay=0.1)
  params = {"w": jnp.asarray(rng.standard_normal((64, 33)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(9), jnp.bfloat16)}
  state = tx.init(params)
  fused = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
  xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"))
  assert "custom-call(" in hlo.compiled_text(fused, params, params, state)
  for t in range(10):
    grads = trees.random_like(rng, params)
    got = fused(params, grads, state)
    params, state = xla(params, grads, state)
    _assert_same(got, (params, state), max_ulps=8, where=f"step {t}")
  assert int(state.count) == 10 and float(state.hyperparams["learning_rate"]) == pytest.approx(1e-3 + 9e-3 / 10)
  tx = adamx.inject_hyperparams(adamx.lion)(1e-3)
  with pytest.raises(ValueError, match="kernel='fused' is not possible"):
    adamx.apply_step(tx, params, tx.init(params), params, kernel="fused")


def test_auto_takes_the_kernel_where_leaves_are_large():
  tx = adamx.adamw(1e-3)
  for shapes, fused in (([(_fused.AUTO_MIN_MEAN_LEAF,)] * 2, True), ([(1000,)] * 40, False)):
    params = [jnp.ones(s, jnp.float32) for s in shapes]
    text = hlo.compiled_text(lambda p, g, s: adamx.apply_step(tx, g, s, p), params, params, tx.init(params))
    assert ("custom-call(" in text) == fused


def test_auto_falls_back_to_the_xla_step(rng):
  params = _tree(rng)
  grads = trees.random_like(rng, params)
  for tx in (adamx.lion(1e-3), adamx.adamw(1e-3, nesterov=True), adamx.inject_hyperparams(adamx.adamw)(1e-3),
             optax.adamw(1e-3)):
    state = tx.init(params)
    got = adamx.apply_step(tx, grads, state, params)
    updates, want_state = tx.update(grads, state, params)
    _assert_same(got, (adamx.apply_updates(params, updates), want_state))


def test_array_masks_and_non_float32_leaves_take_the_xla_step(rng):
  """Inside one fused call, leaves the kernel cannot take (an elementwise mask, bf16 state) get the XLA step."""
  params = {"w": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32),
            "v": jnp.asarray(rng.standard_normal(40), jnp.float32)}
  mask = {"w": jnp.asarray(rng.standard_normal((6, 5)) > 0), "v": True}
  for tx in (adamx.adamw(1e-2, weight_decay=0.3, mask=mask), adamx.adamw(1e-2, mu_dtype=jnp.bfloat16)):
    state = tx.init(params)
    fused = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
    xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"))
    for _ in range(3):
      grads = trees.random_like(rng, params)
      got, want = fused(params, grads, state), xla(params, grads, state)
      _assert_same(got, want)
      params, state = got


def test_errors_name_the_function_and_the_argument(rng):
  params = {"w": jnp.ones(3)}
  tx = adamx.lion(1e-3)
  with pytest.raises(ValueError, match=r"adamx\.apply_step: kernel must be one of"):
    adamx.apply_step(tx, params, tx.init(params), params, kernel="cuda")
  with pytest.raises(ValueError, match=r"adamx\.apply_step: kernel='fused' is not possible: tx was not made by"):
    adamx.apply_step(tx, params, tx.init(params), params, kernel="fused")
  tx = adamx.adamw(1e-3, factored=True)
  with pytest.raises(ValueError, match="nesterov=True or factored=True"):
    adamx.apply_step(tx, params, tx.init(params), params, kernel="fused")
  with pytest.raises(TypeError, match=r"adamx\.apply_step: tx must be a gradient transformation"):
    adamx.apply_step(object(), params, None, params)
  tx = adamx.adamw(1e-3)
  with pytest.raises(ValueError, match=r"adamx\.apply_step: .*grads"):
    adamx.apply_step(tx, {"w": jnp.ones(3), "x": jnp.ones(2)}, tx.init(params), params, kernel="fused")


def test_a_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path, rng):
  monkeypatch.setattr(_fused, "_library", None)
  monkeypatch.setattr(_fused, "_failure", None)
  monkeypatch.setattr(_fused, "_warned", False)
  monkeypatch.setenv("ADAMX_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(_fused, "_compiler", lambda: None)
  tx = adamx.adamw(1e-3)
  params = {"w": jnp.ones(_fused.AUTO_MIN_MEAN_LEAF)}  # large enough for "auto" to want the kernel
  with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
    adamx.apply_step(tx, params, tx.init(params), params)
  with pytest.raises(ValueError, match="could not be built"):
    adamx.apply_step(tx, params, tx.init(params), params, kernel="fused")


# The kernel's thread pool is created on its first parallel call and lives as long as the process, hence a child
# process: it counts its OS threads around a first call on a leaf of 3 * 2^16 values (3 parts under
# _MIN_PER_THREAD = 2^16) with a budget of 8 threads, both steps compiled and the XLA step run beforehand.
_POOL = """
import os
import jax, jax.numpy as jnp, adamx
tx = adamx.adamw(1e-3)
small, big = {"w": jnp.ones(3 * 65536)}, {"w": jnp.ones(16 * 65536)}
xla = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="xla"))
fused = jax.jit(lambda p, g, s: adamx.apply_step(tx, g, s, p, kernel="fused"))
jax.block_until_ready([xla(small, small, tx.init(small)), xla(big, big, tx.init(big))])
on_small, on_big = fused.lower(small, small, tx.init(small)).compile(), fused.lower(big, big, tx.init(big)).compile()
before = len(os.listdir("/proc/self/task"))
jax.block_until_ready(on_small(small, small, tx.init(small)))
jax.block_until_ready(on_big(big, big, tx.init(big)))
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_the_thread_pool_is_sized_by_the_thread_budget_not_the_first_call():
  """A first call that needs 3 threads must not leave the later 16-part call with 2 workers: the pool starts the
  budget's 7 workers (the calling thread is the 8th) whatever the first call's size."""
  env = {**os.environ, "ADAMX_FUSED_THREADS": "8", "JAX_PLATFORMS": "cpu"}
  child = subprocess.run([sys.executable, "-c", _POOL], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
  assert child.returncode == 0, child.stderr
  assert int(child.stdout.split()[-1]) >= 7, child.stdout
