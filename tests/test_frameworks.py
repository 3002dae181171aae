"""adamx inside Flax (NNX ``nnx.Optimizer``, linen ``TrainState``) and Equinox (``eqx.filter``-ed params).

Each test trains a small MLP on a seeded regression problem for ``STEPS`` steps through the framework's own
optimizer plumbing, and checks (1) the loss fell by at least ``3x`` and (2) the params are those of a plain adamx
loop (``jax.grad`` + ``tx.update`` + ``adamx.apply_updates`` on the same pytree of arrays, jitted) within
``RTOL = 1e-5`` normwise relative per leaf: the two are different jitted programs computing the same float32
operations, which XLA may fuse differently (a few ulps per step; the loss couples the steps, so a few hundred ulps
after ``STEPS`` steps is still agreement; a wrong wiring, say a missed weight decay or a state reset, is off by far
more). Measured: bitwise equal for all three on this machine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adamx
from tests import trees

STEPS = 40
RTOL = 1e-5


def _data():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((32, 3)).astype(np.float32)
  y = (0.5 * x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
  return jnp.asarray(x), jnp.asarray(y)


def _tx():
  return adamx.adamw(adamx.warmup_cosine_schedule(0.0, 3e-2, 5, STEPS), weight_decay=1e-2)


def _plain_run(loss, params, n=STEPS):
  """The reference: adamx on a plain pytree, no framework."""
  tx = _tx()

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return adamx.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(n):
    params, state = step(params, state)
  return params


def test_flax_nnx_optimizer():
  nnx = pytest.importorskip("flax.nnx")
  x, y = _data()

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(3, 16, rngs=rngs)
      self.l2 = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.tanh(self.l1(x)))

  model = MLP(nnx.Rngs(0))
  graphdef, params0 = nnx.split(model, nnx.Param)
  params0 = jax.tree.map(jnp.copy, params0)
  optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  first = float(train_step(model, optimizer))
  for _ in range(STEPS - 1):
    last = float(train_step(model, optimizer))
  assert last < first / 3, (first, last)

  def loss(params):
    return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

  expected = _plain_run(loss, params0)
  trees.assert_close(trees.to_numpy(nnx.state(model, nnx.Param)), trees.to_numpy(expected), RTOL, "nnx ")


@pytest.mark.slow  # NNX runs in the default suite; linen and Equinox (about 3-5 s each, imports included) in -m slow
def test_flax_linen_train_state():
  nn = pytest.importorskip("flax.linen")
  train_state = pytest.importorskip("flax.training.train_state")
  x, y = _data()

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(1)(jax.nn.tanh(nn.Dense(16)(x)))

  model = MLP()
  params0 = model.init(jax.random.key(0), x)["params"]
  state = train_state.TrainState.create(apply_fn=model.apply, params=params0, tx=_tx())

  def loss(params):
    return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

  @jax.jit
  def train_step(state):
    value, grads = jax.value_and_grad(loss)(state.params)
    return state.apply_gradients(grads=grads), value

  state, first = train_step(state)
  for _ in range(STEPS - 1):
    state, last = train_step(state)
  assert float(last) < float(first) / 3
  assert int(state.opt_state[0].count) == STEPS
  trees.assert_close(trees.to_numpy(state.params), trees.to_numpy(_plain_run(loss, params0)), RTOL, "linen ")


@pytest.mark.slow
def test_equinox_filtered_params():
  eqx = pytest.importorskip("equinox")
  x, y = _data()
  model = eqx.nn.MLP(3, 1, 16, 1, activation=jax.nn.tanh, key=jax.random.key(0))
  tx = _tx()
  opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))

  @eqx.filter_jit
  def train_step(model, opt_state):
    value, grads = eqx.filter_value_and_grad(lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2))(model)
    updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, value

  model0 = model
  model, opt_state, first = train_step(model, opt_state)
  for _ in range(STEPS - 1):
    model, opt_state, last = train_step(model, opt_state)
  assert float(last) < float(first) / 3

  params0, static = eqx.partition(model0, eqx.is_inexact_array)

  def loss(params):
    return jnp.mean((jax.vmap(eqx.combine(params, static))(x) - y) ** 2)

  expected = _plain_run(loss, params0)
  trees.assert_close(trees.to_numpy(eqx.filter(model, eqx.is_inexact_array)), trees.to_numpy(expected), RTOL,
                     "equinox ")
