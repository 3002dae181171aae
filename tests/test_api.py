"""The public surface: __all__, docstrings, signatures, defaults shared by an optimizer and its scale_by_."""

from __future__ import annotations

import inspect
import pathlib

import pytest

import adamx
from adamx import registry

PUBLIC = [getattr(adamx, name) for name in adamx.__all__]


def test_all_is_exact_and_importable():
  assert len(set(adamx.__all__)) == len(adamx.__all__)
  assert all(hasattr(adamx, name) for name in adamx.__all__)
  assert isinstance(adamx.__version__, str) and adamx.__version__.count(".") == 2


@pytest.mark.parametrize("name", adamx.__all__)
def test_every_public_name_has_a_docstring(name):
  doc = inspect.getdoc(getattr(adamx, name))
  assert doc and len(doc.strip()) > 20, name
  assert "{args}" not in doc  # the shared argument text was substituted


@pytest.mark.parametrize("spec", registry.OPTIMIZERS, ids=lambda s: s.name)
def test_optimizer_docstring_has_math_references_and_example(spec):
  doc = inspect.getdoc(spec.factory)
  for section in (".. math::", "Args:", "Returns:", "Example:", "References:", "<https://", ">>>"):
    assert section in doc, (spec.name, section)
  params = [p for p in inspect.signature(spec.factory).parameters]
  for arg in params:
    assert f"{arg}:" in doc, (spec.name, arg)


@pytest.mark.parametrize("spec", registry.OPTIMIZERS, ids=lambda s: s.name)
def test_optimizer_and_scale_by_agree_on_defaults(spec):
  """The drift this prevents: optax's ademamix(alpha=5.0) vs scale_by_ademamix(alpha=6.0)."""
  opt = inspect.signature(spec.factory).parameters
  sb = inspect.signature(spec.scale_by).parameters
  shared = set(opt) & set(sb)
  assert {"b1", "b2"} <= shared
  for name in shared:
    assert opt[name].default == sb[name].default, (spec.name, name)


def test_registry_covers_every_public_optimizer():
  """Every public ``scale_by_<algo>`` of an optimizer module is the transform of some registered optimizer, and every
  registry factory is public under its name."""
  scale_bys = {name for name in adamx.__all__
               if name.startswith("scale_by_") and getattr(adamx, name).__module__.startswith("adamx.optimizers.")}
  assert scale_bys == {spec.scale_by.__name__ for spec in registry.OPTIMIZERS}
  for spec in registry.OPTIMIZERS:
    assert getattr(adamx, spec.name) is spec.factory


def test_registry_get():
  assert registry.get("adamw").factory is adamx.adamw
  with pytest.raises(KeyError, match="no optimizer 'adamz'; known: adam, adamw, amsgrad, adamax, "):
    registry.get("adamz")
  with pytest.raises(TypeError, match="adamw has no argument"):
    registry.get("adamw").full_kwargs(lr=1.0)


# Issue 7 extended Adam and AdamW with keyword-only arguments after issue 3's, so every call written against the
# issue-3 signatures still means the same.
_FACTORED = ", factored=False, min_dim_size_to_factor=None, factored_eps=None"

ISSUE_SIGNATURES = {
    "scale_by_adam": ("(b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, *, mu_dtype=None, nu_dtype=None, nesterov=False"
                      f"{_FACTORED})"),
    "scale_by_amsgrad": ("(b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, *, max_over='corrected', mu_dtype=None, "
                         "nu_dtype=None)"),
    "adam": ("(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, *, weight_decay=0.0, mu_dtype=None, "
             f"nu_dtype=None, nesterov=False{_FACTORED})"),
    "adamw": ("(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, weight_decay=0.0001, *, mask=None, "
              f"mu_dtype=None, nu_dtype=None, nesterov=False{_FACTORED})"),
    "amsgrad": ("(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, *, max_over='corrected', "
                "weight_decay=0.0, mu_dtype=None, nu_dtype=None)"),
    "add_decoupled_weight_decay": "(weight_decay, mask=None)",
    "add_l2_regularization": "(weight_decay, mask=None)",
    "scale_by_learning_rate": "(learning_rate)",
    "scale": "(step_size)",
    "warmup_cosine_schedule": "(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0, exponent=1.0)",
    "constant_schedule": "(value)",
    "chain": "(*transforms)",
    "apply_updates": "(params, updates)",
}


@pytest.mark.parametrize("name", sorted(ISSUE_SIGNATURES))
def test_signatures_are_the_documented_ones(name):
  """Other tooling relies on these exact signatures (issue #3)."""
  sig = inspect.signature(getattr(adamx, name)).replace(return_annotation=inspect.Signature.empty)
  plain = sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()])
  assert str(plain) == ISSUE_SIGNATURES[name]


def test_py_typed_marker_ships():
  assert (pathlib.Path(adamx.__file__).parent / "py.typed").is_file()


def test_import_adamx_does_not_import_optax_or_torch():
  import subprocess
  import sys

  code = "import sys, adamx, adamx.registry; print('optax' in sys.modules, 'torch' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  assert out.split() == ["False", "False"]
