"""Deepen a trained generator's GradientNet without changing what it computes.

    python experiments/grow_mbrbs.py --model=gradnet_s_psnr --num_mbrbs=8 \
        --name=gradnet_s_psnr_d8 --root=/tmp/grown
    FLAX_GRADNET_PRETRAINED_DIR=/tmp/grown python -m flax_gradnet.main \
        --config=configs/gradnet_s_psnr.py --config.model.num_mbrbs=8 \
        --config.init_from=gradnet_s_psnr_d8 --workdir=W

The MBRBs of Eq. (4) are cascaded residual blocks (Eq. 6: `out = f_FE4(...) +
U_0`), so an MBRB whose last convolution f_FE4 is zero is the identity. This
script builds the model of `--model` with `--num_mbrbs` blocks, copies every
weight of the trained model by its path, gives the added blocks (appended after
the trained ones, before the MBRU's channel attention) fresh initial weights
with f_FE4 at zero, checks that the grown model's output on the reference crop
equals the trained model's, and packs it as a model folder under `--root`
(`pretrained.pack_params`): a starting point for `config.init_from` that has
more capacity and, at step 0, exactly the trained model's held-out numbers.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flax_gradnet import pretrained  # pylint: disable=wrong-import-position
from flax_gradnet.models import generator_from_config  # pylint: disable=wrong-import-position

import model_surgery  # pylint: disable=wrong-import-position,g-bad-import-order


def grow(params, config, num_mbrbs: int, seed: int = 0):
  """(grown params, grown config): `params` of `config`'s generator with
  GradientNet deepened to `num_mbrbs` blocks, the added ones the identity."""
  old = int(config.model.num_mbrbs)
  if num_mbrbs <= old:
    raise ValueError(f"--num_mbrbs must exceed the model's {old} MBRBs, got {num_mbrbs}")
  config = config.copy_and_resolve_references()
  config.model.num_mbrbs = num_mbrbs
  module = generator_from_config(config)
  fresh = jax.jit(module.init)(jax.random.key(seed, impl="rbg"),
                               jnp.zeros((1, 16, 16, int(getattr(module, "channels", 3)))))
  target = traverse_util.flatten_dict(fresh["params"], sep="/")
  source = traverse_util.flatten_dict(params, sep="/")
  unknown = sorted(set(source) - set(target))
  if unknown:
    raise ValueError(f"weights of the trained model missing from the grown one: {unknown[:5]}")
  added = [f"gradientnet/mbrb_{i}/" for i in range(old, num_mbrbs)]
  grown = {}
  for key, value in target.items():
    if key in source:
      if tuple(np.shape(source[key])) != tuple(value.shape):
        raise ValueError(f"{key}: shape {np.shape(source[key])} in the trained model, "
                         f"{value.shape} in the grown one")
      grown[key] = jnp.asarray(source[key], value.dtype)
    elif any(key.startswith(a) for a in added):
      # f_FE4 at zero: the block adds nothing to its input (Eq. 6).
      grown[key] = jnp.zeros_like(value) if "/fe4/" in key else value
    else:
      raise ValueError(f"{key} is neither in the trained model nor in an added MBRB")
  return traverse_util.unflatten_dict(grown, sep="/"), config


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default=pretrained.DEFAULT_MODEL, help="shipped model to grow")
  p.add_argument("--num_mbrbs", type=int, required=True, help="MBRBs of the grown model")
  p.add_argument("--name", required=True, help="name of the grown model folder")
  p.add_argument("--root", required=True, help="folder to pack it into (not the package's)")
  p.add_argument("--seed", type=int, default=0, help="init of the added blocks")
  args = p.parse_args()
  module, params, config = model_surgery.load_shipped(args.model)
  grown_params, grown_config = grow(params, config, args.num_mbrbs, args.seed)
  path, diff = model_surgery.check_and_pack(
      args.model, module, params, grown_params, grown_config, name=args.name, root=args.root,
      source=f"{args.model} with GradientNet grown from {config.model.num_mbrbs} to "
             f"{args.num_mbrbs} MBRBs (experiments/grow_mbrbs.py; added blocks are the identity)")
  print(f"{path}: {args.model} with {args.num_mbrbs} MBRBs; reference output max |diff| "
        f"{diff:.1e}")


if __name__ == "__main__":
  main()
