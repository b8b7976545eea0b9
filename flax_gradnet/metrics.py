"""PSNR and SSIM as published deblurring numbers are measured.

The protocol (printed with every result, see `protocol_string`):

* Images are quantized to uint8 first (`quantize`): the generator's [-1, 1]
  output becomes `round((x + 1) * 127.5)` clipped to [0, 255], as a saved PNG
  would hold. Metrics are then computed on the 0-255 range (`data_range=255`).
* PSNR equals `skimage.metrics.peak_signal_noise_ratio(data_range=255)`: one MSE
  over all pixels and channels of an image. Identical images give `inf`
  (as scikit-image does). It is kept as `inf` rather than capped: a dataset mean
  containing one then reads `inf`, which is the honest answer for "this image
  was reproduced exactly"; callers that want a finite figure should report the
  number of exact images separately.
* SSIM equals `skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`:
  an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, the map kept only
  where the window lies inside the image ("valid"), averaged over pixels and
  then over channels. dm-pix's `ssim` implements exactly this (separable
  'valid' Gaussian, the same constants), and is used here; tests check it
  against scikit-image.
* `y_channel=True` measures the luma of ITU-R BT.601 as BasicSR's `rgb2ycbcr`
  computes it: `Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255` on 0-255 RGB,
  so Y lies in [16, 235]; Y is not rounded (BasicSR keeps it float). It needs
  RGB images (a ValueError otherwise).
* Without `y_channel` any channel count is measured the same way (grayscale
  [H, W, 1]: SSIM then equals scikit-image's `channel_axis=None` on [H, W]).
* `crop_border=k` drops k pixels on every side before measuring (BasicSR).
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

# ITU-R BT.601 luma on 0-255 RGB (BasicSR `rgb2ycbcr(..., y_only=True)` * 255).
BT601_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
BT601_Y_OFFSET = 16.0


def quantize(x: jax.Array) -> jax.Array:
  """[-1, 1] floats -> the uint8 image a saved file would hold.

  `round((x + 1) * 127.5)` (round half to even) clipped to [0, 255].

  Args:
    x: float array in [-1, 1], any shape.
  Returns:
    a uint8 array of the same shape.
  """
  return jnp.clip(jnp.round((jnp.asarray(x, jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def rgb_to_y(x: jax.Array) -> jax.Array:
  """0-255 RGB [..., 3] -> BT.601 luma [..., 1] in [16, 235] (BasicSR's `rgb2ycbcr`)."""
  x = jnp.asarray(x, jnp.float32)
  if x.shape[-1] != 3:
    raise ValueError(f"y_channel=True needs 3 RGB channels, got shape {x.shape}")
  w = jnp.asarray(BT601_Y_WEIGHTS, jnp.float32)
  return (jnp.sum(x * w, axis=-1, keepdims=True) + BT601_Y_OFFSET)


def _prepare(a, b, crop_border: int, y_channel: bool, data_range: float):
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
  if a.ndim not in (3, 4):
    raise ValueError(f"expected [H, W, C] or [B, H, W, C] images, got shape {a.shape}")
  if crop_border < 0:
    raise ValueError(f"crop_border must be >= 0, got {crop_border}")
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  if crop_border:
    h, w = a.shape[-3:-1]
    if 2 * crop_border >= min(h, w):
      raise ValueError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")
    a = a[..., crop_border:-crop_border, crop_border:-crop_border, :]
    b = b[..., crop_border:-crop_border, crop_border:-crop_border, :]
  if y_channel:
    if data_range != 255.0:
      # The BT.601 offset of 16 assumes the 0-255 range.
      raise ValueError(f"y_channel=True assumes data_range=255, got {data_range}")
    a, b = rgb_to_y(a), rgb_to_y(b)
  return a, b


def psnr(a: jax.Array, b: jax.Array, *, data_range: float = 255.0, crop_border: int = 0,
         y_channel: bool = False) -> jax.Array:
  """Peak signal-to-noise ratio in dB, one value per image.

  Args:
    a, b: [H, W, C] or [B, H, W, C] images on the `data_range` scale (uint8 or float).
    data_range: peak value (255 for uint8-range images).
    crop_border: pixels dropped on each side before measuring.
    y_channel: measure BT.601 luma instead of RGB (RGB images only).
  Returns:
    a scalar for one image, [B] for a batch; `inf` where the images are identical.
  """
  a, b = _prepare(a, b, crop_border, y_channel, data_range)
  sq = jnp.square(a - b)
  # Two-stage mean (rows, then the rest): float32 stays within 1e-6 relative of
  # scikit-image's float64 on 4K images.
  mse = jnp.mean(jnp.mean(sq, axis=-2), axis=(-2, -1))
  return 10.0 * jnp.log10(data_range**2 / mse)


def ssim(a: jax.Array, b: jax.Array, *, data_range: float = 255.0, crop_border: int = 0,
         y_channel: bool = False) -> jax.Array:
  """Structural similarity (Wang et al. 2004) as scikit-image computes it, one value per image.

  11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' region,
  mean over pixels and channels (see the module docstring).

  Args:
    a, b: [H, W, C] or [B, H, W, C] images on the `data_range` scale; H, W >= 11
      after cropping.
    data_range: peak value (255 for uint8-range images).
    crop_border: pixels dropped on each side before measuring.
    y_channel: measure BT.601 luma instead of RGB (RGB images only).
  Returns:
    a scalar for one image, [B] for a batch.
  """
  a, b = _prepare(a, b, crop_border, y_channel, data_range)
  h, w = a.shape[-3:-1]
  if min(h, w) < 11:
    raise ValueError(f"SSIM's 11x11 window needs images of at least 11x11, got {h}x{w}")
  return dm_pix.ssim(a, b, max_val=data_range, filter_size=11, filter_sigma=1.5,
                     k1=0.01, k2=0.03)


def protocol_string(y_channel: bool, crop_border: int, *, data_range: float = 255.0,
                    quantized: bool = True, channels: int = 3) -> str:
  """One line that says how the numbers printed next to it were measured
  (`channels`: the images' channel count; 1 = grayscale)."""
  if channels == 1:
    space = "grayscale (ITU-R 601 luma of RGB data, as PIL's convert('L'))"
  elif channels != 3:
    space = f"{channels} channels"
  else:
    space = "Y (ITU-R BT.601, BasicSR rgb2ycbcr)" if y_channel else "RGB"
  parts = [
      "PSNR/SSIM on " + space,
      f"crop_border={crop_border}",
      "uint8-quantized outputs (round((x+1)*127.5))" if quantized else "unquantized float outputs",
      f"data_range={data_range:g}",
      "SSIM: 11x11 Gaussian sigma=1.5, valid region, mean over channels (skimage-equivalent)",
  ]
  return "; ".join(parts)
