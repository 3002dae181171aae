"""State codecs: how one moment leaf is stored between steps. ``bf16`` (round-to-nearest or stochastic rounding) and
``blockwise_8bit`` (Dettmers et al. 2022: block-wise absmax scaling and the dynamic quantization map).

A codec turns a floating leaf into an *encoded leaf*, a small pytree node whose array children are what the state
keeps (bf16 values; uint8 codes and float32 block scales) and whose static part is the leaf's dtype (and shape),
so that :func:`adamx.compress_state` can decode it back to exactly the dtype and shape the wrapped optimizer
declared. Encoded leaves are registered dataclasses: ``jax.jit``, buffer donation, ``lax.cond`` and ``jax.tree``
functions see their arrays as ordinary leaves.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks
from adamx.transforms._wrapping import check_positive_int

ROUNDINGS = ("nearest", "stochastic")


class Codec:
  """Base class of the state codecs :func:`adamx.bf16` and :func:`adamx.blockwise_8bit`.

  A codec stores one floating array between optimizer steps. :func:`adamx.compress_state` calls
  ``check(fn, where, x)`` once per leaf at ``init`` (raise for a leaf the codec cannot store) and
  ``encode(x, signed=..., key=...)`` after every step: ``signed`` is False for second-moment fields, whose values
  are >= 0; ``key`` is a PRNG key when ``stochastic`` is true, else None. ``encode`` returns an :class:`Encoded`
  pytree node whose ``decode()`` gives back an array of ``x``'s shape and dtype, and whose tree structure depends
  only on that shape and dtype (so that ``jit`` and ``lax.cond`` see the same state structure every step).
  """

  stochastic: bool = False

  def check(self, fn: str, where: str, x: jax.Array) -> None:
    del fn, where, x

  def encode(self, x: jax.Array, *, signed: bool, key: jax.Array | None) -> Encoded:
    raise NotImplementedError


class Encoded:
  """Base class of an encoded state leaf (:class:`EncodedBf16`, :class:`EncodedBlockwise8bit`): a pytree node
  whose array children are what the state keeps; ``decode()`` returns the array it stands for."""

  def decode(self) -> jax.Array:
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# bfloat16
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedBf16(Encoded):
  """A leaf stored by :func:`adamx.bf16`: its values in bfloat16 (a complex leaf as a trailing (real, imaginary)
  axis of size 2) and, static, the dtype it decodes to."""

  value: jax.Array
  dtype: np.dtype

  def decode(self) -> jax.Array:
    if jnp.issubdtype(self.dtype, jnp.complexfloating):
      rdt = jnp.finfo(self.dtype).dtype
      return jax.lax.complex(self.value[..., 0].astype(rdt), self.value[..., 1].astype(rdt)).astype(self.dtype)
    return self.value.astype(self.dtype)


jax.tree_util.register_dataclass(EncodedBf16, data_fields=["value"], meta_fields=["dtype"])


@jax.jit
def stochastic_round_bf16(x: jax.Array, key: jax.Array) -> jax.Array:
  """``x`` (float32) rounded to bfloat16 up or down at random, with probability proportional to the distance to
  the other neighbour, so that ``E[round(x)] = x``.

  A bfloat16 is the top 16 bits of a float32: adding 16 uniform random bits to the low half of ``x``'s bit
  pattern and truncating carries into the kept half with probability ``(low half) / 2**16`` (the sign is a separate
  bit, so this rounds the magnitude, symmetrically for negative values). Infinities and NaNs are kept as they are.
  """
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  noise = jax.random.bits(key, x.shape, jnp.uint16).astype(jnp.uint32)
  rounded = jax.lax.bitcast_convert_type((bits + noise) & jnp.uint32(0xFFFF0000), jnp.float32)
  return jnp.where(jnp.isfinite(x), rounded, x).astype(jnp.bfloat16)  # exact: the low 16 bits are zero


@dataclasses.dataclass(frozen=True)
class Bf16Codec(Codec):
  """The codec returned by :func:`adamx.bf16`."""

  rounding: str = "nearest"

  def __repr__(self) -> str:
    return f"adamx.bf16(rounding={self.rounding!r})"

  @property
  def stochastic(self) -> bool:  # type: ignore[override]
    return self.rounding == "stochastic"

  def encode(self, x, *, signed, key):
    del signed
    dtype = jnp.dtype(x.dtype)
    v = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1) if jnp.iscomplexobj(x) else x
    if not self.stochastic:
      return EncodedBf16(value=v.astype(jnp.bfloat16), dtype=dtype)
    # A float64 leaf (x64) is rounded to float32 first: that double rounding moves the rounding probabilities by at
    # most 2^-16, far below the statistical noise of stochastic rounding.
    return EncodedBf16(value=stochastic_round_bf16(v.astype(jnp.float32), key), dtype=dtype)


def bf16(rounding: str = "nearest") -> Bf16Codec:
  r"""A state codec that stores a moment in bfloat16: 2 bytes per value instead of 4.

  Pass it to :func:`adamx.compress_state` as ``mu=`` or ``nu=``. ``rounding="nearest"`` rounds to the nearest
  bfloat16 (ties to even), the same numbers as an optimizer's ``mu_dtype=jnp.bfloat16``/``nu_dtype``.
  ``rounding="stochastic"`` rounds :math:`x` to its lower or upper bfloat16 neighbour :math:`x_\downarrow \le x \le
  x_\uparrow` at random,

  .. math::
    \operatorname{SR}(x) = \begin{cases} x_\uparrow & \text{with probability } (x - x_\downarrow) /
      (x_\uparrow - x_\downarrow) \\ x_\downarrow & \text{otherwise,} \end{cases} \qquad
      \mathbb{E}[\operatorname{SR}(x)] = x,

  so that increments smaller than half a bfloat16 step (:math:`2^{-9}` to :math:`2^{-8}` of the value) still move
  the moment on average.
  Round-to-nearest drops them: Adam's second moment with ``b2=0.999`` changes by :math:`(1-\beta_2)(g^2 - v)` a
  step, and stops growing once that is below half a step, around :math:`v \approx g^2/3` (``tests/
  test_state_codecs.py`` shows the stall and its fix). Complex leaves are stored as bfloat16 (real, imaginary)
  pairs.

  Args:
    rounding: ``"nearest"`` or ``"stochastic"``. Stochastic rounding draws 16 random bits per value and step from
      the PRNG key that :func:`adamx.compress_state` keeps in its state (deterministic given its ``seed``).

  Returns:
    A codec (:class:`adamx.state.Codec`).

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.compress_state(adamx.adamw(1e-3), mu=adamx.bf16(), nu=adamx.bf16("stochastic"))
    >>> state = tx.init({"w": jnp.zeros((64, 64))})
    >>> adamx.state_bytes(state) // (64 * 64)  # bytes per parameter, plus the key and the count
    4

  References:
    Gupta et al., `Deep Learning with Limited Numerical Precision <https://arxiv.org/abs/1502.02551>`_, ICML 2015
    (stochastic rounding). Zamirai et al., `Revisiting BFloat16 Training <https://arxiv.org/abs/2010.06192>`_,
    2020 (bf16 state and weight updates stall under round-to-nearest; stochastic rounding restores them).
  """
  _checks.check_choice("bf16", "rounding", rounding, ROUNDINGS)
  return Bf16Codec(rounding)


# ---------------------------------------------------------------------------------------------------------------
# 8-bit block-wise dynamic quantization
# ---------------------------------------------------------------------------------------------------------------


def dynamic_map(signed: bool) -> np.ndarray:
  """The 256 values of the dynamic quantization map, ascending, float64 (Dettmers 2016; bitsandbytes'
  ``create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)``).

  Decade :math:`i = 0, \\dots, 6` holds the midpoints of ``n_i`` equal intervals of ``[0.1, 1]`` scaled by
  :math:`10^{i-6}`, with ``n_i = 2**i`` (signed, each also negated) or ``2**(i+1)`` (unsigned: the sign bit becomes
  one more fraction bit); 0 and 1 complete the 256 values (127 + 127 + 2, or 254 + 2). The largest value is
  exactly 1, so a block's absmax round-trips exactly; the signed map has no -1 (its most negative value is about
  -0.993).
  """
  values = [0.0, 1.0]
  for i in range(7):
    n = 2**i if signed else 2 ** (i + 1)
    edges = np.linspace(0.1, 1.0, n + 1)
    means = 10.0 ** (i - 6) * (edges[:-1] + edges[1:]) / 2
    values += list(means) + (list(-means) if signed else [])
  assert len(values) == 256
  return np.sort(np.array(values, np.float64))


def _thresholds(table: np.ndarray) -> np.ndarray:
  """The 255 float32 thresholds ``t_k`` such that a float32 ``y`` has nearest code ``#{k : t_k <= y}`` (ties go
  to the larger code): ``t_k`` is the smallest float32 ``>=`` the exact midpoint of codes ``k`` and ``k + 1``.

  ``table`` is float32. The midpoints are exact in float64 (the sum of two neighbouring float32 values, halved).
  Rounding them up to float32 rather than to nearest keeps the lookup exact for every float32 input: a float32 ``y``
  equal to a midpoint rounded down would otherwise be sent to the wrong side.
  """
  mid = (table[:-1].astype(np.float64) + table[1:].astype(np.float64)) / 2
  t = mid.astype(np.float32)
  below = t.astype(np.float64) < mid
  t[below] = np.nextafter(t[below], np.float32(np.inf))
  return t


_TABLES = {s: dynamic_map(s).astype(np.float32) for s in (True, False)}
_THRESHOLDS = {s: _thresholds(_TABLES[s]) for s in (True, False)}


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedBlockwise8bit(Encoded):
  """A leaf stored by :func:`adamx.blockwise_8bit`: ``codes`` (uint8, ``[n_blocks, block_size]``, the flattened
  leaf padded with zeros), ``absmax`` (float32, ``[n_blocks]``, the largest magnitude of each block) and, static,
  the leaf's shape, its dtype and whether the signed or the unsigned map was used."""

  codes: jax.Array
  absmax: jax.Array
  shape: tuple[int, ...]
  dtype: np.dtype
  signed: bool

  def decode(self) -> jax.Array:
    return _dequantize(self.codes, self.absmax, self.shape, self.dtype, self.signed)


jax.tree_util.register_dataclass(EncodedBlockwise8bit, data_fields=["codes", "absmax"],
                                 meta_fields=["shape", "dtype", "signed"])


@dataclasses.dataclass(frozen=True)
class Blockwise8bitCodec(Codec):
  """The codec returned by :func:`adamx.blockwise_8bit`."""

  block_size: int = 2048

  def __repr__(self) -> str:
    return f"adamx.blockwise_8bit(block_size={self.block_size})"

  def check(self, fn, where, x):
    if jnp.iscomplexobj(x):
      raise ValueError(
          f"adamx.{fn}: {where} is complex ({jnp.result_type(x)}), which {self!r} cannot store (its maps are real); "
          "use adamx.bf16() for it, or keep complex parameters out of the compressed optimizer with adamx.partition")

  def encode(self, x, *, signed, key):
    del key
    codes, absmax = _quantize(x, self.block_size, bool(signed))
    return EncodedBlockwise8bit(codes=codes, absmax=absmax, shape=tuple(x.shape), dtype=jnp.dtype(x.dtype),
                                signed=bool(signed))


def _nearest_code(y: jax.Array, signed: bool) -> jax.Array:
  """``#{k : t_k <= y}`` for the 255 thresholds of :func:`_thresholds`: a branch-free binary search of 8 steps
  (it compiles several times faster than ``jnp.searchsorted``'s unrolled scan, and runs as fast)."""
  t = jnp.asarray(np.append(_THRESHOLDS[signed], np.float32(np.inf)))  # t[255] = inf is never reached
  # The first step compares with one scalar threshold: a gather at the constant index 127 broadcast to y's shape
  # would be constant-folded by XLA into a y-sized constant (measured: 95 s to jit the init of a 16M leaf, 5 s
  # eagerly; with this, well under a second).
  idx = jnp.where(y >= t[127], 128, 0).astype(jnp.int32)
  for step in (64, 32, 16, 8, 4, 2, 1):
    idx = jnp.where(y >= t[idx + (step - 1)], idx + step, idx)
  return idx.astype(jnp.uint8)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _quantize(x: jax.Array, block_size: int, signed: bool) -> tuple[jax.Array, jax.Array]:
  """``(codes, absmax)`` of ``x``. Jitted so that an eager call (``init``) compiles once per shape rather than op
  by op; inside a jitted step it is inlined."""
  n = x.size
  n_blocks = max(1, -(-n // block_size))
  flat = jnp.pad(x.reshape(-1).astype(jnp.float32), (0, n_blocks * block_size - n)).reshape(n_blocks, block_size)
  absmax = jnp.max(jnp.abs(flat), axis=1)
  # Correctly rounded float32 division: the normalised value is the same number as the reference's
  # float32(x / absmax); an all-zero block normalises to 0.
  y = jnp.where(absmax[:, None] > 0, flat / jnp.where(absmax > 0, absmax, 1)[:, None], 0)
  return _nearest_code(y, signed), absmax


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _dequantize(codes: jax.Array, absmax: jax.Array, shape: tuple[int, ...], dtype: np.dtype,
                signed: bool) -> jax.Array:
  values = jnp.asarray(_TABLES[signed])[codes] * absmax[:, None]
  n = int(np.prod(shape, dtype=np.int64))
  return values.reshape(-1)[:n].reshape(shape).astype(dtype)


def blockwise_8bit(block_size: int = 2048) -> Blockwise8bitCodec:
  r"""A state codec that stores a moment in 8 bits per value with block-wise dynamic quantization (Dettmers et al.
  2022): about 1 byte per value instead of 4.

  Pass it to :func:`adamx.compress_state` as ``mu=`` or ``nu=``. The leaf is flattened and cut into blocks of
  ``block_size`` values (the last one padded with zeros); each block :math:`b` keeps its largest magnitude
  :math:`a_b = \max_{j \in b} |x_j|` in float32 and one uint8 code per value, the index of the nearest value of
  the dynamic map :math:`Q` (256 values in :math:`[-1, 1]`, ascending; ties go to the larger code) to the
  normalised value:

  .. math::
    c_j = \operatorname*{arg\,min}_k \bigl| x_j / a_b - Q_k \bigr|, \qquad \hat x_j = Q_{c_j}\, a_b.

  :math:`Q` is the dynamic (tree) map of bitsandbytes' ``create_dynamic_map``: a decimal exponent from
  :math:`10^{-6}` to :math:`10^0` and a linear fraction whose bits shrink as the exponent grows, so it resolves
  values from about :math:`5 \cdot 10^{-7} a_b` to :math:`a_b` with a relative step of at most a few percent.
  First-moment fields (``mu``, ``mu_slow``, ``z``) use the signed map; second-moment fields (``nu``, ``nu_max``),
  which are >= 0, the unsigned map, which spends the sign bit on one more fraction bit (negative values, e.g. a
  Hessian estimate, are stored as 0). The block scale costs ``4 / block_size`` bytes per value.

  Args:
    block_size: values per block, a positive integer (default 2048, the paper's). Smaller blocks follow local
      magnitudes more closely (an outlier degrades only its block) for more scale bytes.

  Returns:
    A codec (:class:`adamx.state.Codec`). Complex leaves are rejected when :func:`adamx.compress_state` initialises.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.compress_state(adamx.adamw(1e-3), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit())
    >>> state = tx.init({"w": jnp.zeros((1024, 1024))})
    >>> round(adamx.state_bytes(state) / 1024**2, 3)  # bytes per parameter
    2.004

  References:
    Dettmers, Lewis, Shleifer & Zettlemoyer, `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, ICLR 2022 (block-wise quantization, dynamic quantization, tensors under
    4096 values kept in 32 bits). Dettmers, `8-Bit Approximations for Parallelism in Deep Learning
    <https://arxiv.org/abs/1511.04561>`_, ICLR 2016 (the dynamic map).

  .. warning::
    * bitsandbytes quantizes inside its fused CUDA kernels and breaks ties by its binary search; here XLA fuses the
      same decode, update and encode, and ties go to the larger code, so codes can differ from bitsandbytes' on
      values exactly halfway between two map values.
    * The signed map has no :math:`-1`: a block whose largest magnitude is negative stores it as about
      :math:`-0.993\, a_b`, as in bitsandbytes.
  """
  block_size = check_positive_int("blockwise_8bit", "block_size", block_size)
  return Blockwise8bitCodec(block_size)
