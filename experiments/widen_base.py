"""Widen a trained generator's U-Net (base_features) without changing what it computes.

    python experiments/widen_base.py --model=gradnet_s_psnr --base_features=32 \
        --name=gradnet_s_psnr_w32 --root=/tmp/wide
    FLAX_GRADNET_PRETRAINED_DIR=/tmp/wide python -m flax_gradnet.main \
        --config=configs/gradnet_s_psnr.py --config.model.base_features=32 \
        --config.init_from=gradnet_s_psnr_w32 --workdir=W

The full-resolution path of Fig. 2 is one 7x7 convolution + ReLU (`enc_conv0`,
`base_features` channels) read by the last 7x7 convolution (`out_conv`) beside
the upsampled decoder feature, 16 channels in the shipped models. Whether more
filters there help with fine detail on nearly sharp photographs was tested
with this script (docs/recipes.md, runs W1 and W2, lesson 29: they did not).
It builds the model of `--model` with `--base_features` channels (and 2x, 4x
that at the lower stages, as Fig. 2), copies every
trained weight into the leading block of its widened kernel, and gives each
added channel fresh incoming weights and zero outgoing weights: the layers
that read an added channel (the next encoder stage, GradientNet's first
convolution, the decoder convolutions and `out_conv`) hold zeros in its input
rows, so the widened model computes exactly the trained model's function
(checked on the reference crop) while the added channels still receive a
gradient through their outgoing weights. Packed as a model folder under
`--root` (`pretrained.pack_params`): a starting point for `config.init_from`.
"""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # model_surgery, beside it

import model_surgery  # pylint: disable=wrong-import-position,g-bad-import-order

# Layers whose input is a concatenation of two equal-width parts (U-Net skips:
# [decoder feature, encoder feature]); their old rows sit at the start of each part.
TWO_PART_INPUTS = ("dec_up0/", "out_conv/")


def _part_rows(key: str, old_in: int, new_in: int) -> list[tuple[int, int, int]]:
  """(old start, new start, length) of each input part's trained rows."""
  if new_in == old_in:
    return [(0, 0, old_in)]
  if key.startswith(TWO_PART_INPUTS):
    if old_in % 2 or new_in % 2:
      raise ValueError(f"{key}: two-part input of odd width ({old_in} -> {new_in})")
    o, n = old_in // 2, new_in // 2
    return [(0, 0, o), (o, n, o)]
  return [(0, 0, old_in)]


def widen(params, config, base_features: int, seed: int = 0):
  """(widened params, widened config): `params` of `config`'s generator with
  `model.base_features` raised to `base_features`; the added channels do not
  change the output."""
  config, target, source = model_surgery.reshaped(params, config, "base_features",
                                                  base_features, seed, "widened")
  missing = sorted(set(target) - set(source))
  if missing:
    raise ValueError(f"weights of the widened model missing from the trained one: {missing[:5]}")
  wide = {}
  for key, value in target.items():
    src = np.asarray(source[key])
    new = np.array(value)
    if src.ndim != new.ndim or any(s > n for s, n in zip(src.shape, new.shape)):
      raise ValueError(f"{key}: shape {src.shape} in the trained model does not fit "
                       f"{new.shape} in the widened one")
    if new.ndim == 4:  # conv kernel [kh, kw, in, out]; added outputs keep their fresh init
      rows = _part_rows(key, src.shape[2], new.shape[2])
      kept = np.zeros(new.shape[2], bool)
      for o, n, length in rows:
        new[:, :, n:n + length, :src.shape[3]] = src[:, :, o:o + length, :]
        kept[n:n + length] = True
      new[:, :, ~kept, :] = 0.0  # nothing reads an added input channel
    elif new.ndim == 2:  # dense (channel attention): [in, out]
      if new.shape[0] != src.shape[0]:
        raise ValueError(f"{key}: a dense layer's input widened ({src.shape} -> {new.shape})")
      new[:, :src.shape[1]] = src
    elif new.ndim == 1:  # bias, norm scale or bias: leading block
      new[:src.shape[0]] = src
    else:
      raise ValueError(f"{key}: unexpected rank {new.ndim}")
    wide[key] = jnp.asarray(new, value.dtype)
  return traverse_util.unflatten_dict(wide, sep="/"), config


def main() -> None:
  model_surgery.run(
      __doc__, verb="widen", added="channels", size_flag="base_features",
      size_help="base width of the widened model", reshape=widen,
      describe=lambda config, size: (
          f"base_features widened from {config.model.base_features} to {size} "
          "(experiments/widen_base.py; added channels are not read)"))


if __name__ == "__main__":
  main()
