"""Float64 NumPy reference for 8-bit block-wise dynamic quantization (Dettmers et al. 2022), written from the papers'
description of the data type, not from ``adamx/state/_codecs.py``.

The dynamic tree data type (Dettmers 2016, "8-Bit Approximations for Parallelism in Deep Learning";
Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization", dynamic quantization) reads an 8-bit pattern
from the left as

.. code-block:: text

   signed:    s | 0 ... 0 (e zeros) | 1 (indicator) | f (6 - e fraction bits)      e = 0, ..., 6
   unsigned:      0 ... 0 (e zeros) | 1 (indicator) | f (7 - e fraction bits)      e = 0, ..., 6

with value ``(-1)^s 10^(-e) * fraction(f)``: the zeros are a decimal exponent, the indicator bit ends it, and the
remaining bits are a linear fraction in ``[0.1, 1]``. The unsigned type has no sign bit and spends it on one more
fraction bit. Conventions of bitsandbytes' ``create_dynamic_map``, the map the 2022 paper uses, marked
``DEPARTURE:`` from the bit-level description:

* a fraction of ``b`` bits with value ``f`` is the *midpoint* of the ``f``-th of ``2^b`` equal sub-intervals of
  ``[0.1, 1]``: ``0.1 + 0.9 (f + 1/2) / 2^b``;
* the two patterns without an indicator bit (signed: ``s0000000``; unsigned: ``00000000`` and ``00000001``) are
  the values 0 and 1, so that a block's absmax is represented exactly.

The 256 values, sorted ascending and rounded to float32 (the stored codebook), form the map ``Q``; a code is an
index into ``Q``. Block-wise quantization (2022 paper, block-wise quantization): the flattened tensor is cut into
blocks of ``B`` values, the last padded with zeros; each block ``b`` stores ``N_b = max_j |T_bj|`` and for each
value the index of the nearest map value to ``T_bj / N_b``; dequantization is ``Q[c] * N_b``.

Specification details the comparison needs, chosen in adamx and stated here so that the reference is exact:

* the normalised value is ``float32(T_bj / N_b)``, the codec's float32 division (computed here in float64 and
  rounded to float32, which equals the correctly rounded float32 quotient since 53 >= 2 * 24 + 2); a block with
  ``N_b = 0`` normalises to 0;
* ties (a normalised value exactly halfway between two map values) go to the larger code;
* the dequantized value is ``float32(Q[c] * N_b)``.
"""

from __future__ import annotations

import numpy as np


def dynamic_map(signed: bool) -> np.ndarray:
  """The 256 values of the dynamic map in float64, ascending (decoded from every 8-bit pattern, see the module
  docstring)."""
  values = []
  for pattern in range(256):
    bits = format(pattern, "08b")
    sign, body = (bits[0], bits[1:]) if signed else ("0", bits)
    e = body.find("1")  # the number of leading zeros: the decimal exponent
    if e < 0 or e == 7:  # no indicator bit (s0000000, 00000000), or none of the 8 bits left after it (00000001)
      # DEPARTURE: these two patterns are the values 0 and 1.
      values.append(1.0 if sign == "1" or e == 7 else 0.0)
      continue
    fraction_bits = body[e + 1:]
    b = len(fraction_bits)
    f = int(fraction_bits, 2) if b else 0
    # DEPARTURE: the fraction is the midpoint of the f-th of 2^b equal sub-intervals of [0.1, 1].
    fraction = 0.1 + 0.9 * (f + 0.5) / 2**b
    values.append((-1.0 if sign == "1" else 1.0) * 10.0**-e * fraction)
  return np.sort(np.array(values, np.float64))


def quantize(x: np.ndarray, block_size: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
  """``(codes [n_blocks, block_size] uint8, absmax [n_blocks] float32)`` of a float32 array ``x``."""
  q = dynamic_map(signed).astype(np.float32).astype(np.float64)
  flat = np.asarray(x, np.float32).reshape(-1).astype(np.float64)
  n_blocks = max(1, -(-flat.size // block_size))
  blocks = np.zeros(n_blocks * block_size)
  blocks[:flat.size] = flat
  blocks = blocks.reshape(n_blocks, block_size)
  absmax = np.abs(blocks).max(axis=1)
  safe = np.where(absmax > 0, absmax, 1.0)
  normalised = np.where(absmax[:, None] > 0, blocks / safe[:, None], 0.0).astype(np.float32).astype(np.float64)
  codes = np.empty(normalised.shape, np.uint8)
  rows = normalised.reshape(-1)
  out = codes.reshape(-1)
  for start in range(0, rows.size, 4096):  # chunks keep the [chunk, 256] distance matrix small
    d = np.abs(rows[start:start + 4096, None] - q[None, :])
    # the nearest map value; among equally near ones the larger code (the last minimum)
    out[start:start + 4096] = 255 - np.argmin(d[:, ::-1], axis=1)
  return codes, absmax.astype(np.float32)


def dequantize(codes: np.ndarray, absmax: np.ndarray, shape: tuple[int, ...], signed: bool) -> np.ndarray:
  """The float32 array of ``shape`` that ``(codes, absmax)`` stand for."""
  q = dynamic_map(signed).astype(np.float32).astype(np.float64)
  values = (q[codes.astype(np.int64)] * absmax.astype(np.float64)[:, None]).astype(np.float32)
  n = int(np.prod(shape, dtype=np.int64))
  return values.reshape(-1)[:n].reshape(shape)
