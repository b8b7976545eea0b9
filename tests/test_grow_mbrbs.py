"""experiments/grow_mbrbs.py: deepening GradientNet without changing its function."""

import importlib
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from flax_gradnet.models import generator_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
grow_mbrbs = importlib.import_module("grow_mbrbs")


def _config(num_mbrbs):
  return ml_collections.ConfigDict({"model": dict(
      base_features=4, gradientnet_features=8, num_mbrbs=num_mbrbs, residual=True),
      "compute_dtype": "float32"})


def test_grown_model_computes_the_same_and_its_new_blocks_learn():
  config = _config(1)
  module = generator_from_config(config)
  params = jax.jit(module.init)(jax.random.key(3, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  grown, grown_config = grow_mbrbs.grow(params, config, 3)
  assert grown_config.model.num_mbrbs == 3 and config.model.num_mbrbs == 1  # input kept
  flat = traverse_util.flatten_dict(grown, sep="/")
  assert {k.split("/")[1] for k in flat if "/mbrb_" in k} == {"mbrb_0", "mbrb_1", "mbrb_2"}
  old = traverse_util.flatten_dict(params, sep="/")
  for k, v in old.items():  # every trained weight copied as it was
    np.testing.assert_array_equal(flat[k], v)
  for i in (1, 2):  # added blocks: f_FE4 zero, the rest a fresh (non-zero) init
    assert not np.any(flat[f"gradientnet/mbrb_{i}/fe4/conv/kernel"])
    assert np.any(flat[f"gradientnet/mbrb_{i}/fe3/conv/kernel"])
  x = np.random.default_rng(0).uniform(-1, 1, (2, 24, 20, 3)).astype(np.float32)
  grown_module = generator_from_config(grown_config)
  np.testing.assert_allclose(grown_module.apply({"params": grown}, x),
                             module.apply({"params": params}, x), atol=1e-6)
  # The added blocks are not dead: their f_FE4 gets a gradient, so training moves them.
  loss = lambda p: jnp.mean((grown_module.apply({"params": p}, x) - 0.3) ** 2)
  g = traverse_util.flatten_dict(jax.grad(loss)(grown), sep="/")
  assert np.abs(g["gradientnet/mbrb_2/fe4/conv/kernel"]).max() > 0


def test_grow_refuses_a_smaller_or_equal_depth_and_foreign_weights():
  config = _config(2)
  module = generator_from_config(config)
  params = jax.jit(module.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  with pytest.raises(ValueError, match="must exceed the model's num_mbrbs=2"):
    grow_mbrbs.grow(params, config, 2)
  foreign = dict(params, extra={"w": jnp.zeros(2)})
  with pytest.raises(ValueError, match="missing from the grown one"):
    grow_mbrbs.grow(foreign, config, 3)
