"""Cost report: parameters and XLA-counted FLOPs of the generator (Table 3).

    python -m flax_gradnet.cost                # every variant, one 1280x720 image
    python -m flax_gradnet.cost --variants="default,w/o MBRBs" --height=256 --width=256

`--variants` picks rows of `VARIANTS` (the default generator, the Table 5
ablations by the paper's labels, pixel-shuffle upsampling); `--models` is its
older name. Exit status (`flax_gradnet.cli`): 0 done, 2 bad flags.

FLOPs are read from XLA's cost analysis of the lowered (not executed) forward
pass, so the report needs no accelerator and no memory for activations. XLA
counts a multiply-add as 2 FLOPs; the paper's "446.98G FLOPs" is compared with
both FLOPs and multiply-adds (FLOPs / 2): README explains why the paper's
figure reads as multiply-adds.
"""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
from clu import parameter_overview

from flax_gradnet import cli
from flax_gradnet.models import GENERATOR_ABLATIONS, Generator, PatchCritic, reference

PAPER_GFLOPS = 446.98  # Table 3, "Ours", 1280x720

# The paper config's generator fields that differ from Generator's defaults
# (configs/default.py: PyTorch's InstanceNorm2d, without affine parameters).
PAPER_MODEL = {"norm_affine": False, "norm_epsilon": 1e-5}

# The default generator, the Table 5 ablations (models/ablations.py) by the
# paper's labels, and the cheaper upsampling, as field overrides.
VARIANTS = {
    "default": {},
    **{ablation.label: dict(ablation.fields) for ablation in GENERATOR_ABLATIONS.values()},
    "pixel-shuffle upsampling": {"upsample": "pixel_shuffle"},
}


def forward_cost(model, height: int, width: int, batch: int = 1) -> tuple[int, float]:
  """(parameter count, XLA-counted FLOPs) of one forward pass, without running it.

  A `Generator` is counted as `models.reference.Generator` of the same fields:
  the network's operations one by one (the fast modules' cross kernels carry
  zero taps that XLA counts, and their transposed conv skips the zeros). The
  reference has no test-time options (`stats_window`): those must be at their
  defaults.
  """
  if isinstance(model, Generator):
    fields = {f: getattr(model, f) for f in model.__dataclass_fields__
              if f not in ("parent", "name")}
    known = reference.Generator.__dataclass_fields__
    if unknown := {f: v for f, v in fields.items()
                   if f not in known and v != Generator.__dataclass_fields__[f].default}:
      raise ValueError(f"the cost report counts models.reference.Generator, which has no {unknown}")
    model = reference.Generator(**{f: v for f, v in fields.items() if f in known})
  x = jax.ShapeDtypeStruct((batch, height, width, getattr(model, "channels", 3)), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, jax.random.PRNGKey(0)), x)
  # Lowered for the CPU wherever this runs: the count is a property of the
  # network, and jax 0.11's CUDA backend returns no cost analysis (None).
  lowered = jax.jit(model.apply).trace(variables, x).lower(lowering_platforms=("cpu",))
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returns one dict per device
    cost = cost[0]
  return int(parameter_overview.count_parameters(variables["params"])), float(cost["flops"])


def report(height: int, width: int, variants: dict[str, dict], base: dict | None = None) -> str:
  rows = [
      f"Generator cost for one {width}x{height} image (XLA cost analysis of the lowered forward).",
      f"Paper, Table 3: {PAPER_GFLOPS} G 'FLOPs' (read as multiply-adds, see README).",
      "",
      "| model | parameters | XLA GFLOPs | G multiply-adds (FLOPs/2) | vs paper 446.98 G |",
      "|---|---:|---:|---:|---:|",
  ]
  for name, overrides in variants.items():
    model = Generator(**{**(base or {}), **overrides})
    n, flops = forward_cost(model, height, width)
    macs = flops / 2e9
    rows.append(f"| {name} | {n:,} | {flops / 1e9:,.1f} | {macs:,.1f} | "
                f"{100 * (macs / PAPER_GFLOPS - 1):+.1f}% |")
  n, flops = forward_cost(PatchCritic(), 256, 256)
  rows += ["", f"PatchCritic (70x70, 256x256 input): {n:,} parameters, "
               f"{flops / 1e9:.2f} XLA GFLOPs per image."]
  return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
  p = cli.parser("python -m flax_gradnet.cost", __doc__.splitlines()[0], __doc__)
  p.add_argument("--height", type=int, default=720, help="image height (default %(default)s)")
  p.add_argument("--width", type=int, default=1280, help="image width (default %(default)s)")
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help=f"comma-separated subset of: {', '.join(VARIANTS)} (default: all)")
  # The older name, not listed: `--model` names a shipped model in the other tools.
  p.add_argument("--models", dest="variants", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
  return p


def main(argv=None) -> int:
  """Prints the report; returns the exit status (0 done; bad flags exit 2)."""
  parser = _parser()
  args = parser.parse_args(argv)
  names = [m.strip() for m in args.variants.split(",") if m.strip()]
  unknown = [m for m in names if m not in VARIANTS]
  if unknown:
    parser.error(f"unknown --variants entries {unknown}; choose from {list(VARIANTS)}")
  print(report(args.height, args.width, {m: VARIANTS[m] for m in names}, base=PAPER_MODEL))
  return cli.EXIT_OK


def run() -> None:
  """Console entry point `flax-gradnet-cost`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
