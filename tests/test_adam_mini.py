"""Adam-mini against the float64 transcription of the paper (``tests/reference/adam_mini.py``).

Neither optax nor ``torch.optim`` has Adam-mini; with one block per entry (``partition="element"``) it is AdamW, and
the registry compares that variant with ``optax.adamw`` (``python -m adamx check``, ``tests/test_parity.py``). Here:

(a) adamx against the reference, every step: params, updates, ``mu`` and ``nu`` (adamx's one value per block is
    broadcast to the block's entries, as the reference keeps it), seeded hyperparameters and gradients:
    * the default partition on ``tests.trees.mixed_params`` (scalar, vectors, a matrix, a 3-D leaf, a complex leaf);
    * the paper's transformer partition (:func:`adamx.adam_mini_partition`) on a small transformer-like tree with
      grouped-query attention, in the Flax layout (``(in, out)`` kernels, ``out_axis=-1``) and in the PyTorch layout
      (``(out, in)``, ``out_axis=0``), with a decay mask; the reference's blocks come from its own transcription of
      Algorithm 2 (slicing by tokens, heads and neurons), not from adamx's block grids, and the two partitions are
      also checked to be the same sets of entries;
    * a user rule (a callable) for a Flax ``DenseGeneral`` ``(d, heads, head_dim)`` kernel.
    40 steps in the default suite (float32 and float64), 512 marked slow.
(b) ``partition="element"`` is ``adamx.adamw`` bit for bit; the second-moment state is measured against Adam's on a
    transformer-sized tree; hand-computed block means; validation; checks that a wrong reference is caught.

Errors are the trajectory-normwise measure of ``tests/test_reference.py``. Tolerances: float64 ``1e-10`` (as
``tests/test_reference_classic.py``; measured <= 1e-14). float32: ``tests.test_reference._f32_tols(b1, b2, n)``, the
EMA bounds derived there, with ``nu``'s widened by the block mean: a float32 mean of at most ``B = 32`` entries of
``|g|^2`` is off by at most ``B u`` relative (each addition rounds once), so ``tol_nu + 32 u``, and the update's by
half of that (the square root) on top of Adam's ``tol_mu + tol_nu``.
"""

from __future__ import annotations

import dataclasses
import doctest
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adamx
from adamx.optimizers import _adam_mini
from tests import trees
from tests.reference import adam as ref_adam
from tests.reference import adam_mini as ref
from tests.test_reference import U32, _Compare, _f32_tols, _gradients, _Layout, _seed

N_SHORT = 40
N_LONG = 512
_apply = jax.jit(adamx.apply_updates)
F64_RTOL = 1e-10
N_HEADS, N_KV_HEADS = 4, 2


def transformer(rng: np.random.Generator, layout: str = "flax", dtype=np.float32) -> dict:
  """A one-layer decoder: vocabulary 11, width 8, 4 query heads and 2 key/value heads of size 2, MLP width 16.
  ``layout="flax"``: kernels ``(in, out)``; ``"torch"``: weights ``(out, in)`` (the names follow PyTorch's Llama)."""
  shapes = {
      "embed_tokens": {"embedding": (11, 8)},
      "layers_0": {
          "self_attn": {"q_proj": {"kernel": (8, 8), "bias": (8,)}, "k_proj": {"kernel": (8, 4)},
                        "v_proj": {"kernel": (8, 4)}, "o_proj": {"kernel": (8, 8)}},
          "mlp": {"up_proj": {"kernel": (8, 16)}, "down_proj": {"kernel": (16, 8)}},
          "input_layernorm": {"scale": (8,)},
      },
      "lm_head": {"kernel": (8, 11)},
      "norm": {"scale": (8,)},
  }

  def make(path, shape):
    is_kernel = "kernel" in jax.tree_util.keystr(path)
    shape = shape[::-1] if layout == "torch" and is_kernel else shape
    return jnp.asarray(rng.normal(size=shape), dtype)

  return jax.tree_util.tree_map_with_path(make, shapes, is_leaf=lambda x: isinstance(x, tuple))


def _default_blocks(params):
  """The documented default, transcribed: one block per row (index along axis 0) of a leaf with >= 2 axes, one
  block per vector or scalar."""
  return jax.tree.map(lambda x: ref.by_rows(x) if np.ndim(x) >= 2 else ref.whole(x), params)


def _dense_general_rule(path, leaf):
  return (1, leaf.shape[1], 1) if leaf.ndim == 3 else tuple(leaf.shape)


def _dense_general_blocks(params):
  return jax.tree.map(lambda x: ref.by_index(x, 1) if np.ndim(x) == 3 else ref.elementwise(x), params)


def _dense_general_params(rng, dtype):
  return {"attn": {"query": {"kernel": jnp.asarray(rng.normal(size=(6, 3, 2)), dtype)}},
          "bias": jnp.asarray(rng.normal(size=(4,)), dtype)}


@functools.cache
def _case(name: str, dtype):
  """``(params, adamx optimizer, reference, hyperparameters)``, built once per session (tests that reuse a case reuse
  its compiled update)."""
  rng = np.random.default_rng(_seed("adam_mini", name))
  h = {"learning_rate": float(10 ** rng.uniform(-3, -1.5)), "b1": float(rng.uniform(0.6, 0.95)),
       "b2": float(rng.uniform(0.95, 0.999)), "eps": float(10 ** rng.uniform(-10, -6)),
       "eps_root": float(10 ** rng.uniform(-14, -10)), "weight_decay": float(10 ** rng.uniform(-3, -1))}
  lr = h.pop("learning_rate")
  if name == "default":
    params = trees.mixed_params(rng, bf16=False, real_dtype=dtype)
    partition, blocks, mask = None, _default_blocks, None
  elif name in ("transformer_flax", "transformer_torch"):
    layout = name.split("_")[1]
    params = transformer(rng, layout, dtype)
    out_axis = -1 if layout == "flax" else 0
    partition = adamx.adam_mini_partition(N_HEADS, n_kv_heads=N_KV_HEADS, out_axis=out_axis)
    blocks = lambda p: ref.transformer_blocks(p, N_HEADS, N_KV_HEADS, out_axis)  # noqa: E731
    mask = adamx.decay_mask
  else:
    assert name == "dense_general", name
    params = _dense_general_params(rng, dtype)
    partition, blocks, mask = _dense_general_rule, _dense_general_blocks, None
  tx = adamx.adam_mini(lr, **h, partition=partition, mask=mask)
  return params, tx, ref.AdamMini(lr, **h, mask=mask, blocks=blocks), h


CASES = ["default", "transformer_flax", "transformer_torch", "dense_general"]


def _per_entry(v, shape):
  """adamx's block values ``v`` (grid shape) broadcast to the leaf's entries (each entry gets its block's value)."""
  grid = v.shape
  tiled = _adam_mini._tiled(shape, grid)
  return np.broadcast_to(np.asarray(v, np.float64).reshape(_adam_mini._expanded(grid)), tiled).reshape(shape)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
  """Whether two label arrays cut a leaf into the same blocks (equal labels in one iff equal labels in the other)."""
  a, b = np.ravel(a), np.ravel(b)
  pairs = {(int(x), int(y)) for x, y in zip(a, b)}
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _track(tx, reference, params, grads, tol, check_partition=True):
  """Run adamx and the reference side by side (open loop), comparing params, updates, mu and nu (per entry) after
  every step; first check that adamx's block grids and the reference's labels cut every leaf alike."""
  update, apply_updates = jax.jit(tx.update), jax.jit(adamx.apply_updates)
  state = tx.init(params)
  ref_params = trees.to_numpy(params)
  ref_state = reference.init(ref_params)
  if check_partition:
    for (path, x), v, labels in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(state[0].nu),
                                    jax.tree.leaves(reference._labels(ref_params))):
      assert same_partition(ref.grid_blocks(x, v.shape), labels), (jax.tree_util.keystr(path), v.shape)
  layout = compare = None
  for t, g in enumerate(grads, start=1):
    updates, state = update(g, state, params)
    params = apply_updates(params, updates)
    delta, ref_state = reference.update(g, ref_params, ref_state, t)
    ref_params = ref_adam.apply(ref_params, delta)
    observed = {"params": params, "updates": updates, "mu": state[0].mu,
                "nu": jax.tree.map(lambda v, x: _per_entry(v, np.shape(x)), state[0].nu, params)}
    expected = {"params": ref_params, "updates": delta, "mu": ref_state["mu"], "nu": ref_state["nu"]}
    if layout is None:
      layout = _Layout(expected)
      compare = _Compare(layout, tol)
    compare(layout.pack(observed), layout.pack(expected), t)
  return compare.worst_by_field()


def _tols(b1, b2, n):
  tol = _f32_tols(b1, b2, n)
  return {"params": tol["params"], "mu": tol["mu"], "nu": tol["nu"] + 32 * U32,
          "updates": tol["mu"] + tol["nu"] + 16 * U32}


def _run_case(name, n, dtype):
  params, tx, reference, h = _case(name, dtype)
  grads = _gradients(np.random.default_rng(_seed("adam_mini", name, "grads")), params, n)
  tol = dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL) if dtype == np.float64 else _tols(
      h["b1"], h["b2"], n)
  return _track(tx, reference, params, grads, tol)


def _report(what, worst, unit=None):
  print(f"{what}: " + ", ".join(f"{k}={v / unit:.1f}u" if unit else f"{k}={v:.1e}" for k, v in worst.items()))


@pytest.mark.parametrize("case", CASES)
def test_float32_against_reference(case):
  _report(f"float32 {case}", _run_case(case, N_SHORT, np.float32), U32)


@pytest.mark.parametrize("case", ["default", "transformer_flax"])
def test_float64_against_reference(case, x64):
  _report(f"float64 {case}", _run_case(case, N_SHORT, np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_float32_against_reference_long(case):
  _report(f"float32 {case} x{N_LONG}", _run_case(case, N_LONG, np.float32), U32)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_float64_against_reference_long(case, x64):
  _report(f"float64 {case} x{N_LONG}", _run_case(case, N_LONG, np.float64))


@pytest.mark.parametrize("wrong", ["partition", "b2", "eps"])
def test_a_wrong_reference_is_caught(wrong, x64):
  """A reference with other blocks (a row per block, the default rule, instead of the transformer rule), ``b2`` off
  by 1e-5 relative, or ``eps`` x 10 fails the float64 trajectory comparison; other blocks also fail the partition
  check."""
  params, tx, reference, h = _case("transformer_flax", np.float64)
  grads = _gradients(np.random.default_rng(3), params, 20)
  tol = dict.fromkeys(("params", "updates", "mu", "nu"), F64_RTOL)
  if wrong == "partition":
    reference = dataclasses.replace(reference, blocks=_default_blocks)
    with pytest.raises(AssertionError, match=r"\['kernel'\]"):
      _track(tx, reference, params, grads, tol)
  else:
    reference = dataclasses.replace(reference, **{wrong: h[wrong] * (1 + 1e-5 if wrong == "b2" else 10.0)})
  with pytest.raises(AssertionError, match="trajectory-normwise relative error"):
    _track(tx, reference, params, grads, tol, check_partition=False)


# ---------------------------------------------------------------------------------------------------------------
# (b) equivalences, memory, hand-computed steps, the transformer rule, validation
# ---------------------------------------------------------------------------------------------------------------


def test_element_partition_is_adamw_bitwise(rng):
  params = trees.mixed_params(rng, bf16=True)
  kw = dict(b1=0.8, b2=0.99, eps=1e-7, eps_root=1e-12, weight_decay=0.05, mask=adamx.decay_mask)
  tx, ref_tx = adamx.adam_mini(1e-2, partition="element", **kw), adamx.adamw(1e-2, **kw)
  s1, s2, p1, p2 = tx.init(params), ref_tx.init(params), params, params
  step1, step2 = jax.jit(tx.update), jax.jit(ref_tx.update)
  for g in _gradients(np.random.default_rng(1), params, 6):
    u1, s1 = step1(g, s1, p1)
    u2, s2 = step2(g, s2, p2)
    p1, p2 = _apply(p1, u1), _apply(p2, u2)
  jax.tree.map(np.testing.assert_array_equal, (p1, s1[0].mu, s1[0].nu), (p2, s2[0].mu, s2[0].nu))


def test_second_moment_memory_against_adam():
  """The state of a GPT-2-small-shaped block stack (width 768, 12 heads, MLP 3072, vocabulary 50257, 2 layers):
  ``mu`` is Adam's size, ``nu`` shrinks to one value per token, head and neuron (0.13% of Adam's), so the whole state
  is ~50% of Adam's. Shapes only (``jax.eval_shape``): nothing is allocated."""
  d, vocab, mlp = 768, 50257, 3072
  layer = {"attn": {"q_proj": {"kernel": (d, d), "bias": (d,)}, "k_proj": {"kernel": (d, d)},
                    "v_proj": {"kernel": (d, d)}, "o_proj": {"kernel": (d, d)}},
           "mlp": {"up_proj": {"kernel": (d, mlp)}, "down_proj": {"kernel": (mlp, d)}}, "ln_1": {"scale": (d,)}}
  shapes = {"wte": {"embedding": (vocab, d)}, "layers": [layer, layer], "lm_head": {"kernel": (d, vocab)}}
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes, is_leaf=lambda x: isinstance(x, tuple))

  def nbytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))

  mini = jax.eval_shape(adamx.adam_mini(partition=adamx.adam_mini_partition(12)).init, params)[0]
  adam = jax.eval_shape(adamx.adam().init, params)[1]
  assert nbytes(mini.mu) == nbytes(adam.mu) == nbytes(params)
  ratio_nu, ratio_state = nbytes(mini.nu) / nbytes(adam.nu), nbytes(mini) / nbytes(adam)
  print(f"adam_mini nu: {nbytes(mini.nu)} bytes vs adam {nbytes(adam.nu)} ({ratio_nu:.2%}); whole state "
        f"{ratio_state:.2%} of adam's")
  assert ratio_nu < 2e-3 and ratio_state < 0.502
  # the default rule (a row per block) on the same tree
  default = jax.eval_shape(adamx.adam_mini().init, params)[0]
  assert nbytes(default.nu) / nbytes(adam.nu) < 2e-3


def test_hand_computed_block_means():
  """One step from zero state, b1 = 0 and no decay: each block's v is (1 - b2) mean |g|^2 and the update of entry i is
  -lr g_i / (sqrt(mean_b |g|^2) + eps) after bias correction; complex entries count |g|^2."""
  g = {"w": jnp.array([[1.0, 3.0], [2.0, 0.0]]), "z": jnp.array([3.0 + 4.0j, 0.0])}
  params = jax.tree.map(jnp.zeros_like, g)
  b2, lr = 0.9, 0.1
  tx = adamx.adam_mini(lr, b1=0.0, b2=b2, eps=0.0)  # default: a block per row of w, one block for z
  updates, state = jax.jit(tx.update)(g, tx.init(params), params)
  np.testing.assert_allclose(state[0].nu["w"], (1 - b2) * np.array([[5.0], [2.0]]), rtol=1e-6)
  np.testing.assert_allclose(state[0].nu["z"], (1 - b2) * np.array([12.5]), rtol=1e-6)
  assert state[0].nu["z"].dtype == jnp.float32
  np.testing.assert_allclose(updates["w"], -lr * np.array([[1, 3] / np.sqrt(5.0), [2, 0] / np.sqrt(2.0)]), rtol=1e-6)
  np.testing.assert_allclose(updates["z"], -lr * np.array([3 + 4j, 0]) / np.sqrt(12.5), rtol=1e-6)


def test_transformer_rule_grids():
  rule = adamx.adam_mini_partition(N_HEADS, n_kv_heads=N_KV_HEADS)
  params = transformer(np.random.default_rng(0))
  grids = jax.tree_util.tree_map_with_path(lambda p, x: rule(jax.tree_util.keystr(p), x), params)
  assert grids == {
      "embed_tokens": {"embedding": (11, 1)},  # per token
      "layers_0": {
          "self_attn": {"q_proj": {"kernel": (1, 4), "bias": (8,)},  # per head; biases per entry (Adam)
                        "k_proj": {"kernel": (1, 2)}, "v_proj": {"kernel": (1, 4)}, "o_proj": {"kernel": (1, 8)}},
          "mlp": {"up_proj": {"kernel": (1, 16)}, "down_proj": {"kernel": (1, 8)}},  # per output neuron
          "input_layernorm": {"scale": (1,)},  # one block
      },
      "lm_head": {"kernel": (1, 11)},  # per token (output neuron)
      "norm": {"scale": (1,)},
  }
  torch_rule = adamx.adam_mini_partition(N_HEADS, n_kv_heads=N_KV_HEADS, out_axis=0)
  assert torch_rule("['model']['layers'][0]['self_attn']['k_proj']['weight']", np.zeros((4, 8))) == (2, 1)
  assert torch_rule(".model.layers.0.mlp.down_proj.weight", np.zeros((8, 16))) == (8, 1)
  assert rule("['attn']['proj']['kernel']", np.zeros((8, 8))) == (1, 8)  # the authors' "attn.proj"
  assert rule("['something']['else']", np.zeros((3, 4))) == (1, 1)


def test_transformer_rule_errors():
  rule = adamx.adam_mini_partition()
  with pytest.raises(ValueError, match=re.escape("adamx.adam_mini_partition: leaf ['q_proj'] is a query or key")):
    rule("['q_proj']", np.zeros((8, 8)))
  with pytest.raises(ValueError, match=r"query/key leaf \['query'\]\['kernel'\] has shape \(8, 4, 2\)"):
    adamx.adam_mini_partition(4)("['query']['kernel']", np.zeros((8, 4, 2)))
  with pytest.raises(ValueError, match=r"splits the output axis \(-1\) of a 2-D kernel into 3 heads"):
    adamx.adam_mini_partition(3)("['wq']", np.zeros((8, 8)))
  with pytest.raises(ValueError, match=r"adamx.adam_mini_partition: n_heads must be None or a positive int, got 0"):
    adamx.adam_mini_partition(0)
  with pytest.raises(ValueError, match=r"n_kv_heads must be None or a positive int, got 2.0"):
    adamx.adam_mini_partition(4, n_kv_heads=2.0)
  with pytest.raises(ValueError, match=r"out_axis must be 0 \(PyTorch layout\) or -1 \(Flax layout\), got 1"):
    adamx.adam_mini_partition(out_axis=1)
  # raised at init, naming the leaf
  with pytest.raises(ValueError, match=r"leaf \['layers_0'\]\['self_attn'\]\['k_proj'\]\['kernel'\] is a query"):
    adamx.adam_mini(partition=rule).init(transformer(np.random.default_rng(0)))


def test_partition_validation():
  params = {"w": jnp.ones((4, 6)), "s": jnp.ones(())}
  with pytest.raises(ValueError, match=r"adamx.adam_mini: partition must be one of 'leaf', 'element', got 'rows'"):
    adamx.adam_mini(partition="rows")
  with pytest.raises(TypeError, match=r"adamx.scale_by_adam_mini: partition must be None, one of 'leaf', 'element'"):
    adamx.scale_by_adam_mini(partition=3)
  for bad in [(3, 1), (4,), (4, 6, 1), (0, 6), (4.0, 6), "ab"]:
    tx = adamx.adam_mini(partition=lambda path, leaf, bad=bad: bad if leaf.ndim == 2 else ())
    with pytest.raises(ValueError, match=re.escape(f"adamx.scale_by_adam_mini: partition returned {bad!r} for leaf "
                                                   "['w'] of shape (4, 6)")):
      tx.init(params)
  tx = adamx.adam_mini(partition=lambda path, leaf: (2, 3) if leaf.ndim == 2 else ())  # tiles of 2 x 2
  state = tx.init(params)
  assert state[0].nu["w"].shape == (2, 3) and state[0].nu["s"].shape == ()
  with pytest.raises(TypeError, match=r"adamx.scale_by_adam_mini: parameter \['n'\] has dtype int32"):
    tx.init({"n": jnp.ones(2, jnp.int32)})
  with pytest.raises(ValueError, match=r"adamx.adam_mini: b1 must be in \[0, 1\), got -0.1"):
    adamx.adam_mini(b1=-0.1)


def test_vmap_and_jit_see_static_block_shapes():
  """Block grids are static shapes: a batch of problems under vmap gets each problem's grid (the rule sees the
  unbatched leaf) and matches one problem at a time."""
  tx = adamx.adam_mini(1e-2)
  batch = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 2)), jnp.float32)}
  g = jax.tree.map(lambda x: x * 0.5, batch)
  ub, sb = jax.jit(jax.vmap(lambda p, g: tx.update(g, tx.init(p), p)))(batch, g)
  assert sb[0].nu["w"].shape == (3, 4, 1)
  single = jax.jit(tx.update)({"w": g["w"][1]}, tx.init({"w": batch["w"][1]}), {"w": batch["w"][1]})[0]
  np.testing.assert_allclose(ub["w"][1], single["w"], rtol=1e-6)


def test_docstring_examples_run():
  failures, tried = doctest.testmod(_adam_mini, optionflags=doctest.ELLIPSIS)
  assert tried >= 8 and failures == 0
