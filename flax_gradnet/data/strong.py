"""A third held-out set: the paper's task, strong blur on photographs training never reads.

GOPRO's blurs span 20-60 px; the mild held-out sets (`online.heldout_pairs`,
`unseen.unseen_pairs`) stop near 25. `strong_pairs()` blurs the held-out
photographs (`online.HELDOUT_PHOTOS`, at their own resolution) with three
kinds, each drawn twice per photograph, fixed (kinds, ranges, seed) on
2026-12-03 before any model was trained on synthetic data v3:

* "strong_shake": camera shake, a Boracchi-Foi random walk scaled to an extent
  of 25-50 px (`synthetic.shake_psf_with_extent`), convolved in sRGB; the
  training family of the same name, on photographs it never reads.
* "dynamic": a GOPRO-style dynamic scene (`synthetic.dynamic_scene`: objects
  moving 8-60 px over a shaken background, 7-15 frames averaged in linear
  light); a training family, on photographs it never reads.
* "tremor": a kind no training record is made with: a smooth hand tremor, the
  path a sum of two or three sinusoids per axis (periods longer than the
  exposure's fifth, random phases), scaled to an extent of 25-50 px and
  convolved in linear light. Its PSF is a smooth closed or open curve with
  even exposure, unlike the random walk's kinks and dwell points.

Sensor noise is the training data's (`synthetic.random_sensor_noise`). Each
(photograph, kind, draw) has its own generator seeded from (seed, version,
photograph, kind, draw), so adding a kind changes no other pair.
"""

from __future__ import annotations

import zlib

import numpy as np

from flax_gradnet.data import online, synthetic

# Bump when any kind below changes: every number measured on this set names it.
STRONG_VERSION = "1.0.0"
STRONG_KINDS = ("strong_shake", "dynamic", "tremor")
STRONG_SEED = 20261203
DRAWS = 2
EXTENT = (25.0, 50.0)


def tremor_psf(rng: np.random.Generator, extent: float) -> np.ndarray:
  """A smooth hand-tremor PSF of the given extent (px): per axis, the sum of
  2-3 sinusoids of 0.2-1.5 cycles over the exposure with random amplitudes and
  phases, sampled at 2000 even times, rescaled so the larger side of the
  path's bounding box is `extent`."""
  t = np.linspace(0.0, 1.0, 2000)
  path = np.zeros((2, t.size))
  for axis in range(2):
    for _ in range(int(rng.integers(2, 4))):
      path[axis] += rng.uniform(0.3, 1.0) * np.sin(
          2.0 * np.pi * rng.uniform(0.2, 1.5) * t + rng.uniform(0.0, 2.0 * np.pi))
  return synthetic.psf_from_trajectory(
      synthetic.scale_to_extent(path[0] + 1j * path[1], extent))


def pair_rng(name: str, kind: str, draw: int, seed: int = STRONG_SEED) -> np.random.Generator:
  """The generator of one (photograph, kind, draw) pair of the set."""
  return np.random.default_rng([seed, zlib.crc32(STRONG_VERSION.encode()),
                                zlib.crc32(name.encode()), zlib.crc32(kind.encode()), draw])


def kind_psf(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
  """(PSF, linear_light) of a single-PSF kind ("strong_shake", "tremor"): the
  draw `strong_blur` makes."""
  if kind == "strong_shake":
    return synthetic.shake_psf_with_extent(rng, rng.uniform(*EXTENT)), False
  if kind == "tremor":
    return tremor_psf(rng, rng.uniform(*EXTENT)), True
  raise ValueError(f"Strong blur kind {kind!r} has no single PSF; those that do: "
                   "('strong_shake', 'tremor').")


def strong_blur(photo: np.ndarray, kind: str,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(sharp, blurry) uint8 of a whole photograph under one strong kind."""
  if kind == "dynamic":
    return synthetic.dynamic_scene(photo, rng)
  if kind not in STRONG_KINDS:
    raise ValueError(f"Unknown strong blur kind {kind!r}; choose from {STRONG_KINDS}.")
  psf, linear_light = kind_psf(kind, rng)
  return photo, synthetic.apply_psf(photo, psf, linear_light=linear_light)


def strong_pairs(*, kinds=STRONG_KINDS, photos: dict[str, np.ndarray] | None = None,
                 seed: int = STRONG_SEED, draws: int = DRAWS,
                 noise: bool = True) -> online.ListSource:
  """Every held-out photograph under every strong kind, `draws` times
  (photo-major order), training's sensor noise included.

  Returns:
    A `ListSource` of {'blur', 'sharp': uint8 [H, W, 3], 'name':
    "<photo>/<kind>_<draw>.png", 'sequence': photo, 'family': kind}, the layout
    of `online.heldout_pairs()`, so `evaluate` reports a row per kind.
  """
  photos = online.heldout_photographs() if photos is None else photos
  examples = []
  for name, photo in photos.items():
    for kind in kinds:
      if kind not in STRONG_KINDS:
        raise ValueError(f"Unknown strong blur kind {kind!r}; choose from {STRONG_KINDS}.")
      for draw in range(draws):
        rng = pair_rng(name, kind, draw, seed)
        sharp, blur = strong_blur(photo, kind, rng)
        if noise:
          blur, _ = synthetic.random_sensor_noise(blur, rng)
        examples.append({"blur": blur, "sharp": sharp, "name": f"{name}/{kind}_{draw}.png",
                         "sequence": name, "family": kind})
  return online.ListSource(examples)
