"""Validation: bad hyperparameters fail at construction with a message naming the function, the argument and the
value; arrays and tracers are never rejected (``jit``, ``vmap``, ``optax.inject_hyperparams``); trees that do not
match the state, integer params and bad masks fail with a clear adamx error; valid learning-rate edge cases work.

Error messages are checked for content, not wording: ``adamx.<function>``, the argument's name and the value
(its ``repr`` or ``str``) must each appear somewhere in the message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adamx

_NO_VALUE = object()


def _message(fn: str, *words: str, value: Any = _NO_VALUE, fragments: tuple[str, ...] = ()) -> str:
  """A regex (for ``pytest.raises(match=...)``) that holds iff every part appears somewhere in the message.

  ``fn`` may be a regex alternation of function names; ``words`` are whole words (argument names); ``value`` must
  appear as its repr or its str, not glued to other word characters; ``fragments`` are literal substrings.
  """
  parts = [rf"adamx\.(?:{fn})\b"]
  parts += [rf"\b{re.escape(w)}\b" for w in words]
  if value is not _NO_VALUE:
    shown = "|".join(sorted({re.escape(repr(value)), re.escape(str(value))}, key=len, reverse=True))
    parts.append(rf"(?<![\w.])(?:{shown})(?![\w.])")
  parts += [re.escape(f) for f in fragments]
  return "(?s)^" + "".join(f"(?=.*{p})" for p in parts)


def _assert_tree_close(actual: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-7) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert jnp.shape(a) == jnp.shape(e)
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol)


def _params():
  return {"dense": {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -0.75])},
          "scalar": jnp.array(2.0, jnp.float32)}  # not weak-typed: a jit output has the same type


def _grads(step: int = 0):
  s = 1.0 + 0.5 * step
  sign = -1.0 if step % 2 else 1.0
  return {"dense": {"w": sign * jnp.array([[0.3, -1.2], [2.0, 0.1]]) * s, "b": jnp.array([-0.4, 0.9]) / s},
          "scalar": jnp.array(0.7, jnp.float32) * s * sign}


# ------------------------------------------------------------------------------------------------------------------
# Construction-time validation of concrete numbers, for every public factory.
# ------------------------------------------------------------------------------------------------------------------

# The arguments each factory must validate, and the base arguments needed to call it.
_FACTORIES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "scale_by_adam": ({}, ("b1", "b2", "eps", "eps_root", "mu_dtype", "nu_dtype", "nesterov")),
    "scale_by_amsgrad": ({}, ("b1", "b2", "eps", "eps_root", "mu_dtype", "nu_dtype", "max_over")),
    "adam": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "mu_dtype", "nu_dtype",
                  "nesterov")),
    "adamw": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "mu_dtype", "nu_dtype",
                   "nesterov", "mask")),
    "amsgrad": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "max_over", "mu_dtype",
                     "nu_dtype")),
    "scale_by_adamax": ({}, ("b1", "b2", "eps", "eps_mode", "mu_dtype", "nu_dtype")),
    "adamax": ({}, ("learning_rate", "b1", "b2", "eps", "eps_mode", "weight_decay", "mu_dtype", "nu_dtype")),
    "adamaxw": ({}, ("learning_rate", "b1", "b2", "eps", "weight_decay", "mask", "eps_mode", "mu_dtype",
                     "nu_dtype")),
    "scale_by_nadam": ({}, ("b1", "b2", "eps", "eps_root", "momentum_decay", "mu_dtype", "nu_dtype")),
    "nadam": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "momentum_decay", "weight_decay", "mu_dtype",
                   "nu_dtype")),
    "nadamw": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "mask", "momentum_decay",
                    "mu_dtype", "nu_dtype")),
    "scale_by_radam": ({}, ("b1", "b2", "eps", "eps_root", "threshold", "nesterov", "mu_dtype", "nu_dtype")),
    "radam": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "threshold", "nesterov", "weight_decay",
                   "decoupled_weight_decay", "mu_dtype", "nu_dtype")),
    "scale_by_belief": ({}, ("b1", "b2", "eps", "eps_root", "nesterov", "mu_dtype", "nu_dtype")),
    "adabelief": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "nesterov", "mu_dtype", "nu_dtype")),
    "scale_by_yogi": ({}, ("b1", "b2", "eps", "eps_root", "initial_accumulator_value", "bias_correction",
                           "mu_dtype", "nu_dtype")),
    "yogi": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "initial_accumulator_value", "bias_correction",
                  "mu_dtype", "nu_dtype")),
    "scale_by_lion": ({}, ("b1", "b2", "mu_dtype")),
    "lion": ({}, ("learning_rate", "b1", "b2", "weight_decay", "mask", "mu_dtype")),
    "scale_by_lamb": ({}, ("b1", "b2", "eps", "eps_root", "weight_decay", "mask", "mu_dtype", "nu_dtype")),
    "lamb": ({}, ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "mask", "mu_dtype", "nu_dtype")),
    "scale_by_trust_ratio": ({}, ("min_norm", "trust_coefficient", "eps")),
    "add_decoupled_weight_decay": ({"weight_decay": 1e-4}, ("weight_decay", "mask")),
    "add_l2_regularization": ({"weight_decay": 1e-4}, ("weight_decay", "mask")),
    "scale_by_learning_rate": ({"learning_rate": 1e-3}, ("learning_rate",)),
    "scale": ({"step_size": 1.0}, ("step_size",)),
    "constant_schedule": ({"value": 1.0}, ("value",)),
    "warmup_cosine_schedule": ({"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 10, "decay_steps": 100},
                               ("init_value", "peak_value", "end_value", "exponent", "warmup_steps",
                                "decay_steps")),
}

# Values that are not numbers at all: a TypeError (or ValueError) for every numeric argument.
_NOT_NUMBERS = ["0.5", None, [0.5], (0.5,), {"x": 0.5}, 1j, object(), True, np.bool_(False), np.complex64(1 + 2j),
                np.str_("0.5"), np.array("0.5")]

_DECAY_OUT_OF_RANGE = [1.0, 1.5, -0.1, -1e-12, math.nan, math.inf, -math.inf, np.float32(1.0), np.float64(-0.5),
                       np.int64(2)]
_NEGATIVE_OR_NON_FINITE = [-1e-8, -1, math.nan, math.inf, -math.inf, np.float32(-1.0), np.float64(math.nan),
                           np.float32(math.inf), np.int64(-3)]

# (argument kind) -> list of (bad value, expected exception types, extra message fragments).
_BAD: dict[str, list[tuple[Any, tuple[type[Exception], ...], tuple[str, ...]]]] = {
    "decay": ([(v, (ValueError,), ("[0, 1)",)) for v in _DECAY_OUT_OF_RANGE]
              + [(v, (TypeError,), ()) for v in _NOT_NUMBERS]),
    "non_negative": ([(v, (ValueError,), ()) for v in _NEGATIVE_OR_NON_FINITE]
                     + [(v, (TypeError,), ()) for v in _NOT_NUMBERS]),
    "learning_rate": ([(v, (ValueError,), ()) for v in _NEGATIVE_OR_NON_FINITE]
                      + [(v, (TypeError,), ()) for v in _NOT_NUMBERS]),
    "number": [(v, (TypeError,), ()) for v in _NOT_NUMBERS],
    "dtype": [(v, (ValueError, TypeError), ()) for v in
              ["float33", "not_a_dtype", jnp.int32, np.int8, "int32", jnp.uint8, jnp.bool_, jnp.complex64,
               np.dtype("complex128"), "complex64"]],
    "max_over": [(v, (ValueError, TypeError), ()) for v in ["max", "Corrected", "", None, 1]],
    "bool": [(v, (TypeError, ValueError), ()) for v in [1, 0, 1.0, "yes", None]],
    "eps_mode": [(v, (ValueError, TypeError), ()) for v in
                 ["Max", "MAX", "", " max", "denominator ", "keras", "min", None, 1, True, b"max"]],
    # None (the default: constant momentum, optax) is valid; psi >= 0 otherwise (torch NAdam).
    "momentum_decay": ([(v, (ValueError,), ()) for v in _NEGATIVE_OR_NON_FINITE]
                       + [(v, (TypeError,), ()) for v in _NOT_NUMBERS if v is not None]),
    # RAdam's rectification term sqrt((rho_t - 4)(rho_t - 2)...) is real only for rho_t >= 4; inf (never rectify)
    # is valid.
    "threshold": ([(v, (ValueError,), ()) for v in [3.9, 3.999999, 2, 0, 0.0, -1, -5.0, math.nan, -math.inf,
                                                     np.float32(3.5), np.float64(math.nan), np.int64(3)]]
                  + [(v, (TypeError,), ()) for v in _NOT_NUMBERS]),
    "mask": [(v, (TypeError, ValueError), ()) for v in [[], {}, (), {"x": "yes"}, {"x": 1.0}, [True, None, 0]]],
    "steps": ([(v, (ValueError,), ()) for v in [-1, 2.5, np.float64(0.5), math.nan, math.inf, -10.0]]
              + [(v, (TypeError, ValueError), ()) for v in ["10", None, [10], True, 10j]]),
}

_KIND = {
    "b1": "decay", "b2": "decay", "eps": "non_negative", "eps_root": "non_negative",
    "weight_decay": "non_negative", "learning_rate": "learning_rate", "mu_dtype": "dtype", "nu_dtype": "dtype",
    "max_over": "max_over", "nesterov": "bool", "mask": "mask", "step_size": "number", "value": "number",
    "init_value": "number", "peak_value": "number", "end_value": "number", "exponent": "number",
    "warmup_steps": "steps", "decay_steps": "steps",
    "eps_mode": "eps_mode", "momentum_decay": "momentum_decay", "threshold": "threshold",
    "initial_accumulator_value": "non_negative", "bias_correction": "bool", "decoupled_weight_decay": "bool",
    "min_norm": "non_negative", "trust_coefficient": "non_negative",
}


def _construction_cases():
  cases = []
  for fn, (base, args) in _FACTORIES.items():
    for arg in args:
      for i, (value, excs, fragments) in enumerate(_BAD[_KIND[arg]]):
        kwargs = dict(base)
        kwargs[arg] = value
        if fn == "warmup_cosine_schedule" and arg == "warmup_steps":
          kwargs["decay_steps"] = 10**6  # so that only warmup_steps is wrong
        shown = type(value).__name__ if " at 0x" in repr(value) else repr(value)  # ids stable across runs
        cases.append(pytest.param(fn, kwargs, arg, value, excs, fragments, id=f"{fn}-{arg}-{i}-{shown}"))
  return cases


@pytest.mark.parametrize("fn, kwargs, arg, value, excs, fragments", _construction_cases())
def test_bad_concrete_hyperparameter_raises_naming_function_argument_and_value(fn, kwargs, arg, value, excs,
                                                                                fragments):
  with pytest.raises(excs, match=_message(fn, arg, value=value, fragments=fragments)):
    getattr(adamx, fn)(**kwargs)


def test_b2_example_from_the_spec():
  with pytest.raises(ValueError, match=_message("adamw", "b2", value=1.5, fragments=("[0, 1)",))):
    adamx.adamw(b2=1.5)


@pytest.mark.parametrize("warmup_steps, decay_steps", [(10, 10), (10, 5), (5, 0), (1, 1), (100.0, 50)])
def test_decay_steps_must_exceed_warmup_steps(warmup_steps, decay_steps):
  with pytest.raises(ValueError, match=_message("warmup_cosine_schedule", "decay_steps", value=decay_steps)):
    adamx.warmup_cosine_schedule(0.0, 1.0, warmup_steps, decay_steps)


@pytest.mark.parametrize("warmup_steps, decay_steps, at, expected", [
    (0, 0, [0, 5, 10**9], [0.25, 0.25, 0.25]),  # both zero: the constant end_value
    (0, 10, [0, 5, 10, 20], [1.0, 0.625, 0.25, 0.25]),
    (np.int64(4), np.int64(8), [0, 2, 4, 8], [0.0, 0.5, 1.0, 0.25]),
    (4.0, 1e1, [2, 4, 10], [0.5, 1.0, 0.25]),  # integral floats are accepted
])
def test_valid_schedule_steps(warmup_steps, decay_steps, at, expected):
  schedule = adamx.warmup_cosine_schedule(0.0, 1.0, warmup_steps, decay_steps, end_value=0.25)
  np.testing.assert_allclose([float(schedule(t)) for t in at], expected, rtol=1e-6, atol=1e-7)


# A learning rate / hyperparameter given as a NumPy *string* scalar or a string array is "not a number", but
# np.str_ is an np.generic and a str array is an np.ndarray, which _checks.check_type waves through.
@pytest.mark.parametrize("fn, kwargs, arg", [
    ("adam", {"learning_rate": np.str_("0.1")}, "learning_rate"),
    ("scale_by_learning_rate", {"learning_rate": np.str_("0.1")}, "learning_rate"),
    ("adamw", {"learning_rate": np.array("0.1")}, "learning_rate"),
    ("adam", {"b1": np.str_("0.9")}, "b1"),
    ("scale_by_amsgrad", {"eps": np.str_("1e-8")}, "eps"),
    ("add_decoupled_weight_decay", {"weight_decay": np.str_("0.1")}, "weight_decay"),
    ("scale", {"step_size": np.bytes_(b"1")}, "step_size"),
    ("constant_schedule", {"value": np.array(["a", "b"])}, "value"),
])
def test_numpy_string_values_are_rejected_at_construction(fn, kwargs, arg):
  with pytest.raises(TypeError, match=_message(fn, arg)):
    getattr(adamx, fn)(**kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Valid values at the edges are accepted and behave.
# ------------------------------------------------------------------------------------------------------------------


def _adam_direction(g: Any, p: Any, eps: float = 1e-8) -> Any:
  """Adam's first update at learning rate 1: ``g / (|g| + eps)`` (m_hat = g and v_hat = g^2 at step 1)."""
  del p
  return jax.tree.map(lambda x: np.asarray(x, np.float64) / (np.abs(np.asarray(x, np.float64)) + eps), g)


def _lamb_direction(g: Any, p: Any) -> Any:
  """LAMB's first step at lr = 1 with no decay: Adam's direction (eps = 1e-6) times ||p|| / ||r|| per leaf."""
  def leaf(r, w):
    return r * np.linalg.norm(np.asarray(w, np.float64)) / np.linalg.norm(r)
  return jax.tree.map(leaf, _adam_direction(g, p, eps=1e-6), p)


def _map64(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[Any, Any], Any]:
  return lambda g, p: jax.tree.map(lambda x: f(np.asarray(x, np.float64)), g)


# name -> (optimizer from a learning rate, the first update at learning rate 1 as a function of (grads, params)).
# At step 1 with default hyperparameters (b1 = 0.9, b2 = 0.999): m_hat = g and v_hat = g^2 for the Adam family.
_OPTIMIZERS_NO_DECAY: dict[str, tuple[Callable[[Any], adamx.GradientTransformation], Callable[[Any, Any], Any]]] = {
    "adam": (lambda lr: adamx.adam(lr), _adam_direction),
    "adamw": (lambda lr: adamx.adamw(lr, weight_decay=0.0), _adam_direction),
    "amsgrad": (lambda lr: adamx.amsgrad(lr), _adam_direction),
    "amsgrad_raw": (lambda lr: adamx.amsgrad(lr, max_over="raw"), _adam_direction),
    "chain": (lambda lr: adamx.chain(adamx.scale_by_adam(), adamx.scale_by_learning_rate(lr)), _adam_direction),
    # u_1 = max(0, |g| + eps): Adam's first step.
    "adamax": (lambda lr: adamx.adamax(lr), _adam_direction),
    "adamaxw_denominator": (lambda lr: adamx.adamaxw(lr, weight_decay=0.0, eps_mode="denominator"),
                            _adam_direction),
    # Dozat's m_hat at t = 1: b1 m_1 / (1 - b1^2) + (1 - b1) g / (1 - b1) = g (1 + b1 / (1 + b1)).
    "nadam": (lambda lr: adamx.nadam(lr), _map64(lambda x: x * (1 + 0.9 / 1.9) / (np.abs(x) + 1e-8))),
    # rho_1 = 1 < threshold: the unrectified m_hat = g.
    "radam": (lambda lr: adamx.radam(lr), _map64(lambda x: x)),
    # s_1 = (1 - b2) (b1 g)^2 + eps_root, so s_hat = b1^2 g^2 + eps_root / (1 - b2).
    "adabelief": (lambda lr: adamx.adabelief(lr),
                  _map64(lambda x: x / (np.sqrt(0.81 * x * x + 1e-16 / 1e-3) + 1e-16))),
    # v_1 = (1 - b2) g^2 from v_0 = 0: Adam's first step with eps = 1e-3.
    "yogi": (lambda lr: adamx.yogi(lr, initial_accumulator_value=0.0),
             _map64(lambda x: x / (np.abs(x) + 1e-3))),
    "lion": (lambda lr: adamx.lion(lr, weight_decay=0.0), _map64(np.sign)),
    "lamb": (lambda lr: adamx.lamb(lr), _lamb_direction),
}

_VALID_LEARNING_RATES = {
    "zero": (0.0, 0.0),
    "int_zero": (0, 0.0),
    "int": (1, 1.0),
    "np_float32": (np.float32(0.1), 0.1),
    "np_float64": (np.float64(0.1), 0.1),
    "np_int64": (np.int64(2), 2.0),
    "np_0d_array": (np.array(0.1), 0.1),
    "jnp_0d_array": (jnp.array(0.1), 0.1),
    "jnp_0d_array_bf16": (jnp.array(0.125, jnp.bfloat16), 0.125),
    "schedule": (adamx.warmup_cosine_schedule(0.05, 1.0, 10, 100), 0.05),  # value at count 0
    "constant_schedule": (adamx.constant_schedule(0.3), 0.3),
    "lambda": (lambda count: 0.2 * (count + 1), 0.2),
}


@pytest.mark.parametrize("lr_name", list(_VALID_LEARNING_RATES))
@pytest.mark.parametrize("opt", list(_OPTIMIZERS_NO_DECAY))
def test_valid_learning_rates(opt, lr_name):
  lr, lr_value = _VALID_LEARNING_RATES[lr_name]
  make, direction = _OPTIMIZERS_NO_DECAY[opt]
  tx = make(lr)
  params, grads = _params(), _grads()
  updates, state = tx.update(grads, tx.init(params), params)
  _assert_tree_close(updates, jax.tree.map(lambda d: -lr_value * d, direction(grads, params)), rtol=1e-6,
                     atol=1e-8)
  new_params = adamx.apply_updates(params, updates)
  if lr_value == 0.0:
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    _assert_tree_close(new_params, params, rtol=0, atol=0)


@pytest.mark.parametrize("lr_name", list(_VALID_LEARNING_RATES))
def test_valid_learning_rates_scale_by_learning_rate(lr_name):
  lr, lr_value = _VALID_LEARNING_RATES[lr_name]
  tx = adamx.scale_by_learning_rate(lr)
  grads = _grads()
  updates, _ = tx.update(grads, tx.init(_params()))
  _assert_tree_close(updates, jax.tree.map(lambda g: -lr_value * g, grads), rtol=1e-6, atol=0)


def test_schedule_learning_rate_advances_with_the_step_count():
  lr = adamx.warmup_cosine_schedule(0.0, 1.0, 4, 8)
  tx = adamx.scale_by_learning_rate(lr)
  state = tx.init(_params())
  seen = []
  for _ in range(6):
    updates, state = tx.update({"x": jnp.array(1.0)}, state)
    seen.append(-float(updates["x"]))
  np.testing.assert_allclose(seen, [0.0, 0.25, 0.5, 0.75, 1.0, 0.5 * (1 + math.cos(math.pi / 4))], atol=1e-6)


_VALID_BOUNDARIES = [
    {"b1": 0.0}, {"b1": 0}, {"b2": 0.0}, {"b1": np.float32(0.999), "b2": np.float64(0.9999)},
    {"b1": 1 - 1e-12}, {"eps": 0.0}, {"eps_root": 0}, {"eps": np.float32(0.0)},
    {"mu_dtype": jnp.bfloat16, "nu_dtype": "float32"}, {"mu_dtype": np.float16}, {"nu_dtype": None},
]
_VALID_BOUNDARY_FNS = ["scale_by_adam", "scale_by_amsgrad", "adam", "adamw", "amsgrad", "adamax", "nadam", "radam",
                       "adabelief", "yogi", "lion", "lamb"]

# Valid values of the arguments specific to one optimizer: (fn, kwargs, steps). RAdam rectifies only once
# rho_t >= threshold, and rho_t < t, so 6 steps reach rho_5 = 4.996 and rho_6 = 5.994 (b2 = 0.999).
_VALID_SPECIFIC = [
    ("scale_by_adamax", {"eps_mode": "max"}, 2),
    ("scale_by_adamax", {"eps_mode": "denominator"}, 2),
    ("adamax", {"eps_mode": "denominator", "weight_decay": 0.5}, 2),
    ("adamaxw", {"eps_mode": "denominator", "weight_decay": 0}, 2),
    ("scale_by_nadam", {"momentum_decay": None}, 2),
    ("scale_by_nadam", {"momentum_decay": 0}, 2),
    ("scale_by_nadam", {"momentum_decay": 0.0}, 2),
    ("scale_by_nadam", {"momentum_decay": 4e-3}, 2),
    ("scale_by_nadam", {"momentum_decay": np.float32(4e-3)}, 2),
    ("scale_by_nadam", {"momentum_decay": np.int64(0)}, 2),
    ("scale_by_nadam", {"momentum_decay": 1e3}, 2),
    ("nadam", {"momentum_decay": 4e-3, "weight_decay": 1e-2}, 2),
    ("nadamw", {"momentum_decay": 0.0, "weight_decay": 0.0}, 2),
    ("scale_by_radam", {"threshold": 4}, 6),
    ("scale_by_radam", {"threshold": 4.0}, 6),
    ("scale_by_radam", {"threshold": np.float64(4.0)}, 6),
    ("scale_by_radam", {"threshold": 5}, 6),
    ("scale_by_radam", {"threshold": 1e9}, 6),
    ("scale_by_radam", {"threshold": math.inf}, 6),
    ("scale_by_radam", {"threshold": np.float32(math.inf)}, 6),
    ("scale_by_radam", {"threshold": 4.0, "nesterov": True, "eps": 0.0}, 6),
    ("radam", {"threshold": math.inf, "weight_decay": 0.1, "decoupled_weight_decay": True}, 6),
    ("radam", {"threshold": 4, "weight_decay": 0.1, "decoupled_weight_decay": False}, 6),
    ("scale_by_yogi", {"initial_accumulator_value": 0}, 2),
    ("scale_by_yogi", {"initial_accumulator_value": 0.0, "bias_correction": False}, 2),
    ("scale_by_yogi", {"initial_accumulator_value": np.float32(1.0)}, 2),
    ("yogi", {"initial_accumulator_value": 0.5, "eps": 0.0}, 2),
    ("lion", {"weight_decay": 0}, 2),
    ("lion", {"weight_decay": np.float32(1.0), "mask": {"dense": True, "scalar": False}}, 2),
    ("scale_by_lamb", {"weight_decay": 0.1}, 2),
    ("scale_by_lamb", {"weight_decay": 0.1, "mask": lambda params: {"dense": True, "scalar": False}}, 2),
    ("lamb", {"weight_decay": 1.0, "eps": 0.0}, 2),
    ("scale_by_trust_ratio", {}, 2),
    ("scale_by_trust_ratio", {"min_norm": 1e-3}, 2),
    ("scale_by_trust_ratio", {"min_norm": 10}, 2),
    ("scale_by_trust_ratio", {"trust_coefficient": 0}, 2),
    ("scale_by_trust_ratio", {"trust_coefficient": np.float32(0.5), "eps": 1e-8}, 2),
    ("scale_by_trust_ratio", {"min_norm": 0.0, "trust_coefficient": 0.0, "eps": 0}, 2),
]


def _valid_boundary_cases():
  cases = [pytest.param(fn, kwargs, 2, id=f"{fn}-kwargs{i}") for fn in _VALID_BOUNDARY_FNS
           for i, kwargs in enumerate(_VALID_BOUNDARIES) if set(kwargs) <= set(_FACTORIES[fn][1])]
  return cases + [pytest.param(fn, kwargs, steps, id=f"{fn}-specific{i}")
                  for i, (fn, kwargs, steps) in enumerate(_VALID_SPECIFIC)]


@pytest.mark.parametrize("fn, kwargs, steps", _valid_boundary_cases())
def test_valid_boundary_hyperparameters_construct_and_step(fn, kwargs, steps):
  tx = getattr(adamx, fn)(**kwargs)
  params, grads = _params(), _grads()
  state = tx.init(params)
  for step in range(steps):
    updates, state = tx.update(_grads(step), state, params)
  assert jax.tree.structure(updates) == jax.tree.structure(grads)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
@pytest.mark.parametrize("fn, arg", [
    ("scale_by_adam", "nesterov"), ("adam", "nesterov"), ("adamw", "nesterov"),
    ("scale_by_radam", "nesterov"), ("radam", "nesterov"), ("radam", "decoupled_weight_decay"),
    ("scale_by_belief", "nesterov"), ("adabelief", "nesterov"),
    ("scale_by_yogi", "bias_correction"), ("yogi", "bias_correction"),
])
def test_valid_bool_flags(fn, arg, value):
  tx = getattr(adamx, fn)(**{arg: value})
  params = _params()
  updates, _ = tx.update(_grads(), tx.init(params), params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)


# ------------------------------------------------------------------------------------------------------------------
# Arrays and tracers are never rejected nor converted to Python bools.
# ------------------------------------------------------------------------------------------------------------------

# Builders taking a dict of hyperparameters (numbers, arrays or tracers); every one reads every hyperparameter.
_BUILDERS: dict[str, Callable[[dict[str, Any]], adamx.GradientTransformation]] = {
    "scale_by_adam": lambda h: adamx.scale_by_adam(h["b1"], h["b2"], h["eps"], h["eps_root"]),
    "scale_by_adam_nesterov": lambda h: adamx.scale_by_adam(h["b1"], h["b2"], h["eps"], h["eps_root"],
                                                            nesterov=True),
    "scale_by_amsgrad": lambda h: adamx.scale_by_amsgrad(h["b1"], h["b2"], h["eps"], h["eps_root"]),
    "adam": lambda h: adamx.adam(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], weight_decay=h["wd"]),
    "adamw": lambda h: adamx.adamw(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], h["wd"],
                                   mask={"dense": True, "scalar": False}),
    "amsgrad": lambda h: adamx.amsgrad(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], max_over="raw",
                                       weight_decay=h["wd"]),
    "chain_decoupled": lambda h: adamx.chain(adamx.scale_by_adam(h["b1"]),
                                             adamx.add_decoupled_weight_decay(h["wd"]),
                                             adamx.scale_by_learning_rate(h["lr"])),
    "chain_l2_scale": lambda h: adamx.chain(adamx.add_l2_regularization(h["wd"]), adamx.scale_by_amsgrad(),
                                            adamx.scale(h["step"])),
    "warmup_cosine_schedule": lambda h: adamx.adam(adamx.warmup_cosine_schedule(h["lr"], h["peak"], 1, 5,
                                                                                h["end"], h["exponent"])),
    "constant_schedule": lambda h: adamx.adamw(adamx.constant_schedule(h["lr"]), weight_decay=h["wd"]),
    "adamax_denominator": lambda h: adamx.adamax(h["lr"], h["b1"], h["b2"], h["eps"], eps_mode="denominator",
                                                 weight_decay=h["wd"]),
    "adamaxw": lambda h: adamx.adamaxw(h["lr"], h["b1"], h["b2"], h["eps"], h["wd"],
                                       mask={"dense": True, "scalar": False}),
    "nadam_momentum_decay": lambda h: adamx.nadam(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"],
                                                  momentum_decay=h["md"], weight_decay=h["wd"]),
    # A 3-step run never rectifies (rho_t < t); a traced threshold must still be accepted (see the vmap test).
    "radam_nesterov": lambda h: adamx.radam(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], h["thr"],
                                            nesterov=True, weight_decay=h["wd"]),
    "adabelief": lambda h: adamx.adabelief(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], nesterov=True),
    "yogi": lambda h: adamx.yogi(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], h["iav"]),
    "lion": lambda h: adamx.lion(h["lr"], h["b1"], h["b2"], h["wd"], mask={"dense": True, "scalar": False}),
    "lamb": lambda h: adamx.lamb(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], h["wd"],
                                 mask={"dense": True, "scalar": False}),
    "chain_trust_ratio": lambda h: adamx.chain(adamx.scale_by_adam(h["b1"]),
                                               adamx.scale_by_trust_ratio(h["min_norm"], h["tc"], h["eps"]),
                                               adamx.scale(h["step"])),
}

_GOOD_H = {"lr": 0.1, "b1": 0.8, "b2": 0.95, "eps": 1e-3, "eps_root": 1e-4, "wd": 0.05, "step": -0.2,
           "peak": 0.3, "end": 0.01, "exponent": 2.0, "md": 4e-3, "thr": 4.5, "iav": 1e-3, "min_norm": 1e-3,
           "tc": 0.9}


def _run(tx: adamx.GradientTransformation, steps: int = 3):
  params = _params()
  state = tx.init(params)
  for step in range(steps):
    updates, state = tx.update(_grads(step), state, params)
    params = adamx.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize("builder", list(_BUILDERS))
def test_traced_hyperparameters_under_jit(builder):
  build = _BUILDERS[builder]
  traces = []

  @jax.jit
  def run(h):
    traces.append(None)
    for v in jax.tree.leaves(h):
      assert isinstance(v, jax.core.Tracer)  # the factory really sees tracers
    return _run(build(h))[0]

  h_arrays = {k: jnp.asarray(v, jnp.float32) for k, v in _GOOD_H.items()}
  got = run(h_arrays)
  _assert_tree_close(got, _run(build(_GOOD_H))[0], rtol=1e-5, atol=1e-6)
  # New hyperparameter values reuse the compiled function and give the new numbers.
  h2 = dict(_GOOD_H, lr=0.05, b1=0.5, b2=0.9, eps=1e-2, wd=0.2, step=-0.1, peak=0.6, md=0.5, thr=6.0, iav=0.2,
            min_norm=3.0, tc=0.5)
  got2 = run({k: jnp.asarray(v, jnp.float32) for k, v in h2.items()})
  assert len(traces) == 1
  _assert_tree_close(got2, _run(build(h2))[0], rtol=1e-5, atol=1e-6)


_OUT_OF_RANGE_H = {"lr": -0.1, "b1": 1.5, "b2": -0.5, "eps": -1.0, "eps_root": math.nan, "wd": -2.0,
                   "step": math.inf, "peak": math.nan, "end": -1.0, "exponent": -3.0, "md": -1.0, "thr": 1.0,
                   "iav": -1.0, "min_norm": -1.0, "tc": math.nan}


@pytest.mark.parametrize("kind", ["jnp_0d", "np_0d", "jnp_1d", "np_1d"])
@pytest.mark.parametrize("builder", list(_BUILDERS))
def test_arrays_are_not_validated_at_construction(builder, kind):
  """Out-of-range array values are accepted by design; 1-D arrays would raise if converted to a Python bool."""
  make = {"jnp_0d": jnp.asarray, "np_0d": np.asarray,
          "jnp_1d": lambda v: jnp.asarray([v, v]), "np_1d": lambda v: np.asarray([v, v])}[kind]
  tx = _BUILDERS[builder]({k: make(v) for k, v in _OUT_OF_RANGE_H.items()})
  assert callable(tx.init) and callable(tx.update)
  if kind.endswith("0d"):  # scalar arrays also run (the numbers are garbage; no error is the point)
    params, state = _run(tx, steps=2)
    assert jax.tree.structure(params) == jax.tree.structure(_params())


@pytest.mark.parametrize("fn, kwargs", [
    ("scale_by_adam", {"b1": jnp.array(1.5)}),
    ("adamw", {"b1": jnp.array(1.5), "b2": np.array(2.0), "learning_rate": jnp.array(-1.0)}),
    ("amsgrad", {"eps": jnp.array(-1.0), "weight_decay": np.array(-1.0)}),
    ("add_l2_regularization", {"weight_decay": jnp.array(-1.0)}),
    ("scale_by_learning_rate", {"learning_rate": np.array(math.nan)}),
    ("warmup_cosine_schedule", {"init_value": jnp.array(-1.0), "peak_value": np.array(math.inf),
                                "warmup_steps": 1, "decay_steps": 2}),
    ("adamax", {"b2": jnp.array(1.0), "eps": np.array(-1.0)}),
    ("scale_by_nadam", {"momentum_decay": jnp.array(-1.0)}),
    ("nadamw", {"momentum_decay": np.array(math.nan), "weight_decay": jnp.array(-1.0)}),
    ("scale_by_radam", {"threshold": jnp.array(0.0)}),
    ("radam", {"threshold": np.array(-math.inf)}),
    ("scale_by_yogi", {"initial_accumulator_value": jnp.array(-1.0)}),
    ("lion", {"b1": jnp.array(2.0), "weight_decay": np.array(-1.0)}),
    ("scale_by_lamb", {"weight_decay": jnp.array(-1.0)}),
    ("scale_by_trust_ratio", {"min_norm": jnp.array(-1.0), "trust_coefficient": np.array(-1.0),
                              "eps": jnp.array(math.nan)}),
])
def test_out_of_range_arrays_are_accepted(fn, kwargs):
  assert getattr(adamx, fn)(**kwargs) is not None


def test_vmap_over_b1_matches_separate_runs():
  b1s = [0.0, 0.5, 0.9, 0.99]

  def final_params(b1):
    return _run(adamx.adam(learning_rate=0.1, b1=b1), steps=4)[0]

  batched = jax.vmap(final_params)(jnp.asarray(b1s, jnp.float32))
  for i, b1 in enumerate(b1s):
    separate = final_params(b1)
    _assert_tree_close(jax.tree.map(lambda x, i=i: x[i], batched), separate, rtol=1e-5, atol=1e-6)
  # b1 really matters here, so the comparison above can fail.
  assert not np.allclose(batched["dense"]["w"][0], batched["dense"]["w"][3])


_VMAP_H = {"b1": [0.1, 0.9], "b2": [0.5, 0.999], "eps": [1e-8, 1e-1], "eps_root": [0.0, 1e-3]}

# fn -> (the hyperparameters batched over, number of steps). RAdam: 6 steps so that the lane with threshold 4
# rectifies at t = 5, 6 (b2 = 0.9: rho_5 = 4.58) while the lane with threshold inf never does.
_VMAP = {
    "scale_by_amsgrad": (_VMAP_H, 3),
    "adamw": (_VMAP_H, 3),
    "nadam": ({"b1": [0.1, 0.9], "b2": [0.5, 0.999], "momentum_decay": [0.0, 0.5]}, 3),
    "radam": ({"b1": [0.1, 0.9], "b2": [0.9, 0.99], "threshold": [4.0, math.inf], "eps": [1e-8, 1e-1]}, 6),
    "yogi": ({"b1": [0.1, 0.9], "eps": [1e-3, 1e-1], "initial_accumulator_value": [1e-6, 0.5]}, 3),
}


@pytest.mark.parametrize("fn", list(_VMAP))
def test_vmap_over_all_hyperparameters(fn):
  hs, steps = _VMAP[fn]
  build = getattr(adamx, fn)

  def final_params(h):
    return _run(build(**h), steps=steps)[0]

  batched = jax.vmap(final_params)({k: jnp.asarray(v, jnp.float32) for k, v in hs.items()})
  for i in range(2):
    separate = final_params({k: v[i] for k, v in hs.items()})
    _assert_tree_close(jax.tree.map(lambda x, i=i: x[i], batched), separate, rtol=1e-5, atol=1e-6)


# hyperparameter -> (value at construction, value changed after the first step, value changed before the first
# step). initial_accumulator_value is read by init only, which has run before any change: its third value is its
# first, and changing it after the first step changes nothing.
_INJECT_VALUES = {
    "learning_rate": (0.1, 0.03, 0.2), "b1": (0.9, 0.5, 0.3), "b2": (0.99, 0.9, 0.8), "eps": (1e-6, 1e-3, 1e-4),
    "weight_decay": (0.01, 0.2, 0.5), "eps_root": (1e-8, 1e-4, 1e-6), "momentum_decay": (4e-3, 0.5, 0.1),
    "threshold": (5.0, 4.0, 4.5), "initial_accumulator_value": (1e-3, 0.5, 1e-3), "min_norm": (0.0, 3.0, 0.5),
    "trust_coefficient": (1.0, 0.5, 0.3),
}
_ADAM_HPS = ("learning_rate", "b1", "b2", "eps", "weight_decay")
_MASK = {"dense": True, "scalar": False}

# name -> (factory, static arguments, the hyperparameters injected and changed).
_INJECT = {
    "adam": (adamx.adam, {}, _ADAM_HPS),
    "adamw": (adamx.adamw, {"mask": _MASK}, _ADAM_HPS),
    "amsgrad": (adamx.amsgrad, {"max_over": "raw"}, _ADAM_HPS),
    "adamaxw": (adamx.adamaxw, {"mask": _MASK, "eps_mode": "denominator"}, _ADAM_HPS),
    "nadam": (adamx.nadam, {}, _ADAM_HPS + ("eps_root", "momentum_decay")),
    "radam": (adamx.radam, {"decoupled_weight_decay": True}, _ADAM_HPS + ("threshold",)),
    "adabelief": (adamx.adabelief, {"nesterov": True}, ("learning_rate", "b1", "b2", "eps", "eps_root")),
    "yogi": (adamx.yogi, {"bias_correction": False}, ("learning_rate", "b1", "b2", "eps",
                                                      "initial_accumulator_value")),
    "lion": (adamx.lion, {"mask": _MASK}, ("learning_rate", "b1", "b2", "weight_decay")),
    "lamb": (adamx.lamb, {"mask": _MASK}, _ADAM_HPS),
    "scale_by_trust_ratio": (adamx.scale_by_trust_ratio, {}, ("min_norm", "trust_coefficient", "eps")),
}


def _inject_values(names: tuple[str, ...], column: int) -> dict[str, float]:
  return {k: _INJECT_VALUES[k][column] for k in names}


@pytest.mark.parametrize("name", list(_INJECT))
def test_inject_hyperparams_changes_without_recompiling(name):
  factory, static, names = _INJECT[name]
  old, new = _inject_values(names, 0), _inject_values(names, 1)
  tx = optax.inject_hyperparams(factory)(**old, **static)
  traces = []

  @jax.jit
  def step(grads, state, params):
    traces.append(None)
    updates, state = tx.update(grads, state, params)
    return adamx.apply_updates(params, updates), updates, state

  params = _params()
  state = tx.init(params)
  params1, updates1, state = step(_grads(0), state, params)

  # Step 1 equals a fresh optimizer with the old values.
  ref_tx = factory(**old, **static)
  ref_updates1, ref_state1 = ref_tx.update(_grads(0), ref_tx.init(params), params)
  _assert_tree_close(updates1, ref_updates1)
  _assert_tree_close(state.inner_state, ref_state1)

  # Change every hyperparameter in the state; step 2 reuses the compiled step.
  state.hyperparams.update({k: jnp.asarray(v, jnp.float32) for k, v in new.items()})
  params2, updates2, state = step(_grads(1), state, params1)
  assert len(traces) == 1
  for k, v in new.items():
    np.testing.assert_allclose(state.hyperparams[k], v, rtol=1e-7)

  # Step 2 equals a freshly constructed optimizer with the new values applied to the same moments.
  fresh = factory(**new, **static)
  ref_updates2, ref_state2 = fresh.update(_grads(1), ref_state1, params1)
  _assert_tree_close(updates2, ref_updates2)
  _assert_tree_close(state.inner_state, ref_state2)
  # ... and differs from continuing with the old values (so the change had an effect).
  stale_updates2, _ = ref_tx.update(_grads(1), ref_state1, params1)
  assert not np.allclose(updates2["dense"]["w"], stale_updates2["dense"]["w"], rtol=1e-3)

  # Out-of-range array values in the state are not validated (arrays never are) and do not retrace either.
  bad = "b1" if "b1" in names else names[0]
  state.hyperparams[bad] = jnp.asarray(1.5 if bad == "b1" else -1.0, jnp.float32)
  step(_grads(2), state, params2)
  assert len(traces) == 1


@pytest.mark.parametrize("name", list(_INJECT))
def test_inject_hyperparams_changed_before_the_first_step_equals_fresh_optimizer(name):
  factory, static, names = _INJECT[name]
  tx = optax.inject_hyperparams(factory)(**_inject_values(names, 0), **static)
  params = _params()
  state = tx.init(params)
  new = _inject_values(names, 2)
  state.hyperparams.update({k: jnp.asarray(v, jnp.float32) for k, v in new.items()})
  fresh = factory(**new, **static)
  fresh_state = fresh.init(params)
  for step in range(2):
    updates, state = tx.update(_grads(step), state, params)
    ref_updates, fresh_state = fresh.update(_grads(step), fresh_state, params)
    _assert_tree_close(updates, ref_updates)
  _assert_tree_close(state.inner_state, fresh_state)


def test_inject_hyperparams_schedule_learning_rate():
  lr = adamx.warmup_cosine_schedule(0.0, 0.1, 2, 6)
  tx = optax.inject_hyperparams(adamx.adamw)(learning_rate=lr, weight_decay=0.1)
  ref = adamx.adamw(learning_rate=lr, weight_decay=0.1)
  params = _params()
  state, ref_state = tx.init(params), ref.init(params)
  for step in range(4):
    updates, state = tx.update(_grads(step), state, params)
    ref_updates, ref_state = ref.update(_grads(step), ref_state, params)
    _assert_tree_close(updates, ref_updates)
    params = adamx.apply_updates(params, updates)


def test_inject_hyperparams_adam_without_params_explains_and_both_remedies_work():
  """optax.inject_hyperparams passes the *default* weight_decay=0.0 as an array, so adamx.adam can no longer see
  that the coupled L2 term is zero and needs params (optax.adam has no decay and does not). The error says why and
  how to fix it; both remedies (pass params, or keep weight_decay static) give optax's numbers."""
  grads = _grads()
  params = _params()
  ref = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
  ref_updates, _ = ref.update(grads, ref.init(params))
  tx = optax.inject_hyperparams(adamx.adam)(learning_rate=0.1)
  with pytest.raises(ValueError, match=r"adamx\.add_l2_regularization: params are required.*inject_hyperparams.*"
                                       r"static_args=\('weight_decay',\)"):
    tx.update(grads, tx.init(params))
  with_params, _ = tx.update(grads, tx.init(params), params)
  _assert_tree_close(with_params, ref_updates, rtol=1e-5)
  static = optax.inject_hyperparams(adamx.adam, static_args=("weight_decay",))(learning_rate=0.1)
  without_params, _ = static.update(grads, static.init(params))
  _assert_tree_close(without_params, ref_updates, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# Trees that do not match: update, apply_updates, masks; integer params at init; missing params.
# ------------------------------------------------------------------------------------------------------------------


def _mismatched_grads() -> dict[str, Any]:
  g = _grads()
  return {
      "extra_key": {**g, "extra": jnp.array(1.0)},
      "missing_key": {"dense": g["dense"]},
      "missing_nested_key": {"dense": {"w": g["dense"]["w"]}, "scalar": g["scalar"]},
      "different_nesting": {"dense": [g["dense"]["w"], g["dense"]["b"]], "scalar": g["scalar"]},
      "flattened": {"w": g["dense"]["w"], "b": g["dense"]["b"], "scalar": g["scalar"]},
      "leaf_instead_of_subtree": {"dense": g["dense"]["w"], "scalar": g["scalar"]},
      "list_of_leaves": jax.tree.leaves(g),
      "different_leaf_shape": {"dense": {"w": jnp.ones((2, 3)), "b": g["dense"]["b"]}, "scalar": g["scalar"]},
      "transposed_leaf_shape": {"dense": {"w": g["dense"]["w"], "b": g["dense"]["b"][:, None]},
                                "scalar": g["scalar"]},
      "scalar_vs_vector": {"dense": g["dense"], "scalar": jnp.ones((1,))},
  }


# (optimizer, the adamx functions whose name may appear in the error: the optimizer or the transform that checks).
_UPDATE_OPTIMIZERS: dict[str, tuple[Callable[[], adamx.GradientTransformation], str]] = {
    "scale_by_adam": (adamx.scale_by_adam, "scale_by_adam"),
    "scale_by_amsgrad": (adamx.scale_by_amsgrad, "scale_by_amsgrad"),
    "adam": (adamx.adam, "adam|scale_by_adam"),
    "adam_l2": (lambda: adamx.adam(weight_decay=1e-2), "adam|add_l2_regularization|scale_by_adam"),
    "adamw": (adamx.adamw, "adamw|scale_by_adam|add_decoupled_weight_decay"),
    "adamw_schedule": (lambda: adamx.adamw(adamx.warmup_cosine_schedule(0.0, 1.0, 2, 5)),
                       "adamw|scale_by_adam|add_decoupled_weight_decay"),
    "amsgrad": (adamx.amsgrad, "amsgrad|scale_by_amsgrad"),
    "amsgrad_l2": (lambda: adamx.amsgrad(weight_decay=1e-2), "amsgrad|add_l2_regularization|scale_by_amsgrad"),
    "decoupled": (lambda: adamx.add_decoupled_weight_decay(1e-2), "add_decoupled_weight_decay"),
    "l2": (lambda: adamx.add_l2_regularization(1e-2), "add_l2_regularization"),
    "adamaxw": (adamx.adamaxw, "adamaxw|scale_by_adamax|add_decoupled_weight_decay"),
    "nadam_momentum_decay": (lambda: adamx.nadam(momentum_decay=4e-3), "nadam|scale_by_nadam"),
    "radam_l2": (lambda: adamx.radam(weight_decay=1e-2), "radam|add_l2_regularization|scale_by_radam"),
    "adabelief": (adamx.adabelief, "adabelief|scale_by_belief"),
    "yogi": (adamx.yogi, "yogi|scale_by_yogi"),
    "lion": (adamx.lion, "lion|scale_by_lion|add_decoupled_weight_decay"),
    "lamb": (adamx.lamb, "lamb|scale_by_lamb"),
    "scale_by_trust_ratio": (adamx.scale_by_trust_ratio, "scale_by_trust_ratio"),
}

_MISMATCH_REGEX_WORDS = r"(?s)(?=.*\b(?:structure|shapes?)\b)(?=.*match)"


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("mismatch", list(_mismatched_grads()))
@pytest.mark.parametrize("opt", list(_UPDATE_OPTIMIZERS))
def test_update_with_mismatched_gradient_tree(opt, mismatch, jit):
  make, names = _UPDATE_OPTIMIZERS[opt]
  tx = make()
  params = _params()
  state = tx.init(params)
  grads = _mismatched_grads()[mismatch]
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(ValueError, match=_message(names)) as excinfo:
    update(grads, state, params)
  assert re.search(_MISMATCH_REGEX_WORDS, str(excinfo.value)), str(excinfo.value)


@pytest.mark.parametrize("mismatch", list(_mismatched_grads()))
def test_update_after_some_steps_with_mismatched_tree(mismatch):
  """The check holds for a state that has been updated, not only a fresh one."""
  tx = adamx.amsgrad(max_over="raw")
  params = _params()
  state = tx.init(params)
  _, state = tx.update(_grads(0), state, params)
  with pytest.raises(ValueError, match=_message("amsgrad|scale_by_amsgrad")) as excinfo:
    tx.update(_mismatched_grads()[mismatch], state, params)
  assert re.search(_MISMATCH_REGEX_WORDS, str(excinfo.value)), str(excinfo.value)


@pytest.mark.parametrize("mismatch", list(_mismatched_grads()))
def test_apply_updates_with_mismatched_trees(mismatch):
  with pytest.raises(ValueError, match=_message("apply_updates")) as excinfo:
    adamx.apply_updates(_params(), _mismatched_grads()[mismatch])
  assert re.search(_MISMATCH_REGEX_WORDS, str(excinfo.value)), str(excinfo.value)
  with pytest.raises(ValueError, match=_message("apply_updates")):
    jax.jit(adamx.apply_updates)(_params(), _mismatched_grads()[mismatch])


def test_apply_updates_matching_trees_still_work():
  params = _params()
  new = adamx.apply_updates(params, _grads())
  _assert_tree_close(new, jax.tree.map(jnp.add, params, _grads()), rtol=0, atol=0)


@pytest.mark.parametrize("make, names", [
    (adamx.adamw, "adamw|add_decoupled_weight_decay"),
    (lambda: adamx.adamw(mask={"dense": True, "scalar": False}), "adamw|add_decoupled_weight_decay"),
    (lambda: adamx.adam(weight_decay=1e-2), "adam|add_l2_regularization"),
    (lambda: adamx.amsgrad(weight_decay=1e-2), "amsgrad|add_l2_regularization"),
    (lambda: adamx.add_decoupled_weight_decay(1e-2), "add_decoupled_weight_decay"),
    (lambda: adamx.add_l2_regularization(1e-2), "add_l2_regularization"),
    (lambda: adamx.adamax(weight_decay=1e-2), "adamax|add_l2_regularization"),
    (adamx.adamaxw, "adamaxw|add_decoupled_weight_decay"),
    (lambda: adamx.nadam(weight_decay=1e-2), "nadam|add_l2_regularization"),
    (adamx.nadamw, "nadamw|add_decoupled_weight_decay"),
    (lambda: adamx.radam(weight_decay=1e-2), "radam|add_l2_regularization"),
    (lambda: adamx.radam(weight_decay=1e-2, decoupled_weight_decay=True), "radam|add_decoupled_weight_decay"),
    (adamx.lion, "lion|add_decoupled_weight_decay"),  # weight_decay = 1e-3 by default
    (lambda: adamx.lion(mask={"dense": True, "scalar": False}), "lion|add_decoupled_weight_decay"),
    # The trust ratio reads the params' norms, with or without weight decay.
    (adamx.lamb, "lamb|scale_by_lamb"),
    (lambda: adamx.lamb(weight_decay=0.1), "lamb|scale_by_lamb"),
    (adamx.scale_by_lamb, "scale_by_lamb"),
    (adamx.scale_by_trust_ratio, "scale_by_trust_ratio"),
    (lambda: adamx.chain(adamx.scale_by_adam(), adamx.scale_by_trust_ratio()), "scale_by_trust_ratio"),
])
def test_update_without_params_when_params_are_needed(make, names):
  tx = make()
  state = tx.init(_params())
  with pytest.raises(ValueError, match=_message(names, "params")):
    tx.update(_grads(), state)
  with pytest.raises(ValueError, match=_message(names, "params")):
    tx.update(_grads(), state, None)


@pytest.mark.parametrize("make", [
    lambda: adamx.adam(), lambda: adamx.adamw(weight_decay=0.0), lambda: adamx.amsgrad(), adamx.scale_by_adam,
    adamx.adamax, lambda: adamx.adamaxw(weight_decay=0.0), adamx.nadam, lambda: adamx.nadamw(weight_decay=0),
    adamx.radam, lambda: adamx.radam(decoupled_weight_decay=True), adamx.adabelief, adamx.yogi,
    lambda: adamx.lion(weight_decay=0.0), adamx.scale_by_adamax, adamx.scale_by_nadam, adamx.scale_by_radam,
    adamx.scale_by_belief, adamx.scale_by_yogi, adamx.scale_by_lion,
])
def test_update_without_params_is_fine_when_params_are_not_needed(make):
  tx = make()
  updates, _ = tx.update(_grads(), tx.init(_params()))
  assert jax.tree.structure(updates) == jax.tree.structure(_grads())


_INT_PARAMS = {
    "int32": ({"dense": {"w": jnp.ones((2, 2)), "idx": jnp.arange(3)}}, "['dense']['idx']", "int32"),
    "uint8_numpy": ({"w": jnp.ones(2), "table": np.zeros(4, np.uint8)}, "['table']", "uint8"),
    "bool": ({"w": jnp.ones(2), "flag": jnp.array([True, False])}, "['flag']", "bool"),
    "python_int": ({"w": jnp.ones(2), "n": 3}, "['n']", "int"),
    "in_list": ([jnp.ones(2), jnp.zeros(3, jnp.int8)], "[1]", "int8"),
    "root": (jnp.arange(4), "", "int32"),
}


# optimizer -> the transform that holds its state.
_SCALE_BY = {"adam": "scale_by_adam", "adamw": "scale_by_adam", "amsgrad": "scale_by_amsgrad",
             "adamax": "scale_by_adamax", "adamaxw": "scale_by_adamax", "nadam": "scale_by_nadam",
             "nadamw": "scale_by_nadam", "radam": "scale_by_radam", "adabelief": "scale_by_belief",
             "yogi": "scale_by_yogi", "lion": "scale_by_lion", "lamb": "scale_by_lamb"}


@pytest.mark.parametrize("case", list(_INT_PARAMS))
@pytest.mark.parametrize("fn", sorted(set(_SCALE_BY) | set(_SCALE_BY.values()), key=list(_FACTORIES).index))
def test_integer_params_raise_at_init_naming_the_leaf(fn, case):
  params, path, dtype = _INT_PARAMS[case]
  names = f"{fn}|{_SCALE_BY[fn]}" if fn in _SCALE_BY else fn
  # A non-zero weight_decay, so that a coupled L2 stage in front of the moments is really there.
  tx = getattr(adamx, fn)(weight_decay=1e-2) if "weight_decay" in _FACTORIES[fn][1] else getattr(adamx, fn)()
  with pytest.raises(TypeError, match=_message(names, fragments=(path, dtype))):
    tx.init(params)


# Masks for _params() = {"dense": {"w", "b"}, "scalar"} that do not have its structure (nor a prefix of it).
_BAD_MASKS = {
    "missing_key": {"dense": True},
    "extra_key": {"dense": True, "scalar": False, "extra": True},
    "missing_nested_key": {"dense": {"w": True}, "scalar": False},
    "deeper_than_params": {"dense": {"w": {"x": True}, "b": False}, "scalar": False},
    "list_instead_of_dict": [True, False],
    "callable_wrong_structure": lambda params: [True, False, True],
    "callable_missing_key": lambda params: {"dense": True},
    "wrong_leaf_shape": {"dense": {"w": jnp.array([True, False, True]), "b": False}, "scalar": False},
}


# fn taking a mask -> the adamx functions whose name may appear in a mask error at update.
_MASK_NAMES = {"adamw": "adamw|add_decoupled_weight_decay", "add_decoupled_weight_decay": "add_decoupled_weight_decay",
               "add_l2_regularization": "add_l2_regularization", "adamaxw": "adamaxw|add_decoupled_weight_decay",
               "nadamw": "nadamw|add_decoupled_weight_decay", "lion": "lion|add_decoupled_weight_decay",
               "lamb": "lamb|scale_by_lamb", "scale_by_lamb": "scale_by_lamb"}


def _with_mask(fn: str, mask: Any) -> adamx.GradientTransformation:
  if fn.startswith("add_"):
    return getattr(adamx, fn)(0.1, mask=mask)
  return getattr(adamx, fn)(weight_decay=0.1, mask=mask)


@pytest.mark.parametrize("mask_name", list(_BAD_MASKS))
@pytest.mark.parametrize("fn", list(_MASK_NAMES))
def test_mask_with_wrong_structure(fn, mask_name):
  mask = _BAD_MASKS[mask_name]
  tx = _with_mask(fn, mask)
  params = _params()
  state = tx.init(params)
  names = _MASK_NAMES[fn]
  with pytest.raises(ValueError, match=_message(names, "mask")) as excinfo:
    tx.update(_grads(), state, params)
  assert re.search(r"\b(?:structure|shapes?)\b", str(excinfo.value)), str(excinfo.value)


@pytest.mark.parametrize("fn", [fn for fn in _MASK_NAMES if fn != "add_l2_regularization"])
def test_mask_with_non_bool_leaves(fn):
  """A mask leaf that is not a bool (here a string) gets an adamx error naming ``mask`` and the leaf, not a
  jnp.where error: at construction for a mask tree, at update for a callable mask."""
  with pytest.raises(TypeError, match=_message(fn, "mask", fragments=("['dense']", "'yes'"))):
    _with_mask(fn, {"dense": "yes", "scalar": False})
  tx = _with_mask(fn, lambda params: {"dense": "yes", "scalar": False})
  params = _params()
  with pytest.raises(TypeError, match=_message(_MASK_NAMES[fn], "mask", fragments=("'yes'",))):
    tx.update(_grads(), tx.init(params), params)


@pytest.mark.parametrize("mask, decayed", [
    ({"dense": True, "scalar": False}, {"dense": {"w": True, "b": True}, "scalar": False}),  # a prefix
    ({"dense": {"w": True, "b": False}, "scalar": True}, {"dense": {"w": True, "b": False}, "scalar": True}),
    (lambda params: {"dense": {"w": False, "b": True}, "scalar": False},
     {"dense": {"w": False, "b": True}, "scalar": False}),
    ({"dense": {"w": jnp.array([[True, False], [False, True]]), "b": False}, "scalar": jnp.array(False)},
     {"dense": {"w": np.array([[True, False], [False, True]]), "b": False}, "scalar": False}),
])
@pytest.mark.parametrize("fn", ["add_decoupled_weight_decay", "add_l2_regularization"])
def test_valid_masks_decay_only_the_selected_entries(fn, mask, decayed):
  """Sanity check for the mask tests above: a matching mask is accepted and does select."""
  params, grads = _params(), _grads()
  tx = getattr(adamx, fn)(0.5, mask)
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = jax.tree.map(lambda d, g, p: np.where(d, g + 0.5 * p, g), decayed, grads, params)
  _assert_tree_close(updates, expected, rtol=1e-6, atol=0)
