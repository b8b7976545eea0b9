"""Does a model leave sharp photographs alone? PSNR of its output against its own sharp input.

    python experiments/sharp_input_check.py                        # the default shipped model
    python experiments/sharp_input_check.py --model=gradnet_s_synth
    python experiments/sharp_input_check.py --workdir=workdirs/quick
    python experiments/sharp_input_check.py --low_freq_sigma=32 --self_ensemble=shrink  # as deblur

Feeds each held-out photograph (data/online.py HELDOUT_PHOTOS, never used in
training) to the generator unblurred and without noise, whole, and prints the
PSNR of the uint8 output against the input (infinite = untouched), with the
RMS change split into low (Gaussian sigma 3 px) and high frequencies. A net
that has learnt to undo blur rather than to sharpen everything scores high
here; over-sharpening shows as a low PSNR and a large high-frequency change.
`--low_freq_sigma` (default 0: the generator's output as it is) applies the
input's low frequencies as `deblur` does (`inference.keep_input_low_frequencies`);
`--self_ensemble` (default off: one pass) as `deblur`'s flag (its default: shrink).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flax_gradnet import inference, metrics  # noqa: E402
from flax_gradnet.data import online  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="a training workdir (default: a shipped model)")
  parser.add_argument("--model", default=None, help="a shipped model's name (default: the default)")
  parser.add_argument("--low_freq_sigma", type=float, default=0.0,
                      help="keep the input's low frequencies, as deblur's flag (0 = off)")
  parser.add_argument("--self_ensemble", choices=inference.ENSEMBLES, default="off",
                      help="x8 self-ensemble, as deblur's flag (default here: off, one pass)")
  args = parser.parse_args()
  model, params, restored = inference.restore(args.workdir, model=args.model)
  fn = inference.make_deblur_fn(model, params, ensemble=args.self_ensemble)
  print(f"{restored}: the sharp held-out photographs as input"
        + (f", the input's low frequencies kept (sigma {args.low_freq_sigma:g})"
           if args.low_freq_sigma else "")
        + (f", self-ensemble {args.self_ensemble}" if args.self_ensemble != "off" else ""))
  print(f"{'photo':10s} {'PSNR out vs in':>15s} {'RMS change':>11s} {'low':>6s} {'high':>6s}")
  for name, photo in online.heldout_photographs().items():
    out = inference.deblur_image(fn, photo, low_freq_sigma=args.low_freq_sigma).astype(np.float64)
    diff = out - photo
    low = ndimage.gaussian_filter(diff, (3, 3, 0))
    psnr = float(metrics.psnr(out, photo.astype(np.float64)))
    print(f"{name:10s} {psnr:15.2f} {np.sqrt(np.mean(diff ** 2)):11.2f} "
          f"{np.sqrt(np.mean(low ** 2)):6.2f} {np.sqrt(np.mean((diff - low) ** 2)):6.2f}")


if __name__ == "__main__":
  main()
