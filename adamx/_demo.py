"""``python -m adamx demo``: train a small character-level transformer with adamx, cross-checked against optax.

The model is a pre-LayerNorm decoder-only transformer written in plain JAX (no neural-network library), trained
on bytes (vocabulary 256) of text every Python install ships: the standard library's own top-level ``.py`` files,
read in sorted order up to a byte budget (the last tenth is held out for the eval loss). The default run trains
with AdamW under a warmup-cosine schedule, trains the same model with optax's counterpart of the same optimizer on
the same batches and reports the largest loss difference between the two curves, then compares with Adam (coupled
L2, ``adamx.adam(weight_decay=...)``) and SGD with momentum (``optax.sgd``: adamx has no plain momentum transform).
At the end it prints a table (final loss, eval loss, ms/step without compilation, optimizer-state bytes), writes a
loss and learning-rate plot and saves the trained weights (``.npz``) for ``--finetune``, which continues from them
at a small learning rate with warmup.

The progress bar, the plot and the optax runs need ``pip install "adamx[demo]"`` (tqdm, matplotlib, optax),
imported only here and only when the demo runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adamx import _base, registry
from adamx.state import state_bytes
from adamx import schedules as _schedules
from adamx.optimizers import _adam, _schedule_free
from adamx.transforms import _partition

#: Optimizers the demo can train with: every registered one whose ``update`` needs nothing but the gradients
#: (Sophia's also needs the objective for its Hessian estimate).
CHOICES: tuple[str, ...] = tuple(s.name for s in registry.OPTIMIZERS if s.update_kwargs is None)
CHECKPOINT = "demo_checkpoint.npz"
_MODEL_FIELDS = ("d_model", "n_layers", "n_heads", "seq_len")
#: The default peak learning rate is this multiple of the optimizer's own default (AdamW: 3e-3; Lion: 3e-4).
_LR_MULTIPLE = 3.0
_FINETUNE_LR = 3e-5  # the fine-tuning peak for AdamW (scaled like the default rate for other optimizers)
_SGD_LR = 0.3  # SGD with momentum 0.9: the peak rate of the comparison run
#: Peak rates that do not follow the rule above. LAMB's trust ratio makes each layer's step lr x ||w||, and the
#: weights here start at norm ~0.02 x sqrt(size): at 3e-3 it barely moves (0.09 nats in 40 tiny steps), at 3e-2
#: it learns about as fast as AdamW.
_PEAK_LR = MappingProxyType({"lamb": 3e-2})


@dataclasses.dataclass
class DemoConfig:
  """Everything one demo run depends on; :func:`run_demo` validates it and ``python -m adamx demo`` builds it.

  Attributes:
    steps: training steps per run.
    optimizer: an adamx registry name (:data:`CHOICES`).
    lr: the peak learning rate; ``None``: 3x the optimizer's default (AdamW 3e-3, Lion 3e-4; LAMB 3e-2), and
      100x less with ``finetune`` (AdamW 3e-5).
    weight_decay: passed to every optimizer that takes it (decoupled for AdamW, coupled L2 for Adam), masked by
      :func:`adamx.decay_mask` where the optimizer takes a mask.
    seed: seeds the initialisation and the batches (every run of one demo sees the same batches).
    batch_size: sequences per batch.
    out: directory of the plot and the checkpoint; ``None``: ``<tempdir>/adamx-demo``.
    finetune: start from the checkpoint in ``out`` at the fine-tuning rate, 10% warmup.
    compare: also run optax's counterpart of the optimizer, on the same batches, and report the loss gap.
    baselines: with ``compare``, and when not fine-tuning, also run Adam (coupled L2) and SGD with momentum.
    d_model, n_layers, n_heads, seq_len: the model (taken from the checkpoint with ``finetune``).
    corpus_kb: kilobytes of standard-library source read.
    eval_every: steps between eval losses (``0``: about ten evaluations per run).
    progress: show a progress bar; ``None``: only on a terminal.
    plot: write the PNG.
  """

  steps: int = 400
  optimizer: str = "adamw"
  lr: float | None = None
  weight_decay: float = 0.1
  seed: int = 0
  batch_size: int = 16
  out: str | None = None
  finetune: bool = False
  compare: bool = True
  baselines: bool = True
  d_model: int = 128
  n_layers: int = 2
  n_heads: int = 4
  seq_len: int = 64
  corpus_kb: int = 400
  eval_every: int = 0
  progress: bool | None = None
  plot: bool = True


@dataclasses.dataclass
class Run:
  """One training run: its per-step losses and learning rates, eval losses, timing and state size."""

  name: str
  losses: np.ndarray
  lrs: np.ndarray
  eval_steps: list[int]
  eval_losses: list[float]
  ms_per_step: float
  compile_s: float
  state_bytes: int
  params: Any = dataclasses.field(repr=False, default=None)

  def final_loss(self) -> float:
    """The mean training loss of the last tenth of the steps (at most 20 steps)."""
    k = max(1, min(20, len(self.losses) // 10))
    return float(np.mean(self.losses[-k:]))


@dataclasses.dataclass
class DemoResult:
  """What :func:`run_demo` returns: every run (the first is the adamx run), the adamx-optax loss gap, files."""

  runs: list[Run]
  max_loss_diff: float | None
  plot_path: str | None
  checkpoint_path: str
  corpus_bytes: int


# ------------------------------------------------------------------------------------------------ validation


def _fail(name: str, constraint: str, value: Any) -> None:
  raise ValueError(f"adamx demo: {name} must be {constraint}, got {value!r}")


def validate(config: DemoConfig) -> None:
  """Raise a ValueError naming the first bad field of ``config``."""
  for name in ("steps", "batch_size", "d_model", "n_layers", "n_heads", "seq_len", "corpus_kb"):
    v = getattr(config, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      _fail(name, "a positive integer", v)
  if isinstance(config.eval_every, bool) or not isinstance(config.eval_every, int) or config.eval_every < 0:
    _fail("eval_every", "a non-negative integer", config.eval_every)
  if config.optimizer not in CHOICES:
    _fail("optimizer", "one of " + ", ".join(CHOICES), config.optimizer)
  if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
    _fail("lr", "a finite number > 0", config.lr)
  if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
    _fail("weight_decay", "a finite number >= 0", config.weight_decay)
  if config.d_model % config.n_heads:
    _fail("d_model", f"a multiple of n_heads={config.n_heads}", config.d_model)
  if config.finetune and not os.path.exists(checkpoint_path(config)):
    raise ValueError(f"adamx demo: --finetune needs the checkpoint {checkpoint_path(config)}, which does not "
                     "exist: run `python -m adamx demo` with the same --out first")


def out_dir(config: DemoConfig) -> str:
  """The directory of the plot and the checkpoint."""
  return config.out if config.out is not None else os.path.join(tempfile.gettempdir(), "adamx-demo")


def checkpoint_path(config: DemoConfig) -> str:
  return os.path.join(out_dir(config), CHECKPOINT)


def _require(*names: str) -> list[Any]:
  missing, mods = [], []
  for name in names:
    try:
      mods.append(importlib.import_module(name))
    except ImportError:
      missing.append(name)
  if missing:
    raise ImportError(f"adamx demo needs {', '.join(missing)}: pip install \"adamx[demo]\"")
  return mods


# ------------------------------------------------------------------------------------------------ data


def corpus(kilobytes: int) -> np.ndarray:
  """Bytes of the standard library's top-level ``.py`` files, in sorted order, the first ``kilobytes`` KB."""
  files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
  budget, chunks = kilobytes * 1024, []
  for f in files:
    with open(f, "rb") as fh:
      chunks.append(fh.read(budget))
    budget -= len(chunks[-1])
    if budget <= 0:
      break
  return np.frombuffer(b"".join(chunks), np.uint8)


def batch_starts(seed: int, n_bytes: int, steps: int, batch_size: int, seq_len: int) -> np.ndarray:
  """``[steps, batch_size]`` random window offsets into ``n_bytes`` of training data, seeded (drawn on the host:
  a PRNG inside the jitted step would only add to its compilation time)."""
  return np.random.default_rng(seed).integers(0, n_bytes - seq_len - 1, size=(steps, batch_size), dtype=np.int32)


def _batch(data: jax.Array, starts: jax.Array, seq_len: int) -> tuple[jax.Array, jax.Array]:
  chunk = data[starts[:, None] + jnp.arange(seq_len + 1)[None, :]].astype(jnp.int32)
  return chunk[:, :-1], chunk[:, 1:]


# ------------------------------------------------------------------------------------------------ the model


def init_model(key: jax.Array, d_model: int, n_layers: int, n_heads: int, seq_len: int) -> dict[str, Any]:
  """A byte-level decoder-only transformer: GPT-2's initialisation, the residual projections scaled by depth."""
  del n_heads  # the heads split d_model; no parameter depends on their number
  keys = iter(jax.random.split(key, 3 + 4 * n_layers))
  d, std = d_model, 0.02

  def dense(k, n_in, n_out, scale=std):
    return {"kernel": scale * jax.random.normal(k, (n_in, n_out)), "bias": jnp.zeros(n_out)}

  def norm():
    return {"scale": jnp.ones(d), "bias": jnp.zeros(d)}

  resid = std / math.sqrt(2 * n_layers)
  blocks = [{"ln1": norm(), "qkv": dense(next(keys), d, 3 * d), "proj": dense(next(keys), d, d, resid),
             "ln2": norm(), "fc": dense(next(keys), d, 4 * d), "fc_out": dense(next(keys), 4 * d, d, resid)}
            for _ in range(n_layers)]
  return {"embed_tokens": std * jax.random.normal(next(keys), (256, d)),
          "embed_pos": std * jax.random.normal(next(keys), (seq_len, d)),
          "blocks": blocks, "ln_f": norm(), "head": dense(next(keys), d, 256)}


def _row(v: jax.Array, x: jax.Array) -> jax.Array:
  return v.reshape((1,) * (x.ndim - 1) + v.shape)  # explicit broadcasting (rank promotion may be "raise")


def _linear(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  return x @ p["kernel"] + _row(p["bias"], x)


def _layer_norm(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + 1e-5) * _row(p["scale"], x) + _row(p["bias"], x)


def forward(params: dict[str, Any], tokens: jax.Array, n_heads: int) -> jax.Array:
  """Logits ``[batch, time, 256]`` for byte tokens ``[batch, time]``."""
  b, t = tokens.shape
  x = params["embed_tokens"][tokens] + params["embed_pos"][None, :t]
  causal = jnp.tril(jnp.ones((t, t), bool))[None, None]
  for blk in params["blocks"]:
    q, k, v = jnp.split(_linear(blk["qkv"], _layer_norm(blk["ln1"], x)), 3, axis=-1)
    q, k, v = (a.reshape(b, t, n_heads, -1) for a in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    attn = jax.nn.softmax(jnp.where(causal, scores, -1e30), axis=-1)
    x = x + _linear(blk["proj"], jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, t, -1))
    x = x + _linear(blk["fc_out"], jax.nn.gelu(_linear(blk["fc"], _layer_norm(blk["ln2"], x))))
  return _linear(params["head"], _layer_norm(params["ln_f"], x))


def loss_fn(params: dict[str, Any], x: jax.Array, y: jax.Array, n_heads: int) -> jax.Array:
  """The mean next-byte cross-entropy, in nats."""
  logits = forward(params, x, n_heads)
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))


# ------------------------------------------------------------------------------------------------ training

_evaluate = jax.jit(loss_fn, static_argnames="n_heads")  # one compilation for every run of a demo


def _copy(tree: Any) -> Any:
  # Every run donates its params and state: give each its own buffers (an init may alias, Schedule-Free's z = params).
  return jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


def _eval_windows(data: np.ndarray, seq_len: int, n: int = 32) -> tuple[jax.Array, jax.Array]:
  stride = max(1, (len(data) - seq_len - 1) // n)
  idx = np.arange(n)[:, None] * stride + np.arange(seq_len + 1)[None, :]
  chunk = jnp.asarray(data[np.minimum(idx, len(data) - 1)], jnp.int32)
  return chunk[:, :-1], chunk[:, 1:]


def train(name: str, tx: Any, params: Any, apply_updates: Callable[[Any, Any], Any], lrs: np.ndarray,
          train_data: jax.Array, eval_xy: tuple[jax.Array, jax.Array], config: DemoConfig,
          eval_params: Callable[[Any, Any], Any] | None = None, tqdm: Any = None) -> Run:
  """Train ``params`` (copied) with ``tx`` for ``len(lrs)`` steps on seeded batches; time the jitted step."""
  n_heads, steps = config.n_heads, len(lrs)
  seed = config.seed + (2 if config.finetune else 1)  # fine-tuning draws other windows than the training run
  starts = jnp.asarray(batch_starts(seed, train_data.shape[0], steps, config.batch_size, config.seq_len))

  def step(params, opt_state, count):
    x, y = _batch(train_data, jax.lax.dynamic_index_in_dim(starts, count, keepdims=False), config.seq_len)
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, n_heads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates), opt_state, loss

  params = _copy(params)
  opt_state = _copy(tx.init(params))
  nbytes = int(state_bytes(opt_state))
  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, jnp.int32(0)).compile()
  compile_s = time.perf_counter() - t0
  every = config.eval_every or max(1, steps // 10)
  losses, eval_steps, eval_losses, elapsed = [], [], [], 0.0
  bar = tqdm(total=steps, desc=f"{name:>14}", disable=None if config.progress is None else not config.progress,
             leave=True, file=sys.stderr) if tqdm is not None else None
  live, postfix = bar is not None and not bar.disable, {}
  for start in range(0, steps, every):
    t0 = time.perf_counter()
    for i in range(start, min(start + every, steps)):
      params, opt_state, loss = compiled(params, opt_state, jnp.int32(i))
      losses.append(loss)
      if live:  # reading the loss waits for the step: only every 10 steps, for the bar
        if i % 10 == 0:
          postfix.update(loss=f"{float(loss):.3f}", lr=f"{lrs[i]:.2e}")
          bar.set_postfix(postfix, refresh=False)
        bar.update(1)
    loss.block_until_ready()
    elapsed += time.perf_counter() - t0
    p_eval = eval_params(opt_state, params) if eval_params is not None else params
    eval_steps.append(i + 1)
    eval_losses.append(float(_evaluate(p_eval, *eval_xy, n_heads)))
    postfix["eval"] = f"{eval_losses[-1]:.3f}"
  if bar is not None:
    bar.set_postfix(postfix)
    bar.close()
  final = eval_params(opt_state, params) if eval_params is not None else params
  return Run(name, np.asarray(jnp.stack(losses)), lrs, eval_steps, eval_losses, 1e3 * elapsed / steps, compile_s,
             nbytes, final)


def _peak_lr(config: DemoConfig, spec: registry.OptimizerSpec) -> float:
  if config.lr is not None:
    return config.lr
  adamw_lr = registry.get("adamw").defaults()["learning_rate"]
  peak = _PEAK_LR.get(spec.name, _LR_MULTIPLE * spec.defaults()["learning_rate"])
  return peak * _FINETUNE_LR / (_LR_MULTIPLE * adamw_lr) if config.finetune else peak


def _schedule(peak: float, steps: int, constant: bool) -> Callable[[Any], Any]:
  warmup = max(1, steps // 10)
  if constant:  # Schedule-Free: the rate is part of the averaging, so warmup then constant
    return _schedules.warmup_constant_schedule(0.0, peak, warmup)
  return _schedules.warmup_cosine_schedule(0.0, peak, warmup, steps, end_value=peak / 10)


def _factory_kwargs(spec: registry.OptimizerSpec, config: DemoConfig) -> dict[str, Any]:
  defaults = spec.defaults()
  kw = {}
  if "weight_decay" in defaults:
    kw["weight_decay"] = config.weight_decay
  if "mask" in defaults:
    kw["mask"] = _partition.decay_mask
  return kw


def save_checkpoint(path: str, params: Any, config: DemoConfig) -> None:
  """The params as ``.npz`` (leaves in tree order) with the model configuration."""
  model = {k: getattr(config, k) for k in _MODEL_FIELDS}
  leaves = {f"leaf_{i:04d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
  np.savez(path, model=np.asarray(json.dumps(model)), **leaves)


def load_checkpoint(path: str) -> tuple[dict[str, int], Any]:
  """The model configuration and params saved by :func:`save_checkpoint`."""
  with np.load(path) as f:
    model = json.loads(str(f["model"]))
    leaves = [jnp.asarray(f[k]) for k in sorted(k for k in f.files if k.startswith("leaf_"))]
  template = jax.eval_shape(lambda: init_model(jax.random.key(0), **model))
  shapes = [x.shape for x in jax.tree.leaves(template)]
  if shapes != [x.shape for x in leaves]:
    raise ValueError(f"adamx demo: {path} does not hold a demo model of configuration {model}")
  return model, jax.tree.unflatten(jax.tree.structure(template), leaves)


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
  """Train, compare, tabulate, plot and save; see the module docstring. Returns the runs and the files written."""
  validate(config)
  compare_ok = config.compare
  (tqdm_mod,) = _require("tqdm")
  optax = _require("optax")[0] if compare_ok else None
  config = dataclasses.replace(config)
  if config.finetune:
    model, init = load_checkpoint(checkpoint_path(config))
    for k, v in model.items():
      setattr(config, k, v)
    log(f"fine-tuning from {checkpoint_path(config)} (model {model})")
  data = corpus(config.corpus_kb)
  split = len(data) * 9 // 10
  if split - config.seq_len - 1 < 1 or len(data) - split < config.seq_len + 1:
    _fail("corpus_kb", f"large enough for two splits of seq_len={config.seq_len} bytes", config.corpus_kb)
  train_data, eval_xy = jnp.asarray(data[:split]), _eval_windows(data[split:], config.seq_len)
  if not config.finetune:
    init = init_model(jax.random.key(config.seed), *(getattr(config, k) for k in _MODEL_FIELDS))
  n_params = sum(x.size for x in jax.tree.leaves(init))
  log(f"model: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, context "
      f"{config.seq_len}, {n_params:,} params; data: {len(data):,} bytes of the standard library "
      f"({os.path.dirname(os.__file__)}), 10% held out; {config.steps} steps of batch {config.batch_size}")

  spec = registry.get(config.optimizer)
  peak = _peak_lr(config, spec)
  schedule = _schedule(peak, config.steps, spec.constant_rate)
  lrs = np.asarray(jax.vmap(schedule)(jnp.arange(config.steps)))
  kw = _factory_kwargs(spec, config)
  sf_eval = _schedule_free.schedule_free_eval_params if spec.constant_rate else None
  common = dict(train_data=train_data, eval_xy=eval_xy, config=config, tqdm=tqdm_mod.tqdm)
  runs = [train(f"adamx.{spec.name}", spec.factory(learning_rate=schedule, **kw), init, _base.apply_updates, lrs,
                eval_params=sf_eval, **common)]
  max_diff = None
  if compare_ok:
    twin = spec.optax(optax, spec.full_kwargs(learning_rate=schedule, **kw)) if spec.optax else None
    if twin is None:
      log(f"optax has no counterpart of adamx.{spec.name}: no cross-check")
    else:
      twin_eval = optax.contrib.schedule_free_eval_params if spec.constant_rate else None
      runs.append(train(f"optax.{spec.name}", twin, init, optax.apply_updates, lrs, eval_params=twin_eval, **common))
      max_diff = float(np.max(np.abs(runs[0].losses - runs[1].losses)))
    if config.baselines and not config.finetune:
      if spec.name != "adam":
        adam = _adam.adam(learning_rate=_schedule(peak, config.steps, False), weight_decay=config.weight_decay)
        runs.append(train("adamx.adam+L2", adam, init, _base.apply_updates, lrs, **common))
      sgd_lrs = np.asarray(jax.vmap(_schedule(_SGD_LR, config.steps, False))(jnp.arange(config.steps)))
      sgd = optax.sgd(_schedule(_SGD_LR, config.steps, False), momentum=0.9)
      runs.append(train("optax.sgd", sgd, init, optax.apply_updates, sgd_lrs, **common))

  os.makedirs(out_dir(config), exist_ok=True)
  ckpt = os.path.join(out_dir(config), "demo_finetuned.npz" if config.finetune else CHECKPOINT)
  save_checkpoint(ckpt, runs[0].params, config)
  log("")
  log(format_table(runs))
  if max_diff is not None:
    k = max(2, min(20, config.steps // 10))
    spread = float(np.std(runs[0].losses[-k:])) if config.steps >= 2 else 0.0
    log(f"\nadamx vs optax {spec.name}: max |loss difference| over {config.steps} steps = {max_diff:.2e} "
        f"(the loss itself varies by {spread:.2e} from batch to batch over the last {min(k, config.steps)} steps)")
  plot_path = None
  if config.plot:
    plot_path = os.path.join(out_dir(config), "demo_finetune.png" if config.finetune else "demo.png")
    plot(runs, plot_path, title=f"adamx demo: {'fine-tuning' if config.finetune else 'training'} a byte-level "
         f"transformer on the standard library")
    log(f"plot: {plot_path}")
  log(f"weights: {ckpt}" + ("" if config.finetune else "  (continue with --finetune)"))
  return DemoResult(runs, max_diff, plot_path, ckpt, len(data))


def format_table(runs: Sequence[Run]) -> str:
  """The results table: optimizer, final training loss, last eval loss, ms/step, compile seconds, state bytes."""
  head = ("optimizer", "final loss", "eval loss", "ms/step", "compile s", "state bytes")
  rows = [(r.name, f"{r.final_loss():.4f}", f"{r.eval_losses[-1]:.4f}", f"{r.ms_per_step:.1f}", f"{r.compile_s:.1f}",
           f"{r.state_bytes:,}") for r in runs]
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

  def fmt(cells):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

  return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(row) for row in rows)])


def plot(runs: Sequence[Run], path: str, title: str = "") -> None:
  """Training loss (faint, per step), eval loss (markers) and learning rate of every run, as a PNG (Agg)."""
  (figure_mod,) = _require("matplotlib.figure")
  fig = figure_mod.Figure(figsize=(11, 4.2), layout="constrained")
  ax_loss, ax_lr = fig.subplots(1, 2, width_ratios=(2, 1))
  twin_name = "optax." + runs[0].name.split(".", 1)[1]
  for i, r in enumerate(runs):
    dashed = i > 0 and r.name == twin_name  # optax's twin of the adamx run: the same colour, dashed on top
    color = "C0" if dashed else f"C{i}"
    steps = np.arange(1, len(r.losses) + 1)
    ax_loss.plot(steps, r.losses, color=color, alpha=0.35 if not dashed else 0.9, lw=0.8,
                 ls="--" if dashed else "-")
    ax_loss.plot(r.eval_steps, r.eval_losses, "o" if not dashed else "x", color=color, ms=4,
                 label=f"{r.name} (eval {r.eval_losses[-1]:.3f})", ls="--" if dashed else "-")
    ax_lr.plot(steps, r.lrs, color=color, ls="--" if dashed else "-", label=r.name)
  ax_loss.set(xlabel="step", ylabel="loss (nats/byte)", title="training (line) and eval (markers) loss")
  ax_loss.legend(fontsize=8)
  ax_lr.set(xlabel="step", ylabel="learning rate", yscale="log", title="learning rate")
  if title:
    fig.suptitle(title)
  fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------------ the CLI


def _positive_int(s: str) -> int:
  try:
    v = int(s)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
  if v < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
  return v


def _positive_float(s: str) -> float:
  try:
    v = float(s)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a number > 0, got {s!r}") from None
  if not (math.isfinite(v) and v > 0):
    raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s!r}")
  return v


def parser() -> argparse.ArgumentParser:
  """The ``python -m adamx demo`` argument parser."""
  d = DemoConfig()
  p = argparse.ArgumentParser(
      prog="python -m adamx demo",
      description="Train a small byte-level transformer on the standard library's source with adamx, cross-checked "
      "against optax, compared with Adam (L2) and SGD; print a table, save a loss plot and the weights.")
  p.add_argument("--steps", type=_positive_int, default=d.steps, help="training steps per run (%(default)s)")
  p.add_argument("--optimizer", choices=CHOICES, default=d.optimizer, metavar="NAME",
                 help="adamx optimizer (%(default)s): " + ", ".join(CHOICES))
  p.add_argument("--lr", type=_positive_float, default=None,
                 help="peak learning rate (default: 3x the optimizer's default, AdamW 3e-3; 100x less with --finetune)")
  p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                 help="weight decay, coupled L2 for Adam (%(default)s)")
  p.add_argument("--seed", type=int, default=d.seed, help="seed of the initialisation and the batches (%(default)s)")
  p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="sequences per batch (%(default)s)")
  p.add_argument("--out", default=None, help="directory of the plot and the weights (default: <tempdir>/adamx-demo)")
  p.add_argument("--finetune", action="store_true", help="continue from the weights saved in --out at a small lr")
  p.add_argument("--no-compare", dest="compare", action="store_false",
                 help="train only the adamx run: no optax cross-check, no Adam/SGD comparison")
  p.add_argument("--no-baselines", dest="baselines", action="store_false",
                 help="keep the optax cross-check, skip the Adam (L2) and SGD runs")
  g = p.add_argument_group("model and data (small values for a quick look)")
  g.add_argument("--d-model", type=_positive_int, default=d.d_model, help="width (%(default)s)")
  g.add_argument("--layers", dest="n_layers", type=_positive_int, default=d.n_layers, help="blocks (%(default)s)")
  g.add_argument("--heads", dest="n_heads", type=_positive_int, default=d.n_heads,
                 help="attention heads (%(default)s)")
  g.add_argument("--seq-len", type=_positive_int, default=d.seq_len, help="context in bytes (%(default)s)")
  g.add_argument("--corpus-kb", type=_positive_int, default=d.corpus_kb,
                 help="KB of standard-library source read (%(default)s)")
  g.add_argument("--eval-every", type=int, default=d.eval_every,
                 help="steps between eval losses (default 0: a tenth of the steps)")
  g.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the PNG")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Parse the flags, run the demo; a bad flag exits with status 2 and a message naming it."""
  p = parser()
  args = p.parse_args(argv)
  config = DemoConfig(**vars(args))
  try:
    validate(config)
  except ValueError as e:
    p.error(str(e).removeprefix("adamx demo: "))
  try:
    run_demo(config)
  except ImportError as e:
    print(e, file=sys.stderr)
    return 1
  return 0
