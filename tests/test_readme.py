"""The README tells the truth: its training-step example runs and fits, its API table names real functions."""

from __future__ import annotations

import pathlib
import re

import jax.numpy as jnp
import numpy as np

import adamx

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_training_step_example_runs_and_fits():
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  assert len(blocks) == 3
  assert len(blocks[1].strip().splitlines()) <= 13  # "ten lines": the step, plus init and the loop
  namespace: dict = {}
  for block in blocks[:2]:
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
  params = namespace["params"]
  # Weight decay (1e-2) and a schedule that ends at 0 leave the fit slightly short of exact (measured: loss
  # 1.1e-3 from 3.96, w = [0.997, -1.963, 0.495]); the bounds are a few times those gaps.
  np.testing.assert_allclose(params["w"], [1.0, -2.0, 0.5], atol=0.1)
  np.testing.assert_allclose(params["b"], 0.3, atol=0.05)
  initial = namespace["loss"]({"w": jnp.zeros(3), "b": jnp.zeros(())}, namespace["x"], namespace["y"])
  assert float(namespace["loss"](params, namespace["x"], namespace["y"])) < 1e-2 * float(initial)
  assert int(namespace["opt_state"][0].count) == 1_000


def test_parameter_groups_example_runs():
  """The param-groups example: the embeddings go to adam, the rest to adamw with decay on the kernel only."""
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  namespace: dict = {}
  exec(compile(blocks[0] + blocks[2], "README.md", "exec"), namespace)  # noqa: S102 (our own README)
  state = namespace["opt_state"]
  # ones gradients: 100*8 + 8*8 + 8 = 872 entries, so the norm is sqrt(872)
  np.testing.assert_allclose(float(state[0].global_norm), 872**0.5, rtol=1e-6)
  assert sorted(state[1].inner_states) == ["embed", "rest"]
  updates, model = namespace["updates"], namespace["model"]
  assert {k: v.shape for k, v in updates["dense"].items()} == {"kernel": (8, 8), "bias": (8,)}
  assert adamx.decay_mask(model) == {"dense": {"bias": False, "kernel": True}, "embed_tokens": False}


def test_api_table_names_public_functions():
  names = set(re.findall(r"^\| `([a-z_]+)\(", README, flags=re.M))
  names |= {n for row in re.findall(r"^\| (`[A-Za-z_]+`(?:, `[A-Za-z_]+`)+) \|", README, flags=re.M)
            for n in re.findall(r"`([A-Za-z_]+)`", row)}
  assert {"adam", "adamw", "amsgrad", "add_decoupled_weight_decay", "chain", "apply_updates"} <= names
  assert names <= set(adamx.__all__), names - set(adamx.__all__)


def test_setup_commands_match_ci():
  ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
  for command in ("python -m pytest -q", "python -m pytest -q -m slow"):
    assert command in README and command in ci, command
  assert "torch==2.13.0" in README and "torch==2.13.0" in ci
