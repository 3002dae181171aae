"""The notebooks of ``notebooks/``: committed without outputs, equal to what ``notebooks/_build.py`` generates (so
they cannot drift from their reviewable source), and each one executes without an error or a warning.

Execution runs each notebook in a fresh kernel of *this* interpreter: a kernelspec written to a temporary
directory whose ``argv`` is ``sys.executable -m ipykernel_launcher``, so a ``python3`` kernelspec installed
elsewhere on the machine (another Python, another venv) can never be picked up. The notebooks check their own
numbers with ``assert`` (adamx vs optax trajectories, schedules vs optax), so a failing assertion fails the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
KERNEL = "adamx-test-python"
#: Seconds one notebook may take to execute (each is sized to finish in well under 40 s on 2 CPU cores).
TIMEOUT = 180


def _build_module():
  spec = importlib.util.spec_from_file_location("notebooks_build", os.path.join(NOTEBOOKS, "_build.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _notebook_files() -> list[str]:
  return sorted(f for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))


def test_every_notebook_is_generated():
  assert set(_notebook_files()) == set(_build_module().NOTEBOOKS)


@pytest.mark.parametrize("name", _notebook_files())
def test_no_outputs_and_regenerated_identically(name):
  with open(os.path.join(NOTEBOOKS, name), encoding="utf-8") as f:
    text = f.read()
  nb = json.loads(text)
  for cell in nb["cells"]:
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [] and cell["execution_count"] is None, (name, cell["id"])
  assert text == _build_module().render(name), f"{name} differs from notebooks/_build.py: rerun it"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory):
  """A data directory holding only the kernelspec of this interpreter, named so nothing else can shadow it."""
  data = tmp_path_factory.mktemp("jupyter")
  os.makedirs(data / "kernels" / KERNEL)
  with open(data / "kernels" / KERNEL / "kernel.json", "w") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "adamx tests", "language": "python"}, f)
  return str(data)


@pytest.mark.slow
@pytest.mark.parametrize("name", _notebook_files())
def test_notebook_executes(name, jupyter_path, monkeypatch):
  import nbformat
  from nbclient import NotebookClient

  monkeypatch.setenv("JUPYTER_PATH", jupyter_path)
  monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's platformdirs migration, without its warning
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "default"}
  client = NotebookClient(nb, timeout=TIMEOUT, kernel_name=KERNEL, resources={"metadata": {"path": NOTEBOOKS}})
  t0 = time.perf_counter()
  client.execute(env=env)
  elapsed = time.perf_counter() - t0
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      assert out.get("output_type") != "error", (name, cell.id, out)
      if out.get("output_type") == "stream" and out.get("name") == "stderr":
        pytest.fail(f"{name}, cell {cell.id} wrote to stderr:\n{out['text']}")
  print(f"{name}: {elapsed:.1f} s")
