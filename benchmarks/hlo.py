"""What a compiled optimizer step does to memory, read off its optimized HLO (deterministic, no timing).

An elementwise optimizer step is memory-bound: its cost is the bytes it moves. On XLA:CPU every fusion is one loop
that reads its operands from memory and writes its outputs, so the HLO tells how many loops touch each parameter
and how many bytes per parameter the step moves. For fp32 AdamW in one pass that is 28 bytes per parameter (read
params, grads, mu, nu; write params, mu, nu); three passes (one loop each for mu, nu, params, the params loop reading
mu and nu back) are 40. A custom call (``adamx.apply_step``'s fused kernel) counts as one pass over its operands and
results.

Only arrays with at least ``min_elements`` elements count, so scalar work (bias corrections, the step counter) is
left out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

# `%name = f32[4,5]{1,0} fusion(%a, %b), kind=kLoop, ...` inside the ENTRY computation. Tuple-shaped outputs
# (multi-output fusions, which XLA:GPU makes and XLA:CPU does not) are handled by _shapes.
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z\-]*)\((.*?)\)(.*)$")
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64|c64|c128)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# Instructions that move no data (views, bookkeeping) or are not loops.
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "opt-barrier"}


def _shapes(text: str) -> list[tuple[int, int]]:
  """``(elements, bytes)`` of every array shape in an HLO shape string (a tuple has several)."""
  out = []
  for dtype, dims in _SHAPE.findall(text):
    n = math.prod(int(d) for d in dims.split(",")) if dims else 1
    out.append((n, n * _BYTES[dtype]))
  return out


@dataclasses.dataclass(frozen=True)
class Pass:
  """One loop over memory in the compiled step: an instruction of the ENTRY computation."""

  name: str
  opcode: str
  read_bytes: int
  write_bytes: int


def _entry_instructions(hlo_text: str) -> list[tuple[str, str, str, list[str]]]:
  """``(name, shape, opcode, operand names)`` of every instruction of the ENTRY computation, in order."""
  start = hlo_text.index("\nENTRY ")
  body = hlo_text[start:hlo_text.index("\n}", start)]
  out = []
  for line in body.splitlines()[1:]:
    m = _INSTR.match(line)
    if m:
      name, shape, opcode, operands, _ = m.groups()
      out.append((name, shape, opcode, re.findall(r"%([^\s,)]+)", operands)))
  return out


def entry_passes(hlo_text: str, min_elements: int = 2) -> list[Pass]:
  """The loops of the ENTRY computation that read or write an array of at least ``min_elements`` elements."""
  shapes: dict[str, list[tuple[int, int]]] = {}
  passes = []
  for name, shape, opcode, operands in _entry_instructions(hlo_text):
    shapes[name] = _shapes(shape)
    if opcode in _FREE:
      continue
    outs = [b for n, b in shapes[name] if n >= min_elements]
    ins = [b for op in operands for n, b in shapes.get(op, []) if n >= min_elements]
    if outs or ins:
      passes.append(Pass(name, opcode, sum(ins), sum(outs)))
  return passes


def bytes_per_element(hlo_text: str, n_elements: int, min_elements: int = 2) -> float:
  """Bytes read plus written by the ENTRY loops, per parameter element (``n_elements`` in the whole tree)."""
  return sum(p.read_bytes + p.write_bytes for p in entry_passes(hlo_text, min_elements)) / n_elements


def loops_touching(hlo_text: str, shape: tuple[int, ...], dtype: str = "f32") -> int:
  """How many ENTRY loops read or write an array of exactly ``shape`` (one leaf's parameter-shaped arrays)."""
  target = f"{dtype}[{','.join(str(d) for d in shape)}]"
  has_target: dict[str, bool] = {}
  count = 0
  for name, shape_text, opcode, operands in _entry_instructions(hlo_text):
    has_target[name] = target in shape_text
    if opcode not in _FREE and (has_target[name] or any(has_target.get(op) for op in operands)):
      count += 1
  return count


def compiled_text(fn: Any, *args: Any) -> str:
  """The optimized HLO of ``jax.jit``-ed ``fn`` (already jitted or not) for ``args``."""
  import jax

  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  return jitted.lower(*args).compile().as_text()
