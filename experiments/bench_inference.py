"""Times the generator's forward pass on one image (inference), after compilation.

    python experiments/bench_inference.py                                # paper config, 1280x720
    python experiments/bench_inference.py --config=configs/quickstart.py
    python experiments/bench_inference.py --size=1920x1080 --dtype=bfloat16
    python experiments/bench_inference.py --reference                    # models/reference.py
    python experiments/bench_inference.py --size=3840x2160 --tile=512    # tiled, as deblur --tile
    python experiments/bench_inference.py --config=configs/gradnet_s_lf.py --self_ensemble=shrink
    python experiments/bench_inference.py --config=configs/gradnet_small.py --against=configs/default.py

Prints the median wall time of `--repeats` forward passes (random weights,
one image, fp32 unless --dtype), the XLA-counted FLOPs of the *reference*
model (flax_gradnet/models/reference.py, the straightforward implementation that
the optimised modules must equal; its count is the work the model asks for,
whatever tricks the fast code plays), the achieved GFLOP/s, a dense float32
matmul's GFLOP/s measured in the same process, their ratio, and the process's
peak resident memory after the timed passes (before the matmul).
`--self_ensemble=mean|shrink` times the x8 self-ensemble as `deblur` runs it
(`inference.make_deblur_fn(ensemble=...)`, 8 generator passes; the FLOPs line
counts all 8); this script's default is `off` (one pass).
`--against=CONFIG` also times CONFIG's one pass (random weights, same image,
same process, measured right after) and prints the ratio of the two times:
how a model's inference compares with the paper generator's
(`--against=configs/default.py`) on the machine at hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import configs  # noqa: E402
from flax_gradnet import cli  # noqa: E402
from flax_gradnet.models import generator_from_config, reference  # noqa: E402


def reference_generator(config, dtype):
  """The straightforward generator of the same config (flax_gradnet.models.reference),
  one pass (a coarse-to-fine model's passes and a coarse pass are counted by
  `reference_flops`)."""
  fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.to_dict().items()}
  fields.pop("scales", None)
  fields.pop("coarse_down", None)
  return reference.Generator(**fields, dtype=dtype)


def reference_flops(config, dtype, params, h: int, w: int) -> float:
  """XLA-counted FLOPs of the reference modules over every pass of one image: with
  `model.scales` = S > 1 the passes at 1/2**k of the (padded) size for k < S; the
  area means and bilinear upsampling between them are not counted (a few FLOPs a pixel).
  With `model.coarse_down` = c, the coarse net's pass at 1/c of the (padded) size too."""
  reference = reference_generator(config, dtype)
  scales = int(config.model.get("scales", 1))
  coarse = int(config.model.get("coarse_down", 0))
  params = dict(params)
  coarse_params = params.pop("coarse", None)

  def flops(p, height, width):
    x = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    cost = jax.jit(lambda p, x: reference.apply({"params": p}, x)).lower(p, x).cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

  f = 2 ** (scales - 1)
  hp, wp = h + (-h) % f, w + (-w) % f
  total = sum(flops(params, hp // 2**k, wp // 2**k) for k in range(scales))
  if coarse:
    total += flops(coarse_params, -(-h // coarse), -(-w // coarse))
  return total


def random_params(model, x):
  """Weights of the model's shapes from numpy (N(0, 1/fan_in) kernels, small
  biases, unit norm scales), without compiling `init`: a deblurring run loads
  its weights, and a compiled init of the whole net would add its own ~0.75 GiB
  to the peak resident memory measured here."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x[:, :32, :32])["params"]
  rng = np.random.default_rng(0)

  def fill(path, s):
    if jax.tree_util.keystr(path).endswith("['scale']"):
      return jnp.ones(s.shape, s.dtype)
    if len(s.shape) >= 2:
      return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jnp.asarray(0.01 * rng.normal(size=s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def matmul_flops_per_s(n: int = 4096, repeats: int = 5) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x * 1e-4)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / float(np.median(times))


def time_calls(forward, params, x, repeats: int) -> tuple[float, list[float]]:
  """(seconds of the first call, compile included; seconds of each later call)."""
  t = time.perf_counter()
  forward(params, x).block_until_ready()
  first_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    forward(params, x).block_until_ready()
    times.append(time.perf_counter() - t)
  return first_s, times


def peak_rss_gib() -> float:
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return kib / 2**20


def parse_size(text: str) -> tuple[int, int]:
  try:
    w, h = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, e.g. 1280x720; got {text!r}")
  if w < 1 or h < 1:
    raise argparse.ArgumentTypeError(f"--size must be positive, got {text!r}")
  return w, h


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/default.py",
                      help="configs/<name>.py[:arg] (imported from the configs package); "
                           "its `model` fields build the generator")
  parser.add_argument("--size", type=parse_size, default=(1280, 720), help="WIDTHxHEIGHT")
  parser.add_argument("--repeats", type=int, default=3, help="timed passes after compilation")
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  parser.add_argument("--tile", type=int, default=0,
                      help="tile side (inference.deblur_array, as `deblur --tile`); 0 = whole image")
  parser.add_argument("--tile_overlap", type=int, default=32)
  parser.add_argument("--self_ensemble", choices=cli.ENSEMBLES, default="off",
                      help="time the x8 self-ensemble (deblur's default: shrink); off = one pass")
  parser.add_argument("--against", default="",
                      help="also time this config's one pass and print the ratio of the times")
  parser.add_argument("--reference", action="store_true",
                      help="time the reference (pre-optimisation) modules instead")
  args = parser.parse_args()

  config = configs.load(args.config)
  dtype = jnp.dtype(args.dtype)
  if args.reference and int(config.model.get("scales", 1)) != 1:
    raise SystemExit("--reference: the reference generator is one pass; this config's "
                     "model.scales runs several (time it without --reference).")
  model = (reference_generator(config, dtype) if args.reference
           else generator_from_config(config, dtype))
  w, h = args.size
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, h, w, 3)), jnp.float32)
  params = random_params(model, x)
  passes = 1 if args.self_ensemble == "off" else 8
  if args.tile or passes > 1:
    from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
    fn = inference.make_deblur_fn(model, params, ensemble=args.self_ensemble)

    def forward(p, x):  # noqa: ARG001  (the params are inside fn)
      if not args.tile:
        return fn(x)
      return jnp.asarray(inference.deblur_array(fn, np.asarray(x[0]), tile=args.tile,
                                                tile_overlap=args.tile_overlap))
  else:
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))

  flops = reference_flops(config, dtype, params, h, w) * passes

  first_s, times = time_calls(forward, params, x, args.repeats)
  seconds = float(np.median(times))
  rss = peak_rss_gib()
  against = None
  if args.against:
    other = generator_from_config(configs.load(args.against), dtype)
    other_params = random_params(other, x)
    other_fn = jax.jit(lambda p, x: other.apply({"params": p}, x))
    _, other_times = time_calls(other_fn, other_params, x, args.repeats)
    against = float(np.median(other_times))
  peak = matmul_flops_per_s()

  print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPU(s); "
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); jax {jax.__version__}")
  print(f"model: {args.config}{' (reference modules)' if args.reference else ''}, "
        f"{args.dtype}, one {w}x{h} image"
        + (f", x8 self-ensemble ({args.self_ensemble})" if passes > 1 else "")
        + (f", tiles of {args.tile} overlapping by {args.tile_overlap}" if args.tile else ""))
  print(f"first call (compile + run): {first_s:.1f} s")
  print(f"forward: {seconds:.2f} s (median of {args.repeats}; all: "
        f"{', '.join(f'{t:.2f}' for t in times)})")
  print(f"model FLOPs (XLA, reference modules): {flops / 1e9:.1f} G -> achieved "
        f"{flops / seconds / 1e9:.1f} GFLOP/s")
  print(f"dense f32 matmul (4096^2) in this process: {peak / 1e9:.1f} GFLOP/s; "
        f"ratio {flops / seconds / peak:.2f}")
  print(f"peak RSS after the timed passes: {rss:.2f} GiB")
  if against is not None:
    print(f"against {args.against} (one pass, same image): {against:.2f} s; "
          f"ratio {seconds / against:.2f}")


if __name__ == "__main__":
  main()
