"""Procedural sharp images with natural-image statistics: dead leaves.

The dead-leaves model (Matheron 1968; Lee, Mumford & Huang, "Occlusion models
for natural images", IJCV 2001) stacks random opaque shapes whose sizes follow
a scale-invariant law p(r) ~ r^-3 between `r_min` and `r_max`. Its images have
the two statistics deblurring cares about: a power-law spectrum (edges at every
scale) and sharp occlusion boundaries in every orientation. Restoration nets
trained on such images come close to ones trained on photographs (Achddou,
Gousseau & Ladjal, "Synthetic images as a regularity prior for image
restoration neural networks", SSVM 2021), and they never run out.

Here the leaves are disks and rotated rectangles (straight edges, corners),
with smooth fills (a flat colour plus a gentle linear gradient) or textured
fills (a sinusoidal grating or smoothed noise), rendered front to back at twice
the resolution and box-filtered down, so edges are anti-aliased like a
photograph's rather than staircased. Everything is drawn from one
`numpy.random.Generator`: the same generator state gives the same image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def sample_radii(rng: np.random.Generator, n: int, r_min: float, r_max: float) -> np.ndarray:
  """n radii from p(r) ~ r^-3 on [r_min, r_max] (scale invariance), by inversion."""
  u = rng.uniform(size=n)
  a, b = r_min ** -2, r_max ** -2
  return (a - u * (a - b)) ** -0.5


def strand_texture(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Fur- or hair-like texture at points (ys, xs) (output pixels): zero-mean values
  of many thin parallel strands, each cut into segments of random length.

  Strands of width U(0.6, 1.8) px run at one random angle; along each, segments of
  mean length U(4, 16) px start at a random offset and take a random level. The
  result is fine texture that is sharp across the strands and smooth along them,
  as fur, hair, grass and fabric are: what dead leaves' gratings and isotropic
  noise lack.
  """
  theta = rng.uniform(0.0, np.pi)
  width, length = rng.uniform(0.6, 1.8), rng.uniform(4.0, 16.0)
  offsets, levels = rng.uniform(0.0, 1.0, 4096), rng.standard_normal(4096)
  u = np.cos(theta) * xs + np.sin(theta) * ys
  v = -np.sin(theta) * xs + np.cos(theta) * ys
  strand = np.floor(v / width).astype(np.int64)
  segment = np.floor(u / length + offsets[strand % 4096] * 4.0).astype(np.int64)
  return levels[(strand * 7919 + segment * 104729) % 4096]


def _fill(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, r: float,
          strands: float = 0.0) -> np.ndarray:
  """Colour of a leaf on its pixels (ys, xs relative to its centre): [n, 3] in [0, 1].

  With probability `strands` (drawn only when it is above 0, so that 0 leaves
  the random stream as it was) the fill is `strand_texture`."""
  base = rng.uniform(0.0, 1.0, size=3)
  # Natural colours are correlated across channels: pull towards the grey level.
  base = 0.5 * base + 0.5 * base.mean() * rng.uniform(0.7, 1.0)
  if strands > 0.0 and rng.uniform() < strands:
    amp = rng.uniform(0.04, 0.2)
    return base[None] + amp * strand_texture(rng, ys, xs)[:, None] * rng.uniform(0.6, 1.0, 3)[None]
  kind = rng.uniform()
  if kind < 0.5:  # smooth: flat + a gentle gradient across the leaf
    g = rng.normal(0.0, 0.15, size=2) / max(r, 1.0)
    shade = (g[0] * ys + g[1] * xs)[:, None]
    return base[None] + shade
  if kind < 0.75:  # a grating of random period and orientation
    period = rng.uniform(3.0, 24.0)
    theta = rng.uniform(0.0, np.pi)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    amp = rng.uniform(0.05, 0.25)
    wave = np.sin(2 * np.pi * (np.cos(theta) * xs + np.sin(theta) * ys) / period + phase)
    return base[None] + amp * wave[:, None] * rng.uniform(0.5, 1.0, size=3)[None]
  # smoothed white noise (a fine random texture)
  amp = rng.uniform(0.03, 0.15)
  return base[None] + amp * rng.standard_normal((ys.size, 1))


def dead_leaves(
    rng: np.random.Generator,
    size: int,
    *,
    r_min: float = 1.5,
    r_max: float | None = None,
    max_leaves: int = 4000,
    supersample: int = 2,
    strands: float = 0.0,
) -> np.ndarray:
  """A dead-leaves image, uint8 [size, size, 3].

  Leaves are drawn front to back: each paints only the pixels no earlier leaf
  covers, so the first leaf is on top (the exact dead-leaves occlusion order),
  and drawing stops once every pixel is covered (or after `max_leaves`, when
  the rest is filled by one last, large background leaf).

  Args:
    rng: the random generator.
    size: output side in pixels.
    r_min: smallest leaf radius (output pixels).
    r_max: largest leaf radius; `size / 2` if None.
    max_leaves: cap on the number of leaves.
    supersample: render at this factor and box-filter down (anti-aliasing).
    strands: share of leaves filled with `strand_texture` (0: none, and the
      image is the one the same generator state always gave).

  Returns:
    uint8 [size, size, 3].
  """
  if size < 2:
    raise ValueError(f"size must be >= 2, got {size}")
  s = supersample
  n = size * s
  r_max = size / 2.0 if r_max is None else r_max
  image = np.zeros((n, n, 3), np.float64)
  covered = np.zeros((n, n), bool)
  radii = sample_radii(rng, max_leaves, r_min, r_max) * s
  remaining = n * n
  for r in radii:
    cy, cx = rng.uniform(-r, n + r, size=2)
    y0, y1 = max(0, int(cy - r)), min(n, int(np.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(cx - r)), min(n, int(np.ceil(cx + r)) + 1)
    if y0 >= y1 or x0 >= x1:
      continue
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    if rng.uniform() < 0.6:
      inside = dy * dy + dx * dx <= r * r
    else:  # a rotated rectangle of aspect ratio in [0.3, 1]
      theta = rng.uniform(0.0, np.pi)
      c, si = np.cos(theta), np.sin(theta)
      u, v = c * dx + si * dy, -si * dx + c * dy
      inside = (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.3, 1.0))
    mask = inside & ~covered[y0:y1, x0:x1]
    if not mask.any():
      continue
    ys, xs = dy[mask] / s, dx[mask] / s
    image[y0:y1, x0:x1][mask] = _fill(rng, ys, xs, r / s, strands)
    covered[y0:y1, x0:x1] |= mask
    remaining -= int(mask.sum())
    if remaining <= 0:
      break
  if remaining > 0:
    ys, xs = np.nonzero(~covered)
    image[ys, xs] = _fill(rng, ys / s - n / (2 * s), xs / s - n / (2 * s), size, strands)
  if s > 1:
    image = image.reshape(size, s, size, s, 3).mean(axis=(1, 3))
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def edge_density(image: np.ndarray, threshold: float = 10.0) -> float:
  """Fraction of pixels whose grey-level gradient magnitude exceeds `threshold`."""
  g = np.asarray(image, np.float64).mean(-1)
  gy, gx = ndimage.sobel(g, 0) / 8.0, ndimage.sobel(g, 1) / 8.0
  return float(np.mean(np.hypot(gx, gy) > threshold))


def blob_mask(rng: np.random.Generator, size: int, *, coverage: float | None = None,
              cell: int = 16) -> np.ndarray:
  """A soft-edged random foreground mask in [0, 1]: thresholded smooth noise.

  Args:
    rng: the random generator.
    size: side of the mask.
    coverage: share of pixels in the foreground; U(0.3, 0.7) if None.
    cell: the blobs' typical size in pixels.

  Returns:
    float64 [size, size]; edges are anti-aliased over about one pixel.
  """
  coverage = rng.uniform(0.3, 0.7) if coverage is None else coverage
  coarse = rng.standard_normal((size // cell + 3, size // cell + 3))
  field = ndimage.zoom(coarse, cell, order=3)[cell:cell + size, cell:cell + size]
  hard = (field > np.quantile(field, 1.0 - coverage)).astype(np.float64)
  return np.clip(ndimage.gaussian_filter(hard, 0.7), 0.0, 1.0)


def dead_leaves_scene(rng: np.random.Generator, size: int, *, p_soft_background: float = 0.5,
                      r_min: float = 4.0, strands: float = 0.0) -> np.ndarray:
  """A dead-leaves image, sometimes with a depth of field: sharp leaves in front
  of an out-of-focus dead-leaves background.

  Photographs are seldom sharp everywhere: a sharp subject stands before a soft
  background. A net trained only on images that are sharp everywhere learns to
  sharpen everything, and on such photographs it carves halos into the
  background. With probability `p_soft_background` the scene is a sharp
  dead-leaves foreground (a blob-shaped region, `blob_mask`) over a second
  dead-leaves image blurred by a Gaussian of sigma U(1.5, 10) px (bokeh); the soft
  background is part of the *sharp target*, so the net learns to remove only
  the blur it is given. `strands`: as for `dead_leaves` (the foreground's leaves).

  Returns:
    uint8 [size, size, 3].
  """
  front = dead_leaves(rng, size, r_min=r_min, strands=strands)
  if rng.uniform() >= p_soft_background:
    return front
  half = max(2, size // 2)  # the background is soft: render it at half size
  back = dead_leaves(rng, half, r_min=max(1.5, r_min / 2), supersample=1).astype(np.float64)
  back = ndimage.zoom(back, (size / half, size / half, 1), order=1)[:size, :size]
  sigma = rng.uniform(1.5, 10.0)
  back = np.stack([ndimage.gaussian_filter(back[..., c], sigma, mode="reflect")
                   for c in range(3)], axis=-1)
  mask = blob_mask(rng, size)[..., None]
  scene = mask * front.astype(np.float64) + (1.0 - mask) * back
  return np.round(np.clip(scene, 0, 255)).astype(np.uint8)
