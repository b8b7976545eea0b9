"""A second held-out set: blur kinds that no training record is ever made with.

`online.heldout_pairs()` holds out *photographs*, but blurs them with the same
six families the training data draws from (`synthetic.BLUR_FAMILIES`), so it
cannot tell a model that learnt "deblurring" from one that learnt those six
generators. `unseen_pairs()` blurs the same held-out photographs with kinds of
blur that `OnlinePairs` cannot produce, defined before any model was measured
on them (2026-11-27):

* "ellipse": an anisotropic Gaussian PSF (std 1-2.5 px along a random axis,
  0.3-0.8 px across it); training has only isotropic Gaussians.
* "accel": straight motion that accelerates uniformly from rest over 6-24 px,
  so the exposure piles up at the start of the path (a one-sided PSF); the
  training families move at constant speed along a line or wander (shake).
* "rotation": the camera rolls about a random point of the frame, the farthest
  pixel sweeping 6-16 px; spatially varying (21 frames averaged).
* "zoom": the camera moves along its axis (radial blur about a random point),
  the farthest pixel sweeping 6-16 px; spatially varying (21 frames averaged).
* "object": a dynamic scene: an elliptical object (its radii 20-45 % of the
  shorter side) moves 8-24 px in a straight line in front of a still
  background, which stays sharp. The object layer and its matte are both
  blurred by the motion and composited (`M * (I * k) + (1 - M) * I`, the
  usual layered approximation, exact away from the object's edges).

All kinds work on sRGB values, as the training families do; the rotation and
zoom bursts are symmetric about the unmoved (sharp) frame. Sensor noise is the
training data's (`synthetic.random_sensor_noise`): the *blur* is what is
unseen, not the noise. Each (photograph, kind) pair has its own generator
seeded from (seed, version, photograph, kind).
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from flax_gradnet.data import online, synthetic

# Bump when any kind below changes: every number measured on this set names it.
UNSEEN_VERSION = "1.0.0"
UNSEEN_KINDS = ("ellipse", "accel", "rotation", "zoom", "object")
UNSEEN_SEED = 20261128
_BURST_FRAMES = 21


def anisotropic_gaussian_psf(sigma_major: float, sigma_minor: float, angle: float) -> np.ndarray:
  """A Gaussian PSF with std `sigma_major` along `angle` (rad, counter-clockwise
  from +x) and `sigma_minor` across it, truncated at 3 sigma_major, summing to 1."""
  if not sigma_major >= sigma_minor > 0:
    raise ValueError(f"need sigma_major >= sigma_minor > 0, got {sigma_major}, {sigma_minor}")
  half = max(1, int(np.ceil(3.0 * sigma_major)))
  y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
  # Rows grow downwards: a counter-clockwise angle points up (-y).
  u = x * np.cos(angle) - y * np.sin(angle)
  v = x * np.sin(angle) + y * np.cos(angle)
  psf = np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))
  return psf / psf.sum()


def accelerating_motion_psf(length: float, angle: float, *, samples: int = 4000) -> np.ndarray:
  """Straight motion of `length` px at `angle`, uniformly accelerating from rest:
  equal exposure per unit *time*, position = length * t^2, so the PSF is dense
  where the motion starts. Centred on its centroid (no shift), sums to 1."""
  if length <= 0:
    raise ValueError(f"length must be > 0, got {length}")
  t = np.linspace(0.0, 1.0, samples)
  s = length * t * t
  return synthetic.psf_from_trajectory(s * np.cos(angle) - 1j * s * np.sin(angle))


def _burst_average(image: np.ndarray, inverse_map) -> np.ndarray:
  """Averages the sRGB frames `inverse_map(tau)` for tau in [-1, 1] (tau = 0 is
  the unmoved frame); `inverse_map(tau)` gives (matrix, offset) mapping output
  (row, col) to input coordinates."""
  img = image.astype(np.float64)
  total = np.zeros_like(img)
  for tau in np.linspace(-1.0, 1.0, _BURST_FRAMES):
    matrix, offset = inverse_map(tau)
    total += np.stack([ndimage.affine_transform(img[..., c], matrix, offset=offset, order=1,
                                                mode="reflect")
                       for c in range(img.shape[-1])], axis=-1)
  return np.clip(np.round(total / _BURST_FRAMES), 0, 255).astype(np.uint8)


def _farthest(shape: tuple[int, ...], centre: np.ndarray) -> float:
  h, w = shape[:2]
  corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], np.float64)
  return float(np.max(np.linalg.norm(corners - centre, axis=1)))


def rotation_blur(image: np.ndarray, centre: np.ndarray, sweep: float) -> np.ndarray:
  """In-plane camera roll about `centre` (row, col); the farthest pixel sweeps
  `sweep` px along its arc over the exposure. Spatially varying."""
  half_angle = 0.5 * sweep / max(_farthest(image.shape, centre), 1.0)

  def inverse(tau):
    a = half_angle * tau
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return rot, centre - rot @ centre
  return _burst_average(image, inverse)


def zoom_blur(image: np.ndarray, centre: np.ndarray, sweep: float) -> np.ndarray:
  """Radial blur: the camera moves along its axis, the image scaling about
  `centre` (row, col); the farthest pixel moves `sweep` px over the exposure."""
  half_zoom = 0.5 * sweep / max(_farthest(image.shape, centre), 1.0)

  def inverse(tau):
    scale = 1.0 + half_zoom * tau
    return np.eye(2) / scale, centre - centre / scale
  return _burst_average(image, inverse)


def moving_object_blur(image: np.ndarray, psf: np.ndarray, centre: np.ndarray,
                       radii: tuple[float, float]) -> np.ndarray:
  """An elliptical object (centre (row, col), radii (rows, cols)) blurred by
  `psf` over a sharp background: `M * (I * psf) + (1 - M) * I` with the matte
  M = the ellipse's indicator blurred by the same PSF."""
  h, w = image.shape[:2]
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  inside = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0
  mask = np.repeat(inside[..., None].astype(np.uint8) * 255, 3, axis=-1)
  matte = synthetic.apply_psf(mask, psf, linear_light=False)[..., :1].astype(np.float64) / 255.0
  moved = synthetic.apply_psf(image, psf, linear_light=False).astype(np.float64)
  out = matte * moved + (1.0 - matte) * image.astype(np.float64)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def unseen_blur(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
  """Blurs a uint8 sRGB image with a random blur of one of `UNSEEN_KINDS`."""
  h, w = image.shape[:2]
  if kind == "ellipse":
    psf = anisotropic_gaussian_psf(rng.uniform(1.0, 2.5), rng.uniform(0.3, 0.8),
                                   rng.uniform(0.0, np.pi))
    return synthetic.apply_psf(image, psf, linear_light=False)
  if kind == "accel":
    psf = accelerating_motion_psf(rng.uniform(6.0, 24.0), rng.uniform(0.0, 2.0 * np.pi))
    return synthetic.apply_psf(image, psf, linear_light=False)
  centre = np.array([rng.uniform(0.2, 0.8) * (h - 1), rng.uniform(0.2, 0.8) * (w - 1)])
  if kind == "rotation":
    return rotation_blur(image, centre, rng.uniform(6.0, 16.0))
  if kind == "zoom":
    return zoom_blur(image, centre, rng.uniform(6.0, 16.0))
  if kind == "object":
    short = min(h, w)
    radii = (rng.uniform(0.2, 0.45) * short, rng.uniform(0.2, 0.45) * short)
    psf = synthetic.linear_motion_psf(rng.uniform(8.0, 24.0), rng.uniform(0.0, np.pi))
    return moving_object_blur(image, psf, centre, radii)
  raise ValueError(f"Unknown unseen blur kind {kind!r}; choose from {UNSEEN_KINDS}.")


def unseen_pairs(*, kinds=UNSEEN_KINDS, photos: dict[str, np.ndarray] | None = None,
                 seed: int = UNSEEN_SEED, noise: bool = True) -> online.ListSource:
  """Every held-out photograph (`online.HELDOUT_PHOTOS`) blurred whole by every
  unseen kind (photo-major order), training's sensor noise included.

  Returns:
    A `ListSource` of {'blur', 'sharp': uint8 [H, W, 3], 'name':
    "<photo>/<kind>.png", 'sequence': photo, 'family': kind}, the layout of
    `online.heldout_pairs()`, so `evaluate` reports a row per kind.
  """
  photos = online.heldout_photographs() if photos is None else photos
  examples = []
  for name, photo in photos.items():
    for kind in kinds:
      if kind not in UNSEEN_KINDS:
        raise ValueError(f"Unknown unseen blur kind {kind!r}; choose from {UNSEEN_KINDS}.")
      rng = np.random.default_rng([seed, zlib.crc32(UNSEEN_VERSION.encode()),
                                   zlib.crc32(name.encode()), zlib.crc32(kind.encode())])
      blur = unseen_blur(photo, kind, rng)
      if noise:
        blur, _ = synthetic.random_sensor_noise(blur, rng)
      examples.append({"blur": blur, "sharp": photo, "name": f"{name}/{kind}.png",
                       "sequence": name, "family": kind})
  return online.ListSource(examples)
