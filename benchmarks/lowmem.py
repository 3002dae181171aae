"""``python -m benchmarks.lowmem``: the same small model trained with AdamW and each low-memory state.

A seeded MLP (32 -> 128 -> 128 -> 32, tanh; 24,864 parameters, every matrix at least 4,096 values so that the
default ``min_size`` compresses it and only the biases stay float32) regresses a fixed random teacher network
(the same shape, plus noise) with mini-batch AdamW and a warmup-cosine schedule, for each state storage:

* float32 (``adamx.adamw``), the baseline;
* bf16 round-to-nearest (``compress_state(mu=bf16(), nu=bf16())``, the numbers of ``mu_dtype=nu_dtype=bfloat16``);
* bf16 with stochastic rounding (``bf16("stochastic")`` for both moments);
* 8-bit block-wise (``blockwise_8bit()`` for both moments, Dettmers et al. 2022);
* factored second moment (``adamx.adamw(factored=True)``), if this adamx has it.

Each is run for ``--seeds`` seeds (data order and initialisation); the table gives the mean final train and test
loss (the spread is the min-max over seeds), the ratio to float32 and the state bytes per parameter from
``adamx.state_bytes``. Writes ``benchmarks/lowmem_results.md`` and ``benchmarks/lowmem_curves.png``. No timing:
the numbers are losses and bytes, deterministic given the seeds on one machine.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import pathlib
import platform
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import adamx

HERE = pathlib.Path(__file__).resolve().parent
SIZES = (32, 128, 128, 32)
N_TRAIN, N_TEST, BATCH = 4096, 1024, 128


def _mlp(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  for i, layer in enumerate(params):
    x = x @ layer["w"] + layer["b"][None, :]
    if i < len(params) - 1:
      x = jnp.tanh(x)
  return x


def _init(rng: np.random.Generator) -> list[dict[str, jax.Array]]:
  return [{"w": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32), "b": jnp.zeros(b, jnp.float32)}
          for a, b in zip(SIZES[:-1], SIZES[1:])]


def task(seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The fixed regression task: ``(x_train, y_train, x_test, y_test)`` from a random teacher MLP, plus noise."""
  rng = np.random.default_rng(seed)
  teacher = [{"w": layer["w"] * 1.0, "b": jnp.asarray(rng.normal(size=layer["b"].shape) * 0.1, jnp.float32)}
             for layer in _init(rng)]
  x = jnp.asarray(rng.normal(size=(N_TRAIN + N_TEST, SIZES[0])), jnp.float32)
  y = _mlp(teacher, x) + jnp.asarray(rng.normal(size=(N_TRAIN + N_TEST, SIZES[-1])) * 0.05, jnp.float32)
  return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _loss(params, x, y):
  return jnp.mean((_mlp(params, x) - y) ** 2)


def configs(steps: int) -> dict[str, Callable[[], adamx.GradientTransformation]]:
  lr = adamx.warmup_cosine_schedule(0.0, 3e-3, warmup_steps=steps // 20, decay_steps=steps, end_value=3e-5)

  def adamw(**kw):
    return adamx.adamw(lr, weight_decay=1e-4, **kw)

  out = {
      "float32": adamw,
      "bf16 nearest": lambda: adamx.compress_state(adamw(), mu=adamx.bf16(), nu=adamx.bf16()),
      "bf16 stochastic": lambda: adamx.compress_state(adamw(), mu=adamx.bf16("stochastic"),
                                                      nu=adamx.bf16("stochastic")),
      "8-bit blockwise": lambda: adamx.compress_state(adamw(), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit()),
  }
  if "factored" in inspect.signature(adamx.adamw).parameters:
    out["factored nu"] = lambda: adamw(factored=True)
  return out


def train(tx: adamx.GradientTransformation, data, steps: int, seed: int) -> tuple[np.ndarray, float, float, int]:
  """``(per-step mini-batch losses, final train loss, final test loss, state bytes)``."""
  x, y, x_test, y_test = data
  rng = np.random.default_rng(1000 + seed)
  params = _init(rng)
  batches = jnp.asarray(np.stack([rng.choice(N_TRAIN, BATCH, replace=False) for _ in range(steps)]))
  state = tx.init(params)

  def body(carry, idx):
    p, s = carry
    value, g = jax.value_and_grad(_loss)(p, x[idx], y[idx])
    u, s = tx.update(g, s, p)
    return (adamx.apply_updates(p, u), s), value

  (params, state), losses = jax.jit(lambda p, s, b: jax.lax.scan(body, (p, s), b))(params, state, batches)
  return (np.asarray(losses), float(_loss(params, x, y)), float(_loss(params, x_test, y_test)),
          adamx.state_bytes(state))


def run(steps: int, seeds: int, log=print) -> dict[str, dict]:
  data = task(0)
  n_params = sum(x.size for x in jax.tree.leaves(_init(np.random.default_rng(0))))
  results = {}
  for name, make in configs(steps).items():
    tx = make()
    runs = [train(tx, data, steps, seed) for seed in range(seeds)]
    results[name] = {
        "curves": np.stack([r[0] for r in runs]),
        "train": np.array([r[1] for r in runs]),
        "test": np.array([r[2] for r in runs]),
        "bytes_per_param": runs[0][3] / n_params,
    }
    log(f"{name:>16}: train {results[name]['train'].mean():.4e}  test {results[name]['test'].mean():.4e}  "
        f"state {results[name]['bytes_per_param']:.3f} B/param")
  return results


def table(results: dict[str, dict]) -> str:
  base = results["float32"]
  rows = ["| state | final train loss | final test loss | test loss / float32 | state bytes / param |",
          "| --- | --- | --- | --- | --- |"]
  for name, r in results.items():
    def cell(v):
      return f"{v.mean():.3e} ({v.min():.3e} to {v.max():.3e})" if v.size > 1 else f"{v.mean():.3e}"

    rows.append(f"| {name} | {cell(r['train'])} | {cell(r['test'])} | {r['test'].mean() / base['test'].mean():.4f} "
                f"| {r['bytes_per_param']:.3f} |")
  return "\n".join(rows)


def plot(results: dict[str, dict], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4.2))
  window = 50
  base = None
  for name, r in results.items():
    curve = r["curves"].mean(axis=0)
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    base = smooth if base is None else base
    steps = np.arange(window, curve.size + 1)
    ax.plot(steps, smooth, label=f"{name} ({r['bytes_per_param']:.2f} B/param)")
    rel.plot(steps, smooth / base, label=name)
  ax.set_yscale("log")
  ax.set(xlabel="step", ylabel="mini-batch loss", title=f"loss (mean over seeds, {window}-step average)")
  rel.set(xlabel="step", ylabel="loss / float32 loss", title="relative to float32 state")
  ax.legend()
  for a in (ax, rel):
    a.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.lowmem", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per run (default 1000)")
  parser.add_argument("--seeds", type=int, default=3, help="runs per state storage (default 3)")
  parser.add_argument("--out", default=str(HERE / "lowmem_results.md"), help="Markdown file ('-': stdout only)")
  parser.add_argument("--plot", default=str(HERE / "lowmem_curves.png"), help="PNG plot ('-': none)")
  args = parser.parse_args(argv)
  if args.steps < 20 or args.seeds < 1:
    parser.error("--steps must be >= 20 and --seeds >= 1")
  results = run(args.steps, args.seeds)
  command = "python -m benchmarks.lowmem" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
  text = "\n".join([
      "# Low-memory optimizer state", "",
      f"Command: `{command}`", "",
      f"- date: {datetime.date.today().isoformat()}",
      f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__} ({jax.default_backend()}), "
      f"adamx {adamx.__version__}",
      f"- task: MLP {' -> '.join(map(str, SIZES))} (tanh), {N_TRAIN} train / {N_TEST} test examples of a random "
      f"teacher MLP plus noise, batch {BATCH}, {args.steps} AdamW steps (warmup-cosine to 3e-3, b2 = 0.999), "
      f"{args.seeds} seed(s); losses are the mean over seeds (min to max in brackets)", "",
      table(results), "",
      "State bytes per parameter are `adamx.state_bytes` of the whole optimizer state over the parameter count:",
      "8-bit and bf16 moments cover the matrices (>= 4096 values, the default `min_size`); the biases stay float32.",
      "",
      *(["![train and test loss per step for each state](" + pathlib.Path(args.plot).name + ")", ""]
        if args.plot != "-" else []),
  ])
  print(text)
  if args.out != "-":
    pathlib.Path(args.out).write_text(text)
    print(f"wrote {args.out}")
  if args.plot != "-":
    plot(results, args.plot)
    print(f"wrote {args.plot}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
