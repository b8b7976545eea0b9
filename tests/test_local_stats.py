"""Test-time local statistics (TLC): local box means against a
brute-force numpy statement, the whole-image window against global statistics
(flax's InstanceNorm, the paper's channel attention), and the CLI flags."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from flax_gradnet import deblur, inference
from flax_gradnet.models import Generator
from flax_gradnet.models import layers

TINY = dict(base_features=4, gradientnet_features=8, num_mbrbs=1, ca_reduction=4)


def _numpy_local_mean(x, window):
  """For each pixel, the mean over the window x window box (clipped to the
  image) whose top-left is the pixel's minus (window - 1) // 2, moved inside."""
  n, h, w, c = x.shape
  kh, kw = min(window, h), min(window, w)
  out = np.zeros(x.shape, np.float64)
  for i in range(h):
    for j in range(w):
      top = min(max(i - (kh - 1) // 2, 0), h - kh)
      left = min(max(j - (kw - 1) // 2, 0), w - kw)
      out[:, i, j] = x[:, top:top + kh, left:left + kw].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("shape,window", [((2, 11, 9, 3), 4), ((1, 12, 7, 2), 5),
                                          ((1, 6, 20, 1), 8), ((1, 5, 5, 2), 1)])
def test_local_mean_matches_brute_force(shape, window):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = np.asarray(layers.local_mean(jnp.asarray(x), window))
  np.testing.assert_allclose(got, _numpy_local_mean(x.astype(np.float64), window), atol=2e-6)


def test_local_mean_of_a_window_covering_the_image_is_the_global_mean():
  x = np.random.default_rng(1).uniform(-1, 1, (2, 30, 17, 4)).astype(np.float32)
  got = np.asarray(layers.local_mean(jnp.asarray(x), 64))
  want = np.broadcast_to(x.astype(np.float64).mean(axis=(1, 2), keepdims=True), x.shape)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_local_mean_rejects_an_empty_window():
  with pytest.raises(ValueError, match="window must be >= 1"):
    layers.local_mean(jnp.zeros((1, 4, 4, 1)), 0)


@pytest.mark.parametrize("affine", [True, False])
def test_local_instance_norm_with_a_whole_image_window_is_flax_instance_norm(affine):
  x = jnp.asarray(np.random.default_rng(2).normal(1.5, 2.0, (2, 20, 28, 5)), jnp.float32)
  flax_norm = nn.InstanceNorm(epsilon=1e-5, use_scale=affine, use_bias=affine)
  params = flax_norm.init(jax.random.key(0), x)
  if affine:  # not the identity initialisation, so scale/bias are really read
    params = jax.tree_util.tree_map(lambda p: p + jnp.arange(p.shape[0], dtype=p.dtype) * 0.1,
                                    params)
  local = layers.LocalInstanceNorm(window=32, epsilon=1e-5, use_scale=affine, use_bias=affine)
  assert jax.tree_util.tree_structure(local.init(jax.random.key(0), x)) == \
      jax.tree_util.tree_structure(params)
  np.testing.assert_allclose(local.apply(params, x), flax_norm.apply(params, x), atol=2e-5)


def test_local_instance_norm_normalises_each_box():
  # Two halves with different statistics: a window of one half normalises each
  # half on its own, the global norm does not.
  rng = np.random.default_rng(3)
  x = np.concatenate([rng.normal(0, 1, (1, 16, 16, 1)), rng.normal(10, 5, (1, 16, 16, 1))],
                     axis=2).astype(np.float32)
  local = layers.LocalInstanceNorm(window=16, use_scale=False, use_bias=False)
  y = np.asarray(local.apply({}, jnp.asarray(x)))
  for half in (y[:, :, 4:12], y[:, :, 20:28]):  # boxes fully inside one half
    assert abs(half.mean()) < 0.3 and 0.7 < half.std() < 1.3


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_generator_with_a_whole_image_window_equals_global_statistics(norm):
  x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (1, 36, 44, 3)), jnp.float32)
  model = Generator(norm=norm, **TINY)
  params = model.init(jax.random.key(0), x)["params"]
  local = inference.with_local_stats(model, 64)
  assert local.stats_window == 64 and model.stats_window == 0
  assert jax.tree_util.tree_structure(local.init(jax.random.key(0), x)["params"]) == \
      jax.tree_util.tree_structure(params)  # no parameter depends on the window
  whole = model.apply({"params": params}, x)
  np.testing.assert_allclose(local.apply({"params": params}, x), whole, atol=1e-5)
  small = inference.with_local_stats(model, 8).apply({"params": params}, x)
  assert float(jnp.abs(small - whole).max()) > 1e-3  # a smaller window changes the output


def test_with_local_stats_errors_and_off():
  model = Generator(**TINY)
  assert inference.with_local_stats(model, 0) is model
  with pytest.raises(ValueError, match=">= 0"):
    inference.with_local_stats(model, -1)
  with pytest.raises(ValueError, match="no stats_window"):
    inference.with_local_stats(nn.Dense(3), 16)


def test_deblur_cli_local_stats(tmp_path, generator_workdir, capsys):
  wd = tmp_path / "wd"
  model = Generator(**TINY)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  generator_workdir(str(wd), TINY, params, 3)
  src = tmp_path / "in.png"
  photo = skimage.data.chelsea()[:40, :48]
  Image.fromarray(photo).save(src)
  out = tmp_path / "out"
  assert deblur.main([str(src), "--workdir", str(wd), "--output_dir", str(out),
                      "--local_stats", "16"]) == 0
  got = np.asarray(Image.open(out / "in.png"))
  # The rest is the model's (this workdir records none: one pass, the output as it is).
  fn = inference.make_deblur_fn(inference.with_local_stats(model, 16), params)
  np.testing.assert_array_equal(got, inference.deblur_image(fn, photo))
  # Alone, the flag means the training crop size: this fake workdir has none.
  assert deblur.main([str(src), "--workdir", str(wd), "--output_dir", str(tmp_path / "o2"),
                      "--local_stats"]) == 2
  assert "crop_size" in capsys.readouterr().err
  assert deblur.main([str(src), "--workdir", str(wd), "--output_dir", str(tmp_path / "o3"),
                      "--local_stats=-4"]) == 2


def test_training_crop_size_of_the_shipped_model():
  _, _, restored = inference.restore(model="gradnet_s_native")
  assert inference.training_crop_size(restored) == 128
