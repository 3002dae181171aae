"""The timing suite behind ``python -m benchmarks``: adamx vs optax vs ``torch.optim`` on several tree shapes.

For each tree and each implementation, one process measures (same hyperparameters, same tree):

* ``step ms``: the best of ``--steps`` timed steps after a warm-up step (``block_until_ready`` after each; JAX steps
  are ``jax.jit``-compiled with the params and optimizer state donated, as in a real training loop);
* ``compile s``: lowering plus compiling the jitted step, measured apart from the steps;
* ``GB/s``: the bytes an ideal one-pass step moves (28 bytes per parameter for fp32 AdamW/Adam: read params,
  grads, mu, nu; write params, mu, nu), divided by the step time, and ``roofline``: that rate as a fraction of the
  memory bandwidth measured in the same run (an in-place triad ``a = a + s * c`` over 64M floats, best of 10);
* ``HLO B/param``: the bytes per parameter the compiled JAX step actually moves, read off its optimized HLO
  (:mod:`benchmarks.hlo`), and ``state B/param``: optimizer-state bytes per parameter.

The speed ratios (``vs optax``, ``vs torch fused``) are taken between rows of the same run.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import hlo

#: Ideal bytes moved per fp32 parameter by one pass of AdamW/Adam: 4 arrays read, 3 written.
IDEAL_BYTES_PER_PARAM = 28


@dataclasses.dataclass(frozen=True)
class Tree:
  """A parameter tree shape: ``leaves`` is a list of leaf shapes."""

  name: str
  leaves: tuple[tuple[int, ...], ...]

  @property
  def size(self) -> int:
    return sum(int(np.prod(s)) for s in self.leaves)


def transformer_leaves(layers: int = 24, d: int = 256, vocab: int = 8192) -> tuple[tuple[int, ...], ...]:
  """A GPT-shaped tree: embeddings, then per layer two layer norms, q/k/v/out projections with biases and a 4x MLP
  (12 leaves a layer), then a final norm: ``12 * layers + 3`` leaves of mixed sizes (291 leaves, 21.3M parameters
  with the defaults)."""
  leaves: list[tuple[int, ...]] = [(vocab, d), (1024, d)]
  for _ in range(layers):
    leaves += [(d,), (d,)]  # ln1 scale/bias
    leaves += [(d, 3 * d), (3 * d,), (d, d), (d,)]  # qkv, out
    leaves += [(d,), (d,)]  # ln2
    leaves += [(d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # mlp
  leaves += [(d,)]
  return tuple(leaves)


def default_trees(quick: bool = False) -> list[Tree]:
  if quick:  # seconds: for the smoke test and a first look
    return [Tree("1 x 64k", ((1 << 16,),)), Tree("20 x 1k", ((1000,),) * 20)]
  return [
      Tree("1 x 1M", ((1 << 20,),)),
      Tree("1 x 16M", ((1 << 24,),)),
      Tree("1 x 64M", ((1 << 26,),)),
      Tree("200 x 5k", ((5000,),) * 200),
      Tree("2,000 x 1k", ((1000,),) * 2000),
      Tree("transformer (291 leaves)", transformer_leaves()),
  ]


@dataclasses.dataclass
class Result:
  tree: str
  n_params: int
  n_leaves: int
  impl: str
  step_ms: float
  compile_s: float | None
  hlo_bytes_per_param: float | None
  state_bytes_per_param: float | None

  def gbps(self) -> float:
    return IDEAL_BYTES_PER_PARAM * self.n_params / (self.step_ms * 1e-3) / 1e9


def _jax_tree(tree: Tree, value: float) -> dict[str, jax.Array]:
  return {f"p{i:04d}": jnp.full(s, value, jnp.float32) for i, s in enumerate(tree.leaves)}


def time_jax(tx: Any, tree: Tree, steps: int, flat: bool = False, fused: bool = False, identity: bool = False
             ) -> tuple[float, float, float, float]:
  """``(best step ms, compile s, HLO bytes/param, state bytes/param)`` for a jitted, donated step of ``tx``; with
  ``flat``, on the params and gradients packed by :func:`adamx.flatten_params` (the step alone is timed: the
  gradient's assembly into the flat buffer happens in the model's backward pass); with ``fused``, the step is
  ``adamx.apply_step(..., kernel="fused")`` instead of ``update`` + ``apply_updates``."""
  import optax

  import adamx

  def step(params, state, grads):
    if identity:
      return params, state
    if fused:
      return adamx.apply_step(tx, grads, state, params, kernel="fused")
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = _jax_tree(tree, 1.0)
  grads = _jax_tree(tree, 0.01)
  if flat:
    params, layout = adamx.flatten_params(params)
    grads = layout.pack(grads)
  state = tx.init(params)
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if x.size > 1) / tree.size  # no counters or keys
  jitted = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.perf_counter()
  compiled = jitted.lower(params, state, grads).compile()
  compile_s = time.perf_counter() - t0
  hlo_bytes = hlo.bytes_per_element(compiled.as_text(), tree.size)
  params, state = compiled(params, state, grads)  # warm-up
  jax.block_until_ready((params, state))
  best = float("inf")
  for _ in range(steps):
    t0 = time.perf_counter()
    params, state = compiled(params, state, grads)
    jax.block_until_ready((params, state))
    best = min(best, time.perf_counter() - t0)
  return best * 1e3, compile_s, hlo_bytes, state_bytes


def time_torch(cls: Any, kwargs: dict[str, Any], tree: Tree, steps: int) -> tuple[float, float]:
  """``(best step ms, state bytes/param)`` for ``cls(params, **kwargs).step()`` on CPU tensors."""
  import torch

  params = [torch.full(s, 1.0, requires_grad=True) for s in tree.leaves]
  for p in params:
    p.grad = torch.full(p.shape, 0.01)
  opt = cls(params, **kwargs)
  opt.step()  # warm-up, allocates the state
  state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                    if torch.is_tensor(v) and v.numel() > 1) / tree.size
  best = float("inf")
  with torch.no_grad():
    for _ in range(steps):
      t0 = time.perf_counter()
      opt.step()
      best = min(best, time.perf_counter() - t0)
  return best * 1e3, state_bytes


def stream_triad_gbps(n: int = 1 << 26, repeats: int = 10) -> float:
  """Memory bandwidth of this machine in GB/s: a jitted in-place triad ``a = a + s * c`` over ``n`` float32 (read
  ``a`` and ``c``, write ``a``: 12 bytes an element) into a donated ``a``, as the optimizer steps write into their
  donated state. (A triad into a fresh output buffer measured 6 GB/s on the 2-core development VM against 39 GB/s
  in place: it also times the page faults of first touch.)"""
  c = jnp.ones(n, jnp.float32)
  f = jax.jit(lambda a, c: a + 0.5 * c, donate_argnums=0)
  a = jax.block_until_ready(f(jnp.zeros(n, jnp.float32), c))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    a = jax.block_until_ready(f(a, c))
    best = min(best, time.perf_counter() - t0)
  return 12 * n / best / 1e9


#: Low-memory rows run only on trees of at most this many leaves: on 2,000 leaves of 1k values nothing is
#: compressed (every leaf is under ``compress_state``'s ``min_size``) and each row would cost a minute of compile.
LOW_MEMORY_MAX_LEAVES = 300


@dataclasses.dataclass(frozen=True)
class JaxImpl:
  """One JAX row: ``flat`` runs only on trees of several leaves, ``low_memory`` (issue 7's states) only on trees
  of at most :data:`LOW_MEMORY_MAX_LEAVES` leaves; ``fused`` times ``adamx.apply_step``'s fused kernel;
  ``identity`` times a jitted step that returns params and state unchanged: the cost of dispatching the call and
  its arrays, a floor for every JAX row on the same tree."""

  name: str
  make: Callable[[], Any]
  flat: bool = False
  low_memory: bool = False
  fused: bool = False
  identity: bool = False


def jax_impls(lr: float = 1e-3, wd: float = 1e-2) -> list[JaxImpl]:
  import optax

  import adamx

  return [
      JaxImpl("jax.jit identity (dispatch floor)", lambda: adamx.adamw(lr, weight_decay=wd), identity=True),
      JaxImpl("adamx.adamw", lambda: adamx.adamw(lr, weight_decay=wd)),
      JaxImpl("adamx.adamw fused", lambda: adamx.adamw(lr, weight_decay=wd), fused=True),
      JaxImpl("adamx.adamw flat store", lambda: adamx.adamw(lr, weight_decay=wd), flat=True),
      JaxImpl("adamx.adamw fused, flat store", lambda: adamx.adamw(lr, weight_decay=wd), flat=True, fused=True),
      JaxImpl("optax.adamw", lambda: optax.adamw(lr, weight_decay=wd)),
      JaxImpl("adamx.adam", lambda: adamx.adam(lr)),
      JaxImpl("adamx.adam fused", lambda: adamx.adam(lr), fused=True),
      JaxImpl("optax.adam", lambda: optax.adam(lr)),
      JaxImpl("adamx.adamw bf16 moments", lambda: adamx.adamw(lr, weight_decay=wd, mu_dtype=jnp.bfloat16,
                                                              nu_dtype=jnp.bfloat16), low_memory=True),
      JaxImpl("adamx.adamw bf16, stochastic nu", lambda: adamx.compress_state(
          adamx.adamw(lr, weight_decay=wd), mu=adamx.bf16(), nu=adamx.bf16("stochastic")), low_memory=True),
      JaxImpl("adamx.adamw 8-bit", lambda: adamx.compress_state(
          adamx.adamw(lr, weight_decay=wd), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit()),
          low_memory=True),
      JaxImpl("adamx.adamw factored", lambda: adamx.adamw(lr, weight_decay=wd, factored=True), low_memory=True),
  ]


def torch_impls(lr: float = 1e-3, wd: float = 1e-2) -> list[tuple[str, Any, dict[str, Any]]]:
  import torch

  adamw = torch.optim.AdamW
  return [
      ("torch AdamW for-loop", adamw, dict(lr=lr, weight_decay=wd, foreach=False)),
      ("torch AdamW foreach", adamw, dict(lr=lr, weight_decay=wd, foreach=True)),
      ("torch AdamW fused", adamw, dict(lr=lr, weight_decay=wd, fused=True)),
  ]


def run(trees: Sequence[Tree], steps: int, *, with_torch: bool = True, log: Callable[[str], None] = print
        ) -> list[Result]:
  from adamx import _fused

  fused_available, why_not = _fused.kernel_available()  # builds adamx.apply_step's kernel on its first use
  if not fused_available:
    log(f"skipping the fused rows: {why_not}")
  results = []
  for tree in trees:
    for impl in jax_impls():
      if (impl.flat and len(tree.leaves) == 1) or (impl.low_memory and len(tree.leaves) > LOW_MEMORY_MAX_LEAVES):
        continue
      if impl.fused and not fused_available:
        continue
      ms, comp, hb, sb = time_jax(impl.make(), tree, steps, impl.flat, impl.fused, impl.identity)
      results.append(Result(tree.name, tree.size, len(tree.leaves), impl.name, ms, comp, hb, sb))
      log(f"{tree.name:>26}  {impl.name:<32} {ms:9.3f} ms  compile {comp:6.2f} s  HLO {hb:5.1f} B/param")
    if with_torch:
      for name, cls, kw in torch_impls():
        ms, sb = time_torch(cls, kw, tree, steps)
        results.append(Result(tree.name, tree.size, len(tree.leaves), name, ms, None, None, sb))
        log(f"{tree.name:>26}  {name:<32} {ms:9.3f} ms")
  return results


def environment() -> dict[str, str]:
  """Machine and versions, for the header of RESULTS.md."""
  import optax

  import adamx

  env = {
      "date": datetime.date.today().isoformat(),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
      "jax backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
      "python": platform.python_version(),
      "jax": jax.__version__,
      "optax": optax.__version__,
      "adamx": adamx.__version__,
      "numpy": np.__version__,
  }
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    if model:
      env["machine"] = f"{model}, {os.cpu_count()} CPUs"
  except OSError:
    pass
  try:
    import torch

    env["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
  except ImportError:
    env["torch"] = "not installed"
  return env


def table(results: Sequence[Result], triad_gbps: float) -> str:
  """A Markdown table, one row per (tree, implementation), with ratios against optax.adamw and torch fused."""
  by = {(r.tree, r.impl): r for r in results}
  head = ("| tree | implementation | step ms | vs optax.adamw | vs torch fused | GB/s (28 B/param) | roofline | "
          "compile s | HLO B/param | state B/param |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in results:
    optax_r = by.get((r.tree, "optax.adamw"))
    torch_r = by.get((r.tree, "torch AdamW fused"))
    vs_optax = f"{optax_r.step_ms / r.step_ms:.2f}x" if optax_r else "-"
    vs_torch = f"{torch_r.step_ms / r.step_ms:.2f}x" if torch_r else "-"
    comp = f"{r.compile_s:.2f}" if r.compile_s is not None else "-"
    hb = f"{r.hlo_bytes_per_param:.1f}" if r.hlo_bytes_per_param is not None else "-"
    sb = f"{r.state_bytes_per_param:.1f}" if r.state_bytes_per_param is not None else "-"
    lines.append(f"| {r.tree} | {r.impl} | {r.step_ms:.3f} | {vs_optax} | {vs_torch} | {r.gbps():.1f} | "
                 f"{r.gbps() / triad_gbps:.0%} | {comp} | {hb} | {sb} |")
  return "\n".join(lines)


def plot(results: Sequence[Result], path: str) -> bool:
  """Step time vs parameter count for the single-leaf trees, one line per implementation, and bars for the
  many-leaf trees; one colour per implementation in both panels. False without matplotlib."""
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return False
  impls = list(dict.fromkeys(r.impl for r in results))
  cmap = plt.get_cmap("tab20")
  color = {impl: cmap(i % 20) for i, impl in enumerate(impls)}
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5))
  single = [r for r in results if r.n_leaves == 1 and "identity" not in r.impl]  # the floor is ~0.01 ms there
  for impl in dict.fromkeys(r.impl for r in single):
    rs = sorted((r for r in single if r.impl == impl), key=lambda r: r.n_params)
    ax1.plot([r.n_params for r in rs], [r.step_ms for r in rs], marker="o", color=color[impl],
             linewidth=2.5 if "fused" in impl else 1.2)
  ax1.set(xscale="log", yscale="log", xlabel="parameters (one leaf)", ylabel="step time (ms, best)",
          title="One leaf: step time vs size")
  ax1.grid(True, which="both", alpha=0.3)
  multi = [r for r in results if r.n_leaves > 1]
  trees = list(dict.fromkeys(r.tree for r in multi))
  multi_impls = list(dict.fromkeys(r.impl for r in multi))
  width = 0.8 / max(len(multi_impls), 1)
  for j, impl in enumerate(multi_impls):
    vals = [next((r.step_ms for r in multi if r.tree == t and r.impl == impl), np.nan) for t in trees]
    ax2.bar(np.arange(len(trees)) + j * width, vals, width, color=color[impl])
  ax2.set_xticks(np.arange(len(trees)) + 0.4 - width / 2, trees, fontsize=8)
  ax2.set(yscale="log", ylabel="step time (ms, best)", title="Many leaves")
  handles = [plt.Line2D([], [], color=color[i], linewidth=6) for i in impls]
  fig.legend(handles, impls, loc="center right", fontsize=8, frameon=False)
  fig.tight_layout(rect=(0, 0, 0.8, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True
