"""The PyTorch bridge: a run handed from ``torch.optim`` to adamx (and back) continues on torch's trajectory.

Each hand-over test runs ``HEAD`` steps on one side, converts the state, then runs ``TAIL`` (>= 100) more steps on
both sides from the converted state and compares params and every state leaf (``exp_avg``/``mu``,
``exp_avg_sq``/``nu``, ``max_exp_avg_sq``/``nu_max``, the step) after every step. Gradients are seeded normal draws,
independent of the params (as in ``tests/test_parity.py``), so differences cannot compound through a loss.

Tolerances are those of ``tests/test_parity.py`` against torch, normwise relative per leaf with an O(1) floor
(``max|a - b| / max(max|b|, 1)``): state ``TORCH_RTOL = 1e-5`` (both sides compute the same float32 EMAs in a
different operation order: a few ulps that an EMA forgets geometrically), params ``1e-5 + t * 2^-25`` at step ``t``
after the hand-over (``torch.optim.AdamW``'s decay factor ``1 - lr * wd`` is rounded to float32 in the same direction
every step). The conversions themselves are exact: torch -> adamx -> torch gives back torch's ``state_dict`` bit for
bit, and adamx -> torch -> adamx adamx's state bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adamx
from adamx import interop
from tests import trees

HEAD = 20
TAIL = 120
TORCH_RTOL = 1e-5
SHAPES = {"w1": (5, 4), "b1": (4,), "w2": (4, 3), "scale": ()}

# (adamx optimizer, its hyperparameters, the torch optimizer, its hyperparameters): the same algorithm.
CASES = {
    "adam": ("adam", {"learning_rate": 3e-3, "b1": 0.85, "b2": 0.99, "eps": 1e-7, "weight_decay": 1e-3},
             torch.optim.Adam, {"lr": 3e-3, "betas": (0.85, 0.99), "eps": 1e-7, "weight_decay": 1e-3}),
    "adamw": ("adamw", {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.995, "eps": 1e-8, "weight_decay": 5e-2},
              torch.optim.AdamW, {"lr": 1e-2, "betas": (0.9, 0.995), "eps": 1e-8, "weight_decay": 5e-2}),
    "amsgrad": ("amsgrad", {"learning_rate": 5e-3, "b1": 0.8, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
                            "max_over": "raw"},
                torch.optim.Adam, {"lr": 5e-3, "betas": (0.8, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                   "amsgrad": True}),
}


def _params(seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _grads(seed: int, n: int) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(seed)
  return [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(n)]


def _torch_params(params):
  return [torch.nn.Parameter(torch.tensor(np.array(v))) for v in jax.tree.leaves(params)]


def _torch_step(opt, tparams, grads):
  for p, g in zip(tparams, jax.tree.leaves(grads)):
    p.grad = torch.tensor(np.array(g))
  opt.step()


@functools.lru_cache(maxsize=None)
def _jit_step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return adamx.apply_updates(params, updates), state
  return jax.jit(step)


def _compare(t, params, state, tparams, opt, what):
  """adamx params and Adam state against torch's, step ``t`` after the hand-over."""
  assert_close = functools.partial(trees.assert_close, scale=1.0)
  treedef = jax.tree.structure(params)
  tp = jax.tree.unflatten(treedef, [p.detach().numpy() for p in tparams])
  assert_close(trees.to_numpy(params), tp, TORCH_RTOL + t * 2.0 ** -25, f"{what} step {t} params ")
  sd = opt.state_dict()["state"]
  adam_state = interop._torch._find_adam_state("test", state)
  assert int(adam_state.count) == int(sd[0]["step"]), (what, t)
  for field, name in adamx.registry.get("amsgrad").torch_state.items():
    if field not in adam_state._fields:
      assert name not in sd[0]
      continue
    ours = trees.to_numpy(getattr(adam_state, field))
    theirs = jax.tree.unflatten(treedef, [sd[i][name].numpy() for i in range(len(tparams))])
    assert_close(ours, theirs, TORCH_RTOL, f"{what} step {t} {field} ")


# AdamW in the default suite, the other two under -m slow (the bridge code is the same; about 1.3 s each).
TRAJECTORY_CASES = [pytest.param(c, marks=[] if c == "adamw" else [pytest.mark.slow]) for c in sorted(CASES)]


@pytest.mark.parametrize("case", TRAJECTORY_CASES)
def test_torch_run_continues_in_adamx(case):
  name, hyper, torch_cls, torch_kw = CASES[case]
  params = _params()
  grads = _grads(1, HEAD + TAIL)
  tparams = _torch_params(params)
  opt = torch_cls(tparams, **torch_kw)
  for g in grads[:HEAD]:
    _torch_step(opt, tparams, g)
  handed = jax.tree.unflatten(jax.tree.structure(params), [jnp.asarray(p.detach().numpy()) for p in tparams])
  tx, state = interop.from_torch_state_dict(opt.state_dict(), handed)
  expected_tx_state = getattr(adamx, name)(**hyper).init(handed)
  interop.validate_state(state, expected_tx_state)  # the optimizer built from the param group is adamx.<name>
  step = _jit_step(tx)
  p = handed
  _compare(0, p, state, tparams, opt, case)
  for t, g in enumerate(grads[HEAD:], start=1):
    p, state = step(p, state, jax.tree.map(jnp.asarray, g))
    _torch_step(opt, tparams, g)
    _compare(t, p, state, tparams, opt, case)


@pytest.mark.parametrize("case", TRAJECTORY_CASES)
def test_adamx_run_continues_in_torch(case):
  name, hyper, torch_cls, torch_kw = CASES[case]
  tx = getattr(adamx, name)(**hyper)
  p = jax.tree.map(jnp.asarray, _params(2))
  state = tx.init(p)
  grads = _grads(3, HEAD + TAIL)
  step = _jit_step(tx)
  for g in grads[:HEAD]:
    p, state = step(p, state, jax.tree.map(jnp.asarray, g))
  sd = interop.to_torch_state_dict(state, p, optimizer=name, **hyper)
  tparams = _torch_params(p)
  opt = torch_cls(tparams, lr=0.123)  # the state_dict's param group replaces these hyperparameters
  opt.load_state_dict(sd)
  assert opt.param_groups[0]["lr"] == torch_kw["lr"] and opt.param_groups[0]["betas"] == torch_kw["betas"]
  _compare(0, p, state, tparams, opt, case)
  for t, g in enumerate(grads[HEAD:], start=1):
    p, state = step(p, state, jax.tree.map(jnp.asarray, g))
    _torch_step(opt, tparams, g)
    _compare(t, p, state, tparams, opt, case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_conversions_are_exact_both_ways(case):
  name, hyper, torch_cls, torch_kw = CASES[case]
  params = _params(4)
  tparams = _torch_params(params)
  opt = torch_cls(tparams, **torch_kw)
  for g in _grads(5, 7):
    _torch_step(opt, tparams, g)
  sd = opt.state_dict()
  jparams = jax.tree.map(jnp.asarray, params)
  _, state = interop.from_torch_state_dict(sd, jparams)
  back = interop.to_torch_state_dict(state, jparams, optimizer=name, **hyper)
  assert back["param_groups"] == sd["param_groups"]
  assert back["state"].keys() == sd["state"].keys()
  for i, entry in sd["state"].items():
    assert entry.keys() == back["state"][i].keys()
    for k, v in entry.items():
      assert v.dtype == back["state"][i][k].dtype and torch.equal(v, back["state"][i][k]), (i, k)
  _, again = interop.from_torch_state_dict(back, jparams)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def test_fresh_state_and_bfloat16_moments_and_custom_tx():
  params = jax.tree.map(jnp.asarray, _params(6))
  tx = adamx.adamw(1e-3, weight_decay=1e-2)
  sd = interop.to_torch_state_dict(tx.init(params), params, learning_rate=1e-3, weight_decay=1e-2)
  assert sd["state"] == {}  # a torch optimizer that has not stepped has no per-param state
  _, state = interop.from_torch_state_dict(sd, params)
  assert int(state[0].count) == 0
  # torch -> an adamx transform of the user's: bf16 moments under inject_hyperparams, after clipping.
  tparams = _torch_params(params)
  opt = torch.optim.AdamW(tparams, lr=1e-3, weight_decay=1e-2)
  _torch_step(opt, tparams, _grads(7, 1)[0])
  mine = adamx.chain(adamx.clip_by_global_norm(1e3), adamx.inject_hyperparams(adamx.adamw)(
      1e-3, weight_decay=1e-2, mu_dtype=jnp.bfloat16))
  tx2, state2 = interop.from_torch_state_dict(opt.state_dict(), params, tx=mine)
  assert tx2 is mine
  inner = state2[1].inner_state[0]
  assert inner.mu["w1"].dtype == jnp.bfloat16 and inner.nu["w1"].dtype == jnp.float32 and int(inner.count) == 1
  np.testing.assert_array_equal(np.asarray(inner.nu["w1"]), opt.state_dict()["state"][2]["exp_avg_sq"].numpy())
  # bf16 moments out: exact in torch.bfloat16.
  out = interop.to_torch_state_dict(state2, params, learning_rate=1e-3, weight_decay=1e-2)
  assert out["state"][0]["exp_avg"].dtype == torch.bfloat16


def test_param_order():
  """``order`` maps torch's parameter list onto the pytree: torch holds [w2, w1, b1, scale] here."""
  params = jax.tree.map(jnp.asarray, _params(8))
  order = ["['w2']", "['w1']", "['b1']", "['scale']"]
  tparams = [torch.nn.Parameter(torch.tensor(np.array(params[k[2:-2]]))) for k in order]
  opt = torch.optim.Adam(tparams, lr=1e-3)
  rng = np.random.default_rng(9)
  for p in tparams:
    p.grad = torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32))
  opt.step()
  _, state = interop.from_torch_state_dict(opt.state_dict(), params, order=order)
  for i, k in enumerate(order):
    np.testing.assert_array_equal(np.asarray(state[1].mu[k[2:-2]]), opt.state_dict()["state"][i]["exp_avg"].numpy())
  sd = interop.to_torch_state_dict(state, params, optimizer="adam", order=order)
  assert torch.equal(sd["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
  with pytest.raises(ValueError, match="order must list every leaf path of params exactly once"):
    interop.from_torch_state_dict(opt.state_dict(), params, order=order[:3])
  with pytest.raises(ValueError, match=r"torch param 0's exp_avg has shape \(4, 3\) but the matching leaf \['b1'\]"):
    interop.from_torch_state_dict(opt.state_dict(), params)  # tree order is b1, scale, w1, w2


def _stepped(torch_cls=torch.optim.Adam, params=None, **kw):
  params = _params(10) if params is None else params
  tparams = _torch_params(params)
  opt = torch_cls(tparams, **kw)
  _torch_step(opt, tparams, jax.tree.map(np.ones_like, params))
  return opt


def test_errors_are_clear():
  params = jax.tree.map(jnp.asarray, _params(10))
  sd = _stepped(lr=1e-3).state_dict()
  fewer = {k: v for k, v in params.items() if k != "scale"}
  with pytest.raises(ValueError, match="the torch param group has 4 parameters but params has 3 leaves"):
    interop.from_torch_state_dict(sd, fewer)
  with pytest.raises(ValueError, match="amsgrad=False but tx's state is a ScaleByAmsgradState"):
    interop.from_torch_state_dict(sd, params, tx=adamx.amsgrad(max_over="raw"))
  two = _stepped().state_dict()
  two["param_groups"] = [dict(two["param_groups"][0], params=[0, 1]), dict(two["param_groups"][0], params=[2, 3])]
  with pytest.raises(ValueError, match="has 2 param groups; only one is supported"):
    interop.from_torch_state_dict(two, params)
  uneven = _stepped().state_dict()
  uneven["state"][2]["step"] = torch.tensor(5.0)
  with pytest.raises(ValueError, match=r"at different steps \[1.0, 5.0\]"):
    interop.from_torch_state_dict(uneven, params)
  with pytest.raises(ValueError, match="maximize=True is not supported"):
    interop.from_torch_state_dict(_stepped(lr=1e-3, maximize=True).state_dict(), params)
  with pytest.raises(ValueError, match="must be a torch optimizer's state_dict"):
    interop.from_torch_state_dict({"weights": 1}, params)
  state = adamx.adam().init(params)
  with pytest.raises(ValueError, match="optimizer must be one of 'adam', 'adamw', 'amsgrad', got 'lion'"):
    interop.to_torch_state_dict(state, params, optimizer="lion")
  with pytest.raises(ValueError, match="has no torch.optim counterpart"):
    interop.to_torch_state_dict(adamx.amsgrad().init(params), params, optimizer="amsgrad")  # max_over="corrected"
  with pytest.raises(ValueError, match="optimizer='amsgrad' needs a ScaleByAmsgradState, but the state holds a "
                     "ScaleByAdamState"):
    interop.to_torch_state_dict(state, params, optimizer="amsgrad", max_over="raw")
  with pytest.raises(ValueError, match="exactly one ScaleByAdamState or ScaleByAmsgradState"):
    interop.to_torch_state_dict(adamx.lion().init(params), params, optimizer="adam")
  with pytest.raises(ValueError, match=r"the tree structure of state.mu does not match that of params"):
    interop.to_torch_state_dict(state, fewer, optimizer="adam")
  with pytest.raises(ValueError, match=r"leaf \['w1'\] of state.mu has shape \(5, 4\) but the parameter has shape"):
    interop.to_torch_state_dict(state, {**params, "w1": params["w1"].T}, optimizer="adam")
  cplx = {"z": jnp.ones(3, jnp.complex64)}
  with pytest.raises(ValueError, match=r"parameter \['z'\] is complex"):
    interop.to_torch_state_dict(adamx.adam().init(cplx), cplx, optimizer="adam")
  with pytest.raises(TypeError, match="adamw has no argument"):
    interop.to_torch_state_dict(state, params, optimizer="adamw", lr=1e-3)
