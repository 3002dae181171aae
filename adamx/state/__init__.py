"""Low-memory optimizer state: store the moments of any optimizer compressed between steps.

:func:`compress_state` wraps an optimizer; :func:`bf16` (round-to-nearest or stochastic rounding) and
:func:`blockwise_8bit` (Dettmers et al. 2022) are its codecs; :func:`state_bytes` measures a state. The same names
are exported from :mod:`adamx`.

Example:
  >>> import jax.numpy as jnp, adamx
  >>> tx = adamx.compress_state(adamx.adamw(1e-3), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit())
  >>> state = tx.init({"w": jnp.zeros((1024, 1024))})
  >>> round(adamx.state_bytes(state) / 1024**2, 2)  # bytes per parameter (fp32 moments: 8)
  2.0
"""

from adamx.state._bytes import state_bytes
from adamx.state._codecs import (
    Bf16Codec,
    Blockwise8bitCodec,
    Codec,
    Encoded,
    EncodedBf16,
    EncodedBlockwise8bit,
    bf16,
    blockwise_8bit,
)
from adamx.state._compress import MU_FIELDS, NU_FIELDS, CompressedState, compress_state, decompress_state

__all__ = (
    "compress_state",
    "CompressedState",
    "decompress_state",
    "state_bytes",
    "bf16",
    "blockwise_8bit",
    "Codec",
    "Bf16Codec",
    "Blockwise8bitCodec",
    "Encoded",
    "EncodedBf16",
    "EncodedBlockwise8bit",
    "MU_FIELDS",
    "NU_FIELDS",
)
