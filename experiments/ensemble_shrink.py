"""How the x8 self-ensemble is best combined: one pass, the mean, or the mean shrunk
where the 8 disagree (`inference.self_ensemble_shrunk`), on both held-out sets.

    python experiments/ensemble_shrink.py                     # the default shipped model
    python experiments/ensemble_shrink.py --model=gradnet_s_zoom
    python experiments/ensemble_shrink.py --workdir=workdirs/quick

Runs the generator once per member (the 8 flips and transposes of
`inference.self_ensemble`) on every pair of `online.heldout_pairs()` (training's
blur families) and `unseen.unseen_pairs()` (kinds no training record is made
with), and scores each way of combining the 8 the same way `evaluate` does by
default (whole image, the input's low frequencies kept with sigma
`inference.LOW_FREQ_SIGMA`, uint8 outputs, RGB PSNR): mean PSNR gain over the
blurry input, the worst image, and the images losing more than 0.1 dB. The
variants: "off" (the first member: one pass), "mean", "shrink wW" (the Wiener
gain over W x W boxes; W = 5 is `--self_ensemble=shrink`), "shrink w5 cC" (the
members' variance scaled by C before the gain: how much the choice of "no
constant" matters), "shrink w5, 4 members" (only the 4 upright flips, half the
time). The members are computed once, so the variants cost nothing extra.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flax_gradnet import inference, metrics  # noqa: E402
from flax_gradnet.data import online, unseen  # noqa: E402

# name: (members used, box window, variance scale); None = one pass / the mean.
VARIANTS = {
    "off": ("one", None, None),
    "mean": ("mean", None, None),
    "shrink w1": (8, 1, 1.0),
    "shrink w3": (8, 3, 1.0),
    "shrink w5 (default)": (8, 5, 1.0),
    "shrink w9": (8, 9, 1.0),
    "shrink w5 c0.25": (8, 5, 0.25),
    "shrink w5 c4": (8, 5, 4.0),
    "shrink w5, 4 members": (4, 5, 1.0),
}


def combine(members: np.ndarray, x: np.ndarray, spec) -> np.ndarray:
  """members [8, H, W, C] and the input x [H, W, C] -> [H, W, C]."""
  used, window, scale = spec
  if used == "one":
    return members[0]
  if used == "mean":
    return members.mean(0)
  r = members[:used] - x[None]
  rbar, var = r.mean(0), r.var(0)
  return np.asarray(inference.wiener_shrink(jnp.asarray(x[None]), jnp.asarray(rbar[None]),
                                            jnp.asarray(scale * var[None]), window))[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="a training workdir (default: a shipped model)")
  parser.add_argument("--model", default=None, help="a shipped model's name (default: the default)")
  args = parser.parse_args()
  model, params, restored = inference.restore(args.workdir, model=args.model)

  @jax.jit
  def members(p, x):
    one = lambda z: jnp.asarray(model.apply({"params": p}, z), jnp.float32)
    return jnp.stack(list(inference.ensemble_members(one, x)))

  print(f"{restored}; input's low frequencies kept (sigma {inference.LOW_FREQ_SIGMA:g}); "
        "gain = PSNR over the blurry input, dB")
  for title, pairs in (("training families (synthetic_online)", online.heldout_pairs()),
                       ("unseen kinds (synthetic_unseen)", unseen.unseen_pairs())):
    gains = {name: [] for name in VARIANTS}
    names = []
    for ex in pairs:
      x = inference.to_float(ex["blur"])
      m = np.asarray(members(params, x[None]))[:, 0]
      blurry = float(metrics.psnr(ex["blur"].astype(np.float64), ex["sharp"].astype(np.float64)))
      names.append(ex["name"])
      for name, spec in VARIANTS.items():
        out = inference.keep_input_low_frequencies(combine(m, x, spec), x,
                                                   inference.LOW_FREQ_SIGMA)
        got = float(metrics.psnr(inference.to_uint8(out).astype(np.float64),
                                 ex["sharp"].astype(np.float64)))
        gains[name].append(got - blurry)
    print(f"\n{title}, {len(names)} images")
    print(f"{'variant':24s} {'mean':>7s} {'worst':>7s}  images below -0.1 dB")
    for name, g in gains.items():
      g = np.array(g)
      bad = ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, g) if v < -0.1) or "none"
      print(f"{name:24s} {g.mean():+7.3f} {g.min():+7.2f}  {bad}")


if __name__ == "__main__":
  main()
