"""The benchmark suite and its HLO accounting: deterministic checks only (no timing is asserted anywhere).

``benchmarks.hlo`` counts the loops and bytes of a compiled step; these tests check the counter on programs whose
answer is known by construction, then pin what adamx's compiled AdamW step does on XLA:CPU so that a change which
adds a pass over the parameters fails here rather than only showing in a benchmark.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import optax
import pytest

import adamx
from benchmarks import hlo

N = 4096


def test_counter_on_a_single_elementwise_loop():
  """``x * 2 + y`` over f32[N] is one loop: reads x and y, writes one array, 12 bytes an element."""
  text = hlo.compiled_text(lambda x, y: x * 2 + y, jnp.ones(N), jnp.ones(N))
  assert hlo.loops_touching(text, (N,)) == 1
  assert hlo.bytes_per_element(text, N) == 12


def test_counter_on_two_dependent_loops():
  """A full reduction between two elementwise ops forces a second pass over x: 2 loops touch x's shape."""
  text = hlo.compiled_text(lambda x: x / jnp.sum(x * x), jnp.ones(N))
  assert hlo.loops_touching(text, (N,)) == 2


def _step_text(tx, params):
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return adamx.apply_updates(p, u), s

  state = tx.init(params)
  return hlo.compiled_text(jax.jit(step, donate_argnums=(0, 1)), params, state, params)


@pytest.mark.parametrize("make", [lambda: adamx.adamw(1e-3, weight_decay=1e-2), lambda: adamx.adam(1e-3)],
                         ids=["adamw", "adam"])
def test_adam_step_makes_no_more_passes_than_optax(make):
  """On XLA:CPU, which has no multi-output fusion, each leaf's mu, nu and params are three loops (40 bytes per
  parameter for fp32: 12 + 12 + 16); optax's step is the same. Scalar work (bias corrections) is not counted."""
  params = {"w": jnp.ones((64, 64)), "b": jnp.ones((64,)), "x": [jnp.ones((8, 4, 2))]}
  n = sum(x.size for x in jax.tree.leaves(params))
  ours = _step_text(make(), params)
  theirs = _step_text(optax.adamw(1e-3, weight_decay=1e-2), params)
  for shape in [(64, 64), (64,), (8, 4, 2)]:
    assert hlo.loops_touching(ours, shape) <= hlo.loops_touching(theirs, shape)
    if jax.default_backend() == "cpu":
      assert hlo.loops_touching(ours, shape) == 3, shape
  assert hlo.bytes_per_element(ours, n) <= hlo.bytes_per_element(theirs, n)
  if jax.default_backend() == "cpu":
    assert hlo.bytes_per_element(ours, n) == 40


@pytest.mark.slow  # ~10 s: a subprocess that compiles two trees for four implementations
def test_benchmark_suite_runs_quick():
  """``python -m benchmarks --quick`` runs end to end and prints the table (no file written, nothing timed here)."""
  out = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--steps", "1", "--no-torch", "--out", "-",
                        "--plot", "-"], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  rows = [line for line in out.stdout.splitlines() if line.startswith("| 1 x 64k")]
  by_impl = {row.split("|")[2].strip(): row for row in rows}
  assert set(by_impl) == {"jax.jit identity (dispatch floor)", "adamx.adamw", "adamx.adamw fused", "optax.adamw",
                          "adamx.adam", "adamx.adam fused", "optax.adam", "adamx.adamw bf16 moments", "adamx.adamw bf16, stochastic nu",
                          "adamx.adamw 8-bit", "adamx.adamw factored"}
  assert "| 28.0 | 8.0 |" in by_impl["adamx.adamw fused"]  # HLO B/param: one pass
  # state B/param, the last column: bf16 moments halve the 8, 8 bits per moment (plus block scales) quarter it
  assert by_impl["adamx.adamw bf16 moments"].endswith("| 4.0 |")
  assert by_impl["adamx.adamw 8-bit"].endswith("| 2.0 |")
  flat_rows = [line for line in out.stdout.splitlines() if line.startswith("| 20 x 1k | adamx.adamw flat store")
               or line.startswith("| 20 x 1k | adamx.adamw fused, flat store")]
  assert len(flat_rows) == 2
  assert "| 40.0 | 8.0 |" in by_impl["adamx.adamw"]
  assert "| 0.0 | 8.0 |" in by_impl["jax.jit identity (dispatch floor)"]  # moves nothing: donated, aliased


def test_benchmark_flags_are_validated():
  out = subprocess.run([sys.executable, "-m", "benchmarks", "--steps", "0"], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2 and "--steps must be a positive integer" in out.stderr
