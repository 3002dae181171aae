"""``python -m adamx check``: the parity table, its exit code, and its flags."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest

import adamx
from adamx import check, registry


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "adamx", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # the whole table over the registry (~50 s); the flags and exit codes are tested below
def test_cli_check_passes_and_prints_every_comparison():
  result = _run_cli("check", "--steps", "20")
  assert result.returncode == 0, result.stdout + result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].split() == ["name", "variant", "against", "max", "rel", "err", "result"]
  rows = [line for line in lines[2:] if line.strip() and not line.startswith(tuple("0123456789"))]
  import optax
  import torch

  modules = {"optax": optax, "torch": torch}
  expected = {(spec.name, lib) for spec in registry.OPTIMIZERS for variant in spec.variants for lib in modules
              if getattr(spec, lib) and getattr(spec, lib)(modules[lib], spec.full_kwargs(**variant)) is not None}
  assert {name for name, _ in expected} == {spec.name for spec in registry.OPTIMIZERS if not spec.reference_only}
  expected |= {(spec.name, "optax") for spec in registry.SCHEDULES}
  assert {(row.split()[0], row.split()[-3]) for row in rows} == expected
  assert all(row.split()[-1] == "pass" for row in rows)
  assert "comparisons within" in lines[-1]


def _with_signature(fn, like):
  fn.__signature__ = inspect.signature(like)
  return fn


def test_check_fails_on_a_wrong_optimizer():
  """A broken optimizer (AdamW whose decay is coupled L2) must make the check fail: the table can fail."""
  spec = registry.get("adamw")

  def coupled(learning_rate=1e-3, weight_decay=1e-4, mask=None, **kw):
    del mask
    return adamx.adam(learning_rate, weight_decay=weight_decay, **kw)

  rows = check.run(steps=20, specs=[dataclasses.replace(spec, factory=_with_signature(coupled, spec.factory))])
  assert rows and all(r.status == "FAIL" for r in rows)
  assert min(r.max_rel_err for r in rows) > 100 * check.TOLERANCE


def test_check_main_exit_codes(monkeypatch, capsys):
  spec = registry.get("adam")
  broken = dataclasses.replace(spec, factory=_with_signature(
      lambda learning_rate=1e-3, b1=0.9, **kw: adamx.adam(learning_rate, b1=b1 * 0.5, **kw), spec.factory))
  monkeypatch.setattr(registry, "OPTIMIZERS", (broken,))
  assert check.main(["--steps", "5"]) == 1
  assert "FAILED" in capsys.readouterr().out
  monkeypatch.setattr(registry, "OPTIMIZERS", (spec,))
  assert check.main(["--steps", "5"]) == 0


def test_cli_rejects_bad_flags():
  assert _run_cli("check", "--steps", "0").returncode == 2
  bad = _run_cli("check", "--optimizer", "adamz")
  assert bad.returncode == 2 and "no optimizer 'adamz'" in bad.stderr
  usage = _run_cli("frobnicate")
  assert usage.returncode == 2 and "usage: python -m adamx" in usage.stderr


def test_check_reports_missing_libraries_as_skipped(monkeypatch):
  real_import = check.importlib.import_module

  def without_torch(name, *args, **kwargs):
    if name == "torch":
      raise ImportError("no torch here")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(check.importlib, "import_module", without_torch)
  rows = check.run(steps=2, names=["adam"])
  assert any(r.against == "torch" and r.status == "skipped: torch is not installed" for r in rows)
  assert any(r.against == "optax" and r.status == "pass" for r in rows)


def test_schedule_rows_can_fail(monkeypatch):
  """A schedule compared with a different optax schedule fails; the real table passes at 1e-6."""
  rows = check.schedule_rows()
  assert {r.optimizer for r in rows} == {s.name for s in registry.SCHEDULES}
  assert all(r.status == "pass" and r.max_rel_err <= check.SCHEDULE_TOLERANCE for r in rows)
  wrong = dataclasses.replace(registry.get_schedule("cosine_decay_schedule"), optax="linear_schedule",
                              kwargs={"init_value": 1e-3, "end_value": 0.0, "transition_steps": 500})
  monkeypatch.setattr(registry, "SCHEDULES", (dataclasses.replace(wrong, name="linear_schedule"),
                                              dataclasses.replace(registry.SCHEDULES[0])))
  monkeypatch.setattr(check._schedules, "linear_schedule",
                      lambda **kw: adamx.cosine_decay_schedule(kw["init_value"], kw["transition_steps"]))
  rows = check.schedule_rows()
  assert [r.status for r in rows] == ["FAIL", "pass"] and rows[0].max_rel_err > 0.1
