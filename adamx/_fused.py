"""``apply_step``: one optimizer step, ``update`` and ``apply_updates`` together, fused into one pass where it can be.

Why: in the optax protocol ``update`` returns the updates and ``apply_updates`` adds them to the parameters, so an
fp32 AdamW step moves at least 40 bytes per parameter (XLA:CPU makes one loop each for ``mu``, ``nu`` and the
params, the last reading ``mu`` and ``nu`` back) where one pass needs 28: read params, grads, ``mu``, ``nu``, write
params, ``mu``, ``nu``. ``apply_step`` is both calls in one; for :func:`adamx.adam` and :func:`adamx.adamw` on
XLA:CPU it runs the whole step over every float32 leaf in one multi-threaded C++ loop (``_kernels/adam_step.cc``,
an XLA FFI custom call), in place when the caller donates the params and the state.

The kernel is compiled on first use with the system's C++ compiler (``$CXX``, else ``g++``, ``c++`` or
``clang++``) against jaxlib's FFI headers, and cached (``$ADAMX_CACHE_DIR``, else ``$XDG_CACHE_HOME/adamx`` or
``~/.cache/adamx``). Its arithmetic is that of the jitted XLA step on XLA:CPU, so the two give bitwise the same
params and state (``tests/test_fused.py``; ``benchmarks/README.md`` says where that is fragile).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _checks, _tree
from adamx._base import GradientTransformation, OptState, Params, Updates, apply_updates
from adamx.optimizers import _common
from adamx.transforms._weight_decay import leaf_masks

KERNELS = ("auto", "fused", "xla")
_TARGET = "adamx_adam_step"
_SOURCE = os.path.join(os.path.dirname(__file__), "_kernels", "adam_step.cc")
#: Leaves of fewer elements than this per thread are not worth a thread (starting one costs ~20-50 us).
_MIN_PER_THREAD = 1 << 16
#: ``kernel="auto"`` takes the kernel when the float32 leaves hold at least this many values on average. Below it,
#: measured on XLA:CPU (benchmarks/RESULTS.md), the custom call's fixed costs match what its one pass saves: on
#: 200 x 5k the two are within noise, on 2,000 x 1k the kernel is ~10% slower; from 1M-value leaves up it is faster.
AUTO_MIN_MEAN_LEAF = 1 << 15
#: Leaves per custom call (see _fused_step).
_LEAVES_PER_CALL = 32  # 2,000 leaves of 1k: 3.1 s to compile in calls of 32, 4.9 s of 64, 10 s of 256
# The kernel's modes (its "mode" attribute): which weight decay it applies.
PLAIN, L2, DECOUPLED = 0, 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class FusedSpec:
  """What :func:`apply_step` needs to know about an optimizer built by :func:`adamx.adam` or :func:`adamx.adamw`.

  The validated hyperparameters, where the Adam state and the learning-rate state sit in the chain's state, and
  ``rebuild(mask)``: the same optimizer with another weight-decay mask (for the leaves the kernel leaves to XLA).
  """

  name: str
  decay: int  # L2 (adam), DECOUPLED (adamw)
  adam_index: int  # the position of ScaleByAdamState in the chain's state; the learning-rate state is last
  learning_rate: Any
  b1: Any
  b2: Any
  eps: Any
  eps_root: Any
  weight_decay: Any
  mask: Any
  fusible: bool  # False with nesterov=True or factored=True: apply_step is then update + apply_updates
  rebuild: Callable[[Any], GradientTransformation]


_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register(tx: GradientTransformation, spec: FusedSpec) -> GradientTransformation:
  """Record that ``tx`` (returned by ``spec.name``) can take the fused step; returns ``tx``."""
  _SPECS[tx.update] = spec
  return tx


#: Wrappers whose step is their inner optimizer's (inject_hyperparams): update -> step(grads, state, params,
#: kernel, extra_args) -> (params, state), which calls apply_step on the inner optimizer.
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_step(tx: GradientTransformation, step: Callable[..., tuple[Params, OptState]]) -> GradientTransformation:
  """Record ``step`` as ``tx``'s :func:`apply_step` (for a wrapper around an optimizer); returns ``tx``."""
  _STEPS[tx.update] = step
  return tx


def _registered(table: weakref.WeakKeyDictionary, tx: Any) -> Any:
  """What ``register`` or ``register_step`` recorded in ``table`` for ``tx``, else None."""
  try:
    return table.get(tx.update)
  except TypeError:  # an update that cannot be weakly referenced was never registered
    return None


def spec_of(tx: Any) -> FusedSpec | None:
  """The :class:`FusedSpec` of a transform made by :func:`adamx.adam` or :func:`adamx.adamw`, else None."""
  return _registered(_SPECS, tx)


# ---------------------------------------------------------------------------------------------------------------
# Building and registering the kernel
# ---------------------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None
_warned = False


def _cache_dir() -> str:
  if os.environ.get("ADAMX_CACHE_DIR"):
    return os.environ["ADAMX_CACHE_DIR"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "adamx")


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_flags() -> str:
  """The CPU's feature flags (the library is built with -march=native, so the cache must not cross CPUs)."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    return platform.processor()


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def _build() -> str:
  """Compile the kernel (or find it in the cache); returns the path of the shared library."""
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found ($CXX, g++, c++ or clang++)")
  with open(_SOURCE, "rb") as f:
    source = f.read()
  include = jax.ffi.include_dir()
  # The first three tune for this CPU (AVX-512 where it has it); -ffp-contract=off keeps the FMAs to the explicit
  # ones of the source, -fno-math-errno lets sqrt vectorize (it changes no result).
  flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=off", "-fno-math-errno", "-std=c++17",
           "-shared", "-fPIC", "-pthread", "-w"]
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
  key = hashlib.sha256(b"\0".join(x.encode() if isinstance(x, str) else x for x in (
      source, " ".join(flags), version, jax.__version__, _jaxlib_version(), include, _cpu_flags(),
      platform.machine()))).hexdigest()[:16]
  out_dir = _cache_dir()
  path = os.path.join(out_dir, f"adam_step-{key}.so")
  if os.path.exists(path):
    return path
  os.makedirs(out_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
  os.close(fd)
  try:
    result = subprocess.run([cxx, *flags, "-I", include, _SOURCE, "-o", tmp], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:  # a compiler without the tuning flags: build for the baseline ISA instead
      result = subprocess.run([cxx, *flags[3:], "-O3", "-I", include, _SOURCE, "-o", tmp], capture_output=True,
                              text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"{cxx} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    os.replace(tmp, path)  # atomic: a concurrent process sees either no library or a whole one
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def kernel_available() -> tuple[bool, str | None]:
  """``(True, None)`` once the fused CPU kernel is built and registered, else ``(False, reason)``.

  Builds it on the first call (a few seconds, then cached on disk); later calls return at once.
  """
  global _library, _failure
  with _lock:
    if _library is None and _failure is None:
      try:
        lib = ctypes.CDLL(_build())
        jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.AdamxAdamStep), platform="cpu")
        _library = lib
      except Exception as e:  # noqa: BLE001  (any failure means: use the XLA step, and say why)
        _failure = f"{type(e).__name__}: {e}"
  return _library is not None, _failure


def _threads() -> int:
  value = os.environ.get("ADAMX_FUSED_THREADS")
  if value:
    try:
      return max(1, int(value))
    except ValueError:
      raise ValueError(f"adamx.apply_step: ADAMX_FUSED_THREADS must be a positive integer, got {value!r}") from None
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------------------------


def apply_step(tx: GradientTransformation, grads: Updates, state: OptState, params: Params, *,
               kernel: str = "auto", **extra_args: Any) -> tuple[Params, OptState]:
  r"""One optimizer step: ``tx.update`` then :func:`adamx.apply_updates`, fused into one pass where it can be.

  For any transform this returns exactly ``(apply_updates(params, updates), new_state)`` with
  ``updates, new_state = tx.update(grads, state, params)``. For :func:`adamx.adam` and :func:`adamx.adamw` on
  XLA:CPU it runs the step of every float32 leaf in one multi-threaded loop that reads params, grads, ``mu`` and
  ``nu`` once and writes params, ``mu`` and ``nu`` once: 28 bytes per parameter instead of the 40 of ``update`` +
  ``apply_updates``, and one operation per 32 leaves instead of three per leaf (which is what makes compile times
  grow with the leaf count). The params and the state it returns are bitwise those of the jitted XLA step
  (with coupled L2, ``adam(weight_decay > 0)``, within a few ulps: XLA:CPU rounds one of its sums differently for
  different leaf shapes); donate them (``jax.jit(step, donate_argnums=...)``) so that the update happens in place.
  Run eagerly, the XLA step rounds every product separately and differs from both by a few ulps.

  The fused path covers ``adam``/``adamw`` without ``nesterov`` or ``factored``, with any learning rate or schedule,
  arrays and traced hyperparameters included (:func:`adamx.inject_hyperparams` of them too), and weight-decay
  masks of booleans per leaf. Leaves that are not float32 (bfloat16, float64, complex, ``mu_dtype``/``nu_dtype``
  other than float32) or have an elementwise (array) mask take the XLA step within the same call. On other
  platforms (GPU, TPU), XLA already fuses the step, and ``apply_step`` lowers to the XLA step.

  Args:
    tx: any gradient transformation (adamx or optax).
    grads: the gradients, a pytree shaped like ``params``.
    state: ``tx``'s state.
    params: the current parameters.
    kernel: ``"auto"`` (the fused kernel where it applies, can be built and pays off: when the float32 leaves
      hold at least 32,768 values on average; else the XLA step), ``"fused"`` (the kernel whatever the leaf sizes,
      and raise if ``tx`` cannot take the fused step or the kernel cannot be built) or ``"xla"``
      (always ``update`` + ``apply_updates``: use it to differentiate through the step, which the kernel does not
      support, or under ``jit`` with arrays sharded over several devices).
    **extra_args: passed to ``tx.update`` (the fused optimizers take none).

  Returns:
    ``(new_params, new_state)``.

  Example:
    >>> import jax, jax.numpy as jnp, adamx
    >>> tx = adamx.adamw(1e-3, weight_decay=1e-2)
    >>> params = {"w": jnp.ones((256, 256)), "b": jnp.zeros(256)}
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state, x):
    ...   grads = jax.grad(lambda p: jnp.sum((x @ p["w"] + p["b"]) ** 2))(params)
    ...   return adamx.apply_step(tx, grads, state, params)
    >>> params, state = step(params, state, jnp.ones((8, 256)))

  .. note::
    The kernel is compiled on first use with the system's C++ compiler (``$CXX``, else ``g++``, ``c++`` or
    ``clang++``; a few seconds) and cached in ``$ADAMX_CACHE_DIR`` (default ``~/.cache/adamx``). Without a
    compiler, ``kernel="auto"`` warns once and takes the XLA step. It uses as many threads as the process may run
    on (``ADAMX_FUSED_THREADS`` overrides). It is an XLA custom call: not differentiable, batched by ``vmap`` one
    element at a time, and unaware of sharding.
  """
  _checks.check_choice("apply_step", "kernel", kernel, KERNELS)
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    raise TypeError(f"adamx.apply_step: tx must be a gradient transformation with init and update, got {tx!r}")
  if kernel == "xla":
    return _xla_step(tx, grads, state, params, extra_args)
  step = _registered(_STEPS, tx)
  if step is not None:  # a wrapper (inject_hyperparams): its inner optimizer's apply_step
    return step(grads, state, params, kernel, extra_args)
  spec = spec_of(tx)
  reason = _why_not(spec)
  if reason is None and _sharded(params):
    reason = "params are sharded over several devices, and the kernel is unaware of sharding"
  if reason is None and kernel == "auto" and _mean_float32_leaf(params) < AUTO_MIN_MEAN_LEAF:
    return _xla_step(tx, grads, state, params, extra_args)  # small leaves: the kernel would not be faster
  if reason is None:
    available, failure = kernel_available()
    if not available:
      reason = f"the fused kernel could not be built ({failure})"
      if kernel == "auto":
        _warn_once(reason)
  if reason is not None:
    if kernel == "fused":
      raise ValueError(f"adamx.apply_step: kernel='fused' is not possible: {reason}")
    return _xla_step(tx, grads, state, params, extra_args)
  _tree.check_structure("apply_step", "grads", grads, "params", params)
  if jax.default_backend() == "cpu":
    return _fused_step(spec, grads, state, params)
  return jax.lax.platform_dependent(
      grads, state, params, cpu=lambda g, s, p: _fused_step(spec, g, s, p),
      default=lambda g, s, p: _xla_step(tx, g, s, p, extra_args))


def _mean_float32_leaf(params: Params) -> float:
  sizes = [int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(params) if jnp.result_type(x) == jnp.float32]
  return sum(sizes) / len(sizes) if sizes else 0.0


def _why_not(spec: FusedSpec | None) -> str | None:
  if spec is None:
    return ("tx was not made by adamx.adam or adamx.adamw, or adamx.inject_hyperparams of one of them (only those "
            "have a fused kernel; other wrappers hide it)")
  if not spec.fusible:
    return f"adamx.{spec.name} with nesterov=True or factored=True has no fused kernel"
  return None


def _sharded(params: Params) -> bool:
  for leaf in jax.tree.leaves(params):
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None and not isinstance(leaf, jax.core.Tracer) and len(sharding.device_set) > 1:
      return True
  return False


def _warn_once(reason: str) -> None:
  global _warned
  if not _warned:
    _warned = True
    warnings.warn(f"adamx.apply_step: using the XLA step: {reason}", RuntimeWarning, stacklevel=3)


def _xla_step(tx, grads, state, params, extra_args):
  updates, state = tx.update(grads, state, params, **extra_args)
  return apply_updates(params, updates), state


def _f32(x: Any) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def _fused_step(spec: FusedSpec, grads: Updates, state: OptState, params: Params) -> tuple[Params, OptState]:
  """The step of ``spec``'s optimizer: float32 leaves through the kernel, the others through the XLA step.

  Every scalar is computed as the XLA step computes it (same expressions, same dtypes), so that the kernel,
  given the same inputs, produces the same bits.
  """
  fn = "apply_step"
  if not isinstance(state, tuple) or len(state) != 3:
    raise ValueError(f"adamx.{fn}: state must be the 3-tuple returned by adamx.{spec.name}(...).init, got "
                     f"{type(state).__name__}")
  adam_state, lr_state = state[spec.adam_index], state[2]
  p_leaves, treedef = jax.tree.flatten(params)
  _tree.check_structure(fn, "params", params, "state.mu", adam_state.mu)
  g_leaves = treedef.flatten_up_to(grads)
  m_leaves, v_leaves = treedef.flatten_up_to(adam_state.mu), treedef.flatten_up_to(adam_state.nu)

  decays = _checks.concrete_number(spec.weight_decay) != 0.0  # a concrete zero decay is skipped, as in the chain
  if spec.decay == DECOUPLED and decays:
    masks = leaf_masks(spec.name, spec.mask, params)
  else:
    masks = [True] * len(p_leaves)
  groups: dict[int, list[int]] = {}  # kernel mode -> leaf indices
  rest: list[int] = []  # leaves for the XLA step
  for i, (p, g, m, v, k) in enumerate(zip(p_leaves, g_leaves, m_leaves, v_leaves, masks)):
    if not all(jnp.result_type(x) == jnp.float32 for x in (p, g, m, v)) or not isinstance(k, (bool, np.bool_)):
      rest.append(i)
    else:
      mode = PLAIN if not decays or not k else spec.decay
      groups.setdefault(mode, []).append(i)

  count = _tree.safe_increment(adam_state.count)
  new_p, new_m, new_v = list(p_leaves), list(m_leaves), list(v_leaves)
  if groups:
    bc1, bc2, _ = _common.corrections(spec.b1, spec.b2, count, False)(jnp.float32)
    lr = spec.learning_rate(lr_state.count) if callable(spec.learning_rate) else spec.learning_rate
    hp = jnp.stack([_f32(1 - spec.b1), _f32(spec.b1), _f32(1 - spec.b2), _f32(spec.b2), bc1, bc2,
                    _f32(spec.eps_root), _f32(spec.eps), _f32(spec.weight_decay if decays else 0.0), _f32(-lr)])
    for mode, idx in groups.items():
      # One custom call per _LEAVES_PER_CALL leaves: XLA's compile time grows faster than linearly in a call's
      # aliased operands.
      for start in range(0, len(idx), _LEAVES_PER_CALL):
        chunk = idx[start:start + _LEAVES_PER_CALL]
        outs = _call_kernel(mode, hp, [p_leaves[i] for i in chunk], [g_leaves[i] for i in chunk],
                            [m_leaves[i] for i in chunk], [v_leaves[i] for i in chunk])
        n = len(chunk)
        for j, i in enumerate(chunk):
          new_p[i], new_m[i], new_v[i] = outs[j], outs[n + j], outs[2 * n + j]
  if rest:
    sub_tx = spec.rebuild([masks[i] for i in rest])
    sub_state = list(state)
    sub_state[spec.adam_index] = adam_state._replace(mu=[m_leaves[i] for i in rest], nu=[v_leaves[i] for i in rest])
    sub_p = [p_leaves[i] for i in rest]
    updates, sub_new = sub_tx.update([g_leaves[i] for i in rest], tuple(sub_state), sub_p)
    for i, p, m, v in zip(rest, apply_updates(sub_p, updates), sub_new[spec.adam_index].mu,
                          sub_new[spec.adam_index].nu):
      new_p[i], new_m[i], new_v[i] = p, m, v

  new_state = list(state)
  new_state[spec.adam_index] = adam_state._replace(count=count, mu=treedef.unflatten(new_m),
                                                   nu=treedef.unflatten(new_v))
  if callable(spec.learning_rate):
    new_state[2] = lr_state._replace(count=_tree.safe_increment(lr_state.count))
  return treedef.unflatten(new_p), tuple(new_state)


def _call_kernel(mode: int, hp: jax.Array, p: list, g: list, m: list, v: list) -> list[jax.Array]:
  """One custom call of the kernel over the leaves ``p, g, m, v``: ``[p'..., m'..., v'...]``."""
  n = len(p)
  shapes = [jax.ShapeDtypeStruct(jnp.shape(x), jnp.float32) for x in p] * 3
  # Operands: hp, p_0..p_{n-1}, g_..., m_..., v_...; results p_..., m_..., v_... (each aliased to its operand).
  aliases = {**{1 + i: i for i in range(n)}, **{1 + 2 * n + i: n + i for i in range(n)},
             **{1 + 3 * n + i: 2 * n + i for i in range(n)}}
  call = jax.ffi.ffi_call(_TARGET, shapes, input_output_aliases=aliases, vmap_method="sequential")
  return call(hp, *p, *g, *m, *v, mode=np.int64(mode), threads=np.int64(_threads()),
              min_per_thread=np.int64(_MIN_PER_THREAD))
