"""adamx: exact, fast Adam-family optimizers for JAX, interchangeable with optax.

Every optimizer is a :class:`GradientTransformation` (``init``/``update``, optax's protocol) built as a ``chain``
of its ``scale_by_<algo>`` transform, weight decay (coupled L2 before it, or decoupled after it) and
``scale_by_learning_rate``; its state is a pytree of NamedTuples of arrays.

Example:
  >>> import jax, jax.numpy as jnp, adamx
  >>> params = {"w": jnp.zeros(3)}
  >>> tx = adamx.adamw(learning_rate=adamx.warmup_cosine_schedule(0.0, 1e-2, 10, 100), weight_decay=1e-2)
  >>> state = tx.init(params)
  >>> grads = jax.grad(lambda p: jnp.sum((p["w"] - 1.0) ** 2))(params)
  >>> updates, state = tx.update(grads, state, params)
  >>> params = adamx.apply_updates(params, updates)
"""

from adamx._base import EmptyState, GradientTransformation, apply_updates, chain, identity
from adamx.optimizers._adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    adam,
    adamw,
    amsgrad,
    scale_by_adam,
    scale_by_amsgrad,
)
from adamx.schedules import constant_schedule, warmup_cosine_schedule
from adamx.transforms._scale import ScaleByScheduleState, scale, scale_by_learning_rate
from adamx.transforms._weight_decay import add_decoupled_weight_decay, add_l2_regularization

__version__ = "0.1.0"

__all__ = (
    # protocol
    "GradientTransformation",
    "EmptyState",
    "chain",
    "identity",
    "apply_updates",
    # transforms
    "scale",
    "scale_by_learning_rate",
    "ScaleByScheduleState",
    "add_decoupled_weight_decay",
    "add_l2_regularization",
    # optimizers
    "scale_by_adam",
    "ScaleByAdamState",
    "adam",
    "adamw",
    "scale_by_amsgrad",
    "ScaleByAmsgradState",
    "amsgrad",
    # schedules
    "constant_schedule",
    "warmup_cosine_schedule",
)
