"""TFDS builders (array_record) for the deblurring datasets.

Every paired dataset has the features

  blur      uint8 [H, W, 3] image (PNG-encoded in the records)
  sharp     uint8 [H, W, 3] image, same size as `blur`
  name      text, unique within a split (e.g. "GOPR0384_11_00/000001.png")
  sequence  text (the GOPRO sequence, the Köhler image, the sub-folder, ...)

Blur-only datasets (real blurry photographs without ground truth) use a
separate, smaller feature dict without `sharp`, rather than a dummy 0x0 image:
a missing key fails loudly, a dummy image could silently enter a metric.

Folder builders take the folder as a builder config; the config name is the
folder's base name plus a hash of its absolute path and file listing (names,
sizes, modification times), so two folders never share a cache and an edited
folder is rebuilt. Nothing is ever downloaded: GOPRO, HIDE and RealBlur are
read from the TFDS manual dir (one folder can hold all three).

Images are read by `image_io.read_dataset_image` (the package's one reader
and its rules: EXIF orientation applied, alpha composited onto white, 16-bit
scaled to 8). Bad data stops the build with an error naming the file:
undecodable or truncated images, a blur/sharp pair of different sizes, a blurry
image without its sharp twin. Grayscale, palette, RGBA and 16-bit images are
converted to RGB with a logged warning naming the file.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import re
import zipfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from flax_gradnet import image_io
from flax_gradnet.data import synthetic

VERSION = tfds.core.Version("1.0.0")

GOPRO_URL = "https://seungjunnah.github.io/Datasets/gopro.html"
GOPRO_INSTRUCTIONS = f"""\
GOPRO (Nah, Kim & Lee, "Deep Multi-scale Convolutional Neural Network for
Dynamic Scene Deblurring", CVPR 2017) cannot be downloaded automatically.
Download "GOPRO_Large" from the authors' page ({GOPRO_URL}) and put either
  <manual_dir>/GOPRO_Large.zip
or the extracted folder
  <manual_dir>/GOPRO_Large/train/<SEQUENCE>/{{blur,blur_gamma,sharp}}/*.png
  <manual_dir>/GOPRO_Large/test/<SEQUENCE>/{{blur,blur_gamma,sharp}}/*.png
"""

HIDE_URL = "https://github.com/joanshen0508/HA_deblur"
HIDE_INSTRUCTIONS = f"""\
HIDE (Shen et al., "Human-Aware Motion Deblurring", ICCV 2019) cannot be
downloaded automatically. Download HIDE_dataset.zip from the link on the
authors' page ({HIDE_URL}) and put either
  <manual_dir>/HIDE_dataset.zip
or the extracted folder
  <manual_dir>/HIDE_dataset/train/*.png                  6397 blurry images
  <manual_dir>/HIDE_dataset/test/test-close-ups/*.png    blurry test images
  <manual_dir>/HIDE_dataset/test/test-long-shot/*.png    (2025 in both)
  <manual_dir>/HIDE_dataset/GT/*.png                     every sharp image,
                                                         named as its blurry twin
"""

REALBLUR_URL = "https://github.com/rimchang/RealBlur"
REALBLUR_FOLDERS = {"j": "RealBlur-J_ECC_IMCORR_centroid_itensity_ref",
                    "r": "RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref"}
REALBLUR_INSTRUCTIONS = f"""\
RealBlur (Rim, Lee, Won & Cho, "Real-World Blur Dataset for Learning and
Benchmarking Deblurring Algorithms", ECCV 2020) cannot be downloaded
automatically. Download RealBlur.tar.gz from the authors' page
({REALBLUR_URL}), extract it and put its contents either in <manual_dir>/ or
in <manual_dir>/RealBlur/:
  {REALBLUR_FOLDERS["j"]}/<scene>/{{blur,gt}}/*.png
  {REALBLUR_FOLDERS["r"]}/<scene>/{{blur,gt}}/*.png
  RealBlur_J_train_list.txt  RealBlur_J_test_list.txt
  RealBlur_R_train_list.txt  RealBlur_R_test_list.txt
Each line of a list file is "<gt path> <blur path>", both relative to that folder.
"""

# The published split sizes: a build whose counts differ logs a warning (the
# builders do not refuse them, so that small trees can be tested).
HIDE_COUNTS = {"train": 6397, "test": 2025}
REALBLUR_COUNTS = {"train": 3758, "test": 980}  # each of RealBlur-J and RealBlur-R


# ----------------------------------------------------------------------------
# Reading and checking images.


def check_pair(blur: np.ndarray, sharp: np.ndarray, blur_where: str,
              sharp_where: str) -> None:
  """Checks a blur/sharp pair has the same size."""
  if blur.shape != sharp.shape:
    raise ValueError(
        f"Size mismatch: blurry image {blur_where} is {blur.shape[1]}x"
        f"{blur.shape[0]} but its sharp twin {sharp_where} is "
        f"{sharp.shape[1]}x{sharp.shape[0]} (WxH).")


def _is_image_name(name: str) -> bool:
  return image_io.has_image_extension(name) and not name.startswith(".")


def _list_images(folder: str) -> list[str]:
  return sorted(f for f in os.listdir(folder) if _is_image_name(f))


def _folder_fingerprint(path: str) -> str:
  """Hash of the absolute path and every file's name, size and mtime."""
  path = os.path.abspath(os.path.expanduser(path))
  h = hashlib.sha1(path.encode())
  if os.path.isdir(path):
    for root, dirs, files in os.walk(path):
      dirs.sort()
      for f in sorted(files):
        st = os.stat(os.path.join(root, f))
        rel = os.path.relpath(os.path.join(root, f), path)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  elif os.path.exists(path):
    st = os.stat(path)
    h.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
  return h.hexdigest()[:10]


def folder_config_name(path: str) -> str:
  base = re.sub(r"[^A-Za-z0-9]+", "_",
                os.path.basename(os.path.normpath(path))).strip("_") or "data"
  return f"{base}_{_folder_fingerprint(path)}"


def _paired_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "blur": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "sharp": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "name": tfds.features.Text(),
      "sequence": tfds.features.Text(),
  })


def _blur_only_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "blur": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "name": tfds.features.Text(),
      "sequence": tfds.features.Text(),
  })


def _require_dir(path: str, what: str) -> str:
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{what} folder {path!r} does not exist.")
  return path


# At most this many faults are listed in a pairing error (all are counted).
MAX_LISTED_FAULTS = 10


def _raise_faults(faults: list[str], where: str, error: type[Exception] = FileNotFoundError,
                  limit: int = MAX_LISTED_FAULTS) -> None:
  """Raises `error` counting every fault and listing the first `limit`; nothing if none."""
  if faults:
    more = len(faults) - limit
    raise error(f"{len(faults)} pairing fault(s) under {where}: {'; '.join(faults[:limit])}"
                + (f"; and {more} more" if more > 0 else "") + ".")


def _warn_unpublished_count(what: str, split: str, count: int,
                            published: dict[str, int]) -> None:
  if split in published and count != published[split]:
    logging.warning("%s split %r has %d pairs; the published split has %d. Is the data "
                    "complete?", what, split, count, published[split])


def _read_pair(read, blur_loc: str, sharp_loc: str, where=str):
  """Reads a blur/sharp pair with `read(loc)` and checks their sizes match."""
  blur, sharp = read(blur_loc), read(sharp_loc)
  check_pair(blur, sharp, where(blur_loc), where(sharp_loc))
  return blur, sharp


class _Builder(tfds.core.GeneratorBasedBuilder):
  """Base of this module's builders (abstract, so TFDS does not register it)."""

  VERSION = VERSION

  # TFDS derives `code_path` through `importlib_resources`, a package the
  # environment may lack; these builders have no checksums or metadata files
  # beside their code, so give the path directly.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)


class _ManualTree:
  """The files of `<manual_dir>/<folder>/`, or of `<manual_dir>/<folder>.zip` read in place.

  `files` maps each file's path below the folder ('/'-separated; in the zip a
  leading '<folder>/' is dropped) to where it is read from (`read`, `where`).
  """

  def __init__(self, manual_dir: str, folder: str, what: str, instructions: str):
    path = os.path.join(manual_dir, folder)
    zpath = path + ".zip"
    self._zip = None
    self.files: dict[str, str] = {}
    if os.path.isdir(path):
      self.root = path
      for d, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
          loc = os.path.join(d, f)
          self.files[os.path.relpath(loc, path).replace(os.sep, "/")] = loc
    elif os.path.isfile(zpath):
      self.root = zpath
      try:
        self._zip = zipfile.ZipFile(zpath)
      except zipfile.BadZipFile as e:
        raise ValueError(f"{zpath} is not a valid zip file: {e}") from e
      for member in self._zip.namelist():
        if not member.endswith("/"):
          self.files[member.removeprefix(folder + "/")] = member
    else:
      raise FileNotFoundError(
          f"{what} not found: neither {path} nor {zpath} exists.\n" + instructions)

  def where(self, loc: str) -> str:
    """A file's location for messages (`<zip>:<member>` inside the zip)."""
    return f"{self.root}:{loc}" if self._zip else loc

  def where_rel(self, rel: str) -> str:
    """Where the file at `rel` below the folder is (or would be), for messages."""
    return f"{self.root}:{rel}" if self._zip else os.path.join(self.root, *rel.split("/"))

  def read(self, loc: str) -> np.ndarray:
    if self._zip is None:
      return image_io.read_dataset_image(loc)
    return image_io.read_dataset_image(self._zip.read(loc), self.where(loc))


class _BenchmarkBuilder(_Builder):
  """A published paired benchmark read from the TFDS manual dir (still abstract)."""

  HOMEPAGE = ""
  CITATION = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_paired_features(), homepage=self.HOMEPAGE, citation=self.CITATION)

  def _manual_dir(self, dl_manager) -> str:
    """The TFDS manual dir given to `download_and_prepare`; it must exist and not be empty.

    TFDS's public `dl_manager.manual_dir` refuses a missing or empty folder
    with an AssertionError that names it and appends
    MANUAL_DOWNLOAD_INSTRUCTIONS; it is raised again as a FileNotFoundError,
    as every other missing input.
    """
    try:
      return os.fspath(dl_manager.manual_dir)
    except (AssertionError, OSError) as e:  # OSError: a file where the folder should be
      raise FileNotFoundError(
          f"The TFDS manual dir is missing or empty (pass manual_dir=...): {e}") from None


# ----------------------------------------------------------------------------
# GOPRO.

_GOPRO_RE = re.compile(
    r"(?:^|/)(train|test)/([^/]+)/(blur|blur_gamma|sharp)/([^/]+\.png)$",
    re.IGNORECASE)


def _gopro_index(tree: _ManualTree) -> dict[tuple[str, str, str, str], str]:
  """{(split, sequence, kind, frame): loc} of the GOPRO files in `tree`."""
  files = {}
  for rel, loc in tree.files.items():
    if m := _GOPRO_RE.search(rel):
      split, seq, kind, frame = m.groups()
      files[(split.lower(), seq, kind.lower(), frame)] = loc
  if not files:
    raise FileNotFoundError(
        f"{tree.root} holds no train/<SEQ>/{{blur,blur_gamma,sharp}}/*.png "
        "files.\n" + GOPRO_INSTRUCTIONS)
  return files


class Gopro(_BenchmarkBuilder):
  """GOPRO_Large (Nah et al. 2017): 2103 train and 1111 test pairs."""

  VERSION = VERSION
  MANUAL_DOWNLOAD_INSTRUCTIONS = GOPRO_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="blur", description="Blur averaged from sRGB frames."),
      tfds.core.BuilderConfig(
          name="blur_gamma",
          description="Blur averaged in linear light (gamma 2.2)."),
  ]
  DEFAULT_CONFIG_NAME = "blur"
  HOMEPAGE = GOPRO_URL
  CITATION = ("Nah, Kim, Lee. Deep Multi-scale Convolutional Neural Network for Dynamic Scene "
              "Deblurring. CVPR 2017.")

  def _split_generators(self, dl_manager):
    manual_dir = self._manual_dir(dl_manager)
    tree = _ManualTree(manual_dir, "GOPRO_Large", "GOPRO", GOPRO_INSTRUCTIONS)
    files = _gopro_index(tree)
    splits = sorted({k[0] for k in files})
    return {s: self._generate_examples(tree, files, s) for s in splits}

  def _generate_examples(self, tree: _ManualTree, files: dict, split: str):
    kind = self.builder_config.name
    for (s, seq, k, frame), loc in sorted(files.items()):
      if s != split or k != kind:
        continue
      sharp_loc = files.get((s, seq, "sharp", frame))
      if sharp_loc is None:
        raise FileNotFoundError(
            f"Blurry image {tree.where(loc)} has no sharp twin: expected "
            f"{split}/{seq}/sharp/{frame} next to it.")
      blur, sharp = _read_pair(tree.read, loc, sharp_loc, tree.where)
      name = f"{seq}/{frame}"
      yield name, {"blur": blur, "sharp": sharp, "name": name,
                   "sequence": seq}


# ----------------------------------------------------------------------------
# HIDE.


class Hide(_BenchmarkBuilder):
  """HIDE (Shen et al., ICCV 2019): 6397 train and 2025 test pairs.

  The layout of the authors' HIDE_dataset.zip (read in place, or extracted),
  under the TFDS manual dir:

    HIDE_dataset/train/<X>.png                   blurry training images
    HIDE_dataset/test/test-close-ups/<X>.png     blurry test images, close-ups
    HIDE_dataset/test/test-long-shot/<X>.png     blurry test images, long shots
    HIDE_dataset/GT/<X>.png                      the sharp image of EVERY blurry
                                                 image, train and test, by name

  The blurry image `<X>.png` of either split pairs with `GT/<X>.png`. Splits
  `train` and `test` (the two test sub-folders together, 2025 pairs);
  other files (e.g. list files beside the folders) are ignored. `name` is the
  path below the split folder (`test-long-shot/<X>.png`; `<X>.png` in train)
  and `sequence` the test sub-folder ("" in train). A blurry image without its
  GT twin stops the build, listing the missing twins; split sizes other than
  the published ones are logged as a warning, not refused.

  Evaluation (`evaluate --dataset=hide`): the usual protocol, as for GOPRO:
  models trained on GOPRO are tested on all 2025 test pairs, PSNR/SSIM on the
  full RGB images, no alignment or border crop.
  """

  VERSION = VERSION
  MANUAL_DOWNLOAD_INSTRUCTIONS = HIDE_INSTRUCTIONS
  HOMEPAGE = HIDE_URL
  CITATION = "Shen, Wang, Lu, Shen, Ling, Xu, Shao. Human-Aware Motion Deblurring. ICCV 2019."

  def _split_generators(self, dl_manager):
    manual_dir = self._manual_dir(dl_manager)
    tree = _ManualTree(manual_dir, "HIDE_dataset", "HIDE", HIDE_INSTRUCTIONS)
    gt, blurry = {}, {"train": [], "test": []}
    for rel, loc in tree.files.items():
      parts = rel.split("/")
      if not _is_image_name(parts[-1]):
        continue
      if parts[0] == "GT" and len(parts) == 2:
        gt[parts[1]] = loc
      elif parts[0] in blurry and len(parts) >= 2:
        blurry[parts[0]].append(("/".join(parts[1:]), loc))
    if not any(blurry.values()):
      raise FileNotFoundError(
          f"{tree.root} holds no blurry images in train/ or test/.\n" + HIDE_INSTRUCTIONS)
    if not gt:
      raise FileNotFoundError(
          f"{tree.where_rel('GT')} holds no sharp images.\n" + HIDE_INSTRUCTIONS)
    faults = [f"{tree.where(loc)} has no sharp twin ({tree.where_rel('GT/' + name.split('/')[-1])})"
              for split in blurry for name, loc in blurry[split]
              if name.split("/")[-1] not in gt]
    _raise_faults(faults, tree.root)
    splits = {}
    for split, items in blurry.items():
      if items:
        _warn_unpublished_count("HIDE", split, len(items), HIDE_COUNTS)
        pairs = [(name, loc, gt[name.split("/")[-1]]) for name, loc in sorted(items)]
        splits[split] = self._generate_examples(tree, pairs)
    return splits

  def _generate_examples(self, tree: _ManualTree, pairs: list[tuple[str, str, str]]):
    for name, blur_loc, sharp_loc in pairs:
      blur, sharp = _read_pair(tree.read, blur_loc, sharp_loc, tree.where)
      yield name, {"blur": blur, "sharp": sharp, "name": name,
                   "sequence": name.rpartition("/")[0]}


# ----------------------------------------------------------------------------
# RealBlur.


def realblur_list_file(variant: str, split: str) -> str:
  """The list file's name, e.g. `RealBlur_J_test_list.txt` (variant 'j' or 'r')."""
  return f"RealBlur_{variant.upper()}_{split}_list.txt"


def read_realblur_list(list_path: str, root: str) -> list[tuple[str, str, str]]:
  """(name, blur path, gt path) of each line "<gt path> <blur path>" of a RealBlur list.

  Paths in the list are relative to `root`. `name` is the blurry image's path
  without its first folder (`scene230/blur/blur_1.png`).

  Raises:
    FileNotFoundError: listed files are missing (each one named, with its line).
    ValueError: a line is not two paths, names repeat, or the columns look
      swapped (a blur/ path first, a gt/ path second).
  """
  entries, faults = [], []
  with open(list_path) as f:
    lines = f.read().splitlines()
  for n, line in enumerate(lines, 1):
    fields = line.split()
    if not fields:
      continue
    where = f"{list_path}:{n}"
    if len(fields) != 2:
      raise ValueError(f"{where}: expected '<gt path> <blur path>', got {line!r}")
    gt_rel, blur_rel = (p.replace("\\", "/") for p in fields)
    if "blur" in gt_rel.split("/")[:-1] and "gt" in blur_rel.split("/")[:-1]:
      raise ValueError(f"{where}: the columns look swapped ({gt_rel!r} is in a blur/ folder, "
                       f"{blur_rel!r} in a gt/ folder); each line is '<gt path> <blur path>'.")
    for rel in (blur_rel, gt_rel):
      if not os.path.isfile(os.path.join(root, rel)):
        faults.append(f"{where} lists {os.path.join(root, rel)}, which does not exist")
    parts = blur_rel.split("/")
    entries.append(("/".join(parts[1:]) if len(parts) > 1 else blur_rel,
                    os.path.join(root, blur_rel), os.path.join(root, gt_rel)))
  _raise_faults(faults, root)
  names = collections.Counter(name for name, _, _ in entries)
  if repeated := sorted(name for name, k in names.items() if k > 1):
    raise ValueError(f"{list_path} lists the blurry image(s) {repeated[:5]} more than once.")
  if not entries:
    raise ValueError(f"{list_path} lists no pairs.")
  return entries


class RealBlur(_BenchmarkBuilder):
  """RealBlur-J / RealBlur-R (Rim et al., ECCV 2020): 3758 train, 980 test pairs each.

  Real camera blur: each pair was taken at once by two cameras behind a beam
  splitter, one with a long and one with a short exposure. Config `j` is made
  from the cameras' JPEG images, `r` from their raw images. The layout of the
  authors' RealBlur.tar.gz, extracted into the TFDS manual dir (or into
  `<manual_dir>/RealBlur/`):

    RealBlur-J_ECC_IMCORR_centroid_itensity_ref/<scene>/blur/blur_<k>.png
    RealBlur-J_ECC_IMCORR_centroid_itensity_ref/<scene>/gt/gt_<k>.png
    RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref/<scene>/{blur,gt}/...
    RealBlur_J_train_list.txt   RealBlur_J_test_list.txt
    RealBlur_R_train_list.txt   RealBlur_R_test_list.txt

  The splits are exactly the authors' list files (a line "<gt path> <blur
  path>", relative to that folder): `train` and `test` of the config's two
  lists, both required. `name` is the blurry path without its first folder
  (`scene230/blur/blur_1.png`), `sequence` the scene. Missing list files or
  folders, listed files that do not exist, malformed or swapped lines stop the
  build with an error naming them; split sizes other than the published ones
  are logged as a warning, not refused.

  Evaluation: the authors' protocol (evaluation_RealBlur_ecc.py) aligns each
  deblurred image to its ground truth first (intensity scaling and an ECC
  homography, PSNR/SSIM over the valid region only). `evaluate` does NOT align:
  its RealBlur numbers are not comparable with the published tables.
  """

  VERSION = VERSION
  MANUAL_DOWNLOAD_INSTRUCTIONS = REALBLUR_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="j", description="RealBlur-J: from the cameras' JPEGs."),
      tfds.core.BuilderConfig(name="r", description="RealBlur-R: from the cameras' raw images."),
  ]
  DEFAULT_CONFIG_NAME = "j"
  HOMEPAGE = REALBLUR_URL
  CITATION = ("Rim, Lee, Won, Cho. Real-World Blur Dataset for Learning and Benchmarking "
              "Deblurring Algorithms. ECCV 2020.")

  def _split_generators(self, dl_manager):
    manual_dir = self._manual_dir(dl_manager)
    nested = os.path.join(manual_dir, "RealBlur")
    root = nested if os.path.isdir(nested) else manual_dir
    variant = self.builder_config.name
    folder = os.path.join(root, REALBLUR_FOLDERS[variant])
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"RealBlur-{variant.upper()} folder {folder} does not exist."
                              f"\n" + REALBLUR_INSTRUCTIONS)
    splits = {}
    for split in ("train", "test"):
      list_path = os.path.join(root, realblur_list_file(variant, split))
      if not os.path.isfile(list_path):
        raise FileNotFoundError(f"RealBlur list file {list_path} does not exist.\n"
                                + REALBLUR_INSTRUCTIONS)
      entries = read_realblur_list(list_path, root)
      _warn_unpublished_count(f"RealBlur-{variant.upper()}", split, len(entries),
                              REALBLUR_COUNTS)
      splits[split] = self._generate_examples(entries)
    return splits

  def _generate_examples(self, entries: list[tuple[str, str, str]]):
    for name, blur_path, gt_path in entries:
      blur, sharp = _read_pair(image_io.read_dataset_image, blur_path, gt_path)
      yield name, {"blur": blur, "sharp": sharp, "name": name,
                   "sequence": name.split("/")[0] if "/" in name else ""}


# ----------------------------------------------------------------------------
# Folders.


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """A user folder; build it with `FolderConfig.for_path(path)`."""
  path: str = ""
  input_dir: str = "input"
  target_dir: str = "target"

  @classmethod
  def for_path(cls, path: str, **kwargs) -> "FolderConfig":
    path = os.path.abspath(os.path.expanduser(path))
    name = folder_config_name(path)
    # Options change the records, so they are part of the cache name too.
    for k, v in sorted(kwargs.items()):
      name += "_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{k}_{v}")
    return cls(name=name, path=path, description=f"Images from {path}",
               **kwargs)


class _FolderBuilder(_Builder):
  """A builder of one user folder, `path` (still abstract).

  By default a single split `test` of the paired features, read from the
  folder (`_generate_examples(root)`); `FOLDER_KIND` names the folder in the
  error when it does not exist.
  """

  BUILDER_CONFIGS = []
  FOLDER_KIND = "Image"

  def __init__(self, *, path: str | None = None, **kwargs):
    if path is not None:
      kwargs["config"] = FolderConfig.for_path(path)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_paired_features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples(
        _require_dir(self.builder_config.path, self.FOLDER_KIND))}


class PairedFolder(_FolderBuilder):
  """`input/` (blurry) + `target/` (sharp) folders with the same file names.

  The NAFNet / Restormer / MPRNet layout. If `path` has sub-folders that each
  hold `input/` and `target/` (e.g. `train/`, `test/`), each is a split of
  that name; if `path` itself holds `input/` and `target/`, it is the single
  split `test`. Sub-folders inside `input/` are allowed; their relative path
  is the `sequence`.
  """

  VERSION = VERSION
  FOLDER_KIND = "Paired"

  def _split_dirs(self) -> dict[str, str]:
    cfg = self.builder_config
    root = _require_dir(cfg.path, self.FOLDER_KIND)
    def is_pair_dir(d):
      return (os.path.isdir(os.path.join(d, cfg.input_dir))
              and os.path.isdir(os.path.join(d, cfg.target_dir)))
    if is_pair_dir(root):
      return {"test": root}
    splits = {d: os.path.join(root, d) for d in sorted(os.listdir(root))
              if is_pair_dir(os.path.join(root, d))}
    if not splits:
      raise FileNotFoundError(
          f"{root} holds neither {cfg.input_dir}/ + {cfg.target_dir}/ nor "
          f"sub-folders (e.g. train/, test/) that each hold them.")
    return splits

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = self._split_dirs()
    self._check_pairs(splits.values())
    return {s: self._generate_examples(d) for s, d in splits.items()}

  MAX_LISTED_FAULTS = MAX_LISTED_FAULTS

  def _check_pairs(self, split_dirs) -> None:
    """Finds every pairing fault before anything is prepared.

    Raises FileNotFoundError listing (up to MAX_LISTED_FAULTS) blurry images
    without a sharp twin and pairs whose sizes differ (read from the files'
    headers); warns with the count of sharp images that have no blurry twin.
    """
    cfg = self.builder_config
    faults, orphans = [], 0
    for split_dir in split_dirs:
      in_root = os.path.join(split_dir, cfg.input_dir)
      tgt_root = os.path.join(split_dir, cfg.target_dir)
      blurry = set()
      for root, _, _ in os.walk(in_root):
        rel_dir = os.path.relpath(root, in_root)
        for f in _list_images(root):
          rel = os.path.normpath(os.path.join(rel_dir, f))
          blurry.add(rel)
          blur_path, sharp_path = os.path.join(root, f), os.path.join(tgt_root, rel)
          if not os.path.isfile(sharp_path):
            faults.append(f"{blur_path} has no sharp twin ({sharp_path})")
            continue
          try:  # the sizes the reader will return (EXIF rotation applied)
            a, b = image_io.upright_size(blur_path), image_io.upright_size(sharp_path)
            if a != b:
              faults.append(f"{blur_path} is {a[0]}x{a[1]} but its sharp twin "
                            f"{sharp_path} is {b[0]}x{b[1]}")
          except (OSError, ValueError):
            pass  # undecodable files are named by the reader when the pair is prepared
      for root, _, _ in os.walk(tgt_root):
        rel_dir = os.path.relpath(root, tgt_root)
        orphans += sum(os.path.normpath(os.path.join(rel_dir, f)) not in blurry
                       for f in _list_images(root))
    if orphans:
      logging.warning("%d sharp image(s) under %s/ have no blurry twin in %s/ and are not used.",
                      orphans, cfg.target_dir, cfg.input_dir)
    error = (FileNotFoundError if any("no sharp twin" in f for f in faults) else ValueError)
    _raise_faults(faults, cfg.path, error, self.MAX_LISTED_FAULTS)

  def _generate_examples(self, split_dir: str):
    cfg = self.builder_config
    in_root = os.path.join(split_dir, cfg.input_dir)
    tgt_root = os.path.join(split_dir, cfg.target_dir)
    for root, dirs, _ in os.walk(in_root):
      dirs.sort()
      rel_dir = os.path.relpath(root, in_root)
      seq = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
      for f in _list_images(root):
        blur_path = os.path.join(root, f)
        sharp_path = os.path.normpath(os.path.join(tgt_root, rel_dir, f))
        if not os.path.isfile(sharp_path):
          raise FileNotFoundError(
              f"Blurry image {blur_path} has no sharp twin: expected "
              f"{sharp_path}.")
        blur, sharp = _read_pair(image_io.read_dataset_image, blur_path, sharp_path)
        name = f"{seq}/{f}" if seq else f
        yield name, {"blur": blur, "sharp": sharp, "name": name,
                     "sequence": seq}


_KOHLER_BLUR_RE = re.compile(r"^Blurry(\d+)_(\d+)\.png$", re.IGNORECASE)
_KOHLER_GT_RE = re.compile(r"^GroundTruth(\d+)_(\d+)_(\d+)\.png$",
                           re.IGNORECASE)


@dataclasses.dataclass(eq=False)
class KohlerConfig(FolderConfig):
  # Which of the ~200 sharp frames recorded along the shake is the target:
  # "first", "middle", "last" or a 1-based frame number.
  frame: str = "middle"


class Kohler(_FolderBuilder):
  """Köhler et al. (ECCV 2012): 4 sharp images x 12 recorded camera shakes.

  Expected files anywhere under `path` (the layout of the authors' archives):
    Blurry{i}_{j}.png                 i = image 1..4, j = shake 1..12
    GroundTruth{i}_{j}_{k}.png        k = 1..~200 sharp frames along shake j
  (the GroundTruth files may sit in Image{i}/Kernel{j}/ sub-folders). The
  target is one of the sharp frames (config `frame`, default the middle one).
  The paper's protocol (best PSNR over all frames) is the evaluator's job.
  Single split `test`; `sequence` is "Image{i}".
  """

  VERSION = VERSION
  FOLDER_KIND = "Köhler"

  def __init__(self, *, path: str | None = None, frame: str = "middle",
               **kwargs):
    if path is not None:
      kwargs["config"] = KohlerConfig.for_path(path, frame=str(frame))
    super().__init__(**kwargs)

  def _generate_examples(self, root: str):
    blurs, gts = _kohler_files(root)
    if not blurs:
      raise FileNotFoundError(f"No Blurry{{i}}_{{j}}.png files under {root}.")
    frame = self.builder_config.frame
    for (i, j), blur_path in sorted(blurs.items()):
      frames = gts.get((i, j))
      if not frames:
        raise FileNotFoundError(
            f"Blurry image {blur_path} has no sharp twin: expected "
            f"GroundTruth{i}_{j}_<k>.png files under {root}.")
      ks = sorted(frames)
      if frame == "first":
        k = ks[0]
      elif frame == "last":
        k = ks[-1]
      elif frame == "middle":
        k = ks[(len(ks) - 1) // 2]
      else:
        k = int(frame)
        if k not in frames:
          raise FileNotFoundError(
              f"Blurry image {blur_path}: sharp frame GroundTruth{i}_{j}_{k}"
              f".png is missing under {root}.")
      blur, sharp = _read_pair(image_io.read_dataset_image, blur_path, frames[k])
      name = f"Blurry{i}_{j}.png"
      yield name, {"blur": blur, "sharp": sharp, "name": name,
                   "sequence": f"Image{i}"}


class BlurOnly(_FolderBuilder):
  """Real blurry photographs without ground truth (e.g. Lai et al. 2016).

  Every image under `path` (recursively); `sequence` is its sub-folder.
  Single split `test`; features `blur`, `name`, `sequence` (no `sharp`).
  """

  VERSION = VERSION
  FOLDER_KIND = "Blur-only"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_blur_only_features())

  def _generate_examples(self, root: str):
    found = False
    for d, dirs, _ in os.walk(root):
      dirs.sort()
      rel = os.path.relpath(d, root)
      seq = "" if rel == "." else rel.replace(os.sep, "/")
      for f in _list_images(d):
        found = True
        name = f"{seq}/{f}" if seq else f
        yield name, {"blur": image_io.read_dataset_image(os.path.join(d, f)), "name": name,
                     "sequence": seq}
    if not found:
      raise FileNotFoundError(f"No images under {root}.")


# ----------------------------------------------------------------------------
# Synthetic.


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Synthetic blur of built-in (or user) photographs; see synthetic.py."""
  train_pairs_per_image: int = 16
  test_pairs_per_image: int = 4
  size: int = 256
  seed: int = 0
  kinds: tuple[str, ...] = synthetic.BLUR_KINDS
  noise: bool = True
  # A folder of the user's sharp images instead of the built-in photographs;
  # its images sorted by name, the last `heldout_fraction` held out (>= 1).
  image_dir: str | None = None
  heldout_fraction: float = 0.2

  @classmethod
  def make(cls, **kwargs) -> "SyntheticConfig":
    """A config whose name encodes its fields (distinct caches)."""
    cfg = cls(name="tmp", **kwargs)
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)
              if f.name in kwargs}
    if not fields:
      return cls(name="default")
    if cfg.image_dir:
      fields["image_dir"] = _folder_fingerprint(cfg.image_dir)
    digest = hashlib.sha1(repr(sorted(fields.items())).encode()).hexdigest()
    return cls(name=f"custom_{digest[:10]}", **kwargs)


class Synthetic(_Builder):
  """Built-in synthetic motion-blur pairs; `test` = held-out photographs."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
      "1.2.0": "Camera-shake pairs convolved in sRGB (as DeblurGAN); frames stay linear.",
      "1.1.0": "Milder sensor noise (read noise <= 0.002, >= 1000 photons at full scale).",
      "1.0.0": "First release.",
  }
  BUILDER_CONFIGS = [SyntheticConfig(name="default")]
  DEFAULT_CONFIG_NAME = "default"

  def __init__(self, **kwargs):
    cfg_fields = {f.name for f in dataclasses.fields(SyntheticConfig)} - {
        f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    cfg_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in cfg_fields}
    if cfg_kwargs:
      if "kinds" in cfg_kwargs:
        cfg_kwargs["kinds"] = tuple(cfg_kwargs["kinds"])
      kwargs["config"] = SyntheticConfig.make(**cfg_kwargs)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_paired_features())

  def _photos(self) -> dict[str, dict[str, np.ndarray]]:
    cfg = self.builder_config
    if not cfg.image_dir:
      return {"train": synthetic.builtin_photographs("train"),
              "test": synthetic.builtin_photographs("test")}
    photos = synthetic.load_image_dir(cfg.image_dir)
    names = list(photos)
    if len(names) < 2:
      raise ValueError(f"{cfg.image_dir} needs at least 2 images "
                       "(one to train, one to hold out).")
    n_test = min(len(names) - 1, max(1, round(len(names) *
                                              cfg.heldout_fraction)))
    return {"train": {k: photos[k] for k in names[:-n_test]},
            "test": {k: photos[k] for k in names[-n_test:]}}

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    photos = self._photos()
    return {
        "train": self._generate_examples(photos["train"],
                                         cfg.train_pairs_per_image,
                                         cfg.seed),
        "test": self._generate_examples(photos["test"],
                                        cfg.test_pairs_per_image,
                                        cfg.seed + 1),
    }

  def _generate_examples(self, photos, pairs_per_image: int,
                         seed: int) -> Iterator:
    cfg = self.builder_config
    yield from synthetic.generate_pairs(
        photos, pairs_per_image=pairs_per_image, seed=seed, size=cfg.size,
        kinds=cfg.kinds, noise=cfg.noise)


def _kohler_files(root: str) -> tuple[dict, dict]:
  """One walk of a Köhler tree: ({(i, j): Blurry path}, {(i, j): {k: GroundTruth path}})."""
  blurs: dict[tuple[int, int], str] = {}
  gts: dict[tuple[int, int], dict[int, str]] = collections.defaultdict(dict)
  for d, dirs, files in os.walk(root):
    dirs.sort()
    for f in files:
      if m := _KOHLER_BLUR_RE.match(f):
        blurs[(int(m[1]), int(m[2]))] = os.path.join(d, f)
      elif m := _KOHLER_GT_RE.match(f):
        gts[(int(m[1]), int(m[2]))][int(m[3])] = os.path.join(d, f)
  return blurs, gts


def kohler_ground_truth_frames(
    root: str) -> dict[tuple[int, int], dict[int, str]]:
  """{(image i, shake j): {frame k: path}} of every GroundTruth{i}_{j}_{k}.png under `root`.

  The layout `Kohler` reads (its file-name pattern). The builder keeps one
  frame per shake as the target; the literature's protocol measures against
  the best-matching frame, which `evaluate --kohler_best_frame` finds among
  all of these (`evaluation.measure`'s `kohler_frames_dir`).

  Raises:
    FileNotFoundError: no GroundTruth file under `root`.
  """
  _, frames = _kohler_files(os.path.expanduser(root))
  if not frames:
    raise FileNotFoundError(f"no GroundTruth{{i}}_{{j}}_{{k}}.png files under {root}")
  return frames
