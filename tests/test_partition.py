"""Parameter groups: ``masked``, ``partition`` and the path-labelling helpers.

``masked`` and ``partition`` are compared with ``optax.masked`` / ``optax.partition`` around the same inner
transforms (bit for bit: the wrappers add no arithmetic), and ``partition`` with two ``adamw`` against
``torch.optim.AdamW`` with two param groups over 120 steps.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import adamx
from tests.test_validation import _message
from tests.trees import assert_close, mixed_params, random_like


def _model_params(rng: np.random.Generator, dtype=jnp.float32):
  """A small transformer-shaped tree: what the no-decay rule is for."""
  shapes = {"embed": {"embedding": (10, 4)},
            "block": {"attn": {"kernel": (4, 4), "bias": (4,)}, "LayerNorm_0": {"scale": (4,), "bias": (4,)},
                      "mlp": [{"kernel": (4, 8)}, {"kernel": (8, 4)}]},
            "ln_f": {"scale": (4,)},
            "head": {"kernel": (4, 3), "bias": (3,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), dtype), shapes, is_leaf=lambda x: isinstance(x, tuple))


DECAYING = {"['block']['attn']['kernel']", "['block']['mlp'][0]['kernel']", "['block']['mlp'][1]['kernel']",
            "['head']['kernel']"}


def _paths_where(tree, pred):
  return {jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if pred(x)}


def _bitwise(a, b):
  chex.assert_trees_all_equal_dtypes(a, b)
  chex.assert_trees_all_equal(a, b)


def _run(tx, params, grads, jit=False):
  """Steps of ``tx``; op by op by default (the parity tests share the eager compilation cache: cheaper than one
  compilation per transform)."""
  step = jax.jit(tx.update) if jit else tx.update
  s, p, out = tx.init(params), params, []
  for g in grads:
    u, s = step(g, s, p)
    p = adamx.apply_updates(p, u)
    out.append((u, s))
  return p, out


# ----------------------------------------------------------------------------------------------------------------
# path_labels, decay_mask, decay_labels
# ----------------------------------------------------------------------------------------------------------------


def test_decay_mask_rule():
  params = _model_params(np.random.default_rng(0))
  mask = adamx.decay_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert all(isinstance(m, bool) for m in jax.tree.leaves(mask))
  assert _paths_where(mask, lambda m: m) == DECAYING
  labels = adamx.decay_labels(params)
  assert _paths_where(labels, lambda x: x == "decay") == DECAYING
  assert set(jax.tree.leaves(labels)) == {"decay", "no_decay"}


@pytest.mark.parametrize("path,decays", [
    ("['transformer']['h'][0]['ln_1']['weight']", False),  # torch/GPT-2 names, 2-D here to test the name rule
    ("['bert']['embeddings']['word_embeddings']", False),
    ("['Dense_0']['kernel']", True),
    ("['BatchNorm_0']['scale']", False),
    ("['conv']['bn1']['w']", False),
    ("['encoder']['layerNorm']['w']", False),
    ("['proj']['weight']", True),
    ("['lnx']['w']", False),  # word prefixes: "lnx" starts with "ln"
    ("['kernel_bias_free']['w']", False),
])
def test_decay_mask_path_words(path, decays):
  matrix = jnp.ones((2, 2))
  rule = adamx.path_labels(lambda p, x: p)
  keys = [k.strip("'") for k in path.strip("[]").split("][")]
  tree = matrix
  for k in reversed(keys):
    tree = [tree] if k.isdigit() else {k: tree}
  assert jax.tree.leaves(rule(tree)) == [path]
  assert jax.tree.leaves(adamx.decay_mask(tree)) == [decays]


def test_decay_mask_custom_patterns_and_ndim_rule():
  tree = {"wte": jnp.ones((5, 3)), "w": jnp.ones((3, 3)), "v": jnp.ones(3), "s": jnp.ones(())}
  assert adamx.decay_mask(tree) == {"wte": True, "w": True, "v": False, "s": False}
  assert adamx.decay_mask(tree, patterns=("wte",)) == {"wte": False, "w": True, "v": False, "s": False}
  assert adamx.decay_labels(tree, patterns=("WTE",))["wte"] == "no_decay"


def test_path_labels_sees_paths_and_leaves():
  params = {"a": [jnp.ones(2), jnp.ones((2, 3))], "b": jnp.ones(())}
  labels = adamx.path_labels(lambda path, x: f"{path}:{x.ndim}")(params)
  assert labels == {"a": ["['a'][0]:1", "['a'][1]:2"], "b": "['b']:0"}


# ----------------------------------------------------------------------------------------------------------------
# masked
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["tree", "prefix", "callable"])
def test_masked_matches_optax_masked(form):
  params = mixed_params(np.random.default_rng(1))
  masks = {"tree": jax.tree.map(lambda x: x.ndim >= 1 and x.dtype != jnp.bfloat16, params),
           "prefix": {"blocks": True, "dense": False, "half": True, "phase": True},
           "callable": lambda p: jax.tree.map(lambda x: x.ndim > 1, p)}
  mask = masks[form]
  inner = adamx.adamw(learning_rate=1e-2, weight_decay=0.1)
  grads = [random_like(np.random.default_rng(2 + i), params) for i in range(3)]
  p1, out1 = _run(adamx.masked(inner, mask), params, grads)
  p2, out2 = _run(optax.masked(inner, mask), params, grads)
  _bitwise(p1, p2)
  for (u1, s1), (u2, s2) in zip(out1, out2):
    _bitwise(u1, u2)
    _bitwise(jax.tree.leaves(s1), jax.tree.leaves(s2))
  # masked-out leaves pass through unchanged (the last step's updates are the gradients there)
  masked_out = [not m for m in _leaf_bools(mask, params)]
  for out, g, u in zip(masked_out, jax.tree.leaves(grads[-1]), jax.tree.leaves(out1[-1][0])):
    if out:
      _bitwise(u, g)
    else:
      assert not np.array_equal(np.asarray(u), np.asarray(g))


def _leaf_bools(mask, params):
  mask_tree = mask(params) if callable(mask) else mask
  return [m for m, sub in zip(jax.tree.leaves(mask_tree), jax.tree.structure(mask_tree).flatten_up_to(params))
          for _ in jax.tree.leaves(sub)]


def test_masked_keeps_no_state_for_masked_out_leaves():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  tx = adamx.masked(adamx.adam(learning_rate=1e-2), {"w": True, "b": False})
  state = tx.init(params)
  adam_state = state.inner_state[1]
  assert isinstance(adam_state.mu["b"], adamx.MaskedNode) and adam_state.mu["w"].shape == (3, 2)
  _, new = jax.jit(tx.update)(params, state, params)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  # update works without params when the inner transform does not need them (as optax.masked)
  clip = adamx.masked(adamx.clip(0.5), {"w": True, "b": False})
  u, _ = clip.update(params, clip.init(params))
  assert float(u["w"][0, 0]) == 0.5 and float(u["b"][0]) == 1.0


def test_masked_forwards_extra_args():
  seen = {}

  def update(updates, state, params=None, **extra_args):
    seen.update(extra_args)
    return updates, state

  inner = adamx.GradientTransformation(lambda p: (), update)
  adamx.masked(inner, {"a": True}).update({"a": jnp.ones(2)}, adamx.MaskedState(()), value=jnp.float32(3.0))
  assert float(seen["value"]) == 3.0
  # and a plain optax GradientTransformation (no **extra_args) still works
  adamx.masked(optax.scale(2.0), {"a": True}).update({"a": jnp.ones(2)}, adamx.MaskedState(optax.EmptyState()),
                                                    value=1.0)


# ----------------------------------------------------------------------------------------------------------------
# partition
# ----------------------------------------------------------------------------------------------------------------


def _groups():
  return {"decay": adamx.adamw(learning_rate=1e-2, weight_decay=0.1),
          "no_decay": adamx.adam(learning_rate=3e-3),
          "frozen": optax.set_to_zero()}


@pytest.mark.parametrize("form", ["callable", "tree", "prefix"])
def test_partition_matches_optax_partition(form):
  params = _model_params(np.random.default_rng(3))
  labels = {"callable": adamx.decay_labels, "tree": adamx.decay_labels(params),
            "prefix": {"embed": "frozen", "block": "decay", "ln_f": "no_decay", "head": "no_decay"}}[form]
  grads = [random_like(np.random.default_rng(4 + i), params) for i in range(3)]
  p1, out1 = _run(adamx.partition(_groups(), labels), params, grads)
  p2, out2 = _run(optax.partition(_groups(), labels), params, grads)
  _bitwise(p1, p2)
  for (u1, s1), (u2, s2) in zip(out1, out2):
    _bitwise(u1, u2)
    assert sorted(s1.inner_states) == sorted(s2.inner_states)
    for k in s1.inner_states:
      _bitwise(jax.tree.leaves(s1.inner_states[k]), jax.tree.leaves(s2.inner_states[k]))


def test_partition_with_two_adamw_matches_torch_param_groups():
  """torch.optim.AdamW with a decay group and a no-decay group == adamx.partition of two adamw (120 steps)."""
  params = _model_params(np.random.default_rng(5))
  lr, wd, betas, eps = 3e-3, 0.1, (0.9, 0.99), 1e-8
  tx = adamx.partition({"decay": adamx.adamw(lr, *betas, eps, weight_decay=wd),
                        "no_decay": adamx.adamw(lr, *betas, eps, weight_decay=0.0)}, adamx.decay_labels)
  leaves, treedef = jax.tree.flatten(params)
  decays = jax.tree.leaves(adamx.decay_mask(params))
  tparams = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
  opt = torch.optim.AdamW([{"params": [t for t, d in zip(tparams, decays) if d], "weight_decay": wd},
                           {"params": [t for t, d in zip(tparams, decays) if not d], "weight_decay": 0.0}],
                          lr=lr, betas=betas, eps=eps)
  @jax.jit
  def step(g, s, p):
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  p, s = params, jax.jit(tx.init)(params)
  rng = np.random.default_rng(6)
  for t in range(1, 121):
    g = random_like(rng, params)
    for tp, gl in zip(tparams, jax.tree.leaves(g)):
      tp.grad = torch.tensor(np.array(gl))
    opt.step()
    p, s = step(g, s, p)
    if t % 10 == 0:
      # tests/test_parity.py: torch's float32 decay factor (1 - lr * wd) drifts by up to 2^-25 per step
      assert_close(p, treedef.unflatten([tp.detach().numpy() for tp in tparams]), 1e-5 + t * 2.0**-25,
                   f"step {t} ", scale=1.0)
  # one adamw with adamx.decay_mask as its mask is the same optimizer
  grads = [random_like(np.random.default_rng(7), params)] * 2
  p_mask, _ = _run(adamx.adamw(lr, *betas, eps, weight_decay=wd, mask=adamx.decay_mask), params, grads)
  _bitwise(p_mask, _run(tx, params, grads)[0])


def test_partition_inside_adamx_and_optax_chain_no_recompilation():
  params = _model_params(np.random.default_rng(8))
  part = adamx.partition(_groups(), adamx.decay_labels)
  txs = [optax.chain(optax.clip_by_global_norm(1.0), part), adamx.chain(adamx.clip_by_global_norm(1.0), part)]
  traces = []
  steps = [jax.jit(lambda g, s, p, tx=tx: (traces.append(1), tx.update(g, s, p))[1]) for tx in txs]
  states = [tx.init(params) for tx in txs]
  rng = np.random.default_rng(9)
  for _ in range(3):
    g = random_like(rng, params, scale=2.0)
    outs = [step(g, s, params) for step, s in zip(steps, states)]
    for (_, new), old in zip(outs, states):
      assert jax.tree.structure(new) == jax.tree.structure(old)
      chex.assert_trees_all_equal_shapes_and_dtypes(new, old)
    assert_close(outs[0][0], outs[1][0], 1e-6)
    states = [s for _, s in outs]
  assert len(traces) == 2
  # no parameter carries the label "frozen": its transform's state holds no leaves
  assert jax.tree.leaves(states[0][1].inner_states["frozen"]) == []


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def test_partition_errors():
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  with pytest.raises(TypeError, match=_message("partition", "transforms")):
    adamx.partition([adamx.adam()], {"w": "a", "b": "a"})
  with pytest.raises(TypeError, match=_message("partition", "transforms", value={})):
    adamx.partition({}, {"w": "a", "b": "a"})
  with pytest.raises(TypeError, match=_message("partition", "transforms", fragments=("'a'",))):
    adamx.partition({"a": 1.0}, {"w": "a", "b": "a"})
  with pytest.raises(ValueError, match=_message("partition", "param_labels", fragments=("'c'",))):
    adamx.partition({"a": adamx.adam()}, {"w": "a", "b": "c"})  # a fixed tree: at construction
  tx = adamx.partition({"a": adamx.adam()}, lambda p: jax.tree.map(lambda _: "z", p))
  with pytest.raises(ValueError, match=_message("partition", "param_labels", fragments=("'z'",))):
    tx.init(params)  # a callable: at init
  tx = adamx.partition({"a": adamx.adam()}, {"w": "a"})
  with pytest.raises(ValueError, match=_message("partition", "param_labels", fragments=("prefix",))):
    tx.init(params)


def test_masked_errors():
  with pytest.raises(TypeError, match=_message("masked", "inner")):
    adamx.masked("adam", {"w": True})
  with pytest.raises(TypeError, match=_message("masked", "mask", value=None)):
    adamx.masked(adamx.adam(), None)
  with pytest.raises(TypeError, match=_message("masked", "mask")):
    adamx.masked(adamx.adam(), {"w": "yes"})
  with pytest.raises(TypeError, match=_message("masked", "mask", fragments=("elementwise",))):
    adamx.masked(adamx.adam(), {"w": jnp.array([True, False])})
  tx = adamx.masked(adamx.adam(), lambda p: {"w": jnp.array(True)})
  with pytest.raises(TypeError, match=_message("masked", "mask", fragments=("['w']",))):
    tx.init({"w": jnp.ones(2)})
  with pytest.raises(ValueError, match=_message("masked", "mask", fragments=("prefix",))):
    adamx.masked(adamx.adam(), {"v": True}).init({"w": jnp.ones(2)})


def test_helper_errors():
  with pytest.raises(TypeError, match=_message("path_labels", "fn", value="bias")):
    adamx.path_labels("bias")
  with pytest.raises(TypeError, match=_message("decay_mask", "patterns", value="bias")):
    adamx.decay_mask({"w": jnp.ones((2, 2))}, patterns="bias")
  with pytest.raises(TypeError, match=_message("decay_labels", "patterns")):
    adamx.decay_labels({"w": jnp.ones((2, 2))}, patterns=("bias", ""))
