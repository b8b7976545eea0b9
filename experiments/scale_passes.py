"""What each coarse-to-fine pass of a model contributes, on a held-out set.

    python experiments/scale_passes.py --workdir=W [--step=S] [--dataset=synthetic_strong]
    python experiments/scale_passes.py --model=NAME [--scales=N]

For a generator with `model.scales` = n > 1 (Generator's docstring), prints per
blur kind the PSNR gain over the blurry input of

* "chain to 1/F": the image after the passes from the coarsest down to
  1/F of the resolution, their correction (that pass's output minus the
  blurry image at its scale) bilinearly upsampled to full size and added to
  the blurry image; "chain to 1/1" is the model's output;
* "full-res pass alone": the same weights run as one pass (`scales=1`) on
  the whole image.

For a generator with a coarse pass of its own (`model.coarse_down` = c), prints
"coarse pass alone" (the blurry image plus the coarse net's upsampled
correction at 1/c), "full-res pass alone" (the full-resolution net without
it) and "both (the model)".

A model whose coarse passes learnt nothing shows "chain to 1/4" near +0.00 and
"full-res pass alone" near its whole gain; that is what the multi-scale loss
(`config.scale_loss_weight`) is for. Every output goes through the model's
recorded low-frequency step (`inference.low_freq_sigma`) as `deblur` applies
it; no self-ensemble, no tiling. `--scales=N` runs the model's weights as N
passes whatever it was trained with (a one-pass model as a cascade of
itself). Images are cropped to a multiple of the model's stride first. About
2 minutes for `synthetic_strong` on a 2-core CPU.
"""

import argparse
import collections
import functools
import sys

import jax
import numpy as np

from flax_gradnet import inference, metrics
from flax_gradnet.data import pipeline
from flax_gradnet.models.generator import coarse_correction, scale_targets, upsample_bilinear


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR (dB) of float images in [-1, 1], `a` clipped to that range first."""
  return float(metrics.psnr(np.clip(a, -1, 1), b, data_range=2.0))


def float_pairs(source, stride: int):
  """(example, blurry, sharp) of each example of `source`, the two as floats in
  [-1, 1] cropped to a multiple of `stride` (top-left kept)."""
  for ex in source:
    x = ex["blur"].astype(np.float32) / 127.5 - 1
    y = ex["sharp"].astype(np.float32) / 127.5 - 1
    h, w = x.shape[0] // stride * stride, x.shape[1] // stride * stride
    yield ex, x[:h, :w], y[:h, :w]


def pass_outputs(model, params, x: np.ndarray) -> dict[str, np.ndarray]:
  """{label: full-size image} for one float [H, W, 3] image in [-1, 1] whose sides
  are multiples of the model's stride."""
  n = int(model.scales)
  batch = x[None]
  passes = _all_scales(model, params, batch)
  pyramid = scale_targets(batch, n)
  out = {}
  for k, (o, xs) in enumerate(zip(passes, pyramid)):
    factor = 2 ** (n - 1 - k)
    correction = o - xs if factor == 1 else upsample_bilinear(o - xs, factor)
    out[f"chain to 1/{factor}"] = np.asarray(batch + correction)[0]
  out["full-res pass alone"] = np.asarray(_one_pass(model.clone(scales=1), params, batch))[0]
  return out


def coarse_pass_outputs(model, params, x: np.ndarray) -> dict[str, np.ndarray]:
  """{label: full-size image} of a model with a coarse pass (`coarse_down`), for
  one float [H, W, 3] image in [-1, 1]: each pass alone and both."""
  batch = x[None]
  full = model.clone(coarse_down=0)
  full_params = {k: v for k, v in params.items() if k != "coarse"}
  return {"coarse pass alone": np.asarray(_coarse_alone(model, params, batch))[0],
          "full-res pass alone": np.asarray(_one_pass(full, full_params, batch))[0],
          "both (the model)": np.asarray(_one_pass(model, params, batch))[0]}


@functools.partial(jax.jit, static_argnums=0)
def _coarse_alone(model, params, x):
  net = lambda z: model.apply({"params": params}, z, coarse_only=True)
  return x + coarse_correction(net, x, int(model.coarse_down))


@functools.partial(jax.jit, static_argnums=0)
def _all_scales(model, params, x):
  return model.apply({"params": params}, x, all_scales=True)


@functools.partial(jax.jit, static_argnums=0)
def _one_pass(model, params, x):
  return model.apply({"params": params}, x)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  which = p.add_mutually_exclusive_group(required=True)
  which.add_argument("--workdir", help="a training workdir (its latest checkpoint by default)")
  which.add_argument("--model", help="a shipped model's name")
  p.add_argument("--step", type=int, default=None, help="the workdir's checkpoint step")
  p.add_argument("--scales", type=int, default=None,
                 help="run the weights as this many coarse-to-fine passes (default: the model's)")
  p.add_argument("--dataset", default="synthetic_strong",
                 choices=("synthetic_strong", "synthetic_online", "synthetic_unseen"),
                 help="a built-in held-out set (synthetic_online: its test split)")
  args = p.parse_args(argv)
  if args.scales is not None and args.scales < 2:
    p.error(f"--scales must be >= 2 (passes to split), got {args.scales}")
  model, params, restored = inference.restore(args.workdir, model=args.model, step=args.step)
  if args.scales is not None:
    model = model.clone(scales=args.scales)
  coarse = int(getattr(model, "coarse_down", 0) or 0) >= 2 and args.scales is None
  if int(getattr(model, "scales", 1)) < 2 and not coarse:
    print(f"{restored} runs one pass (model.scales = 1): nothing to split; give --scales=N to "
          "run it as N passes.", file=sys.stderr)
    return 2
  sigma = restored.options.low_freq_sigma
  stride = inference.model_stride(model)
  source = pipeline.get_source(args.dataset, "test", data_dir="")
  gains = collections.defaultdict(list)
  for ex, x, y in float_pairs(source, stride):
    base = psnr(x, y)
    split = coarse_pass_outputs if coarse else pass_outputs
    for label, out in split(model, params, x).items():
      if sigma > 0:
        out = inference.keep_input_low_frequencies(out, x, sigma)
      gains[(ex.get("family", "all"), label)].append(psnr(out, y) - base)
  shape = (f"a coarse pass at 1/{model.coarse_down} and a full one" if coarse
            else f"{model.scales} passes")
  print(f"{restored} as {shape}, {args.dataset}; PSNR gain over the blurry input, dB "
        f"(low-frequency step {sigma:g} px)")
  if coarse:
    labels = ["coarse pass alone", "full-res pass alone", "both (the model)"]
  else:  # coarse to fine, then the one-pass comparison
    labels = [f"chain to 1/{2**k}" for k in range(int(model.scales) - 1, -1, -1)]
    labels.append("full-res pass alone")
  for family in sorted({f for f, _ in gains}):
    for label in labels:
      g = gains[(family, label)]
      print(f"  {family:13s} {label:20s} {np.mean(g):+.3f} (worst {min(g):+.3f}, {len(g)} images)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
