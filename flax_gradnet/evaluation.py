"""The one evaluation core: deblur examples with a generator and measure every image.

`measure(generator, params, examples)` is what every evaluation runs: the
periodic held-out evaluation of training (`train.evaluate`), `python -m
flax_gradnet.evaluate` (`evaluate.evaluate_generator`, which writes the reports:
CSV, summary.json, grids, outputs, clu events) and the demo's held-out
comparison (`demo.evaluate_heldout`). It writes nothing; it returns one row per
image and the image grids chosen for the report.

The protocol (`metrics.protocol_string`): each output is deblurred whole or
tiled (`inference.deblur_image`) and quantized to uint8 as a saved PNG would
hold it (`metrics.quantize`); PSNR and SSIM (`metrics.psnr`/`ssim`, SSIM equal to
scikit-image's) are measured on 0-255 for the deblurred output and, as the
baseline, for the blurry input, both against the sharp target. The metrics are
jit-compiled once per (crop_border, y_channel) protocol (`metric_fns`). A
generator of another channel count than the examples' (a grayscale model,
`model.channels=1`, on RGB data) gets them converted (`image_io.to_channels`:
blurry input, target and Köhler frames alike), and is measured on its own
channels.

Rows are plain dicts: 'name', 'family' (examples with blur families only),
'psnr', 'ssim', 'blurry_psnr', 'blurry_ssim' (examples with a 'sharp' target
only), and for the Köhler best-frame protocol 'gt_frame', 'blurry_gt_frame'.
`family_means` and `group_means` turn them into means.

Only the standard library and numpy are imported here: `evaluate --help` stays
instant. JAX comes in with the first measurement.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Iterable

import numpy as np

METRIC_KEYS = ("psnr", "ssim", "blurry_psnr", "blurry_ssim")
FAMILY_ALL = "all"  # the row of all images in `family_means`


@functools.lru_cache(maxsize=None)
def metric_fns(crop_border: int = 0, y_channel: bool = False) -> tuple[Callable, Callable]:
  """jit-compiled (psnr, ssim) of uint8 images [H, W, C] on 0-255, for one protocol.

  Cached: every caller measuring with the same protocol shares one compiled pair.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax_gradnet import metrics  # pylint: disable=g-import-not-at-top
  kw = dict(data_range=255.0, crop_border=crop_border, y_channel=y_channel)
  return (jax.jit(functools.partial(metrics.psnr, **kw)),
          jax.jit(functools.partial(metrics.ssim, **kw)))


@dataclasses.dataclass
class Measured:
  """What `measure` returns.

  Attributes:
    rows: one dict per image, in data order (see the module docstring).
    grids: (name, image) of the chosen grids, in data order: blurry | deblurred
      | sharp side by side (blurry | deblurred without targets), uint8.
    seconds: the time each image took to deblur (the first includes
      compilation, as does each new image size).
    paired: whether the examples have 'sharp' targets (None: no examples).
  """

  rows: list[dict[str, Any]]
  grids: list[tuple[str, np.ndarray]]
  seconds: list[float]
  paired: bool | None


def measure(generator: Any, params: Any, examples: Iterable[dict], *, crop_border: int = 0,
            y_channel: bool = False, num_images: int = 0, num_grids: int = 0,
            family_grids: bool = True, tile: int | None = None, tile_overlap: int = 32,
            self_ensemble: bool | str = False, local_stats: int = 0, low_freq_sigma: float = 0.0,
            kohler_frames_dir: str | None = None,
            on_image: Callable[[dict, np.ndarray, dict], None] | None = None) -> Measured:
  """Deblurs every example with `generator` and measures it against its target.

  Args:
    generator, params: a generator module (anything with `.apply`) and its parameters.
    examples: an iterable of {'blur': uint8 [H, W, C], 'name', 'sharp'?, 'family'?};
      either every example has 'sharp' (and 'family') or none has. RGB
      examples of a grayscale generator are converted (module docstring).
    crop_border, y_channel: the metric protocol (`metrics.psnr`/`ssim`).
    num_images: the first N examples only (0 = all).
    num_grids: how many grids to keep (the first images; none when 0).
    family_grids: with blur families, also keep the first image of every family
      (so there can be more than `num_grids`; see `choose_grids`).
    tile, tile_overlap: tiled inference (`inference.deblur_image`); None = whole image.
    self_ensemble: "off" (or False), "mean" (or True: the x8 geometric
      self-ensemble, `inference.self_ensemble`) or "shrink"
      (`inference.self_ensemble_shrunk`).
    local_stats: test-time local statistics over boxes of this side (0 = off).
    low_freq_sigma: keep the input's frequencies below a Gaussian of this
      standard deviation (`inference.keep_input_low_frequencies`; 0 = off).
    kohler_frames_dir: the Köhler folder; when given, each image is measured
      against its best-PSNR GroundTruth frame (`builders.kohler_ground_truth_frames`).
    on_image: called as `on_image(example, deblurred_uint8, row)` after each
      image (writing outputs, progress bars); its return value is ignored.

  Returns:
    `Measured`: the rows, the chosen grids, the deblurring times. No examples
    give no rows (with several processes a shard can be empty: the caller decides).

  Raises:
    ValueError: examples disagree on having 'sharp' or 'family'.
    FileNotFoundError: Köhler frames missing under `kohler_frames_dir`.
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  fn = inference.make_deblur_fn(generator, params, ensemble=self_ensemble, local_stats=local_stats)
  metrics = metric_fns(int(crop_border), bool(y_channel))
  frames = _KohlerFrames(kohler_frames_dir, fn.channels) if kohler_frames_dir else None
  rows: list[dict[str, Any]] = []
  candidates: list[tuple[str, Any, np.ndarray]] = []  # see choose_grids
  seconds: list[float] = []
  kind = None  # (paired, has_family) of the first example
  for i, ex in enumerate(examples):
    if num_images and i >= num_images:
      break
    kind = _check_kind(ex, kind)
    ex = _with_channels(ex, fn.channels)
    t0 = time.perf_counter()
    out = inference.deblur_image(fn, ex["blur"], tile=tile, tile_overlap=tile_overlap,
                                 low_freq_sigma=low_freq_sigma)
    seconds.append(time.perf_counter() - t0)
    row = measure_image(out, ex, metrics, frames)
    rows.append(row)
    if on_image is not None:
      on_image(ex, out, row)
    family = ex.get("family")
    if num_grids and (len(candidates) < num_grids or (
        family_grids and kind[1] and all(f != family for _, f, _ in candidates))):
      panels = [ex["blur"], out] + ([ex["sharp"]] if kind[0] else [])
      candidates.append((ex["name"], family, np.concatenate(panels, axis=1)))
  grids = (choose_grids(candidates, num_grids) if family_grids
           else [(name, grid) for name, _, grid in candidates[:num_grids]])
  return Measured(rows=rows, grids=grids, seconds=seconds,
                  paired=None if kind is None else kind[0])


def _with_channels(ex: dict, channels: int) -> dict:
  """`ex` with its images as `channels` channels (`image_io.to_channels`)."""
  images = {k: ex[k] for k in ("blur", "sharp") if k in ex}
  if all(np.ndim(v) == 3 and np.shape(v)[-1] == channels for v in images.values()):
    return ex
  from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
  return {**ex, **{k: image_io.to_channels(v, channels) for k, v in images.items()}}


def _check_kind(ex: dict, kind: tuple[bool, bool] | None) -> tuple[bool, bool]:
  """(paired, has_family) of `ex`; raises if it differs from the earlier examples' `kind`."""
  mine = ("sharp" in ex, "family" in ex)
  if kind is not None and mine[0] != kind[0]:
    raise ValueError(f"{ex['name']!r}: some examples have a 'sharp' target and others not")
  if kind is not None and mine[1] != kind[1]:
    raise ValueError(f"{ex['name']!r}: some examples have a 'family' and others not")
  return mine


def measure_image(out: np.ndarray, ex: dict, metrics: tuple[Callable, Callable],
                  frames: "_KohlerFrames | None" = None) -> dict[str, Any]:
  """One image's row: its name (and family), and with a target PSNR/SSIM of the
  output `out` and of the blurry input.

  Args:
    out: the deblurred uint8 image.
    ex: its example ({'blur', 'name', 'sharp'?, 'family'?}).
    metrics: (psnr, ssim) of `metric_fns`.
    frames: Köhler best-frame protocol: measured against the GroundTruth frame
      with the highest PSNR (SSIM at that frame), which the row names.
  """
  row: dict[str, Any] = {"name": ex["name"]}
  if "family" in ex:
    row["family"] = ex["family"]
  if "sharp" not in ex:
    return row
  blur, sharp = ex["blur"], ex["sharp"]
  psnr, ssim = metrics
  if frames is not None:
    paths = frames.lookup(ex["name"])
    row["psnr"], row["ssim"], row["gt_frame"] = _best_frame(out, paths, psnr, ssim,
                                                            frames.channels)
    row["blurry_psnr"], row["blurry_ssim"], row["blurry_gt_frame"] = _best_frame(
        blur, paths, psnr, ssim, frames.channels)
  else:
    row["psnr"], row["ssim"] = float(psnr(out, sharp)), float(ssim(out, sharp))
    row["blurry_psnr"] = float(psnr(blur, sharp))
    row["blurry_ssim"] = float(ssim(blur, sharp))
  return row


class _KohlerFrames:
  """The GroundTruth frames of a Köhler folder, looked up by a blurry image's name."""

  def __init__(self, root: str, channels: int = 3):
    # The builder's module: its file-name patterns are the one definition of the layout.
    from flax_gradnet.data import builders  # pylint: disable=g-import-not-at-top
    self._root = root
    self.channels = channels  # the frames are read as this many channels
    self._blur_re = builders._KOHLER_BLUR_RE  # pylint: disable=protected-access
    self._frames = builders.kohler_ground_truth_frames(root)

  def lookup(self, name: str) -> dict[int, str]:
    """{frame: path} of the shake whose Blurry{i}_{j}.png is `name` (any folder)."""
    m = self._blur_re.match(os.path.basename(name))
    key = (int(m[1]), int(m[2])) if m else None
    if key not in self._frames:
      raise FileNotFoundError(f"no GroundTruth frames for {name!r} under {self._root}")
    return self._frames[key]


def _best_frame(image: np.ndarray, frame_paths: dict[int, str], psnr_fn, ssim_fn,
                channels: int = 3):
  """(psnr, ssim, frame) against the frame (read as `channels`) with the highest PSNR."""
  from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
  best = (-math.inf, None, None)
  for k in sorted(frame_paths):
    target = image_io.read_image(frame_paths[k], channels)
    if target.shape != image.shape:
      raise ValueError(f"{frame_paths[k]} is {target.shape}, the image is {image.shape}")
    p = float(psnr_fn(image, target))
    if p > best[0]:
      best = (p, target, k)
  p, target, k = best
  return p, float(ssim_fn(image, target)), k


def choose_grids(candidates: list[tuple[str, Any, np.ndarray]],
                 num_grids: int) -> list[tuple[str, np.ndarray]]:
  """(name, family, grid) candidates in data order -> the (name, grid)s to keep.

  Every family's first candidate (family None = no families: just the first),
  then the earliest others until there are `num_grids`; data order kept.
  """
  first: dict[Any, int] = {}
  for j, (_, family, _) in enumerate(candidates):
    first.setdefault(family, j)
  keep = set(first.values()) if num_grids else set()
  for j in range(len(candidates)):
    if len(keep) >= num_grids:
      break
    keep.add(j)
  return [(name, grid) for j, (name, _, grid) in enumerate(candidates) if j in keep]


# ----------------------------------------------------------------------------
# Means of the rows.


def metric_means(rows: list[dict[str, Any]]) -> dict[str, float]:
  """Paired rows -> the mean of each of `METRIC_KEYS` over them."""
  return {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}


def group_means(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Paired rows -> {num_images, psnr, ssim, blurry_psnr, blurry_ssim, psnr_gain,
  worst_psnr_gain, worst_image}.

  Means over the rows; `psnr_gain` = mean PSNR - mean blurry PSNR;
  `worst_psnr_gain` = the smallest per-image `psnr - blurry_psnr` (negative:
  that image got worse than its blurry input), of the image `worst_image`
  (its 'name').
  """
  m = metric_means(rows)
  worst = min(rows, key=lambda r: r["psnr"] - r["blurry_psnr"])
  return {"num_images": len(rows), **m, "psnr_gain": m["psnr"] - m["blurry_psnr"],
          "worst_psnr_gain": float(worst["psnr"] - worst["blurry_psnr"]),
          "worst_image": worst.get("name")}


def family_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Paired rows with a 'family' -> {family: `group_means` of its rows}.

  Families in first-seen order, then `FAMILY_ALL` over every row.
  """
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault(str(r["family"]), []).append(r)
  groups[FAMILY_ALL] = list(rows)
  return {family: group_means(rs) for family, rs in groups.items()}
