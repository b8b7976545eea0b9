"""The train step as `train.py` runs it (jit over a device mesh) against the old `pmap` step.

    python experiments/bench_mesh_vs_pmap.py                      # quickstart, 2 fake CPU devices
    python experiments/bench_mesh_vs_pmap.py --devices=4 --batch=16

Both run the same pure `steps.train_step` on the same global batch, split over
`--devices` devices: the mesh step with the batch sharded on axis "data" and the
state replicated (`axis_name=None`; XLA inserts the all-reduce), the pmap step
with one replica per device and explicit `pmean` (`axis_name="batch"`, the
layout `train.py` had until 2026-11-26). On a CPU the devices are faked with
`--xla_force_host_platform_device_count` (set here before jax is imported), so
they share the same cores: the comparison is of the two programs' overheads,
not of scaling. Prints each median step time and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/quickstart.py",
                      help="configs/<name>.py[:arg] (imported from the configs package)")
  parser.add_argument("--devices", type=int, default=2)
  parser.add_argument("--batch", type=int, default=8, help="global batch")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed steps after compilation")
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import functools  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import jax_utils  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import configs  # pylint: disable=g-import-not-at-top
  from flax_gradnet import steps  # pylint: disable=g-import-not-at-top

  if jax.device_count() != args.devices or args.batch % args.devices:
    sys.exit(f"need {args.devices} devices (have {jax.device_count()}) and a batch divisible by them")
  config = configs.load(args.config)
  config.content_loss = "pixel"
  generator, critic = steps.build_models(config)
  tx = optax.adam(config.learning_rate, b1=config.b1, b2=config.b2)
  state = steps.create_state(jax.random.PRNGKey(0), generator, critic, image_size=args.size,
                             generator_tx=tx, critic_tx=tx)
  state = jax.device_get(state)  # host copies: each step below donates its own device copy
  content_fn = steps.make_content_fn(config)
  cfg = steps.StepConfig.from_config(config)
  rng = np.random.default_rng(0)
  batch = {k: rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
           for k in ("blur", "sharp")}
  key = jax.random.PRNGKey(1)

  def timed(fn, state, batch):
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
      t = time.perf_counter()
      state, m = fn(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    return float(np.median(times))

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  mesh_step = jax.jit(functools.partial(steps.train_step, generator_apply=generator.apply,
                                        critic_apply=critic.apply, cfg=cfg, axis_name=None),
                      in_shardings=(rep, data, rep, rep), out_shardings=rep, donate_argnums=(0,))
  mesh_s = timed(lambda s, b: mesh_step(s, b, key, content_fn), jax.device_put(state, rep),
                 jax.device_put(batch, data))

  pmap_step = jax.pmap(functools.partial(steps.train_step, generator_apply=generator.apply,
                                         critic_apply=critic.apply, cfg=cfg, axis_name="batch"),
                       axis_name="batch", in_axes=(0, 0, None, None), donate_argnums=(0,))
  split = {k: v.reshape((args.devices, -1) + v.shape[1:]) for k, v in batch.items()}
  pmap_s = timed(lambda s, b: pmap_step(s, b, key, content_fn), jax_utils.replicate(state), split)

  print(f"{args.config}: global batch {args.batch} of {args.size}x{args.size} over "
        f"{args.devices} {jax.devices()[0].platform} device(s)")
  print(f"jit over mesh (train.py): {mesh_s * 1e3:.1f} ms/step")
  print(f"pmap (explicit pmean):    {pmap_s * 1e3:.1f} ms/step")
  print(f"mesh / pmap: {mesh_s / pmap_s:.3f}")


if __name__ == "__main__":
  main()
