"""The shared end of `grow_mbrbs.py` and `widen_base.py`: check that a reshaped
shipped model computes what the original did, then pack it for `config.init_from`."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax_gradnet import pretrained  # pylint: disable=wrong-import-position
from flax_gradnet import workdir as workdir_lib  # pylint: disable=wrong-import-position
from flax_gradnet.models import generator_from_config  # pylint: disable=wrong-import-position


def load_shipped(model: str):
  """(module, params, config) of the shipped model `model`."""
  module, params = pretrained.load(model)
  return module, params, workdir_lib.load_config(pretrained.model_dir(model))


def check_and_pack(model: str, module, params, new_params, new_config, *, name: str, root: str,
                   source: str, tolerance: float = 1e-5) -> tuple[str, float]:
  """Packs `new_params` (of `new_config`'s generator) as model `name` under
  `root` if its output on `model`'s reference crop equals `module`'s with
  `params` within `tolerance`; exits with the difference otherwise.

  Returns:
    (the packed folder, the max absolute output difference).
  """
  image, _ = pretrained.reference_pair(model)
  before = pretrained.reference_output(module, params, image)
  after = pretrained.reference_output(generator_from_config(new_config), new_params, image)
  diff = float(np.abs(np.asarray(after) - np.asarray(before)).max())
  if diff > tolerance:
    raise SystemExit(f"the reshaped model computes something else: max |diff| {diff:.2e}")
  step = pretrained.read_metadata(model).get("step", 0)
  path = pretrained.pack_params(new_params, new_config, name, root=root, step=int(step or 0),
                                source=source)
  return path, diff
