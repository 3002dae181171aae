"""``compress_state``: one wrapper that stores the moments of any optimizer with a state codec between steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adamx import _checks
from adamx._base import GradientTransformation, OptState
from adamx.state._codecs import Codec, Encoded
from adamx.transforms._wrapping import check_transform

#: First-moment fields (signed values): the ``mu`` codec. ``z`` is Schedule-Free's base sequence.
MU_FIELDS = ("mu", "mu_slow", "z")
#: Second-moment fields (values >= 0): the ``nu`` codec.
NU_FIELDS = ("nu", "nu_max")


class CompressedState(NamedTuple):
  """State of :func:`compress_state`."""

  inner: OptState  # the wrapped optimizer's state, its moment fields as encoded leaves (adamx.state.Encoded)
  key: jax.Array | None  # uint32 PRNG key data (jax.random.key_data) for stochastic rounding, split every step; or None


def _is_encoded(x: Any) -> bool:
  return isinstance(x, Encoded)


def _map_fields(state: Any, fn: Callable[[str, str, Any], Any], path: str = "") -> Any:
  """``state`` with ``fn(kind, path, field)`` applied to every moment field of every NamedTuple in it (through
  chain tuples, lists, dicts and wrapper states; a nested :class:`CompressedState` is left to its own wrapper)."""
  if isinstance(state, CompressedState):
    return state
  if isinstance(state, tuple) and hasattr(state, "_fields"):
    out = []
    for name, value in zip(state._fields, state):
      where = f"{path}.{name}"
      if name in MU_FIELDS:
        out.append(fn("mu", where, value))
      elif name in NU_FIELDS:
        out.append(fn("nu", where, value))
      else:
        out.append(_map_fields(value, fn, where))
    return type(state)(*out)
  if type(state) in (tuple, list):
    return type(state)(_map_fields(x, fn, f"{path}[{i}]") for i, x in enumerate(state))
  if type(state) is dict:
    return {k: _map_fields(v, fn, f"{path}[{k!r}]") for k, v in state.items()}
  return state


def _decode_fields(state: Any) -> Any:
  decode = lambda x: x.decode() if _is_encoded(x) else x  # noqa: E731
  return _map_fields(state, lambda kind, where, tree: jax.tree.map(decode, tree, is_leaf=_is_encoded))


def decompress_state(state: OptState) -> OptState:
  """The optimizer state with every :func:`compress_state` layer replaced by its inner state, decoded: each
  compressed moment back in its declared dtype and shape (for inspection, logging, or a checkpoint in the
  uncompressed layout). States without compressed layers are returned as they are.

  Example:
    >>> import jax.numpy as jnp, adamx
    >>> tx = adamx.compress_state(adamx.adam(1e-3), nu=adamx.blockwise_8bit(), min_size=0)
    >>> state = tx.init({"w": jnp.ones(3)})
    >>> adamx.state.decompress_state(state)[1].nu["w"].dtype
    dtype('float32')
  """
  if isinstance(state, CompressedState):
    return decompress_state(_decode_fields(state.inner))
  if isinstance(state, tuple) and hasattr(state, "_fields"):
    return type(state)(*[decompress_state(x) for x in state])
  if type(state) in (tuple, list):
    return type(state)(decompress_state(x) for x in state)
  if type(state) is dict:
    return {k: decompress_state(v) for k, v in state.items()}
  return state


def _check_codec(fn: str, name: str, codec: Any) -> Codec | None:
  if codec is None or isinstance(codec, Codec):
    return codec
  from adamx.state import _codecs  # the factories, to recognise one passed uncalled

  hint = ""
  if codec in (_codecs.bf16, _codecs.blockwise_8bit):
    hint = f" (did you mean adamx.{codec.__name__}()?)"
  raise TypeError(f"adamx.{fn}: {name} must be None or a state codec such as adamx.bf16(\"stochastic\") or "
                  f"adamx.blockwise_8bit(), got {codec!r}{hint}")


def _is_float_array(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)


def compress_state(inner: GradientTransformation, *, mu: Codec | None = None, nu: Codec | None = None,
                   seed: int = 0, min_size: int = 4096) -> GradientTransformation:
  r"""Store the moments of any optimizer compressed between steps: bfloat16 (with stochastic rounding) or 8-bit
  block-wise quantization, for 2 or about 1 byte per value instead of 4.

  One wrapper for every optimizer, with no per-optimizer code: ``init`` runs ``inner.init`` and encodes the
  moment fields of every NamedTuple in its state, first-moment fields (``mu``, ``mu_slow``, ``z``) with the ``mu``
  codec and second-moment fields (``nu``, ``nu_max``) with the ``nu`` codec; ``update`` decodes them, runs
  ``inner.update`` and encodes the new moments. With :math:`E` the encoding and :math:`D` the decoding,

  .. math::
    (u_t, s_t) = \mathrm{inner.update}\bigl(g_t, D(\tilde s_{t-1}), \theta_{t-1}\bigr), \qquad
    \tilde s_t = E(s_t),

  so the arithmetic of the step is the wrapped optimizer's, in its own dtype (float32 for float32 parameters), on
  decoded moments; only the stored :math:`\tilde s_t` is compressed: the state the jitted step reads and writes,
  donated or not, is the compressed one (measure it with :func:`adamx.state_bytes`). The decoded and the new
  moments are temporaries of the step: XLA fuses part of the decode and encode into the update, but on XLA:CPU a
  leaf's decoded and new moments are still materialised in float32 while the step runs, so the saving is in the
  persistent state, not in the step's working memory for its largest leaf (bitsandbytes' fused CUDA kernels keep
  them in registers).

  Leaves with fewer than ``min_size`` values (biases, norms, scalars) are kept as they are, as bitsandbytes keeps
  tensors under 4096 values in 32 bits: they cost little and are the most sensitive. Non-floating leaves, other
  fields (counters, keys, Schedule-Free's ``delta``) and a nested ``compress_state`` are left untouched.

  Args:
    inner: the wrapped optimizer or transform (adamx or optax).
    mu: codec for first-moment fields, or ``None`` to keep them as they are: :func:`adamx.bf16` or
      :func:`adamx.blockwise_8bit` (signed map).
    nu: codec for second-moment fields, or ``None``: :func:`adamx.bf16` (``"stochastic"`` recommended, see its
      docstring) or :func:`adamx.blockwise_8bit` (unsigned map).
    seed: a non-negative integer; the PRNG key of stochastic rounding is ``jax.random.key(seed)``, split every
      step, so runs are deterministic given the seed. Only kept in the state if a codec is stochastic.
    min_size: a non-negative integer: leaves with fewer values are not compressed (``0``: compress every leaf).

  Returns:
    A :class:`adamx.GradientTransformation` with :class:`adamx.CompressedState`; :func:`adamx.state.
    decompress_state` decodes it.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.compress_state(adamx.adamw(1e-3), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit())
    >>> params = {"w": jnp.ones((256, 64)), "b": jnp.zeros(64)}
    >>> state = tx.init(params)
    >>> updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    >>> state.inner[0].mu["w"].codes.dtype, state.inner[0].mu["b"].dtype  # the bias is under min_size
    (dtype('uint8'), dtype('float32'))

  References:
    Dettmers, Lewis, Shleifer & Zettlemoyer, `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, ICLR 2022. Zamirai et al., `Revisiting BFloat16 Training
    <https://arxiv.org/abs/2010.06192>`_, 2020.

  .. warning::
    * Schedule-Free's ``z`` is the parameter sequence itself, not a moment: a codec on it loses every step smaller
      than its resolution (up to ``2^-8`` relative for bf16 round-to-nearest, up to 0.7% of a block's scale for 8
      bits).
      Use ``mu=adamx.bf16("stochastic")`` or ``mu=None`` there.
    * Complex moments: :func:`adamx.bf16` stores them as (real, imaginary) pairs; :func:`adamx.blockwise_8bit`
      raises at ``init``.
    * bitsandbytes updates in place inside one CUDA kernel; here the compressed state is a new pytree each step
      (donate it to ``jax.jit`` to reuse its buffers).
  """
  fn = "compress_state"
  inner_update = check_transform(fn, "inner", inner)
  codecs = {"mu": _check_codec(fn, "mu", mu), "nu": _check_codec(fn, "nu", nu)}
  seed = _checks.check_steps(fn, "seed", seed)
  min_size = _checks.check_steps(fn, "min_size", min_size)
  stochastic = any(c is not None and c.stochastic for c in codecs.values())

  def compressible(codec: Codec | None, x: Any) -> bool:
    return (codec is not None and hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
            and x.size >= min_size)

  def encode(state: Any, key: jax.Array | None, check: bool) -> Any:
    index = iter(range(1 << 62))  # every compressed leaf draws from its own key, folded in by walk order

    def field(kind, where, tree):
      codec = codecs[kind]

      def leaf(path, x):
        if _is_encoded(x) or not compressible(codec, x):
          return x
        if check:
          codec.check(fn, f"leaf {jax.tree_util.keystr(path) or '<root>'} of state field {where} (argument "
                      f"{kind})", x)
        leaf_key = jax.random.fold_in(key, next(index)) if codec.stochastic else None
        return codec.encode(x, signed=kind == "mu", key=leaf_key)

      return jax.tree_util.tree_map_with_path(leaf, tree, is_leaf=_is_encoded)

    return _map_fields(state, field, "state")

  def inner_init(params):
    # Under jit an init's zeros are constants, and XLA would constant-fold the 8-bit quantization of them into
    # leaf-sized constants (measured: 93 s to jit the init of a 16M leaf, 0.3 s with the barrier).
    return jax.tree.map(lambda x: jax.lax.optimization_barrier(x) if _is_float_array(x) else x, inner.init(params))

  def init(params):
    if not stochastic:
      return CompressedState(inner=encode(inner_init(params), None, True), key=None)
    key, init_key = jax.random.split(jax.random.key(seed))
    return CompressedState(inner=encode(inner_init(params), init_key, True), key=jax.random.key_data(key))

  def update(updates, state, params=None, **extra_args):
    updates, inner_state = inner_update(updates, _decode_fields(state.inner), params, **extra_args)
    if not stochastic:
      return updates, CompressedState(inner=encode(inner_state, None, False), key=None)
    key, step_key = jax.random.split(jax.random.wrap_key_data(state.key))
    return updates, CompressedState(inner=encode(inner_state, step_key, False), key=jax.random.key_data(key))

  return GradientTransformation(init, update)
