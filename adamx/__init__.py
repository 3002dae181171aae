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
from adamx._flat import FlatLayout, flatten_params
from adamx._fused import apply_step
from adamx.optimizers._adabelief import ScaleByBeliefState, adabelief, scale_by_belief
from adamx.optimizers._adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    adam,
    adamw,
    amsgrad,
    scale_by_adam,
    scale_by_amsgrad,
)
from adamx.optimizers._adam_mini import ScaleByAdamMiniState, adam_mini, adam_mini_partition, scale_by_adam_mini
from adamx.optimizers._adamax import ScaleByAdamaxState, adamax, adamaxw, scale_by_adamax
from adamx.optimizers._ademamix import (
    ScaleByAdemamixState,
    ademamix,
    ademamix_alpha_schedule,
    ademamix_b3_schedule,
    scale_by_ademamix,
)
from adamx.optimizers._adopt import ScaleByAdoptState, adopt, scale_by_adopt
from adamx.optimizers._common import FactoredMoment
from adamx.optimizers._lamb import ScaleByLambState, lamb, scale_by_lamb
from adamx.optimizers._laprop import ScaleByLapropState, laprop, scale_by_laprop
from adamx.optimizers._lion import ScaleByLionState, lion, scale_by_lion
from adamx.optimizers._nadam import ScaleByNadamState, nadam, nadamw, scale_by_nadam
from adamx.optimizers._radam import ScaleByRadamState, radam, scale_by_radam
from adamx.optimizers._schedule_free import (
    ScaleByScheduleFreeAdamWState,
    ScheduleFreeAdamWState,
    ScheduleFreeState,
    scale_by_schedule_free_adamw,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
)
from adamx.optimizers._sophia import ScaleBySophiaState, scale_by_sophia, sophia
from adamx.optimizers._sparse_adam import ScaleBySparseAdamState, scale_by_sparse_adam, sparse_adam
from adamx.optimizers._stableadamw import ScaleByStableAdamwState, scale_by_stableadamw, stableadamw
from adamx.optimizers._yogi import ScaleByYogiState, scale_by_yogi, yogi
from adamx.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    cosine_warm_restarts_schedule,
    exponential_decay,
    inverse_sqrt_schedule,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_schedule,
    warmup_stable_decay_schedule,
)
from adamx.state import CompressedState, bf16, blockwise_8bit, compress_state, state_bytes
from adamx.transforms._accumulate import AccumulateGradientsState, accumulate_gradients
from adamx.transforms._cautious import cautious, cautious_adamw, cautious_lion
from adamx.transforms._clip import ClipByGlobalNormState, clip, clip_by_block_rms, clip_by_global_norm, global_norm
from adamx.transforms._diagnostics import update_diagnostics
from adamx.transforms._ema import EmaState, ema, ema_params
from adamx.transforms._inject import InjectHyperparamsState, inject_hyperparams
from adamx.transforms._lookahead import LookaheadState, lookahead
from adamx.transforms._maximize import maximize
from adamx.transforms._partition import (
    MaskedNode,
    MaskedState,
    PartitionState,
    decay_labels,
    decay_mask,
    masked,
    partition,
    path_labels,
)
from adamx.transforms._scale import ScaleByScheduleState, scale, scale_by_learning_rate
from adamx.transforms._skip import SkipNonFiniteState, skip_non_finite
from adamx.transforms._trust_ratio import scale_by_trust_ratio
from adamx.transforms._weight_decay import add_decoupled_weight_decay, add_l2_regularization
from adamx import interop  # the subpackage; it imports no torch, orbax or flax

__version__ = "0.1.0"

__all__ = (
    # protocol
    "GradientTransformation",
    "EmptyState",
    "chain",
    "identity",
    "apply_updates",
    # one fused step (update + apply_updates)
    "apply_step",
    # the flat parameter store
    "flatten_params",
    "FlatLayout",
    # transforms
    "scale",
    "scale_by_learning_rate",
    "ScaleByScheduleState",
    "add_decoupled_weight_decay",
    "add_l2_regularization",
    "scale_by_trust_ratio",
    # optimizers
    "scale_by_adam",
    "ScaleByAdamState",
    "FactoredMoment",
    "adam",
    "adamw",
    "scale_by_amsgrad",
    "ScaleByAmsgradState",
    "amsgrad",
    "scale_by_adamax",
    "ScaleByAdamaxState",
    "adamax",
    "adamaxw",
    "scale_by_nadam",
    "ScaleByNadamState",
    "nadam",
    "nadamw",
    "scale_by_radam",
    "ScaleByRadamState",
    "radam",
    "scale_by_belief",
    "ScaleByBeliefState",
    "adabelief",
    "scale_by_yogi",
    "ScaleByYogiState",
    "yogi",
    "scale_by_lion",
    "ScaleByLionState",
    "lion",
    "scale_by_lamb",
    "ScaleByLambState",
    "lamb",
    "scale_by_sophia",
    "ScaleBySophiaState",
    "sophia",
    "scale_by_ademamix",
    "ScaleByAdemamixState",
    "ademamix",
    "cautious_adamw",
    "cautious_lion",
    "scale_by_stableadamw",
    "ScaleByStableAdamwState",
    "stableadamw",
    "scale_by_adam_mini",
    "ScaleByAdamMiniState",
    "adam_mini",
    "adam_mini_partition",
    "scale_by_adopt",
    "ScaleByAdoptState",
    "adopt",
    "scale_by_laprop",
    "ScaleByLapropState",
    "laprop",
    "scale_by_schedule_free_adamw",
    "ScaleByScheduleFreeAdamWState",
    "schedule_free_adamw",
    "ScheduleFreeAdamWState",
    "schedule_free",
    "ScheduleFreeState",
    "schedule_free_eval_params",
    "scale_by_sparse_adam",
    "ScaleBySparseAdamState",
    "sparse_adam",
    # schedules
    "constant_schedule",
    "warmup_cosine_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "piecewise_constant_schedule",
    "warmup_constant_schedule",
    "warmup_stable_decay_schedule",
    "inverse_sqrt_schedule",
    "join_schedules",
    "sgdr_schedule",
    "cosine_warm_restarts_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
    "ademamix_alpha_schedule",
    "ademamix_b3_schedule",
    # clipping, parameter groups, hyperparameters, diagnostics
    "clip_by_global_norm",
    "ClipByGlobalNormState",
    "global_norm",
    "clip",
    "clip_by_block_rms",
    "partition",
    "PartitionState",
    "masked",
    "MaskedState",
    "MaskedNode",
    "path_labels",
    "decay_mask",
    "decay_labels",
    "inject_hyperparams",
    "InjectHyperparamsState",
    "update_diagnostics",
    # wrappers
    "skip_non_finite",
    "SkipNonFiniteState",
    "accumulate_gradients",
    "AccumulateGradientsState",
    "ema",
    "ema_params",
    "EmaState",
    "maximize",
    "lookahead",
    "LookaheadState",
    "cautious",
    # low-memory state (the adamx.state subpackage)
    "compress_state",
    "CompressedState",
    "state_bytes",
    "bf16",
    "blockwise_8bit",
    # the subpackage for checkpoints, PyTorch state dicts and sharded state
    "interop",
)
