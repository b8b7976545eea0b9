"""The one image reader (image_io.decode_image) and the one extension list, as every
front end sees them: the tools (read_image), the builders and load_image_dir
(read_dataset_image)."""

import errno
import logging
import os
import tempfile
import warnings

import numpy as np
import pytest
from PIL import Image

from flax_gradnet import atomic, deblur, image_io
from flax_gradnet.data import builders, synthetic


def _rgb(h=12, w=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _awkward_files(folder):
  """{file name: the array every reader must return}, each computed with numpy or PIL."""
  os.makedirs(folder, exist_ok=True)
  expected = {}
  gray = _rgb(seed=1)[..., 0]
  Image.fromarray(gray).save(os.path.join(folder, "gray.png"))
  expected["gray.png"] = np.repeat(gray[..., None], 3, -1)

  v16 = (np.arange(12 * 16, dtype=np.uint32).reshape(12, 16) * 347 % 65536).astype(np.uint16)
  v16[0, :3] = [0, 65535, 257 * 100 + 128]
  Image.fromarray(v16).save(os.path.join(folder, "gray16.png"))
  expected["gray16.png"] = np.repeat(np.round(v16 / 257.0).astype(np.uint8)[..., None], 3, -1)

  rgba = np.dstack([_rgb(seed=2), np.random.default_rng(3).integers(0, 256, (12, 16), np.uint8)])
  rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
  Image.fromarray(rgba).save(os.path.join(folder, "rgba.png"))
  white = Image.new("RGBA", (16, 12), (255, 255, 255, 255))
  on_white = Image.alpha_composite(white, Image.fromarray(rgba))
  expected["rgba.png"] = np.asarray(on_white.convert("RGB"))

  upright = _rgb(32, 48, seed=4)
  exif = Image.Exif()
  exif[0x0112] = 6  # a viewer rotates the stored pixels 90 degrees clockwise
  Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(
      os.path.join(folder, "rotated.jpg"), quality=95, exif=exif)
  with Image.open(os.path.join(folder, "rotated.jpg")) as im:  # the stored JPEG pixels
    expected["rotated.jpg"] = np.rot90(np.asarray(im.convert("RGB")), k=-1)
  return expected


def test_every_front_end_reads_the_same_arrays(tmp_path, caplog):
  folder = str(tmp_path / "images")
  expected = _awkward_files(folder)
  with caplog.at_level(logging.WARNING):
    by_dir = synthetic.load_image_dir(folder)
  assert sorted(by_dir) == sorted(expected)
  for name, want in expected.items():
    path = os.path.join(folder, name)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", image_io.ImageConversionWarning)
      tool = image_io.read_image(path)
    with open(path, "rb") as f:
      from_bytes = image_io.read_dataset_image(f.read(), f"zip:{name}")
    for got in (tool, image_io.read_dataset_image(path), from_bytes, by_dir[name]):
      assert got.dtype == np.uint8 and got.shape == want.shape, name
      np.testing.assert_array_equal(got, want, err_msg=name)
    assert image_io.upright_size(path) == (want.shape[1], want.shape[0])
  assert f"Converting {os.path.join(folder, 'gray16.png')} from mode I;16 to RGB." in caplog.text
  assert f"{os.path.join(folder, 'rgba.png')}: has transparency; composited onto white" \
      in caplog.text


def test_decode_image_reports_mode_and_lossy_conversions(tmp_path):
  expected = _awkward_files(str(tmp_path))
  modes = {name: image_io.decode_image(str(tmp_path / name)).mode for name in expected}
  assert modes == {"gray.png": "L", "gray16.png": "I;16", "rgba.png": "RGBA", "rotated.jpg": "RGB"}
  assert image_io.decode_image(str(tmp_path / "gray.png")).notes == ()
  (note,) = image_io.decode_image(str(tmp_path / "rgba.png")).notes
  assert "composited onto white" in note
  opaque = np.dstack([_rgb(), np.full((12, 16), 255, np.uint8)])
  Image.fromarray(opaque).save(tmp_path / "opaque.png")
  decoded = image_io.decode_image(str(tmp_path / "opaque.png"))
  assert decoded.notes == () and np.array_equal(decoded.array, _rgb())


def test_unreadable_files_name_the_file_in_each_front_end(tmp_path):
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  with pytest.raises(image_io.ImageReadError, match="bad.png"):
    image_io.read_image(str(bad))
  with pytest.raises(ValueError, match=f"Cannot decode image {bad}: not an image file"):
    image_io.read_dataset_image(str(bad))
  with pytest.raises(ValueError, match="Cannot decode image a.zip:bad.png"):
    image_io.read_dataset_image(bad.read_bytes(), "a.zip:bad.png")
  f32 = Image.fromarray(np.zeros((4, 4), np.float32))
  f32.save(tmp_path / "float.tif")
  with pytest.raises(ValueError, match="mode 'F'"):
    image_io.read_dataset_image(str(tmp_path / "float.tif"))


def test_one_extension_list_everywhere(tmp_path):
  folder = tmp_path / "mixed"
  folder.mkdir()
  image = Image.fromarray(_rgb())
  names = []
  for ext in image_io.IMAGE_EXTENSIONS:
    name = f"im{ext.upper() if ext == '.png' else ext}"  # endings match in any case
    image.convert("L" if ext == ".pgm" else "RGB").save(folder / name)
    names.append(name)
  (folder / "notes.txt").write_text("not an image")
  (folder / "raw.npy").write_bytes(b"")
  assert {".png", ".jpg", ".gif", ".webp", ".tif"} <= set(image_io.IMAGE_EXTENSIONS)
  assert not image_io.has_image_extension("notes.txt")

  files, unmatched = deblur.expand_inputs([str(folder)])
  assert unmatched == [] and sorted(os.path.basename(f) for f in files) == sorted(names)
  assert sorted(synthetic.load_image_dir(str(folder))) == sorted(names)
  assert builders._list_images(str(folder)) == sorted(names)


def test_write_errors_name_the_output_and_leave_no_temporary_file(tmp_path, monkeypatch):
  out = str(tmp_path / "rocket.png")
  real_mkstemp = tempfile.mkstemp

  def read_only(*args, dir=None, prefix="", suffix="", **kwargs):  # pylint: disable=W0622
    if dir == str(tmp_path):  # as on a read-only mount: the error names the temp file
      raise OSError(errno.EROFS, os.strerror(errno.EROFS),
                    os.path.join(dir, f"{prefix}m87bdd34{suffix}"))
    return real_mkstemp(*args, dir=dir, prefix=prefix, suffix=suffix, **kwargs)

  monkeypatch.setattr(tempfile, "mkstemp", read_only)
  with pytest.raises(OSError) as e:
    image_io.write_image(out, _rgb())
  assert e.value.errno == errno.EROFS and e.value.filename == out
  assert str(e.value) == f"[Errno {errno.EROFS}] {os.strerror(errno.EROFS)}: '{out}'"
  assert ".tmp-" not in str(e.value)
  monkeypatch.undo()

  # A full disk while writing (an error naming no file): named, the temp file removed.
  def full_disk(f):
    f.write(b"\x89PNG half an image")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with pytest.raises(OSError, match=f"No space left on device: '{out}'"):
    atomic.atomic_write(out, full_disk)
  # Permission errors keep their class.
  denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".tmp-x"))
  err = atomic._naming(denied, out)  # pylint: disable=protected-access
  assert isinstance(err, PermissionError) and err.filename == out
  # Errors about other files, and errors without an errno, are left as they were.
  other = FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere/x.png")
  assert atomic._naming(other, out) is other  # pylint: disable=protected-access
  pillow = OSError("cannot write mode RGBA as JPEG")
  assert atomic._naming(pillow, out) is pillow  # pylint: disable=protected-access
  assert os.listdir(tmp_path) == []

  # Ctrl-C while writing: no output, no temporary file; a replaced file stays whole.
  def interrupted(f):
    f.write(b"\x89PNG half an image")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    atomic.atomic_write(out, interrupted, overwrite=False)
  assert os.listdir(tmp_path) == []
  image_io.write_image(out, _rgb())
  with pytest.raises(KeyboardInterrupt):
    atomic.atomic_write(out, interrupted)
  assert os.listdir(tmp_path) == ["rocket.png"]
  np.testing.assert_array_equal(np.asarray(Image.open(out)), _rgb())

