"""The registry: one table of every adamx optimizer, read by the tests, ``python -m adamx check`` and the docs.

Each :class:`OptimizerSpec` names the factory and its ``scale_by_`` transform, the hyperparameter ranges worth
sampling, the keyword variants worth covering, capabilities, and how to build the same optimizer in optax and in
PyTorch. Counterpart builders receive the ``optax``/``torch`` module as an argument, so importing the registry
imports neither. A builder returns ``None`` when a configuration has no counterpart in that library.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np

from adamx._base import GradientTransformation
from adamx.optimizers import _adabelief, _adam, _adamax, _lamb, _lion, _nadam, _radam, _yogi

#: ``name -> (low, high, log_uniform)`` ranges for random hyperparameters, shared by the Adam family.
ADAM_SPACE = MappingProxyType({
    "learning_rate": (1e-4, 3e-2, True),
    "b1": (0.5, 0.99, False),
    "b2": (0.9, 0.9999, False),
    "eps": (1e-10, 1e-6, True),
})


_ADAM_TORCH_STATE = MappingProxyType({"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"})


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """One optimizer: how to build it, what to sample, what it supports, and its counterparts.

  Attributes:
    name: public name, ``adamx.<name>``.
    factory: the optimizer, ``factory(learning_rate=..., **kwargs)``.
    scale_by: its ``scale_by_`` transform (no learning rate).
    space: ranges of the hyperparameters sampled by :meth:`sample`.
    variants: keyword sets that select a convention (each is checked on its own).
    supports_complex: whether complex parameters are supported.
    optax: ``optax(optax_module, kwargs) -> optax transform or None``.
    torch: ``torch(torch_module, kwargs) -> (optimizer class, optimizer kwargs) or None``.
    torch_state: adamx state field -> the name of the same quantity in the torch optimizer's per-param state.
  """

  name: str
  factory: Callable[..., GradientTransformation]
  scale_by: Callable[..., GradientTransformation]
  space: Mapping[str, tuple[float, float, bool]]
  variants: tuple[Mapping[str, Any], ...] = ({},)
  supports_complex: bool = True
  optax: Callable[[ModuleType, dict[str, Any]], Any] | None = None
  torch: Callable[[ModuleType, dict[str, Any]], tuple[type, dict[str, Any]] | None] | None = None
  torch_state: Mapping[str, str] = dataclasses.field(default_factory=lambda: _ADAM_TORCH_STATE)

  def defaults(self) -> dict[str, Any]:
    """The factory's keyword defaults."""
    return {k: p.default for k, p in inspect.signature(self.factory).parameters.items()
            if p.default is not inspect.Parameter.empty}

  def full_kwargs(self, **kwargs: Any) -> dict[str, Any]:
    """The factory's defaults updated with ``kwargs`` (what counterpart builders receive)."""
    unknown = set(kwargs) - set(self.defaults())
    if unknown:
      raise TypeError(f"adamx.registry: {self.name} has no argument(s) {sorted(unknown)}")
    return {**self.defaults(), **kwargs}

  def sample(self, rng: np.random.Generator) -> dict[str, float]:
    """Random hyperparameters from :attr:`space`."""
    out = {}
    for k, (low, high, log) in self.space.items():
      out[k] = float(math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high))
    return out


def _plain_dtypes(kw: dict[str, Any]) -> bool:
  return kw.get("mu_dtype") is None and kw.get("nu_dtype") is None


def _optax_moment_kwargs(kw: dict[str, Any]) -> dict[str, Any] | None:
  if kw["nu_dtype"] is not None:  # optax has no nu_dtype
    return None
  return dict(b1=kw["b1"], b2=kw["b2"], eps=kw["eps"], eps_root=kw["eps_root"], mu_dtype=kw["mu_dtype"])


def _with_optax_l2(optax: ModuleType, kw: dict[str, Any], tx: Any) -> Any:
  return optax.chain(optax.add_decayed_weights(kw["weight_decay"]), tx) if kw["weight_decay"] else tx


def _optax_adam(optax: ModuleType, kw: dict[str, Any]) -> Any:
  m = _optax_moment_kwargs(kw)
  return None if m is None else _with_optax_l2(optax, kw, optax.adam(kw["learning_rate"], nesterov=kw["nesterov"], **m))


def _optax_adamw(optax: ModuleType, kw: dict[str, Any]) -> Any:
  m = _optax_moment_kwargs(kw)
  if m is None:
    return None
  return optax.adamw(kw["learning_rate"], weight_decay=kw["weight_decay"], mask=kw["mask"], nesterov=kw["nesterov"],
                     **m)


def _optax_amsgrad(optax: ModuleType, kw: dict[str, Any]) -> Any:
  m = _optax_moment_kwargs(kw)
  if m is None or kw["max_over"] != "corrected":
    return None
  return _with_optax_l2(optax, kw, optax.amsgrad(kw["learning_rate"], **m))


def _optax_adamax(optax: ModuleType, kw: dict[str, Any]) -> Any:
  if kw["eps_mode"] != "max" or not _plain_dtypes(kw):
    return None
  return _with_optax_l2(optax, kw, optax.adamax(kw["learning_rate"], b1=kw["b1"], b2=kw["b2"], eps=kw["eps"]))


def _optax_adamaxw(optax: ModuleType, kw: dict[str, Any]) -> Any:
  if kw["eps_mode"] != "max" or not _plain_dtypes(kw):
    return None
  return optax.adamaxw(kw["learning_rate"], b1=kw["b1"], b2=kw["b2"], eps=kw["eps"], weight_decay=kw["weight_decay"],
                       mask=kw["mask"])


def _optax_nadam(optax: ModuleType, kw: dict[str, Any]) -> Any:
  m = _optax_moment_kwargs(kw)
  if m is None or kw["momentum_decay"] is not None:
    return None
  return _with_optax_l2(optax, kw, optax.nadam(kw["learning_rate"], **m))


def _optax_nadamw(optax: ModuleType, kw: dict[str, Any]) -> Any:
  m = _optax_moment_kwargs(kw)
  if m is None or kw["momentum_decay"] is not None:
    return None
  return optax.nadamw(kw["learning_rate"], weight_decay=kw["weight_decay"], mask=kw["mask"], **m)


def _optax_radam(optax: ModuleType, kw: dict[str, Any]) -> Any:
  if not _plain_dtypes(kw):
    return None
  scaler = optax.scale_by_radam(kw["b1"], kw["b2"], kw["eps"], kw["eps_root"], kw["threshold"],
                                nesterov=kw["nesterov"])
  if kw["decoupled_weight_decay"]:
    return optax.chain(scaler, optax.add_decayed_weights(kw["weight_decay"]),
                       optax.scale_by_learning_rate(kw["learning_rate"]))
  return _with_optax_l2(optax, kw, optax.chain(scaler, optax.scale_by_learning_rate(kw["learning_rate"])))


def _optax_adabelief(optax: ModuleType, kw: dict[str, Any]) -> Any:
  if not _plain_dtypes(kw):
    return None
  return optax.adabelief(kw["learning_rate"], b1=kw["b1"], b2=kw["b2"], eps=kw["eps"], eps_root=kw["eps_root"],
                         nesterov=kw["nesterov"])


def _optax_yogi(optax: ModuleType, kw: dict[str, Any]) -> Any:
  if not kw["bias_correction"] or not _plain_dtypes(kw):
    return None
  return optax.chain(optax.scale_by_yogi(kw["b1"], kw["b2"], kw["eps"], kw["eps_root"],
                                         kw["initial_accumulator_value"]),
                     optax.scale_by_learning_rate(kw["learning_rate"]))


def _optax_lion(optax: ModuleType, kw: dict[str, Any]) -> Any:
  return optax.lion(kw["learning_rate"], b1=kw["b1"], b2=kw["b2"], mu_dtype=kw["mu_dtype"],
                    weight_decay=kw["weight_decay"], mask=kw["mask"])


def _optax_lamb(optax: ModuleType, kw: dict[str, Any]) -> Any:
  if not _plain_dtypes(kw):
    return None
  return optax.lamb(kw["learning_rate"], b1=kw["b1"], b2=kw["b2"], eps=kw["eps"], eps_root=kw["eps_root"],
                    weight_decay=kw["weight_decay"], mask=kw["mask"])


def _torch_plain(kw: dict[str, Any]) -> bool:
  """Whether ``kw`` is expressible in ``torch.optim``: constant rate, no eps_root, default dtypes, no Nesterov."""
  return (not callable(kw["learning_rate"]) and kw.get("eps_root", 0.0) == 0 and _plain_dtypes(kw)
          and not kw.get("nesterov", False) and kw.get("mask") is None)


def _torch_kwargs(kw: dict[str, Any], **extra: Any) -> dict[str, Any]:
  return dict(lr=kw["learning_rate"], betas=(kw["b1"], kw["b2"]), eps=kw["eps"], weight_decay=kw["weight_decay"],
              **extra)


def _torch_adam(torch: ModuleType, kw: dict[str, Any]):
  return (torch.optim.Adam, _torch_kwargs(kw)) if _torch_plain(kw) else None


def _torch_adamw(torch: ModuleType, kw: dict[str, Any]):
  return (torch.optim.AdamW, _torch_kwargs(kw)) if _torch_plain(kw) else None


def _torch_amsgrad(torch: ModuleType, kw: dict[str, Any]):
  if not _torch_plain(kw) or kw["max_over"] != "raw":
    return None
  return torch.optim.Adam, _torch_kwargs(kw, amsgrad=True)


def _torch_adamax(torch: ModuleType, kw: dict[str, Any]):
  if not _torch_plain(kw) or kw["eps_mode"] != "max":
    return None
  return torch.optim.Adamax, _torch_kwargs(kw)


def _torch_nadam(torch: ModuleType, kw: dict[str, Any], decoupled: bool = False):
  if not _torch_plain(kw) or kw["momentum_decay"] is None:
    return None
  return torch.optim.NAdam, _torch_kwargs(kw, momentum_decay=kw["momentum_decay"], decoupled_weight_decay=decoupled)


def _torch_nadamw(torch: ModuleType, kw: dict[str, Any]):
  return _torch_nadam(torch, kw, decoupled=True)


def _torch_radam(torch: ModuleType, kw: dict[str, Any]):
  if not _torch_plain(kw) or kw["threshold"] != 5.0:
    return None
  return torch.optim.RAdam, _torch_kwargs(kw, decoupled_weight_decay=kw["decoupled_weight_decay"])


_L2_SPACE = MappingProxyType({**ADAM_SPACE, "weight_decay": (0.0, 0.1, False)})
_LION_SPACE = MappingProxyType({k: ADAM_SPACE[k] for k in ("learning_rate", "b1", "b2")}
                               | {"weight_decay": (0.0, 0.1, False)})

OPTIMIZERS: tuple[OptimizerSpec, ...] = (
    OptimizerSpec("adam", _adam.adam, _adam.scale_by_adam, _L2_SPACE,
                  variants=({}, {"nesterov": True}), optax=_optax_adam, torch=_torch_adam),
    OptimizerSpec("adamw", _adam.adamw, _adam.scale_by_adam, _L2_SPACE,
                  variants=({}, {"nesterov": True}), optax=_optax_adamw, torch=_torch_adamw),
    OptimizerSpec("amsgrad", _adam.amsgrad, _adam.scale_by_amsgrad, _L2_SPACE,
                  variants=({"max_over": "corrected"}, {"max_over": "raw"}), optax=_optax_amsgrad,
                  torch=_torch_amsgrad),
    OptimizerSpec("adamax", _adamax.adamax, _adamax.scale_by_adamax, _L2_SPACE,
                  variants=({"eps_mode": "max"}, {"eps_mode": "denominator"}), optax=_optax_adamax,
                  torch=_torch_adamax, torch_state=MappingProxyType({"mu": "exp_avg", "nu": "exp_inf"})),
    OptimizerSpec("adamaxw", _adamax.adamaxw, _adamax.scale_by_adamax, _L2_SPACE,
                  variants=({"eps_mode": "max"}, {"eps_mode": "denominator"}), optax=_optax_adamaxw),
    OptimizerSpec("nadam", _nadam.nadam, _nadam.scale_by_nadam, _L2_SPACE,
                  variants=({"momentum_decay": None}, {"momentum_decay": 4e-3}), optax=_optax_nadam,
                  torch=_torch_nadam),
    OptimizerSpec("nadamw", _nadam.nadamw, _nadam.scale_by_nadam, _L2_SPACE,
                  variants=({"momentum_decay": None}, {"momentum_decay": 4e-3}), optax=_optax_nadamw,
                  torch=_torch_nadamw),
    OptimizerSpec("radam", _radam.radam, _radam.scale_by_radam, _L2_SPACE,
                  variants=({}, {"nesterov": True}, {"decoupled_weight_decay": True}), optax=_optax_radam,
                  torch=_torch_radam),
    OptimizerSpec("adabelief", _adabelief.adabelief, _adabelief.scale_by_belief, ADAM_SPACE,
                  variants=({}, {"nesterov": True}), optax=_optax_adabelief),
    OptimizerSpec("yogi", _yogi.yogi, _yogi.scale_by_yogi, ADAM_SPACE,
                  variants=({"bias_correction": True}, {"bias_correction": False}), optax=_optax_yogi),
    OptimizerSpec("lion", _lion.lion, _lion.scale_by_lion, _LION_SPACE, optax=_optax_lion),
    OptimizerSpec("lamb", _lamb.lamb, _lamb.scale_by_lamb, _L2_SPACE, optax=_optax_lamb),
)


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  """A schedule with a counterpart of the same numbers in optax, and a representative configuration.

  Attributes:
    name: public name, ``adamx.<name>``.
    kwargs: the configuration compared.
    optax: the name of the optax schedule taking the same arguments.
    steps: counts ``0 .. steps - 1`` are compared (well past the schedule's end).
  """

  name: str
  kwargs: Mapping[str, Any]
  optax: str
  steps: int


SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("constant_schedule", MappingProxyType(dict(value=3e-4)), "constant_schedule", 10),
    ScheduleSpec("linear_schedule", MappingProxyType(dict(init_value=1e-3, end_value=1e-5, transition_steps=500,
                                                          transition_begin=100)), "linear_schedule", 800),
    ScheduleSpec("polynomial_schedule", MappingProxyType(dict(init_value=1e-3, end_value=1e-5, power=2.0,
                                                              transition_steps=500)), "polynomial_schedule", 800),
    ScheduleSpec("exponential_decay", MappingProxyType(dict(init_value=1e-3, transition_steps=50, decay_rate=0.5,
                                                            staircase=True, end_value=1e-5)),
                 "exponential_decay", 800),
    ScheduleSpec("cosine_decay_schedule", MappingProxyType(dict(init_value=1e-3, decay_steps=500, alpha=0.1)),
                 "cosine_decay_schedule", 800),
    ScheduleSpec("warmup_cosine_schedule", MappingProxyType(dict(init_value=0.0, peak_value=1e-3, warmup_steps=50,
                                                                 decay_steps=500, end_value=1e-5)),
                 "warmup_cosine_decay_schedule", 800),
    ScheduleSpec("warmup_constant_schedule", MappingProxyType(dict(init_value=0.0, peak_value=1e-3,
                                                                   warmup_steps=50)),
                 "warmup_constant_schedule", 200),
    ScheduleSpec("piecewise_constant_schedule", MappingProxyType(dict(init_value=1e-3,
                                                                      boundaries_and_scales={200: 0.1, 400: 0.1})),
                 "piecewise_constant_schedule", 600),
    ScheduleSpec("cosine_onecycle_schedule", MappingProxyType(dict(transition_steps=500, peak_value=1e-3)),
                 "cosine_onecycle_schedule", 800),
    ScheduleSpec("linear_onecycle_schedule", MappingProxyType(dict(transition_steps=500, peak_value=1e-3)),
                 "linear_onecycle_schedule", 800),
)


def get(name: str) -> OptimizerSpec:
  """The spec of optimizer ``name``; a KeyError lists the known names."""
  for spec in OPTIMIZERS:
    if spec.name == name:
      return spec
  raise KeyError(f"adamx.registry: no optimizer {name!r}; known: {', '.join(s.name for s in OPTIMIZERS)}")


def get_schedule(name: str) -> ScheduleSpec:
  """The spec of schedule ``name``; a KeyError lists the known names."""
  for spec in SCHEDULES:
    if spec.name == name:
      return spec
  raise KeyError(f"adamx.registry: no schedule {name!r}; known: {', '.join(s.name for s in SCHEDULES)}")
