"""Generate the notebooks of this directory from the cells below: ``python notebooks/_build.py``.

The ``.ipynb`` files are committed without outputs and must equal what this script writes
(``tests/test_notebooks.py`` checks it, and executes each one). Edit the cells here, never the notebooks.
Each cell is a string: a leading ``"## "``-style markdown line makes it a markdown cell (``MD`` prefix), anything
else is code.
"""

from __future__ import annotations

import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
MD = "\x00md\x00"  # prefix of a markdown cell


def md(text: str) -> str:
  return MD + text.strip("\n")


QUICKSTART = [
    md("""
# adamx quickstart

adamx is a library of Adam-family optimizers for JAX with optax's protocol: an optimizer is a pure
`init(params) -> state` / `update(grads, state, params) -> (updates, state)` pair, and its state is a pytree of
arrays. This notebook trains a small model with a jitted step, then trains it again with optax and checks, step by
step, that the parameters and the optimizer state agree.
"""),
    """\
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import adamx

print("adamx", adamx.__version__, "| jax", jax.__version__, "| optax", optax.__version__)""",
    md("""
## A problem

A two-layer MLP fitting a noisy 1-D function. The params are a plain dict; any pytree works.
"""),
    """\
key_x, key_noise, key_init = jax.random.split(jax.random.key(0), 3)
x = jax.random.uniform(key_x, (256, 1), minval=-3.0, maxval=3.0)
y = jnp.sin(2.0 * x) + 0.1 * jax.random.normal(key_noise, x.shape)


def init_mlp(key, hidden=32):
  k1, k2 = jax.random.split(key)
  return {"dense1": {"kernel": jax.random.normal(k1, (1, hidden)), "bias": jnp.zeros((1, hidden))},
          "dense2": {"kernel": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden), "bias": jnp.zeros((1, 1))}}


def loss_fn(params, x, y):
  h = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  return jnp.mean((h @ params["dense2"]["kernel"] + params["dense2"]["bias"] - y) ** 2)


params0 = init_mlp(key_init)
print("initial loss", float(loss_fn(params0, x, y)))""",
    md("""
## The training step

AdamW with a warmup-cosine schedule, decay on the kernels only (`adamx.decay_mask` exempts biases, norms and
embeddings). `jax.jit` compiles the whole step once; donating the params and the state lets XLA update them in
place.
"""),
    """\
STEPS = 500
schedule = adamx.warmup_cosine_schedule(init_value=0.0, peak_value=3e-2, warmup_steps=50, decay_steps=STEPS)
tx = adamx.adamw(learning_rate=schedule, weight_decay=1e-3, mask=adamx.decay_mask)


def make_step(tx, apply_updates):
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates), opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1))


train_step = make_step(tx, adamx.apply_updates)
params = jax.tree.map(jnp.copy, params0)  # a copy: the step donates (deletes) its inputs
opt_state = tx.init(params)
losses = []
for _ in range(STEPS):
  params, opt_state, loss = train_step(params, opt_state, x, y)
  losses.append(float(loss))
print(f"loss after {STEPS} steps: {losses[-1]:.4f}")""",
    """\
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.semilogy(losses)
ax1.set(xlabel="step", ylabel="training loss")
grid = jnp.linspace(-3, 3, 200)[:, None]
ax2.plot(x[:, 0], y[:, 0], ".", ms=3, alpha=0.5, label="data")
h = jnp.tanh(grid @ params["dense1"]["kernel"] + params["dense1"]["bias"])
ax2.plot(grid[:, 0], (h @ params["dense2"]["kernel"] + params["dense2"]["bias"])[:, 0], label="fit")
ax2.legend()
plt.show()""",
    md("""
## The same run with optax

optax's `adamw` with the same schedule and mask. adamx's state has optax's layout (a `ScaleByAdamState` with
`count`, `mu`, `nu`), so params *and* moments can be compared at every step. The only expected difference is
float32 rounding plus optax's bias correction `1 - b2**t` computed from `b2` rounded to float32 (about 2e-5
relative); adamx computes it to about 2e-7.
"""),
    """\
otx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-2, 50, STEPS), weight_decay=1e-3,
                  mask=adamx.decay_mask)
optax_step = make_step(otx, optax.apply_updates)


def rel_err(a, b):
  \"\"\"The normwise relative difference of two pytrees.\"\"\"
  a, b = (jnp.concatenate([v.ravel() for v in jax.tree.leaves(t)]) for t in (a, b))
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


p_a, s_a = jax.tree.map(jnp.copy, params0), tx.init(params0)
p_o, s_o = jax.tree.map(jnp.copy, params0), otx.init(params0)
worst = {"params": 0.0, "mu": 0.0, "nu": 0.0}
for _ in range(STEPS):
  p_a, s_a, _ = train_step(p_a, s_a, x, y)
  p_o, s_o, _ = optax_step(p_o, s_o, x, y)
  worst["params"] = max(worst["params"], rel_err(p_a, p_o))
  worst["mu"] = max(worst["mu"], rel_err(s_a[0].mu, s_o[0].mu))
  worst["nu"] = max(worst["nu"], rel_err(s_a[0].nu, s_o[0].nu))
print("largest relative difference over", STEPS, "steps:", {k: f"{v:.1e}" for k, v in worst.items()})
assert max(worst.values()) < 1e-4""",
    md("""
## Mixing with optax

An adamx optimizer is an optax `GradientTransformation` (and the other way round), so the two chain freely:
optax's clipping in front of adamx's AdamW, or adamx's clipping in front of optax's Adam.
"""),
    """\
mixed = optax.chain(optax.clip_by_global_norm(1.0), adamx.adamw(1e-2, weight_decay=1e-3))
mixed_too = adamx.chain(adamx.clip_by_global_norm(1.0), optax.adam(1e-2))
for name, t in [("optax.chain(optax clip, adamx.adamw)", mixed), ("adamx.chain(adamx clip, optax.adam)", mixed_too)]:
  step = make_step(t, adamx.apply_updates)
  p, s = jax.tree.map(jnp.copy, params0), t.init(params0)
  for _ in range(200):
    p, s, loss = step(p, s, x, y)
  print(f"{name}: loss after 200 steps {float(loss):.4f}")""",
    md("""
## Next

* `adam_family_tour.ipynb`: the other optimizers of the registry on Rosenbrock and a noisy quadratic.
* `schedules.ipynb`: every learning-rate schedule, plotted against optax's.
* `low_memory.ipynb`: bfloat16 (and compressed) optimizer state.
* `python -m adamx demo`: a character-level transformer trained with adamx and optax side by side;
  `python -m adamx check`: the parity table of every optimizer against optax and PyTorch.
"""),
]


FAMILY_TOUR = [
    md("""
# A tour of the Adam family

Every optimizer of adamx is in one table, `adamx.registry.OPTIMIZERS`: its factory, its defaults, and how to build
the same optimizer in optax and PyTorch. This notebook runs several of them on two toy problems: the Rosenbrock
valley (deterministic, badly conditioned, curved) and a noisy ill-conditioned quadratic (stochastic gradients).
"""),
    """\
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import adamx
from adamx import registry

for spec in registry.OPTIMIZERS:
  print(f"{spec.name:20s} lr={spec.defaults()['learning_rate']:<8g} optax: {'yes' if spec.optax else 'no ':3s} "
        f"torch: {'yes' if spec.torch else 'no'}")""",
    md("""
Most optimizers take `(updates, state, params)` only; Sophia also needs the objective in `update` (for its
Hessian estimate), so it is left out here. The defaults of the learning rates differ (Lion's is 10x smaller than
AdamW's, its sign steps being larger), so each optimizer runs at five rates, 1x to 100x its own default, and
the best one is shown. Every adamx hyperparameter may be a traced value, so the five runs are one `jax.vmap`
over the learning rate, and each run is a `jax.lax.scan`: one compilation per optimizer.
"""),
    """\
TOUR = ["adam", "nadam", "radam", "amsgrad", "adabelief", "yogi", "lion", "adopt", "laprop", "ademamix",
        "stableadamw", "schedule_free_adamw"]
FACTORS = jnp.array([1.0, 3.0, 10.0, 30.0, 100.0])


def make_optimizer(name, lr, steps):
  spec = registry.get(name)
  if spec.constant_rate:  # Schedule-Free: the rate is part of its averaging, no decay schedule
    return spec.factory(learning_rate=lr)
  return spec.factory(learning_rate=adamx.cosine_decay_schedule(lr, steps, alpha=0.01))


def sweep(name, loss_fn, params, steps, noise=None):
  \"\"\"Train at every rate of ``FACTORS`` x the default; ``noise[t]`` is added to the gradient of step ``t``.
  Returns the best rate, its path and its losses (at the evaluation params for Schedule-Free).\"\"\"
  def one(lr, noise):
    tx = make_optimizer(name, lr, steps)

    def body(carry, noise_t):
      params, state = carry
      g = jax.grad(loss_fn)(params)
      if noise_t is not None:
        g = g + noise_t
      updates, state = tx.update(g, state, params)
      params = adamx.apply_updates(params, updates)
      try:
        shown = adamx.schedule_free_eval_params(state, params)
      except ValueError:  # not a Schedule-Free state
        shown = params
      return (params, state), (shown, loss_fn(shown))

    _, out = jax.lax.scan(body, (params, tx.init(params)), noise, length=steps)
    return out

  lrs = registry.get(name).defaults()["learning_rate"] * FACTORS
  paths, losses = jax.jit(jax.vmap(one, in_axes=(0, None)))(lrs, noise)
  final = jnp.where(jnp.isfinite(losses[:, -1]), losses[:, -1], jnp.inf)
  best = int(jnp.argmin(final))
  return float(lrs[best]), paths[best], losses[best]""",
    md("""
## Rosenbrock

$f(x, y) = (1 - x)^2 + 100 (y - x^2)^2$ from $(-1.2, 1)$; the minimum is $(1, 1)$.
"""),
    """\
def rosenbrock(p):
  return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


STEPS = 3000
paths, curves = {}, {}
for name in TOUR:
  lr, paths[name], curves[name] = sweep(name, rosenbrock, jnp.array([-1.2, 1.0]), STEPS)
  end = np.round(np.asarray(paths[name][-1]), 4)
  print(f"{name:20s} lr {lr:<8.2g} final loss {float(curves[name][-1]):.2e} at {end}")""",
    """\
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
xs, ys = np.meshgrid(np.linspace(-1.6, 1.6, 200), np.linspace(-0.6, 1.8, 200))
ax1.contour(xs, ys, np.log10(rosenbrock(np.stack([xs, ys])) + 1e-3), levels=20, cmap="Greys", linewidths=0.6)
for i, name in enumerate(TOUR):
  path, style = np.asarray(paths[name]), dict(lw=1, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
  ax1.plot(path[:, 0], path[:, 1], **style)
  ax2.semilogy(np.asarray(curves[name]), **style)
ax1.plot([1], [1], "k*", ms=12)
ax1.set(title="paths from (-1.2, 1)", xlabel="x", ylabel="y", xlim=(-1.6, 1.6), ylim=(-0.6, 1.8))
ax2.set(title="loss", xlabel="step")
ax2.legend(fontsize=7, ncol=2)
plt.show()""",
    md("""
Not every optimizer reaches $(1, 1)$ in 3,000 steps at one of these five rates: the valley is long and curved, and
the steps that follow it safely are small. (adamx's invariant tests run every optimizer there for 10,000 steps.)
"""),
    md("""
## A noisy quadratic

$f(w) = \\tfrac12 \\sum_i h_i w_i^2$ in 50 dimensions with curvatures $h_i$ from 0.01 to 1 (condition number 100),
and gradients with Gaussian noise of standard deviation 0.1 (the same draws for every optimizer): the regime of
stochastic training, where the optimizer must average the noise out. The learning rate decays (cosine), so the
loss keeps falling below the noise floor of a constant rate.
"""),
    """\
h = jnp.logspace(-2, 0, 50)


def quadratic(w):
  return 0.5 * jnp.sum(h * w * w)


STEPS_Q = 2000
noise = 0.1 * jax.random.normal(jax.random.key(1), (STEPS_Q, 50))
fig, ax = plt.subplots(figsize=(8, 4))
for i, name in enumerate(TOUR):
  lr, _, losses = sweep(name, quadratic, jnp.ones(50), STEPS_Q, noise)
  ax.semilogy(np.asarray(losses), lw=1, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
  print(f"{name:20s} lr {lr:<8.2g} final loss {float(losses[-1]):.2e}")
ax.set(xlabel="step", ylabel="loss", title="noisy quadratic (condition number 100, gradient noise 0.1)")
ax.legend(fontsize=7, ncol=2)
plt.show()""",
    md("""
These are toy problems: they show the optimizers' characters (Lion's sign steps of constant size, RAdam's
momentum-only start, Yogi's additive second moment, Schedule-Free's averaged iterates), not which one is best on
a real model. `python -m adamx demo --optimizer NAME` trains a small transformer with any of them.
"""),
]


SCHEDULES = [
    md("""
# Learning-rate schedules

A schedule is a pure function `count -> value`, jittable and vmappable, accepted as `learning_rate` by every
adamx optimizer. The names, arguments and values follow optax where optax has the schedule. This notebook plots
each one, with optax's (dashed) on top where it exists.
"""),
    """\
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import adamx
from adamx import registry""",
    md("""
## The schedules with an optax counterpart

`adamx.registry.SCHEDULES` lists them with a representative configuration; `python -m adamx check` compares
the same values.
"""),
    """\
specs = registry.SCHEDULES
fig, axes = plt.subplots(2, (len(specs) + 1) // 2, figsize=(16, 5.5), sharex=False)
for ax, spec in zip(axes.ravel(), specs):
  counts = jnp.arange(spec.steps)
  ours = jax.vmap(getattr(adamx, spec.name)(**spec.kwargs))(counts)
  theirs = jax.vmap(getattr(optax, spec.optax)(**spec.kwargs))(counts)
  err = float(jnp.max(jnp.abs(ours - theirs)))
  ax.plot(counts, ours, lw=2, label="adamx")
  ax.plot(counts, theirs, "--", color="k", lw=1, label="optax")
  ax.set_title(f"{spec.name}\\nmax |diff| {err:.1e}", fontsize=8)
  ax.tick_params(labelsize=7)
  assert err <= 1e-6 * float(jnp.max(jnp.abs(theirs))) + 1e-12
axes.ravel()[0].legend(fontsize=7)
for ax in axes.ravel()[len(specs):]:
  ax.axis("off")
fig.tight_layout()
plt.show()""",
    md("""
## More schedules

Warmup-stable-decay (the "trapezoid" of recent language-model recipes), inverse square root (the original
Transformer's), warm restarts (SGDR), and any schedules joined at boundaries.
"""),
    """\
STEPS = 1000
counts = jnp.arange(STEPS)
more = {
    "warmup_stable_decay (1-sqrt)": adamx.warmup_stable_decay_schedule(0.0, 1e-3, 100, 700, 200),
    "warmup_stable_decay (linear)": adamx.warmup_stable_decay_schedule(0.0, 1e-3, 100, 700, 200,
                                                                       decay_type="linear"),
    "inverse_sqrt": adamx.inverse_sqrt_schedule(0.0, 1e-3, 100),
    "cosine_warm_restarts (x2)": adamx.cosine_warm_restarts_schedule(1e-3, 100, period_mult=2),
    "join: constant, then linear": adamx.join_schedules(
        [adamx.constant_schedule(1e-3), adamx.linear_schedule(1e-3, 1e-4, 300)], [500]),
    "cosine_onecycle (torch convention)": adamx.cosine_onecycle_schedule(STEPS, 1e-3, convention="torch"),
}
fig, ax = plt.subplots(figsize=(9, 4))
for name, s in more.items():
  ax.plot(counts, jax.vmap(s)(counts), label=name)
ax.set(xlabel="step", ylabel="learning rate")
ax.legend(fontsize=8)
plt.show()""",
    md("""
## AdEMAMix's warmups

AdEMAMix warms up the weight `alpha` of its slow EMA linearly, and its decay `b3` linearly in the EMA's half-life;
both are schedules too, accepted by `adamx.ademamix(b3=..., alpha=...)`.
"""),
    """\
counts = jnp.arange(20_000)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(counts, jax.vmap(adamx.ademamix_alpha_schedule(5.0, 10_000))(counts))
ax1.set(title="alpha", xlabel="step")
ax2.plot(counts, jax.vmap(adamx.ademamix_b3_schedule(0.9999, 10_000))(counts))
ax2.set(title="b3", xlabel="step")
plt.show()""",
    md("""
## A schedule in an optimizer, and reading it back

Pass the schedule as `learning_rate`. To log the rate of the current step, or to change a hyperparameter between
steps without recompiling, wrap the factory in `adamx.inject_hyperparams`: the hyperparameters become state.
"""),
    """\
schedule = adamx.warmup_cosine_schedule(0.0, 1e-3, warmup_steps=10, decay_steps=100)
tx = adamx.inject_hyperparams(adamx.adamw)(learning_rate=schedule, weight_decay=1e-2)
params = {"w": jnp.ones(4)}
state = tx.init(params)


@jax.jit
def step(params, state):
  grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
  updates, state = tx.update(grads, state, params)
  return adamx.apply_updates(params, updates), state


seen = []
for _ in range(100):
  params, state = step(params, state)
  seen.append(float(state.hyperparams["learning_rate"]))
# The same float32 formula inside the jitted step and under vmap: equal to a few ulps of the peak rate.
np.testing.assert_allclose(seen, jax.vmap(schedule)(jnp.arange(100)), rtol=0, atol=1e-6 * 1e-3)
print("learning rates of steps 0..4:", seen[:5])""",
]


LOW_MEMORY = [
    md("""
# Low-memory optimizer state

Adam keeps two moments per parameter, so in float32 its state is twice the model. adamx offers two ways down:

* `mu_dtype` / `nu_dtype` on the optimizer: the moments are *stored* in bfloat16 (2 bytes), the arithmetic still
  runs in float32 and each moment is rounded once per step;
* `adamx.compress_state(optimizer, mu=codec, nu=codec)` around any optimizer, with the codecs `adamx.bf16()`
  (round-to-nearest or stochastic rounding) and `adamx.blockwise_8bit()` (block-wise 8-bit quantisation, Dettmers
  et al. 2022, about 1 byte per value).

`adamx.state_bytes(state)` measures a state, and `adamx.state_bytes(jax.eval_shape(tx.init, params))` measures one
without allocating it.
"""),
    """\
import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import adamx""",
    md("""
## The state of a GPT-2-small-sized model, without allocating it

Shapes only (`jax.ShapeDtypeStruct`): 12 blocks of attention and MLP matrices plus the embeddings, 124M parameters.
Leaves smaller than `compress_state`'s `min_size` (4096 values: biases, norm scales) stay uncompressed.
"""),
    """\
d, vocab, ctx = 768, 50257, 1024


def shape(*s):
  return jax.ShapeDtypeStruct(s, jnp.float32)


gpt2 = {"wte": shape(vocab, d), "wpe": shape(ctx, d),
        "blocks": [{"ln1": shape(d), "qkv": shape(d, 3 * d), "qkv_b": shape(3 * d), "proj": shape(d, d),
                    "ln2": shape(d), "fc": shape(d, 4 * d), "fc_b": shape(4 * d), "fc_out": shape(4 * d, d)}
                   for _ in range(12)]}
n = sum(math.prod(x.shape) for x in jax.tree.leaves(gpt2))
options = {
    "float32 moments": adamx.adamw(1e-3),
    "mu_dtype=bfloat16": adamx.adamw(1e-3, mu_dtype=jnp.bfloat16),
    "mu, nu_dtype=bfloat16": adamx.adamw(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
    "8-bit mu and nu": adamx.compress_state(adamx.adamw(1e-3), mu=adamx.blockwise_8bit(), nu=adamx.blockwise_8bit()),
}
print(f"{n / 1e6:.1f}M parameters, {4 * n / 2**20:,.0f} MiB in float32")
for name, tx in options.items():
  b = adamx.state_bytes(jax.eval_shape(tx.init, gpt2))
  print(f"{name:24s} state {b / 2**20:8,.0f} MiB = {b / n:.2f} bytes per parameter")""",
    md("""
## Training with each state

A small MLP classifier on two interleaved spirals (seeded), full-batch, the same initialisation for every
variant; only the storage of the moments differs.
"""),
    """\
def init_mlp(key, sizes=(2, 128, 128, 2)):
  keys = jax.random.split(key, len(sizes) - 1)
  return [{"kernel": jax.random.normal(k, (m, n)) / math.sqrt(m), "bias": jnp.zeros((1, n))}
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def logits_fn(params, x):
  for layer in params[:-1]:
    x = jax.nn.gelu(x @ layer["kernel"] + layer["bias"])
  return x @ params[-1]["kernel"] + params[-1]["bias"]


def loss_fn(params, x, labels):
  logp = jax.nn.log_softmax(logits_fn(params, x))
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


rng = np.random.default_rng(0)
t = rng.uniform(0.5, 3 * np.pi, 512)
labels = rng.integers(0, 2, 512)
sign = 2.0 * labels - 1.0
x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / 5 + 0.1 * rng.normal(size=(512, 2))
x, labels = jnp.asarray(x, jnp.float32), jnp.asarray(labels)
params0 = init_mlp(jax.random.key(0))
STEPS = 400
schedule = adamx.warmup_cosine_schedule(0.0, 1e-2, 40, STEPS)


def train(tx):
  @jax.jit
  def run(params):
    def body(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
      updates, state = tx.update(grads, state, params)
      return (adamx.apply_updates(params, updates), state), loss
    (params, state), losses = jax.lax.scan(body, (params, tx.init(params)), length=STEPS)
    return params, state, losses
  return run(params0)""",
    """\
variants = {
    "float32 moments": adamx.adamw(schedule, weight_decay=1e-4),
    "mu, nu_dtype=bfloat16": adamx.adamw(schedule, weight_decay=1e-4, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
    "bf16 codec, stochastic nu": adamx.compress_state(adamx.adamw(schedule, weight_decay=1e-4), mu=adamx.bf16(),
                                                      nu=adamx.bf16("stochastic")),
    "8-bit mu and nu": adamx.compress_state(adamx.adamw(schedule, weight_decay=1e-4), mu=adamx.blockwise_8bit(),
                                            nu=adamx.blockwise_8bit()),
}
curves, states = {}, {}
fig, ax = plt.subplots(figsize=(8, 4))
for name, tx in variants.items():
  params, states[name], losses = train(tx)
  state, curves[name] = states[name], np.asarray(losses)
  acc = float(jnp.mean(jnp.argmax(logits_fn(params, x), axis=1) == labels))
  print(f"{name:26s} state {adamx.state_bytes(state):>8,} bytes  final loss {curves[name][-1]:.4f}  "
        f"accuracy {acc:.3f}")
  ax.semilogy(curves[name], label=name)
ax.set(xlabel="step", ylabel="training loss")
ax.legend()
plt.show()""",
    md("""
At this size the curves are indistinguishable. The numbers to keep in mind for a real model: bfloat16 keeps 8 bits
of mantissa, and adamx rounds each moment once per step from a float32 computation (optax and PyTorch compute in
bfloat16 and round at every operation); round-to-nearest can stall a slowly growing second moment, which
stochastic rounding fixes on average; 8-bit block-wise codes keep a relative error of a few percent per value.
`adamx.state_bytes(state, per_leaf=True)` shows where the bytes are:
"""),
    """\
for path, b in adamx.state_bytes(states["8-bit mu and nu"], per_leaf=True).items():
  print(f"{b:>8,}  {path}")""",
]

NOTEBOOKS = {
    "quickstart.ipynb": QUICKSTART,
    "adam_family_tour.ipynb": FAMILY_TOUR,
    "schedules.ipynb": SCHEDULES,
    "low_memory.ipynb": LOW_MEMORY,
}


def build(name: str) -> nbformat.NotebookNode:
  """The notebook ``name`` (no outputs), with deterministic cell ids so that rebuilding changes nothing."""
  stem = name.removesuffix(".ipynb").replace("_", "-")
  cells = []
  for i, src in enumerate(NOTEBOOKS[name]):
    if src.startswith(MD):
      cell = nbformat.v4.new_markdown_cell(src[len(MD):])
    else:
      cell = nbformat.v4.new_code_cell(src)
    cell.id = f"{stem}-{i:02d}"
    cells.append(cell)
  nb = nbformat.v4.new_notebook(cells=cells)
  nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                 "language_info": {"name": "python"}}
  nbformat.validate(nb)
  return nb


def render(name: str) -> str:
  """The file contents of notebook ``name``."""
  return nbformat.writes(build(name)) + "\n"


def main(argv: list[str]) -> int:
  """Write every notebook; with ``--check``, only report the ones that differ from what would be written."""
  stale = []
  for name in NOTEBOOKS:
    path = os.path.join(HERE, name)
    text = render(name)
    if "--check" in argv:
      with open(path, encoding="utf-8") as f:
        if f.read() != text:
          stale.append(name)
    else:
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
  for name in stale:
    print(f"{name} is out of date: run python notebooks/_build.py", file=sys.stderr)
  return 1 if stale else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
