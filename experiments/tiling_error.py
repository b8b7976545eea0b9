"""How far tiled inference departs from whole-image inference on a 1280x720 frame.

    python experiments/tiling_error.py                                  # default-width random generator
    python experiments/tiling_error.py --base_features=16 --gradientnet_features=16 --num_mbrbs=2
    python experiments/tiling_error.py --workdir=workdirs/paper         # also a trained generator
    python experiments/tiling_error.py --workdir=W --local_stats=256     # and test-time local statistics

The input is skimage's astronaut, cropped to 16:9, upscaled to 1280x720 and
blurred with a 15-pixel horizontal box (linear motion) kernel. For each
(tile, overlap) the uint8 outputs of whole-image and tiled inference are
compared: PSNR of tiled against whole, mean and max absolute difference in
0-255 levels, and the wall time of each; for a trained generator also the PSNR
of each output against the sharp frame. With `--local_stats=W` the trained
generator is measured a second time with test-time local statistics over
W x W boxes (`inference.with_local_stats`). Results go to stdout as Markdown
tables (docs/inference.md records runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage
import skimage.data

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flax_gradnet import inference, metrics  # noqa: E402
from flax_gradnet.models import Generator  # noqa: E402


def sharp_frame(height: int = 720, width: int = 1280) -> np.ndarray:
  img = skimage.data.astronaut()  # 512 x 512
  crop = img[(512 - 288) // 2:(512 - 288) // 2 + 288]  # 288 x 512 = 16:9
  return np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BICUBIC))


def blurry_frame(height: int = 720, width: int = 1280) -> np.ndarray:
  big = sharp_frame(height, width).astype(np.float64)
  kernel = np.ones((1, 15, 1)) / 15.0  # horizontal linear motion
  blurred = ndimage.convolve(big, kernel, mode="reflect")
  return np.clip(np.round(blurred), 0, 255).astype(np.uint8)


def compare(name, fn, image, settings, sharp=None):
  t = time.time()
  whole = inference.deblur_image(fn, image)
  t_compile_whole = time.time() - t
  t = time.time()
  whole = inference.deblur_image(fn, image)
  t_whole = time.time() - t
  print(f"\n{name}: whole image {t_whole:.1f}s (first call incl. compile {t_compile_whole:.1f}s)")
  if sharp is not None:
    print(f"PSNR against the sharp frame: blurry input {float(metrics.psnr(image, sharp)):.2f} dB, "
          f"whole-image output {float(metrics.psnr(whole, sharp)):.2f} dB")
  print("| tile | overlap | tiles | PSNR tiled vs whole (dB) | mean abs diff | max abs diff | time (s) |"
        + (" PSNR tiled vs sharp (dB) |" if sharp is not None else ""))
  print("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if sharp is not None else ""))
  h, w = image.shape[:2]
  for tile, overlap in settings:
    inference.deblur_image(fn, image[:tile, :tile], tile=None)  # compile the tile shape
    t = time.time()
    tiled = inference.deblur_image(fn, image, tile=tile, tile_overlap=overlap)
    dt = time.time() - t
    n = len(inference.tile_starts(h, tile, overlap)) * len(inference.tile_starts(w, tile, overlap))
    p = float(metrics.psnr(tiled, whole))
    d = np.abs(tiled.astype(np.int32) - whole.astype(np.int32))
    row = f"| {tile} | {overlap} | {n} | {p:.2f} | {d.mean():.3f} | {d.max()} | {dt:.1f} |"
    if sharp is not None:
      row += f" {float(metrics.psnr(tiled, sharp)):.2f} |"
    print(row, flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--base_features", type=int, default=64)
  p.add_argument("--gradientnet_features", type=int, default=64)
  p.add_argument("--num_mbrbs", type=int, default=10)
  p.add_argument("--settings", default="256:32,256:64,512:32,512:64",
                 help="comma-separated tile:overlap pairs")
  p.add_argument("--workdir", default="", help="also measure this trained workdir's generator")
  p.add_argument("--local_stats", type=int, default=0,
                 help="also measure the trained generator with test-time local statistics "
                      "over boxes of this side (e.g. its training crop size)")
  p.add_argument("--skip_random", action="store_true", help="measure only --workdir")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",")]
  image = blurry_frame()
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}")
  print(f"input: {image.shape[1]}x{image.shape[0]} blurred astronaut")

  if not args.skip_random:
    model = Generator(base_features=args.base_features,
                      gradientnet_features=args.gradientnet_features, num_mbrbs=args.num_mbrbs)
    params = jax.jit(model.init)(jax.random.key(args.seed, impl="rbg"),
                                 jnp.zeros((1, 16, 16, 3)))["params"]
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    compare(f"random Generator(base_features={args.base_features}, gradientnet_features="
            f"{args.gradientnet_features}, num_mbrbs={args.num_mbrbs}), {n_params} params",
            inference.make_deblur_fn(model, params), image, settings)
  if args.workdir:
    model, params, restored = inference.restore(args.workdir)
    step = restored.step
    sharp = sharp_frame()
    compare(f"trained generator {args.workdir} step {step}", inference.make_deblur_fn(model, params),
            image, settings, sharp)
    if args.local_stats:
      compare(f"trained generator {args.workdir} step {step}, local statistics over "
              f"{args.local_stats}x{args.local_stats}",
              inference.make_deblur_fn(model, params, local_stats=args.local_stats),
              image, settings, sharp)


if __name__ == "__main__":
  main()
