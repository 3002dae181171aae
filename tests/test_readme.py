"""The README tells the truth: its examples run, its API table names real functions, its optimizer table is the
registry's."""

from __future__ import annotations

import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

import adamx
from adamx import _docs, registry

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_training_step_example_runs_and_fits():
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  assert len(blocks) == 6
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


def test_low_memory_examples_run_and_print_the_stated_savings(capsys):
  """The low-memory block prints the bytes per parameter the README states; the lazy-Adam block touches only the
  looked-up rows."""
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  namespace: dict = {}
  exec(compile(blocks[3], "README.md", "exec"), namespace)  # noqa: S102 (our own README)
  printed = re.findall(r"^(.*): ([0-9.]+) bytes/param$", capsys.readouterr().out, flags=re.M)
  assert [name for name, _ in printed] == list(namespace["optimizers"])
  stated = re.search(r"prints ([0-9.]+), ([0-9.]+), ([0-9.]+) and ([0-9.]+) bytes per parameter", README).groups()
  assert [value for _, value in printed] == list(stated)
  exec(compile(blocks[4], "README.md", "exec"), namespace)  # noqa: S102
  changed = np.unique(np.nonzero(np.asarray(namespace["table"]) != 1.0)[0])
  np.testing.assert_array_equal(changed, [3, 17, 999])


def test_fused_step_example_gives_the_training_steps_numbers():
  """The Performance section's apply_step loop trains the model to bitwise the params of the ten-line step."""
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  call = "adamx.apply_step(tx, grads, opt_state, params)"
  assert call in blocks[5]
  # As written (kernel="auto", which takes the XLA step on leaves this small) and with the kernel forced.
  for block in (blocks[5], blocks[5].replace(call, call[:-1] + ', kernel="fused")')):
    namespace: dict = {}
    for b in (blocks[0], blocks[1], block):
      exec(compile(b, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    for key in ("w", "b"):  # bitwise, after 1,000 steps with a schedule and weight decay
      np.testing.assert_array_equal(namespace["fused_params"][key], namespace["params"][key])
    assert int(namespace["fused_state"][0].count) == 1_000


def _section(title: str) -> str:
  return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_api_table_names_public_functions():
  api = _section("Optimizers") + _section("Transforms, schedules and wrappers")
  names = set(re.findall(r"^\| `([a-z_]+)\(", api, flags=re.M))
  names |= {n for row in re.findall(r"^\| (`[A-Za-z_]+`(?:, `[A-Za-z_]+`)+) \|", api, flags=re.M)
            for n in re.findall(r"`([A-Za-z_]+)`", row)}
  assert {"adam", "adamw", "amsgrad", "add_decoupled_weight_decay", "chain", "apply_updates"} <= names
  assert names <= set(adamx.__all__), names - set(adamx.__all__)


def test_setup_commands_match_ci():
  ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
  for command in ("python -m pytest -q", "python -m pytest -q -m slow"):
    assert command in README and command in ci, command
  assert "torch==2.13.0" in README and "torch==2.13.0" in ci


def test_optimizer_table_matches_registry():
  """The README's optimizer table is `python -m adamx docs`'s output: regenerate it when the registry changes."""
  block = f"{_docs.BEGIN}\n{_docs.optimizer_table()}{_docs.END}"
  assert block in README, "README.md's optimizer table is stale: run `python -m adamx docs --write README.md`"
  rows = re.findall(r"^\| `([a-z_0-9]+)\(", _docs.optimizer_table(), flags=re.M)
  assert rows == [spec.name for spec in registry.OPTIMIZERS]


def test_optimizer_table_counterparts_are_the_registry_builders():
  """The recording stand-in names what each builder really calls (read off the builders in adamx/registry.py)."""
  table = {row.split(" | ")[0]: row.split(" | ") for row in _docs.optimizer_table().splitlines()[2:]}
  adamw = next(v for k, v in table.items() if k.startswith("| `adamw("))
  assert adamw[2:] == ["`optax.adamw`", "`torch.optim.AdamW` |"]
  amsgrad = next(v for k, v in table.items() if k.startswith("| `amsgrad("))
  assert amsgrad[2:] == ["`optax.amsgrad` (max_over='corrected')", "`torch.optim.Adam(amsgrad=True)` (max_over='raw') |"]
  laprop = next(v for k, v in table.items() if k.startswith("| `laprop("))
  assert laprop[2] == "`optax.scale_by_rms + optax.ema`"


def test_docs_write_rewrites_only_the_marked_block(tmp_path, capsys):
  path = tmp_path / "README.md"
  path.write_text(f"intro\n{_docs.BEGIN}\nstale\n{_docs.END}\noutro\n")
  assert _docs.main(["--write", str(path)]) == 0
  assert path.read_text() == f"intro\n{_docs.BEGIN}\n{_docs.optimizer_table()}{_docs.END}\noutro\n"
  assert "updated" in capsys.readouterr().out
  assert _docs.main(["--write", str(path)]) == 0
  assert "already up to date" in capsys.readouterr().out
  path.write_text("no markers\n")
  with pytest.raises(ValueError, match="no table markers"):
    _docs.main(["--write", str(path)])
  with pytest.raises(SystemExit):
    _docs.main(["--write", str(tmp_path / "missing.md")])
  assert "no such file" in capsys.readouterr().err
