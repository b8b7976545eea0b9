"""Scale selection at inference: when does a half-resolution pass of a one-pass
model beat its full-resolution pass, and can the model's own corrections tell?

    python experiments/band_fusion.py --model=gradnet_s_lf --dataset=train   # calibrate
    python experiments/band_fusion.py --model=gradnet_s_lf --dataset=synthetic_strong \
        --threshold=T

For each image x (floats in [-1, 1], cropped to a multiple of 2x the model's
stride) it runs the same weights twice, one pass each, no ensemble:

* c1 = G(x) - x, the full-resolution pass's correction ("full": x + c1, what
  `deblur` computes with `--self_ensemble=off`);
* c2 = up(G(down x) - down x), the correction of a pass on the image
  area-downsampled by 2, bilinearly upsampled ("half": x + c2): a 25-50 px
  shake is 12-25 px there, inside a small net's reach;
* "fuse" = x + B(c2) + (c1 - B(c1)), with B(c) = up(down c) the band a
  half-resolution image holds: the coarse band of the correction from the half
  pass, the fine band from the full pass;
* r = rms(B(c2)) / rms(B(c1)), how much more the half pass corrects in the
  band both see, computed at half resolution (`inference.half_scale_ratio`,
  what `deblur --scale_gate=T` compares with T); "gated" takes "fuse" where
  r >= --threshold, else "full" (`inference.gate_half_scale`).

Every output goes through the model's recorded low-frequency step, as `deblur`
applies it. `--dataset=train` draws fresh pairs from the training distribution
(`synthetic_online`'s generator on the training photographs, at their own scale,
the six mild families and the two strong ones, `--images` of them, 384 px) and
prints the threshold that maximises the gated gain there: a threshold chosen
on training photographs, to be checked on the held-out sets, not tuned on them.
"""

import argparse
import collections
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from flax_gradnet import inference
from flax_gradnet.data import online, pipeline, synthetic
from flax_gradnet.models.generator import area_downsample, upsample_bilinear

# The held-out pairs as floats and their PSNR, as experiments/scale_passes.py reads them.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_passes import float_pairs, psnr  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

LABELS = ("full", "half", "fuse", "gated")


def band(c: jax.Array) -> jax.Array:
  """What of `c` [N, H, W, C] (H, W even) an image at half the resolution holds:
  2 x 2 block means, bilinearly upsampled back."""
  return upsample_bilinear(area_downsample(c, 2), 2)


@functools.partial(jax.jit, static_argnums=0)
def corrections(model, params, x: jax.Array):
  """(c1, c_h) for one batch [1, H, W, C]: the full pass's correction and the
  half pass's, at half resolution."""
  def correction(xs):
    return model.apply({"params": params}, xs) - xs
  return correction(x), correction(area_downsample(x, 2))


def outputs(model, params, x: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
  """({"full", "half", "fuse"}: image [H, W, C], r) for one float image whose
  sides are multiples of 2x the model's stride. r is `inference.half_scale_ratio`
  (what `deblur --scale_gate` compares), computed at half resolution."""
  batch = jnp.asarray(x)[None]
  c1, ch = corrections(model, params, batch)
  c2 = upsample_bilinear(ch, 2)
  out = {"full": batch + c1, "half": batch + c2,
         "fuse": batch + band(c2) + c1 - band(c1)}
  r = inference.half_scale_ratio(np.asarray(ch)[0], np.asarray(area_downsample(c1, 2))[0])
  return {k: np.asarray(v)[0] for k, v in out.items()}, r


def _family_of(name: str) -> str:
  """The blur family at the end of a training record's name (`OnlinePairs`)."""
  names = sorted(synthetic.ALL_FAMILIES + ("none",), key=len, reverse=True)
  return next((f for f in names if name.endswith("_" + f)), "?")


def best_threshold(rows: list[tuple[float, float]]) -> float:
  """The r at or above which taking "fuse" instead of "full" gains most in sum,
  from (r, fuse gain - full gain) per image; inf when no cut gains."""
  best, total, threshold = 0.0, 0.0, float("inf")
  for r, delta in sorted(rows, reverse=True):
    total += delta
    if total > best:
      best, threshold = total, r
  return threshold


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  which = p.add_mutually_exclusive_group(required=True)
  which.add_argument("--workdir", help="a training workdir (its latest checkpoint)")
  which.add_argument("--model", help="a shipped model's name")
  p.add_argument("--dataset", default="synthetic_strong",
                 choices=("train", "synthetic_strong", "synthetic_online", "synthetic_unseen"),
                 help="a built-in held-out set (its test split), or 'train': fresh training pairs")
  p.add_argument("--images", type=int, default=48, help="pairs drawn with --dataset=train")
  p.add_argument("--threshold", type=float, default=float("inf"),
                 help="r at or above which 'gated' takes 'fuse' (default: never)")
  args = p.parse_args(argv)
  model, params, restored = inference.restore(args.workdir, model=args.model)
  if int(getattr(model, "scales", 1)) != 1:
    print(f"{restored} runs {model.scales} coarse-to-fine passes; this experiment splits a "
          "one-pass model (experiments/scale_passes.py splits the others).", file=sys.stderr)
    return 2
  sigma = restored.options.low_freq_sigma
  stride = 2 * inference.model_stride(model)
  if args.dataset == "train":
    families = synthetic.BLUR_FAMILIES + ("strong_shake", "dynamic")
    source = online.OnlinePairs(size=384, seed=20261204, procedural_fraction=0.0,
                                families=families, p_unblurred=0.0, photo_scale=(1.0, 1.0),
                                num_records=args.images)
  else:
    source = pipeline.get_source(args.dataset, "test", data_dir="")
  gains, rows = collections.defaultdict(list), []
  for ex, x, y in float_pairs(source, stride):
    base = psnr(x, y)
    out, r = outputs(model, params, x)
    out["gated"] = out["fuse"] if r >= args.threshold else out["full"]
    family = ex.get("family") or _family_of(str(ex["name"]))
    g = {}
    for label in LABELS:
      o = inference.keep_input_low_frequencies(out[label], x, sigma) if sigma > 0 else out[label]
      g[label] = psnr(o, y) - base
      gains[(family, label)].append(g[label])
      gains[("all", label)].append(g[label])
    rows.append((r, g["fuse"] - g["full"]))
  print(f"{restored}, {args.dataset} ({len(rows)} images); PSNR gain over the blurry input, dB, "
        f"mean (worst); low-frequency step {sigma:g} px; gated at r >= {args.threshold:g}")
  for family in sorted({f for f, _ in gains}, key=lambda f: (f == "all", f)):
    cells = "  ".join(f"{label} {np.mean(gains[(family, label)]):+.2f} "
                      f"({min(gains[(family, label)]):+.2f})" for label in LABELS)
    print(f"  {family:13s} {cells}")
  rs = np.array([r for r, _ in rows])
  print(f"r: min {rs.min():.2f}, median {np.median(rs):.2f}, max {rs.max():.2f}; "
        f"threshold that gains most here: {best_threshold(rows):.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
