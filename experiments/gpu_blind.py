"""Blind strong-shake training at accelerator scale: `blind_probe.py` with the
training pairs made on the device, for a wall-clock budget.

    # on a machine with the photographs (writes the built-in ones to one file,
    # so the device needs neither scikit-image's data nor scikit-learn's):
    python experiments/gpu_blind.py prepare --out=.gpu/builtin.npz
    # on the accelerator, one or more runs (each its own process):
    python experiments/gpu_blind.py train --builtin=.gpu/builtin.npz --photo_dir=.gpu/photos \
        --out=OUT/a --seconds=400 --down=4 --batch=256 --crop=48
    # back on any machine: the runs' weights on the held-out sets at full resolution
    python experiments/gpu_blind.py evaluate --run=OUT/a [--dataset=synthetic_strong]
    python experiments/gpu_blind.py evaluate --run=OUT/a --fuse_with=gradnet_s_lf

`blind_probe.py` (docs/models.md, "Blind or non-blind") trains the small generator
from scratch at 1/`--down` of the resolution on Boracchi-Foi shake, where a 25-60 px
shake is 6-15 px, and finds that the blind problem learns slowly: +0.60 dB on
`synthetic_strong`'s `strong_shake` after 8,000 steps of batch 32 on the 2-core CPU.
Its pairs come from a Python thread (scipy convolutions), which an accelerator would
wait on. Here every step draws its pairs inside the compiled step, on the device
(`flax_gradnet/data/device_pairs.py`, which `main` runs as `config.coarse_task`):

* the training photographs (the built-in ones never held out, plus `--photo_dir`),
  area-downsampled by `--down` (or by each factor of `--photo_scales`: more
  distinct content at the working scale), sit on the device, zero-padded to one
  shape; `--augment` turns each crop by a random rotation or flip;
* each pair takes a random photograph, a random `crop + kernel - 1` square of it,
  a random PSF of a pool of `--pool` Boracchi-Foi shakes of extent `--extent` px at
  that scale (each in its 8 rotations and flips), a 'valid' per-pair convolution
  (one grouped convolution for the batch, or FFTs with `--blur=fft`, faster on a CPU),
  and Gaussian noise of std up to `--noise`; a share `--p_sharp` of the pairs is
  left unblurred, and a share `--p_dynamic` gets an object moving `--object_motion`
  px over the background (blur that varies across the image);
* `--steps_per_call` steps run in one `lax.scan` (on a CPU give 1: there XLA runs the
  convolutions inside a loop about 25x slower, 9.3 against 0.37 s for the small net's
  step at batch 32 of 48 px on the 2-core development machine); the learning rate follows a cosine
  decay over the *time* budget (`--seconds`, after compilation), with a linear
  warm-up over its first 2%, so a run ends its schedule when its time is up whatever
  the device's speed; the weights' moving average (decay `--ema`) is what is saved
  and evaluated; `--init=RUN` starts from another run's saved weights.

Every `--eval_every` seconds (and at the end) the run prints one JSON line: steps,
steps/s, loss, and the gain at the probe's scale over the held-out built-in
photographs under 4 PSFs of another seed (mean and worst), as `blind_probe.py`
validates. It writes `OUT/log.jsonl` (its first line holds the arguments) and `OUT/params.msgpack`
(the final moving average in float32, and earlier ones in float16 under
`snapshots`; under `--max_bytes` the oldest snapshots are dropped, then the final
state is stored in float16), each rewritten whole after every evaluation (a stop loses at most one
interval). `evaluate` then measures each saved state on the held-out sets at full
resolution through x + up(G(down x) - down x) (no low-frequency step), per family;
`--fuse_with=MODEL` puts that pass beside a shipped model's and the two fused in the
band the run's scale holds (docs/models.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blind_probe import blur  # noqa: E402  pylint: disable=g-import-not-at-top

from configs import gradnet_small  # noqa: E402
from flax_gradnet import losses, metrics  # noqa: E402
from flax_gradnet.data.device_pairs import (  # noqa: E402
    downsample, dihedral, make_pairs, photo_bank, shake_pool)
from flax_gradnet.models.factory import generator_from_config  # noqa: E402
from flax_gradnet.models.generator import (  # noqa: E402
    area_downsample, coarse_correction, upsample_bilinear)


def model_config(model_options: dict):
  """`configs/gradnet_small.py`'s full-resolution net alone, one pass, with `model_options` over it."""
  config = gradnet_small.get_config()
  config.model.scales = 1
  config.model.coarse_down = 0  # the one net alone (the config adds a coarse pass)
  config.model.update(model_options)
  return config


def prepare(args) -> None:
  """Writes the built-in training and held-out photographs to one .npz."""
  from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
  arrays = {f"train/{k}": v for k, v in online.training_photographs().items()}
  arrays.update({f"heldout/{k}": v for k, v in online.heldout_photographs().items()})
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"{len(arrays)} photographs -> {args.out}")


def load_photos(args) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """(training, held-out) photographs as uint8 arrays at full scale."""
  if args.builtin:
    with np.load(args.builtin) as z:
      train = [z[k] for k in z.files if k.startswith("train/")]
      heldout = [z[k] for k in z.files if k.startswith("heldout/")]
  else:
    from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
    train = list(online.training_photographs().values())
    heldout = list(online.heldout_photographs().values())
  if args.photo_dir:
    from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
    train += list(online.folder_photographs(args.photo_dir).values())
  return train, heldout


def psnr01(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR (dB) of float images in [0, 1], `a` clipped to that range first."""
  return float(metrics.psnr(np.clip(a, 0.0, 1.0), b, data_range=1.0))


def _dtype(tree) -> np.dtype:
  return jax.tree_util.tree_leaves(tree)[0].dtype


def train(args) -> None:
  os.makedirs(args.out, exist_ok=True)
  options = json.loads(args.model_options)
  gen = generator_from_config(model_config(options))

  train_photos, heldout = load_photos(args)
  try:
    photos, sizes = photo_bank(train_photos, args.photo_scales or [args.down],
                               args.crop + args.kernel_size - 1)
  except ValueError as e:
    raise SystemExit(str(e)) from e
  psfs = dihedral(shake_pool(args.pool, tuple(args.extent), args.kernel_size, args.seed))

  # Validation at the probe's scale, as blind_probe.py: held-out photographs under
  # 4 PSFs of another seed, reflect-padded, 'valid' convolution, half the noise.
  val_psfs = shake_pool(4, tuple(args.extent), args.kernel_size, args.seed + 1000)
  vrng = np.random.default_rng(12345)
  o = args.kernel_size // 2
  val = []  # (blurry batch in [-1, 1], sharp in [0, 1], the blurry image's PSNR)
  for photo in heldout:
    y = downsample(photo, args.down)
    yp = np.pad(y, ((o, o), (o, o), (0, 0)), mode="reflect")
    for k in val_psfs:
      b = blur(yp, k)
      b = np.clip(b + vrng.normal(0, args.noise / 2, b.shape), 0, 1)
      val.append((jnp.asarray(b[None] * 2 - 1, jnp.float32), y, psnr01(b, y)))

  photos_d, sizes_d, psfs_d = jnp.asarray(photos), jnp.asarray(sizes), jnp.asarray(psfs)
  key = jax.random.PRNGKey(args.seed)
  key, init_key = jax.random.split(key)
  params = gen.init(init_key, jnp.zeros((1, args.crop, args.crop, 3)))["params"]
  if args.init:  # start from another run's final moving average (same net)
    with open(os.path.join(args.init, "params.msgpack"), "rb") as f:
      start = serialization.msgpack_restore(f.read())["final"]
    params = jax.tree_util.tree_map(lambda p, a: jnp.asarray(a, p.dtype), params, start)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=args.lr)
  opt = tx.init(params)
  ema = params

  def one_step(carry, _):
    params, opt, ema, key = carry
    key, sub = jax.random.split(key)
    x, y = make_pairs(sub, photos_d, sizes_d, psfs_d, batch=args.batch, crop=args.crop,
                      noise=args.noise, augment=args.augment, p_sharp=args.p_sharp,
                      blur=args.blur, p_dynamic=args.p_dynamic,
                      object_motion=tuple(args.object_motion))
    loss, grads = jax.value_and_grad(
        lambda p: losses.psnr_content_loss(gen.apply({"params": p}, x), y))(params)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    ema = jax.tree_util.tree_map(lambda e, p: args.ema * e + (1 - args.ema) * p, ema, params)
    return (params, opt, ema, key), loss

  @jax.jit
  def run_steps(params, opt, ema, key, lr):
    opt.hyperparams["learning_rate"] = lr
    if args.steps_per_call == 1:  # no loop: XLA's CPU backend runs convolutions
      (params, opt, ema, key), loss = one_step((params, opt, ema, key), None)  # slowly in one
      return params, opt, ema, key, loss
    (params, opt, ema, key), loss = jax.lax.scan(one_step, (params, opt, ema, key), None,
                                                 length=args.steps_per_call)
    return params, opt, ema, key, jnp.mean(loss)

  apply = jax.jit(lambda p, x: gen.apply({"params": p}, x))

  def evaluate(p):
    gains = [psnr01((np.asarray(apply(p, xb))[0] + 1) / 2, y) - base for xb, y, base in val]
    return round(float(np.mean(gains)), 3), round(float(np.min(gains)), 3)

  def lr_at(frac):
    warm = min(1.0, frac / 0.02)
    return args.lr * warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

  snapshots = {}

  def save(step):
    # Files that come back from a lent machine are capped (16 MiB each): the oldest
    # snapshots go first, then the final state drops to float16.
    final = jax.tree_util.tree_map(np.asarray, jax.device_get(ema))
    kept = dict(snapshots)
    while True:
      blob = serialization.msgpack_serialize({"final": final, "snapshots": kept, "step": step})
      if len(blob) <= args.max_bytes:
        break
      if kept:
        kept.pop(min(kept, key=int))
      elif _dtype(final) != np.float16:
        final = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float16), final)
      else:
        break
    tmp = os.path.join(args.out, "params.msgpack.tmp")
    with open(tmp, "wb") as f:
      f.write(blob)
    os.replace(tmp, os.path.join(args.out, "params.msgpack"))

  log_path = os.path.join(args.out, "log.jsonl")

  def log(rec):
    print(json.dumps(rec), flush=True)
    with open(log_path, "a") as f:
      f.write(json.dumps(rec) + "\n")

  t_c = time.time()
  out = run_steps(params, opt, ema, key, jnp.float32(0.0))  # compile (a zero-rate call)
  jax.block_until_ready(out)
  params, opt, ema, key, _ = out
  ema = params
  log({"args": vars(args), "device": str(jax.devices()[0]), "params": n_params, "photos": len(photos),
       "compile_s": round(time.time() - t_c, 1), "model_options": options})
  trained, step, losses_since, next_eval = 0.0, 0, [], args.eval_every
  while trained < args.seconds:  # the budget counts training calls, not evaluations
    frac = trained / args.seconds
    t = time.time()
    params, opt, ema, key, loss = run_steps(params, opt, ema, key, jnp.float32(lr_at(frac)))
    loss = float(loss)  # waits for the call: its time is the step's
    trained += time.time() - t
    step += args.steps_per_call
    losses_since.append(loss)
    if trained >= next_eval or trained >= args.seconds:
      next_eval += args.eval_every
      mean, worst = evaluate(ema)
      log({"step": step, "s": round(trained, 1), "steps_per_s": round(step / trained, 2),
           "loss": round(float(np.mean(losses_since)), 3), "lr": round(lr_at(frac), 7),
           "probe_scale": mean, "probe_scale_worst": worst, "final": trained >= args.seconds})
      losses_since = []
      if trained < args.seconds:  # the final state is saved in float32 beside them
        snapshots[str(step)] = jax.tree_util.tree_map(
            lambda a: np.asarray(a, np.float16), jax.device_get(ema))
      save(step)


def coarse_pass(apply, params, blurry: np.ndarray, down: int) -> np.ndarray:
  """x + up(G(down x) - down x) for a uint8 [H, W, 3] image: float [H, W, 3] in [-1, 1]."""
  xb = jnp.asarray(blurry[None], jnp.float32) / 127.5 - 1
  corr = coarse_correction(lambda z: apply(params, z), xb, down)
  return np.asarray(jnp.clip(xb + corr, -1, 1)[0])


def coarse_gains(apply, params, pairs, down: int) -> dict[str, list[float]]:
  """{family: PSNR gains} of the run's pass alone, whole images, no low-frequency step."""
  fam = {}
  for ex in pairs:
    sharp = ex["sharp"].astype(np.float32) / 255.0
    out = (coarse_pass(apply, params, ex["blur"], down) + 1) / 2
    fam.setdefault(ex["family"], []).append(
        psnr01(out, sharp) - psnr01(ex["blur"].astype(np.float32) / 255.0, sharp))
  return fam


def shipped_pass(name: str):
  """(jitted one pass, stride, recorded low-frequency sigma) of a shipped model."""
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  model, params, restored = inference.restore(None, model=name)
  return (jax.jit(lambda x: model.apply({"params": params}, x)), inference.model_stride(model),
          restored.options.low_freq_sigma)


def combined_gains(apply, params, pairs, down: int, shipped) -> dict[str, list[float]]:
  """{"label:family" and "label:all": PSNR gains} of the run's pass ("coarse"), a
  shipped model's (`shipped_pass`; "full") and three ways to combine them: "fuse"
  (the band an image at 1/down holds from the run's correction, the rest from the
  model's), "add" (both corrections added), "cascade" (the model's pass on the
  image the run's pass corrected); each through the model's recorded
  low-frequency step, on images cropped to a multiple of both nets' strides."""
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  from band_fusion import _family_of  # pylint: disable=g-import-not-at-top
  from scale_passes import float_pairs, psnr  # pylint: disable=g-import-not-at-top
  full_pass, stride, sigma = shipped

  def band(c):
    return upsample_bilinear(area_downsample(c, down), down)

  fam = {}
  for ex, x, y in float_pairs(pairs, max(4 * down, 2 * stride)):
    b = jnp.asarray(x)[None]
    c1 = full_pass(b) - b
    cu = coarse_correction(lambda z: apply(params, z), b, down)
    family = ex.get("family") or _family_of(str(ex["name"]))
    base = psnr(x, y)
    for label, o in (("coarse", b + cu), ("full", b + c1), ("fuse", b + band(cu) + c1 - band(c1)),
                     ("add", b + cu + c1), ("cascade", full_pass(b + cu))):
      o = np.asarray(o)[0]
      if sigma > 0:
        o = inference.keep_input_low_frequencies(o, x, sigma)
      gain = psnr(o, y) - base
      fam.setdefault(f"{label}:{family}", []).append(gain)
      fam.setdefault(f"{label}:all", []).append(gain)
  return fam


def evaluate_run(args) -> None:
  """Each saved state of a run on a held-out set at full resolution, per family
  (`coarse_gains`); with `--fuse_with=MODEL`, beside that shipped model and
  combined with it (`combined_gains`)."""
  with open(os.path.join(args.run, "log.jsonl")) as f:
    run_args = json.loads(f.readline())["args"]
  with open(os.path.join(args.run, "params.msgpack"), "rb") as f:
    state = serialization.msgpack_restore(f.read())
  down = run_args["down"]
  gen = generator_from_config(model_config(json.loads(run_args["model_options"])))
  apply = jax.jit(lambda p, x: gen.apply({"params": p}, x))
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top
  pairs = list(pipeline.get_source(args.dataset, "test", data_dir=""))
  states = {"final": state["final"]}
  if args.snapshots:
    states.update({f"step {k}": v for k, v in sorted(state["snapshots"].items(), key=lambda kv: int(kv[0]))})
  shipped = shipped_pass(args.fuse_with) if args.fuse_with else None
  for name, p in states.items():
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)
    rec = {"run": args.run, "state": name, "dataset": args.dataset}
    if args.fuse_with:
      fam = combined_gains(apply, p, pairs, down, shipped)
      rec.update({"fuse_with": args.fuse_with,
                  **{k: round(float(np.mean(v)), 3) for k, v in sorted(fam.items())},
                  **{f"worst {k}": round(float(np.min(v)), 3) for k, v in sorted(fam.items())
                     if k.endswith(":all")}})
    else:
      fam = coarse_gains(apply, p, pairs, down)
      every = [g for v in fam.values() for g in v]
      rec.update({"mean": round(float(np.mean(every)), 3), "worst": round(float(np.min(every)), 3),
                  **{k: round(float(np.mean(v)), 3) for k, v in fam.items()}})
    print(json.dumps(rec), flush=True)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  pp = sub.add_parser("prepare", help="write the built-in photographs to one .npz")
  pp.add_argument("--out", required=True)
  t = sub.add_parser("train", help="train one run on the device")
  t.add_argument("--out", required=True, help="folder for log.jsonl and params.msgpack")
  t.add_argument("--builtin", default="", help="prepare's .npz ('' = load the built-in photographs)")
  t.add_argument("--photo_dir", default="", help="more training photographs")
  t.add_argument("--seconds", type=float, default=400, help="training time after compilation")
  t.add_argument("--down", type=int, default=4, help="the scale trained at: 1/down")
  t.add_argument("--photo_scales", type=int, nargs="*", default=[],
                 help="keep each photograph at each of these 1/f scales (default: --down alone)")
  t.add_argument("--augment", action="store_true", help="rotate and flip each crop at random")
  t.add_argument("--p_sharp", type=float, default=0.0, help="share of pairs left unblurred")
  t.add_argument("--p_dynamic", type=float, default=0.0,
                 help="share of pairs with a moving object (device_pairs.layered_blur)")
  t.add_argument("--object_motion", type=float, nargs=2, default=(2.0, 15.0),
                 help="the object's straight motion, px at the working scale")
  t.add_argument("--blur", choices=("conv", "fft"), default="conv",
                 help="how the device blurs: a grouped convolution, or FFTs (faster on a CPU)")
  t.add_argument("--init", default="", help="a run folder whose final weights start this run")
  t.add_argument("--extent", type=float, nargs=2, default=(6.25, 15.0), help="shake extent at that scale")
  t.add_argument("--kernel_size", type=int, default=25)
  t.add_argument("--pool", type=int, default=2000)
  t.add_argument("--noise", type=float, default=0.005)
  t.add_argument("--batch", type=int, default=256)
  t.add_argument("--crop", type=int, default=48)
  t.add_argument("--lr", type=float, default=1e-3)
  t.add_argument("--ema", type=float, default=0.999)
  t.add_argument("--steps_per_call", type=int, default=20,
                 help="steps per compiled call (a lax.scan); on a CPU use 1: XLA's CPU backend "
                      "ran the small net's step 25x slower inside a loop (9.3 against 0.37 s)")
  t.add_argument("--eval_every", type=float, default=60.0, help="seconds between evaluations")
  t.add_argument("--model_options", default="{}", help="JSON of config.model overrides")
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--max_bytes", type=int, default=15 << 20, help="cap on params.msgpack's size")
  e = sub.add_parser("evaluate", help="a run's saved states on a held-out set")
  e.add_argument("--run", required=True)
  e.add_argument("--dataset", default="synthetic_strong")
  e.add_argument("--snapshots", action="store_true", help="also the earlier states")
  e.add_argument("--fuse_with", default="", help="a shipped model to fuse with (e.g. gradnet_s_lf)")
  args = p.parse_args(argv)
  {"prepare": prepare, "train": train, "evaluate": evaluate_run}[args.command](args)


if __name__ == "__main__":
  main()
