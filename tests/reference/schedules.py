"""Float64 references for the schedules that neither optax nor PyTorch has, written from their sources.

* Warmup-stable-decay with the ``1-sqrt``, linear and cosine cooldowns: Hägele et al. 2024, "Scaling Laws and
  Compute-Optimal Training Beyond Fixed Training Durations" (arXiv:2405.18392): a linear warmup, a constant learning
  rate, and a cooldown over the last ``N_decay`` steps, ``eta(n) = eta_max * (1 - sqrt((n - N_0) / N_decay))`` for
  the (1-sqrt) cooldown. The authors' code (``epfml/schedules-and-scaling``, ``src/optim/utils.py::wsd_schedule``)
  writes each cooldown as a multiplier ``final + (1 - final) * shape(progress)`` with ``final = end / peak``; it is
  transcribed branch by branch below, with the warmup starting from ``init`` instead of ``eta_max /
  init_div_factor``.
* Inverse square root: Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762), Section 5.3,
  ``lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5)``; and the timescale form of big_vision /
  Hugging Face ``get_inverse_sqrt_schedule``: ``peak / sqrt((step + timescale - warmup) / timescale)`` after a
  linear warmup ``peak * step / warmup``.

Each function takes Python numbers and returns a function ``int -> float`` computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def wsd(init: float, peak: float, warmup: int, stable: int, cooldown: int, end: float,
        decay_type: str) -> Callable[[int], float]:
  """Hägele et al. 2024's warmup / constant / cooldown schedule, in their code's branch order."""
  n_hold = warmup + stable  # the step at which the cooldown starts ("N_0")
  n_iterations = n_hold + cooldown
  final = end / peak  # the authors' final_lr_factor

  def schedule(step: int) -> float:
    if step < warmup:
      return init + (peak - init) * step / warmup
    if step < n_hold:
      return peak
    if step < n_iterations:
      progress = (step - n_hold) / cooldown
      if decay_type == "linear":
        factor = final + (1 - final) * (1 - progress)
      elif decay_type == "cosine":
        factor = final + (1 - final) * (1 + math.cos(math.pi * progress)) * 0.5
      elif decay_type == "1-sqrt":
        factor = final + (1 - final) * (1 - math.sqrt(progress))
      else:
        raise ValueError(decay_type)
      return peak * factor
    return end

  return schedule


def noam(d_model: int, warmup: int) -> Callable[[int], float]:
  """Vaswani et al. 2017, Section 5.3 (``step_num`` >= 1)."""

  def schedule(step_num: int) -> float:
    return d_model**-0.5 * min(step_num**-0.5, step_num * warmup**-1.5)

  return schedule


def inverse_sqrt(init: float, peak: float, warmup: int, timescale: float) -> Callable[[int], float]:
  """Linear warmup, then ``peak / sqrt((step + shift) / timescale)`` with ``shift = timescale - warmup``."""
  shift = timescale - warmup

  def schedule(step: int) -> float:
    if step < warmup:
      return init + (peak - init) * step / warmup
    return peak / math.sqrt((step + shift) / timescale)

  return schedule
