"""The one image reader of the package, and writing results safely.

Every image file the package reads (`deblur` and `evaluate` inputs, the TFDS
builders' datasets, `synthetic.load_image_dir`'s photographs) goes through
`decode_image`, with one rule set. It always gives an upright HxWx3 uint8 RGB
array:

* EXIF orientation is applied (`PIL.ImageOps.exif_transpose`), so the array is
  the image as a viewer shows it (a blur/sharp pair must then agree upright).
* Grayscale ('1', 'L'), palette, CMYK, ... are converted to RGB (grey
  replicated to three channels).
* Images with alpha (RGBA, LA, palette with transparency) are composited onto
  white, which is what a viewer shows on a white page; the alpha channel is not
  kept. (Dropping alpha instead would expose whatever colour sits under
  transparent pixels, often black or garbage.) An opaque alpha channel changes
  nothing.
* 16-bit grayscale PNG (Pillow opens it as mode 'I;16', older Pillow as 'I')
  is scaled exactly: `round(v / 257)`, 65535 -> 255. 16-bit RGB(A) PNG is
  decoded by Pillow itself to 8 bits by keeping the high byte
  (`floor(v / 256)`), which differs from `round(v / 257)` by at most one
  level. 32-bit integer images outside 0..65535 and floating-point images
  (mode 'F') are refused: they have no defined 0-255 range.
* Of an animated or multi-page file, the first frame is used.
* Anything unreadable (not an image, corrupt, truncated, or over Pillow's
  decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS`, about 89 megapixels)
  raises `ImageReadError(path, reason)`.

Conversions that lose information (alpha composited, 16-bit RGB reduced,
frames dropped) come back as `DecodedImage.notes`. The two front ends report
them the way their callers do: `read_image` (the tools) as an
`ImageConversionWarning` naming the file; `read_dataset_image` (the data
builders) as logged warnings naming the file, together with any change of mode
("Converting <file> from mode L to RGB."), raising `ValueError` for a file it
cannot decode.

Before this module held the only reader, the builders and `load_image_dir`
had rules of their own: they dropped alpha instead of compositing it, refused
(builders) or clipped (`load_image_dir`) 16-bit grayscale, ignored EXIF
orientation, clipped mode 'F' and only refused images over twice Pillow's
pixel limit. The rules above are the ones a user expects from a viewer, and
the tools always had them; none of the differences touches an 8-bit RGB (or
opaque RGBA) image without EXIF rotation, which is what the published
datasets hold.

Grayscale models (`model.channels=1`) read the same RGB array and convert it
with `to_channels` (ITU-R 601 luma exactly as Pillow's `convert("L")`
computes it), so a grey file round-trips unchanged; `write_image` writes a
one-channel array as a grayscale file.

`IMAGE_EXTENSIONS` is the one list of file endings that folders are searched
for (the tools, the builders and `load_image_dir`); a file named explicitly is
tried whatever its ending.

`write_image` writes through a temporary file in the destination folder and
then renames it, so a crash never leaves a half-written image, and it refuses
to replace an existing file unless asked to.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import NamedTuple

import numpy as np
from absl import logging
from PIL import ExifTags, Image, ImageOps

from flax_gradnet.atomic import atomic_write

# The endings (lower case) of the files a folder is searched for, everywhere.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".gif")


def has_image_extension(name: str) -> bool:
  """Whether a file name ends in one of `IMAGE_EXTENSIONS` (any case)."""
  return name.lower().endswith(IMAGE_EXTENSIONS)


class ImageReadError(Exception):
  """An input file that is not a readable image."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"cannot read image {path}: {reason}")
    self.path = path
    self.reason = reason


class ImageConversionWarning(UserWarning):
  """The image was converted in a way that loses information (alpha, bit depth)."""


class DecodedImage(NamedTuple):
  """What `decode_image` gives: the array and how it was made."""
  array: np.ndarray  # uint8 [H, W, 3], upright
  mode: str  # the file's Pillow mode before conversion ("RGB": none was needed)
  notes: tuple[str, ...]  # conversions that lost information, one sentence each


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _to_rgb_uint8(im: Image.Image, where: str, notes: list[str]) -> np.ndarray:
  mode = im.mode
  if mode in _16BIT_MODES:
    v = np.asarray(im).astype(np.float64)
    if mode == "I" and (v.min() < 0 or v.max() > 65535):
      raise ImageReadError(where, f"32-bit integer image with values outside 0..65535 "
                                  f"({v.min():.0f}..{v.max():.0f})")
    y = np.clip(np.round(v / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=-1)
  if mode == "F":
    raise ImageReadError(where, "floating-point images (mode 'F') have no defined 0-255 range")
  if mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
    mode = "RGBA"
  if mode in _ALPHA_MODES:
    rgba = im.convert("RGBA")
    alpha = np.asarray(rgba)[..., 3]
    if alpha.min() < 255:
      notes.append("has transparency; composited onto white (alpha is not kept in the output)")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  return np.asarray(im.convert("RGB"))


def _decode_open(im: Image.Image, where: str) -> DecodedImage:
  notes = []
  rawmode = im.tile[0][3] if im.tile else ""
  if im.format == "PNG" and isinstance(rawmode, str) and rawmode.startswith(("RGB;16", "RGBA;16")):
    notes.append("16-bit RGB PNG reduced to 8 bits by Pillow (high byte; "
                 "within one level of round(v/257))")
  if getattr(im, "n_frames", 1) > 1:
    notes.append(f"{im.n_frames} frames (animated or multi-page); only the first is used")
  mode = im.mode
  im.load()  # decode now: truncation and corruption surface here
  im = ImageOps.exif_transpose(im)
  return DecodedImage(_to_rgb_uint8(im, where, notes), mode, tuple(notes))


def decode_image(source: str | os.PathLike | bytes, where: str | None = None) -> DecodedImage:
  """Decodes an image file, or its bytes (e.g. a zip member), by the module's rules.

  Args:
    source: a path (any format Pillow reads), or the file's bytes.
    where: names the file in errors (default: the path; "<bytes>" for bytes).
  Returns:
    `DecodedImage`: the uint8 [H, W, 3] array, the file's mode, the lossy
    conversions made.
  Raises:
    ImageReadError: missing, not an image, corrupt, truncated, too large or
      unsupported; the message names `where`.
  """
  if isinstance(source, bytes):
    where = "<bytes>" if where is None else where
    opener = io.BytesIO(source)
  else:
    source = os.fspath(source)
    where = source if where is None else where
    if not os.path.exists(source):
      raise ImageReadError(where, "no such file")
    if os.path.isdir(source):
      raise ImageReadError(where, "is a directory")
    opener = source
  try:
    with warnings.catch_warnings():
      # A decompression-bomb warning becomes an error below rather than a
      # silent multi-gigabyte allocation.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(opener) as im:
        decoded = _decode_open(im, where)
  except ImageReadError:
    raise
  except Image.UnidentifiedImageError:
    raise ImageReadError(where, "not an image file Pillow recognises") from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageReadError(where, f"too large ({e})") from None
  except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... on damaged files
    reason = str(e) or type(e).__name__
    if "truncated" in reason:
      reason = f"truncated file ({reason})"
    raise ImageReadError(
        where, f"corrupt or unsupported image ({type(e).__name__}: {reason})") from None
  array = decoded.array
  if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
    raise ImageReadError(where, f"decoded to an unexpected array {array.shape} {array.dtype}")
  return decoded._replace(array=np.ascontiguousarray(array))


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
  """A uint8 image [H, W, C] (or [H, W]) as `channels` channels, 1 or 3.

  RGB -> grey is ITU-R 601 luma, L = R * 299/1000 + G * 587/1000 + B * 114/1000,
  in Pillow's fixed-point arithmetic, so it equals `Image.convert("L")` exactly
  and a grey image stored as RGB comes back unchanged. Grey -> RGB repeats the
  channel. An image that already has `channels` channels is returned as is.

  Raises:
    ValueError: not uint8, or a conversion between other channel counts
      (image files hold grey or RGB; use arrays for other counts).
  """
  array = np.asarray(array)
  if array.ndim == 2:
    array = array[..., None]
  if array.dtype != np.uint8 or array.ndim != 3:
    raise ValueError(f"expected a uint8 [H, W, C] image, got {array.dtype} {array.shape}")
  have = array.shape[-1]
  if have == channels:
    return array
  if have == 3 and channels == 1:
    rgb = array.astype(np.uint32)
    # Pillow's L24: 16-bit fixed-point weights summing to 65536, rounded.
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]
  if have == 1 and channels == 3:
    return np.repeat(array, 3, axis=-1)
  raise ValueError(f"cannot convert a {have}-channel image to {channels} channel(s): image "
                   "files hold 1 (grey) or 3 (RGB) channels; pass arrays for other counts")


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
  """Reads an image file as an upright HxWxC uint8 array (the tools' front end).

  Args:
    path: any format Pillow reads.
    channels: 3 for RGB, 1 for grey (`to_channels`: Pillow's luma).
  Returns:
    np.uint8 array [H, W, channels].
  Raises:
    ImageReadError: not an image, corrupt, truncated or unsupported; the
      message names the file.
  Warns:
    ImageConversionWarning: for each lossy conversion, naming the file.
  """
  path = os.fspath(path)
  decoded = decode_image(path)
  for note in decoded.notes:
    warnings.warn(f"{path}: {note}", ImageConversionWarning, stacklevel=2)
  return to_channels(decoded.array, channels)


def read_dataset_image(source: str | os.PathLike | bytes, where: str | None = None) -> np.ndarray:
  """`decode_image` for the data builders: conversions logged, errors as ValueError.

  Every change of mode ("Converting <where> from mode L to RGB.") and every
  lossy conversion is logged as a warning naming the file.

  Raises:
    ValueError: the file (or bytes) is not a complete, decodable image.
  """
  if where is None:
    where = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
  try:
    decoded = decode_image(source, where)
  except ImageReadError as e:
    raise ValueError(f"Cannot decode image {where}: {e.reason}. Replace or remove the "
                     "file.") from None
  if decoded.mode != "RGB":
    logging.warning("Converting %s from mode %s to RGB.", where, decoded.mode)
  for note in decoded.notes:
    logging.warning("%s: %s", where, note)
  return decoded.array


def upright_size(path: str | os.PathLike) -> tuple[int, int]:
  """(width, height) of an image as `decode_image` returns it, from its header.

  Reads no pixels: the stored size, swapped when the EXIF orientation rotates
  by 90 degrees. Raises what `PIL.Image.open` raises on a file it cannot open.
  """
  with Image.open(path) as im:
    w, h = im.size
    if im.getexif().get(ExifTags.Base.Orientation, 1) in _ROTATING_ORIENTATIONS:
      return h, w
  return w, h


def _format_for(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  fmt = Image.registered_extensions().get(ext)
  if fmt is None or fmt not in Image.SAVE:
    raise ValueError(f"cannot write {path}: unknown or read-only image extension {ext!r}")
  return fmt


def write_image(path: str, array: np.ndarray, overwrite: bool = False) -> None:
  """Writes an HxWx3 (RGB) or HxWx1 / HxW (grey) uint8 array atomically; format
  from the extension.

  Args:
    path: destination; its folder is created if missing.
    array: uint8 [H, W, 3], [H, W, 1] or [H, W].
    overwrite: replace an existing file; otherwise raise FileExistsError.

  Raises:
    FileExistsError: `path` exists and not `overwrite`.
    OSError: the write failed; the message names `path`, never the temporary
      file (`atomic.atomic_write`), which is removed.
    ValueError: an array or extension that cannot be written.
  """
  path = os.fspath(path)
  array = np.asarray(array)
  if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
      array.ndim == 3 and array.shape[-1] not in (1, 3)):
    raise ValueError(f"write_image expects a uint8 [H, W, 3], [H, W, 1] or [H, W] array, "
                     f"got {array.dtype} {array.shape}")
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]  # a grayscale file (Pillow mode L)
  fmt = _format_for(path)
  kwargs = {"quality": 95} if fmt == "JPEG" else {}
  atomic_write(path, lambda f: Image.fromarray(array).save(f, format=fmt, **kwargs),
               overwrite=overwrite)
