"""experiments/widen_base.py: widening the U-Net without changing its function."""

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
widen_base = importlib.import_module("widen_base")


def _config(base, **model):
  return ml_collections.ConfigDict({"model": dict(
      base_features=base, gradientnet_features=8, num_mbrbs=1, residual=True, **model),
      "compute_dtype": "float32"})


@pytest.mark.parametrize("model", [
    dict(norm="none", upsample="pixel_shuffle", padding_mode="zeros"),  # the shipped models
    dict(norm="instance", norm_affine=True, upsample="transpose"),  # Fig. 2
])
def test_widened_model_computes_the_same_and_its_new_channels_learn(model):
  config = _config(4, **model)
  module = generator_from_config(config)
  params = jax.jit(module.init)(jax.random.key(3, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  wide, wide_config = widen_base.widen(params, config, 8)
  assert wide_config.model.base_features == 8 and config.model.base_features == 4  # input kept
  flat = traverse_util.flatten_dict(wide, sep="/")
  old = traverse_util.flatten_dict(params, sep="/")
  assert flat["enc_conv0/conv/kernel"].shape[-1] == 8
  np.testing.assert_array_equal(flat["enc_conv0/conv/kernel"][..., :4], old["enc_conv0/conv/kernel"])
  assert np.any(flat["enc_conv0/conv/kernel"][..., 4:])  # added channels: fresh, non-zero
  # out_conv reads [d0, e0]: each part's trained rows copied, the added rows zero.
  out_old, out_new = old["out_conv/conv/kernel"], flat["out_conv/conv/kernel"]
  np.testing.assert_array_equal(out_new[:, :, 0:4], out_old[:, :, 0:4])
  np.testing.assert_array_equal(out_new[:, :, 8:12], out_old[:, :, 4:8])
  assert not np.any(out_new[:, :, 4:8]) and not np.any(out_new[:, :, 12:16])
  x = np.random.default_rng(0).uniform(-1, 1, (2, 24, 20, 3)).astype(np.float32)
  wide_module = generator_from_config(wide_config)
  np.testing.assert_allclose(wide_module.apply({"params": wide}, x),
                             module.apply({"params": params}, x), atol=1e-5)
  # The added channels are not dead: the zero rows that read them get a gradient.
  loss = lambda p: jnp.mean((wide_module.apply({"params": p}, x) - 0.3) ** 2)
  g = traverse_util.flatten_dict(jax.grad(loss)(wide), sep="/")
  assert np.abs(g["out_conv/conv/kernel"][:, :, 12:16]).max() > 0


def test_widen_refuses_a_smaller_or_equal_width_and_foreign_weights():
  config = _config(4)
  module = generator_from_config(config)
  params = jax.jit(module.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  with pytest.raises(ValueError, match="must exceed the model's base_features=4"):
    widen_base.widen(params, config, 4)
  foreign = dict(params, extra={"w": jnp.zeros(2)})
  with pytest.raises(ValueError, match="missing from the widened one"):
    widen_base.widen(foreign, config, 8)
