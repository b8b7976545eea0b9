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

import os
import sys

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # model_surgery, beside it

import model_surgery  # pylint: disable=wrong-import-position,g-bad-import-order


def grow(params, config, num_mbrbs: int, seed: int = 0):
  """(grown params, grown config): `params` of `config`'s generator with
  GradientNet deepened to `num_mbrbs` blocks, the added ones the identity."""
  old = int(config.model.num_mbrbs)
  config, target, source = model_surgery.reshaped(params, config, "num_mbrbs", num_mbrbs, seed,
                                                  "grown")
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
  model_surgery.run(
      __doc__, verb="grow", added="blocks", size_flag="num_mbrbs",
      size_help="MBRBs of the grown model", reshape=grow,
      describe=lambda config, size: (
          f"GradientNet grown from {config.model.num_mbrbs} to {size} MBRBs "
          "(experiments/grow_mbrbs.py; added blocks are the identity)"))


if __name__ == "__main__":
  main()
