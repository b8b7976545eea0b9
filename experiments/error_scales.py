"""Where a model's held-out error lies: per image, its colour offset and its error by scale.

    python -m flax_gradnet.evaluate --dataset=synthetic_online --self_ensemble=off --low_freq_sigma=0 --output_dir=EVAL
    python experiments/error_scales.py --eval_dir=EVAL --dataset=synthetic_online

For each pair of the held-out set (`synthetic_online`: `online.heldout_pairs()`;
`synthetic_unseen`: `unseen.unseen_pairs()`) it reads the deblurred PNG that
`evaluate` wrote (EVAL/deblurred/<name>) and splits the error `e = output - sharp`
(grey levels, 0-255) into bands: `e - G_0.7 e`, `G_0.7 e - G_1.5 e`, ... and what
lies below the last Gaussian (scipy.ndimage.gaussian_filter, mirrored borders),
printing each band's mean square beside the same split of the blurry input's
error, and the mean offset per channel. The bands' mean squares add up to
roughly the total MSE (the bands are not exactly orthogonal). A band where the
output's error exceeds the blurry input's is where the model loses;
docs/recipes.md (lesson 27) reads these tables.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax_gradnet.data import online, unseen  # pylint: disable=wrong-import-position

SIGMAS = (0.7, 1.5, 3.0, 8.0)


def bands(error: np.ndarray, sigmas=SIGMAS) -> list[float]:
  """Mean squares of `error` [H, W, C] between successive Gaussians (finest
  first), then below the last one."""
  error = np.asarray(error, np.float64)
  out, previous = [], error
  for sigma in sigmas:
    low = ndimage.gaussian_filter(error, (sigma, sigma, 0), mode="reflect")
    out.append(float(np.mean((previous - low) ** 2)))
    previous = low
  out.append(float(np.mean(previous ** 2)))
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--eval_dir", required=True, help="an evaluate --output_dir with deblurred/")
  p.add_argument("--dataset", choices=("synthetic_online", "synthetic_unseen"),
                 default="synthetic_online")
  p.add_argument("--only", default="", help="comma-separated names (e.g. rocket/shake.png)")
  args = p.parse_args()
  pairs = online.heldout_pairs() if args.dataset == "synthetic_online" else unseen.unseen_pairs()
  only = {n for n in args.only.split(",") if n}
  names = ["<0.7", "0.7-1.5", "1.5-3", "3-8", ">8"]
  print(f"{'image':24s} {'gain':>6s}  output error by scale (MSE) {' ' * 14}| blurry input's "
        f"{' ' * 22}| output offset R G B")
  print(f"{'':24s} {'':6s}  " + " ".join(f"{n:>7s}" for n in names) + " | "
        + " ".join(f"{n:>7s}" for n in names) + " |")
  for ex in pairs:
    if only and ex["name"] not in only:
      continue
    path = os.path.join(args.eval_dir, "deblurred", ex["name"])
    if not os.path.isfile(path):
      raise SystemExit(f"{path} is missing: run evaluate with --save_outputs (the default) into "
                       f"{args.eval_dir} first")
    out = np.asarray(Image.open(path).convert("RGB"), np.float64)
    sharp, blurry = ex["sharp"].astype(np.float64), ex["blur"].astype(np.float64)
    mse = lambda x: float(np.mean((x - sharp) ** 2))
    gain = 10 * np.log10(mse(blurry) / mse(out))
    offset = (out - sharp).mean(axis=(0, 1))
    print(f"{ex['name']:24s} {gain:+6.2f}  " + " ".join(f"{v:7.2f}" for v in bands(out - sharp))
          + " | " + " ".join(f"{v:7.2f}" for v in bands(blurry - sharp)) + " | "
          + " ".join(f"{v:+5.2f}" for v in offset))


if __name__ == "__main__":
  main()
