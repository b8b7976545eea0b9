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
folder is rebuilt. Nothing is ever downloaded: GOPRO is read from the TFDS
manual dir.

Bad data stops the build with an error naming the file: undecodable or
truncated images, a blur/sharp pair of different sizes, a blurry image without
its sharp twin. Grayscale, palette and RGBA images are converted to RGB with a
logged warning naming the file.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from flax_gradnet.data import synthetic

IMAGE_EXTENSIONS = synthetic.IMAGE_EXTENSIONS
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


# ----------------------------------------------------------------------------
# Reading and checking images.


def decode_image(data: bytes, where: str) -> np.ndarray:
  """Decodes image bytes to uint8 RGB; `where` names the file in messages.

  Raises:
    ValueError: the bytes are not a complete, decodable image.
  """
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()  # Decodes everything: catches truncated files.
      if im.mode != "RGB":
        logging.warning("Converting %s from mode %s to RGB.", where, im.mode)
        if im.mode in ("I;16", "I;16B", "I"):
          raise ValueError(f"{im.mode} (16/32-bit) images are not supported")
        im = im.convert("RGB")
      array = np.asarray(im, dtype=np.uint8)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(
        f"Cannot decode image {where}: {e}. The file is corrupt or truncated; "
        "replace or remove it.") from e
  return array


def read_image(path: str) -> np.ndarray:
  """Reads an image file as uint8 [H, W, 3] (see `decode_image`)."""
  with open(path, "rb") as f:
    return decode_image(f.read(), path)


def check_pair(blur: np.ndarray, sharp: np.ndarray, blur_where: str,
              sharp_where: str) -> None:
  """Checks a blur/sharp pair has the same size."""
  if blur.shape != sharp.shape:
    raise ValueError(
        f"Size mismatch: blurry image {blur_where} is {blur.shape[1]}x"
        f"{blur.shape[0]} but its sharp twin {sharp_where} is "
        f"{sharp.shape[1]}x{sharp.shape[0]} (WxH).")


def _list_images(folder: str) -> list[str]:
  return sorted(f for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS)
                and not f.startswith("."))


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


# ----------------------------------------------------------------------------
# GOPRO.

_GOPRO_RE = re.compile(
    r"(?:^|/)(train|test)/([^/]+)/(blur|blur_gamma|sharp)/([^/]+\.png)$",
    re.IGNORECASE)


class _GoproFiles:
  """Index of GOPRO files in a folder or a zip: (split, seq, kind, frame)."""

  def __init__(self, manual_dir: str):
    folder = os.path.join(manual_dir, "GOPRO_Large")
    zpath = os.path.join(manual_dir, "GOPRO_Large.zip")
    self._zip = None
    self.files: dict[tuple[str, str, str, str], str] = {}
    if os.path.isdir(folder):
      self.root = folder
      for root, _, files in os.walk(folder):
        for f in files:
          rel = os.path.relpath(os.path.join(root, f), folder).replace(
              os.sep, "/")
          self._add(rel, os.path.join(root, f))
    elif os.path.isfile(zpath):
      self.root = zpath
      try:
        self._zip = zipfile.ZipFile(zpath)
      except zipfile.BadZipFile as e:
        raise ValueError(f"{zpath} is not a valid zip file: {e}") from e
      for rel in self._zip.namelist():
        self._add(rel, rel)
    else:
      raise FileNotFoundError(
          f"GOPRO not found: neither {folder} nor {zpath} exists.\n"
          + GOPRO_INSTRUCTIONS)
    if not self.files:
      raise FileNotFoundError(
          f"{self.root} holds no train/<SEQ>/{{blur,blur_gamma,sharp}}/*.png "
          "files.\n" + GOPRO_INSTRUCTIONS)

  def _add(self, rel: str, loc: str) -> None:
    m = _GOPRO_RE.search(rel)
    if m:
      split, seq, kind, frame = m.groups()
      self.files[(split.lower(), seq, kind.lower(), frame)] = loc

  def where(self, loc: str) -> str:
    return f"{self.root}:{loc}" if self._zip else loc

  def read(self, loc: str) -> np.ndarray:
    if self._zip is None:
      return read_image(loc)
    return decode_image(self._zip.read(loc), self.where(loc))


class Gopro(_Builder):
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

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_paired_features(),
        homepage=GOPRO_URL,
        citation="Nah, Kim, Lee. Deep Multi-scale Convolutional Neural "
                 "Network for Dynamic Scene Deblurring. CVPR 2017.",
    )

  def _split_generators(self, dl_manager):
    manual_dir = getattr(dl_manager, "_manual_dir", None)
    if manual_dir is None or not os.path.isdir(os.fspath(manual_dir)):
      raise FileNotFoundError(
          f"The TFDS manual dir {manual_dir!r} does not exist (pass "
          "manual_dir=...).\n" + GOPRO_INSTRUCTIONS)
    index = _GoproFiles(os.fspath(manual_dir))
    splits = sorted({k[0] for k in index.files})
    return {s: self._generate_examples(index, s) for s in splits}

  def _generate_examples(self, index: _GoproFiles, split: str):
    kind = self.builder_config.name
    for (s, seq, k, frame), loc in sorted(index.files.items()):
      if s != split or k != kind:
        continue
      sharp_loc = index.files.get((s, seq, "sharp", frame))
      if sharp_loc is None:
        raise FileNotFoundError(
            f"Blurry image {index.where(loc)} has no sharp twin: expected "
            f"{split}/{seq}/sharp/{frame} next to it.")
      blur = index.read(loc)
      sharp = index.read(sharp_loc)
      check_pair(blur, sharp, index.where(loc), index.where(sharp_loc))
      name = f"{seq}/{frame}"
      yield name, {"blur": blur, "sharp": sharp, "name": name,
                   "sequence": seq}


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


class PairedFolder(_Builder):
  """`input/` (blurry) + `target/` (sharp) folders with the same file names.

  The NAFNet / Restormer / MPRNet layout. If `path` has sub-folders that each
  hold `input/` and `target/` (e.g. `train/`, `test/`), each is a split of
  that name; if `path` itself holds `input/` and `target/`, it is the single
  split `test`. Sub-folders inside `input/` are allowed; their relative path
  is the `sequence`.
  """

  VERSION = VERSION
  BUILDER_CONFIGS = []

  def __init__(self, *, path: str | None = None, **kwargs):
    if path is not None:
      kwargs["config"] = FolderConfig.for_path(path)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_paired_features())

  def _split_dirs(self) -> dict[str, str]:
    cfg = self.builder_config
    root = _require_dir(cfg.path, "Paired")
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

  # At most this many faults are listed in the error (all are counted).
  MAX_LISTED_FAULTS = 10

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
          try:
            with Image.open(blur_path) as a, Image.open(sharp_path) as b:
              if a.size != b.size:
                faults.append(f"{blur_path} is {a.size[0]}x{a.size[1]} but its sharp twin "
                              f"{sharp_path} is {b.size[0]}x{b.size[1]}")
          except (OSError, ValueError):
            pass  # undecodable files are named by the reader when the pair is prepared
      for root, _, _ in os.walk(tgt_root):
        rel_dir = os.path.relpath(root, tgt_root)
        orphans += sum(os.path.normpath(os.path.join(rel_dir, f)) not in blurry
                       for f in _list_images(root))
    if orphans:
      logging.warning("%d sharp image(s) under %s/ have no blurry twin in %s/ and are not used.",
                      orphans, cfg.target_dir, cfg.input_dir)
    if faults:
      listed = "; ".join(faults[:self.MAX_LISTED_FAULTS])
      more = len(faults) - self.MAX_LISTED_FAULTS
      error = (FileNotFoundError if any("no sharp twin" in f for f in faults) else ValueError)
      raise error(f"{len(faults)} pairing fault(s) under {cfg.path}: {listed}"
                  + (f"; and {more} more" if more > 0 else "") + ".")

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
        blur = read_image(blur_path)
        sharp = read_image(sharp_path)
        check_pair(blur, sharp, blur_path, sharp_path)
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


class Kohler(_Builder):
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
  BUILDER_CONFIGS = []

  def __init__(self, *, path: str | None = None, frame: str = "middle",
               **kwargs):
    if path is not None:
      kwargs["config"] = KohlerConfig.for_path(path, frame=str(frame))
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_paired_features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples(
        _require_dir(self.builder_config.path, "Köhler"))}

  def _generate_examples(self, root: str):
    blurs, gts = {}, collections.defaultdict(dict)
    for d, dirs, files in os.walk(root):
      dirs.sort()
      for f in files:
        if m := _KOHLER_BLUR_RE.match(f):
          blurs[(int(m[1]), int(m[2]))] = os.path.join(d, f)
        elif m := _KOHLER_GT_RE.match(f):
          gts[(int(m[1]), int(m[2]))][int(m[3])] = os.path.join(d, f)
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
      blur = read_image(blur_path)
      sharp = read_image(frames[k])
      check_pair(blur, sharp, blur_path, frames[k])
      name = f"Blurry{i}_{j}.png"
      yield name, {"blur": blur, "sharp": sharp, "name": name,
                   "sequence": f"Image{i}"}


class BlurOnly(_Builder):
  """Real blurry photographs without ground truth (e.g. Lai et al. 2016).

  Every image under `path` (recursively); `sequence` is its sub-folder.
  Single split `test`; features `blur`, `name`, `sequence` (no `sharp`).
  """

  VERSION = VERSION
  BUILDER_CONFIGS = []

  def __init__(self, *, path: str | None = None, **kwargs):
    if path is not None:
      kwargs["config"] = FolderConfig.for_path(path)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_blur_only_features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples(
        _require_dir(self.builder_config.path, "Blur-only"))}

  def _generate_examples(self, root: str):
    found = False
    for d, dirs, _ in os.walk(root):
      dirs.sort()
      rel = os.path.relpath(d, root)
      seq = "" if rel == "." else rel.replace(os.sep, "/")
      for f in _list_images(d):
        found = True
        name = f"{seq}/{f}" if seq else f
        yield name, {"blur": read_image(os.path.join(d, f)), "name": name,
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
