"""What `grow_mbrbs.py` and `widen_base.py` share: the start of a reshape (new
config, fresh weights, refusals), the check that the reshaped shipped model
computes what the original did, packing it for `config.init_from`, and the
scripts' main (`run`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax_gradnet import pretrained  # pylint: disable=wrong-import-position
from flax_gradnet import workdir as workdir_lib  # pylint: disable=wrong-import-position
from flax_gradnet.models import generator_from_config  # pylint: disable=wrong-import-position


def reshaped(params, config, field: str, size: int, seed: int, what: str):
  """The common start of a reshape: (new config with `model.<field>` = `size`,
  the new generator's fresh initial weights, the trained `params`), both flat
  {"a/b/c": array}. Refuses a `size` that does not exceed the model's and
  trained weights the new model lacks (`what` names it: "grown", "widened")."""
  old = int(config.model[field])
  if size <= old:
    raise ValueError(f"--{field} must exceed the model's {field}={old}, got {size}")
  config = config.copy_and_resolve_references()
  config.model[field] = size
  module = generator_from_config(config)
  fresh = jax.jit(module.init)(jax.random.key(seed, impl="rbg"),
                               jnp.zeros((1, 16, 16, int(getattr(module, "channels", 3)))))
  target = traverse_util.flatten_dict(fresh["params"], sep="/")
  source = traverse_util.flatten_dict(params, sep="/")
  unknown = sorted(set(source) - set(target))
  if unknown:
    raise ValueError(f"weights of the trained model missing from the {what} one: {unknown[:5]}")
  return config, target, source


def run(doc: str, *, verb: str, added: str, size_flag: str, size_help: str,
        reshape: Callable, describe: Callable[[Any, int], str]) -> None:
  """A script's main: flags --model, --name, --root, --seed and --`size_flag`;
  `reshape(params, config, size, seed)` -> (params, config) of the new model;
  `describe(config, size)` names the change in its metadata and the summary."""
  p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  p.add_argument("--model", default=pretrained.DEFAULT_MODEL, help=f"shipped model to {verb}")
  p.add_argument(f"--{size_flag}", type=int, required=True, help=size_help)
  p.add_argument("--name", required=True, help="name of the new model folder")
  p.add_argument("--root", required=True, help="folder to pack it into (not the package's)")
  p.add_argument("--seed", type=int, default=0, help=f"init of the added {added}")
  args = p.parse_args()
  size = getattr(args, size_flag)
  module, params, config = load_shipped(args.model)
  try:
    new_params, new_config = reshape(params, config, size, args.seed)
  except ValueError as e:  # a size or a model the reshape cannot take: one line, exit 1
    raise SystemExit(f"error: {e}") from None
  what = describe(config, size)
  path, diff = check_and_pack(args.model, module, params, new_params, new_config,
                              name=args.name, root=args.root, source=f"{args.model} with {what}")
  print(f"{path}: {args.model} with {what}; reference output max |diff| {diff:.1e}")


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
