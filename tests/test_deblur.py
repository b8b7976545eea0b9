"""The deblur CLI and image_io on every awkward kind of file."""

import errno
import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data
from PIL import Image

from flax_gradnet import deblur, image_io, inference, pretrained
from flax_gradnet import workdir as workdir_lib
from flax_gradnet.models import Generator

TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, generator_workdir):
  """A workdir laid out as training writes it, holding a tiny generator."""
  wd = str(tmp_path_factory.mktemp("workdir"))
  model = Generator(**TINY)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  generator_workdir(wd, TINY, params, 5)
  return wd


def _photo(h=40, w=52):
  return skimage.data.chelsea()[60:60 + h, 100:100 + w].copy()


def _png16_rgb(path, rgb16):
  """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
  h, w, _ = rgb16.shape
  raw = b"".join(b"\x00" + rgb16[i].astype(">u2").tobytes() for i in range(h))
  chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _exif_rotated_jpeg(path, upright):
  """Stores the upright image rotated, with EXIF Orientation=6 (rotate 90 CW to view)."""
  stored = np.rot90(upright, k=1)  # 90 CCW; a viewer rotates it back 90 CW
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=100, subsampling=0, exif=exif)


# ---------------------------------------------------------------- image_io


def test_read_awkward_files(tmp_path):
  photo = _photo()
  gray = photo[..., 1]
  Image.fromarray(gray).save(tmp_path / "gray.png")
  np.testing.assert_array_equal(image_io.read_image(str(tmp_path / "gray.png")),
                                np.repeat(gray[..., None], 3, -1))

  rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
  rgba[:10, :10, 3] = 0
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  with pytest.warns(image_io.ImageConversionWarning, match="rgba.png.*white"):
    got = image_io.read_image(str(tmp_path / "rgba.png"))
  np.testing.assert_array_equal(got[:10, :10], 255)  # transparent -> white
  np.testing.assert_array_equal(got[10:, 10:], photo[10:, 10:])

  v16 = (np.arange(40 * 52, dtype=np.uint32).reshape(40, 52) * 31 % 65536).astype(np.uint16)
  v16[0, :3] = [0, 65535, 257 * 100 + 128]
  Image.fromarray(v16).save(tmp_path / "gray16.png")
  got = image_io.read_image(str(tmp_path / "gray16.png"))
  np.testing.assert_array_equal(got[..., 0], np.round(v16 / 257.0).astype(np.uint8))
  assert list(got[0, :3, 0]) == [0, 255, 100]

  rgb16 = (np.random.default_rng(0).integers(0, 65536, (6, 7, 3))).astype(np.uint16)
  _png16_rgb(tmp_path / "rgb16.png", rgb16)
  with pytest.warns(image_io.ImageConversionWarning, match="16-bit RGB"):
    got = image_io.read_image(str(tmp_path / "rgb16.png"))
  assert np.abs(got.astype(int) - np.round(rgb16 / 257.0)).max() <= 1

  upright = _photo(32, 48)  # taller than wide after storing rotated
  _exif_rotated_jpeg(tmp_path / "rotated.jpg", upright)
  assert np.asarray(Image.open(tmp_path / "rotated.jpg")).shape[:2] == (48, 32)  # stored
  got = image_io.read_image(str(tmp_path / "rotated.jpg"))
  assert got.shape == (32, 48, 3)
  assert np.abs(got.astype(int) - upright).mean() < 6  # JPEG loss only, not a rotation

  pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
  pal.save(tmp_path / "palette.png")
  assert image_io.read_image(str(tmp_path / "palette.png")).shape == photo.shape


def _bad_files(tmp_path):
  buf = io.BytesIO()
  Image.fromarray(_photo()).save(buf, format="PNG")
  data = buf.getvalue()
  (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
  corrupt = bytearray(data)
  corrupt[60:200] = bytes(140)  # zeroed IDAT bytes: CRC and zlib errors
  (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
  (tmp_path / "notes.png").write_text("this is not an image\n")
  return ["truncated.png", "corrupt.png", "notes.png"]


def test_read_bad_files_name_the_file(tmp_path):
  for name in _bad_files(tmp_path):
    with pytest.raises(image_io.ImageReadError) as e:
      image_io.read_image(str(tmp_path / name))
    assert name in str(e.value) and e.value.path.endswith(name)
  with pytest.raises(image_io.ImageReadError, match="no such file"):
    image_io.read_image(str(tmp_path / "missing.png"))


def test_write_image_atomic_and_no_overwrite(tmp_path):
  a = _photo()
  path = str(tmp_path / "sub" / "out.png")
  image_io.write_image(path, a)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), a)
  with pytest.raises(FileExistsError):
    image_io.write_image(path, a[::-1].copy())
  np.testing.assert_array_equal(np.asarray(Image.open(path)), a)  # untouched
  image_io.write_image(path, a[::-1].copy(), overwrite=True)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), a[::-1])
  assert [n for n in os.listdir(tmp_path / "sub")] == ["out.png"]  # no temp files left
  with pytest.raises(ValueError, match="extension"):
    image_io.write_image(str(tmp_path / "out.xyz"), a)
  with pytest.raises(ValueError, match="uint8"):
    image_io.write_image(str(tmp_path / "f.png"), a.astype(np.float32))


# ---------------------------------------------------------------- CLI


def test_cli_awkward_inputs(tmp_path, workdir, capsys):
  src = tmp_path / "in"
  src.mkdir()
  photo = _photo()
  Image.fromarray(photo).save(src / "good.png")
  Image.fromarray(photo[..., 0]).save(src / "gray.png")
  Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])).save(src / "rgba.png")
  Image.fromarray((photo[..., 2].astype(np.uint16) * 257)).save(src / "gray16.png")
  upright = _photo(32, 48)
  _exif_rotated_jpeg(src / "rotated.jpg", upright)
  bad = _bad_files(src)
  (src / "readme.txt").write_text("ignored: not an image extension in a folder")
  out = tmp_path / "out"

  rc = deblur.main([str(src), "--workdir", workdir, "--output_dir", str(out)])
  err = capsys.readouterr().err
  assert rc == 1
  good = ["good", "gray", "rgba", "gray16", "rotated"]
  assert sorted(os.listdir(out)) == sorted(f"{n}.png" for n in good)
  for name in bad:
    assert name in err
  assert "3 failed" in err and "rgba.png" in err  # the alpha warning names the file
  assert "readme.txt" not in err

  # Output orientation follows the visually upright image, and equals the library path
  # (the workdir records no inference options: the paper's protocol, one pass).
  model, params, _ = inference.restore(workdir)
  fn = inference.make_deblur_fn(model, params)
  got = np.asarray(Image.open(out / "rotated.png"))
  assert got.shape == (32, 48, 3)
  np.testing.assert_array_equal(
      got, inference.deblur_image(fn, image_io.read_image(str(src / "rotated.jpg"))))
  np.testing.assert_array_equal(np.asarray(Image.open(out / "good.png")),
                                inference.deblur_image(fn, photo))

  # Existing outputs are skipped without --overwrite (and left as they were) ...
  before = (out / "good.png").read_bytes()
  rc = deblur.main([str(src / "good.png"), "--workdir", workdir, "--output_dir", str(out),
                    "--tile", "16", "--tile_overlap", "4"])
  assert rc == 0 and "1 skipped (output exists); 0 failed" in capsys.readouterr().err
  assert (out / "good.png").read_bytes() == before
  # ... and replaced with it.
  rc = deblur.main([str(src / "good.png"), "--workdir", workdir, "--output_dir", str(out),
                    "--tile", "16", "--tile_overlap", "4", "--overwrite"])
  assert rc == 0
  assert (out / "good.png").read_bytes() != before


def test_cli_never_overwrites_an_input(tmp_path, workdir, capsys):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  before = (tmp_path / "a.png").read_bytes()
  rc = deblur.main([str(tmp_path / "a.png"), "--workdir", workdir,
                    "--output_dir", str(tmp_path), "--overwrite"])
  assert rc == 1
  assert "input" in capsys.readouterr().err
  assert (tmp_path / "a.png").read_bytes() == before
  # The same through a glob, a suffix and a symlinked output folder.
  os.symlink(tmp_path, tmp_path / "link")
  rc = deblur.main([str(tmp_path / "*.png"), "--workdir", workdir,
                    "--output_dir", str(tmp_path / "link"), "--overwrite", "--suffix", ""])
  assert rc == 1 and (tmp_path / "a.png").read_bytes() == before
  rc = deblur.main([str(tmp_path / "*.png"), "--workdir", workdir,
                    "--output_dir", str(tmp_path), "--suffix", "_deblurred"])
  assert rc == 0 and (tmp_path / "a_deblurred.png").exists()


def test_cli_colliding_output_names(tmp_path, workdir, capsys):
  (tmp_path / "x").mkdir()
  (tmp_path / "y").mkdir()
  Image.fromarray(_photo()).save(tmp_path / "x" / "im.png")
  Image.fromarray(_photo()).save(tmp_path / "y" / "im.jpg")
  rc = deblur.main([str(tmp_path / "x"), str(tmp_path / "y"), "--workdir", workdir,
                    "--output_dir", str(tmp_path / "out")])
  assert rc == 1 and "shared by 2 inputs" in capsys.readouterr().err
  assert not (tmp_path / "out" / "im.png").exists()


def test_cli_missing_checkpoint(tmp_path, capsys):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  rc = deblur.main([str(tmp_path / "a.png"), "--workdir", str(tmp_path / "nowhere"),
                    "--output_dir", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert rc == 2 and "nowhere" in err and "config.json" in err
  (tmp_path / "wd").mkdir()
  workdir_lib.save_config(str(tmp_path / "wd"), ml_collections.ConfigDict(
      {"model": dict(TINY), "compute_dtype": "float32"}))
  rc = deblur.main([str(tmp_path / "a.png"), "--workdir", str(tmp_path / "wd"),
                    "--output_dir", str(tmp_path / "out")])
  assert rc == 2 and "no checkpoints" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_cli_wrong_step_and_usage_errors(tmp_path, workdir, capsys):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  common = [str(tmp_path / "a.png"), "--workdir", workdir, "--output_dir", str(tmp_path / "o")]
  assert deblur.main(common + ["--step", "99"]) == 2
  assert "saved steps: [5]" in capsys.readouterr().err
  assert deblur.main(common + ["--tile", "30"]) == 2
  assert deblur.main([str(tmp_path / "none*.png")] + common[1:]) == 2
  assert "no input images" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
  r = subprocess.run([sys.executable, "-m", "flax_gradnet.deblur", str(tmp_path / "x.png"),
                      "--workdir", str(tmp_path), "--output_dir", str(tmp_path / "o")],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "x.png" in r.stderr


def test_cli_bfloat16(tmp_path, workdir):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  for dtype in ("float32", "bfloat16"):
    assert deblur.main([str(tmp_path / "a.png"), "--workdir", workdir, "--dtype", dtype,
                        "--output_dir", str(tmp_path / dtype)]) == 0
  f32 = np.asarray(Image.open(tmp_path / "float32" / "a.png")).astype(int)
  b16 = np.asarray(Image.open(tmp_path / "bfloat16" / "a.png")).astype(int)
  assert np.abs(f32 - b16).mean() < 4  # bfloat16 activations: a few levels at most on average


def test_cli_shipped_model(tmp_path, workdir, capsys, monkeypatch):
  """--model deblurs with a shipped model (here from a tmp root), the default without flags."""
  root = str(tmp_path / "models")
  pretrained.pack(workdir, "tiny", root=root)
  monkeypatch.setenv(pretrained.ENV_VAR, root)
  photo = _photo()
  Image.fromarray(photo).save(tmp_path / "a.png")
  a, out = str(tmp_path / "a.png"), tmp_path / "out"
  assert deblur.main([a, "--model", "tiny", "--output_dir", str(out)]) == 0
  assert "restored generator from shipped model tiny" in capsys.readouterr().err
  model, params = pretrained.load("tiny")  # packed from a workdir without inference options
  np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")),
                                inference.deblur_image(inference.make_deblur_fn(model, params),
                                                       photo))

  # Without --workdir/--model: the default model, which this root lacks: named, with the others.
  rc = deblur.main([a, "--output_dir", str(tmp_path / "o2")])
  err = capsys.readouterr().err
  assert rc == 2 and pretrained.DEFAULT_MODEL in err and "available: tiny" in err
  pretrained.pack(workdir, pretrained.DEFAULT_MODEL, root=root)
  assert deblur.main([a, "--output_dir", str(tmp_path / "o2")]) == 0
  assert f"shipped model {pretrained.DEFAULT_MODEL}" in capsys.readouterr().err

  # Flag conflicts: status 2 before anything is restored or written.
  o3 = ["--output_dir", str(tmp_path / "o3")]
  assert deblur.main([a, "--workdir", workdir, "--model", "tiny"] + o3) == 2
  assert "--workdir" in (err := capsys.readouterr().err) and "--model" in err and "not both" in err
  assert deblur.main([a, "--model", "tiny", "--step", "5"] + o3) == 2
  assert "--step" in capsys.readouterr().err
  assert deblur.main([a, "--step", "5"] + o3) == 2
  assert not (tmp_path / "o3").exists()


def test_cli_output_dir_edges_gif_and_tile_overlap(tmp_path, workdir, capsys):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  a_file = tmp_path / "taken"
  a_file.write_text("a file, not a folder")
  assert deblur.main([str(tmp_path / "a.png"), "--workdir", workdir,
                      "--output_dir", str(a_file)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"error: --output_dir {a_file} is a file; give a folder (created if missing)"]
  assert a_file.read_text() == "a file, not a folder"

  assert deblur.main([str(tmp_path / "a.png"), "--workdir", workdir, "--tile", "16",
                      "--tile_overlap", "16", "--output_dir", str(tmp_path / "o1")]) == 2
  assert "need 0 <= --tile_overlap < --tile" in capsys.readouterr().err
  assert not (tmp_path / "o1").exists()

  # Nothing to write (every output exists, no --overwrite): no folder is created.
  missing = tmp_path / "nothing_written"
  assert deblur.main([str(tmp_path / "no_such.png"), "--workdir", workdir,
                      "--output_dir", str(missing)]) == 2
  assert not missing.exists()

  # An animated GIF: the first frame, with a warning naming the file.
  frames = [Image.fromarray(np.full((24, 28, 3), v, np.uint8)) for v in (40, 200)]
  frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
  assert deblur.main([str(tmp_path / "anim.gif"), "--workdir", workdir,
                      "--output_dir", str(tmp_path / "o2")]) == 0
  err = capsys.readouterr().err
  assert "anim.gif: 2 frames (animated or multi-page); only the first is used" in err
  assert (tmp_path / "o2" / "anim.png").exists()


def test_cli_self_ensemble(tmp_path, workdir, capsys):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  runs = {"one": ["--no-self_ensemble"], "off": ["--self_ensemble=off"],
          "mean": ["--self_ensemble"], "shrink": ["--self_ensemble", "shrink"], "default": []}
  for out, flag in runs.items():
    assert deblur.main([str(tmp_path / "a.png"), "--workdir", workdir, *flag,
                        "--low_freq_sigma=32", "--output_dir", str(tmp_path / out)]) == 0
  got = {out: np.asarray(Image.open(tmp_path / out / "a.png")).astype(int) for out in runs}
  model, params, _ = inference.restore(workdir)
  for out, kind in (("one", False), ("mean", True), ("shrink", "shrink")):
    want = inference.deblur_image(inference.make_deblur_fn(model, params, ensemble=kind),
                                  _photo(), low_freq_sigma=32.0)
    assert np.abs(got[out] - want.astype(int)).max() <= 1, out  # the API's, as the CLI writes it
  np.testing.assert_array_equal(got["off"], got["one"])
  # Not given: the model's setting; this workdir records none: one pass.
  np.testing.assert_array_equal(got["default"], got["one"])
  assert np.abs(got["one"] - got["mean"]).max() > 0  # an untrained net is not flip-equivariant
  assert np.abs(got["mean"] - got["shrink"]).max() > 0
  # A choice that does not exist: argparse's usage error, exit 2, nothing written.
  with pytest.raises(SystemExit) as e:
    deblur.main([str(tmp_path / "a.png"), "--workdir", workdir, "--self_ensemble=median",
                 "--output_dir", str(tmp_path / "bad")])
  assert e.value.code == 2 and "invalid choice: 'median'" in capsys.readouterr().err
  assert not (tmp_path / "bad").exists()


def test_cli_low_freq_sigma(tmp_path, workdir, capsys):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  common = [str(tmp_path / "a.png"), "--workdir", workdir]
  for bad in ("-1", "nan"):
    assert deblur.main(common + ["--output_dir", str(tmp_path / "bad"),
                                 "--low_freq_sigma", bad]) == 2
    assert "--low_freq_sigma must be >= 0" in capsys.readouterr().err
  assert not (tmp_path / "bad").exists()
  for sigma in ("0", "4"):
    assert deblur.main(common + ["--output_dir", str(tmp_path / sigma),
                                 "--low_freq_sigma", sigma]) == 0
  model, params, _ = inference.restore(workdir)
  fn = inference.make_deblur_fn(model, params)  # the model's (none recorded): one pass
  raw = inference.deblur_image(fn, _photo())  # 0: the generator's output as it is
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "0" / "a.png")), raw)
  four = np.asarray(Image.open(tmp_path / "4" / "a.png"))
  np.testing.assert_array_equal(four, inference.deblur_image(fn, _photo(), low_freq_sigma=4.0))
  # The untrained net shifts the colours; the input's low frequencies bring them back.
  shift = lambda out: np.abs((out.astype(float) - _photo()).mean((0, 1))).max()
  assert shift(four) < shift(raw)


def test_cli_warns_when_the_low_frequency_step_a_model_needs_is_off(tmp_path, capsys):
  if "gradnet_s_lf" not in pretrained.available(pretrained.PACKAGE_DIR):
    pytest.skip("gradnet_s_lf is not shipped")
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  common = [str(tmp_path / "a.png"), "--model", "gradnet_s_lf", "--self_ensemble=off"]
  assert deblur.main(common + ["--output_dir", str(tmp_path / "o0"), "--low_freq_sigma=0"]) == 0
  assert "was trained through the low-frequency step" in capsys.readouterr().err
  assert deblur.main(common + ["--output_dir", str(tmp_path / "o1"), "--low_freq_sigma=32"]) == 0
  assert "low-frequency step" not in capsys.readouterr().err
  assert (tmp_path / "o0" / "a.png").exists() and (tmp_path / "o1" / "a.png").exists()


# ---------------------------------------------------------------- robustness


def _folder(path, sizes=((40, 52), (32, 48), (36, 44))):
  """A folder of small photographs a.png, b.png, ... of the given (h, w)."""
  path.mkdir()
  for name, (h, w) in zip("abcdef", sizes):
    Image.fromarray(_photo(h, w)).save(path / f"{name}.png")
  return path


def _restores(monkeypatch):
  """Records the calls of inference.restore (the generator's loading)."""
  calls = []
  real = inference.restore
  monkeypatch.setattr(inference, "restore", lambda *a, **k: calls.append(a) or real(*a, **k))
  return calls


def test_cli_resume_skips_existing_outputs(tmp_path, workdir, capsys, monkeypatch):
  src = _folder(tmp_path / "in", sizes=((40, 52), (32, 48)))
  out = tmp_path / "out"
  common = [str(src), "--workdir", workdir, "--output_dir", str(out), "--self_ensemble=off"]
  assert deblur.main(common) == 0
  before = {n: (out / n).read_bytes() for n in ("a.png", "b.png")}
  Image.fromarray(_photo(36, 44)).save(src / "c.png")
  capsys.readouterr()
  assert deblur.main(common) == 0
  err = capsys.readouterr().err
  assert "skipping 2 input(s) whose output exists" in err
  assert "1 image(s) written" in err and "2 skipped (output exists); 0 failed" in err
  assert "failed:" not in err and "error" not in err
  assert {n: (out / n).read_bytes() for n in before} == before  # not recomputed
  # Everything done: nothing to compute, the generator is not even loaded.
  calls = _restores(monkeypatch)
  assert deblur.main(common) == 0
  assert "0 image(s) written" in capsys.readouterr().err and calls == []
  # --overwrite recomputes them all.
  assert deblur.main(common + ["--overwrite"]) == 0
  assert "3 image(s) written" in capsys.readouterr().err and len(calls) == 1


def test_cli_ctrl_c_in_process_leaves_no_partial_file(tmp_path, workdir, capsys, monkeypatch):
  """Ctrl-C while the second of three outputs is being written: status 130, one
  line, the first output whole, no temporary file; the rerun writes the rest."""
  src = _folder(tmp_path / "in")
  out = tmp_path / "out"
  common = [str(src), "--workdir", workdir, "--output_dir", str(out), "--self_ensemble=off"]
  real_write, calls = image_io.atomic_write, []

  def write(path, write_file, **kwargs):
    calls.append(path)
    if len(calls) == 2:
      def half(f):
        f.write(b"\x89PNG\r\n\x1a\n half an image")
        raise KeyboardInterrupt
      return real_write(path, half, **kwargs)
    return real_write(path, write_file, **kwargs)

  monkeypatch.setattr(image_io, "atomic_write", write)
  assert deblur.main(common) == deblur.EXIT_INTERRUPTED == 130
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1] == "interrupted after 1 of 3 written; run again to continue"
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert os.listdir(out) == ["a.png"]
  first = (out / "a.png").read_bytes()
  monkeypatch.undo()
  assert deblur.main(common) == 0
  err = capsys.readouterr().err
  assert "2 image(s) written" in err and "1 skipped" in err
  assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png"]
  assert (out / "a.png").read_bytes() == first


# The child starts with SIGINT as a terminal leaves it (Python's KeyboardInterrupt
# handler): pytest-xdist's workers ignore SIGINT, and a child inherits an ignored
# signal, so without this line the Ctrl-C below would be dropped.
_SIGINT_AFTER_FIRST_WRITE = """
import os, signal
signal.signal(signal.SIGINT, signal.default_int_handler)
from flax_gradnet import deblur, image_io
real = image_io.write_image
def write(*args, **kwargs):
  real(*args, **kwargs)
  os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, just after the first output is in place
image_io.write_image = write
deblur.run()
"""


def test_cli_sigint_exits_130_with_one_line(tmp_path, workdir, capsys):
  src = _folder(tmp_path / "in")
  out = tmp_path / "out"
  args = [str(src), "--workdir", workdir, "--output_dir", str(out), "--self_ensemble=off"]
  r = subprocess.run([sys.executable, "-c", _SIGINT_AFTER_FIRST_WRITE, *args, "--no-progress"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 130, r.stderr
  assert r.stderr.strip().splitlines()[-1] == \
      "interrupted after 1 of 3 written; run again to continue"
  assert "Traceback" not in r.stderr
  assert os.listdir(out) == ["a.png"]  # no temporary file, no partial output
  assert deblur.main(args) == 0
  assert "2 image(s) written" in capsys.readouterr().err
  assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png"]


def test_cli_unusable_output_dir_fails_before_the_model_loads(tmp_path, workdir, capsys,
                                                             monkeypatch):
  Image.fromarray(_photo()).save(tmp_path / "a.png")
  calls = _restores(monkeypatch)
  common = [str(tmp_path / "a.png"), "--workdir", workdir]
  # A folder that cannot be created (its parent is a file).
  (tmp_path / "taken").write_text("a file")
  bad = str(tmp_path / "taken" / "out")
  assert deblur.main(common + ["--output_dir", bad]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      f"error: cannot create --output_dir {bad}: Not a directory"]
  # A folder that cannot be written to (as on a read-only mount; simulated, since
  # permissions do not stop root): named in one line; a folder made for the run
  # is removed again.
  ro = str(tmp_path / "ro" / "out")
  real_mkstemp = tempfile.mkstemp

  def read_only(*args, dir=None, **kwargs):  # pylint: disable=redefined-builtin
    if dir is not None and os.path.abspath(dir).startswith(str(tmp_path / "ro")):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, ".tmp-x"))
    return real_mkstemp(*args, dir=dir, **kwargs)

  monkeypatch.setattr(tempfile, "mkstemp", read_only)
  assert deblur.main(common + ["--output_dir", ro]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      f"error: cannot write into --output_dir {ro}: Read-only file system"]
  assert not (tmp_path / "ro").exists()
  assert calls == []  # the generator was never loaded
  if os.geteuid() != 0:  # a real read-only folder, where permissions apply
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert deblur.main(common + ["--output_dir", str(locked)]) == 2
    assert "cannot write into --output_dir" in capsys.readouterr().err
    assert calls == []


def test_cli_generator_failure_on_one_image_is_reported_and_the_rest_run(tmp_path, workdir,
                                                                          capsys, monkeypatch):
  src = _folder(tmp_path / "in")  # a: 40x52, b: 32x48, c: 36x44
  real_make = inference.make_deblur_fn

  def make(*args, **kwargs):
    fn = real_make(*args, **kwargs)

    def failing(x):
      if x.shape[1:3] == (40, 52):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory allocating 51456000000 bytes.\nmore detail")
      if x.shape[1:3] == (36, 44):
        raise RuntimeError("something else went wrong")
      return fn(x)

    failing.__dict__.update(fn.__dict__)  # channels, stride, the memory estimate
    return failing

  monkeypatch.setattr(inference, "make_deblur_fn", make)
  out = tmp_path / "out"
  rc = deblur.main([str(src), "--workdir", workdir, "--output_dir", str(out),
                    "--self_ensemble=off"])
  err = capsys.readouterr().err
  assert rc == 1 and os.listdir(out) == ["b.png"]
  lines = err.splitlines()
  assert (f"error: {src / 'a.png'}: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating "
          "51456000000 bytes.); lower --max_memory or give a smaller --tile") in lines
  assert f"error: {src / 'c.png'}: RuntimeError: something else went wrong" in lines
  assert "more detail" not in err and "Traceback" not in err
  assert "1 image(s) written" in err and "2 failed" in err


def test_cli_memory_budget_tiles_large_images(tmp_path, workdir, capsys):
  photo = _photo()  # 40 x 52
  Image.fromarray(photo).save(tmp_path / "a.png")
  model, params, _ = inference.restore(workdir)
  fn = inference.make_deblur_fn(model, params, ensemble="off")
  # The whole image does not fit; the budget also holds the image's host arrays.
  host = inference.host_bytes(40, 52, 3)
  budget = 0.75 * inference.pass_bytes(fn, 40, 52) + host
  # Brute force: the largest multiple of 4 over the default overlap (32) whose
  # pass fits in what the host arrays leave.
  pad = lambda n: -(-n // 4) * 4
  tile = max(t for t in range(36, 53, 4)
             if fn.bytes_per_pixel * pad(min(t, 40)) * pad(min(t, 52)) + fn.param_bytes + host
             <= budget)
  common = [str(tmp_path / "a.png"), "--workdir", workdir, "--self_ensemble=off",
            "--max_memory", repr(budget / inference.GIB)]
  assert deblur.main(common + ["--output_dir", str(tmp_path / "o")]) == 0
  err = capsys.readouterr().err
  assert f"deblurred in {tile}x{tile} tiles" in err
  assert re.search(r"a\.png: .*\d+/\d+ \[.*tile/s\]", err), err  # a bar over the image's tiles
  want = inference.deblur_image(fn, photo, tile=tile, tile_overlap=32)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "a.png")), want)
  # --no-progress: no bar; an explicit --tile wins over the budget.
  assert deblur.main(common + ["--output_dir", str(tmp_path / "o2"), "--no-progress",
                               "--tile", "16", "--tile_overlap", "4"]) == 0
  err = capsys.readouterr().err
  assert "deblurred in" not in err and "tile/s" not in err and "s/tile" not in err
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / "o2" / "a.png")),
      inference.deblur_image(fn, photo, tile=16, tile_overlap=4))
  # A budget too small for any tile: that image fails, named, in one line.
  assert deblur.main(common[:-1] + ["1e-9", "--output_dir", str(tmp_path / "o3")]) == 1
  assert f"error: {tmp_path / 'a.png'}: max_memory=1e-09 GiB is too small" in \
      capsys.readouterr().err


def test_cli_refuses_a_uri_output_dir_before_anything(tmp_path, capsys):
  """deblur writes local files: a gs:// output folder is refused (exit 2), not
  turned into a local ./gs: folder."""
  from flax_gradnet import deblur as deblur_tool
  image = tmp_path / "in.png"
  image.write_bytes(b"")
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    rc = deblur_tool.main(["--output_dir=gs://bucket/out", str(image)])
  finally:
    os.chdir(cwd)
  assert rc == 2
  assert "is a URI" in capsys.readouterr().err
  assert not (tmp_path / "gs:").exists()
