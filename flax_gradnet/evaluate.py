"""Evaluate a trained generator on a dataset: per-image CSV, means, grids, outputs.

    python -m flax_gradnet.evaluate --workdir=workdirs/paper --dataset=gopro \\
        --data_dir=~/tensorflow_datasets --manual_dir=/data/gopro --output_dir=eval/gopro
    flax-gradnet-evaluate --workdir=W --dataset=hide --manual_dir=/data --output_dir=eval/hide
    flax-gradnet-evaluate --workdir=W --dataset=realblur_j --manual_dir=/data --output_dir=eval/rbj
    flax-gradnet-evaluate --workdir=W --dataset=kohler --path=/data/kohler --output_dir=eval/kohler
    flax-gradnet-evaluate --workdir=W --dataset=blur_only --path=/data/lai --output_dir=eval/lai
    flax-gradnet-evaluate --model=gradnet_s_synth --dataset=gopro --output_dir=eval/shipped

The generator comes from a training workdir (`--workdir`, `--step`, `--weights`)
or from a model shipped with the package (`--model`; the default): the restore
flags of `flax_gradnet.cli`, which `inference.restore` takes.

Inference options are the model's: `--self_ensemble`, `--low_freq_sigma`,
`--local_stats`, `--tile` and `--tile_overlap` default to what the model
records in its config.json (`inference.Options`); a model that records none
(a workdir trained with configs/default.py) is measured under the paper's
protocol, one pass and the generator's output as it is. Each flag given
overrides its setting. The protocol line and summary.json (`inference`) state
the options used.

Writes into `--output_dir` (created if missing; this tool's own files in it are
replaced on a rerun):

    per_image.csv      name, psnr, ssim, blurry_psnr, blurry_ssim (+ gt_frame for
                       --kohler_best_frame; + family for data with blur families),
                       full float precision; paired data only
    summary.json       means, protocol, step, dataset, timings, file list (+ by_family)
    grids/NN_<name>.png   blurry | deblurred | sharp (blurry | deblurred without targets);
                          with blur families, at least one grid per family
    deblurred/<name>.png  every output (always for blur-only data; --no-save_outputs skips
                          them for paired data)
    events.out.tfevents.* clu writer: `<tag>/psnr`, `<tag>/ssim`, ... at the checkpoint step

The means are printed with `metrics.protocol_string` plus the dataset's part of
the protocol (GOPRO `blur` vs `blur_gamma`; which Köhler frame is the target;
for HIDE and RealBlur-J/R their published protocols, see `dataset_protocol`:
RealBlur numbers here are WITHOUT the authors' ECC alignment).
Metrics are measured on the uint8 outputs exactly as written to `deblurred/`,
by `evaluate_examples` (`evaluation.measure` under one `inference.Options`: the
core training's periodic evaluation and the demo share); this module adds the
protocol lines, the report files and the CLI.

Blur families. When the examples carry a 'family' key (`--dataset=synthetic_online`:
4 held-out photographs x 6 blur families), the means are also broken down by
family (`summary["by_family"]`, first-seen order, then "all") and printed as a
table: blurry and deblurred PSNR, the gain, blurry and deblurred SSIM, and the
worst per-image PSNR gain of each family.

Exit status: 0 done; 2 nothing ran (missing workdir/checkpoint/shipped model/dataset, a
--dataset no builder has (the message lists them), bad flags such as --workdir with
--model or --step without --workdir, --weights=ema for a checkpoint without EMA weights,
--step=best without an evaluated checkpoint). Flags and exit statuses follow
`flax_gradnet.cli`; `--no-progress` (or the older `--no_progress`) hides the progress bar.
Whole images are measured, as the benchmarks' protocols do: there is no `--max_memory`
here, and a model's recorded budget is not applied (`--tile` tiles them on request).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterable

import numpy as np

# stdlib(+numpy)-only at import: --help stays instant. The CLI's own module,
# `cli`, is imported by the CLI's functions only: the library part
# (`evaluate_examples`, `evaluate_generator`, ...) does not need it.
from flax_gradnet import evaluation, paths
from flax_gradnet.atomic import atomic_write_text

CSV_FIELDS = ("name",) + evaluation.METRIC_KEYS
METRIC_KEYS = evaluation.METRIC_KEYS
CSV_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"
GRID_DIR = "grids"
OUTPUT_DIR = "deblurred"
FAMILY_ALL = evaluation.FAMILY_ALL  # the row of all images in `by_family`


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
# Small helpers.


def _safe_relpath(name: str) -> str:
  """A source's example name -> a relative path inside an output folder (never above it)."""
  parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".", "..")]
  if not parts:
    parts = ["image"]
  stem = os.path.splitext(parts[-1])[0] or "image"
  return os.path.join(*parts[:-1], stem + ".png")


def _flat_name(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(name)[0]).strip("_") or "image"


def json_safe(v: Any) -> Any:
  """floats as floats, except inf/nan as strings (strict JSON has neither)."""
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  if isinstance(v, dict):
    return {k: json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [json_safe(x) for x in v]
  return v


def format_family_table(by_family: dict[str, dict[str, float]]) -> list[str]:
  """`evaluation.family_means`' dict -> table lines (header, one row per family, the all row)."""
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
  """`evaluation.measure`'s per-image hook: writes the deblurred images
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


# ----------------------------------------------------------------------------
# The report files (measuring is `evaluation.measure`).


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


def _summary(report: "Report", *, dataset: str, step: int, data_protocol: str,
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


# ----------------------------------------------------------------------------
# The evaluation.


@dataclasses.dataclass
class Report:
  """What `evaluate_examples` returns.

  Attributes:
    rows: one dict per image, in data order (`evaluation.measure`'s rows:
      'name', 'family'?, 'psnr', 'ssim', 'blurry_psnr', 'blurry_ssim', ...).
    means: `evaluation.metric_means` of the rows ({} without targets).
    by_family: `evaluation.family_means` of the rows ({} without targets or
      blur families).
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
      'family'?} (`evaluation.measure`).
    crop_border, y_channel: the metric protocol (`metrics.psnr`/`ssim`).
    num_images: the first N examples only (0 = all).
    num_grids: how many grids to keep (`evaluation.measure`).
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
      'sharp' or 'family' (`evaluation.measure`).
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  if not isinstance(options, inference.Options):
    raise TypeError(f"options must be an inference.Options, got {type(options).__name__}")
  if options.local_stats == inference.LOCAL_STATS_CROP:
    raise ValueError("local_stats=-1 (the training crop size) must be resolved first: "
                     "inference.resolve_options(restored) puts in the model's crop_size")
  options = dataclasses.replace(options, max_memory=None)  # whole images (or its tiles)
  measured = evaluation.measure(
      model, params, examples, crop_border=crop_border, y_channel=y_channel,
      num_images=num_images, num_grids=num_grids, family_grids=family_grids,
      tile=options.tile, tile_overlap=options.tile_overlap,
      self_ensemble=options.self_ensemble, local_stats=options.local_stats,
      low_freq_sigma=options.low_freq_sigma, kohler_frames_dir=kohler_frames_dir,
      on_image=on_image)
  rows, paired = measured.rows, measured.paired
  means = evaluation.metric_means(rows) if paired and rows else {}
  by_family = evaluation.family_means(rows) if paired and rows and "family" in rows[0] else {}
  protocol = protocol_line(options, y_channel=y_channel, crop_border=crop_border,
                           channels=int(getattr(model, "channels", 3)))
  return Report(rows=rows, means=means, by_family=by_family, grids=measured.grids,
                seconds=measured.seconds, paired=paired, options=options, protocol=protocol)


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


def _workdir_name(workdir: str) -> str:
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
  extra = {"workdir": _workdir_name(workdir), "weights": restored.weights,
           **kwargs.pop("extra_summary", {})}
  return evaluate_generator(model, params, source, output_dir=output_dir, options=options,
                            step=restored.step, extra_summary=extra, **kwargs)


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


# ----------------------------------------------------------------------------
# Command line.


def _parser() -> argparse.ArgumentParser:
  from flax_gradnet import cli  # pylint: disable=g-import-not-at-top  (stdlib only)
  p = cli.parser(
      "python -m flax_gradnet.evaluate",
      "Evaluate a trained generator on a dataset: per-image CSV, mean PSNR/SSIM with the "
      "protocol, image grids, clu events, deblurred outputs.", __doc__,
      notes="Benchmark protocols. " + " ".join(
          f"{d}: {dataset_protocol(d)}." for d in ("hide", "realblur_j")) + " realblur_r: "
            "the same for RealBlur-R.")
  cli.add_restore_flags(p)
  p.add_argument("--dataset", required=True,
                 help="gopro | gopro/blur_gamma | hide | realblur_j | realblur_r | paired_folder "
                      "| kohler | blur_only | synthetic | synthetic_online | synthetic_unseen | synthetic_strong (protocols of hide and "
                      "realblur_*: below; realblur_* is measured WITHOUT the RealBlur alignment)")
  p.add_argument("--split", default="test", help="split or TFDS slice (default test)")
  cli.add_data_flags(p)
  p.add_argument("--kohler_frame", default="middle",
                 help="Köhler target frame of the builder: first | middle | last | N")
  cli.add_switch(p, "--kohler_best_frame",
                 "Köhler: measure against the best-PSNR GroundTruth frame under --path")
  cli.add_output_dir_flag(p, "where results go (created if missing)")
  cli.add_switch(p, "--y_channel", "measure BT.601 luma instead of RGB (RGB models only)")
  p.add_argument("--crop_border", type=int, default=0, help="pixels dropped on each side")
  cli.add_progress_flag(p, old_negation="--no_progress")
  # No --max_memory: the benchmarks' protocol deblurs whole images (--tile
  # tiles them on request), so the numbers do not depend on the machine.
  cli.add_inference_flags(p, max_memory=False)
  p.add_argument("--num_images", type=int, default=0, help="first N images only (0 = all)")
  p.add_argument("--num_grids", type=int, default=4, help="blurry|deblurred|sharp grids to write")
  cli.add_switch(p, "--save_outputs",
                 "write every deblurred image to OUTPUT_DIR/deblurred (always for blur_only)",
                 default=True)
  cli.add_dtype_flag(p)
  return p


class _UsageError(Exception):
  """Nothing can run (bad flags, missing inputs): one error line, exit status 2."""


def _check_flags(args) -> None:
  """Raises `_UsageError` for flags that contradict each other or are out of range."""
  from flax_gradnet import cli  # pylint: disable=g-import-not-at-top  (stdlib only)
  if (problem := cli.inference_flags_error(args)) is not None:
    raise _UsageError(problem)
  if args.num_images < 0 or args.num_grids < 0 or args.crop_border < 0:
    raise _UsageError("--num_images, --num_grids and --crop_border must be >= 0")
  if paths.is_uri(args.output_dir):
    raise _UsageError(f"--output_dir {args.output_dir} is a URI: the reports are written with "
                      "local file operations; give a local folder")
  if args.kohler_best_frame and args.dataset != "kohler":
    raise _UsageError("--kohler_best_frame is for --dataset=kohler")
  if (problem := cli.restore_flags_error(args)) is not None:
    raise _UsageError(problem)
  known = known_datasets()
  if args.dataset not in known:
    raise _UsageError(f"unknown --dataset {args.dataset!r}; the datasets are {', '.join(known)}")


def known_datasets() -> tuple[str, ...]:
  """The names `--dataset` takes: `pipeline.DATASETS`, and the other spellings
  of `pipeline.MANUAL_DATASETS` (e.g. "gopro/blur")."""
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top  (TFDS: slow)
  return pipeline.DATASETS + tuple(d for d in pipeline.MANUAL_DATASETS
                                   if d not in pipeline.DATASETS)


def _builder_kwargs(args) -> dict:
  """The builder options of --dataset (its folder for paired_folder/kohler/blur_only)."""
  if args.dataset in ("paired_folder", "kohler", "blur_only"):
    if not args.path:
      raise _UsageError(f"--dataset={args.dataset} needs --path=<folder>")
    if not os.path.isdir(os.path.expanduser(args.path)):
      raise _UsageError(f"--path {args.path!r} is not a folder")
    kw = {"path": os.path.abspath(os.path.expanduser(args.path))}
    # Outputs inside the input folder would change its fingerprint and be read as inputs next time.
    out = os.path.realpath(os.path.expanduser(args.output_dir))
    src = os.path.realpath(kw["path"])
    if out == src or out.startswith(src + os.sep):
      raise _UsageError(f"--output_dir {args.output_dir!r} is inside the input folder "
                        f"{args.path!r}")
    if args.dataset == "kohler":
      kw["frame"] = args.kohler_frame
    return kw
  if args.path:
    raise _UsageError(f"--path is for paired_folder, kohler and blur_only, not {args.dataset}")
  return {}


def _restore(args) -> tuple[Any, Any, Any, Any]:
  """(model, params, `inference.Restored`, the `inference.Options` to measure
  with: the flags over the model's recorded options) of the flags."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax_gradnet import cli, inference  # pylint: disable=g-import-not-at-top
  try:  # before preparing the data set, which can take long
    dtype = None if args.dtype is None else jnp.dtype(args.dtype)
    model, params, restored = inference.restore(args.workdir, model=args.model, step=args.step,
                                                dtype=dtype, weights=args.weights)
  except (FileNotFoundError, ValueError) as e:
    raise _UsageError(f"cannot restore a generator from {cli.restore_source(args)}: {e}") from e
  print(f"restored generator from {restored} (compute dtype {jnp.dtype(model.dtype).name})",
        file=sys.stderr)
  try:
    # No budget: the benchmarks measure whole images (or --tile's tiles).
    options = dataclasses.replace(
        inference.resolve_options(restored, **cli.inference_overrides(args)), max_memory=None)
  except ValueError as e:
    raise _UsageError(str(e)) from e
  stride = inference.model_stride(model)
  if options.tile is not None and options.tile % stride:
    which = "--tile" if args.tile is not None else "the model's recorded tile"
    raise _UsageError(f"{which} must be a multiple of {stride} for this generator (its total "
                      f"stride, 2**num_levels), got {options.tile}")
  source = cli.options_source(args, restored.options_recorded)
  print(f"inference: {options.describe()} ({source})", file=sys.stderr)
  warning = inference.low_freq_warning(restored, options.low_freq_sigma)
  if warning:
    print(warning, file=sys.stderr)
  channels = getattr(model, "channels", 3)
  if args.y_channel and channels != 3:
    raise _UsageError(f"--y_channel measures the BT.601 luma of RGB images; this generator has "
                      f"{channels} channel(s) (model.channels) and is measured on them as they are")
  return model, params, restored, options


def _open_source(args, builder_kwargs: dict) -> Any:
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top
  try:
    return pipeline.get_source(args.dataset, args.split,
                               data_dir=os.path.expanduser(args.data_dir),
                               manual_dir=os.path.expanduser(args.manual_dir)
                               if args.manual_dir else None, **builder_kwargs)
  except Exception as e:  # TFDS/builders raise FileNotFoundError, ValueError, TypeError, ...
    raise _UsageError(f"cannot open dataset {args.dataset!r} split {args.split!r}: "
                      f"{type(e).__name__}: {e}") from e


def main(argv: list[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 done, 2 nothing could run)."""
  from flax_gradnet import cli  # pylint: disable=g-import-not-at-top  (stdlib only)
  args = _parser().parse_args(argv)
  # TensorFlow (imported by clu's writers) logs INFO lines to the terminal;
  # keep it to warnings, as main.py and demo.py do.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  try:
    _check_flags(args)
    builder_kwargs = _builder_kwargs(args)
    # Heavy imports after the flag checks, so --help and usage errors are instant.
    model, params, restored, options = _restore(args)
    source = _open_source(args, builder_kwargs)
  except _UsageError as e:
    # On its own line, also after a progress bar that left the cursor mid-line.
    print(f"{chr(10) if sys.stderr.isatty() else ''}error: {e}", file=sys.stderr)
    return cli.EXIT_NOTHING_RAN

  summary = evaluate_generator(
      model, params, source, output_dir=args.output_dir, options=options,
      step=restored.step or 0, dataset=args.dataset, y_channel=args.y_channel,
      crop_border=args.crop_border, num_images=args.num_images,
      num_grids=args.num_grids, save_outputs=args.save_outputs, kohler_frame=args.kohler_frame,
      kohler_frames_dir=builder_kwargs.get("path") if args.kohler_best_frame else None,
      progress=args.progress,
      extra_summary={**({"workdir": _workdir_name(args.workdir)} if args.workdir is not None
                        else {"model": restored.model}), "weights": restored.weights,
                     "split": args.split, "path": builder_kwargs.get("path")})
  print(format_result(summary))
  print(f"results in {local_output_dir(args.output_dir)} ({SUMMARY_FILE}"
        f"{', ' + CSV_FILE if summary['means'] else ''}, {GRID_DIR}/"
        f"{', ' + OUTPUT_DIR + '/' if summary['files']['outputs'] else ''})", file=sys.stderr)
  return cli.EXIT_OK


def run() -> None:
  """Console entry point `flax-gradnet-evaluate`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
