"""Synthetic motion blur: the built-in training data.

Two blur models, both deterministic given a `numpy.random.Generator`:

* camera shake: a random motion trajectory (Boracchi & Foi, "Modeling the
  performance of image restoration from motion blur", TIP 2012; the generator
  DeblurGAN used) rasterised with sub-pixel (bilinear) accuracy into a PSF,
  convolved with the image in linear light;
* GOPRO-style: the average, in linear light, of a short burst of frames of a
  smooth camera motion (shift + rotation + zoom), like Nah et al. (2017) made
  GOPRO by averaging 7-13 high-speed frames.

Both keep the sharp target aligned with the blurry image: the PSF is centred
on its centroid, and the frame burst is centred on the middle frame (which is
the sharp image, as in GOPRO).

Photographs come from the packages the project already installs
(scikit-image, scikit-learn), read from their installed files; nothing is
downloaded. The train / held-out split is by photograph.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage, signal

from flax_gradnet import image_io

GAMMA = 2.2

# Held out by photograph (never by crop): a portrait-like close-up (the cat),
# a scene with a large flat sky (the rocket) and a dense texture (gravel).
HELDOUT_PHOTOS = ("chelsea", "rocket", "gravel")

BLUR_KINDS = ("shake", "frames")


# ----------------------------------------------------------------------------
# Photographs.


def _gray_to_rgb(image: np.ndarray) -> np.ndarray:
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _skimage_loaders() -> dict[str, Callable[[], np.ndarray]]:
  from skimage import data as skd  # pylint: disable=g-import-not-at-top

  # Only images stored in skimage's own install (no pooch download) and only
  # natural photographs: no microscopy, astronomy, scans, drawings, and not
  # clock_motion (a real blurry photo, kept for the demo).
  return {
      "astronaut": skd.astronaut,
      "coffee": skd.coffee,
      "chelsea": skd.chelsea,
      "rocket": skd.rocket,
      "motorcycle_left": lambda: skd.stereo_motorcycle()[0],
      "motorcycle_right": lambda: skd.stereo_motorcycle()[1],
      "camera": skd.camera,
      "coins": skd.coins,
      "moon": skd.moon,
      "grass": skd.grass,
      "gravel": skd.gravel,
      "brick": skd.brick,
  }


def builtin_photographs(split: str | None = None) -> dict[str, np.ndarray]:
  """Natural photographs shipped by scikit-image and scikit-learn (offline).

  Args:
    split: None for all, "train" for all but `HELDOUT_PHOTOS`, "test" for
      `HELDOUT_PHOTOS` only.

  Returns:
    An ordered dict name -> uint8 HxWx3 (grayscale photos repeated to RGB).
  """
  if split not in (None, "train", "test"):
    raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
  photos = {}
  for name, load in _skimage_loaders().items():
    photos[name] = _gray_to_rgb(load())
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top

  sample = load_sample_images()
  for fname, image in zip(sample.filenames, sample.images):
    photos[os.path.splitext(os.path.basename(fname))[0]] = _gray_to_rgb(image)
  if split == "train":
    return {k: v for k, v in photos.items() if k not in HELDOUT_PHOTOS}
  if split == "test":
    return {k: photos[k] for k in HELDOUT_PHOTOS}
  return photos


def load_image_dir(path: str) -> dict[str, np.ndarray]:
  """Loads every image of a folder (sorted by name) as uint8 RGB.

  Files ending in one of `image_io.IMAGE_EXTENSIONS`, read by
  `image_io.read_dataset_image` (its rules; conversions logged).

  Raises:
    FileNotFoundError: the folder does not exist or holds no image.
    ValueError: a file cannot be decoded (the message names it).
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Image folder {path!r} does not exist.")
  names = sorted(f for f in os.listdir(path) if image_io.has_image_extension(f))
  if not names:
    raise FileNotFoundError(
        f"No images ({', '.join(image_io.IMAGE_EXTENSIONS)}) in folder {path!r}.")
  return {name: image_io.read_dataset_image(os.path.join(path, name)) for name in names}


# ----------------------------------------------------------------------------
# Colour.


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
  """uint8 (or [0, 1] float) sRGB -> float64 linear light, by gamma 2.2."""
  x = np.asarray(image, np.float64)
  if np.asarray(image).dtype == np.uint8:
    x = x / 255.0
  return np.clip(x, 0.0, 1.0) ** GAMMA


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
  """float linear light -> uint8 sRGB (gamma 1/2.2, rounded)."""
  x = np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA)
  return np.round(x * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------
# Camera shake (Boracchi & Foi 2012).


def motion_trajectory(
    rng: np.random.Generator,
    *,
    num_steps: int = 2000,
    max_len: float = 30.0,
    expl: float | None = None,
) -> np.ndarray:
  """Random camera trajectory: a random walk with inertia and impulsive shakes.

  The model of Boracchi & Foi (2012), as in DeblurGAN's `generate_trajectory`:
  the velocity keeps its direction (inertia), is perturbed by Gaussian shake,
  is pulled back towards the start (centripetal term) and sometimes reverses
  abruptly (an impulsive shake); its magnitude is fixed so the path length is
  `max_len` pixels.

  Args:
    rng: the random generator.
    num_steps: number of trajectory samples.
    max_len: total path length in pixels.
    expl: anxiety of the walk (how much it wanders); random in
      [0.001, 0.01) if None.

  Returns:
    complex128 [num_steps], x + iy positions in pixels, starting at 0.
  """
  if expl is None:
    expl = rng.uniform(0.001, 0.01)
  centripetal = 0.7 * rng.uniform()
  prob_big_shake = 0.2 * rng.uniform()
  gaussian_shake = 10.0 * rng.uniform()
  step = max_len / (num_steps - 1)
  v = np.exp(1j * rng.uniform(0.0, 2.0 * np.pi)) * step
  # Draw all the noise up front: same numbers, no per-step generator calls.
  big = rng.uniform(size=num_steps) < prob_big_shake * expl
  big_angle = np.pi + rng.uniform(size=num_steps) - 0.5
  shake = rng.standard_normal(num_steps) + 1j * rng.standard_normal(num_steps)
  x = np.zeros(num_steps, np.complex128)
  for t in range(num_steps - 1):
    nxt = 2.0 * v * np.exp(1j * big_angle[t]) if big[t] else 0.0
    dv = nxt + expl * (gaussian_shake * shake[t] - centripetal * x[t]) * step
    v = v + dv
    v = v / max(abs(v), 1e-12) * step
    x[t + 1] = x[t] + v
  return x


def psf_from_trajectory(trajectory: np.ndarray) -> np.ndarray:
  """Rasterises a trajectory into a PSF with bilinear (sub-pixel) splatting.

  Every sample gets the same exposure time. The PSF is square, odd-sized, and
  its centroid lies exactly on the centre pixel, so convolving with it does
  not shift the image.

  Returns:
    float64 [K, K], non-negative, summing to 1.
  """
  pts = trajectory - trajectory.mean()  # centroid of the exposure -> origin.
  half = int(np.ceil(max(np.abs(pts.real).max(), np.abs(pts.imag).max()))) + 1
  size = 2 * half + 1
  xs = pts.real + half
  ys = pts.imag + half
  x0 = np.floor(xs).astype(int)
  y0 = np.floor(ys).astype(int)
  fx = xs - x0
  fy = ys - y0
  psf = np.zeros((size, size), np.float64)
  for dy, wy in ((0, 1.0 - fy), (1, fy)):
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
      np.add.at(psf, (y0 + dy, x0 + dx), wy * wx)
  return psf / psf.sum()


def camera_shake_psf(
    rng: np.random.Generator, *, max_len: float | None = None
) -> np.ndarray:
  """A random camera-shake PSF; path length random in [5, 35) px if None."""
  if max_len is None:
    max_len = rng.uniform(5.0, 35.0)
  return psf_from_trajectory(motion_trajectory(rng, max_len=max_len))


def shake_psf_with_extent(rng: np.random.Generator, extent: float) -> np.ndarray:
  """A camera-shake PSF (Boracchi-Foi random walk) scaled to a given *extent*:
  the larger side of the trajectory's bounding box, in pixels.

  A path length is what `motion_trajectory` controls, but a wandering walk of
  length L spans anywhere from a few pixels to L; the extent is what a viewer
  (and GOPRO's 20-60 px figures) measures. The walk's length is drawn at
  1.2-3x the extent (straighter to more tangled), then the path is rescaled.
  """
  if extent <= 0:
    raise ValueError(f"extent must be > 0, got {extent}")
  traj = motion_trajectory(rng, max_len=extent * rng.uniform(1.2, 3.0))
  return psf_from_trajectory(scale_to_extent(traj, extent))


def scale_to_extent(trajectory: np.ndarray, extent: float) -> np.ndarray:
  """A complex x + iy path scaled so that the larger side of its bounding box is
  `extent` pixels (a degenerate, single-point path stays put)."""
  span = max(np.ptp(trajectory.real), np.ptp(trajectory.imag), 1e-6)
  return trajectory * (extent / span)


def apply_psf(image: np.ndarray, psf: np.ndarray, *, linear_light: bool = True) -> np.ndarray:
  """Convolves a uint8 sRGB image with a PSF, per channel.

  Borders are reflect-padded (so a constant image stays constant).

  Args:
    image: uint8 sRGB.
    psf: the kernel (sums to 1).
    linear_light: convolve linear intensities (physical) or, if False, the
      sRGB values themselves, as DeblurGAN's camera-shake data and GOPRO's
      standard `blur` set (frames averaged without gamma) do. Linear-light
      blur brightens textured regions (the mean of the sRGB encoding of an
      average exceeds the mean of the encodings), a shift whose size depends
      on the photograph's texture.

  Returns:
    uint8 image of the input's shape.
  """
  if not linear_light:
    r = psf.shape[0] // 2
    padded = np.pad(image.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    out = np.stack([signal.fftconvolve(padded[..., c], psf, mode="valid")
                    for c in range(padded.shape[-1])], axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  linear = srgb_to_linear(image)
  r = psf.shape[0] // 2
  padded = np.pad(linear, ((r, r), (r, r), (0, 0)), mode="reflect")
  out = np.stack([signal.fftconvolve(padded[..., c], psf, mode="valid")
                  for c in range(padded.shape[-1])], axis=-1)
  return linear_to_srgb(out)


# ----------------------------------------------------------------------------
# Parametric PSFs: linear motion, defocus, Gaussian, and their compositions.


def linear_motion_psf(length: float, angle: float, *, samples_per_px: int = 8) -> np.ndarray:
  """Uniform straight motion of `length` px at `angle` (rad, counter-clockwise
  from +x), rasterised with sub-pixel (bilinear) accuracy and centred.

  A length of 0 gives the 1x1 identity PSF.
  """
  if length < 0:
    raise ValueError(f"length must be >= 0, got {length}")
  if length == 0:
    return np.ones((1, 1))
  n = max(2, int(np.ceil(length * samples_per_px)) + 1)
  t = np.linspace(-0.5, 0.5, n) * length
  # Image rows grow downwards: a counter-clockwise angle moves up (-y).
  return psf_from_trajectory(t * np.cos(angle) - 1j * t * np.sin(angle))


def defocus_psf(radius: float, *, supersample: int = 8) -> np.ndarray:
  """A uniform disk (out-of-focus blur) of `radius` px, anti-aliased by
  supersampling the disk's indicator; radius 0 gives the identity."""
  if radius < 0:
    raise ValueError(f"radius must be >= 0, got {radius}")
  half = int(np.ceil(radius))
  size = 2 * half + 1
  s = supersample
  coords = (np.arange(size * s) + 0.5) / s - size / 2.0
  yy, xx = np.meshgrid(coords, coords, indexing="ij")
  # At least the 4 sub-samples nearest the centre (at 0.5/s from each axis; a
  # floor of 0.5/s would miss them and give 0/0 for radius < 0.09).
  disk = (yy * yy + xx * xx <= max(radius, 1.0 / s) ** 2).astype(np.float64)
  psf = disk.reshape(size, s, size, s).mean(axis=(1, 3))
  return psf / psf.sum()


def gaussian_psf(sigma: float) -> np.ndarray:
  """An isotropic Gaussian of std `sigma` px, truncated at 3 sigma, summing to 1."""
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")
  half = max(1, int(np.ceil(3.0 * sigma)))
  x = np.arange(-half, half + 1, dtype=np.float64)
  g = np.exp(-0.5 * (x / sigma) ** 2)
  psf = np.outer(g, g)
  return psf / psf.sum()


def compose_psfs(*psfs: np.ndarray) -> np.ndarray:
  """The PSF of blurring with each in turn (full 2-D convolution), summing to 1."""
  out = psfs[0]
  for p in psfs[1:]:
    out = signal.fftconvolve(out, p, mode="full")
  out = np.clip(out, 0.0, None)
  return out / out.sum()


def psf_centroid(psf: np.ndarray) -> tuple[float, float]:
  """(row, column) of a PSF's centre of mass."""
  ys, xs = np.mgrid[:psf.shape[0], :psf.shape[1]]
  return float((psf * ys).sum()), float((psf * xs).sum())


# Blur families of the on-the-fly data (`OnlinePairs`) and of the held-out
# evaluation. "mix" composes a motion (shake or linear) with a defocus or a
# Gaussian: a moving, slightly out-of-focus camera.
BLUR_FAMILIES = ("shake", "linear", "frames", "defocus", "gaussian", "mix")
# The paper's task (synthetic data v3): camera shake of 20-60 px extent, and
# GOPRO-style dynamic scenes (`dynamic_scene`: a shaken background with objects
# moving on their own, frames averaged in linear light; the blur varies across
# the image). "dynamic" changes the sharp image too (the objects are pasted in),
# so it goes through `blur_pair`, not `blur_family`.
STRONG_FAMILIES = ("strong_shake", "dynamic")
ALL_FAMILIES = BLUR_FAMILIES + STRONG_FAMILIES
STRONG_SHAKE_EXTENT = (20.0, 60.0)  # px, the larger side of the path's bounding box


def random_psf(family: str, rng: np.random.Generator) -> np.ndarray:
  """A PSF of one family with random parameters (ranges in the docstring of
  `OnlinePairs`); "frames" has no PSF (see `frame_average_blur`)."""
  if family == "shake":
    return camera_shake_psf(rng, max_len=rng.uniform(4.0, 30.0))
  if family == "strong_shake":
    return shake_psf_with_extent(rng, rng.uniform(*STRONG_SHAKE_EXTENT))
  if family == "linear":
    return linear_motion_psf(rng.uniform(3.0, 25.0), rng.uniform(0.0, np.pi))
  if family == "defocus":
    return defocus_psf(rng.uniform(0.5, 6.0))
  if family == "gaussian":
    return gaussian_psf(rng.uniform(0.3, 2.0))
  if family == "mix":
    motion = random_psf("shake" if rng.uniform() < 0.5 else "linear", rng)
    if rng.uniform() < 0.5:
      soft = defocus_psf(rng.uniform(1.0, 3.0))
    else:
      soft = gaussian_psf(rng.uniform(0.5, 1.2))
    return compose_psfs(motion, soft)
  if family == "frames":
    raise ValueError("blur family 'frames' has no PSF: it averages moved frames (frame_average_blur).")
  if family == "dynamic":
    raise ValueError("blur family 'dynamic' has no PSF: it varies across the image (dynamic_scene).")
  raise ValueError(f"Unknown blur family {family!r}; choose from {ALL_FAMILIES}.")


# ----------------------------------------------------------------------------
# GOPRO-style frame averaging.


def _warp(linear: np.ndarray, shift: np.ndarray, angle: float,
          zoom: float) -> np.ndarray:
  """Rotates by `angle` (rad) and zooms about the centre, then shifts (px)."""
  h, w = linear.shape[:2]
  c, s = np.cos(angle), np.sin(angle)
  # affine_transform maps output coords to input coords: the inverse motion.
  inv = np.array([[c, s], [-s, c]]) / zoom
  centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
  offset = centre - inv @ (centre + shift)
  # One 2-D warp per channel: a 3-D warp would also interpolate across
  # channels (twice the work for the same result).
  return np.stack([
      ndimage.affine_transform(linear[..., c], inv, offset=offset, order=1,
                               mode="reflect")
      for c in range(linear.shape[-1])], axis=-1)


def frame_average_blur(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    num_frames: int | None = None,
    max_shift: float = 12.0,
    max_angle_deg: float = 2.0,
    max_zoom: float = 0.03,
    linear_light: bool = True,
) -> np.ndarray:
  """GOPRO-style blur: averages a burst of moved frames in linear light.

  The camera moves smoothly (a quadratic path: a velocity plus an
  acceleration) through shift, in-plane rotation and zoom; the middle frame
  is the unmoved image, so the sharp target is `image` itself.

  Args:
    image: uint8 HxWx3 sRGB.
    rng: the random generator.
    num_frames: frames to average; random odd in [7, 13] if None.
    max_shift: largest shift (px) of the first/last frame.
    max_angle_deg: largest rotation of the first/last frame.
    max_zoom: largest relative zoom of the first/last frame.
    linear_light: average linear intensities (physical; GOPRO's `blur_gamma`)
      or, if False, the sRGB values (GOPRO's standard `blur` set).

  Returns:
    uint8 HxWx3 blurry image.
  """
  if num_frames is None:
    num_frames = int(rng.choice([7, 9, 11, 13]))
  t = np.linspace(-1.0, 1.0, num_frames)  # 0 is the middle (sharp) frame.
  scale = rng.uniform(0.3, 1.0)
  vel = rng.uniform(-1.0, 1.0, size=2) * max_shift * scale
  acc = rng.uniform(-0.5, 0.5, size=2) * max_shift * scale
  ang_v, ang_a = np.deg2rad(rng.uniform(-1.0, 1.0, size=2) * max_angle_deg)
  zoom_v = rng.uniform(-1.0, 1.0) * max_zoom
  linear = srgb_to_linear(image) if linear_light else image.astype(np.float64) / 255.0
  total = np.zeros_like(linear)
  for ti in t:
    shift = vel * ti + acc * (ti * ti - 1.0 / 3.0)  # zero-mean acceleration.
    angle = ang_v * ti + 0.5 * ang_a * ti * ti
    total += _warp(linear, shift, angle, 1.0 + zoom_v * ti)
  if linear_light:
    return linear_to_srgb(total / num_frames)
  return np.clip(np.round(total / num_frames * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Noise and pairs.


def add_sensor_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    max_sigma: float = 0.002,
    min_peak: float = 1000.0,
) -> np.ndarray:
  """Mild Poisson (shot) + Gaussian (read) noise, in linear light.

  Mild means a few grey levels: the sRGB encoding multiplies linear noise by
  about 4 in dark tones, so read noise of 0.01 or a full-scale count of 300
  photons (the first defaults) gave 8-10 levels in shadows, far noisier than
  GOPRO's blurry frames, which average 7-13 exposures. With these defaults a
  dark tone (linear 0.02) gets at most about 5 levels, a mid tone 1-4.

  Args:
    image: uint8 sRGB.
    rng: the random generator.
    max_sigma: largest read-noise std (fraction of full scale).
    min_peak: smallest photon count at full scale (higher = less shot noise).

  Returns:
    uint8 sRGB image.
  """
  linear = srgb_to_linear(image)
  peak = min_peak * 10.0 ** rng.uniform(0.0, 1.5)
  sigma = rng.uniform(0.0, max_sigma)
  noisy = rng.poisson(linear * peak) / peak
  noisy = noisy + rng.normal(0.0, sigma, size=linear.shape)
  return linear_to_srgb(noisy)


def random_sensor_noise(image: np.ndarray, rng: np.random.Generator, *,
                        p_clean: float = 0.2) -> tuple[np.ndarray, float]:
  """Poisson-Gaussian noise of a random level, none with probability `p_clean`.

  The level spans clean to clearly noisy: a full-scale photon count
  log-uniform in [300, 30000] (shot noise) and a read-noise std uniform in
  [0, 0.006] of full scale, in linear light; in sRGB grey levels that is up to
  about 6 levels in mid tones and more in shadows.

  Returns:
    (uint8 image, read-noise std used; 0.0 when clean).
  """
  if rng.uniform() < p_clean:
    return image, 0.0
  linear = srgb_to_linear(image)
  peak = 300.0 * 10.0 ** rng.uniform(0.0, 2.0)
  sigma = rng.uniform(0.0, 0.006)
  noisy = rng.poisson(linear * peak) / peak + rng.normal(0.0, sigma, size=linear.shape)
  return linear_to_srgb(noisy), float(sigma)


def blur_family(region: np.ndarray, family: str, rng: np.random.Generator) -> np.ndarray:
  """Blurs a uint8 sRGB region with a random blur of `family` (`BLUR_FAMILIES`).

  All families work on sRGB values, as GOPRO's standard `blur` set and
  DeblurGAN's camera-shake pairs do (linear-light blur brightens textured
  regions by a photograph-dependent amount that a net then learns as a global
  darkening; README, recipe). Borders are reflect-padded.
  """
  if family == "frames":
    return frame_average_blur(region, rng, linear_light=False)
  return apply_psf(region, random_psf(family, rng), linear_light=False)


class _Shifter:
  """Moves one [H, W, C] float image by (dy, dx) px, bilinear, reflect borders:
  padded once, then four weighted slices per shift (~10x scipy.ndimage.shift)."""

  def __init__(self, image: np.ndarray, max_shift: float):
    self.h, self.w = image.shape[:2]
    self.pad = int(np.ceil(max_shift)) + 1
    mode = "reflect" if min(self.h, self.w) > self.pad else "symmetric"
    self.padded = np.pad(image, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)), mode=mode)

  def __call__(self, dy: float, dx: float) -> np.ndarray:
    # out[y, x] = image[y - dy, x - dx]
    sy, sx = self.pad - dy, self.pad - dx
    y0, x0 = int(np.floor(sy)), int(np.floor(sx))
    fy, fx = sy - y0, sx - x0
    p, h, w = self.padded, self.h, self.w
    top = p[y0:y0 + h, x0:x0 + w] * (1.0 - fx) + p[y0:y0 + h, x0 + 1:x0 + 1 + w] * fx
    if fy == 0.0:
      return top
    bottom = p[y0 + 1:y0 + 1 + h, x0:x0 + w] * (1.0 - fx) + p[y0 + 1:y0 + 1 + h, x0 + 1:x0 + 1 + w] * fx
    return top * (1.0 - fy) + bottom * fy


def _ellipse_matte(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """An anti-aliased ellipse (radii 12-35% of the shorter side, any angle, its
  centre anywhere in the middle 80%), float [H, W, 1] in [0, 1]."""
  side = min(h, w)
  ry, rx = rng.uniform(0.12, 0.35, size=2) * side
  cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
  a = rng.uniform(0.0, np.pi)
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
  v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
  # Signed distance (approximate, in px) to the boundary; a 1-px ramp.
  r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
  return np.clip((1.0 - r) * min(rx, ry) + 0.5, 0.0, 1.0)[..., None]


def _frame_offsets(rng: np.random.Generator, num_frames: int, extent: float) -> np.ndarray:
  """(dy, dx) of each frame along a camera-shake path of `extent` px, the
  middle frame at 0: a Boracchi-Foi walk sampled at `num_frames` times."""
  if extent <= 0:
    return np.zeros((num_frames, 2))
  traj = motion_trajectory(rng, num_steps=200, max_len=extent * rng.uniform(1.2, 3.0))
  traj = scale_to_extent(traj, extent)
  pts = traj[np.linspace(0, len(traj) - 1, num_frames).round().astype(int)]
  pts = pts - pts[num_frames // 2]
  return np.stack([pts.imag, pts.real], axis=-1)


def dynamic_scene(region: np.ndarray, rng: np.random.Generator, *,
                  num_frames: int | None = None,
                  camera_extent: Sequence[float] = (0.0, 40.0),
                  object_motion: Sequence[float] = (8.0, 60.0),
                  max_objects: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """A GOPRO-style dynamic scene: (sharp, blurry) uint8 sRGB of `region`'s shape.

  The scene is the region as a background plus 1-`max_objects` foreground
  objects (an ellipse cut from the region itself, flipped and moved, so the
  object's texture is the photograph's), each moving on a straight path of
  `object_motion` px over the exposure while the camera shakes along a random
  walk of extent `camera_extent` (px; both move the objects). `num_frames`
  (random odd 7-15) frames are rendered, back to front with their mattes, and
  averaged in linear light, as Nah et al. made GOPRO from a high-speed camera;
  the sharp image is the middle frame. The blur therefore differs between the
  background, each object and their edges (occlusion), which no single PSF
  gives.
  """
  if num_frames is None:
    num_frames = int(rng.choice([7, 9, 11, 13, 15]))
  h, w = region.shape[:2]
  lin = srgb_to_linear(region)
  cam = _frame_offsets(rng, num_frames, rng.uniform(*camera_extent))
  t = np.linspace(-0.5, 0.5, num_frames)[:, None]
  layers = []
  for _ in range(int(rng.integers(1, max_objects + 1))):
    texture = lin[::-1] if rng.uniform() < 0.5 else lin[:, ::-1]
    texture = np.roll(texture, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
    matte = _ellipse_matte(h, w, rng)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    path = t * rng.uniform(*object_motion) * np.array([np.sin(angle), np.cos(angle)])
    layers.append((texture * matte, matte, path))
  reach = np.abs(cam).max() + max(np.abs(path).max() for _, _, path in layers)
  background = _Shifter(lin, reach)
  movers = [(_Shifter(premult, reach), _Shifter(matte, reach), path)
            for premult, matte, path in layers]
  total = np.zeros_like(lin)
  sharp = None
  for i in range(num_frames):
    frame = background(*cam[i])
    for premult, matte, path in movers:
      dy, dx = cam[i] + path[i]
      frame = frame * (1.0 - matte(dy, dx)) + premult(dy, dx)
    total += frame
    if i == num_frames // 2:
      sharp = frame
  return linear_to_srgb(sharp), linear_to_srgb(total / num_frames)


def blur_pair(region: np.ndarray, family: str,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(sharp, blurry) of `region` under a random blur of any family of
  `ALL_FAMILIES`: `blur_family` for the others (the sharp image is the region)."""
  if family == "dynamic":
    return dynamic_scene(region, rng)
  return region, blur_family(region, family, rng)


def _reflect_crop(image: np.ndarray, top: int, left: int, h: int,
                  w: int) -> np.ndarray:
  """Crop that may extend past the borders (reflect-padded)."""
  ih, iw = image.shape[:2]
  pt, pl = max(0, -top), max(0, -left)
  pb, pr = max(0, top + h - ih), max(0, left + w - iw)
  if pt or pl or pb or pr:
    image = np.pad(image, ((pt, pb), (pl, pr), (0, 0)), mode="reflect")
    top, left = top + pt, left + pl
  return image[top:top + h, left:left + w]


def make_pair(
    photo: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = 256,
    kinds: Sequence[str] = BLUR_KINDS,
    noise: bool = True,
) -> dict[str, np.ndarray | str]:
  """Cuts a random `size` square from `photo` and blurs it.

  The blur is computed on a larger region (margin for the PSF / motion) and
  cropped afterwards, so image borders do not leak into the blur.

  Args:
    photo: uint8 HxWx3.
    rng: the random generator.
    size: side of the output squares; photos smaller than it are reflected.
    kinds: blur kinds to choose from uniformly ("shake", "frames").
    noise: add mild sensor noise to the blurry image.

  Returns:
    {'blur': uint8 [size, size, 3], 'sharp': uint8 [size, size, 3],
     'kind': str}.
  """
  for k in kinds:
    if k not in BLUR_KINDS:
      raise ValueError(f"Unknown blur kind {k!r}; choose from {BLUR_KINDS}.")
  kind = str(kinds[int(rng.integers(len(kinds)))])
  margin = 32
  h, w = photo.shape[:2]
  top = int(rng.integers(0, max(h - size, 0) + 1))
  left = int(rng.integers(0, max(w - size, 0) + 1))
  region = _reflect_crop(photo, top - margin, left - margin, size + 2 * margin,
                         size + 2 * margin)
  if kind == "shake":
    # sRGB convolution, as DeblurGAN's camera-shake pairs; the "frames" kind
    # stays in linear light. Half the pairs then carry no texture-dependent
    # brightening, which a net trained on ~11 photographs otherwise learns as
    # a global darkening (README, quickstart recipe).
    blurred = apply_psf(region, camera_shake_psf(rng), linear_light=False)
  else:
    blurred = frame_average_blur(region, rng)
  inner = (slice(margin, margin + size), slice(margin, margin + size))
  blur = blurred[inner]
  if noise:
    blur = add_sensor_noise(blur, rng)
  return {"blur": blur, "sharp": np.ascontiguousarray(region[inner]),
          "kind": kind}


def generate_pairs(
    photos: Mapping[str, np.ndarray],
    *,
    pairs_per_image: int,
    seed: int,
    size: int = 256,
    kinds: Sequence[str] = BLUR_KINDS,
    noise: bool = True,
):
  """Yields (key, example) for every photo and pair index, deterministically.

  Each (photo, index) has its own generator seeded from (seed, photo name,
  index), so a pair does not depend on the other photos or on order.
  """
  for name, photo in photos.items():
    name_key = int.from_bytes(name.encode()[:32].ljust(32, b"\0"), "little")
    for i in range(pairs_per_image):
      rng = np.random.default_rng([seed, name_key % (2**63), i])
      pair = make_pair(photo, rng, size=size, kinds=kinds, noise=noise)
      key = f"{name}/{i:04d}"
      yield key, {"blur": pair["blur"], "sharp": pair["sharp"],
                  "name": f"{key}_{pair['kind']}.png", "sequence": name}
