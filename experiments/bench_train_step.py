"""Times the compiled train step (5 critic + 1 generator update) after compilation.

    python experiments/bench_train_step.py                         # the paper's config
    python experiments/bench_train_step.py --config=configs/quickstart.py --size=128 --batch=8
    python experiments/bench_train_step.py --critic_conv_impl=lax --critic_unroll=false

Prints steps/s, images/s, the step's XLA-counted FLOPs, the achieved FLOP/s
beside a dense float32 matmul's FLOP/s measured in the same process, and the
time the paper's schedule (150 epochs of 2103 GOPRO pairs at batch 4) would take
at this speed; for a config with a coarse warm-up (config.coarse_task.warmup_steps),
its step too. Uses random inputs and the pixel content stand-in unless
--vgg_weights is given (VGG19 relu4_3 adds its own cost).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import configs
from flax_gradnet import steps
from flax_gradnet.data import device_pairs


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    a = f(a) * 1e-4  # keep values bounded; the scale is negligible work
  a.block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - t)


def time_step(step_fn, state, args: tuple, steps: int) -> tuple[float, float, float]:
  """(compile seconds, seconds a step after compilation, XLA-counted FLOPs a step) of
  the jitted `step_fn(state, *args) -> (state, metrics)`, its state donated and
  threaded through `steps` timed calls after one untimed one."""
  t = time.perf_counter()
  lowered = step_fn.lower(state, *args)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  state, m = compiled(state, *args)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, *args)
  jax.block_until_ready(m)
  return compile_s, (time.perf_counter() - t) / steps, float(cost["flops"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/default.py",
                      help="configs/<name>.py[:arg] (imported from the configs package)")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=3, help="timed steps after compilation")
  parser.add_argument("--critic_conv_impl", choices=["lax", "matmul"], default=None)
  parser.add_argument("--critic_unroll", choices=["true", "false"], default=None)
  parser.add_argument("--vgg_weights", default="")
  args = parser.parse_args()

  config = configs.load(args.config)
  if args.critic_conv_impl:
    config.critic_conv_impl = args.critic_conv_impl
  if args.critic_unroll:
    config.critic_unroll = args.critic_unroll == "true"
  if args.vgg_weights:
    config.content_loss, config.vgg_weights = "vgg", args.vgg_weights
  else:
    config.content_loss = "pixel"

  generator, critic = steps.build_models(config)
  tx = optax.adam(config.learning_rate, b1=config.b1, b2=config.b2)
  state = steps.create_state(jax.random.PRNGKey(0), generator, critic, image_size=args.size,
                             generator_tx=tx, critic_tx=tx)
  step_fn = jax.jit(functools.partial(
      steps.train_step, generator_apply=generator.apply, critic_apply=critic.apply,
      cfg=steps.StepConfig.from_config(config), axis_name=None), donate_argnums=(0,))
  content_fn = steps.make_content_fn(config)
  # The config's coarse task (config.coarse_task: pairs drawn in the step), as main runs it.
  coarse_task = device_pairs.coarse_task_from_config(config)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)), jnp.float32)
           for k in ("blur", "sharp")}
  key = jax.random.PRNGKey(1)

  compile_s, step_s, flops = time_step(step_fn, state, (batch, key, content_fn, coarse_task),
                                       args.steps)
  peak = matmul_flops_per_s()
  paper_steps = int(np.ceil(150 * 2103 / 4))

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})")
  print(f"config: {args.config}  batch {args.batch} x {args.size}x{args.size}, "
        f"critic_conv_impl={config.critic_conv_impl}, critic_unroll={config.critic_unroll}, "
        f"content={config.content_loss}" + (
            f", coarse task {coarse_task.batch} x {coarse_task.crop}x{coarse_task.crop} "
            f"({coarse_task.blur})" if coarse_task is not None else ""))
  print(f"compile: {compile_s:.1f} s")
  print(f"step: {step_s * 1e3:.1f} ms  = {1 / step_s:.3f} steps/s, {args.batch / step_s:.2f} images/s")
  print(f"step FLOPs (XLA): {flops / 1e9:.1f} G  -> achieved {flops / step_s / 1e9:.1f} GFLOP/s; "
        f"dense f32 matmul in this process: {peak / 1e9:.1f} GFLOP/s")
  warmup = device_pairs.warmup_steps(config)
  if warmup:  # the config's coarse warm-up step (the coarse net alone on its task)
    warm_tx = steps.grouped_adam(optax.constant_schedule(config.learning_rate),
                                 optax.constant_schedule(config.learning_rate),
                                 b1=config.b1, b2=config.b2)
    warm_state = steps.create_state(jax.random.PRNGKey(0), generator, critic,
                                    image_size=args.size, generator_tx=warm_tx, critic_tx=tx)
    warm_fn = jax.jit(functools.partial(
        steps.coarse_warmup_step, generator_apply=generator.apply,
        cfg=steps.StepConfig.from_config(config)), donate_argnums=(0,))
    _, warm_s, warm_flops = time_step(warm_fn, warm_state, (key, content_fn, coarse_task),
                                      args.steps)
    print(f"coarse warm-up step (config.coarse_task.warmup_steps={warmup}): "
          f"{warm_s * 1e3:.1f} ms = {step_s / warm_s:.1f}x faster than the whole step; "
          f"{warm_flops / 1e9:.1f} GFLOPs (XLA) -> {warm_flops / warm_s / 1e9:.1f} GFLOP/s")
  if args.batch == 4 and args.size == 256:
    print(f"paper schedule (150 epochs x 2103 pairs / batch 4 = {paper_steps} steps): "
          f"{paper_steps * step_s / 3600:.1f} h at this speed")


if __name__ == "__main__":
  main()
