"""The evaluation library: deblur examples with a generator, measure every image,
write the reports.

Three layers, each calling the one below:

* `measure(generator, params, examples)` deblurs and measures: one row per
  image and the image grids chosen for the report. Every evaluation runs it.
  It writes nothing.
* `evaluate_examples(model, params, options, examples)` runs `measure` under
  one `inference.Options` and adds the means (`metric_means`; `family_means`
  for data with blur families) and the protocol line (`protocol_line`): a
  `Report`. Training's periodic held-out evaluation (`evaluate_source`) and the
  demo's held-out comparison (`demo.evaluate_heldout`) call it. It writes
  nothing either.
* `evaluate_generator` (a generator and its parameters) and `evaluate_workdir`
  (the generator of a training workdir, under its recorded options) run
  `evaluate_examples` over a data set and write the report files into an
  output folder: per_image.csv, summary.json, grids/, deblurred/, clu events
  (`python -m flax_gradnet.evaluate --help` describes them). The CLI
  (`flax_gradnet/evaluate.py`) and experiments/paper_tables.py call them;
  `format_result` gives the lines the CLI prints, `dataset_protocol` the
  data set's part of the protocol.

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

import csv
import dataclasses
import functools
import io
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterable

import numpy as np

from flax_gradnet.atomic import atomic_write_text

METRIC_KEYS = ("psnr", "ssim", "blurry_psnr", "blurry_ssim")
FAMILY_ALL = "all"  # the row of all images in `family_means` (and summary.json's `by_family`)

# The report files in an output folder (`evaluate_generator`).
CSV_FIELDS = ("name",) + METRIC_KEYS
CSV_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"
GRID_DIR = "grids"
OUTPUT_DIR = "deblurred"


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
            scale_gate: float = 0.0,
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
    scale_gate: > 0: the coarse band from a half-resolution pass where it
      corrects this many times more (`inference.gate_half_scale`); 0 = off.
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
                                 low_freq_sigma=low_freq_sigma, scale_gate=scale_gate)
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


# ----------------------------------------------------------------------------
# Evaluating under inference options.


def protocol_line(options: Any = None, *, y_channel: bool = False, crop_border: int = 0,
                  channels: int = 3, **overrides: Any) -> str:
  """`metrics.protocol_string` plus the inference options in words
  (`inference.Options.describe`).

  Args:
    options: an `inference.Options` (None: the paper's protocol).
    y_channel, crop_border, channels: the metric protocol.
    **overrides: option fields over `options` (the loose arguments this
      function took before `Options`: self_ensemble, local_stats, low_freq_sigma).
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  from flax_gradnet import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  options = (inference.PAPER_PROTOCOL if options is None else options).overridden(**overrides)
  return (f"{metrics_lib.protocol_string(y_channel, crop_border, channels=channels)}; "
          f"{options.describe()}")


@dataclasses.dataclass
class Report:
  """What `evaluate_examples` returns.

  Attributes:
    rows: one dict per image, in data order (`measure`'s rows:
      'name', 'family'?, 'psnr', 'ssim', 'blurry_psnr', 'blurry_ssim', ...).
    means: `metric_means` of the rows ({} without targets).
    by_family: `family_means` of the rows ({} without targets or blur families).
    grids: (name, uint8 image) of the chosen blurry | deblurred | sharp grids.
    seconds: the time each image took to deblur (the first includes compilation).
    paired: whether the examples have targets (None: no examples).
    options: the `inference.Options` the images were deblurred with (whole
      images or `options.tile`: `max_memory` is not applied, and is None here).
    protocol: `protocol_line` of the metric protocol and `options`.
  """

  rows: list[dict[str, Any]]
  means: dict[str, float]
  by_family: dict[str, dict[str, Any]]
  grids: list[tuple[str, np.ndarray]]
  seconds: list[float]
  paired: bool | None
  options: Any
  protocol: str


def evaluate_examples(model: Any, params: Any, options: Any, examples: Iterable[dict], *,
                      crop_border: int = 0, y_channel: bool = False, num_images: int = 0,
                      num_grids: int = 0, family_grids: bool = True,
                      kohler_frames_dir: str | None = None,
                      on_image: Callable[[dict, np.ndarray, dict], None] | None = None) -> Report:
  """Deblurs `examples` with a generator under `options` and measures every image.

  The one evaluation core with inference options: `python -m
  flax_gradnet.evaluate` (`evaluate_generator`, which adds the report files),
  the demo's held-out comparison, and training's periodic evaluation (with
  `inference.Options.from_config(config)`) call it. It writes nothing.

  Args:
    model, params: a generator module and its parameters.
    options: an `inference.Options`: the model's recorded options
      (`inference.restore(...)[2].options`, `Options.from_config(config)`) or
      any other; its `local_stats` must be resolved (not -1:
      `inference.resolve_options`). Whole images are deblurred, or tiles of
      `options.tile`; the budget `options.max_memory` is not applied, so the
      numbers do not depend on the machine.
    examples: an iterable of {'blur': uint8 [H, W, C], 'name', 'sharp'?,
      'family'?} (`measure`).
    crop_border, y_channel: the metric protocol (`metrics.psnr`/`ssim`).
    num_images: the first N examples only (0 = all).
    num_grids: how many grids to keep (`measure`).
    family_grids: with blur families, also keep each family's first image.
    kohler_frames_dir: the Köhler folder: each image measured against its
      best-PSNR GroundTruth frame.
    on_image: called as `on_image(example, deblurred_uint8, row)` after each image.

  Returns:
    A `Report`: the rows and their means (with several processes, gather the
    rows and take the means of all of them), grids, times, the options and
    the protocol line.

  Raises:
    ValueError: `local_stats=-1`, or examples that disagree on having
      'sharp' or 'family' (`measure`).
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  if not isinstance(options, inference.Options):
    raise TypeError(f"options must be an inference.Options, got {type(options).__name__}")
  if options.local_stats == inference.LOCAL_STATS_CROP:
    raise ValueError("local_stats=-1 (the training crop size) must be resolved first: "
                     "inference.resolve_options(restored) puts in the model's crop_size")
  options = dataclasses.replace(options, max_memory=None)  # whole images (or its tiles)
  measured = measure(
      model, params, examples, crop_border=crop_border, y_channel=y_channel,
      num_images=num_images, num_grids=num_grids, family_grids=family_grids,
      tile=options.tile, tile_overlap=options.tile_overlap,
      self_ensemble=options.self_ensemble, local_stats=options.local_stats,
      low_freq_sigma=options.low_freq_sigma, scale_gate=options.scale_gate,
      kohler_frames_dir=kohler_frames_dir,
      on_image=on_image)
  rows, paired = measured.rows, measured.paired
  means = metric_means(rows) if paired and rows else {}
  by_family = family_means(rows) if paired and rows and "family" in rows[0] else {}
  protocol = protocol_line(options, y_channel=y_channel, crop_border=crop_border,
                           channels=int(getattr(model, "channels", 3)))
  return Report(rows=rows, means=means, by_family=by_family, grids=measured.grids,
                seconds=measured.seconds, paired=paired, options=options, protocol=protocol)


# ----------------------------------------------------------------------------
# The dataset's part of the protocol.


def dataset_protocol(dataset: str, *, kohler_frame: str = "middle",
                     kohler_best_frame: bool = False) -> str:
  """One line saying what the targets of `dataset` are (printed beside every mean)."""
  if dataset in ("gopro", "gopro/blur"):
    return ("GOPRO_Large config 'blur' (blurry frames averaged in sRGB; the set most "
            "papers report, Table 1's 'GOPRO')")
  if dataset == "gopro/blur_gamma":
    return ("GOPRO_Large config 'blur_gamma' (frames averaged in linear light, gamma 2.2; "
            "NOT the set most papers report)")
  if dataset == "kohler":
    if kohler_best_frame:
      return ("Köhler: target = the best-matching GroundTruth frame of each shake (highest "
              "PSNR to the image measured; SSIM at that frame); no shift/gain alignment, "
              "unlike Köhler et al.'s own evaluation")
    return (f"Köhler: target = GroundTruth frame '{kohler_frame}' of each shake only (the "
            "literature takes the best-matching frame: see --kohler_best_frame)")
  if dataset == "hide":
    return ("HIDE: the published test split is test-close-ups/ + test-long-shot/ (2025 pairs) "
            "against GT/, full-size RGB, no alignment or crop, as GOPRO; the usual protocol "
            "(e.g. MPRNet, Restormer) tests models trained on GOPRO only and measures with "
            "MATLAB's psnr/ssim, whose SSIM is computed differently (may differ slightly)")
  if dataset in ("realblur_j", "realblur_r"):
    v = dataset[-1].upper()
    return (f"RealBlur-{v}: pairs of the authors' RealBlur_{v}_<split>_list.txt (test: 980 "
            "pairs); WITHOUT the authors' alignment: their evaluation_RealBlur_ecc.py first "
            "aligns each deblurred image to its ground truth (intensity scaling + ECC "
            "homography) and measures only the valid region, so these numbers are NOT "
            "comparable with published RealBlur tables")
  if dataset == "blur_only":
    return "blur-only photographs: no targets, no metrics"
  if dataset == "synthetic_online":
    from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
    return (f"synthetic_online held-out set v{online.HELDOUT_VERSION}: photographs never used in "
            f"training ({', '.join(online.HELDOUT_PHOTOS)}), each blurred whole by every "
            f"blur family, sensor noise, seed {online.HELDOUT_SEED}")
  if dataset == "synthetic_unseen":
    from flax_gradnet.data import unseen  # pylint: disable=g-import-not-at-top
    return (f"synthetic_unseen held-out set v{unseen.UNSEEN_VERSION}: the held-out photographs "
            f"blurred by kinds no training record is made with ({', '.join(unseen.UNSEEN_KINDS)}), "
            f"training's sensor noise, seed {unseen.UNSEEN_SEED}")
  if dataset == "synthetic_strong":
    from flax_gradnet.data import strong  # pylint: disable=g-import-not-at-top
    return (f"synthetic_strong held-out set v{strong.STRONG_VERSION}: the held-out photographs "
            f"under strong blur ({', '.join(strong.STRONG_KINDS)}; extents "
            f"{strong.EXTENT[0]:.0f}-{strong.EXTENT[1]:.0f} px), {strong.DRAWS} draws each, "
            f"training's sensor noise, seed {strong.STRONG_SEED}")
  return f"dataset '{dataset}'" if dataset else "dataset given as a source"


# ----------------------------------------------------------------------------
# The report files (`evaluate_generator`, `evaluate_workdir`).


def _safe_relpath(name: str) -> str:
  """A source's example name -> a relative path inside an output folder (never above it)."""
  parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".", "..")]
  if not parts:
    parts = ["image"]
  stem = os.path.splitext(parts[-1])[0] or "image"
  return os.path.join(*parts[:-1], stem + ".png")


def _flat_name(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(name)[0]).strip("_") or "image"


def _examples(source: Iterable[dict] | Any, num_images: int) -> tuple[Iterable[dict], int | None]:
  """(the examples of `source`, how many will be evaluated; None when unknown)."""
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top
  examples = pipeline.eval_iterator(source) if hasattr(source, "__getitem__") else iter(source)
  try:
    total = len(source)
  except TypeError:
    total = None
  if num_images and total is not None:
    total = min(total, num_images)
  return examples, total


class _OutputWriter:
  """`measure`'s per-image hook: writes the deblurred images
  (`save_outputs`, or always without targets) and advances the progress bar."""

  def __init__(self, output_dir: str, save_outputs: bool, total: int | None, progress: bool):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    self.output_dir, self.save_outputs = output_dir, save_outputs
    self.written: list[str] = []
    self._psnrs: list[float] = []
    self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress,
                    dynamic_ncols=True)

  def __call__(self, ex: dict, out: np.ndarray, row: dict[str, Any]) -> None:
    from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
    if self.save_outputs or "sharp" not in ex:
      path = os.path.join(self.output_dir, OUTPUT_DIR, _safe_relpath(ex["name"]))
      image_io.write_image(path, out, overwrite=True)
      self.written.append(os.path.relpath(path, self.output_dir))
    if "psnr" in row:
      self._psnrs.append(row["psnr"])
      self.bar.set_postfix_str(f"PSNR {np.mean(self._psnrs):.2f}", refresh=False)
    self.bar.update(1)


def _write_csv(output_dir: str, rows: list[dict[str, Any]]) -> None:
  """per_image.csv: CSV_FIELDS, then the optional columns the rows have."""
  fields = list(CSV_FIELDS) + [k for k in ("gt_frame", "blurry_gt_frame", "family")
                               if k in rows[0]]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
  w.writeheader()
  for r in rows:  # repr: the full float, so the CSV's mean is the printed mean
    w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
  atomic_write_text(os.path.join(output_dir, CSV_FILE), buf.getvalue())


def _write_grids(output_dir: str, grids: list[tuple[str, np.ndarray]]) -> list[str]:
  """grids/NN_<name>.png; returns their paths relative to `output_dir`."""
  from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
  files = []
  for j, (name, grid) in enumerate(grids):
    path = os.path.join(output_dir, GRID_DIR, f"{j:02d}_{_flat_name(name)}.png")
    image_io.write_image(path, grid, overwrite=True)
    files.append(os.path.relpath(path, output_dir))
  return files


def _write_events(output_dir: str, step: int, dataset: str, means: dict, by_family: dict,
                  grids: list[tuple[str, np.ndarray]], paired: bool, protocol: str) -> None:
  """The clu events under `eval/<dataset>`: the means, per-family scalars, the
  grids, the protocol line."""
  from flax_gradnet import writers  # pylint: disable=g-import-not-at-top
  tag = "eval/" + (re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_") or "data")
  # clu's writer; without TensorFlow the log alone (writers says so once).
  writer = writers.create_writer(output_dir, asynchronous=False)
  if means:
    writer.write_scalars(step, {f"{tag}/{k}": v for k, v in means.items()})
  if by_family:
    writer.write_scalars(step, {f"{tag}/{_flat_name(f)}/{k}": m[k] for f, m in by_family.items()
                                if f != FAMILY_ALL for k in ("psnr", "ssim", "psnr_gain")})
  if grids:
    suffix = "blurry|deblurred|sharp" if paired else "blurry|deblurred"
    writer.write_images(step, {f"{tag}/{suffix}_{j}": g[None] for j, (_, g) in enumerate(grids)})
  writer.write_texts(step, {f"{tag}/protocol": protocol})
  writer.flush()
  writer.close()


def _summary(report: Report, *, dataset: str, step: int, data_protocol: str,
             y_channel: bool, crop_border: int, model: Any, grid_files: list[str],
             written: list[str], elapsed: float, extra_summary: dict | None) -> dict:
  """summary.json's dict (see `evaluate_generator`)."""
  import jax  # pylint: disable=g-import-not-at-top
  rows, seconds, paired = report.rows, report.seconds, report.paired
  means, by_family, protocol = report.means, report.by_family, report.protocol
  tile, tile_overlap = report.options.tile, report.options.tile_overlap
  return {
      "dataset": dataset,
      "step": int(step),
      "num_images": len(rows),
      "paired": bool(paired),
      "means": means,
      **({"by_family": by_family} if by_family else {}),
      "num_exact": int(sum(1 for r in rows if paired and math.isinf(r["psnr"]))),
      "protocol": protocol,
      "dataset_protocol": data_protocol,
      "y_channel": bool(y_channel),
      "crop_border": int(crop_border),
      "tile": tile,
      "tile_overlap": tile_overlap if tile else None,
      "inference": report.options.to_dict(),
      "compute_dtype": np.dtype(getattr(model, "dtype", None) or np.float32).name,
      "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
      "seconds_total": elapsed,
      # The first image includes compilation (as does each new image size).
      "seconds_per_image_after_first": (float(np.mean(seconds[1:])) if len(seconds) > 1
                                        else float(seconds[0])),
      "files": {"csv": CSV_FILE if paired else None, "grids": grid_files,
                "outputs": OUTPUT_DIR if written else None, "num_outputs": len(written)},
      **(extra_summary or {}),
  }


def evaluate_generator(model: Any, params: Any, source: Iterable[dict] | Any, *,
                       output_dir: str, options: Any = None, step: int = 0, dataset: str = "",
                       y_channel: bool = False, crop_border: int = 0,
                       num_images: int = 0, num_grids: int = 4, save_outputs: bool = True,
                       kohler_frame: str = "middle", kohler_frames_dir: str | None = None,
                       progress: bool = True, extra_summary: dict | None = None,
                       **overrides: Any) -> dict:
  """Deblurs every image of `source` under `options`, measures it
  (`evaluate_examples`), and writes the report files.

  Args:
    model, params: a generator and its parameters (`inference.restore`).
    source: a random-access source from `pipeline.get_source` (read through
      `pipeline.eval_iterator`), or any iterable of {'blur', 'sharp'?, 'name'}.
    output_dir: where the CSV, summary, grids, outputs and clu events go.
    options: the `inference.Options` to deblur with (None: the paper's
      protocol, `inference.PAPER_PROTOCOL`; a restored model's own are
      `inference.restore(...)[2].options`); stated in the protocol line and
      summary.json's `inference`. `max_memory` is not applied (whole images).
    step: the checkpoint step (the clu writer's step).
    dataset: the dataset's name, for the protocol line and the writer's tag.
    y_channel, crop_border: the metric protocol (`metrics.psnr`/`ssim`).
    num_images: evaluate only the first N images (0 = all).
    num_grids: how many blurry|deblurred|sharp grids to write (the first images);
      with blur families ('family' keys) the first image of every family always
      gets one, so there can be more grids than `num_grids` (none when 0).
    save_outputs: write every deblurred image (always done without targets).
    kohler_frame: the builder's Köhler target frame (only for the protocol line).
    kohler_frames_dir: the Köhler folder; when given, each image is measured
      against its best-PSNR GroundTruth frame (see `dataset_protocol`).
    progress: show a tqdm bar on stderr.
    extra_summary: more entries for summary.json (e.g. workdir, split).
    **overrides: `inference.Options` fields over `options` (self_ensemble,
      local_stats, low_freq_sigma, tile, tile_overlap: the loose arguments
      this function took before `options`); None keeps `options`' value.

  Returns:
    The summary dict (also written as summary.json): `num_images`, `means`
    ({psnr, ssim, blurry_psnr, blurry_ssim}; empty without targets),
    `num_exact` (outputs identical to their target: PSNR inf), `protocol`,
    `inference` (the options' fields), ...; for paired examples with 'family'
    keys also `by_family` (`family_means`).
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  if num_images < 0 or num_grids < 0 or crop_border < 0:
    raise ValueError("num_images, num_grids and crop_border must be >= 0")
  options = (inference.PAPER_PROTOCOL if options is None else options).overridden(**overrides)
  output_dir = local_output_dir(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  examples, total = _examples(source, num_images)
  data_protocol = dataset_protocol(dataset, kohler_frame=kohler_frame,
                                   kohler_best_frame=bool(kohler_frames_dir))

  outputs = _OutputWriter(output_dir, save_outputs, total, progress)
  start = time.time()
  report = evaluate_examples(model, params, options, examples, crop_border=crop_border,
                             y_channel=y_channel, num_images=num_images, num_grids=num_grids,
                             kohler_frames_dir=kohler_frames_dir, on_image=outputs)
  outputs.bar.close()
  if not report.rows:
    raise ValueError("the dataset (or the --num_images slice of it) holds no images")
  elapsed = time.time() - start

  if report.paired:
    _write_csv(output_dir, report.rows)
  grid_files = _write_grids(output_dir, report.grids)
  _write_events(output_dir, step, dataset, report.means, report.by_family, report.grids,
                report.paired, f"{report.protocol}; {data_protocol}")
  summary = _summary(report, dataset=dataset, step=step, data_protocol=data_protocol,
                     y_channel=y_channel, crop_border=crop_border, model=model,
                     grid_files=grid_files, written=outputs.written, elapsed=elapsed,
                     extra_summary=extra_summary)
  atomic_write_text(os.path.join(output_dir, SUMMARY_FILE),
                    json.dumps(json_safe(summary), indent=2) + "\n")
  return summary


def local_output_dir(output_dir: str) -> str:
  """`output_dir` with `~` expanded, made absolute (`workdir.workdir_path`, as
  workdirs are): the reports are written with local file operations.

  Raises:
    ValueError: a URI (gs://...), which local file operations would turn into
      a local folder named after it.
  """
  from flax_gradnet import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if workdir_lib.is_remote(output_dir):
    raise ValueError(f"output_dir {output_dir} is a URI: the reports are written with local "
                     "file operations; give a local folder")
  return str(workdir_lib.workdir_path(output_dir))


def workdir_name(workdir: str) -> str:
  """The workdir as summary.json records it: a URI as given, a local path absolute."""
  from flax_gradnet import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return str(workdir_lib.workdir_path(workdir))


def evaluate_workdir(workdir: str, source: Any, *, output_dir: str,
                     step: int | str | None = None, dtype: Any = None,
                     weights: str | None = None, options: Any = None, **kwargs) -> dict:
  """Restores the generator of a training workdir and runs `evaluate_generator`
  under the workdir's recorded inference options.

  Args:
    workdir: a directory written by `python -m flax_gradnet.main`.
    source: see `evaluate_generator`.
    output_dir: see `evaluate_generator`.
    step: checkpoint step (None = latest; "best" = the highest held-out PSNR).
    dtype: compute dtype (None = the config's `compute_dtype`).
    weights: "ema" or "raw" (None = the config's recorded `inference.weights`,
      else the EMA when the checkpoint has one).
    options: `inference.Options` to use instead of the workdir's recorded ones
      (None: the recorded ones, `inference.restore`; the paper's protocol for a
      config without an `inference` field).
    **kwargs: the rest of `evaluate_generator`'s arguments; its option fields
      (self_ensemble, low_freq_sigma, local_stats, tile, tile_overlap)
      override the options one by one (None keeps them).
  Returns:
    The summary dict, with `workdir` and `weights` added.
  Raises:
    FileNotFoundError: no workdir, config.json or checkpoint (message says which).
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  model, params, restored = inference.restore(workdir, step=step, dtype=dtype, weights=weights)
  overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in inference.Options.fields()}
  options = inference.resolve_options(restored, options, **overrides)
  extra = {"workdir": workdir_name(workdir), "weights": restored.weights,
           **kwargs.pop("extra_summary", {})}
  return evaluate_generator(model, params, source, output_dir=output_dir, options=options,
                            step=restored.step, extra_summary=extra, **kwargs)


# ----------------------------------------------------------------------------
# Printing the results.


def format_result(summary: dict) -> str:
  """The lines the CLI prints: means (or output count), the per-family table
  (data with blur families) and the whole protocol."""
  n, ds = summary["num_images"], summary.get("dataset") or "dataset"
  head = f"{ds} {summary.get('split', '')}".strip() + f", {n} image(s), step {summary['step']}"
  if not summary["means"]:
    return (f"{head}: {summary['files']['num_outputs']} deblurred output(s) written; "
            f"no targets, no metrics\nprotocol: {summary['dataset_protocol']}")
  m = summary["means"]
  lines = [f"{head}: PSNR {m['psnr']:.4f} dB  SSIM {m['ssim']:.4f}  "
           f"(blurry input: PSNR {m['blurry_psnr']:.4f} dB  SSIM {m['blurry_ssim']:.4f})"]
  if summary.get("by_family"):
    lines.append("by blur family (PSNR in dB; gain = deblurred - blurry PSNR; worst gain = "
                 "the smallest per-image gain):")
    lines += ["  " + line for line in format_family_table(summary["by_family"])]
  if summary["num_exact"]:
    lines.append(f"note: {summary['num_exact']} output(s) equal their target exactly (PSNR inf)")
  lines.append(f"protocol: {summary['protocol']}; {summary['dataset_protocol']}")
  return "\n".join(lines)


def format_family_table(by_family: dict[str, dict[str, float]]) -> list[str]:
  """`family_means`' dict -> table lines (header, one row per family, the all row)."""
  head = (f"{'family':<10} {'n':>3} {'blurry PSNR':>11} {'deblurred':>9} {'gain':>6} "
          f"{'blurry SSIM':>11} {'deblurred':>9} {'worst gain':>10}")
  lines = [head]
  for family, m in by_family.items():
    if family == FAMILY_ALL:
      lines.append("-" * len(head))
    lines.append(f"{family:<10} {m['num_images']:>3d} {m['blurry_psnr']:11.2f} {m['psnr']:9.2f} "
                 f"{m['psnr_gain']:+6.2f} {m['blurry_ssim']:11.4f} {m['ssim']:9.4f} "
                 f"{m['worst_psnr_gain']:+10.2f}")
  return lines


def json_safe(v: Any) -> Any:
  """floats as floats, except inf/nan as strings (strict JSON has neither)."""
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  if isinstance(v, dict):
    return {k: json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [json_safe(x) for x in v]
  return v


def allgather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every process's rows, on every process (process-major order)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return rows
  text = np.frombuffer(json.dumps(rows).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([text.size], np.int64)).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:text.size] = text
  everyone = multihost_utils.process_allgather(padded)
  return [row for size, buf in zip(sizes, everyone)
          for row in json.loads(bytes(buf[:int(size)]).decode())]


def evaluate_source(generator, params, source, *, num_images: int = 0, crop_border: int = 0,
             num_summaries: int = 0,
             options: Any = None) -> tuple[dict[str, float], list[np.ndarray]]:
  """The periodic held-out evaluation: `evaluation.evaluate_examples` of whole
  images under `options`, then means.

  Metrics are measured on uint8-quantized outputs against the uint8 targets,
  RGB (grey for a grayscale generator), for the deblurred output and, as a
  baseline, for the blurry input. `options` (an `inference.Options`; None = the
  paper's protocol) are the inference settings: training passes the config's
  recorded ones (`inference.Options.from_config(config)`), the ones `python -m
  flax_gradnet.evaluate --workdir` uses by default, so the numbers are the same.
  With several processes each deblurs every P-th image and the per-image rows
  are gathered, so every process returns the same means; the grids are each
  process's own (process 0 writes them).

  Returns:
    (means: psnr, ssim, blurry_psnr, blurry_ssim, psnr_gain; with blur families
     also psnr_gain_<family> and worst_image_psnr_gain;
     the first `num_summaries` blurry | deblurred | sharp grids).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top
  count = len(source) if not num_images else min(num_images, len(source))
  shard = pipeline.eval_iterator(source, stop=count, shard_index=jax.process_index(),
                                 shard_count=jax.process_count(),
                                 channels=getattr(generator, "channels", 3))
  # family_grids=False: the first images only, the TensorBoard images training always wrote.
  measured = evaluate_examples(
      generator, params, inference.PAPER_PROTOCOL if options is None else options, shard,
      crop_border=crop_border, num_grids=num_summaries, family_grids=False)
  rows = allgather_rows(measured.rows)
  if not rows:
    raise ValueError("the evaluation split is empty")
  # The same numbers as `python -m flax_gradnet.evaluate` prints.
  overall = group_means(rows)
  means = {k: overall[k] for k in ("psnr", "ssim", "blurry_psnr", "blurry_ssim", "psnr_gain")}
  if "family" in rows[0]:  # held-out sets with several blur families
    by_family = family_means(rows)
    del by_family[FAMILY_ALL]
    means.update({f"psnr_gain_{f}": m["psnr_gain"] for f, m in by_family.items()})
    means["worst_image_psnr_gain"] = overall["worst_psnr_gain"]
  return means, [grid for _, grid in measured.grids]
