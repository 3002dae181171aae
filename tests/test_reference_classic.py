"""The classic Adam family against the float64 paper references of ``tests/reference/classic.py``.

Four parts:

(a) The references themselves, independently of adamx: in float64 against ``torch.optim`` (``Adamax``, ``NAdam``
    with ``momentum_decay=4e-3`` and both weight-decay conventions, ``RAdam``; real leaves, float64 tensors, with
    torch's default dtype float64 so that NAdam's ``mu_product`` is float64 too) and against optax (``adamax``,
    ``adamaxw``, ``nadam``, ``nadamw``, ``radam``, ``adabelief``, ``yogi``, ``lion``, ``lamb``; under
    ``jax.enable_x64`` with float64 and complex128 leaves), 300 steps, params and every state field every step.
(b) adamx against the references in float64 (x64): 512 steps on ``tests.trees.mixed_params`` (a complex leaf
    included), seeded random hyperparameters, every option of the API, params, updates and every state field, every
    step.
(c) The same in float32 / complex64, within tolerances derived from float32 rounding.
(d) Hand-computed first steps, algebraic equivalences, and checks that every comparison can fail.

Errors are measured as in ``tests/test_reference.py`` (whose machinery is reused): for each leaf of each compared
quantity, ``max|x_t - ref_t| / max_{s <= t} max|ref_s|``, the normwise relative error of the leaf's trajectory so far.

Float64 tolerance ``F64_RTOL = 1e-10``. Both sides compute the same real-number formula in a different order, so each
step differs by a few roundings, ``~10 u`` with ``u = 2**-53 = 1.1e-16``. Through the EMAs these add up over at most
``min(n, 1 / (1 - b))`` steps (<= 2000 here), like a random walk in practice, and the parameter errors are sums of
``n <= 512`` update errors: the worst case is ``~1e-16 * 10 * 2000 = 2e-12``, and ``1e-10`` leaves a factor 50 on
that (measured: <= 2e-14 everywhere, except adamx's RAdam, see ``test_float64_trajectory``), while the differences
of convention are far larger (measured: the smallest deliberate change caught by
``test_comparison_detects_a_wrong_reference`` is NAdam's ``psi`` off by 1e-4 relative, 4e-9; torch's eps placement in
RAdam is caught at 6e-8 on the params).

Two updates are discontinuous: Lion's ``sign(c_t)`` and Yogi's ``sign(v_{t-1} - |g_t|^2)``. A comparison is only
meaningful if no rounding-size error can flip a sign on the trajectory, so those cases check, before every step, that
the argument of the sign is more than twice as far from 0 as the other side's can be from the reference's (its
moment's measured error at the previous step plus a few roundings of the expression; ``_sign_margin``); a seed that
breaks this is reported as such, not as a mismatch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import adamx
from tests import trees
from tests.reference import adam as ref_adam
from tests.reference import classic as ref
from tests.test_reference import U32, _Compare, _f32_tol, _gradients, _Layout, _pack, _schedules, _seed

N_STEPS = 512
N_LIB_STEPS = 300
F64_RTOL = 1e-10


# ---------------------------------------------------------------------------------------------------------------
# Comparison machinery (shared by (a), (b), (c))
# ---------------------------------------------------------------------------------------------------------------


class _Run(NamedTuple):
  """A recorded trajectory of the optimizer under test: after each step, its observed quantities packed into one
  complex vector (``tests.test_reference._pack`` order: the keys sorted, leaves in tree order). ``keys`` names the
  quantities (``params``, optionally ``updates``, state fields named like the reference's, ``count``,
  ``schedule_count``); ``n_schedules`` is the length of ``schedule_count``."""

  keys: tuple[str, ...]
  n_schedules: int
  packed: list[np.ndarray]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["vector"], meta_fields=["keys", "n_schedules"])
@dataclasses.dataclass(frozen=True)
class _Packed:
  """Returned by a compiled step: the observed quantities packed into one vector by ``_pack`` (inlined there: one
  transfer per step, measured cheaper than fetching the leaves), with their keys and number of schedules."""

  keys: tuple[str, ...]
  n_schedules: int
  vector: jax.Array


def _packed(observed: dict) -> _Packed:
  return _Packed(tuple(observed), len(observed.get("schedule_count", [])), _pack(observed))


def _record(observed: Iterator[Any]) -> _Run:
  """Record a trajectory: each step's ``_Packed`` (JAX) or dict of NumPy leaves (torch), as one complex vector."""
  keys, n_schedules, packed = (), 0, []
  for obs in observed:
    if isinstance(obs, _Packed):
      keys, n_schedules, vector = obs.keys, obs.n_schedules, np.asarray(obs.vector)
    else:
      keys, n_schedules = tuple(obs), len(obs.get("schedule_count", []))
      vector = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(obs)]).astype(np.complex128)
    packed.append(vector)
  return _Run(keys, n_schedules, packed)


def _state_fields(ref_state: dict) -> list[str]:
  return [k for k in ref_state if k != "count"]


def _sign_margin(reference: Any, ref_state: dict, grads: Any, prev_err: dict[str, list[float]], unit: float
                 ) -> float | None:
  """How far the arguments of Lion's ``sign(c_t)`` (Yogi's ``sign(v_{t-1} - |g_t|^2)``) are from the discontinuity at
  0, in units of how far the other side's can be from the reference's: its moment's error at step ``t - 1``
  (``prev_err``: the largest absolute error of each leaf, as measured) plus a few roundings of the expression
  (``unit``: the unit roundoff of the compared dtype). Above 1 no entry's sign can differ. None for the other
  algorithms."""
  if isinstance(reference, ref.Lion):
    b1, moment, field = float(reference.b1), ref_state["mu"], "mu"
    parts = lambda m, g: (b1 * m, (1.0 - b1) * g)  # noqa: E731
  elif isinstance(reference, ref.Yogi):
    moment, field = ref_state["nu"], "nu"
    parts = lambda v, g: (v, -ref_adam._abs_sq(g))  # noqa: E731
  else:
    return None
  errs = prev_err.get(field) or [0.0] * len(jax.tree.leaves(moment))
  ratios = []
  for x, g, err in zip(jax.tree.leaves(moment), jax.tree.leaves(trees.to_numpy(grads)), errs, strict=True):
    a, b = parts(x, g)
    bound = err + 4 * unit * (np.abs(a) + np.abs(b))
    ratios.append(float(np.min(np.abs(a + b) / np.maximum(bound, 1e-300))))
  return min(ratios)


def _compare(reference: Any, params: Any, grads_seq: list, run: _Run, tol: dict[str, float], what: str = "",
             unit: float = 2.0**-53, skip: Callable[[str, bool], bool] = lambda field, is_complex: False
             ) -> dict[str, float]:
  """Step the reference from ``params`` on ``grads_seq`` and compare, after every step, each quantity recorded in
  ``run`` with the trajectory-normwise measure (``tests.test_reference._Compare``). Returns the worst errors by
  field, and for Lion and Yogi the smallest sign margin (``_sign_margin``; it must stay above 2). ``skip(field,
  is_complex)`` leaves out leaves (as ``_Compare``)."""
  ref_params = trees.to_numpy(params)
  ref_state = reference.init(ref_params)
  layout = compare = None
  prev_err: dict[str, list[float]] = {}
  margin = math.inf
  for t, (grads, actual) in enumerate(zip(grads_seq, run.packed, strict=True), start=1):
    m = _sign_margin(reference, ref_state, grads, prev_err, unit)
    if m is not None:
      margin = min(margin, m)
      assert m > 2.0, (f"{what}step {t}: sign margin {m:.2f} <= 2: a rounding-size difference can flip a sign on "
                       "this seeded trajectory, so it cannot be compared at rounding level; pick another seed")
    delta, ref_state = reference.update(grads, ref_params, ref_state, t)
    ref_params = ref_adam.apply(ref_params, delta)
    full = {"params": ref_params, "updates": delta, **{k: ref_state[k] for k in _state_fields(ref_state)},
            "count": t, "schedule_count": [t] * run.n_schedules}
    expected = {k: full[k] for k in run.keys}
    if layout is None:
      assert set(_state_fields(ref_state)) - {"mu_product"} <= set(run.keys), (what, run.keys)
      layout = _Layout(expected)
      compare = _Compare(layout, tol, skip)
    packed = layout.pack(expected)
    try:
      compare(actual, packed, t)
    except AssertionError as e:
      raise AssertionError(f"{what}{e}") from None
    err = np.maximum.reduceat(np.abs(actual - packed), layout.offsets[:-1])
    prev_err = {f: [float(e) for e, p in zip(err, layout.paths) if p.startswith(f"['{f}']")] for f in ("mu", "nu")}
  worst = compare.worst_by_field()
  if margin < math.inf:
    worst["sign_margin"] = margin
  return worst


def _fmt(worst: dict[str, float], unit: float | None = None) -> str:
  if unit is None:
    return ", ".join(f"{k}={v:.1e}" for k, v in worst.items())
  return ", ".join(f"{k}={v:.1e}" if k == "sign_margin" else f"{k}={v / unit:.1f}u" for k, v in worst.items())


def _f64_tols() -> dict[str, float]:
  return dict.fromkeys(("params", "updates", "mu", "nu", "mu_product"), F64_RTOL)


# ---------------------------------------------------------------------------------------------------------------
# (a) The references against PyTorch and optax (float64)
# ---------------------------------------------------------------------------------------------------------------


def _lib_hyper(rng: np.random.Generator) -> dict[str, float]:
  """Seeded hyperparameters for the library comparisons. ``eps`` is large (1e-6..1e-3) so that the conventions of
  its placement (Adamax's max vs denominator, RAdam's eps before or after the bias correction) differ by far more
  than the tolerance and are really checked."""
  return {
      "lr": float(10 ** rng.uniform(-3.5, -1.5)),
      "b1": float(rng.uniform(0.7, 0.95)),
      "b2": float(rng.uniform(0.95, 0.9995)),
      "eps": float(10 ** rng.uniform(-6, -3)),
      "eps_root": float(10 ** rng.uniform(-14, -10)),
      "wd": float(10 ** rng.uniform(-3, -1)),
  }


@contextlib.contextmanager
def _torch_float64():
  """torch keeps NAdam's ``mu_product`` (and the step counts) in the default dtype: make it float64."""
  old = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  try:
    yield
  finally:
    torch.set_default_dtype(old)


_TORCH_STATE = {"mu": "exp_avg", "nu": ("exp_avg_sq", "exp_inf"), "mu_product": "mu_product"}


def _torch_steps(cls: type, kwargs: dict, params: Any, grads_seq: list, fields: list[str]) -> Iterator[dict]:
  """``torch.optim`` (single-tensor code path) on float64 copies of ``params``; yields params and state per step."""
  leaves, treedef = jax.tree.flatten(trees.to_numpy(params))
  tparams = [torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True) for x in leaves]
  opt = cls(tparams, foreach=False, **kwargs)

  def state(tp, name):
    keys = _TORCH_STATE[name] if isinstance(_TORCH_STATE[name], tuple) else (_TORCH_STATE[name],)
    return next(opt.state[tp][k] for k in keys if k in opt.state[tp]).detach().numpy().copy()

  for grads in grads_seq:
    for tp, g in zip(tparams, treedef.flatten_up_to(grads), strict=True):
      tp.grad = torch.tensor(np.array(g, np.float64))
    opt.step()
    out = {"params": treedef.unflatten([tp.detach().numpy().copy() for tp in tparams])}
    for name in fields:
      if name == "mu_product":  # one per tensor, all equal
        products = {float(state(tp, name)) for tp in tparams}
        assert len(products) == 1, products
        out[name] = products.pop()
      else:
        out[name] = treedef.unflatten([state(tp, name) for tp in tparams])
    yield out


def _torch_cases(h: dict[str, float]) -> dict[str, tuple[type, dict, Any]]:
  """name -> (torch class, its kwargs, the reference configured like it)."""
  lr, b1, b2, eps, wd = h["lr"], h["b1"], h["b2"], h["eps"], h["wd"]
  common = {"lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": wd}
  m = {"learning_rate": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": wd}
  return {
      "adamax": (torch.optim.Adamax, common, ref.Adamax(eps_mode="max", **m)),
      **{f"nadam_{kind}": (torch.optim.NAdam, {**common, "momentum_decay": 4e-3, "decoupled_weight_decay": dec},
                           ref.NAdam(momentum_decay=4e-3, decoupled_weight_decay=dec, **m))
         for kind, dec in (("coupled", False), ("decoupled", True))},
      # torch: rho_t > 5, and eps added to sqrt(v_t) before the bias correction (eps_mode="raw").
      **{f"radam_{kind}": (torch.optim.RAdam, {**common, "decoupled_weight_decay": dec},
                           ref.RAdam(threshold=5.0, strict=True, eps_mode="raw", decoupled_weight_decay=dec, **m))
         for kind, dec in (("coupled", False), ("decoupled", True))},
  }


_TORCH_NAMES = ["adamax", "nadam_coupled", "nadam_decoupled", "radam_coupled", "radam_decoupled"]


def _torch_setup(name: str) -> tuple[dict, Any, list]:
  rng = np.random.default_rng(_seed("torch", name))
  h = _lib_hyper(rng)
  params = trees.to_numpy(trees.mixed_params(rng, bf16=False, complex_leaf=False, real_dtype=np.float64))
  grads_seq = _gradients(rng, params, N_LIB_STEPS)
  return h, params, grads_seq


@functools.cache
def _torch_run(name: str) -> tuple[Any, Any, list, _Run]:
  """The torch trajectory of case ``name`` (recorded once, reused by the wrong-reference tests)."""
  h, params, grads_seq = _torch_setup(name)
  cls, kwargs, reference = _torch_cases(h)[name]
  fields = _state_fields(reference.init(params))
  with _torch_float64():
    run = _record(_torch_steps(cls, kwargs, params, grads_seq, fields))
  return reference, params, grads_seq, run


def _against_torch(name: str, change: Callable[[Any], Any] = lambda r: r) -> dict[str, float]:
  reference, params, grads_seq, run = _torch_run(name)
  return _compare(change(reference), params, grads_seq, run, _f64_tols(), f"torch {name}: ")


@pytest.mark.parametrize("name", _TORCH_NAMES)
def test_reference_matches_torch(name, x64):
  """The references configured like ``torch.optim`` reproduce it in float64 (params and state, every step)."""
  worst = _against_torch(name)
  print(f"reference vs torch {name}: {_fmt(worst)}")


def _masked_matrices(params: Any) -> Any:
  """A mask that decays the leaves with ndim >= 2 (JAX and NumPy leaves alike)."""
  return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _optax_cases(h: dict[str, float]) -> dict[str, tuple[optax.GradientTransformation, Any]]:
  """name -> (optax optimizer, the reference configured like it)."""
  lr, b1, b2, eps, eps_root, wd = h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], h["wd"]
  mask = _masked_matrices
  return {
      "adamax": (optax.adamax(lr, b1, b2, eps), ref.Adamax(lr, b1, b2, eps)),
      "adamaxw": (optax.adamaxw(lr, b1, b2, eps, weight_decay=wd, mask=mask),
                  ref.Adamax(lr, b1, b2, eps, weight_decay=wd, decoupled_weight_decay=True, mask=mask)),
      "nadam": (optax.nadam(lr, b1, b2, eps, eps_root), ref.NAdam(lr, b1, b2, eps, eps_root, momentum_decay=None)),
      "nadamw": (optax.nadamw(lr, b1, b2, eps, eps_root, weight_decay=wd, mask=mask),
                 ref.NAdam(lr, b1, b2, eps, eps_root, weight_decay=wd, decoupled_weight_decay=True, mask=mask)),
      "radam_nesterov": (optax.radam(lr, b1, b2, eps, eps_root, threshold=6.5, nesterov=True),
                         ref.RAdam(lr, b1, b2, eps, eps_root, threshold=6.5, nesterov=True)),
      "adabelief_nesterov": (optax.adabelief(lr, b1, b2, eps=1e-12, eps_root=1e-14, nesterov=True),
                             ref.AdaBelief(lr, b1, b2, eps=1e-12, eps_root=1e-14, nesterov=True)),
      # optax.yogi is this transform with eps_root = 0 and initial_accumulator_value = 1e-6.
      "yogi": (optax.chain(optax.scale_by_yogi(b1, b2, 3e-4, eps_root, initial_accumulator_value=1e-4),
                           optax.scale_by_learning_rate(lr)),
               ref.Yogi(lr, b1, b2, 3e-4, eps_root, initial_accumulator_value=1e-4)),
      "lion": (optax.lion(lr / 10, b1, b2, weight_decay=wd, mask=mask),
               ref.Lion(lr / 10, b1, b2, weight_decay=wd, mask=mask)),
      "lamb": (optax.lamb(lr, b1, b2, eps, eps_root, weight_decay=wd, mask=mask),
               ref.LAMB(lr, b1, b2, eps, eps_root, weight_decay=wd, mask=mask)),
  }


_OPTAX_NAMES = ["adamax", "adamaxw", "nadam", "nadamw", "radam_nesterov", "adabelief_nesterov", "yogi", "lion", "lamb"]


def _optax_state(opt_state: Any, fields: list[str]) -> dict[str, Any]:
  """The moment state inside an optax (chain) state, named like the reference's; optax keeps the second moment of a
  complex leaf complex with a zero imaginary part: its real part is compared."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
  assert len(found) == 1, opt_state
  out = {"count": found[0].count}
  for name in fields:
    if name == "mu_product" and not hasattr(found[0], name):  # optax's nadam has no momentum schedule
      continue
    x = getattr(found[0], name)
    if name == "nu":
      x = jax.tree.map(jnp.real, x)
    out[name] = x
  return out


def _optax_steps(tx: optax.GradientTransformation, params: Any, grads_seq: list, fields: list[str]) -> Iterator[dict]:
  @jax.jit
  def step(grads, state, params):  # one compiled function per case (the state extraction included)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return params, state, _packed({"params": params, "updates": updates, **_optax_state(state, fields)})

  state = tx.init(params)
  for grads in grads_seq:
    params, state, observed = step(grads, state, params)
    yield observed


@functools.cache
def _optax_run(name: str) -> tuple[Any, Any, list, _Run]:
  """The optax trajectory of case ``name`` (recorded once, reused by the wrong-reference tests)."""
  rng = np.random.default_rng(_seed("optax", name))
  h = _lib_hyper(rng)
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)  # complex128 leaf included
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128)}
  grads_seq = _gradients(rng, params, N_LIB_STEPS)
  tx, reference = _optax_cases(h)[name]
  fields = _state_fields(reference.init(trees.to_numpy(params)))
  return reference, params, grads_seq, _record(_optax_steps(tx, params, grads_seq, fields))


def _against_optax(name: str, change: Callable[[Any], Any] = lambda r: r) -> dict[str, float]:
  reference, params, grads_seq, run = _optax_run(name)
  return _compare(change(reference), params, grads_seq, run, _f64_tols(), f"optax {name}: ")


@pytest.mark.parametrize("name", _OPTAX_NAMES)
def test_reference_matches_optax(name, x64):
  """The references configured like optax reproduce it in float64 / complex128 (params, updates, state, every
  step). optax has complex support throughout, so this also checks the references' complex conventions (``|g|``,
  ``|g|^2``, ``c / |c|``, complex norms) against optax's."""
  worst = _against_optax(name)
  print(f"reference vs optax {name}: {_fmt(worst)}")


# A deliberately wrong reference against a library: (library, case, reference -> wrong reference).
_WRONG_LIB = {
    "torch_radam_eps_placement": ("torch", "radam_coupled", lambda r: dataclasses.replace(r, eps_mode="corrected")),
    "torch_radam_paper_threshold": ("torch", "radam_coupled", lambda r: dataclasses.replace(r, threshold=4.0)),
    "torch_nadam_paper_ema": ("torch", "nadam_coupled", lambda r: dataclasses.replace(r, paper_ema=True)),
    "torch_nadam_no_schedule": ("torch", "nadam_decoupled", lambda r: dataclasses.replace(r, momentum_decay=None)),
    "torch_adamax_keras_eps": ("torch", "adamax", lambda r: dataclasses.replace(r, eps_mode="denominator")),
    "optax_yogi_paper": ("optax", "yogi", lambda r: dataclasses.replace(r, bias_correction=False)),
    "optax_lamb_no_mask": ("optax", "lamb", lambda r: dataclasses.replace(r, mask=None)),
    "optax_lion_b1_b2_swapped": ("optax", "lion", lambda r: dataclasses.replace(r, b1=r.b2, b2=r.b1)),
    "optax_adabelief_b1": ("optax", "adabelief_nesterov", lambda r: dataclasses.replace(r, b1=r.b1 + 1e-6)),
}


@pytest.mark.parametrize("wrong", list(_WRONG_LIB))
def test_library_comparison_detects_a_wrong_reference(wrong, x64):
  """The library comparisons can fail: a reference configured with the other convention (or a perturbed
  hyperparameter) is caught."""
  lib, name, change = _WRONG_LIB[wrong]
  with pytest.raises(AssertionError, match="relative error"):
    (_against_torch if lib == "torch" else _against_optax)(name, change)


# ---------------------------------------------------------------------------------------------------------------
# (b), (c) adamx against the references: the trajectory cases
# ---------------------------------------------------------------------------------------------------------------


def _hyper(rng: np.random.Generator, algo: str) -> dict[str, float]:
  """Seeded hyperparameters in the ranges used in practice, per algorithm."""
  h = {
      "learning_rate": float(10 ** rng.uniform(-4, -1.5)),
      "b1": float(rng.uniform(0.6, 0.95)),
      "b2": float(rng.uniform(0.95, 0.9995)),
      "eps": float(10 ** rng.uniform(-10, -6)),
      "eps_root": float(10 ** rng.uniform(-14, -8)),
      "weight_decay": float(10 ** rng.uniform(-4, -1)),
      "momentum_decay": float(10 ** rng.uniform(-3, -1.5)),
      "threshold": float(rng.uniform(4.5, 8.0)),
      "initial_accumulator_value": float(10 ** rng.uniform(-7, -4)),
  }
  if algo in ("adamax", "radam"):  # large enough for the eps conventions to differ by >> F64_RTOL
    h["eps"] = float(10 ** rng.uniform(-8, -5))
  if algo == "yogi":
    h["eps"] = float(10 ** rng.uniform(-4, -2))
  if algo == "adabelief":
    h["eps"] = float(10 ** rng.uniform(-16, -8))
  if algo == "lamb":
    h["eps"] = float(10 ** rng.uniform(-8, -5))
  if algo == "lion":
    h["learning_rate"] = float(10 ** rng.uniform(-5, -3))
    h["b1"], h["b2"] = float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.95, 0.999))
  return h


def _case(name: str, h: dict[str, float]) -> tuple[Any, Any]:
  """The adamx optimizer named ``name`` (algorithm, then features joined by ``_``) and its reference."""
  algo, *features = name.split("_")
  features = set(features)
  lr, ref_lr = _schedules(h["learning_rate"]) if "schedule" in features else (h["learning_rate"],) * 2
  b = {"b1": h["b1"], "b2": h["b2"]}
  eps, eps_root, wd = h["eps"], h["eps_root"], h["weight_decay"]
  mask = _masked_matrices if "mask" in features else None
  if algo in ("adamax", "adamaxw"):
    eps_mode = "denominator" if "denominator" in features else "max"
    if algo == "adamaxw":
      return (adamx.adamaxw(lr, **b, eps=eps, weight_decay=wd, mask=mask, eps_mode=eps_mode),
              ref.Adamax(ref_lr, **b, eps=eps, eps_mode=eps_mode, weight_decay=wd, decoupled_weight_decay=True,
                         mask=mask))
    wd = wd if "l2" in features else 0.0
    return (adamx.adamax(lr, **b, eps=eps, eps_mode=eps_mode, weight_decay=wd),
            ref.Adamax(ref_lr, **b, eps=eps, eps_mode=eps_mode, weight_decay=wd))
  if algo in ("nadam", "nadamw"):
    psi = h["momentum_decay"] if "psi" in features else None
    m = {**b, "eps": eps, "eps_root": eps_root, "momentum_decay": psi}
    if algo == "nadamw":
      return (adamx.nadamw(lr, **m, weight_decay=wd, mask=mask),
              ref.NAdam(ref_lr, **m, weight_decay=wd, decoupled_weight_decay=True, mask=mask))
    wd = wd if "l2" in features else 0.0
    return adamx.nadam(lr, **m, weight_decay=wd), ref.NAdam(ref_lr, **m, weight_decay=wd)
  if algo == "radam":
    m = {**b, "eps": eps, "eps_root": eps_root, "nesterov": "nesterov" in features,
         "threshold": h["threshold"] if "threshold" in features else 5.0,
         "weight_decay": wd if features & {"l2", "decoupled"} else 0.0,
         "decoupled_weight_decay": "decoupled" in features}
    return adamx.radam(lr, **m), ref.RAdam(ref_lr, **m)
  if algo == "adabelief":
    m = {**b, "eps": eps, "eps_root": eps_root, "nesterov": "nesterov" in features}
    return adamx.adabelief(lr, **m), ref.AdaBelief(ref_lr, **m)
  if algo == "yogi":
    m = {**b, "eps": eps, "eps_root": 0.0 if "paper" in features else eps_root,
         "initial_accumulator_value": h["initial_accumulator_value"], "bias_correction": "paper" not in features}
    return adamx.yogi(lr, **m), ref.Yogi(ref_lr, **m)
  if algo == "lion":
    return adamx.lion(lr, **b, weight_decay=wd, mask=mask), ref.Lion(ref_lr, **b, weight_decay=wd, mask=mask)
  assert algo == "lamb", name
  m = {**b, "eps": eps, "eps_root": eps_root, "weight_decay": wd if "wd" in features else 0.0, "mask": mask}
  return adamx.lamb(lr, **m), ref.LAMB(ref_lr, **m)


# Every option of the API, each in at least one float64 case (a masked case also covers the option's absence: its
# unmasked leaves do not decay): adamax (eps_mode "denominator", coupled L2), adamaxw (eps_mode "max", mask); nadam
# (no schedule; Dozat's schedule with coupled L2), nadamw (schedule, mask); radam (coupled L2; another threshold with
# Nesterov; decoupled decay); adabelief (with and without Nesterov); yogi (optax's form; the paper's: no bias
# correction, no eps_root); lion (mask); lamb (decay, mask). Four cases add adamx's warmup-cosine schedule.
_F64_CASES = [
    "adamax_denominator_l2", "adamaxw_mask_schedule",
    "nadam", "nadam_psi_l2", "nadamw_psi_mask_schedule",
    "radam_l2", "radam_threshold_nesterov", "radam_decoupled_schedule",
    "adabelief", "adabelief_nesterov",
    "yogi", "yogi_paper",
    "lion_mask_schedule",
    "lamb_wd_mask",
]
# float32: each algorithm once, with the options whose float32 rounding differs most (Dozat's momentum schedule, a
# threshold near 4 with Nesterov, Yogi's undamped accumulator without bias correction, masks, decay, schedules).
_F32_CASES = [
    "adamaxw_mask_schedule", "nadam_psi_l2", "radam_threshold_nesterov", "adabelief", "yogi_paper",
    "lion_mask_schedule", "lamb_wd_mask",
]


def _adamx_moments(state: Any) -> Any:
  """The moment state (the NamedTuple with ``count`` and ``mu``) inside an adamx (chain) state."""
  is_moments = lambda x: hasattr(x, "mu") and hasattr(x, "count")  # noqa: E731
  found = [s for s in jax.tree.leaves(state, is_leaf=is_moments) if is_moments(s)]
  assert len(found) == 1, state
  return found[0]


def _adamx_steps(tx: Any, params: Any, grads_seq: list, fields: list[str]) -> Iterator[dict]:
  """adamx's trajectory: after each step params, updates, every state field named like the reference's, the
  moments' count and the schedules' counts (one compiled function per case)."""

  def observe(params, updates, state):
    moments = _adamx_moments(state)
    schedules = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, adamx.ScaleByScheduleState))
    return {"params": params, "updates": updates, **{k: getattr(moments, k) for k in fields}, "count": moments.count,
            "schedule_count": [s.count for s in schedules if isinstance(s, adamx.ScaleByScheduleState)]}

  @jax.jit
  def step(grads, state, params):
    updates, state = tx.update(grads, state, params)
    params = adamx.apply_updates(params, updates)
    return params, state, _packed(observe(params, updates, state))

  state = tx.init(params)
  for grads in grads_seq:
    params, state, observed = step(grads, state, params)
    yield observed


@functools.cache
def _adamx_run(mode: str, case: str) -> tuple[Any, dict, Any, list, _Run]:
  """The seeded case's reference, hyperparameters, params, gradients and adamx trajectory (recorded once per
  session: the wrong-reference tests reuse it). ``mode`` is "f64" (run under x64) or "f32"."""
  rng = np.random.default_rng(_seed(mode, case))
  algo = case.split("_")[0]
  h = _hyper(rng, {"adamaxw": "adamax", "nadamw": "nadam"}.get(algo, algo))
  tx, reference = _case(case, h)
  if mode == "f64":
    params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128)}
  else:
    params = trees.mixed_params(rng, bf16=False)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.complex64)}
  grads_seq = _gradients(rng, params, N_STEPS)
  fields = _state_fields(reference.init(trees.to_numpy(params)))
  return reference, h, params, grads_seq, _record(_adamx_steps(tx, params, grads_seq, fields))


@pytest.mark.slow
@pytest.mark.parametrize("case", _F64_CASES)
def test_float64_trajectory(case, x64):
  """float64 / complex128 leaves: adamx is the paper's algorithm (with the API's options) to rounding level for 512
  steps: params, updates and every state field within ``F64_RTOL`` at every step.

  (Measured when written: every case <= 2e-15, except the three RAdam cases, which fail at ~1.5e-10 on the updates:
  adamx's ``rho_t`` uses a 5-term series of ``coth(y) - 1/y`` for ``y = -t log(b2) / 2 < 0.5`` that is accurate to
  ~1e-8 relative, enough for float32 but not for float64, so ``r_t`` is off by up to ~1e-9 relative; this
  reference's ``rho_t`` agrees with a 50-digit evaluation to 3e-16.)"""
  reference, _, params, grads_seq, run = _adamx_run("f64", case)
  worst = _compare(reference, params, grads_seq, run, _f64_tols(), f"float64 {case}: ")
  print(f"float64 {case}: {_fmt(worst)}")


def _f32_tols(case: str, h: dict[str, float], n: int) -> dict[str, float]:
  """Tolerances for a float32 case, in units of ``u = 2**-24`` (``U32``), from float32 rounding.

  The EMA bound ``tests.test_reference._f32_tol(b, n) = u (8 + min(n, 1 / (1 - b)))`` (b rounded to float32 once,
  a few roundings per step damped by b) covers ``mu`` (Lion's ``mu`` is its ``b2`` EMA) and the EMAs of ``|g|^2``;
  params get ``8 u sqrt(n)`` (a random walk of one rounding per step, as there). Per algorithm:

  * Adamax's ``u_t = b2^k |g_s|`` is not an average but a running max of age ``k``; each of the ``k`` steps multiplies
    by the float32 ``b2`` (relative error <= u) and rounds (<= u): ``<= 2 k u``. For normally distributed gradients
    the age stays below a few ``1 / (1 - b2)`` (a 4-sigma max decays below the median |g| in
    ``ln 6 / (1 - b2)`` steps), so ``u (8 + 4 min(n, 1 / (1 - b2)))``.
  * NAdam's ``mu_product`` after ``t`` float32 factors is off by ``<= 3 t u`` relative; on the trajectory's scale
    (its first value) that is ``3 u t b1^(t-1) <= 3 u / (e (1 - b1))``: within ``mu``'s bound.
  * AdaBelief's ``s_t`` averages ``|g - m_t|^2``, which inherits ``2 x`` the error of ``m_t``: ``tol_nu + 2 tol_mu``.
  * Yogi's ``v_t = v_{t-1} -+ (1 - b2) |g|^2`` is not damped: one rounding per step adds up like a random walk,
    ``~ 2 u sqrt(n)`` (worst case ``n u``), and the float32 ``(1 - b2)`` is off by <= u relative on every increment,
    whose sum is at most ``~ 4 n (1 - b2)`` times ``v``'s scale: ``u (8 + 4 sqrt(n) + 4 n (1 - b2))``.
  * Updates: ``mhat / (sqrt(vhat) + eps)`` carries ``mu``'s relative error plus half of ``nu``'s: ``tol_mu + tol_nu``.
    RAdam adds the error of ``r_t``: adamx's float32 ``rho_t`` is good to ~6 u relative (see ``adamx.radam``), and
    ``d ln r_t / d rho_t <= 1 / (2 (rho_t - 4))``, so ``+ 8 u threshold / (threshold - 4)``. LAMB's trust ratio
    ``||x|| / ||r + lambda x||`` doubles the relative error of ``r`` and adds the params': ``2 (tol_mu + tol_nu) +
    tol_params``. Lion's real updates are exact signs times the learning rate (the sign margin guarantees no flip):
    ``8 u`` covers the learning rate, the schedule (measured 1.2 u) and ``lambda theta``. Lion's complex update
    ``c / |c|`` has the condition number ``|b1 m| / |c|``, unbounded near ``c = 0``: entry by entry it is compared in
    float64 only; in float32 its effect is compared through the params (``lr`` times a phase error is at rounding
    level there), see ``_f32_skip``.
  """
  algo = case.split("_")[0]
  b1, b2 = h["b1"], h["b2"]
  tol_mu, tol_nu = _f32_tol(b2 if algo == "lion" else b1, n), _f32_tol(b2, n)
  if algo in ("adamax", "adamaxw"):
    tol_nu = U32 * (8 + 4 * min(n, 1.0 / (1.0 - b2)))
  elif algo == "adabelief":
    tol_nu += 2 * tol_mu
  elif algo == "yogi":
    tol_nu = U32 * (8 + 4 * math.sqrt(n) + 4 * n * (1.0 - b2))
  tols = {"mu": tol_mu, "nu": tol_nu, "mu_product": tol_mu, "params": 8 * U32 * math.sqrt(n),
          "updates": tol_mu + tol_nu}
  if algo == "radam":
    threshold = h["threshold"] if "threshold" in case else 5.0
    tols["updates"] += 8 * U32 * threshold / (threshold - 4.0)
  elif algo == "lamb":
    tols["updates"] = 2 * (tol_mu + tol_nu) + tols["params"]
  elif algo == "lion":
    tols["updates"] = 8 * U32
  return tols


def _f32_skip(case: str) -> Callable[[str, bool], bool]:
  """Leaves left out of the entry-by-entry float32 comparison: Lion's complex updates (see ``_f32_tols``)."""
  return lambda field, is_complex: case.startswith("lion") and field == "updates" and is_complex


@pytest.mark.slow
@pytest.mark.parametrize("case", _F32_CASES)
def test_float32_trajectory(case):
  """float32 / complex64 leaves, 512 steps, within the float32 error bounds of ``_f32_tols``."""
  reference, h, params, grads_seq, run = _adamx_run("f32", case)
  if case.startswith("radam"):
    # The branch rho_t >= threshold must not be decided by rounding: rho_t stays >= 1e-4 relative from it.
    threshold = reference.threshold
    gap = min(abs(ref.radam_rho(h["b2"], t)[1] - threshold) / threshold for t in range(1, N_STEPS + 1))
    assert gap > 1e-4, f"rho_t comes within {gap:.1e} of the threshold: pick another seed"
  tol = _f32_tols(case, h, N_STEPS)
  worst = _compare(reference, params, grads_seq, run, tol, f"float32 {case}: ", unit=U32, skip=_f32_skip(case))
  print(f"float32 {case} (b1={h['b1']:.3f}, b2={h['b2']:.5f}): {_fmt(worst, U32)} (tol "
        + ", ".join(f"{k}={v / U32:.0f}u" for k, v in tol.items() if k in worst) + ")")


# ---------------------------------------------------------------------------------------------------------------
# (d) Hand-computed first steps, algebraic equivalences, and the comparisons can fail
# ---------------------------------------------------------------------------------------------------------------

_G = {"r": np.array([0.5, -2.0, 3.0]), "c": np.array([3.0 + 4.0j, -1.0j])}
_THETA = {"r": np.array([1.0, 2.0, -1.0]), "c": np.array([1.0 + 1.0j, 2.0])}
_LR, _B1, _B2, _EPS, _LAM, _PSI = 0.1, 0.9, 0.999, 1e-8, 0.01, 4e-3


def _tmap(fn: Callable, *trees_: Any) -> Any:
  return jax.tree.map(fn, *trees_)


def _first_steps() -> dict[str, tuple[Any, Any, Any]]:
  """name -> (adamx optimizer, reference, the first update by hand). With ``m_0 = 0`` (``v_0 = 0``):
  ``m_1 = (1 - b1) g``, ``mhat_1 = g``, ``vhat_1 = |g|^2``, so most first steps are ``g / |g|`` up to eps."""
  lr, b1, b2, eps, lam = _LR, _B1, _B2, _EPS, _LAM
  unit = _tmap(lambda g: g / np.abs(g), _G)  # sign(g), g / |g| for complex g
  soft = _tmap(lambda g: g / (np.abs(g) + eps), _G)
  mu1, mu2 = ref.nadam_momentum(b1, 1, _PSI), ref.nadam_momentum(b1, 2, _PSI)
  nadam_factor = 1.0 + mu2 * (1.0 - b1) / (1.0 - mu1 * mu2)  # mhat_1 / g
  lamb_u = _tmap(lambda s, x: s + lam * x, soft, _THETA)
  lamb_ratio = {k: np.linalg.norm(_THETA[k]) / np.linalg.norm(lamb_u[k]) for k in _G}
  m = {"b1": b1, "b2": b2}
  return {
      # Adamax with eps = 0: u_1 = |g|, m_1 / (1 - b1) / u_1 = g / |g|: the step is lr sign(g), in both eps modes.
      "adamax_eps0": (adamx.adamax(lr, **m, eps=0.0), ref.Adamax(lr, **m, eps=0.0), _tmap(lambda s: -lr * s, unit)),
      "adamax_denominator_eps0": (adamx.adamax(lr, **m, eps=0.0, eps_mode="denominator"),
                                  ref.Adamax(lr, **m, eps=0.0, eps_mode="denominator"), _tmap(lambda s: -lr * s, unit)),
      "adamaxw": (adamx.adamaxw(lr, **m, eps=eps, weight_decay=lam),
                  ref.Adamax(lr, **m, eps=eps, weight_decay=lam, decoupled_weight_decay=True),
                  _tmap(lambda s, x: -lr * (s + lam * x), soft, _THETA)),
      # NAdam: mhat_1 = mu_2 (1 - b1) g / (1 - mu_1 mu_2) + (1 - mu_1) g / (1 - mu_1).
      "nadam_psi": (adamx.nadam(lr, **m, eps=eps, momentum_decay=_PSI),
                    ref.NAdam(lr, **m, eps=eps, momentum_decay=_PSI), _tmap(lambda s: -lr * nadam_factor * s, soft)),
      # RAdam: rho_1 = rho_inf - 2 b2 / (1 - b2) = 1 < 4: un-adapted, mhat_1 = g.
      "radam": (adamx.radam(lr, **m, eps=eps), ref.RAdam(lr, **m, eps=eps), _tmap(lambda g: -lr * g, _G)),
      # AdaBelief: g - m_1 = b1 g, so shat_1 = b1^2 |g|^2 (eps_root = 0).
      "adabelief": (adamx.adabelief(lr, **m, eps=eps, eps_root=0.0), ref.AdaBelief(lr, **m, eps=eps, eps_root=0.0),
                    _tmap(lambda g: -lr * g / (b1 * np.abs(g) + eps), _G)),
      # Yogi from zero accumulators: v_1 = 0 - (1 - b2) sign(0 - |g|^2) |g|^2 = (1 - b2) |g|^2.
      "yogi_init0": (adamx.yogi(lr, **m, eps=eps, initial_accumulator_value=0.0),
                     ref.Yogi(lr, **m, eps=eps, initial_accumulator_value=0.0), _tmap(lambda s: -lr * s, soft)),
      "yogi_paper": (adamx.yogi(lr, **m, eps=eps, initial_accumulator_value=0.0, bias_correction=False),
                     ref.Yogi(lr, **m, eps=eps, initial_accumulator_value=0.0, bias_correction=False),
                     _tmap(lambda g: -lr * (1 - b1) * g / (math.sqrt(1 - b2) * np.abs(g) + eps), _G)),
      # Lion: c_1 = (1 - b1) g, so the step is lr (sign(g) + lambda theta).
      "lion": (adamx.lion(lr, **m, weight_decay=lam), ref.Lion(lr, **m, weight_decay=lam),
               _tmap(lambda s, x: -lr * (s + lam * x), unit, _THETA)),
      # LAMB: r_1 = g / (|g| + eps), u = r_1 + lambda theta, step lr ||theta|| / ||u|| u per leaf.
      "lamb": (adamx.lamb(lr, **m, eps=eps, weight_decay=lam), ref.LAMB(lr, **m, eps=eps, weight_decay=lam),
               {k: -lr * lamb_ratio[k] * lamb_u[k] for k in _G}),
  }


def _adamx_update(tx: Any, grads: Any, params: Any) -> Any:
  """adamx's first update on the host (x64)."""
  params, grads = jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads)
  return jax.device_get(jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params))


_FIRST_STEPS = ["adamax_eps0", "adamax_denominator_eps0", "adamaxw", "nadam_psi", "radam", "adabelief", "yogi_init0",
                "yogi_paper", "lion", "lamb"]


@pytest.mark.parametrize("name", _FIRST_STEPS)
def test_reference_first_step_by_hand(name):
  """The reference's first step in closed form (real and complex leaves)."""
  _, reference, expected = _first_steps()[name]
  delta, state = reference.update(_G, _THETA, reference.init(_THETA), 1)
  trees.assert_close(delta, expected, 1e-15, f"reference {name} ")
  assert state["mu"]["c"].dtype == np.complex128
  if name == "lion":  # m_1 = (1 - b2) g
    trees.assert_close(state["mu"], _tmap(lambda g: (1 - _B2) * g, _G), 1e-15)


def test_adamx_first_step_by_hand(x64):
  """adamx's first step in closed form, every algorithm of ``_first_steps`` (one compiled function for all)."""
  steps = _first_steps()
  params, grads = jax.tree.map(jnp.asarray, _THETA), jax.tree.map(jnp.asarray, _G)

  @jax.jit
  def first(grads, params):
    return {name: tx.update(grads, tx.init(params), params)[0] for name, (tx, _, _) in steps.items()}

  updates = jax.device_get(first(grads, params))
  for name, (_, _, expected) in steps.items():
    trees.assert_close(updates[name], expected, 1e-15, f"adamx {name} ")


def test_radam_early_steps_are_momentum(x64):
  """RAdam while rho_t < threshold is bias-corrected momentum SGD: theta_t - theta_{t-1} = -lr m_t / (1 - b1^t);
  rho_1 = 1 exactly, and with b2 = 0.999, rho_t first reaches 5 at t = 6 (rho_5 = 4.9900...)."""
  rho = [ref.radam_rho(_B2, t)[1] for t in range(1, 8)]
  assert abs(rho[0] - 1.0) < 1e-12 and rho[4] < 5.0 <= rho[5], rho
  rng = np.random.default_rng(11)
  params = trees.to_numpy(trees.mixed_params(rng, bf16=False, real_dtype=np.float64))
  grads_seq = _gradients(rng, params, 5)
  reference, tx = ref.RAdam(_LR, _B1, _B2, _EPS), adamx.radam(_LR, _B1, _B2, _EPS)
  state, m = reference.init(params), _tmap(np.zeros_like, params)
  tx_state, update = tx.init(params), jax.jit(tx.update)
  for t, g in enumerate(grads_seq, start=1):
    m = _tmap(lambda m_, g_: _B1 * m_ + (1 - _B1) * g_, m, g)
    expected = _tmap(lambda m_: -_LR * m_ / (1 - _B1**t), m)
    delta, state = reference.update(g, params, state, t)
    updates, tx_state = update(g, tx_state, params)
    trees.assert_close(delta, expected, 1e-14, f"reference step {t} ")
    trees.assert_close(updates, expected, 1e-14, f"adamx step {t} ")


def test_lamb_zero_norm_rule(x64):
  """The trust ratio is 1 where ||x|| = 0 (a zero leaf moves by lr r_t) or ||r + lambda x|| = 0 (a zero gradient
  without decay: the step is 0, not NaN)."""
  params = {"zero": np.zeros(3), "w": np.array([1.0, -2.0])}
  grads = {"zero": np.array([0.5, -1.0, 2.0]), "w": np.zeros(2)}
  expected = {"zero": -_LR * grads["zero"] / (np.abs(grads["zero"]) + _EPS), "w": np.zeros(2)}
  reference = ref.LAMB(_LR, _B1, _B2, _EPS)
  delta, _ = reference.update(grads, params, reference.init(params), 1)
  trees.assert_close(delta, expected, 1e-15, "reference ")
  updates = _adamx_update(adamx.lamb(_LR, _B1, _B2, _EPS), grads, params)
  trees.assert_close(updates, expected, 1e-15, "adamx ")


def _trajectory(opt: Any, params: Any, grads_seq: list) -> list[tuple[Any, dict]]:
  """[(delta, state)] of a reference over ``grads_seq``."""
  state, out = opt.init(params), []
  for t, g in enumerate(grads_seq, start=1):
    delta, state = opt.update(g, params, state, t)
    params = ref_adam.apply(params, delta)
    out.append((delta, state))
  return out


def _adamx_trajectory(tx: Any, params: Any, grads_seq: list) -> list[tuple[Any, Any, Any]]:
  """[(updates, params, moments)] of adamx over ``grads_seq`` (one compiled step)."""

  @jax.jit
  def step(g, state, params):
    updates, state = tx.update(g, state, params)
    return updates, state, adamx.apply_updates(params, updates)

  state, out = tx.init(params), []
  for g in grads_seq:
    updates, state, params = step(g, state, params)
    out.append((updates, params, _adamx_moments(state)))
  return jax.device_get(out)


def test_nadam_without_schedule_is_adam_nesterov(x64, rng):
  """nadam(momentum_decay=None) is adam(nesterov=True) (Dozat's form with a constant mu_t = b1): in float64, adamx's
  two optimizers agree to rounding (updates, params, mu, nu) over 128 steps, and so do the two references."""
  h = {"b1": 0.87, "b2": 0.995, "eps": 1e-7, "eps_root": 1e-12}
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  grads_seq = _gradients(rng, params, 128)
  a = _adamx_trajectory(adamx.nadam(3e-3, **h), params, grads_seq)
  b = _adamx_trajectory(adamx.adam(3e-3, nesterov=True, **h), params, grads_seq)
  for t, ((ua, pa, sa), (ub, pb, sb)) in enumerate(zip(a, b), start=1):
    trees.assert_close((ua, pa, sa.mu, sa.nu), (ub, pb, sb.mu, sb.nu), 1e-13, f"adamx step {t} ")
  np_params = trees.to_numpy(params)
  ra = _trajectory(ref.NAdam(3e-3, **h, momentum_decay=None), np_params, grads_seq)
  rb = _trajectory(ref_adam.Adam(3e-3, nesterov=True, **h), np_params, grads_seq)
  for t, ((da, sa), (db, sb)) in enumerate(zip(ra, rb), start=1):
    trees.assert_close((da, sa["mu"], sa["nu"]), (db, sb["mu"], sb["nu"]), 1e-13, f"reference step {t} ")
  # ... and with the schedule it is not (mu_t < b1 early on).
  rc = _trajectory(ref.NAdam(3e-3, **h, momentum_decay=_PSI), np_params, grads_seq[:1])
  assert trees.max_rel_err(rc[0][0], ra[0][0]) > 1e-2


def test_adabelief_is_not_adam(x64, rng):
  """AdaBelief divides by the spread of g around m_t, not by |g|: at t = 1 (eps = eps_root = 0) its step is Adam's
  divided by b1 (g - m_1 = b1 g), and later the two differ by O(1); for adamx and for the references."""
  h = {"b1": 0.8, "b2": 0.99, "eps": 0.0, "eps_root": 0.0}
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  grads_seq = _gradients(rng, params, 20)
  belief = _adamx_trajectory(adamx.adabelief(1e-2, **h), params, grads_seq)
  adam = _adamx_trajectory(adamx.adam(1e-2, **h), params, grads_seq)
  trees.assert_close(belief[0][0], _tmap(lambda u: u / h["b1"], adam[0][0]), 1e-14, "adamx t=1 ")
  assert trees.max_rel_err(belief[-1][0], adam[-1][0]) > 0.1
  np_params = trees.to_numpy(params)
  rbelief = _trajectory(ref.AdaBelief(1e-2, **h), np_params, grads_seq)
  radam_ = _trajectory(ref_adam.Adam(1e-2, **h), np_params, grads_seq)
  trees.assert_close(rbelief[0][0], _tmap(lambda u: u / h["b1"], radam_[0][0]), 1e-14, "reference t=1 ")
  assert trees.max_rel_err(rbelief[-1][0], radam_[-1][0]) > 0.1


def test_yogi_bias_correction_on_and_off(x64, rng):
  """From zero accumulators and a constant gradient, Yogi's v_t grows additively, v_t = t (1 - b2) |g|^2 (the sign
  is -1 while v_t < |g|^2, i.e. for t < 1 / (1 - b2)), unlike Adam's EMA. The bias-corrected first step is
  g / |g| (eps = 0) and, for every t, the paper's uncorrected step is the corrected one times
  (1 - b1^t) / sqrt(1 - b2^t); adamx and the references."""
  h = {"b1": 0.9, "b2": 0.99, "eps": 0.0, "initial_accumulator_value": 0.0}
  n = 30  # < 1 / (1 - b2)
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  g = _gradients(rng, params, 1)[0]
  on = _adamx_trajectory(adamx.yogi(1e-2, **h), params, [g] * n)
  off = _adamx_trajectory(adamx.yogi(1e-2, bias_correction=False, **h), params, [g] * n)
  np_params = trees.to_numpy(params)
  ron = _trajectory(ref.Yogi(1e-2, **h), np_params, [g] * n)
  roff = _trajectory(ref.Yogi(1e-2, bias_correction=False, **h), np_params, [g] * n)
  trees.assert_close(on[0][0], _tmap(lambda x: -1e-2 * x / np.abs(x), g), 1e-14, "adamx t=1 ")
  for t in range(1, n + 1):
    factor = (1 - h["b1"] ** t) / math.sqrt(1 - h["b2"] ** t)
    v_t = _tmap(lambda x: t * (1 - h["b2"]) * np.abs(x) ** 2, g)
    trees.assert_close(on[t - 1][2].nu, v_t, 1e-13, f"adamx t={t} nu ")
    trees.assert_close(ron[t - 1][1]["nu"], v_t, 1e-13, f"reference t={t} nu ")
    trees.assert_close(off[t - 1][0], _tmap(lambda u: factor * u, on[t - 1][0]), 1e-13, f"adamx t={t} ")
    trees.assert_close(roff[t - 1][0], _tmap(lambda u: factor * u, ron[t - 1][0]), 1e-13, f"reference t={t} ")
    trees.assert_close(on[t - 1][0], ron[t - 1][0], 1e-13, f"adamx vs reference t={t} ")
  assert trees.max_rel_err(off[-1][0], on[-1][0]) > 0.1


def test_radam_with_infinite_threshold_is_momentum_sgd(x64, rng):
  """threshold = inf never adapts: the step is lr m_t / (1 - b1^t) (bias-corrected heavy-ball momentum), every
  step, for adamx and the reference, independently of b2 and eps."""
  params = trees.mixed_params(rng, bf16=False, real_dtype=np.float64)
  grads_seq = _gradients(rng, params, 100)
  ours = _adamx_trajectory(adamx.radam(1e-2, 0.85, 0.97, threshold=math.inf), params, grads_seq)
  reference = _trajectory(ref.RAdam(1e-2, 0.85, 0.97, threshold=math.inf), trees.to_numpy(params), grads_seq)
  m = _tmap(lambda p: np.zeros_like(np.asarray(p)), trees.to_numpy(params))
  for t, (g, (updates, _, _), (delta, _)) in enumerate(zip(grads_seq, ours, reference), start=1):
    m = _tmap(lambda m_, g_: 0.85 * m_ + 0.15 * g_, m, g)
    expected = _tmap(lambda m_: -1e-2 * m_ / (1 - 0.85**t), m)
    trees.assert_close(updates, expected, 1e-13, f"adamx step {t} ")
    trees.assert_close(delta, expected, 1e-13, f"reference step {t} ")


# A deliberately wrong reference for a recorded adamx trajectory: name -> (mode, case, reference -> wrong reference).
_WRONG = {
    "adamax_b1_perturbed": ("f64", "adamax_denominator_l2", lambda r: dataclasses.replace(r, b1=r.b1 + 1e-6)),
    "adamax_other_eps_mode": ("f64", "adamax_denominator_l2", lambda r: dataclasses.replace(r, eps_mode="max")),
    "adamax_no_l2": ("f64", "adamax_denominator_l2", lambda r: dataclasses.replace(r, weight_decay=0.0)),
    "adamaxw_coupled": ("f64", "adamaxw_mask_schedule",
                        lambda r: dataclasses.replace(r, decoupled_weight_decay=False, mask=None)),
    "adamaxw_no_mask": ("f64", "adamaxw_mask_schedule", lambda r: dataclasses.replace(r, mask=None)),
    "nadam_paper_ema": ("f64", "nadam_psi_l2", lambda r: dataclasses.replace(r, paper_ema=True)),
    "nadam_no_schedule": ("f64", "nadam_psi_l2", lambda r: dataclasses.replace(r, momentum_decay=None)),
    "nadam_psi_perturbed": ("f64", "nadamw_psi_mask_schedule",
                            lambda r: dataclasses.replace(r, momentum_decay=r.momentum_decay * 1.0001)),
    "radam_paper_threshold": ("f64", "radam_l2", lambda r: dataclasses.replace(r, threshold=4.0, strict=True)),
    "radam_torch_eps": ("f64", "radam_l2", lambda r: dataclasses.replace(r, eps_mode="raw")),
    "radam_no_nesterov": ("f64", "radam_threshold_nesterov", lambda r: dataclasses.replace(r, nesterov=False)),
    "radam_coupled": ("f64", "radam_decoupled_schedule",
                      lambda r: dataclasses.replace(r, decoupled_weight_decay=False)),
    "adabelief_no_nesterov": ("f64", "adabelief_nesterov", lambda r: dataclasses.replace(r, nesterov=False)),
    "adabelief_b2_perturbed": ("f64", "adabelief", lambda r: dataclasses.replace(r, b2=r.b2 + 1e-7)),
    "yogi_paper": ("f64", "yogi", lambda r: dataclasses.replace(r, bias_correction=False)),
    "yogi_zero_init": ("f64", "yogi", lambda r: dataclasses.replace(r, initial_accumulator_value=0.0)),
    "lion_b1_b2_swapped": ("f64", "lion_mask_schedule", lambda r: dataclasses.replace(r, b1=r.b2, b2=r.b1)),
    "lion_no_mask": ("f64", "lion_mask_schedule", lambda r: dataclasses.replace(r, mask=None)),
    "lamb_no_mask": ("f64", "lamb_wd_mask", lambda r: dataclasses.replace(r, mask=None)),
    "lamb_eps_perturbed": ("f64", "lamb_wd_mask", lambda r: dataclasses.replace(r, eps=r.eps * 1.01)),
    "schedule_off_by_one": ("f64", "lion_mask_schedule",
                            lambda r: dataclasses.replace(r, learning_rate=lambda c: r.learning_rate(c + 1))),
    # float32: the derived tolerances are tight enough to see small changes.
    "f32_adamaxw_b1_perturbed": ("f32", "adamaxw_mask_schedule", lambda r: dataclasses.replace(r, b1=r.b1 + 1e-5)),
    "f32_adabelief_b2_perturbed": ("f32", "adabelief", lambda r: dataclasses.replace(r, b2=r.b2 + 1e-6)),
    "f32_lion_b2_perturbed": ("f32", "lion_mask_schedule", lambda r: dataclasses.replace(r, b2=r.b2 + 1e-5)),
}


# The default suite runs one float64 and one float32 case; -m slow runs every other one.
_WRONG_DEFAULT = ("radam_coupled", "f32_lion_b2_perturbed")


@pytest.mark.parametrize("wrong", [pytest.param(w, marks=[] if w in _WRONG_DEFAULT else [pytest.mark.slow])
                                   for w in _WRONG])
def test_comparison_detects_a_wrong_reference(wrong):
  """Every adamx comparison can fail: a deliberately wrong reference (another convention, a missing option, a
  hyperparameter perturbed by 1e-6 or less) is caught on the recorded trajectory of the case."""
  mode, case, change = _WRONG[wrong]
  with jax.enable_x64(mode == "f64"):
    reference, h, params, grads_seq, run = _adamx_run(mode, case)
    tol = _f64_tols() if mode == "f64" else _f32_tols(case, h, N_STEPS)
    unit = 2.0**-53 if mode == "f64" else U32
    skip = (lambda field, is_complex: False) if mode == "f64" else _f32_skip(case)
    with pytest.raises(AssertionError, match="relative error"):
      _compare(change(reference), params, grads_seq, run, tol, f"{mode} {case} ({wrong}): ", unit=unit, skip=skip)
