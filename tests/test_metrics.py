"""PSNR/SSIM against scikit-image and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.filters
import skimage.metrics

from flax_gradnet import metrics

psnr_jit = jax.jit(metrics.psnr, static_argnames=("data_range", "crop_border", "y_channel"))
ssim_jit = jax.jit(metrics.ssim, static_argnames=("data_range", "crop_border", "y_channel"))


def _sk_psnr(a, b):
  return skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)


def _sk_ssim(a, b):
  return skimage.metrics.structural_similarity(
      a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
      channel_axis=-1)


def _degrade(img, kind, rng):
  x = img.astype(np.float64)
  if kind == "noise":
    x = x + rng.normal(0, 10, x.shape)
  elif kind == "blur":
    x = skimage.filters.gaussian(x, sigma=2.0, channel_axis=-1, preserve_range=True)
  elif kind == "shift":
    x = np.roll(x, 3, axis=1) * 0.9 + 12
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _images():
  camera = np.repeat(skimage.data.camera()[..., None], 3, axis=-1)
  return {
      "astronaut": skimage.data.astronaut(),
      "camera_crop": camera[37:37 + 123, 200:200 + 301],
      "chelsea_crop": skimage.data.chelsea()[10:10 + 97, 31:31 + 64],
      "chelsea_min": skimage.data.chelsea()[:11, :17],
  }


@pytest.mark.parametrize("name", list(_images()))
@pytest.mark.parametrize("kind", ["noise", "blur", "shift"])
def test_psnr_ssim_match_skimage(name, kind):
  rng = np.random.default_rng(0)
  a = _images()[name]
  b = _degrade(a, kind, rng)
  np.testing.assert_allclose(float(psnr_jit(a, b)), _sk_psnr(a, b), atol=1e-3)
  np.testing.assert_allclose(float(ssim_jit(a, b)), _sk_ssim(a, b), atol=1e-4)


def test_batched_equals_single():
  rng = np.random.default_rng(1)
  base = skimage.data.astronaut()[:96, :128]
  a = np.stack([base, base[::-1], base[:, ::-1]])
  b = np.stack([_degrade(x, k, rng) for x, k in zip(a, ["noise", "blur", "shift"])])
  p, s = psnr_jit(a, b), ssim_jit(a, b)
  assert p.shape == (3,) and s.shape == (3,)
  for i in range(3):
    np.testing.assert_allclose(p[i], _sk_psnr(a[i], b[i]), atol=1e-3)
    np.testing.assert_allclose(s[i], _sk_ssim(a[i], b[i]), atol=1e-4)


def _numpy_y(img):
  # ITU-R BT.601 luma as BasicSR's rgb2ycbcr(y_only=True), on 0-255 input.
  x = img.astype(np.float64) / 255.0
  return (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2])[..., None]


def test_y_channel_matches_numpy_bt601():
  rng = np.random.default_rng(2)
  a = skimage.data.chelsea()[:120, :150]
  b = _degrade(a, "noise", rng)
  ya, yb = _numpy_y(a), _numpy_y(b)
  assert 16.0 <= ya.min() and ya.max() <= 235.0
  np.testing.assert_allclose(np.asarray(metrics.rgb_to_y(a)), ya, atol=1e-3)
  np.testing.assert_allclose(float(psnr_jit(a, b, y_channel=True)),
                             skimage.metrics.peak_signal_noise_ratio(ya, yb, data_range=255),
                             atol=1e-3)
  np.testing.assert_allclose(float(ssim_jit(a, b, y_channel=True)),
                             _sk_ssim(ya, yb), atol=1e-4)
  # white -> 235, black -> 16
  np.testing.assert_allclose(np.asarray(metrics.rgb_to_y(np.array([[[255, 255, 255], [0, 0, 0]]]))),
                             [[[235.0], [16.0]]], atol=1e-3)


def test_crop_border():
  rng = np.random.default_rng(3)
  a = skimage.data.astronaut()[:80, :90]
  b = _degrade(a, "noise", rng)
  k = 4
  np.testing.assert_allclose(float(psnr_jit(a, b, crop_border=k)),
                             _sk_psnr(a[k:-k, k:-k], b[k:-k, k:-k]), atol=1e-3)
  np.testing.assert_allclose(float(ssim_jit(a, b, crop_border=k)),
                             _sk_ssim(a[k:-k, k:-k], b[k:-k, k:-k]), atol=1e-4)


def test_identical_images_give_inf_psnr_and_unit_ssim():
  a = skimage.data.astronaut()[:32, :32]
  assert np.isinf(float(psnr_jit(a, a)))
  np.testing.assert_allclose(float(ssim_jit(a, a)), 1.0, atol=1e-6)


def test_quantize():
  x = jnp.array([-1.5, -1.0, 0.0, 1.0, 2.0, 0.5 / 127.5 - 1.0 + 1e-4])
  q = metrics.quantize(x)
  assert q.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(q), [0, 0, 128, 255, 255, 1])  # 127.5 -> 128 (half even)
  u = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(np.asarray(metrics.quantize(u / 127.5 - 1.0)), u)


def test_error_paths():
  a = np.zeros((16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match="same shape"):
    metrics.psnr(a, np.zeros((16, 17, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\[H, W, C\]"):
    metrics.ssim(np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8))
  with pytest.raises(ValueError, match=r"\[H, W, C\]"):
    metrics.psnr(np.zeros((1, 1, 16, 16, 3)), np.zeros((1, 1, 16, 16, 3)))
  with pytest.raises(ValueError, match="11x11"):
    metrics.ssim(np.zeros((10, 16, 3)), np.zeros((10, 16, 3)))
  with pytest.raises(ValueError, match="crop_border"):
    metrics.psnr(a, a, crop_border=8)
  with pytest.raises(ValueError, match="RGB"):
    metrics.psnr(np.zeros((16, 16, 1)), np.zeros((16, 16, 1)), y_channel=True)


def test_protocol_string():
  s = metrics.protocol_string(True, 4)
  assert "Y" in s and "BT.601" in s and "crop_border=4" in s and "uint8" in s and "255" in s
  assert "RGB" in metrics.protocol_string(False, 0)
