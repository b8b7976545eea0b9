"""Training pairs generated on the fly, and the held-out evaluation that training never touches.

`OnlinePairs` is a random-access source (`len`, `[i]`) like a TFDS data
source, so the grain pipeline shuffles, shards, batches and checkpoints it
exactly as it does GOPRO; but record `i` is *made* when read, from
`(seed, i)` alone: a sharp square (a dead-leaves image, or a built-in
photograph at a random scale and position), blurred by one random blur family
with random parameters, plus sensor noise of a random level (none included).
With 2^24 records per epoch the data never repeat in practice, so a small net
cannot memorise the training photographs' textures (what limited the v1
builder, whose ~11 photographs gave a few hundred pairs).

`heldout_pairs()` is the fixed evaluation: photographs that no training record
uses (`HELDOUT_PHOTOS`, chosen before any training), each blurred whole by every
family in turn, noise included, from a fixed seed.

Versioned: `VERSION` enters every record's random stream, so a change of the
generator changes the version and never silently changes a data set that a
reported number was measured on.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from flax_gradnet.data import procedural, synthetic

VERSION = "3.0.0"
# The held-out pairs are keyed on their own frozen version: a change of the
# training generator (VERSION) must not move the yardstick that every reported
# held-out number was measured with. Bump only when heldout_pairs() changes.
HELDOUT_VERSION = "2.2.0"
# Held out by photograph, chosen before training: the cat (fur, a face), the
# rocket (flat sky, thin structures), gravel (dense texture) and coffee
# (an indoor still life). No training record ever reads them.
HELDOUT_PHOTOS = ("chelsea", "rocket", "gravel", "coffee")
HELDOUT_SEED = 20261127
NUM_RECORDS = 1 << 24
_MARGIN = 24  # context around a crop for the PSF support (largest PSFs ~ 33 px)
_STRONG_MARGIN = 40  # with strong_shake / dynamic in the families (PSFs and motions to ~60 px)
# Photographs read from `photo_dir` are scaled (area-averaged) so that their longer
# side is at most this many pixels: wallpapers of 4-6k px would otherwise hold GBs,
# and downscaling makes them sharper targets (less lens blur and JPEG noise).
PHOTO_MAX_SIDE = 1600


def _version_key(version: str = VERSION) -> int:
  return zlib.crc32(version.encode())


def training_photographs() -> dict[str, np.ndarray]:
  """The built-in photographs minus `HELDOUT_PHOTOS`."""
  return {k: v for k, v in synthetic.builtin_photographs().items() if k not in HELDOUT_PHOTOS}


def folder_photographs(path: str, max_side: int = PHOTO_MAX_SIDE) -> dict[str, np.ndarray]:
  """Every image of `path` (sorted; `synthetic.load_image_dir`'s rules), each
  scaled by area averaging so its longer side is at most `max_side`, keyed
  "dir:<file name>". Fill such a folder with `experiments/fetch_photos.sh`
  (docs/data.md) or with photographs of your own.

  Raises:
    FileNotFoundError: the folder does not exist or holds no image.
    ValueError: a file cannot be decoded (the message names it).
  """
  import os  # pylint: disable=g-import-not-at-top
  photos = {}
  for name, image in synthetic.load_image_dir(os.path.expanduser(path)).items():
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
      size = (max(1, round(w * scale)), max(1, round(h * scale)))
      image = np.asarray(Image.fromarray(image).resize(size, Image.BOX))
    photos[f"dir:{name}"] = image
  return photos


def heldout_photographs() -> dict[str, np.ndarray]:
  photos = synthetic.builtin_photographs()
  return {k: photos[k] for k in HELDOUT_PHOTOS}


class OnlinePairs(Sequence):
  """Endless synthetic (blur, sharp) pairs made from `(seed, index)` when read.

  Each record:
    * sharp: with probability `procedural_fraction` a dead-leaves image
      (`procedural.dead_leaves_scene`, smallest leaf radius U(3, 8) px; half of
      them a sharp foreground before an out-of-focus background), else a
      training photograph rescaled by U(photo_scale) (default 0.35-1,
      area-averaged, so it stays sharp; above 1 bicubic, as soft as an
      enlarged photograph) and cut at a random position;
    * blur: one family of `families`, uniformly (a name given twice is drawn
      twice as often): "shake" (Boracchi-Foi camera shake, path 4-30 px),
      "linear" (3-25 px at any angle), "frames" (GOPRO-style average of 7-13
      moved frames), "defocus" (disk radius 0.5-6 px), "gaussian" (sigma
      0.3-2 px), "mix" (shake or linear composed with a defocus of radius 1-3
      or a Gaussian of sigma 0.5-1.2); v3 adds the paper's task:
      "strong_shake" (camera shake of extent 20-60 px) and "dynamic"
      (`synthetic.dynamic_scene`: 1-3 objects moving 8-60 px over a background
      shaken by up to 40 px, 7-15 frames averaged in linear light; the sharp
      image is the middle frame). Computed on a margin around the crop (24 px,
      40 px when a v3 family is drawn from) so no border leaks in;
    * noise: Poisson-Gaussian of a random level, none in 20% of records
      (`synthetic.random_sensor_noise`);
    * unblurred: with probability `p_unblurred` the blur is skipped (family
      "none": noise only), so the net also sees inputs that are already sharp
      and learns to leave them alone instead of sharpening what is soft in the
      scene itself;
    * soft: with probability `p_soft` the sharp image is itself soft (a
      Gaussian of sigma U(0.5, 1.5) px applied before anything else, the
      softness of fur, shallow depth of field or a lens), and the target is
      that soft image: the net learns to undo the blur that was added, not to
      sharpen every soft texture (v2.2's nets turned a sharp, soft-furred cat
      photograph from inf dB into 30.6 dB);
    * photometric jitter: with probability `photo_jitter` a photograph's
      region gets a random look (`jitter_colours`: channels permuted, gains
      0.8-1.25 per channel, gamma 0.7-1.4, contrast 0.7-1.3) before anything
      else, so ten training photographs stand for more kinds of scene.

  Args:
    size: side of the square pairs.
    seed: the data seed; the same seed and index give the same pair.
    procedural_fraction: share of dead-leaves records.
    families: blur families to draw from.
    noise: add sensor noise.
    num_records: records per epoch (the sampler's length).
    p_unblurred: share of records without blur (noise only).
    p_soft: share of records whose sharp image is softened first (v2.3).
    photo_scale: (low, high) of the uniform scale applied to photographs;
      the default (0.35, 1) is v2.3's generator; a high end above 1 adds
      photographs at their own scale and enlarged (soft targets).
    photo_jitter: share of photograph records given a random look (0: off,
      the v2.3 generator; draws are made only when it is on).
    strands: share of the dead-leaves foreground's leaves filled with fur-like
      strands (`procedural.strand_texture`; 0: off, the v2.3 generator).
    photos: sharp photographs to use (default: `training_photographs()`).
    photo_dir: a folder of more photographs (`folder_photographs`), added to
      `photos`; "" = none. Its file names enter the records' identity (repr).
  """

  def __init__(self, *, size: int = 128, seed: int = 0, procedural_fraction: float = 0.5,
               families: Sequence[str] = synthetic.BLUR_FAMILIES, noise: bool = True,
               num_records: int = NUM_RECORDS, photos: dict[str, np.ndarray] | None = None,
               p_unblurred: float = 0.1, p_soft: float = 0.0,
               photo_scale: Sequence[float] = (0.35, 1.0), photo_jitter: float = 0.0,
               strands: float = 0.0, photo_dir: str = ""):
    families = tuple(families)
    photo_scale = tuple(float(s) for s in photo_scale)
    if len(photo_scale) != 2 or not 0.0 < photo_scale[0] <= photo_scale[1]:
      raise ValueError(f"photo_scale must be (low, high) with 0 < low <= high, got {photo_scale}.")
    for f in families:
      if f not in synthetic.ALL_FAMILIES:
        raise ValueError(f"Unknown blur family {f!r} in families; choose from "
                         f"{synthetic.ALL_FAMILIES}.")
    if not families:
      raise ValueError("families is empty.")
    if not 0.0 <= procedural_fraction <= 1.0:
      raise ValueError(f"procedural_fraction must be in [0, 1], got {procedural_fraction}.")
    if not 0.0 <= p_unblurred <= 1.0:
      raise ValueError(f"p_unblurred must be in [0, 1], got {p_unblurred}.")
    if not 0.0 <= p_soft <= 1.0:
      raise ValueError(f"p_soft must be in [0, 1], got {p_soft}.")
    if not 0.0 <= photo_jitter <= 1.0:
      raise ValueError(f"photo_jitter must be in [0, 1], got {photo_jitter}.")
    if not 0.0 <= strands <= 1.0:
      raise ValueError(f"strands must be in [0, 1], got {strands}.")
    if size < 8:
      raise ValueError(f"size must be >= 8, got {size}.")
    self.size = int(size)
    self.seed = int(seed)
    self.procedural_fraction = float(procedural_fraction)
    self.families = families
    self.noise = bool(noise)
    self.num_records = int(num_records)
    self.p_unblurred = float(p_unblurred)
    self.p_soft = float(p_soft)
    self.photo_scale = photo_scale
    self.photo_jitter = float(photo_jitter)
    self.strands = float(strands)
    self._photos = dict(photos if photos is not None else training_photographs())
    self.photo_dir = str(photo_dir)
    if self.photo_dir:
      self._photos.update(folder_photographs(self.photo_dir))
    self.margin = (_STRONG_MARGIN if set(families) & set(synthetic.STRONG_FAMILIES)
                   else _MARGIN)
    if procedural_fraction < 1.0 and not self._photos:
      raise ValueError("No photographs to draw from; set procedural_fraction=1.0.")
    self._names = sorted(self._photos)
    photo_crc = 0
    for name in self._names:
      photo_crc = zlib.crc32(np.ascontiguousarray(self._photos[name]).tobytes(),
                             zlib.crc32(name.encode(), photo_crc))
    self._photo_crc = photo_crc

  def __repr__(self) -> str:
    # grain saves repr(source) in the iterator state and refuses to restore
    # onto a source of another repr: it must name the data (not the object's
    # address, which differs in every process) so that a resumed run restores.
    return (f"OnlinePairs(version={VERSION!r}, size={self.size}, seed={self.seed}, "
            f"procedural_fraction={self.procedural_fraction}, families={self.families}, "
            f"noise={self.noise}, num_records={self.num_records}, "
            f"p_unblurred={self.p_unblurred}, p_soft={self.p_soft}, "
            + (f"photo_scale={self.photo_scale}, " if self.photo_scale != (0.35, 1.0) else "")
            + (f"photo_jitter={self.photo_jitter}, " if self.photo_jitter else "")
            + (f"strands={self.strands}, " if self.strands else "")
            + f"photos={len(self._names)}:{self._photo_crc:08x})")

  def __len__(self) -> int:
    return self.num_records

  def _photo_region(self, rng: np.random.Generator, side: int) -> tuple[np.ndarray, str]:
    name = self._names[int(rng.integers(len(self._names)))]
    photo = self._photos[name]
    scale = rng.uniform(*self.photo_scale)
    h, w = photo.shape[:2]
    # Cut the source window first, then resize only that window: downscaling
    # averages areas (the result stays sharp); upscaling (scale > 1) is bicubic,
    # so the target is as soft as an enlarged photograph.
    src = int(np.ceil(side / scale))
    top = int(rng.integers(0, max(h - src, 0) + 1))
    left = int(rng.integers(0, max(w - src, 0) + 1))
    window = synthetic._reflect_crop(photo, top, left, src, src)  # pylint: disable=protected-access
    resample = Image.BOX if src >= side else Image.BICUBIC
    region = np.asarray(Image.fromarray(window).resize((side, side), resample))
    return region, name

  def __getitem__(self, index: int) -> dict[str, np.ndarray | str]:
    index = int(index)
    if not 0 <= index < self.num_records:
      raise IndexError(f"record {index} out of range [0, {self.num_records}).")
    rng = np.random.default_rng([self.seed, _version_key(), index])
    side = self.size + 2 * self.margin
    family = self.families[int(rng.integers(len(self.families)))]
    if rng.uniform() < self.procedural_fraction:
      region = procedural.dead_leaves_scene(rng, side, r_min=rng.uniform(3.0, 8.0),
                                            strands=self.strands)
      source = "dead_leaves"
    else:
      region, source = self._photo_region(rng, side)
      # Drawn only when enabled: with photo_jitter=0 the records are v2.3's.
      if self.photo_jitter > 0.0 and rng.uniform() < self.photo_jitter:
        region = jitter_colours(region, rng)
        source += "_jit"
    # Drawn only when enabled: with p_soft=0 the generator is v2.2's (under the v2.3 key).
    if self.p_soft > 0.0 and rng.uniform() < self.p_soft:
      region = synthetic.apply_psf(region, synthetic.gaussian_psf(rng.uniform(0.5, 1.5)),
                                   linear_light=False)
      source += "_soft"
    if rng.uniform() < self.p_unblurred:
      blurred, family = region, "none"
    else:
      region, blurred = synthetic.blur_pair(region, family, rng)
    m = self.margin
    inner = (slice(m, m + self.size), slice(m, m + self.size))
    blur = np.ascontiguousarray(blurred[inner])
    if self.noise:
      blur, _ = synthetic.random_sensor_noise(blur, rng)
    return {"blur": blur, "sharp": np.ascontiguousarray(region[inner]),
            "name": f"{index:08d}_{source}_{family}", "sequence": source}


def jitter_colours(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random look for a uint8 sRGB photograph: channels permuted, a gain of
  U(0.8, 1.25) per channel, a gamma of U(0.7, 1.4), then the contrast about
  the mean scaled by U(0.7, 1.3); clipped to 0-255. Blur is applied after it,
  so the pair stays consistent."""
  x = image[..., rng.permutation(3)].astype(np.float64) / 255.0
  x = np.clip(x * rng.uniform(0.8, 1.25, size=3), 0.0, 1.0) ** rng.uniform(0.7, 1.4)
  x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean()
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


class ListSource(Sequence):
  """A random-access source over a list of examples."""

  def __init__(self, examples: list[dict]):
    self._examples = examples

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, index: int) -> dict:
    return self._examples[index]


def heldout_pairs(*, families: Sequence[str] = synthetic.BLUR_FAMILIES,
                  photos: dict[str, np.ndarray] | None = None, seed: int = HELDOUT_SEED,
                  noise: bool = True) -> ListSource:
  """Every held-out photograph blurred whole by every family (photo-major order).

  Each (photo, family) pair has its own generator seeded from (seed, version,
  photo, family), so adding a family or a photo changes no other pair.

  Returns:
    A `ListSource` of {'blur', 'sharp': uint8 [H, W, 3], 'name':
    "<photo>/<family>.png", 'sequence': photo, 'family': family}.
  """
  photos = heldout_photographs() if photos is None else photos
  examples = []
  for name, photo in photos.items():
    for family in families:
      if family not in synthetic.BLUR_FAMILIES:
        raise ValueError(f"Unknown blur family {family!r}; choose from {synthetic.BLUR_FAMILIES}.")
      rng = np.random.default_rng([seed, _version_key(HELDOUT_VERSION), zlib.crc32(name.encode()),
                                   zlib.crc32(family.encode())])
      blur = synthetic.blur_family(photo, family, rng)
      if noise:
        blur, _ = synthetic.random_sensor_noise(blur, rng)
      examples.append({"blur": blur, "sharp": photo, "name": f"{name}/{family}.png",
                       "sequence": name, "family": family})
  return ListSource(examples)
