"""How fast the small generator learns strong shake when it is told the PSF and when not.

    python experiments/blind_probe.py --mode=fixed  --steps=1500   # non-blind: one PSF for all
    python experiments/blind_probe.py --mode=random --steps=1500   # blind: a new PSF per pair
    python experiments/blind_probe.py --mode=random --kernel_weight=1 --steps=1500

The training runs of `configs/gradnet_small.py` (docs/models.md) stay near
+0.1 dB on `synthetic_strong` for thousands of steps. This probe separates the
two things such a net must learn: to invert a PSF, and to find it. It trains
the config's net (one pass; `--model_options` overrides fields) from scratch
at 1/`--down` of the resolution, where a 25-50 px shake is 6-12 px:

* sharp crops (`--crop` px) of the training photographs (the built-in ones
  training may read, plus `--photo_dir`), area-downsampled by `--down`;
* blurred in sRGB by Boracchi-Foi shake of extent `--extent` px at that scale
  (`synthetic.shake_psf_with_extent`, a pool of `--pool` PSFs, each also used
  rotated and flipped), 'valid' convolution, plus Gaussian noise of std up to
  `--noise` (fraction of full scale);
* `--mode=fixed`: every pair has the pool's first PSF (a non-blind problem);
  `--mode=random`: every pair has its own;
* `--kernel_weight` > 0 adds a training-only head (not part of the generator)
  that predicts the pair's PSF (a `--kernel_size`^2 softmax) from GradientNet's
  output averaged over the image, with that weight on its cross-entropy: does
  telling the encoder what to find speed the blind case up?

Validation, every `--eval_every` steps on photographs training never reads:
(a) the held-out built-in photographs (`online.HELDOUT_PHOTOS`) downsampled by
`--down`, whole, each under 4 shakes from a PSF pool of another seed: the mean
PSNR gain at the probe's scale and its worst image (in `fixed` mode, separately,
the gain under the training PSF: `probe_scale_train_psf`);
(b) `synthetic_strong` itself at full resolution, the net's correction at
1/`--down` upsampled (x + up(G(down x) - down x), what `model.scales` passes
do), per kind. Loss: the per-image log-MSE (losses.psnr_content_loss); Adam
with a cosine decay. CPU-sized: batch 32 of 48 px crops at 1/4 ran 0.7-0.8 s a
step on the 2-core development machine with two probes sharing its cores.
Results: docs/models.md, "Blind or non-blind".
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import signal

from configs import gradnet_small
from flax_gradnet import losses, metrics
from flax_gradnet.data import online, strong, synthetic
from flax_gradnet.data.device_pairs import downsample, shake_pool as psf_pool
from flax_gradnet.models.factory import generator_from_config
from flax_gradnet.models.generator import area_downsample, upsample_bilinear


def blur(sharp: np.ndarray, psf: np.ndarray) -> np.ndarray:
  """'valid' convolution of float [H, W, 3] with [K, K]: [H-K+1, W-K+1, 3]."""
  return np.stack([signal.fftconvolve(sharp[..., c], psf, mode="valid") for c in range(3)], -1)


class Batches:
  """Endless training batches from a background thread."""

  def __init__(self, photos, pool, args, seed):
    self.photos, self.pool, self.args = photos, pool, args
    self.rng = np.random.default_rng(seed)
    self.q = queue.Queue(maxsize=4)
    threading.Thread(target=self._fill, daemon=True).start()

  def _psf(self, rng):
    if self.args.mode == "fixed":
      return self.pool[0]
    k = self.pool[rng.integers(len(self.pool))]
    k = np.rot90(k, rng.integers(4))
    return np.ascontiguousarray(k[:, ::-1] if rng.uniform() < 0.5 else k)

  def _fill(self):
    a, rng = self.args, self.rng
    ks = a.kernel_size
    side = a.crop + ks - 1
    while True:
      xs, ys, kt = [], [], []
      for _ in range(a.batch):
        photo = self.photos[rng.integers(len(self.photos))]
        top = rng.integers(photo.shape[0] - side + 1)
        left = rng.integers(photo.shape[1] - side + 1)
        region = photo[top:top + side, left:left + side]
        k = self._psf(rng)
        b = blur(region, k) + rng.normal(0, rng.uniform(0, a.noise), (a.crop, a.crop, 3))
        o = ks // 2
        ys.append(region[o:o + a.crop, o:o + a.crop])
        xs.append(np.clip(b, 0.0, 1.0))
        kt.append(k.reshape(-1))
      self.q.put((np.stack(xs) * 2 - 1, np.stack(ys) * 2 - 1, np.stack(kt)))

  def next(self):
    return self.q.get()


class KernelHead(nn.Module):
  """Training-only PSF predictor from GradientNet's output features."""
  size: int

  @nn.compact
  def __call__(self, features):
    h = nn.relu(nn.Conv(64, (3, 3))(features))
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.size * self.size)(nn.relu(nn.Dense(128)(h)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--mode", choices=("fixed", "random"), default="random")
  p.add_argument("--kernel_weight", type=float, default=0.0)
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--crop", type=int, default=48)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--down", type=int, default=4)
  p.add_argument("--extent", type=float, nargs=2, default=(6.25, 12.5))
  p.add_argument("--kernel_size", type=int, default=21)
  p.add_argument("--noise", type=float, default=0.005)
  p.add_argument("--pool", type=int, default=2000)
  p.add_argument("--photo_dir", default="")
  p.add_argument("--model_options", default="{}", help="JSON of config.model overrides")
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)

  config = gradnet_small.get_config()
  config.model.scales = 1
  config.model.coarse_down = 0  # the one net alone (the config adds a coarse pass)
  config.model.update(json.loads(args.model_options))
  gen = generator_from_config(config)
  head = KernelHead(args.kernel_size)

  photos = dict(online.training_photographs())
  if args.photo_dir:
    photos.update(online.folder_photographs(args.photo_dir))
  photos = [downsample(v, args.down) for v in photos.values()]
  photos = [v for v in photos if min(v.shape[:2]) >= args.crop + args.kernel_size]
  pool = psf_pool(args.pool, tuple(args.extent), args.kernel_size, args.seed)
  val_pool = psf_pool(4, tuple(args.extent), args.kernel_size, args.seed + 1000)
  val_psfs = list(val_pool) + ([pool[0]] if args.mode == "fixed" else [])
  val = []  # (blurry, sharp, under the training PSF?) at the probe's scale, in [-1, 1]
  vrng = np.random.default_rng(12345)
  o = args.kernel_size // 2
  for photo in online.heldout_photographs().values():
    y = downsample(photo, args.down)
    for j, k in enumerate(val_psfs):
      b = blur(np.pad(y, ((o, o), (o, o), (0, 0)), mode="reflect"), k)
      b = np.clip(b + vrng.normal(0, args.noise / 2, b.shape), 0, 1)
      val.append((b * 2 - 1, y * 2 - 1, j == len(val_pool)))
  strong_set = strong.strong_pairs()

  rng = jax.random.PRNGKey(args.seed)
  x0 = jnp.zeros((1, args.crop, args.crop, 3))
  g_params = gen.init(rng, x0)["params"]
  _, inter = gen.apply({"params": g_params}, x0, capture_intermediates=lambda m, n: m.name == "gradientnet")
  feat = inter["intermediates"]["gradientnet"]["__call__"][0]
  h_params = head.init(rng, feat)["params"]
  params = {"gen": g_params, "head": h_params}
  tx = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps))
  opt = tx.init(params)

  def loss_fn(params, x, y, kt):
    out, inter = gen.apply({"params": params["gen"]}, x,
                           capture_intermediates=lambda m, n: m.name == "gradientnet")
    loss = losses.psnr_content_loss(out, y)
    kl = jnp.zeros(())
    if args.kernel_weight > 0:
      logits = head.apply({"params": params["head"]}, inter["intermediates"]["gradientnet"]["__call__"][0])
      kl = -jnp.mean(jnp.sum(kt * jax.nn.log_softmax(logits), axis=-1))
      loss = loss + args.kernel_weight * kl
    return loss, kl

  @jax.jit
  def step(params, opt, x, y, kt):
    (loss, kl), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, kt)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss, kl

  apply = jax.jit(lambda p, x: gen.apply({"params": p}, x))

  def psnr(a, b):  # images in [-1, 1]
    return float(metrics.psnr(np.clip((np.asarray(a) + 1) / 2, 0, 1), (np.asarray(b) + 1) / 2, data_range=1.0))

  def evaluate(params):
    gains, seen = [], []
    for b, y, is_train_psf in val:
      out = apply(params["gen"], jnp.asarray(b[None], jnp.float32))[0]
      (seen if is_train_psf else gains).append(psnr(out, y) - psnr(b, y))
    res = {"probe_scale": round(float(np.mean(gains)), 3), "probe_scale_worst": round(float(np.min(gains)), 3)}
    if seen:  # --mode=fixed: the one PSF it trains on, over the same held-out photographs
      res["probe_scale_train_psf"] = round(float(np.mean(seen)), 3)
    per_kind = {}
    for ex in strong_set:
      xb = jnp.asarray(ex["blur"][None], jnp.float32) / 127.5 - 1
      h, w = xb.shape[1:3]
      ph, pw = (-h) % args.down, (-w) % args.down
      xp = jnp.pad(xb, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
      xd = area_downsample(xp, args.down)
      corr = upsample_bilinear(apply(params["gen"], xd) - xd, args.down)[:, :h, :w]
      out = jnp.clip(xb + corr, -1, 1)[0]
      yb = ex["sharp"].astype(np.float32) / 127.5 - 1
      per_kind.setdefault(ex["family"], []).append(psnr(out, yb) - psnr(xb[0], yb))
    for k, v in per_kind.items():
      res[k] = round(float(np.mean(v)), 3)
    return res

  batches = Batches(photos, pool, args, args.seed)
  print(json.dumps({"args": vars(args), "photos": len(photos), "devices": str(jax.devices()[0])}), flush=True)
  t0, log = time.time(), []
  for i in range(1, args.steps + 1):
    x, y, kt = batches.next()
    params, opt, loss, kl = step(params, opt, x, y, kt)
    log.append((float(loss), float(kl)))
    if i % args.eval_every == 0 or i == args.steps:
      rec = {"step": i, "loss": round(float(np.mean([l for l, _ in log])), 3),
             "kernel_xent": round(float(np.mean([k for _, k in log])), 3),
             "s_per_step": round((time.time() - t0) / i, 3), **evaluate(params)}
      log = []
      print(json.dumps(rec), flush=True)


if __name__ == "__main__":
  main()
