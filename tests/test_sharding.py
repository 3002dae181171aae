"""Sharded optimizer state on 8 simulated CPU devices (``tests/_sharding_script.py``, run in a subprocess because
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before jax is imported).

Checked: ``tx.init`` of sharded params gives moments with the params' ``NamedSharding`` (eagerly, and under ``jit``
with explicit mesh axes); ``adamx.interop.shard_state`` (ZeRO-1) splits the state of replicated params across the
``data`` axis (each device holds 0.127 of the replicated bytes: 1/8, plus the leaves no axis divides), the jitted
steps keep it split and the params replicated, with no implicit host transfer (``jax.transfer_guard("disallow")``),
and params and state after 20 steps equal those of the same run on one unsharded device to within
``ZERO1_RTOL = 8 u`` (``u = 2^-24``). An elementwise optimizer computes each entry from the same inputs whatever the
layout, but not with the same roundings: the partitioned program is another graph, and XLA:CPU's LLVM backend
fuses a different product of a moment's ``a * b + c * d`` into an FMA in it (measured on a sharded leaf: ``mu`` is
``fma(m, b1, g * (1 - b1))`` there and ``fma(g, 1 - b1, m * b1)`` unsharded), so the bits depend on the graph.
Measured after 20 steps: AdamW 3.0e-8 on params and 3.2e-7 (5.4 u) on state; AMSGrad under
``inject_hyperparams`` 3e-8 and 2.4e-7. The tensor-parallel run (params split along ``model``, the same graph
shape on both sides of the comparison) is bitwise.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ZERO1_RTOL = 8 * 2.0 ** -24
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*flags):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  run = subprocess.run([sys.executable, str(ROOT / "tests" / "_sharding_script.py"), *flags], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]
  return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def quick():
  """AdamW only (the default suite; about 8 s)."""
  return _run("--quick")


@pytest.fixture(scope="module")
def results():
  """Every optimizer of the script (-m slow)."""
  return _run()


def test_state_follows_the_params_sharding(quick):
  assert quick["devices"] == 8
  assert quick["state_follows_params"] == {"adamw": True}
  assert quick["jit_init_explicit_follows"] is True


@pytest.mark.slow
def test_state_follows_the_params_sharding_every_optimizer(results):
  assert results["state_follows_params"] == {"adamw": True, "adam_bf16": True, "amsgrad": True,
                                             "amsgrad_inject": True}


def test_zero1_adamw(quick):
  _check_zero1(quick, "adamw")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamw", "adam_bf16", "amsgrad", "amsgrad_inject"])
def test_zero1_splits_the_state_and_keeps_the_numbers(results, name):
  _check_zero1(results, name)


def _check_zero1(results, name):
  r = results["zero1"][name]
  assert r["state_stays_sharded"] and r["params_stay_replicated"]
  assert "P('data',)" in r["specs"] and "P(None, 'data')" in r["specs"]
  rep, zero1 = r["replicated_bytes"], r["zero1_bytes"]
  assert zero1["total"] < 1.05 * rep["max"]  # each byte of state is held about once, not 8 times
  assert zero1["max"] < 0.13 * rep["max"]
  assert r["rel_err_params"] <= ZERO1_RTOL and r["rel_err_state"] <= ZERO1_RTOL, r


def test_zero1_on_a_tensor_parallel_mesh(quick):
  r = quick["zero1_2d"]
  assert r["bitwise_params"] and r["bitwise_state"]
  assert "P('data', 'model')" in r["specs"]
  assert r["zero1_bytes"]["max"] < 0.3 * r["tp_bytes"]["max"]
