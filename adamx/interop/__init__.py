"""adamx.interop: adamx with the rest of the ecosystem: checkpoints, PyTorch state dicts, sharded state.

* Checkpoints (orbax-checkpoint): :func:`save_state`, :func:`restore_state` (checked against the state you expect,
  leaf by leaf, with checksums) and :func:`validate_state` for a state restored by other means.
* PyTorch: :func:`to_torch_state_dict` and :func:`from_torch_state_dict` carry an Adam, AdamW or AMSGrad run from
  ``torch.optim`` to adamx and back.
* Sharding: :func:`state_sharding`, :func:`shard_state` (ZeRO-1 across the data axis) and :func:`bytes_per_device`.

Flax (``nnx.Optimizer``, linen's ``TrainState``) and Equinox need no adapter: an adamx optimizer is an optax
``GradientTransformation``; ``docs/ecosystem.md`` has an example for each. Importing this module imports neither
torch nor orbax nor flax: each function imports what it needs when called.

Example:
  >>> import jax.numpy as jnp, adamx
  >>> params = {"w": jnp.zeros(3)}
  >>> tx = adamx.adamw(1e-3)
  >>> adamx.interop.validate_state(tx.init(params), tx.init(params))
"""

from adamx.interop._checkpoint import restore_state, save_state, validate_state
from adamx.interop._sharding import bytes_per_device, shard_state, state_sharding
from adamx.interop._torch import from_torch_state_dict, to_torch_state_dict

__all__ = (
    "save_state",
    "restore_state",
    "validate_state",
    "to_torch_state_dict",
    "from_torch_state_dict",
    "state_sharding",
    "shard_state",
    "bytes_per_device",
)
