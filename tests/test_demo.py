"""``python -m adamx demo`` on a tiny configuration: it learns, adamx and optax AdamW coincide, it writes its plot
and weights, fine-tuning continues from them, and bad flags fail with a message naming the flag.

Tolerances:

* adamx vs optax AdamW, loss curves: ``1e-4`` absolute on losses of ~5 nats. The two differ only in float32
  rounding and in optax's bias correction ``1 - b**t`` computed from ``b`` rounded to float32 (up to ~2e-5
  relative, see the README), so every update differs by <= ~2e-5 relative and the loss by about that fraction of
  its total decrease (~1.5 nats in 12 steps): ~3e-5, plus ~1e-6 of reduction-order noise. The same check against
  Adam with coupled L2 (a real difference of convention) must exceed 1e-2, so the tolerance can fail.
* The first loss of a fresh model is ``ln 256`` (uniform next-byte prediction): the logits of the 0.02-std
  initialisation are ~0.02 x sqrt(d_model) ~ 0.1 apart, which moves the cross-entropy by < 0.05.
* Fine-tuning starts its warmup at a learning rate of exactly 0, so after its first step the params are the saved
  ones bit for bit and its first eval loss equals the trained run's last eval loss (same jitted function, same
  inputs): compared to 1e-6.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from adamx import _demo
from adamx import __main__ as cli

TINY = dict(d_model=32, n_layers=1, n_heads=2, seq_len=16, corpus_kb=40, batch_size=8, progress=False)
STEPS = 12
LOSS_ATOL = 1e-4


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  return str(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def trained(out):
  # The optax cross-check but not the Adam/SGD baselines: each run is one compilation of the step, the bulk of the
  # time. test_default_run_with_baselines (slow) runs all four.
  return _demo.run_demo(_demo.DemoConfig(steps=STEPS, out=out, eval_every=4, baselines=False, **TINY),
                        log=lambda s: None)


def test_loss_decreases(trained):
  run = trained.runs[0]
  assert run.name == "adamx.adamw"
  assert abs(run.losses[0] - math.log(256)) < 0.05
  assert run.final_loss() < run.losses[0] - 0.5
  assert run.eval_losses[-1] < run.eval_losses[0]
  assert len(run.losses) == STEPS and np.all(np.isfinite(run.losses))


def test_adamx_and_optax_adamw_coincide(trained):
  assert [r.name for r in trained.runs] == ["adamx.adamw", "optax.adamw"]
  adamx_run, optax_run = trained.runs
  gap = np.max(np.abs(adamx_run.losses - optax_run.losses))
  assert trained.max_loss_diff == pytest.approx(gap)
  assert gap <= LOSS_ATOL
  np.testing.assert_allclose(adamx_run.eval_losses, optax_run.eval_losses, atol=LOSS_ATOL, rtol=0)
  np.testing.assert_array_equal(adamx_run.lrs, optax_run.lrs)
  # The curves move by far more than the tolerance, so it can fail: a loss falling 0.5 nats is 5000 x LOSS_ATOL.
  assert adamx_run.losses[0] - adamx_run.losses[-1] > 5000 * LOSS_ATOL


def test_table_and_state_bytes(trained):
  n = sum(x.size for x in jax.tree.leaves(trained.runs[0].params))
  for r in trained.runs:  # AdamW: two float32 moments per parameter; the rest is a few int32 step counters
    assert 8 * n <= r.state_bytes <= 8 * n + 64
  table = _demo.format_table(trained.runs)
  for r in trained.runs:
    assert r.name in table and f"{r.final_loss():.4f}" in table and r.ms_per_step > 0


@pytest.mark.slow
def test_default_run_with_baselines(tmp_path):
  result = _demo.run_demo(_demo.DemoConfig(steps=STEPS, out=str(tmp_path), eval_every=4, **TINY), log=lambda s: None)
  adamw, optax_adamw, adam_l2, sgd = result.runs
  assert [r.name for r in result.runs] == ["adamx.adamw", "optax.adamw", "adamx.adam+L2", "optax.sgd"]
  assert result.max_loss_diff <= LOSS_ATOL
  # The tolerance separates conventions: coupled L2 on the same numbers is far from AdamW.
  assert np.max(np.abs(adamw.losses - adam_l2.losses)) > 100 * LOSS_ATOL
  n = sum(x.size for x in jax.tree.leaves(adamw.params))
  assert 8 * n <= adam_l2.state_bytes <= 8 * n + 64
  assert 4 * n <= sgd.state_bytes <= 4 * n + 64  # one float32 momentum per parameter
  for r in result.runs:
    assert r.final_loss() < r.losses[0] - 0.3, r.name


def test_plot_and_checkpoint_written(trained, out):
  assert trained.plot_path == os.path.join(out, "demo.png")
  with open(trained.plot_path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  model, params = _demo.load_checkpoint(trained.checkpoint_path)
  assert model == {k: TINY[k] for k in ("d_model", "n_layers", "n_heads", "seq_len")}
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained.runs[0].params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finetune_continues_from_checkpoint(trained, out):
  # Size flags that differ from the checkpoint are overridden by it.
  config = _demo.DemoConfig(steps=4, out=out, finetune=True, compare=False, eval_every=1, plot=False,
                            **{**TINY, "d_model": 64})
  ft = _demo.run_demo(config, log=lambda s: None).runs[0]
  fresh = trained.runs[0]
  assert ft.eval_losses[0] == pytest.approx(fresh.eval_losses[-1], abs=1e-6)
  assert ft.losses[0] < fresh.losses[0] - 0.5
  assert ft.losses[0] == pytest.approx(fresh.final_loss(), abs=0.5)  # batch-to-batch noise of 128 bytes
  assert ft.lrs[0] == 0 and max(ft.lrs) == pytest.approx(_demo._FINETUNE_LR)
  assert os.path.exists(os.path.join(out, "demo_finetuned.npz"))


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-1"], "argument --steps: must be a positive integer, got '-1'"),
    (["--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
    (["--lr", "0"], "argument --lr: must be a finite number > 0, got '0'"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got 'nan'"),
    (["--lr", "fast"], "argument --lr: must be a number > 0, got 'fast'"),
    (["--optimizer", "adamz"], "argument --optimizer: invalid choice: 'adamz' (choose from "),
    (["--optimizer", "sophia"], "invalid choice: 'sophia'"),
    (["--d-model", "30", "--heads", "4"], "d_model must be a multiple of n_heads=4, got 30"),
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0, got -1.0"),
])
def test_bad_flags(flags, message, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["demo", *flags])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "usage: python -m adamx demo" in err and message in err
  if "invalid choice" in message:  # the error lists the choices (quoted or not, by Python version)
    assert all(name in err for name in _demo.CHOICES)


def test_finetune_without_checkpoint(tmp_path, capsys):
  with pytest.raises(SystemExit):
    _demo.main(["--finetune", "--out", str(tmp_path)])
  err = capsys.readouterr().err
  assert f"--finetune needs the checkpoint {tmp_path / _demo.CHECKPOINT}, which does not exist" in err
  with pytest.raises(ValueError, match=r"adamx demo: steps must be a positive integer, got -3"):
    _demo.run_demo(_demo.DemoConfig(steps=-3))


def _cli(*flags):
  return subprocess.run([sys.executable, "-m", "adamx", "demo", *flags], capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_rejects_a_bad_flag():
  proc = _cli("--steps", "0")
  assert proc.returncode == 2
  assert "python -m adamx demo: error: argument --steps: must be a positive integer, got '0'" in proc.stderr


@pytest.mark.slow
def test_cli_trains(tmp_path):
  proc = _cli("--steps", "3", "--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "8", "--corpus-kb", "20",
              "--out", str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  for name in ("adamx.adamw", "optax.adamw", "adamx.adam+L2", "optax.sgd", "ms/step", "max |loss difference|"):
    assert name in proc.stdout
  assert f"weights: {tmp_path / _demo.CHECKPOINT}" in proc.stdout
  assert (tmp_path / _demo.CHECKPOINT).exists() and (tmp_path / "demo.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", _demo.CHOICES)
def test_every_choice_trains(name, tmp_path):
  result = _demo.run_demo(_demo.DemoConfig(steps=40, optimizer=name, out=str(tmp_path), plot=False, baselines=False,
                                          **TINY), log=lambda s: None)
  run = result.runs[0]
  # At least 0.1 nats: RAdam, whose first steps are momentum-only and whose rectification starts small, falls the
  # least (0.13 in 30 steps); the Adam family falls 1 to 1.5.
  assert run.final_loss() < run.losses[0] - 0.1, name
  if result.max_loss_diff is not None:
    assert result.max_loss_diff <= 10 * LOSS_ATOL, name  # 40 steps: the bias-correction gap grows with the decrease
