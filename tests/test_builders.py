"""Tests of the TFDS builders on small folders written to tmp_path."""

import logging
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from flax_gradnet.data import builders
from flax_gradnet.data import pipeline


def _img(seed, h=12, w=16):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _save(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  im = Image.fromarray(array)
  if mode:
    im = im.convert(mode)
  im.save(path)


def _gopro_tree(root):
  """2 sequences x 2 frames, train and test; returns {(split,kind,name): img}."""
  written = {}
  for s, split in enumerate(("train", "test")):
    for q, seq in enumerate(("GOPR0001_00_00", "GOPR0002_00_00")):
      for f in range(2):
        frame = f"{f + 1:06d}.png"  # Frame names repeat across sequences.
        for k, kind in enumerate(("blur", "blur_gamma", "sharp")):
          img = _img(1000 * s + 100 * q + 10 * f + k)
          _save(os.path.join(root, split, seq, kind, frame), img)
          written[(split, kind, f"{seq}/{frame}")] = img
  return written


def _by_name(source):
  return {ex["name"].decode(): ex for ex in (source[i]
                                             for i in range(len(source)))}


@pytest.mark.parametrize("config", ["blur", "blur_gamma"])
def test_gopro_folder(tmp_path, config):
  written = _gopro_tree(str(tmp_path / "manual" / "GOPRO_Large"))
  name = "gopro" if config == "blur" else "gopro/blur_gamma"
  for split in ("train", "test"):
    src = pipeline.get_source(name, split, data_dir=str(tmp_path / "data"),
                              manual_dir=str(tmp_path / "manual"))
    got = _by_name(src)
    assert sorted(got) == ["GOPR0001_00_00/000001.png",
                           "GOPR0001_00_00/000002.png",
                           "GOPR0002_00_00/000001.png",
                           "GOPR0002_00_00/000002.png"]
    for n, ex in got.items():
      np.testing.assert_array_equal(ex["blur"], written[(split, config, n)])
      np.testing.assert_array_equal(ex["sharp"], written[(split, "sharp", n)])
      assert ex["sequence"].decode() == n.split("/")[0]


def test_gopro_zip(tmp_path):
  written = _gopro_tree(str(tmp_path / "tree" / "GOPRO_Large"))
  manual = tmp_path / "manual"
  manual.mkdir()
  with zipfile.ZipFile(manual / "GOPRO_Large.zip", "w") as z:
    for root, _, files in os.walk(tmp_path / "tree"):
      for f in files:
        p = os.path.join(root, f)
        z.write(p, os.path.relpath(p, tmp_path / "tree"))
  src = pipeline.get_source("gopro", "test", data_dir=str(tmp_path / "data"),
                            manual_dir=str(manual))
  got = _by_name(src)
  assert len(got) == 4
  n = "GOPR0002_00_00/000002.png"
  np.testing.assert_array_equal(got[n]["blur"], written[("test", "blur", n)])


def test_gopro_missing_says_where_to_put_it(tmp_path):
  (tmp_path / "manual" / "HIDE_dataset").mkdir(parents=True)  # another dataset, not GOPRO
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_source("gopro", "train", data_dir=str(tmp_path / "data"),
                        manual_dir=str(tmp_path / "manual"))
  msg = str(e.value)
  assert str(tmp_path / "manual" / "GOPRO_Large") in msg
  assert "GOPRO_Large.zip" in msg and "Nah" in msg
  assert builders.GOPRO_URL in msg


def test_empty_manual_dir_says_where_to_put_it(tmp_path):
  # TFDS's public dl_manager.manual_dir refuses an empty folder as a missing one.
  (tmp_path / "manual").mkdir()
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_source("gopro", "train", data_dir=str(tmp_path / "data"),
                        manual_dir=str(tmp_path / "manual"))
  msg = str(e.value)
  assert f"Manual directory {tmp_path / 'manual'} does not exist or is empty" in msg
  assert "<manual_dir>/GOPRO_Large.zip" in msg and builders.GOPRO_URL in msg


def test_gopro_missing_sharp_twin(tmp_path):
  _gopro_tree(str(tmp_path / "manual" / "GOPRO_Large"))
  bad = tmp_path / "manual/GOPRO_Large/train/GOPR0002_00_00/sharp/000002.png"
  bad.unlink()
  with pytest.raises(FileNotFoundError,
                     match=r"GOPR0002_00_00/blur/000002.png has no sharp"):
    pipeline.get_source("gopro", "train", data_dir=str(tmp_path / "data"),
                        manual_dir=str(tmp_path / "manual"))


def _paired(root, n=3, sizes=None):
  written = {}
  for i in range(n):
    name = f"img{i}.png"
    blur, sharp = _img(i), _img(100 + i)
    if sizes and i in sizes:
      sharp = _img(100 + i, *sizes[i])
    _save(os.path.join(root, "input", name), blur)
    _save(os.path.join(root, "target", name), sharp)
    written[name] = (blur, sharp)
  return written


def test_paired_folder(tmp_path):
  written = _paired(str(tmp_path / "pairs"))
  src = pipeline.get_source("paired_folder", "test",
                            data_dir=str(tmp_path / "data"),
                            path=str(tmp_path / "pairs"))
  got = _by_name(src)
  assert sorted(got) == sorted(written)
  for n, (blur, sharp) in written.items():
    np.testing.assert_array_equal(got[n]["blur"], blur)
    np.testing.assert_array_equal(got[n]["sharp"], sharp)


def test_paired_folder_splits_and_rebuild_on_change(tmp_path):
  _paired(str(tmp_path / "ds" / "train"), n=3)
  _paired(str(tmp_path / "ds" / "test"), n=2)
  kw = dict(data_dir=str(tmp_path / "data"), path=str(tmp_path / "ds"))
  assert len(pipeline.get_source("paired_folder", "train", **kw)) == 3
  assert len(pipeline.get_source("paired_folder", "test", **kw)) == 2
  # A new file changes the config name (fingerprint), so it is rebuilt.
  _save(str(tmp_path / "ds/test/input/new.png"), _img(7))
  _save(str(tmp_path / "ds/test/target/new.png"), _img(8))
  assert len(pipeline.get_source("paired_folder", "test", **kw)) == 3


def _build_paired(tmp_path):
  return pipeline.get_source("paired_folder", "test",
                             data_dir=str(tmp_path / "data"),
                             path=str(tmp_path / "pairs"))


def test_corrupt_file_is_named(tmp_path):
  _paired(str(tmp_path / "pairs"))
  bad = tmp_path / "pairs" / "target" / "img1.png"
  bad.write_bytes(b"\x89PNG garbage, not an image")
  with pytest.raises(ValueError, match=f"Cannot decode image {bad}"):
    _build_paired(tmp_path)


def test_truncated_png_is_named(tmp_path):
  _paired(str(tmp_path / "pairs"))
  bad = tmp_path / "pairs" / "input" / "img2.png"
  data = bad.read_bytes()
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=f"Cannot decode image {bad}"):
    _build_paired(tmp_path)


def test_size_mismatch_is_named(tmp_path):
  _paired(str(tmp_path / "pairs"), sizes={1: (12, 15)})
  with pytest.raises(ValueError, match=r"1 pairing fault\(s\) under .*"
                     r"input/img1.png is 16x12 but its sharp twin .*target/img1.png "
                     r"is 15x12"):
    _build_paired(tmp_path)


def test_missing_twin_is_named(tmp_path):
  _paired(str(tmp_path / "pairs"))
  (tmp_path / "pairs" / "target" / "img0.png").unlink()
  with pytest.raises(FileNotFoundError,
                     match=r"input/img0.png has no sharp twin \(.*target/img0.png\)"):
    _build_paired(tmp_path)


def test_every_pairing_fault_is_reported_and_orphan_targets_counted(tmp_path, caplog):
  _paired(str(tmp_path / "pairs"), n=14, sizes={3: (12, 15)})
  for i in (0, 5, 6, 7, 8, 9, 10, 11, 12, 13):
    (tmp_path / "pairs" / "target" / f"img{i}.png").unlink()
  for i in (1, 2):  # sharp images without a blurry twin
    (tmp_path / "pairs" / "input" / f"img{i}.png").unlink()
  with pytest.raises(FileNotFoundError) as info:
    _build_paired(tmp_path)
  message = str(info.value)
  assert message.startswith("11 pairing fault(s) under ")
  assert message.count("has no sharp twin") == 9 and "img3.png is 16x12" in message
  assert message.endswith("; and 1 more.")
  assert "2 sharp image(s) under target/ have no blurry twin in input/" in caplog.text


def test_gray_and_rgba_converted_with_warning(tmp_path, caplog):
  root = tmp_path / "pairs"
  gray = _img(1)[..., 0]
  rgba = np.concatenate([_img(2), np.full((12, 16, 1), 200, np.uint8)], -1)
  _save(str(root / "input" / "g.png"), gray)
  _save(str(root / "target" / "g.png"), gray)
  _save(str(root / "input" / "a.png"), rgba)
  _save(str(root / "target" / "a.png"), rgba)
  with caplog.at_level(logging.WARNING):
    got = _by_name(_build_paired(tmp_path))
  np.testing.assert_array_equal(got["g.png"]["blur"],
                                np.repeat(gray[..., None], 3, -1))
  # image_io's rule: alpha composited onto white (rgb * a + 255 * (1 - a)), as a viewer shows it.
  on_white = np.round((rgba[..., :3] * 200.0 + 255.0 * 55) / 255.0)
  np.testing.assert_allclose(got["a.png"]["sharp"], on_white, atol=1)
  assert f"{root / 'input' / 'g.png'} from mode L to RGB" in caplog.text
  assert f"{root / 'target' / 'a.png'} from mode RGBA to RGB" in caplog.text
  assert f"{root / 'target' / 'a.png'}: has transparency; composited onto white" in caplog.text


def test_builders_read_with_image_io_rules(tmp_path, caplog):
  """16-bit grayscale scaled (not refused), EXIF rotation applied to both images of a pair
  and to the header-size check, a .gif found by the one extension list."""
  root = tmp_path / "pairs"
  v16 = (np.arange(12 * 16, dtype=np.uint32).reshape(12, 16) * 331 % 65536).astype(np.uint16)
  _save(str(root / "input" / "g16.png"), v16)
  _save(str(root / "target" / "g16.png"), v16)
  upright = _img(5, 12, 16)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored rotated 90 degrees counter-clockwise; shown rotated back
  stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))
  stored.save(root / "input" / "r.png", exif=exif)
  _save(str(root / "target" / "r.png"), upright)  # the same picture, stored upright
  Image.fromarray(upright).convert("P").save(root / "input" / "p.gif")
  Image.fromarray(upright).convert("P").save(root / "target" / "p.gif")
  with caplog.at_level(logging.WARNING):
    got = _by_name(_build_paired(tmp_path))
  assert sorted(got) == ["g16.png", "p.gif", "r.png"]
  np.testing.assert_array_equal(got["g16.png"]["blur"][..., 0], np.round(v16 / 257.0))
  np.testing.assert_array_equal(got["r.png"]["blur"], upright)
  np.testing.assert_array_equal(got["r.png"]["sharp"], upright)
  assert f"{root / 'input' / 'g16.png'} from mode I;16 to RGB" in caplog.text


def test_kohler_layout(tmp_path):
  root = tmp_path / "kohler"
  written = {}
  for i in (1, 2):
    for j in (1, 2):
      written[(i, j)] = _img(10 * i + j)
      _save(str(root / f"Blurry{i}_{j}.png"), written[(i, j)])
      for k in (1, 2, 3):
        _save(str(root / f"Image{i}" / f"Kernel{j}" /
                  f"GroundTruth{i}_{j}_{k}.png"), _img(100 * i + 10 * j + k))
  src = pipeline.get_source("kohler", "test", data_dir=str(tmp_path / "d"),
                            path=str(root))
  got = _by_name(src)
  assert sorted(got) == ["Blurry1_1.png", "Blurry1_2.png", "Blurry2_1.png",
                         "Blurry2_2.png"]
  np.testing.assert_array_equal(got["Blurry2_1.png"]["blur"], written[(2, 1)])
  # Middle of frames 1..3 is frame 2.
  np.testing.assert_array_equal(got["Blurry2_1.png"]["sharp"], _img(212))
  assert got["Blurry2_1.png"]["sequence"] == b"Image2"
  src = pipeline.get_source("kohler", "test", data_dir=str(tmp_path / "d"),
                            path=str(root), frame="3")
  np.testing.assert_array_equal(_by_name(src)["Blurry1_2.png"]["sharp"],
                                _img(123))


def test_kohler_missing_ground_truth(tmp_path):
  _save(str(tmp_path / "k" / "Blurry1_1.png"), _img(0))
  with pytest.raises(FileNotFoundError, match=r"Blurry1_1.png has no sharp"):
    pipeline.get_source("kohler", "test", data_dir=str(tmp_path / "d"),
                        path=str(tmp_path / "k"))


def test_blur_only(tmp_path):
  root = tmp_path / "lai"
  _save(str(root / "a.png"), _img(0))
  _save(str(root / "sub" / "b.jpg"), _img(1, 20, 30))
  src = pipeline.get_source("blur_only", "test", data_dir=str(tmp_path / "d"),
                            path=str(root))
  got = _by_name(src)
  assert sorted(got) == ["a.png", "sub/b.jpg"]
  assert "sharp" not in got["a.png"]
  np.testing.assert_array_equal(got["a.png"]["blur"], _img(0))
  assert got["sub/b.jpg"]["blur"].shape == (20, 30, 3)
  assert got["sub/b.jpg"]["sequence"] == b"sub"


def test_synthetic_builder_small(tmp_path):
  kw = dict(data_dir=str(tmp_path / "d"), train_pairs_per_image=1,
            test_pairs_per_image=1, size=32, seed=5)
  test = _by_name(pipeline.get_source("synthetic", "test", **kw))
  assert {n.split("/")[0] for n in test} == set(
      builders.synthetic.HELDOUT_PHOTOS)
  train = _by_name(pipeline.get_source("synthetic", "train", **kw))
  assert not {n.split("/")[0] for n in train} & set(
      builders.synthetic.HELDOUT_PHOTOS)
  ex = next(iter(test.values()))
  assert ex["blur"].shape == ex["sharp"].shape == (32, 32, 3)
  # Independent of the cache: regenerating gives the same pairs.
  kw2 = dict(kw, data_dir=str(tmp_path / "d2"))
  again = _by_name(pipeline.get_source("synthetic", "test", **kw2))
  for n in test:
    np.testing.assert_array_equal(test[n]["blur"], again[n]["blur"])


def test_unknown_dataset():
  with pytest.raises(ValueError, match="Unknown dataset"):
    pipeline.get_source("nope", "train", data_dir="/tmp/x")


# ----------------------------------------------------------------------------
# HIDE and RealBlur, on small trees in their published layouts.

_HIDE_BLURRY = {"train": ["1fromGOPR0950.png", "2fromGOPR0950.png", "7fromGOPR1002.png"],
                "test/test-close-ups": ["3fromGOPR0981.png", "9fromGOPR0981.png"],
                "test/test-long-shot": ["5fromGOPR1044.png"]}


def _hide_tree(root):
  """HIDE_dataset/{train, test/test-close-ups, test/test-long-shot, GT}; returns
  {(split, name): (blur, sharp)} with the names the builder gives."""
  written = {}
  for i, (folder, files) in enumerate(_HIDE_BLURRY.items()):
    for j, f in enumerate(files):
      blur, sharp = _img(10 * i + j), _img(500 + 10 * i + j)
      _save(os.path.join(root, folder, f), blur)
      _save(os.path.join(root, "GT", f), sharp)
      split, _, sub = folder.partition("/")
      written[(split, f"{sub}/{f}" if sub else f)] = (blur, sharp)
  _save(os.path.join(root, "GT", "99fromGOPR9999.png"), _img(999))  # a GT nobody uses
  return written


def _hide(tmp_path, split, manual="manual"):
  return pipeline.get_source("hide", split, data_dir=str(tmp_path / "data"),
                             manual_dir=str(tmp_path / manual))


def test_hide_splits_pairing_and_sequences(tmp_path, caplog):
  written = _hide_tree(str(tmp_path / "manual" / "HIDE_dataset"))
  with caplog.at_level(logging.WARNING):
    train, test = _by_name(_hide(tmp_path, "train")), _by_name(_hide(tmp_path, "test"))
  assert sorted(train) == sorted(_HIDE_BLURRY["train"])
  assert sorted(test) == ["test-close-ups/3fromGOPR0981.png", "test-close-ups/9fromGOPR0981.png",
                          "test-long-shot/5fromGOPR1044.png"]
  for split, got in (("train", train), ("test", test)):
    for name, ex in got.items():
      blur, sharp = written[(split, name)]
      np.testing.assert_array_equal(ex["blur"], blur)
      np.testing.assert_array_equal(ex["sharp"], sharp)  # GT/<same file name>
      assert ex["sequence"].decode() == name.rpartition("/")[0]
  assert "HIDE split 'test' has 3 pairs; the published split has 2025" in caplog.text


def test_hide_zip_is_read_in_place(tmp_path):
  written = _hide_tree(str(tmp_path / "tree" / "HIDE_dataset"))
  (tmp_path / "manual").mkdir()
  with zipfile.ZipFile(tmp_path / "manual" / "HIDE_dataset.zip", "w") as z:
    for root, _, files in os.walk(tmp_path / "tree"):
      for f in files:
        z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), tmp_path / "tree"))
  got = _by_name(_hide(tmp_path, "test"))
  assert len(got) == 3
  n = "test-long-shot/5fromGOPR1044.png"
  np.testing.assert_array_equal(got[n]["sharp"], written[("test", n)][1])


def test_hide_missing_gt_twins_are_listed(tmp_path):
  root = tmp_path / "manual" / "HIDE_dataset"
  _hide_tree(str(root))
  (root / "GT" / "9fromGOPR0981.png").unlink()
  (root / "GT" / "2fromGOPR0950.png").unlink()
  with pytest.raises(FileNotFoundError) as e:
    _hide(tmp_path, "test")
  msg = str(e.value)
  assert msg.startswith(f"2 pairing fault(s) under {root}: ")
  assert (f"{root / 'test' / 'test-close-ups' / '9fromGOPR0981.png'} has no sharp twin "
          f"({root / 'GT' / '9fromGOPR0981.png'})") in msg
  assert f"{root / 'train' / '2fromGOPR0950.png'} has no sharp twin" in msg


@pytest.mark.parametrize("dataset,expected", [
    ("hide", ["HIDE_dataset.zip", "test-close-ups", builders.HIDE_URL]),
    ("realblur_j", ["RealBlur_J_test_list.txt", builders.REALBLUR_FOLDERS["j"],
                    builders.REALBLUR_URL])])
def test_benchmark_manual_dir_missing_says_where_to_put_it(tmp_path, dataset, expected):
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_source(dataset, "test", data_dir=str(tmp_path / "data"),
                        manual_dir=str(tmp_path / "nowhere"))
  msg = str(e.value)
  assert f"Manual directory {tmp_path / 'nowhere'} does not exist or is empty" in msg
  for text in expected:
    assert text in msg


def test_hide_folder_missing_names_both_places(tmp_path):
  (tmp_path / "manual" / "GOPRO_Large").mkdir(parents=True)  # another dataset, not HIDE
  with pytest.raises(FileNotFoundError,
                     match=f"HIDE not found: neither {tmp_path / 'manual' / 'HIDE_dataset'} nor "
                           f"{tmp_path / 'manual' / 'HIDE_dataset.zip'} exists"):
    _hide(tmp_path, "test")


def _realblur_tree(root, variant="j"):
  """2 train scenes and 1 test scene, 2 pairs each, and the two list files;
  returns {(split, name): (blur, sharp)}."""
  folder = builders.REALBLUR_FOLDERS[variant]
  written, lists = {}, {"train": [], "test": []}
  for s, (scene, split) in enumerate((("scene001", "train"), ("scene002", "train"),
                                      ("scene230", "test"))):
    for k in (2, 1):  # list order is kept by the list, not by name
      blur, sharp = _img(100 * s + k), _img(100 * s + k + 50)
      blur_rel, gt_rel = (f"{folder}/{scene}/blur/blur_{k}.png", f"{folder}/{scene}/gt/gt_{k}.png")
      _save(os.path.join(root, blur_rel), blur)
      _save(os.path.join(root, gt_rel), sharp)
      lists[split].append(f"{gt_rel} {blur_rel}")
      written[(split, f"{scene}/blur/blur_{k}.png")] = (blur, sharp)
  for split, lines in lists.items():
    with open(os.path.join(root, builders.realblur_list_file(variant, split)), "w") as f:
      f.write("\n".join(lines) + "\n")
  return written


@pytest.mark.parametrize("variant,nested", [("j", False), ("r", True)])
def test_realblur_splits_follow_the_list_files(tmp_path, variant, nested):
  root = tmp_path / "manual" / ("RealBlur" if nested else "")
  written = _realblur_tree(str(root), variant)
  for split, n in (("train", 4), ("test", 2)):
    got = _by_name(pipeline.get_source(f"realblur_{variant}", split,
                                       data_dir=str(tmp_path / "data"),
                                       manual_dir=str(tmp_path / "manual")))
    assert len(got) == n
    assert sorted(got) == sorted(name for s, name in written if s == split)
    for name, ex in got.items():
      blur, sharp = written[(split, name)]
      np.testing.assert_array_equal(ex["blur"], blur)
      np.testing.assert_array_equal(ex["sharp"], sharp)  # the gt of the same line
      assert ex["sequence"].decode() == name.split("/")[0]


def _realblur(tmp_path, split="test", variant="j"):
  return pipeline.get_source(f"realblur_{variant}", split, data_dir=str(tmp_path / "data"),
                             manual_dir=str(tmp_path / "manual"))


def test_realblur_missing_list_file_is_named(tmp_path):
  _realblur_tree(str(tmp_path / "manual"))
  missing = tmp_path / "manual" / "RealBlur_J_test_list.txt"
  missing.unlink()
  with pytest.raises(FileNotFoundError, match=f"RealBlur list file {missing} does not exist"):
    _realblur(tmp_path)


def test_realblur_missing_folder_is_named(tmp_path):
  _realblur_tree(str(tmp_path / "manual"), "j")
  folder = tmp_path / "manual" / builders.REALBLUR_FOLDERS["r"]
  with pytest.raises(FileNotFoundError, match=f"RealBlur-R folder {folder} does not exist"):
    _realblur(tmp_path, variant="r")


def test_realblur_listed_file_missing_is_named_with_its_line(tmp_path):
  _realblur_tree(str(tmp_path / "manual"))
  gone = tmp_path / "manual" / builders.REALBLUR_FOLDERS["j"] / "scene230" / "gt" / "gt_1.png"
  gone.unlink()
  lst = tmp_path / "manual" / "RealBlur_J_test_list.txt"
  with pytest.raises(FileNotFoundError) as e:
    _realblur(tmp_path)
  assert str(e.value) == (f"1 pairing fault(s) under {tmp_path / 'manual'}: {lst}:2 lists "
                          f"{gone}, which does not exist.")


def test_realblur_bad_lines(tmp_path):
  _realblur_tree(str(tmp_path / "manual"))
  lst = tmp_path / "manual" / "RealBlur_J_test_list.txt"
  lines = lst.read_text().splitlines()
  gt, blur = lines[0].split()
  lst.write_text(f"{blur} {gt}\n" + "\n".join(lines[1:]) + "\n")
  with pytest.raises(ValueError, match=rf"{lst}:1: the columns look swapped"):
    _realblur(tmp_path)
  lst.write_text("\n".join(lines + [gt]) + "\n")
  with pytest.raises(ValueError, match=rf"{lst}:3: expected '<gt path> <blur path>'"):
    _realblur(tmp_path)
  lst.write_text("\n".join(lines + [lines[0]]) + "\n")
  with pytest.raises(ValueError, match=r"lists the blurry image\(s\) \['scene230/blur/blur_2.png'\]"
                     r" more than once"):
    _realblur(tmp_path)
