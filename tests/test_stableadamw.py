"""StableAdamW against the float64 transcription of the paper (``tests/reference/stableadamw.py``), and against optax
where optax can express it.

Neither optax nor ``torch.optim`` has StableAdamW. What is compared:

(a) adamx against the reference, every step, params, updates and both moments (adamx keeps Adam's raw EMAs; they are
    compared as ``mu / (1 - b1^t)``, ``nu / (1 - b2^t)``, the paper's debiased ``v_t``, ``u_t``, computed in float64
    from adamx's state), on ``tests.trees.mixed_params`` (a complex leaf included) with seeded hyperparameters and
    gradients whose scale jumps from step to step (log-normal, factor ``e^1.5``) so that the clip acts on a good
    fraction of (leaf, step) pairs (checked: 10% to 90%). Cases: decay on every leaf; a mask and a warmup-cosine
    schedule; ``clipping_threshold != 1``; and ``eps = 1e-3`` with gradients of ``1e-3`` so that ``max(u_t, eps^2)``
    and the ``eps`` of the denominator both matter. 48 steps in the default suite, 512 marked slow.
(b) With ``b1 = 0`` and no decay, StableAdamW is ``optax.chain(scale_by_adam(b1=0), clip_by_block_rms(d),
    scale_by_learning_rate)`` up to ``eps`` (optax's RMS is that of ``g / (sqrt(v_hat) + eps)``, the paper's that of
    ``g / sqrt(max(v_hat, eps^2))``): with ``eps = 1e-12`` the two differ by ~1e-11 relative, far below float32
    rounding, so this checks the clip against an independent implementation.
(c) ``clipping_threshold = inf`` is ``adamx.adamw`` (to float32 rounding); the first step is never clipped;
    a hand-computed clipped step; validation; and checks that a wrong reference is caught.

Errors are the trajectory-normwise measure of ``tests/test_reference.py`` (``max|x_t - ref_t| / max_{s<=t}
max|ref_s|`` per leaf). Tolerances:

* float64: ``1e-10``, as ``tests/test_reference_classic.py`` (a few roundings per step, ~1e-16 each, accumulated over
  at most ``1 / (1 - b2)`` steps; measured <= 1e-14).
* float32: ``tests.test_reference._f32_tols(b1, b2, n)`` for ``mu``, ``nu`` and ``params`` (the EMA bounds derived
  there). The update adds the clip factor's error to Adam's: ``RMS_t`` is a mean over at most 12 entries of
  ``|g|^2 / max(v_hat, eps^2)``, relative error <= (``nu``'s + (12 + 2) u), halved by the square root, so the update's
  bound is ``tol_mu + tol_nu + 8 u`` (Adam's ``tol_mu + tol_nu`` already counts all of ``nu``'s error where the
  direction needs half).
"""

from __future__ import annotations

import dataclasses
import doctest
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from adamx.optimizers import _stableadamw
from tests import trees
from tests.reference import adam as ref_adam
from tests.reference.stableadamw import StableAdamW
from tests.test_reference import U32, _Compare, _f32_tols, _Layout, _seed

N_SHORT = 48
N_LONG = 512
_apply = jax.jit(adamx.apply_updates)
F64_RTOL = 1e-10


def _grads(seed: int, params, n: int, scale: float = 1.0) -> list:
  """``n`` seeded gradient trees; each step's whole tree is scaled by a log-normal factor (``e^(1.5 z)``), so that
  squared gradients regularly outgrow the second moment (the clip acts) and regularly fall below it."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    factor = scale * math.exp(1.5 * rng.normal())
    out.append(jax.tree.map(lambda x: np.asarray(x), trees.random_like(rng, params, scale=factor)))
  return out


def _hyper(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {
      "learning_rate": float(10 ** rng.uniform(-3, -1.5)),
      "b1": float(rng.uniform(0.6, 0.95)),
      "b2": float(rng.uniform(0.95, 0.999)),
      "eps": float(10 ** rng.uniform(-10, -6)),
      "eps_root": float(10 ** rng.uniform(-14, -10)),
      "weight_decay": float(10 ** rng.uniform(-3, -1)),
  }


def _decay_matrices(params):
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


@functools.cache
def _case(name: str):
  """``(adamx optimizer, reference, hyperparameters, gradient scale)`` for a named case, built once per session (tests
  that reuse a case reuse its compiled update)."""
  h = _hyper(_seed("stableadamw", name))
  lr = ref_lr = h.pop("learning_rate")
  extra, scale = {}, 1.0
  if name == "mask_schedule":
    args = dict(init_value=lr / 100, peak_value=lr, warmup_steps=10, decay_steps=400, end_value=lr / 10)
    lr, ref_lr = adamx.warmup_cosine_schedule(**args), ref_adam.warmup_cosine(**args)
    extra["mask"] = _decay_matrices
  elif name == "threshold":
    extra["clipping_threshold"] = 0.7
  elif name == "large_eps":
    h["eps"], scale = 1e-3, 1e-3
  tx = adamx.stableadamw(lr, **h, **extra)
  return tx, StableAdamW(ref_lr, **h, **extra), h, scale


CASES = ["decay", "mask_schedule", "threshold", "large_eps"]


def _track(tx, reference, params, grads, tol, b1, b2):
  """Run adamx and the reference side by side (open loop) and compare params, updates and the debiased moments after
  every step. Returns the worst errors by field and the fraction of (leaf, step) pairs where the reference clipped."""
  update, apply_updates = jax.jit(tx.update), jax.jit(adamx.apply_updates)
  state = tx.init(params)
  ref_params = trees.to_numpy(params)
  ref_state = reference.init(ref_params)
  layout = compare = None
  clipped = []
  threshold = reference.clipping_threshold
  for t, g in enumerate(grads, start=1):
    updates, state = update(g, state, params)
    params = apply_updates(params, updates)
    delta, ref_state = reference.update(g, ref_params, ref_state, t)
    ref_params = ref_adam.apply(ref_params, delta)
    moments = state[0]
    observed = {"params": params, "updates": updates,
                "mu": jax.tree.map(lambda m: np.asarray(m, np.complex128) / (1.0 - b1**t), moments.mu),
                "nu": jax.tree.map(lambda v: np.asarray(v, np.float64) / (1.0 - b2**t), moments.nu)}
    expected = {"params": ref_params, "updates": delta, "mu": ref_state["mu"], "nu": ref_state["nu"]}
    if layout is None:
      layout = _Layout(expected)
      compare = _Compare(layout, tol)
    compare(layout.pack(observed), layout.pack(expected), t)
    clipped += [r > threshold for r in jax.tree.leaves(ref_state["rms"])]
  return compare.worst_by_field(), float(np.mean(clipped))


def _tols(b1, b2, n):
  tol = _f32_tols(b1, b2, n)
  return {"params": tol["params"], "updates": tol["mu"] + tol["nu"] + 8 * U32, "mu": tol["mu"], "nu": tol["nu"]}


def _run_case(name: str, n: int, dtype) -> tuple[dict, float]:
  tx, reference, h, scale = _case(name)
  params = trees.mixed_params(np.random.default_rng(_seed("stableadamw", name, "params")), bf16=False,
                              real_dtype=dtype)
  grads = _grads(_seed("stableadamw", name, "grads"), params, n, scale)
  tol = dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL) if dtype == np.float64 else _tols(
      h["b1"], h["b2"], n)
  worst, clipped = _track(tx, reference, params, grads, tol, h["b1"], h["b2"])
  assert 0.1 <= clipped <= 0.9, f"the clip acted on {clipped:.0%} of (leaf, step) pairs: a weak comparison"
  return worst, clipped


def _report(what, worst, clipped, unit=None):
  body = ", ".join(f"{k}={v / unit:.1f}u" if unit else f"{k}={v:.1e}" for k, v in worst.items())
  print(f"{what}: {body} (clipped {clipped:.0%})")


@pytest.mark.parametrize("case", CASES)
def test_float32_against_reference(case):
  worst, clipped = _run_case(case, N_SHORT, np.float32)
  _report(f"float32 {case}", worst, clipped, U32)


@pytest.mark.parametrize("case", ["decay", "large_eps"])
def test_float64_against_reference(case, x64):
  worst, clipped = _run_case(case, N_SHORT, np.float64)
  _report(f"float64 {case}", worst, clipped)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_float32_against_reference_long(case):
  worst, clipped = _run_case(case, N_LONG, np.float32)
  _report(f"float32 {case} x{N_LONG}", worst, clipped, U32)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_float64_against_reference_long(case, x64):
  worst, clipped = _run_case(case, N_LONG, np.float64)
  _report(f"float64 {case} x{N_LONG}", worst, clipped)


@pytest.mark.parametrize("wrong", [
    dict(clip_decay=False),  # the early gist: decay with the unclipped rate
    dict(clipping_threshold=math.inf),  # plain AdamW
    dict(clipping_threshold=1.01),  # a threshold off by 1%
    "b2",  # b2 off by 1e-5 relative
])
def test_a_wrong_reference_is_caught(wrong, x64):
  """Each deliberate change of the reference fails the float64 comparison (so the comparison can fail)."""
  tx, reference, h, _ = _case("decay")
  if wrong == "b2":
    reference, h = dataclasses.replace(reference, b2=h["b2"] * (1 + 1e-5)), h
  else:
    reference = dataclasses.replace(reference, **wrong)
  params = trees.mixed_params(np.random.default_rng(1), bf16=False, real_dtype=np.float64)
  grads = _grads(2, params, 16)
  tol = dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL)
  with pytest.raises(AssertionError, match="trajectory-normwise relative error"):
    _track(tx, reference, params, grads, tol, h["b1"], h["b2"])


# ---------------------------------------------------------------------------------------------------------------
# (b) optax, (c) equivalences, hand-computed steps, validation
# ---------------------------------------------------------------------------------------------------------------


def test_b1_zero_without_decay_is_optax_adam_with_block_rms_clipping():
  """The clip against an independent implementation: optax's clip_by_block_rms of optax's Adam direction (b1 = 0, so
  the direction is g / (sqrt(v_hat) + eps), whose RMS is RMS_t up to eps = 1e-12). float32 and complex64 leaves,
  32 steps; params within 1e-6 (the parity tests' bound), with the clip acting on a good fraction of the leaves."""
  params = trees.mixed_params(np.random.default_rng(3), bf16=False)
  lr, b2, d = 3e-2, 0.97, 0.8
  tx = adamx.stableadamw(lr, b1=0.0, b2=b2, eps=1e-12, weight_decay=0.0, clipping_threshold=d)
  otx = optax.chain(optax.scale_by_adam(b1=0.0, b2=b2, eps=1e-12), optax.clip_by_block_rms(d),
                    optax.scale_by_learning_rate(lr))
  direction = optax.scale_by_adam(b1=0.0, b2=b2, eps=1e-12)  # the unclipped direction, to see when the clip acts
  s1, s2, s3, p1, p2 = tx.init(params), otx.init(params), direction.init(params), params, params
  step1, step2, step3 = jax.jit(tx.update), jax.jit(otx.update), jax.jit(direction.update)
  rms = jax.jit(lambda tree: [jnp.sqrt(jnp.mean(jnp.abs(x) ** 2)) for x in jax.tree.leaves(tree)])
  clipped = []
  for t, g in enumerate(_grads(4, params, 32), start=1):
    u1, s1 = step1(g, s1, p1)
    u2, s2 = step2(g, s2, p2)
    a, s3 = step3(g, s3)
    clipped += [float(r) > d for r in rms(a)]
    p1, p2 = _apply(p1, u1), _apply(p2, u2)
    trees.assert_close(p1, p2, 1e-6, f"step {t} params ")
    trees.assert_close(u1, u2, 1e-5, f"step {t} updates ")
  assert 0.1 <= np.mean(clipped) <= 0.9, np.mean(clipped)


def test_infinite_threshold_is_adamw(rng):
  """``clipping_threshold=inf`` makes the clip factor exactly 1: adamw's numbers, to float32 rounding. Not bit for
  bit: the two compile to different XLA programs, which may contract ``re^2 + im^2`` into a fused multiply-add in one
  and not the other (measured: 1 ulp of ``nu`` of the complex leaf, 3e-7 after 7 EMA steps); 1e-6 bounds ~10
  steps of an ulp each."""
  params = trees.mixed_params(rng, bf16=False)
  h = _hyper(5)
  lr = h.pop("learning_rate")
  tx = adamx.stableadamw(lr, **h, clipping_threshold=math.inf, mask=_decay_matrices)
  ref = adamx.adamw(lr, **h, mask=_decay_matrices)
  s1, s2, p1, p2 = tx.init(params), ref.init(params), params, params
  step1, step2 = jax.jit(tx.update), jax.jit(ref.update)
  for t, g in enumerate(_grads(6, params, 10), start=1):
    u1, s1 = step1(g, s1, p1)
    u2, s2 = step2(g, s2, p2)
    p1, p2 = _apply(p1, u1), _apply(p2, u2)
    trees.assert_close((p1, s1[0].mu, s1[0].nu), (p2, s2[0].mu, s2[0].nu), 1e-6, f"step {t} ", scale=1.0)


def test_first_step_is_never_clipped(rng):
  """At t = 1, u_1 = g_1^2 exactly, so RMS_1 <= 1: the first step is AdamW's, however large the gradient."""
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "z": jnp.asarray([1.0 + 2.0j, -0.5j])}
  g = trees.random_like(rng, params, scale=1e4)
  u1, _ = jax.jit(adamx.stableadamw(1e-2, weight_decay=0.1).update)(g, adamx.stableadamw().init(params), params)
  u2, _ = jax.jit(adamx.adamw(1e-2, b2=0.99, eps=1e-6, weight_decay=0.1).update)(g, adamx.adamw().init(params),
                                                                                  params)
  trees.assert_close(u1, u2, 1e-6)


def test_hand_computed_clipped_step():
  """A scalar with b1 = 0: g = 1 then g = 10. u_2 = (b2 + 100) / (1 + b2), RMS_2 = 10 / sqrt(u_2) = 1.4037 at
  b2 = 0.99, so the second step is lr * (10 / (sqrt(u_2) + eps) + lambda theta) / RMS_2, decay included."""
  b2, lr, wd, eps = 0.99, 0.1, 0.5, 1e-6
  tx = adamx.stableadamw(lr, b1=0.0, b2=b2, eps=eps, weight_decay=wd)
  step = jax.jit(tx.update)
  theta = jnp.float32(2.0)
  state = tx.init(theta)
  u, state = step(jnp.float32(1.0), state, theta)
  theta1 = theta + u
  u, state = step(jnp.float32(10.0), state, theta1)
  v_hat = (b2 + 100.0) / (1.0 + b2)
  rms = 10.0 / math.sqrt(v_hat)
  assert rms == pytest.approx(1.40374, rel=1e-5)
  expected = -lr / rms * (10.0 / (math.sqrt(v_hat) + eps) + wd * float(theta1))
  assert float(u) == pytest.approx(expected, rel=1e-6)


def test_bfloat16_update_rounds_once(rng):
  """bf16 params and gradients: scale_by_stableadamw computes in float32 and rounds its output once, so it is exactly
  the bf16 rounding of the float32 computation on the same values (the optimizer's chain rounds again after the
  learning rate, as every adamx chain does)."""
  p32 = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p32)
  g16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), trees.random_like(rng, p32))
  tx = adamx.scale_by_stableadamw(weight_decay=0.1)
  u16, s16 = tx.update(g16, tx.init(p16), p16)
  u32, _ = tx.update(jax.tree.map(lambda x: x.astype(jnp.float32), g16), tx.init(p32),
                     jax.tree.map(lambda x: x.astype(jnp.float32), p16))
  assert u16["w"].dtype == jnp.bfloat16 and s16.nu["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(u16["w"], np.float32),
                                np.asarray(u32["w"].astype(jnp.bfloat16), np.float32))


def test_validation():
  with pytest.raises(ValueError, match=r"adamx.stableadamw: clipping_threshold must be a number > 0"):
    adamx.stableadamw(clipping_threshold=0.0)
  with pytest.raises(ValueError, match=r"adamx.scale_by_stableadamw: clipping_threshold must be a number > 0"):
    adamx.scale_by_stableadamw(clipping_threshold=-1.0)
  with pytest.raises(TypeError, match=r"adamx.stableadamw: clipping_threshold must be a real number"):
    adamx.stableadamw(clipping_threshold=True)
  with pytest.raises(ValueError, match=r"adamx.stableadamw: b2 must be in \[0, 1\), got 1.0"):
    adamx.stableadamw(b2=1.0)
  with pytest.raises(ValueError, match=r"adamx.stableadamw: weight_decay must be a finite number >= 0"):
    adamx.stableadamw(weight_decay=-1.0)
  params = {"w": jnp.ones(3)}
  tx = adamx.scale_by_stableadamw(weight_decay=0.1)
  with pytest.raises(ValueError, match=r"adamx.scale_by_stableadamw: params are required"):
    tx.update(params, tx.init(params))
  tx = adamx.scale_by_stableadamw(weight_decay=0.0)
  tx.update(params, tx.init(params))  # no decay: no params needed
  with pytest.raises(TypeError, match=r"adamx.scale_by_stableadamw: parameter \['n'\] has dtype int32"):
    tx.init({"n": jnp.ones(2, jnp.int32)})
  # arrays and tracers are not checked (injectable)
  jax.jit(lambda d: adamx.stableadamw(clipping_threshold=d).update(params, adamx.stableadamw().init(params),
                                                                   params))(jnp.float32(2.0))


def test_docstring_examples_run():
  failures, tried = doctest.testmod(_stableadamw, optionflags=doctest.ELLIPSIS)
  assert tried >= 5 and failures == 0
