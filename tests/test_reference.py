"""adamx against the float64 paper references of ``tests/reference/adam.py``: every step, params and every state field.

How errors are measured. For a quantity ``x`` (params, updates, ``mu``, ``nu``, ``nu_max``) the error of a leaf at
step ``t`` is ``max|x_t - ref_t| / max_{s <= t} max|ref_s|``: the normwise relative error of the leaf's trajectory
so far (infinity norm over the leaf's entries *and* the steps ``1..t``). A per-step normwise error
(``tests.trees.max_rel_err`` of step ``t`` alone) is ill-conditioned for the signed EMAs: the scalar and 3-element
leaves of ``tests.trees.mixed_params`` have steps where ``mu`` (and so the update) cancels to nearly zero, and then
a rounding error of ``u * |g|`` is a large fraction of ``max|mu_t|`` (measured: 6e-13 in float64 and 2e-4 in
float32 for a correct implementation). Scaling by the trajectory keeps the measure at rounding level while still
failing on any real difference. ``tests.trees.assert_close`` is used on the final params and second moments (positive or
O(1), well conditioned) and for the algebraic equivalences.

Every test is seeded; hyperparameters are drawn per case from a seeded generator.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx
from tests import trees
from tests.reference import adam as ref

N_STEPS = 512
U32 = 2.0**-24  # unit roundoff of float32
U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
BF16 = jnp.bfloat16
F64_RTOL = 1e-12


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _moments(opt_state: Any) -> Any:
  """The moment state (adamx's ScaleByAdamState / ScaleByAmsgradState, or optax's) inside a chain state."""
  found = [s for s in opt_state if hasattr(s, "mu") and hasattr(s, "nu") and hasattr(s, "count")]
  assert len(found) == 1, opt_state
  return found[0]


def _fields(moments: Any) -> dict[str, Any]:
  """The moment fields as a dict named like the reference's state."""
  return {k: getattr(moments, k) for k in ("mu", "nu", "nu_max") if hasattr(moments, k)}


def _observed(params: Any, updates: Any, opt_state: Any) -> dict[str, Any]:
  """Everything compared after a step: params, updates, every moment field, the step counts (the moments' and,
  with a schedule, the learning-rate transform's)."""
  moments = _moments(opt_state)
  return {"params": params, "updates": updates, **_fields(moments), "count": moments.count,
          "schedule_count": [s.count for s in opt_state if isinstance(s, adamx.ScaleByScheduleState)]}


def _expected(params: Any, delta: Any, ref_state: dict, n_schedules: int) -> dict[str, Any]:
  """The reference's counterpart of :func:`_observed`."""
  return {"params": params, "updates": delta, **{k: v for k, v in ref_state.items() if k != "count"},
          "count": ref_state["count"], "schedule_count": [ref_state["count"]] * n_schedules}


def _seed(*names: str) -> int:
  return zlib.crc32("/".join(names).encode())


def _gradients(rng: np.random.Generator, params: Any, n_steps: int) -> list[Any]:
  """``n_steps`` seeded gradient trees shaped and typed like ``params`` (``tests.trees.random_like`` on the
  stacked shapes, drawn once: one transfer per leaf instead of one per leaf and step), as NumPy arrays."""
  stacked = jax.device_get(trees.random_like(
      rng, jax.tree.map(lambda p: np.zeros((n_steps, *np.shape(p)), jnp.result_type(p)), params)))
  leaves, treedef = jax.tree.flatten(stacked)
  return [treedef.unflatten([x[t] for x in leaves]) for t in range(n_steps)]


@jax.jit
def _pack(tree: Any) -> jax.Array:
  """All leaves of ``tree`` raveled into one complex vector, exactly: bfloat16, float32 and int32 (< 2**24) fit in
  complex64, float64 in complex128. One device-to-host transfer per step instead of one per leaf (the transfers
  dominated the runtime)."""
  ctype = jax.dtypes.canonicalize_dtype(jnp.complex128)
  return jnp.concatenate([jnp.ravel(x).astype(ctype) for x in jax.tree.leaves(tree)])


class _Layout:
  """Where each leaf of a tree lies in its :func:`_pack` vector; unpacks to float64 / complex128 NumPy trees."""

  def __init__(self, tree: Any):
    leaves, self.treedef = jax.tree.flatten(tree)
    self.shapes = [np.shape(x) for x in leaves]
    self.complex = [bool(jnp.iscomplexobj(x)) for x in leaves]
    sizes = [math.prod(s) for s in self.shapes]
    assert all(sizes), "empty leaves are not supported"
    self.offsets = np.cumsum([0, *sizes])
    self.paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]

  def pack(self, tree: Any) -> np.ndarray:
    leaves, treedef = jax.tree.flatten(tree)
    assert treedef == self.treedef, (treedef, self.treedef)
    return np.concatenate([np.ravel(np.asarray(x)) for x in leaves]).astype(np.complex128)

  def unpack(self, flat: np.ndarray) -> Any:
    flat = np.asarray(flat, np.complex128)
    leaves = [flat[a:b].reshape(s) if c else flat[a:b].real.reshape(s)
              for a, b, s, c in zip(self.offsets[:-1], self.offsets[1:], self.shapes, self.complex)]
    return self.treedef.unflatten(leaves)


class _Compare:
  """Per-leaf trajectory-normwise relative errors (see the module docstring) on packed vectors, every step.

  ``tol`` maps each top-level key of the compared dict (``params``, ``updates``, ``mu``, ...) to its tolerance, or
  to None to leave it out; the step counts are compared exactly. ``skip(field, is_complex)`` leaves out more leaves.
  """

  def __init__(self, layout: _Layout, tol: dict[str, float | None], skip=lambda field, is_complex: False):
    self.layout = layout
    self.fields = [p.split("]")[0].strip("['") for p in layout.paths]
    tols = [0.0 if f.endswith("count") else tol[f] for f in self.fields]
    tols = [np.inf if x is None or skip(f, c) else x for x, f, c in zip(tols, self.fields, layout.complex)]
    self.tol = np.array(tols)
    self.starts = layout.offsets[:-1]
    self.scale = np.zeros(len(self.fields))
    self.worst = np.zeros(len(self.fields))

  def __call__(self, actual: np.ndarray, expected: np.ndarray, t: int) -> None:
    err = np.maximum.reduceat(np.abs(actual - expected), self.starts)
    self.scale = np.maximum(self.scale, np.maximum.reduceat(np.abs(expected), self.starts))
    rel = err / np.maximum(self.scale, 1e-300)
    self.worst = np.where(np.isfinite(self.tol), np.maximum(self.worst, rel), 0.0)
    bad = np.flatnonzero(~(rel <= self.tol))
    if bad.size:
      i = bad[0]
      raise AssertionError(f"step {t}, {self.layout.paths[i]}: trajectory-normwise relative error {rel[i]:.3e} > "
                           f"{self.tol[i]:.3e}")

  def worst_by_field(self) -> dict[str, float]:
    out: dict[str, float] = {}
    for f, w, tol in zip(self.fields, self.worst, self.tol):
      if not f.endswith("count") and np.isfinite(tol):
        out[f] = max(out.get(f, 0.0), float(w))
    return out


class Pair(NamedTuple):
  """An adamx optimizer and the reference optimizer it must reproduce."""

  tx: adamx.GradientTransformation
  ref: Any


def _track(pair: Pair, params: Any, *, seed: int, n_steps: int, tol: dict[str, float]) -> dict[str, float]:
  """Run adamx and the reference side by side from the same params on the same seeded gradients (open loop: each
  keeps its own state) and compare params, updates, every state field and the counts after every step. Returns the
  worst errors by field."""
  update, apply_updates = jax.jit(pair.tx.update), jax.jit(adamx.apply_updates)
  state = pair.tx.init(params)
  ref_params = trees.to_numpy(params)
  ref_state = pair.ref.init(ref_params)
  n_schedules = len(_observed(params, params, state)["schedule_count"])
  layout = compare = None
  for t, grads in enumerate(_gradients(np.random.default_rng(seed), params, n_steps), start=1):
    updates, state = update(grads, state, params)
    params = apply_updates(params, updates)
    delta, ref_state = pair.ref.update(grads, ref_params, ref_state, t)
    ref_params = ref.apply(ref_params, delta)

    observed = _observed(params, updates, state)
    if layout is None:
      layout = _Layout(observed)
      compare = _Compare(layout, tol)
    compare(np.asarray(_pack(observed)), layout.pack(_expected(ref_params, delta, ref_state, n_schedules)), t)
  # The final params and second moments once more, with the plain per-step normwise measure of tests.trees.
  trees.assert_close(params, ref_params, tol["params"], "params")
  for name in ("nu", "nu_max"):
    if name in ref_state:
      trees.assert_close(_fields(_moments(state))[name], ref_state[name], tol[name], name)
  return compare.worst_by_field()


def _f32_tol(b: float, n: int) -> float:
  """Tolerance for a float32 EMA with decay ``b`` after ``n`` steps, against the exact (float64) EMA.

  adamx (like optax and PyTorch) multiplies float32 arrays by ``b`` and by ``1 - b``, each rounded to float32
  separately, so every term's weight is off: by ``|delta(1-b)| <= u`` and by ``k |delta b| <= k u / 2`` for a term
  of age ``k``. Averaged over the EMA the relative bias is ``<= u (1 + A / 2)`` where ``A = min(n, 1 / (1 - b))``
  bounds the mean age (measured: ~0.2 u A for b2 = 0.999..0.9999, e.g. 100 u = 6e-6 for b2 = 0.9995 after 512
  steps; this is why a flat 1e-6 cannot hold for ``nu``). The few roundings per step (<= u each) are damped by ``b``
  and add up like a random walk, ``~2 u sqrt(A)``. Since ``2 sqrt(A) <= 7 + A / 2``, ``u (8 + A)`` bounds both.
  """
  return U32 * (8 + min(n, 1.0 / (1.0 - b)))


def _f32_tols(b1: float, b2: float, n: int) -> dict[str, float]:
  tol_mu, tol_nu = _f32_tol(b1, n), _f32_tol(b2, n)
  return {
      "mu": tol_mu,
      "nu": tol_nu,
      "nu_max": tol_nu,
      # mhat / (sqrt(vhat) + eps): mu's relative error plus (half of) nu's plus ~8 roundings (in the 8 u terms).
      "updates": tol_mu + tol_nu,
      # theta_t = theta_{t-1} + update rounds once per step (<= u max|theta|, std <= u / sqrt(3)): a random walk
      # of n steps, ~u sqrt(n / 3) (measured 15..47 u at n = 512). 8 u sqrt(n) (1.1e-5) leaves room for the
      # update's own error, lr * (its relative error), summed over the steps.
      "params": 8 * U32 * math.sqrt(n),
  }


def _f64_tols() -> dict[str, float]:
  return dict.fromkeys(("params", "updates", "mu", "nu", "nu_max"), F64_RTOL)


# ---------------------------------------------------------------------------------------------------------------
# The trajectory cases: adamx optimizer + reference, with seeded random hyperparameters
# ---------------------------------------------------------------------------------------------------------------


def _hyper(rng: np.random.Generator, *, eps_root: bool = True) -> dict[str, float]:
  """Random hyperparameters in the ranges used in practice (b1, b2 up to the usual 0.9 / 0.95..0.999+)."""
  return {
      "learning_rate": float(10 ** rng.uniform(-4, -1.5)),
      "b1": float(rng.uniform(0.6, 0.95)),
      "b2": float(rng.uniform(0.95, 0.9995)),
      "eps": float(10 ** rng.uniform(-10, -6)),
      "eps_root": float(10 ** rng.uniform(-14, -8)) if eps_root else 0.0,
      "weight_decay": float(10 ** rng.uniform(-4, -1)),
  }


def _decay_matrices(params: Any) -> Any:
  """A mask that decays the leaves with ndim >= 2 (works on JAX and NumPy leaves alike)."""
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _schedules(lr: float):
  """adamx's warmup-cosine schedule and the reference's, with the same arguments (plateau reached before N_STEPS)."""
  args = dict(init_value=lr / 100, peak_value=lr, warmup_steps=50, decay_steps=400, end_value=lr / 10)
  return adamx.warmup_cosine_schedule(**args), ref.warmup_cosine(**args)


def _case(name: str, h: dict[str, float]) -> Pair:
  """The adamx optimizer named ``name`` (features joined by ``_``) and its reference, with hyperparameters ``h``."""
  features = set(name.split("_")[1:])
  lr, wd = h["learning_rate"], h["weight_decay"]
  m = {k: h[k] for k in ("b1", "b2", "eps", "eps_root")}
  lr, ref_lr = _schedules(lr) if "schedule" in features else (lr, lr)
  nesterov = "nesterov" in features
  if name.startswith("adamw"):
    mask = _decay_matrices if "mask" in features else None
    return Pair(adamx.adamw(lr, weight_decay=wd, mask=mask, nesterov=nesterov, **m),
                ref.AdamW(eta=ref_lr, weight_decay=wd, mask=mask, nesterov=nesterov, **m))
  wd = wd if "l2" in features else 0.0
  if name.startswith("amsgrad"):
    max_over = "raw" if "raw" in features else "corrected"
    return Pair(adamx.amsgrad(lr, max_over=max_over, weight_decay=wd, **m),
                ref.AMSGrad(ref_lr, max_over=max_over, weight_decay=wd, **m))
  assert name.startswith("adam"), name
  return Pair(adamx.adam(lr, weight_decay=wd, nesterov=nesterov, **m),
              ref.Adam(ref_lr, weight_decay=wd, nesterov=nesterov, **m))


# Each feature in both modes: adam plain (the paper exactly: eps_root = 0), coupled L2, Nesterov; adamw without and
# with a mask, with Nesterov; both AMSGrad conventions, with L2; a warmup-cosine schedule on each algorithm.
_CASES = [
    "adam", "adam_l2", "adam_nesterov",
    "adamw", "adamw_mask",
    "amsgrad_corrected", "amsgrad_raw", "amsgrad_raw_l2",
    "adam_l2_nesterov_schedule", "adamw_nesterov_schedule", "amsgrad_corrected_schedule",
]


@functools.cache
def _pair(mode: str, case: str) -> tuple[Pair, dict[str, float]]:
  """The seeded case, built once per session: tests that reuse it (the sanity checks) reuse its compiled update."""
  h = _hyper(np.random.default_rng(_seed(mode, case, "hyper")), eps_root=case != "adam")
  return _case(case, h), h


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_float64_trajectory(case, x64):
  """float64 / complex128 leaves: adamx is the paper's algorithm to rounding level for 512 steps (1e-12)."""
  pair, _ = _pair("f64", case)
  params = trees.mixed_params(np.random.default_rng(_seed("f64", case)), bf16=False, real_dtype=np.float64)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128)}
  worst = _track(pair, params, seed=_seed("f64", case, "grads"), n_steps=N_STEPS, tol=_f64_tols())
  print(f"float64 {case}: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_float32_trajectory(case):
  """float32 / complex64 leaves, the same trajectories, within the float32 error bounds of ``_f32_tols``."""
  pair, h = _pair("f32", case)
  params = trees.mixed_params(np.random.default_rng(_seed("f32", case)), bf16=False)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.complex64)}
  tol = _f32_tols(h["b1"], h["b2"], N_STEPS)
  worst = _track(pair, params, seed=_seed("f32", case, "grads"), n_steps=N_STEPS, tol=tol)
  print(f"float32 {case} (b1={h['b1']:.3f}, b2={h['b2']:.5f}): "
        + ", ".join(f"{k}={v / U32:.1f}u (tol {tol[k] / U32:.0f}u)" for k, v in worst.items()))


# ---------------------------------------------------------------------------------------------------------------
# bfloat16: compute in float32, round once
# ---------------------------------------------------------------------------------------------------------------


def _bf16_ordinal(x: np.ndarray) -> np.ndarray:
  """Position on the ordered bfloat16 grid (sign-magnitude bits mapped to integers): neighbours differ by 1, also
  across zero and across binades. ``x`` is rounded to bfloat16 first (exact for values that are bfloat16)."""
  bits = np.asarray(np.real(x), BF16).view(np.uint16).astype(np.int32)
  return np.where(bits & 0x8000, -(bits & 0x7FFF), bits & 0x7FFF)


def _bf16_ulps(layout: _Layout, actual: np.ndarray, expected: np.ndarray) -> dict[str, int]:
  """Per field, the max distance in bfloat16 ulps between ``actual`` (packed bfloat16 values) and ``expected``
  (packed float64 values) rounded to bfloat16. Counts and complex leaves are left out."""
  assert np.array_equal(np.asarray(np.asarray(actual.real, BF16), np.float64), actual.real), "not bfloat16 values"
  assert np.all(np.isfinite(expected))
  ulps = np.maximum.reduceat(np.abs(_bf16_ordinal(actual) - _bf16_ordinal(expected)), layout.offsets[:-1])
  out: dict[str, int] = {}
  for path, u, c in zip(layout.paths, ulps, layout.complex):
    field = path.split("]")[0].strip("['")
    if not field.endswith("count") and not c:
      out[field] = max(out.get(field, 0), int(u))
  return out


def _dtypes(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.result_type(x), tree)


# lr = 2**-6 makes ``scale_by_learning_rate`` exact in bfloat16 (a power of two), so the optimizer's update is one
# rounding of the exact update, like its state; other learning rates add a second, legitimate rounding.
_BF16_LR = 2.0**-6
_BF16_CASES = {
    "adam": lambda h: Pair(adamx.adam(_BF16_LR, **h), ref.Adam(_BF16_LR, **h)),
    "adam_nesterov": lambda h: Pair(adamx.adam(_BF16_LR, nesterov=True, **h), ref.Adam(_BF16_LR, nesterov=True, **h)),
    "amsgrad_corrected": lambda h: Pair(adamx.amsgrad(_BF16_LR, **h), ref.AMSGrad(_BF16_LR, **h)),
    "amsgrad_raw": lambda h: Pair(adamx.amsgrad(_BF16_LR, max_over="raw", **h),
                                  ref.AMSGrad(_BF16_LR, max_over="raw", **h)),
}


def _bf16_one_step_each(pair: Pair, params: Any, grads_seq: list) -> dict[str, int]:
  """At every step, one float64 reference step from the optimizer's own (bfloat16) state and params; the new state,
  the update and the new params must be the reference's rounded to bfloat16, within 1 ulp. Returns the max ulps."""
  update, apply_updates = jax.jit(pair.tx.update), jax.jit(adamx.apply_updates)
  state = pair.tx.init(params)
  # The reference steps from the optimizer's state: {count, mu, nu[, nu_max]} of the previous step (zeros at t = 1).
  own_state = {"count": 0, **trees.to_numpy(_fields(_moments(state)))}
  own_params = trees.to_numpy(params)
  layout, worst = None, {}
  for t, grads in enumerate(grads_seq, start=1):
    delta, ref_state = pair.ref.update(grads, own_params, own_state, t)
    updates, state = update(grads, state, params)
    params = apply_updates(params, updates)
    observed = _observed(params, updates, state)
    if layout is None:
      layout = _Layout(observed)
      assert all(d == BF16 for d in jax.tree.leaves(_dtypes({k: v for k, v in observed.items()
                                                               if not k.endswith("count")})))
    host = layout.unpack(np.asarray(_pack(observed)))
    assert host["count"] == t
    # apply_updates: params + update (both bfloat16), exact in float64, rounded once.
    expected = _expected(ref.apply(own_params, host["updates"]), delta, ref_state, 0)
    for name, ulps in _bf16_ulps(layout, layout.pack(host), layout.pack(expected)).items():
      worst[name] = max(worst.get(name, 0), ulps)
      assert ulps <= 1, f"step {t}: {name} is {ulps} bfloat16 ulps from the reference rounded to bfloat16"
    own_state = {"count": t, **{k: host[k] for k in _fields(_moments(state))}}
    own_params = host["params"]
  return worst


def _bf16_setup(name: str) -> tuple[dict[str, float], Any, list]:
  rng = np.random.default_rng(_seed("bf16", name))
  h = {"b1": float(rng.uniform(0.6, 0.95)), "b2": float(rng.uniform(0.95, 0.9995)),
       "eps": float(10 ** rng.uniform(-10, -6)), "eps_root": float(10 ** rng.uniform(-14, -8))}
  params = jax.tree.map(lambda x: x.astype(BF16), trees.mixed_params(rng, complex_leaf=False))
  return h, params, _gradients(rng, params, 256)


@pytest.mark.parametrize("case", list(_BF16_CASES))
def test_bfloat16_computes_in_float32_and_rounds_once(case):
  """bfloat16 params, grads and state: at every step, feed adamx's own bfloat16 state into one float64 reference
  step; adamx's new state (stored in bfloat16) and its update (returned in the gradient dtype, bfloat16) must equal
  the reference's rounded to bfloat16, within 1 ulp; the new params must be params + update rounded once.

  Why 1 ulp and not 0: adamx computes in float32 (error ~1e-7 relative) and the reference in float64; when the
  exact value lies within ~1e-7 of a bfloat16 rounding boundary the two round to neighbours (measured: up to ~0.5%
  of the ``mu`` entries, a few ``nu_max`` and update entries; never more than 1 ulp). Arithmetic in bfloat16 is
  off by tens of ulps (``test_bfloat16_check_detects_bfloat16_arithmetic``).
  """
  h, params, grads_seq = _bf16_setup(case)
  worst = _bf16_one_step_each(_BF16_CASES[case](h), params, grads_seq)
  print(f"bfloat16 {case}: max ulps {worst}")


def test_bfloat16_check_detects_bfloat16_arithmetic():
  """The bfloat16 check can fail: optax's adam computes its moments in bfloat16 (several roundings per step, and
  cancellation in the first moment), which is off by tens of ulps (measured 77 on mu, 86 on the update)."""
  h, params, grads_seq = _bf16_setup("optax")
  h.pop("eps_root")
  with pytest.raises(AssertionError, match="bfloat16 ulps"):
    _bf16_one_step_each(Pair(optax.adam(_BF16_LR, **h), ref.Adam(_BF16_LR, **h)), params, grads_seq)


def test_mu_bfloat16_nu_float32(rng):
  """``mu_dtype=bfloat16, nu_dtype=float32`` with float32 (and complex64) params: the dtypes are honoured, each step is
  exact to its storage precision (closed loop: one reference step from adamx's own state), and the whole
  trajectory tracks the float64 reference (open loop)."""
  b1, b2, lr, n = 0.9, 0.999, 1e-2, N_STEPS
  tx = adamx.adam(lr, b1=b1, b2=b2, mu_dtype=BF16, nu_dtype=jnp.float32)
  reference = ref.Adam(lr, b1=b1, b2=b2)
  params = trees.mixed_params(rng, bf16=False)
  # mu: bfloat16 for real params; a complex param gets the complex dtype of at least that precision (complex64).
  # nu: float32 (real) everywhere. Updates and params keep the params' dtypes.
  param_dtypes = _dtypes(params)
  mu_dtypes = jax.tree.map(lambda d: jnp.dtype(jnp.complex64) if jnp.issubdtype(d, jnp.complexfloating) else BF16,
                           param_dtypes)
  nu_dtypes = jax.tree.map(lambda d: jnp.dtype(jnp.float32), param_dtypes)

  update, apply_updates = jax.jit(tx.update), jax.jit(adamx.apply_updates)
  state = tx.init(params)
  assert _dtypes(_fields(_moments(state))) == {"mu": mu_dtypes, "nu": nu_dtypes}
  adamx_state = {"count": 0, **trees.to_numpy(_fields(_moments(state)))}
  adamx_params = open_params = trees.to_numpy(params)
  open_state = reference.init(open_params)
  # Closed loop: bfloat16 mu within 1 ulp as in the bfloat16 test; the float32 fields within 8 u, about the number
  # of roundings on the longest path of one step (measured <= 4.3 u); params + update is rounded once (<= u).
  closed_tol = {"params": U32, "updates": 8 * U32, "mu": 8 * U32, "nu": 8 * U32}
  # Open loop: mu is rounded to bfloat16 at every step (relative error <= 2**-8 of its scale); those errors are
  # damped by b1 per step, so mu's trajectory error is <= 2**-8 / (1 - b1) (first order), and the update inherits
  # it. nu never sees mu: the float32 bound. The param error is the sum of the update errors, lr * (error of
  # mhat / sqrt(vhat)); they are unbiased roundings correlated over ~1/(1-b1) steps, so over n steps they add like a
  # random walk of n (1-b1) blocks: ~tol_updates * sqrt(n / (1 - b1)) * lr * max|mhat / sqrt(vhat)| / max|theta|.
  # Adam's normalized step is ~1 (Cauchy-Schwarz bounds it by ~7 for these b1, b2) and max|theta| >= 1 here
  # (unit-normal params; checked below), so we allow tol_updates * sqrt(n / (1 - b1)) * lr (measured 20x below).
  f32 = _f32_tols(b1, b2, n)
  tol_mu = U_BF16 / (1 - b1) + f32["mu"]
  tol_updates = tol_mu + f32["nu"]
  open_tol = {"mu": tol_mu, "nu": f32["nu"], "updates": tol_updates,
              "params": tol_updates * math.sqrt(n / (1 - b1)) * lr + f32["params"]}
  layout = closed = open_ = None
  mu_ulps = 0
  for t, grads in enumerate(_gradients(rng, params, n), start=1):
    closed_delta, closed_state = reference.update(grads, adamx_params, adamx_state, t)
    delta, open_state = reference.update(grads, open_params, open_state, t)
    open_params = ref.apply(open_params, delta)
    updates, state = update(grads, state, params)
    params = apply_updates(params, updates)

    observed = _observed(params, updates, state)
    if layout is None:
      layout = _Layout(observed)
      closed = _Compare(layout, closed_tol, skip=lambda field, is_complex: field == "mu" and not is_complex)
      open_ = _Compare(layout, open_tol)
      assert _dtypes({k: observed[k] for k in ("params", "updates", "mu", "nu")}) == {
          "params": param_dtypes, "updates": param_dtypes, "mu": mu_dtypes, "nu": nu_dtypes}
    packed = np.asarray(_pack(observed))
    host = layout.unpack(packed)
    closed_expected = layout.pack(_expected(ref.apply(adamx_params, host["updates"]), closed_delta, closed_state, 0))
    closed(packed, closed_expected, t)
    real_mu = [i for i, (p, c) in enumerate(zip(layout.paths, layout.complex)) if p.startswith("['mu']") and not c]
    for i in real_mu:
      seg = slice(layout.offsets[i], layout.offsets[i + 1])
      mu_ulps = max(mu_ulps, int(np.max(np.abs(_bf16_ordinal(packed[seg]) - _bf16_ordinal(closed_expected[seg])))))
    assert mu_ulps <= 1, f"step {t}: mu is {mu_ulps} bfloat16 ulps from the reference step"
    open_(packed, layout.pack(_expected(open_params, delta, open_state, 0)), t)
    adamx_state = {"count": t, "mu": host["mu"], "nu": host["nu"]}
    adamx_params = host["params"]
  assert max(s for (f, s) in zip(open_.fields, open_.scale) if f == "params") >= 1.0  # O(1) params, as assumed
  print(f"mu bfloat16: closed loop mu <= {mu_ulps} ulp, "
        + ", ".join(f"{k}={v / U32:.1f}u" for k, v in closed.worst_by_field().items()) + "; open loop "
        + ", ".join(f"{k}={v:.1e} (tol {open_tol[k]:.1e})" for k, v in open_.worst_by_field().items()))


# ---------------------------------------------------------------------------------------------------------------
# Algebraic equivalences
# ---------------------------------------------------------------------------------------------------------------


def _run_steps(tx: adamx.GradientTransformation, params: Any, grads_seq: list, *, apply: bool = True) -> list:
  """[(updates, params, state)] on the host after each step of ``tx`` (one jitted update, reused)."""
  update, apply_updates = jax.jit(tx.update), jax.jit(adamx.apply_updates)
  state, out = tx.init(params), []
  for g in grads_seq:
    updates, state = update(g, state, params)
    if apply:
      params = apply_updates(params, updates)
    out.append((updates, params, state))
  return jax.device_get(out)


def _assert_bitwise(a: Any, b: Any, what: str) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and np.array_equal(x, y), f"{what}: not bitwise equal"


def test_adamw_without_decay_is_adam_bitwise(rng):
  """adamw(weight_decay=0) and adam: the same float32 numbers, bit for bit (updates, params, Adam state), also on
  the bfloat16 and complex64 leaves."""
  h = {"b1": 0.87, "b2": 0.995, "eps": 1e-7, "eps_root": 1e-12, "nesterov": True}
  params = trees.mixed_params(rng)  # float32, bfloat16 and complex64 leaves
  grads_seq = _gradients(rng, params, 32)
  a = _run_steps(adamx.adamw(3e-3, weight_decay=0.0, **h), params, grads_seq)
  b = _run_steps(adamx.adam(3e-3, **h), params, grads_seq)
  for t, ((ua, pa, sa), (ub, pb, sb)) in enumerate(zip(a, b), start=1):
    _assert_bitwise((ua, pa, _moments(sa)), (ub, pb, _moments(sb)), f"step {t}")


def test_adam_weight_decay_is_l2_chain_bitwise(rng):
  """adam(weight_decay=w) is chain(add_l2_regularization(w), scale_by_adam(), scale_by_learning_rate(lr)), bit for
  bit, state included."""
  h = {"b1": 0.85, "b2": 0.98, "eps": 1e-8, "eps_root": 1e-10}
  lr = adamx.warmup_cosine_schedule(1e-4, 1e-2, 10, 50)
  params = trees.mixed_params(rng)
  grads_seq = _gradients(rng, params, 32)
  a = _run_steps(adamx.adam(lr, weight_decay=0.03, **h), params, grads_seq)
  b = _run_steps(adamx.chain(adamx.add_l2_regularization(0.03), adamx.scale_by_adam(**h),
                             adamx.scale_by_learning_rate(lr)), params, grads_seq)
  for t, (x, y) in enumerate(zip(a, b), start=1):
    _assert_bitwise(x, y, f"step {t}")


def test_adam_with_b1_zero_is_bias_corrected_rmsprop(x64, rng):
  """adam(b1=0) is RMSProp with a bias-corrected second moment and eps outside the root: optax's
  ``rmsprop(decay=b2, eps_in_sqrt=False, bias_correction=True)`` (compared in float64, where optax's
  ``1 - b2**t`` is accurate; in float32 it is off by up to ~1e-5, see ``adamx.adam``), and the reference with
  b1 = 0 (mhat_t = m_t = g_t)."""
  b2, eps, lr = 0.993, 1e-9, 5e-3
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  grads_seq = _gradients(rng, params, 64)
  ours = _run_steps(adamx.adam(lr, b1=0.0, b2=b2, eps=eps), params, grads_seq)
  theirs = _run_steps(optax.rmsprop(lr, decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True), params,
                      grads_seq)
  reference = ref.Adam(lr, b1=0.0, b2=b2, eps=eps)
  ref_params, ref_state = trees.to_numpy(params), reference.init(trees.to_numpy(params))
  worst = 0.0
  for t, ((u, p, s), (uo, po, so), g) in enumerate(zip(ours, theirs, grads_seq), start=1):
    trees.assert_close(u, uo, F64_RTOL, f"step {t} updates vs optax ")
    trees.assert_close(p, po, F64_RTOL, f"step {t} params vs optax ")
    # optax keeps nu in the params' dtype (complex for the complex leaf, with a zero imaginary part).
    trees.assert_close(_moments(s).nu, jax.tree.map(np.real, so[0].nu), F64_RTOL, f"step {t} nu vs optax ")
    ref_params, ref_state = reference.step(g, ref_params, ref_state, t)
    trees.assert_close(p, ref_params, F64_RTOL, f"step {t} params vs reference ")
    worst = max(worst, trees.max_rel_err(u, uo), trees.max_rel_err(p, po), trees.max_rel_err(p, ref_params))
  print(f"b1=0 vs rmsprop: {worst:.1e}")


def test_amsgrad_is_adam_for_constant_gradients(rng):
  """With a constant gradient g, v_t = (1 - b2^t) |g|^2 increases and vhat_t = |g|^2 is constant, so both maxima
  are attained at the current step and AMSGrad *is* Adam (for the reference see
  ``test_reference_amsgrad_forms``). adamx, float32, where rounding could break it:

  * "raw": v_t is also strictly increasing in floating point (its increments (1 - b2)(|g|^2 - v_t) stay far above
    an ulp over these steps), so max(nu_max, v_t) is v_t exactly and the update is Adam's, bit for bit.
  * "corrected": v_t / (1 - b2^t) is not exactly constant in float32: b2 and 1 - b2 are rounded to float32
    separately, so it drifts by up to the EMA bound ``_f32_tol(b2, t)`` (see there), and the running maximum keeps
    an earlier, larger value. The update then differs from Adam's by at most that relative amount (the square
    root halves it; measured 1.4e-6 = 23 u over 200 steps, tolerance 108 u).
  """
  params = trees.mixed_params(rng, bf16=False)
  g = trees.random_like(rng, params)
  h = {"b1": 0.9, "b2": 0.99, "eps": 1e-8, "eps_root": 0.0}
  n = 200
  rtol = _f32_tol(h["b2"], n)
  adam = _run_steps(adamx.adam(1e-2, **h), params, [g] * n, apply=False)
  for max_over in ref.MAX_OVER:
    ams = _run_steps(adamx.amsgrad(1e-2, max_over=max_over, **h), params, [g] * n, apply=False)
    worst = 0.0
    for t, ((ua, _, sa), (u, _, s)) in enumerate(zip(ams, adam), start=1):
      _assert_bitwise((_moments(sa).mu, _moments(sa).nu), (_moments(s).mu, _moments(s).nu), f"step {t} moments")
      if max_over == "raw":
        _assert_bitwise(ua, u, f"step {t} raw updates")
        _assert_bitwise(_moments(sa).nu_max, _moments(sa).nu, f"step {t} raw nu_max")
      trees.assert_close(ua, u, rtol, f"{max_over} step {t} updates ")
      worst = max(worst, trees.max_rel_err(ua, u))
    print(f"float32 amsgrad {max_over} vs adam, constant gradient: {worst:.1e} (tol {rtol:.1e})")


def test_adamw_paper_alpha_and_eta_map_to_adamx(x64, rng):
  """The paper's AdamW with its own alpha and schedule multiplier eta_t is adamx's adamw with
  learning_rate = alpha * eta_t and weight_decay = lambda / alpha (the libraries are alpha = 1)."""
  alpha, lam, b1, b2 = 0.25, 0.08, 0.9, 0.99
  eta_adamx, eta_ref = _schedules(0.02)
  tx = adamx.adamw(lambda count: alpha * eta_adamx(count), b1=b1, b2=b2, weight_decay=lam / alpha)
  paper = ref.AdamW(eta=eta_ref, alpha=alpha, b1=b1, b2=b2, weight_decay=lam)
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  _track(Pair(tx, paper), params, seed=1, n_steps=128, tol=_f64_tols())
  # Without the rescaling, alpha != 1 is a different optimizer: the reference with alpha = 1 and the same eta_t.
  with pytest.raises(AssertionError, match="relative error"):
    _track(Pair(tx, dataclasses.replace(paper, alpha=1.0)), params, seed=1, n_steps=5, tol=_f64_tols())


# ---------------------------------------------------------------------------------------------------------------
# The reference itself: hand-derived values, the AMSGrad paper form, and the comparison must be able to fail
# ---------------------------------------------------------------------------------------------------------------


def test_reference_first_steps_by_hand():
  """Closed forms of the first step (m_1 = (1-b1) g, v_1 = (1-b2)|g|^2, so mhat_1 = g and vhat_1 = |g|^2)."""
  g = {"r": np.array([0.5, -2.0, 3.0]), "c": np.array([3.0 + 4.0j, -1.0j])}
  theta = {"r": np.array([1.0, 2.0, -1.0]), "c": np.array([1.0 + 1.0j, 2.0])}
  lr, b1, b2, eps, lam = 0.1, 0.9, 0.999, 1e-8, 0.01
  sign = jax.tree.map(lambda x: x / (np.abs(x) + eps), g)  # g / (|g| + eps), |g| the modulus for complex g
  delta, state = ref.Adam(lr, b1, b2, eps).update(g, theta, ref.Adam().init(theta), 1)
  trees.assert_close(delta, jax.tree.map(lambda s: -lr * s, sign), 1e-15)
  trees.assert_close(state["nu"], jax.tree.map(lambda x: (1 - b2) * np.abs(x) ** 2, g), 1e-15)
  assert state["nu"]["c"].dtype == np.float64 and state["mu"]["c"].dtype == np.complex128
  # Nesterov, t = 1: b1 (1-b1) g / (1 - b1^2) + (1-b1) g / (1-b1) = g (1 + 2 b1) / (1 + b1).
  delta, _ = ref.Adam(lr, b1, b2, eps, nesterov=True).update(g, theta, ref.Adam().init(theta), 1)
  trees.assert_close(delta, jax.tree.map(lambda s: -lr * (1 + 2 * b1) / (1 + b1) * s, sign), 1e-15)
  # AdamW: -eta (alpha sign + lambda theta).
  delta, _ = ref.AdamW(eta=lr, alpha=0.5, b1=b1, b2=b2, eps=eps, weight_decay=lam).update(
      g, theta, ref.AdamW().init(theta), 1)
  trees.assert_close(delta, jax.tree.map(lambda s, p: -lr * (0.5 * s + lam * p), sign, theta), 1e-15)
  # AMSGrad, the paper's form: m_1 / sqrt(v_1) = (1 - b1) / sqrt(1 - b2) * g / |g| (eps = 0).
  delta, state = ref.AMSGrad(lr, b1, b2, eps=0.0, bias_correction=False).update(g, theta, ref.AMSGrad().init(theta), 1)
  trees.assert_close(delta, jax.tree.map(lambda x: -lr * (1 - b1) / math.sqrt(1 - b2) * x / np.abs(x), g), 1e-15)
  trees.assert_close(state["nu_max"], state["nu"], 0.0)
  with pytest.raises(ValueError, match="consecutive"):
    ref.Adam().update(g, theta, ref.Adam().init(theta), 2)


def test_reference_amsgrad_forms(x64, rng):
  """Reddi et al.'s Algorithm 2 (no bias correction) differs from both library conventions, which differ from each
  other; with constant gradients both conventions are Adam and the paper form is Adam's update scaled by
  (1 - b1^t) / sqrt(1 - b2^t) (Adam without bias correction)."""
  h = {"b1": 0.9, "b2": 0.999, "eps": 0.0}
  params = trees.to_numpy(trees.mixed_params(rng, bf16=False, real_dtype=np.float64))
  forms = {"paper": ref.AMSGrad(1e-3, bias_correction=False, **h),
           "paper_raw": ref.AMSGrad(1e-3, bias_correction=False, max_over="raw", **h),
           **{m: ref.AMSGrad(1e-3, max_over=m, **h) for m in ref.MAX_OVER}}
  finals = {}
  for name, opt in forms.items():
    p, state = params, opt.init(params)
    for t, g in enumerate(_gradients(np.random.default_rng(5), params, 100), start=1):
      p, state = opt.step(g, p, state, t)
    finals[name] = jax.tree.map(np.subtract, p, params)  # the displacement
  trees.assert_close(finals["paper_raw"], finals["paper"], 0.0)  # max_over is irrelevant without bias correction
  for a, b in [("paper", "corrected"), ("paper", "raw"), ("corrected", "raw")]:
    assert trees.max_rel_err(finals[a], finals[b]) > 1e-3, (a, b)
  # Constant gradients.
  g = _gradients(np.random.default_rng(6), params, 1)[0]
  adam = ref.Adam(1e-3, **h)
  states = {name: opt.init(params) for name, opt in forms.items()}
  adam_state = adam.init(params)
  for t in range(1, 301):
    delta, adam_state = adam.update(g, params, adam_state, t)
    for name, opt in forms.items():
      d, states[name] = opt.update(g, params, states[name], t)
      factor = (1 - h["b1"] ** t) / math.sqrt(1 - h["b2"] ** t) if name.startswith("paper") else 1.0
      # F64_RTOL, not ~1e-16: "corrected" keeps the max of v_t / (1 - b2^t), constant only up to rounding that
      # accumulates in the EMA (measured 1.0e-14 after 256 steps; see test_amsgrad_is_adam_for_constant_gradients).
      trees.assert_close(d, jax.tree.map(lambda x: factor * x, delta), F64_RTOL, f"{name} step {t} ")


def test_adamx_is_not_the_amsgrad_paper_form(x64):
  """Neither adamx convention is the paper's AMSGrad: the comparison against the reference with
  ``bias_correction=False`` fails (the f64 trajectory cases, reused)."""
  for case in ("amsgrad_corrected", "amsgrad_raw"):
    pair, _ = _pair("f64", case)
    paper = Pair(pair.tx, dataclasses.replace(pair.ref, bias_correction=False))
    params = trees.mixed_params(np.random.default_rng(_seed("f64", case)), bf16=False, real_dtype=np.float64)
    with pytest.raises(AssertionError, match="relative error"):
      _track(paper, params, seed=2, n_steps=5, tol=_f64_tols())


# A deliberately wrong reference for a float64 trajectory case (reused, so is its compiled update): name ->
# (case, reference -> wrong reference).
_WRONG = {
    "b1_b2_swapped": ("adam_nesterov", lambda r: dataclasses.replace(r, b1=r.b2, b2=r.b1)),
    "b2_off_by_1e-6": ("adam_nesterov", lambda r: dataclasses.replace(r, b2=r.b2 + 1e-6)),
    "no_nesterov": ("adam_nesterov", lambda r: dataclasses.replace(r, nesterov=False)),
    "eps_inside_root": ("adam_nesterov", lambda r: dataclasses.replace(r, eps=0.0, eps_root=r.eps_root + r.eps**2)),
    "no_l2": ("adam_l2", lambda r: dataclasses.replace(r, weight_decay=0.0)),
    "no_bias_correction": ("amsgrad_raw", lambda r: dataclasses.replace(r, bias_correction=False)),
    "other_amsgrad_convention": ("amsgrad_raw", lambda r: dataclasses.replace(r, max_over="corrected")),
    "coupled_not_decoupled": ("adamw", lambda r: ref.Adam(r.eta, r.b1, r.b2, r.eps, r.eps_root, r.weight_decay)),
    "no_mask": ("adamw_mask", lambda r: dataclasses.replace(r, mask=None)),
    "schedule_off_by_one": ("adamw_nesterov_schedule", lambda r: dataclasses.replace(r, eta=lambda c: r.eta(c + 1))),
}


@pytest.mark.parametrize("wrong", list(_WRONG))
def test_comparison_detects_a_wrong_reference(wrong, x64):
  """The comparison can fail: a deliberately wrong reference configuration is caught (measured: all at step 1; the
  smallest error is eps_inside_root's, 7e-11; "other_amsgrad_convention" is caught by the stored nu_max, v_t vs
  vhat_t, before the updates differ)."""
  case, change = _WRONG[wrong]
  pair, _ = _pair("f64", case)
  params = trees.mixed_params(np.random.default_rng(_seed("f64", case)), bf16=False, real_dtype=np.float64)
  with pytest.raises(AssertionError, match="relative error"):
    _track(Pair(pair.tx, change(pair.ref)), params, seed=3, n_steps=N_STEPS, tol=_f64_tols())
