"""Reading any image a user might hand the deblurring tools, and writing results safely.

`read_image` always returns an upright HxWx3 uint8 RGB array:

* EXIF orientation is applied (`PIL.ImageOps.exif_transpose`), so the array is
  the image as a viewer shows it.
* Grayscale ('1', 'L', 'I;16', ...) is replicated to three channels.
* Images with alpha (RGBA, LA, palette with transparency) are composited onto
  white, which is what a viewer shows on a white page; the alpha channel is not
  kept, and a `ImageConversionWarning` naming the file says so. (Dropping
  alpha instead would expose whatever colour sits under transparent pixels,
  often black or garbage.)
* 16-bit grayscale PNG (Pillow opens it as mode 'I;16', older Pillow as 'I')
  is scaled exactly: `round(v / 257)`, 65535 -> 255. 16-bit RGB(A) PNG is
  decoded by Pillow itself to 8 bits by keeping the high byte
  (`floor(v / 256)`), which differs from `round(v / 257)` by at most one
  level; a warning says so.
* Anything unreadable (not an image, corrupt, truncated, too large) raises
  `ImageReadError(path, reason)`.

`write_image` writes through a temporary file in the destination folder and
then renames it, so a crash never leaves a half-written image, and it refuses
to replace an existing file unless asked to.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from flax_gradnet.atomic import atomic_write


class ImageReadError(Exception):
  """An input file that is not a readable image."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"cannot read image {path}: {reason}")
    self.path = path
    self.reason = reason


class ImageConversionWarning(UserWarning):
  """The image was converted in a way that loses information (alpha, bit depth)."""


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _warn(path: str, message: str) -> None:
  warnings.warn(f"{path}: {message}", ImageConversionWarning, stacklevel=3)


def _to_rgb_uint8(im: Image.Image, path: str) -> np.ndarray:
  mode = im.mode
  if mode in _16BIT_MODES:
    v = np.asarray(im).astype(np.float64)
    if mode == "I" and (v.min() < 0 or v.max() > 65535):
      raise ImageReadError(path, f"32-bit integer image with values outside 0..65535 "
                                 f"({v.min():.0f}..{v.max():.0f})")
    y = np.clip(np.round(v / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=-1)
  if mode == "F":
    raise ImageReadError(path, "floating-point images (mode 'F') have no defined 0-255 range")
  if mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
    mode = "RGBA"
  if mode in _ALPHA_MODES:
    rgba = im.convert("RGBA")
    alpha = np.asarray(rgba)[..., 3]
    if alpha.min() < 255:
      _warn(path, "has transparency; composited onto white (alpha is not kept in the output)")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  if mode == "L" or mode == "1":
    return np.asarray(im.convert("RGB"))
  return np.asarray(im.convert("RGB"))


def read_image(path: str) -> np.ndarray:
  """Reads an image file as an upright HxWx3 uint8 RGB array.

  Args:
    path: any format Pillow reads.
  Returns:
    np.uint8 array [H, W, 3].
  Raises:
    ImageReadError: not an image, corrupt, truncated or unsupported; the
      message names the file.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ImageReadError(path, "no such file")
  if os.path.isdir(path):
    raise ImageReadError(path, "is a directory")
  try:
    with warnings.catch_warnings():
      # A decompression-bomb warning becomes an error below rather than a
      # silent multi-gigabyte allocation.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        rawmode = im.tile[0][3] if im.tile else ""
        if im.format == "PNG" and isinstance(rawmode, str) and rawmode.startswith(("RGB;16", "RGBA;16")):
          _warn(path, "16-bit RGB PNG reduced to 8 bits by Pillow (high byte; "
                      "within one level of round(v/257))")
        if getattr(im, "n_frames", 1) > 1:
          _warn(path, f"{im.n_frames} frames (animated or multi-page); only the first is used")
        im.load()  # decode now: truncation and corruption surface here
        im = ImageOps.exif_transpose(im)
        array = _to_rgb_uint8(im, path)
  except ImageReadError:
    raise
  except Image.UnidentifiedImageError:
    raise ImageReadError(path, "not an image file Pillow recognises") from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageReadError(path, f"too large ({e})") from None
  except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... on damaged files
    reason = str(e) or type(e).__name__
    if "truncated" in reason:
      reason = f"truncated file ({reason})"
    raise ImageReadError(path, f"corrupt or unsupported image ({type(e).__name__}: {reason})") from None
  if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
    raise ImageReadError(path, f"decoded to an unexpected array {array.shape} {array.dtype}")
  return np.ascontiguousarray(array)


def _format_for(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  fmt = Image.registered_extensions().get(ext)
  if fmt is None or fmt not in Image.SAVE:
    raise ValueError(f"cannot write {path}: unknown or read-only image extension {ext!r}")
  return fmt


def write_image(path: str, array: np.ndarray, overwrite: bool = False) -> None:
  """Writes an HxWx3 (or HxW) uint8 array atomically; format from the extension.

  Args:
    path: destination; its folder is created if missing.
    array: uint8 [H, W, 3] or [H, W].
    overwrite: replace an existing file; otherwise raise FileExistsError.
  """
  path = os.fspath(path)
  array = np.asarray(array)
  if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
    raise ValueError(f"write_image expects a uint8 [H, W, 3] or [H, W] array, "
                     f"got {array.dtype} {array.shape}")
  fmt = _format_for(path)
  kwargs = {"quality": 95} if fmt == "JPEG" else {}
  atomic_write(path, lambda f: Image.fromarray(array).save(f, format=fmt, **kwargs),
               overwrite=overwrite)
