"""Trains generators for a fixed wall-clock budget on one accelerator (issue 8).

A lent GPU comes for minutes (15 in all, starting included), on a machine
without TFDS, grain, clu's TensorFlow writers or a package index. This script
needs only what such a machine has (jax, flax, optax, numpy, scipy, pillow,
scikit-image, scikit-learn) plus ml_collections, and runs this library's own
pieces: `steps.train_step` (the jitted step that `flax_gradnet.main` runs),
`models.generator_from_config`, `data.online.OnlinePairs` (the
`synthetic_online` records) and `pretrained.load` (fine-tuning a shipped model).

What differs from `flax_gradnet.main`, and why:
  * Data: worker processes make `OnlinePairs` records (`--source_size` pixels,
    larger than the training crop) into a replay buffer in memory, and each
    batch takes random crops, flips and 90-degree rotations of buffered records.
    A CPU core makes ~10-30 records a second, so without reuse the GPU would
    wait for the CPU; a record is read several times, in different crops.
  * Schedule: the run is given seconds, not steps. The learning rate follows a
    cosine decay over the wall-clock budget (`optax.inject_hyperparams`, set
    from the host before every step), after a linear warm-up over the first
    `--warmup` of the budget for runs from scratch.
  * Several runs (`--runs`) train round robin in one process on the same
    buffer, so one lease compares them under the same data.
  * Output: per run, the raw and the EMA generator weights (flax msgpack, one
    file each) and `<run>.json` (a library config for `pretrained.pack_params`,
    the steps, the learning-rate and loss history, the machine). Written every
    `--save_every` seconds and at the end, each file renamed into place, so a run
    that is killed keeps its last save.

  python experiments/gpu_train.py --runs=s_ft,m_scratch --seconds=420 --output_dir=OUT

Then, on any machine, `python experiments/gpu_import.py OUT/<run>.json --name=NAME` packs a run
as a model that `evaluate --model` and `deblur --model` read.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import threading
import time

import numpy as np

# Each run: a library config (module of configs/), what to change in it, and
# how to start. Widths and depths stay within the paper's architecture
# (docs/recipes.md says why each was chosen).
RUNS = {
    # The shipped gradnet_s_zoom, fine-tuned with 4x the batch and 2.25x the
    # crop area that the CPU afforded.
    "s_ft": dict(config="gradnet_s_zoom", init_from="gradnet_s_zoom", learning_rate=1e-4,
                 batch_size=32, crop_size=192, model={}),
    # Twice gradnet_s's widths and 6 MBRBs, from scratch on the same data recipe.
    "m_scratch": dict(config="gradnet_s_zoom", init_from="", learning_rate=5e-4,
                      batch_size=16, crop_size=192,
                      model=dict(base_features=32, gradientnet_features=64, num_mbrbs=6)),
    # A tiny run for checking the script on a CPU.
    "tiny": dict(config="gradnet_s_zoom", init_from="", learning_rate=5e-4, batch_size=2,
                 crop_size=32, model=dict(base_features=8, gradientnet_features=8, num_mbrbs=1)),
}

_SOURCE = None


def _init_worker(options: dict) -> None:
  global _SOURCE
  from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
  _SOURCE = online.OnlinePairs(**options)


def _make_records(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
  records = [_SOURCE[i] for i in indices]
  return (np.stack([r["blur"] for r in records]), np.stack([r["sharp"] for r in records]))


class ReplayBuffer:
  """`OnlinePairs` records made by worker processes, kept in a ring of `capacity`."""

  def __init__(self, options: dict, *, capacity: int, workers: int, chunk: int = 8,
               first_index: int = 0):
    side = options["size"]
    # Make one record here first: a worker whose start fails (say, an import)
    # is restarted by multiprocessing without end, and the buffer never fills.
    _init_worker(options)
    _make_records([first_index])
    self.blur = np.zeros((capacity, side, side, 3), np.uint8)
    self.sharp = np.zeros((capacity, side, side, 3), np.uint8)
    self.capacity, self.count, self._stop = capacity, 0, False
    self._lock = threading.Lock()
    ctx = multiprocessing.get_context("spawn")  # no fork after jax has started
    self._pool = ctx.Pool(workers, initializer=_init_worker, initargs=(options,))
    chunks = ([first_index + k * chunk + j for j in range(chunk)] for k in range(10**9))
    self._results = self._pool.imap(_make_records, chunks, chunksize=1)
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _fill(self) -> None:
    for blur, sharp in self._results:
      if self._stop:
        return
      n = len(blur)
      with self._lock:
        rows = (np.arange(self.count, self.count + n) % self.capacity)
        self.blur[rows], self.sharp[rows] = blur, sharp
        self.count += n

  def wait(self, minimum: int, timeout: float) -> None:
    t = time.time()
    while self.count < minimum:
      if time.time() - t > timeout:
        raise TimeoutError(f"the data workers made {self.count} records in {timeout:.0f} s "
                           "(see their tracebacks above)")
      time.sleep(0.2)

  def sample(self, rng: np.random.Generator, batch: int, crop: int) -> dict[str, np.ndarray]:
    with self._lock:
      filled = min(self.count, self.capacity)
      return random_crops(self.blur[:filled], self.sharp[:filled], rng, batch, crop)

  def close(self) -> None:
    self._stop = True
    self._pool.terminate()


def random_crops(blur: np.ndarray, sharp: np.ndarray, rng: np.random.Generator, batch: int,
                 crop: int) -> dict[str, np.ndarray]:
  """`batch` random `crop`-pixel crops of random records ([N, S, S, 3] pairs),
  each rotated by a random multiple of 90 degrees and maybe flipped; a pair's
  blurry and sharp crop always get the same window and transform."""
  rows = rng.integers(0, len(blur), batch)
  side = blur.shape[1]
  tops = rng.integers(0, side - crop + 1, batch)
  lefts = rng.integers(0, side - crop + 1, batch)
  out = {"blur": np.empty((batch, crop, crop, 3), np.uint8),
         "sharp": np.empty((batch, crop, crop, 3), np.uint8)}
  turns, flips = rng.integers(0, 4, batch), rng.integers(0, 2, batch)
  for i, (r, t, l) in enumerate(zip(rows, tops, lefts)):
    for key, images in (("blur", blur), ("sharp", sharp)):
      x = np.rot90(images[r, t:t + crop, l:l + crop], turns[i])
      out[key][i] = x[:, ::-1] if flips[i] else x
  return out


def _lr_factor(fraction: float, warmup: float) -> float:
  """Linear warm-up over `warmup` of the budget, then a cosine decay to 0."""
  if warmup > 0 and fraction < warmup:
    return fraction / warmup
  span = max(1e-9, 1.0 - warmup)
  return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (fraction - warmup) / span)))


class Run:
  """One generator's config, state and compiled step."""

  def __init__(self, name: str, spec: dict, *, seed: int, data_seed: int, ema_decay: float,
               warmup: float):
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    import importlib  # pylint: disable=g-import-not-at-top
    from flax_gradnet import steps  # pylint: disable=g-import-not-at-top

    config = importlib.import_module(f"configs.{spec['config']}").get_config()
    for key, value in spec["model"].items():
      config.model[key] = value
    config.learning_rate = spec["learning_rate"]
    config.batch_size = spec["batch_size"]
    config.crop_size = spec["crop_size"]
    config.dataset_options.seed = data_seed
    config.init_from = spec["init_from"]
    config.ema_decay = ema_decay
    config.seed = seed
    self.name, self.config, self.spec = name, config, spec
    self.warmup = 0.0 if spec["init_from"] else warmup
    generator, critic = steps.build_models(config)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate,
                                              b1=config.b1, b2=config.b2)
    state = steps.create_state(jax.random.key(seed), generator, critic,
                               image_size=config.crop_size, generator_tx=tx,
                               critic_tx=optax.adam(0.0))
    if spec["init_from"]:
      from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
      _, params = pretrained.load(spec["init_from"])
      state = state.replace(generator=state.generator.replace(params=params))
    # The EMA starts at the initial weights (its own buffers: the step donates both).
    state = state.replace(ema_params=jax.tree_util.tree_map(lambda x: x.copy(),
                                                            state.generator.params))
    self.state = state
    self.history: list[dict] = []
    content_fn = steps.make_content_fn(config)
    cfg = steps.StepConfig.from_config(config)

    def step(state, batch, rng, lr):
      state = state.replace(generator=state.generator.replace(
          opt_state=_set_lr(state.generator.opt_state, lr)))
      batch = {k: v.astype(jax.numpy.float32) / 127.5 - 1.0 for k, v in batch.items()}
      return steps.train_step(state, batch, rng, content_fn, generator_apply=generator.apply,
                              critic_apply=critic.apply, cfg=cfg, adversarial=False)

    self._step = jax.jit(step, donate_argnums=(0,))
    self._rng = jax.random.key(seed + 1)

  def compile(self) -> None:
    """Compiles the step by running it once on a copy of the state (donated)."""
    import jax  # pylint: disable=g-import-not-at-top
    side, batch = self.config.crop_size, self.config.batch_size
    zeros = {k: np.zeros((batch, side, side, 3), np.uint8) for k in ("blur", "sharp")}
    copy = jax.tree_util.tree_map(lambda x: x.copy() if hasattr(x, "copy") else x, self.state)
    jax.block_until_ready(self._step(copy, zeros, self._rng, np.float32(0.0)))

  def train_step(self, batch: dict[str, np.ndarray], fraction: float) -> dict:
    lr = self.config.learning_rate * _lr_factor(fraction, self.warmup)
    self.state, metrics = self._step(self.state, batch, self._rng, np.float32(lr))
    return {"lr": lr, **metrics}

  @property
  def steps(self) -> int:
    return int(self.state.step)


def _set_lr(opt_state, lr):
  """`optax.inject_hyperparams`' state with another learning rate (a new state)."""
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def save(run: Run, output_dir: str, machine: str, elapsed: float, args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from flax_gradnet.atomic import atomic_write, atomic_write_text  # pylint: disable=g-import-not-at-top
  host = jax.device_get((run.state.generator.params, run.state.ema_params))
  for tree, suffix in zip(host, ("raw", "ema")):
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)
    payload = serialization.msgpack_serialize(tree)
    atomic_write(os.path.join(output_dir, f"{run.name}_{suffix}.msgpack"),
                 lambda f, payload=payload: f.write(payload))
  config = run.config.copy_and_resolve_references()
  config.num_train_steps = run.steps
  record = {
      "run": run.name, "spec": run.spec, "steps": run.steps,
      "train_seconds": round(elapsed, 1), "machine": machine,
      "command": " ".join(["python experiments/gpu_train.py"] + args.argv),
      "buffer": {"source_size": args.source_size, "capacity": args.buffer,
                 "workers": args.workers},
      "versions": {"jax": jax.__version__, "python": platform.python_version()},
      "config": json.loads(config.to_json_best_effort()),
      "history": run.history,
  }
  atomic_write_text(os.path.join(output_dir, f"{run.name}.json"),
                    json.dumps(record, indent=1) + "\n")


def _machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  return f"{d.platform}: {d.device_kind} ({jax.device_count()} device(s)), {os.cpu_count()} CPU cores"


def train(args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  machine = _machine()
  print(f"device: {machine}; jax {jax.__version__}", flush=True)
  os.makedirs(args.output_dir, exist_ok=True)
  runs = [Run(name, RUNS[name], seed=args.seed, data_seed=args.data_seed,
              ema_decay=args.ema_decay, warmup=args.warmup) for name in args.runs.split(",")]
  options = dict(runs[0].config.dataset_options)
  options.update(size=args.source_size, seed=args.data_seed)
  buffer = ReplayBuffer(options, capacity=args.buffer, workers=args.workers)
  rng = np.random.default_rng(args.seed)
  try:
    t = time.time()
    for run in runs:  # compile while the workers fill the buffer
      run.compile()
    print(f"compiled {len(runs)} step(s) in {time.time() - t:.1f} s", flush=True)
    buffer.wait(args.min_records, timeout=120)
    print(f"buffer: {buffer.count} records after {time.time() - t:.1f} s", flush=True)
    _loop(runs, buffer, rng, args, machine)
  finally:
    buffer.close()


def _loop(runs, buffer, rng, args, machine) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  start = last_save = last_log = time.time()
  sums = {run.name: {} for run in runs}
  rounds = 0
  while True:
    elapsed = time.time() - start
    if elapsed >= args.seconds:
      break
    rounds += 1
    for run in runs:
      batch = buffer.sample(rng, run.config.batch_size, run.config.crop_size)
      metrics = run.train_step(batch, elapsed / args.seconds)
      if rounds % 8 == 0:  # keep the host at most a few steps ahead of the device
        jax.block_until_ready(metrics["generator_loss"])
      for key, value in metrics.items():
        if key.startswith("generator_") and not key.endswith("_norm"):
          sums[run.name].setdefault(key[len("generator_"):], []).append(value)
    if time.time() - last_log >= args.log_every:
      last_log = time.time()
      for run in runs:
        means = {k: float(np.mean(jax.device_get(v))) for k, v in sums[run.name].items()}
        sums[run.name] = {}
        entry = {"seconds": round(elapsed, 1), "step": run.steps,
                 "lr": run.config.learning_rate * _lr_factor(elapsed / args.seconds, run.warmup),
                 "records_made": buffer.count, **means}
        run.history.append(entry)
        print(f"[{run.name}] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in entry.items()), flush=True)
    if time.time() - last_save >= args.save_every:
      last_save = time.time()
      for run in runs:
        save(run, args.output_dir, machine, time.time() - start, args)
  for run in runs:
    save(run, args.output_dir, machine, time.time() - start, args)
    print(f"[{run.name}] done: {run.steps} steps in {time.time() - start:.0f} s; "
          f"{buffer.count} records made", flush=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="Example:\n  python experiments/gpu_train.py "
                                   "--runs=s_ft,m_scratch --seconds=420 --output_dir=OUT")
  parser.add_argument("--runs", default="s_ft,m_scratch",
                      help=f"comma-separated runs of: {', '.join(RUNS)}")
  parser.add_argument("--seconds", type=float, default=420.0, help="training wall-clock budget")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--source_size", type=int, default=256,
                      help="side of the records in the buffer (crops are cut from them)")
  parser.add_argument("--buffer", type=int, default=30000, help="records kept in memory")
  parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                      help="data worker processes")
  parser.add_argument("--min_records", type=int, default=1000,
                      help="records in the buffer before the first step")
  parser.add_argument("--ema_decay", type=float, default=0.999)
  parser.add_argument("--warmup", type=float, default=0.03,
                      help="share of the budget for the linear warm-up (runs from scratch)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_seed", type=int, default=1,
                      help="synthetic_online seed (the CPU-trained models used 0)")
  parser.add_argument("--log_every", type=float, default=20.0, help="seconds")
  parser.add_argument("--save_every", type=float, default=60.0, help="seconds")
  args = parser.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in <run>.json
  unknown = [r for r in args.runs.split(",") if r not in RUNS]
  if unknown:
    parser.error(f"--runs: unknown {unknown}; choose from {sorted(RUNS)}")
  too_big = [r for r in args.runs.split(",") if RUNS[r]["crop_size"] > args.source_size]
  if too_big:
    parser.error(f"--source_size={args.source_size} is smaller than the crops of {too_big}")
  train(args)
  return 0


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main())
