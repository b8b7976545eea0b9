"""Evaluate a trained generator on a dataset: per-image CSV, means, grids, outputs.

    python -m flax_gradnet.evaluate --workdir=workdirs/paper --dataset=gopro \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/gopro --output_dir=eval/gopro
    flax-gradnet-evaluate --workdir=W --dataset=hide --manual_dir=/data --output_dir=eval/hide
    flax-gradnet-evaluate --workdir=W --dataset=realblur_j --manual_dir=/data --output_dir=eval/rbj
    flax-gradnet-evaluate --workdir=W --dataset=kohler --path=/data/kohler --output_dir=eval/kohler
    flax-gradnet-evaluate --workdir=W --dataset=blur_only --path=/data/lai --output_dir=eval/lai
    flax-gradnet-evaluate --model=gradnet_s_synth --dataset=gopro --output_dir=eval/shipped

The generator comes from a training workdir (`--workdir`, optionally `--step`:
a step or `best`, the highest held-out PSNR training recorded; and `--weights
ema|raw`, default the EMA when the checkpoint has one) or from a model shipped
with the package (`--model`, see `python -m flax_gradnet.pretrained --list`);
with neither, the shipped `pretrained.DEFAULT_MODEL`. Both go through
`inference.restore`.

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
Metrics are measured on the uint8 outputs exactly as written to `deblurred/`.

Blur families. When the examples carry a 'family' key (`--dataset=synthetic_online`:
4 held-out photographs x 6 blur families), the means are also broken down by
family (`summary["by_family"]`, first-seen order, then "all") and printed as a
table: blurry and deblurred PSNR, the gain, blurry and deblurred SSIM, and the
worst per-image PSNR gain of each family.

Exit status: 0 done; 2 nothing ran (missing workdir/checkpoint/shipped model/dataset, bad
flags such as --workdir with --model or --step without --workdir, --weights=ema for a
checkpoint without EMA weights, --step=best without an evaluated checkpoint).
"""

from __future__ import annotations

import argparse
import collections
import csv
import functools
import io
import json
import math
import os
import re
import sys
import time
from typing import Any, Iterable

import numpy as np

from flax_gradnet import pretrained  # stdlib-only at import: --help stays instant

CSV_FIELDS = ("name", "psnr", "ssim", "blurry_psnr", "blurry_ssim")
METRIC_KEYS = CSV_FIELDS[1:]
CSV_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"
GRID_DIR = "grids"
OUTPUT_DIR = "deblurred"
FAMILY_ALL = "all"  # the row of all images in `by_family`
FAMILY_KEYS = ("num_images", "psnr", "ssim", "blurry_psnr", "blurry_ssim", "psnr_gain",
               "worst_psnr_gain")

_KOHLER_GT_RE = re.compile(r"^GroundTruth(\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)
_KOHLER_NAME_RE = re.compile(r"^Blurry(\d+)_(\d+)\.png$", re.IGNORECASE)


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
  return f"dataset '{dataset}'" if dataset else "dataset given as a source"


# ----------------------------------------------------------------------------
# Small helpers.


@functools.lru_cache(maxsize=None)
def _metric_fns(crop_border: int, y_channel: bool):
  """jit-compiled (psnr, ssim) of uint8 images for one protocol."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax_gradnet import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  kw = dict(data_range=255.0, crop_border=crop_border, y_channel=y_channel)
  return (jax.jit(functools.partial(metrics_lib.psnr, **kw)),
          jax.jit(functools.partial(metrics_lib.ssim, **kw)))


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


def _kohler_frames(root: str) -> dict[tuple[int, int], dict[int, str]]:
  """{(image, shake): {frame: path}} of every GroundTruth{i}_{j}_{k}.png under `root`."""
  frames: dict[tuple[int, int], dict[int, str]] = collections.defaultdict(dict)
  for d, dirs, files in os.walk(os.path.expanduser(root)):
    dirs.sort()
    for f in files:
      if m := _KOHLER_GT_RE.match(f):
        frames[(int(m[1]), int(m[2]))][int(m[3])] = os.path.join(d, f)
  if not frames:
    raise FileNotFoundError(f"no GroundTruth{{i}}_{{j}}_{{k}}.png files under {root}")
  return frames


def _best_frame(image: np.ndarray, frame_paths: dict[int, str], psnr_fn, ssim_fn):
  """(psnr, ssim, frame) against the frame with the highest PSNR."""
  from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
  best = (-math.inf, None, None)
  for k in sorted(frame_paths):
    target = image_io.read_image(frame_paths[k])
    if target.shape != image.shape:
      raise ValueError(f"{frame_paths[k]} is {target.shape}, the image is {image.shape}")
    p = float(psnr_fn(image, target))
    if p > best[0]:
      best = (p, target, k)
  p, target, k = best
  return p, float(ssim_fn(image, target)), k


def _choose_grids(candidates: list[tuple[str, Any, np.ndarray]],
                  num_grids: int) -> list[tuple[str, np.ndarray]]:
  """(name, family, grid) candidates in data order -> the (name, grid)s to write.

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


def family_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Per-image rows with a 'family' -> {family: {num_images, means, psnr_gain, worst_psnr_gain}}.

  Families in first-seen order, then `FAMILY_ALL` over every row. `psnr_gain` =
  mean PSNR - mean blurry PSNR; `worst_psnr_gain` = the smallest per-image
  `psnr - blurry_psnr` (negative: that image got worse than its blurry input),
  of the image `worst_image` (its 'name').
  """
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault(str(r["family"]), []).append(r)
  groups[FAMILY_ALL] = list(rows)
  out = {}
  for family, rs in groups.items():
    m = {k: float(np.mean([r[k] for r in rs])) for k in METRIC_KEYS}
    worst = min(rs, key=lambda r: r["psnr"] - r["blurry_psnr"])
    out[family] = {"num_images": len(rs), **m, "psnr_gain": m["psnr"] - m["blurry_psnr"],
                   "worst_psnr_gain": float(worst["psnr"] - worst["blurry_psnr"]),
                   "worst_image": worst.get("name")}
  return out


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


# ----------------------------------------------------------------------------
# The evaluation.


def evaluate_generator(model: Any, params: Any, source: Iterable[dict] | Any, *,
                       output_dir: str, step: int = 0, dataset: str = "",
                       y_channel: bool = False, crop_border: int = 0,
                       tile: int | None = None, tile_overlap: int = 32,
                       num_images: int = 0, num_grids: int = 4, save_outputs: bool = True,
                       kohler_frame: str = "middle", kohler_frames_dir: str | None = None,
                       progress: bool = True, extra_summary: dict | None = None,
                       self_ensemble: bool = False, local_stats: int = 0) -> dict:
  """Deblurs every image of `source`, measures it, and writes the report files.

  Args:
    model, params: a generator and its parameters (`checkpoint.restore_generator`).
    source: a random-access source from `pipeline.get_source` (read through
      `pipeline.eval_iterator`), or any iterable of {'blur', 'sharp'?, 'name'}.
    output_dir: where the CSV, summary, grids, outputs and clu events go.
    step: the checkpoint step (the clu writer's step).
    dataset: the dataset's name, for the protocol line and the writer's tag.
    y_channel, crop_border: the metric protocol (`metrics.psnr`/`ssim`).
    tile, tile_overlap: tiled inference (`inference.deblur_image`); None = whole image.
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
    self_ensemble: the x8 geometric self-ensemble (`inference.self_ensemble`);
      recorded in the protocol line.
    local_stats: test-time local statistics over boxes of this side (0 = off;
      `inference.with_local_stats`); recorded in the protocol line.

  Returns:
    The summary dict (also written as summary.json): `num_images`, `means`
    ({psnr, ssim, blurry_psnr, blurry_ssim}; empty without targets),
    `num_exact` (outputs identical to their target: PSNR inf), `protocol`, ...;
    for paired examples with 'family' keys also `by_family` (`family_means`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  from flax_gradnet import checkpoint, image_io, inference  # pylint: disable=g-import-not-at-top
  from flax_gradnet import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top

  if num_images < 0 or num_grids < 0 or crop_border < 0:
    raise ValueError("num_images, num_grids and crop_border must be >= 0")
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  os.makedirs(output_dir, exist_ok=True)
  examples = pipeline.eval_iterator(source) if hasattr(source, "__getitem__") else iter(source)
  try:
    total = len(source)
  except TypeError:
    total = None
  if num_images and total is not None:
    total = min(total, num_images)

  fn = inference.make_deblur_fn(model, params, ensemble=self_ensemble, local_stats=local_stats)
  psnr_fn, ssim_fn = _metric_fns(int(crop_border), bool(y_channel))
  frames = _kohler_frames(kohler_frames_dir) if kohler_frames_dir else None
  protocol = metrics_lib.protocol_string(y_channel, crop_border)
  if self_ensemble:
    protocol += "; x8 geometric self-ensemble (flips and transposes, outputs averaged)"
  if local_stats:
    protocol += f"; test-time local statistics over {local_stats}x{local_stats} boxes"
  data_protocol = dataset_protocol(dataset, kohler_frame=kohler_frame,
                                   kohler_best_frame=frames is not None)
  tag = "eval/" + (re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_") or "data")

  rows: list[dict[str, Any]] = []
  grids: list[tuple[str, Any, np.ndarray]] = []  # candidates: see _choose_grids
  written: list[str] = []
  seconds: list[float] = []
  paired = has_family = None
  start = time.time()
  bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
  for i, ex in enumerate(examples):
    if num_images and i >= num_images:
      break
    blur, name = ex["blur"], ex["name"]
    has_sharp = "sharp" in ex
    if paired is None:
      paired = has_sharp
    elif paired != has_sharp:
      raise ValueError(f"{name!r}: some examples have a 'sharp' target and others not")
    if has_family is None:
      has_family = "family" in ex
    elif has_family != ("family" in ex):
      raise ValueError(f"{name!r}: some examples have a 'family' and others not")
    t0 = time.perf_counter()
    out = inference.deblur_image(fn, blur, tile=tile, tile_overlap=tile_overlap)
    seconds.append(time.perf_counter() - t0)
    if save_outputs or not paired:
      path = os.path.join(output_dir, OUTPUT_DIR, _safe_relpath(name))
      image_io.write_image(path, out, overwrite=True)
      written.append(os.path.relpath(path, output_dir))
    row: dict[str, Any] = {"name": name}
    if has_family:
      row["family"] = ex["family"]
    if paired:
      sharp = ex["sharp"]
      if frames is not None:
        m = _KOHLER_NAME_RE.match(os.path.basename(name))
        key = (int(m[1]), int(m[2])) if m else None
        if key not in frames:
          raise FileNotFoundError(f"no GroundTruth frames for {name!r} under {kohler_frames_dir}")
        row["psnr"], row["ssim"], row["gt_frame"] = _best_frame(out, frames[key], psnr_fn, ssim_fn)
        row["blurry_psnr"], row["blurry_ssim"], row["blurry_gt_frame"] = _best_frame(
            blur, frames[key], psnr_fn, ssim_fn)
      else:
        row["psnr"], row["ssim"] = float(psnr_fn(out, sharp)), float(ssim_fn(out, sharp))
        row["blurry_psnr"] = float(psnr_fn(blur, sharp))
        row["blurry_ssim"] = float(ssim_fn(blur, sharp))
      bar.set_postfix_str(f"PSNR {np.mean([r['psnr'] for r in rows + [row]]):.2f}", refresh=False)
    rows.append(row)
    family = ex.get("family")
    if num_grids and (len(grids) < num_grids or
                      (has_family and all(f != family for _, f, _ in grids))):
      panels = [blur, out] + ([ex["sharp"]] if paired else [])
      grids.append((name, family, np.concatenate(panels, axis=1)))
    bar.update(1)
  bar.close()
  if not rows:
    raise ValueError("the dataset (or the --num_images slice of it) holds no images")
  elapsed = time.time() - start

  means: dict[str, float] = {}
  by_family: dict[str, dict[str, float]] = {}
  if paired:
    means = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}
    if has_family:
      by_family = family_means(rows)
    fields = list(CSV_FIELDS) + [k for k in ("gt_frame", "blurry_gt_frame", "family")
                                 if k in rows[0]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:  # repr: the full float, so the CSV's mean is the printed mean
      w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    checkpoint.atomic_write_text(os.path.join(output_dir, CSV_FILE), buf.getvalue())

  grids = _choose_grids(grids, num_grids)
  grid_files = []
  for j, (name, grid) in enumerate(grids):
    path = os.path.join(output_dir, GRID_DIR, f"{j:02d}_{_flat_name(name)}.png")
    image_io.write_image(path, grid, overwrite=True)
    grid_files.append(os.path.relpath(path, output_dir))

  writer = metric_writers.create_default_writer(output_dir, asynchronous=False)
  if means:
    writer.write_scalars(step, {f"{tag}/{k}": v for k, v in means.items()})
  if by_family:
    writer.write_scalars(step, {f"{tag}/{_flat_name(f)}/{k}": m[k] for f, m in by_family.items()
                                if f != FAMILY_ALL for k in ("psnr", "ssim", "psnr_gain")})
  if grids:
    suffix = "blurry|deblurred|sharp" if paired else "blurry|deblurred"
    writer.write_images(step, {f"{tag}/{suffix}_{j}": g[None] for j, (_, g) in enumerate(grids)})
  writer.write_texts(step, {f"{tag}/protocol": f"{protocol}; {data_protocol}"})
  writer.flush()
  writer.close()

  summary = {
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
  checkpoint.atomic_write_text(os.path.join(output_dir, SUMMARY_FILE),
                               json.dumps(json_safe(summary), indent=2) + "\n")
  return summary


def evaluate_workdir(workdir: str, source: Any, *, output_dir: str,
                     step: int | str | None = None, dtype: Any = None,
                     weights: str | None = None, **kwargs) -> dict:
  """Restores the generator of a training workdir and runs `evaluate_generator`.

  Args:
    workdir: a directory written by `python -m flax_gradnet.main`.
    source: see `evaluate_generator`.
    output_dir: see `evaluate_generator`.
    step: checkpoint step (None = latest; "best" = the highest held-out PSNR).
    dtype: compute dtype (None = the config's `compute_dtype`).
    weights: "ema" or "raw" (None = the EMA when the checkpoint has one).
    **kwargs: the rest of `evaluate_generator`'s options.
  Returns:
    The summary dict, with `workdir` and `weights` added.
  Raises:
    FileNotFoundError: no workdir, config.json or checkpoint (message says which).
  """
  from flax_gradnet import checkpoint  # pylint: disable=g-import-not-at-top
  r = checkpoint.restore_weights(workdir, step, dtype, weights=weights)
  extra = {"workdir": os.path.abspath(workdir), "weights": r.weights,
           **kwargs.pop("extra_summary", {})}
  return evaluate_generator(r.model, r.params, source, output_dir=output_dir, step=r.step,
                            extra_summary=extra, **kwargs)


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
  p = argparse.ArgumentParser(
      prog="python -m flax_gradnet.evaluate",
      description="Evaluate a trained generator on a dataset: per-image CSV, mean PSNR/SSIM "
                  "with the protocol, image grids, clu events, deblurred outputs.",
      epilog="Benchmark protocols. " + " ".join(
          f"{d}: {dataset_protocol(d)}." for d in ("hide", "realblur_j")) + " realblur_r: "
             "the same for RealBlur-R.")
  pretrained.add_restore_flags(p)
  p.add_argument("--dataset", required=True,
                 help="gopro | gopro/blur_gamma | hide | realblur_j | realblur_r | paired_folder "
                      "| kohler | blur_only | synthetic | synthetic_online (protocols of hide and "
                      "realblur_*: below; realblur_* is measured WITHOUT the RealBlur alignment)")
  p.add_argument("--split", default="test", help="split or TFDS slice (default test)")
  p.add_argument("--data_dir", default="~/tensorflow_datasets",
                 help="where TFDS keeps the prepared records")
  p.add_argument("--manual_dir", default=None,
                 help="TFDS manual dir holding GOPRO_Large/, HIDE_dataset/ (or their zips) and/or "
                      "the extracted RealBlur.tar.gz (directly or in RealBlur/)")
  p.add_argument("--path", default=None, help="the folder of paired_folder / kohler / blur_only")
  p.add_argument("--kohler_frame", default="middle",
                 help="Köhler target frame of the builder: first | middle | last | N")
  p.add_argument("--kohler_best_frame", action="store_true",
                 help="Köhler: measure against the best-PSNR GroundTruth frame under --path")
  p.add_argument("--output_dir", required=True, help="where results go (created if missing)")
  p.add_argument("--y_channel", action="store_true", help="measure BT.601 luma instead of RGB")
  p.add_argument("--crop_border", type=int, default=0, help="pixels dropped on each side")
  p.add_argument("--tile", type=int, default=None,
                 help="tile side, a multiple of 4 (default: whole images)")
  p.add_argument("--tile_overlap", type=int, default=32, help="overlap of neighbouring tiles")
  p.add_argument("--num_images", type=int, default=0, help="first N images only (0 = all)")
  p.add_argument("--num_grids", type=int, default=4, help="blurry|deblurred|sharp grids to write")
  p.add_argument("--save_outputs", action=argparse.BooleanOptionalAction, default=True,
                 help="write every deblurred image to OUTPUT_DIR/deblurred (always for blur_only)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                 help="compute dtype (default: the training config's compute_dtype)")
  p.add_argument("--self_ensemble", action="store_true",
                 help="x8 geometric self-ensemble: the mean over flips and transposes (8x the time)")
  p.add_argument("--local_stats", type=int, nargs="?", const=-1, default=0, metavar="WINDOW",
                 help="test-time local statistics: instance norm and channel attention average "
                      "over WINDOW x WINDOW boxes (alone: the training crop size; 0 = whole "
                      "image, as trained)")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def _builder_kwargs(args) -> dict:
  if args.dataset in ("paired_folder", "kohler", "blur_only"):
    if not args.path:
      raise ValueError(f"--dataset={args.dataset} needs --path=<folder>")
    if not os.path.isdir(os.path.expanduser(args.path)):
      raise FileNotFoundError(f"--path {args.path!r} is not a folder")
    kw = {"path": os.path.abspath(os.path.expanduser(args.path))}
    if args.dataset == "kohler":
      kw["frame"] = args.kohler_frame
    return kw
  if args.path:
    raise ValueError(f"--path is for paired_folder, kohler and blur_only, not {args.dataset}")
  return {}


def main(argv: list[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 done, 2 nothing could run)."""
  args = _parser().parse_args(argv)
  # TensorFlow (imported by clu's writers) logs INFO lines to the terminal;
  # keep it to warnings, as main.py and demo.py do.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

  def fail(msg: str) -> int:
    # On its own line, also after a progress bar that left the cursor mid-line.
    start = "\n" if sys.stderr.isatty() else ""
    print(f"{start}error: {msg}", file=sys.stderr)
    return 2

  if args.tile is not None and (args.tile <= 0 or args.tile % 4):
    return fail(f"--tile must be a positive multiple of 4, got {args.tile}")
  if args.tile is not None and not 0 <= args.tile_overlap < args.tile:
    return fail(f"need 0 <= --tile_overlap < --tile, got {args.tile_overlap}")
  if args.num_images < 0 or args.num_grids < 0 or args.crop_border < 0:
    return fail("--num_images, --num_grids and --crop_border must be >= 0")
  if args.kohler_best_frame and args.dataset != "kohler":
    return fail("--kohler_best_frame is for --dataset=kohler")
  if args.workdir is not None and args.model is not None:
    return fail("pass --workdir (a training workdir) or --model (a shipped model), not both")
  if args.step is not None and args.workdir is None:
    return fail("--step selects a checkpoint of --workdir; a shipped model (--model) has one "
                "set of weights")
  if args.weights is not None and args.workdir is None:
    return fail("--weights selects the weights of --workdir's checkpoint; a shipped model "
                "(--model) has one set of weights")
  try:
    builder_kwargs = _builder_kwargs(args)
  except (ValueError, FileNotFoundError) as e:
    return fail(str(e))
  if "path" in builder_kwargs:
    # Outputs inside the input folder would change its fingerprint and be read as inputs next time.
    out = os.path.realpath(os.path.expanduser(args.output_dir))
    src = os.path.realpath(builder_kwargs["path"])
    if out == src or out.startswith(src + os.sep):
      return fail(f"--output_dir {args.output_dir!r} is inside the input folder {args.path!r}")

  # Heavy imports after argument checks, so --help and usage errors are instant.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top

  try:  # before preparing the data set, which can take long
    dtype = None if args.dtype is None else jnp.dtype(args.dtype)
    model, params, restored = inference.restore(args.workdir, model=args.model, step=args.step,
                                                dtype=dtype, weights=args.weights)
  except (FileNotFoundError, ValueError) as e:
    source = (f"workdir {args.workdir!r}" if args.workdir is not None
              else f"shipped model {args.model or pretrained.DEFAULT_MODEL!r}")
    return fail(f"cannot restore a generator from {source}: {e}")
  step = restored.step or 0  # a shipped model: the step it was packed from
  print(f"restored generator from {restored} (compute dtype {jnp.dtype(model.dtype).name})",
        file=sys.stderr)
  try:
    local_stats = inference.local_stats_window(args.local_stats, restored)
  except ValueError as e:
    return fail(str(e))
  try:
    source = pipeline.get_source(args.dataset, args.split,
                                 data_dir=os.path.expanduser(args.data_dir),
                                 manual_dir=os.path.expanduser(args.manual_dir)
                                 if args.manual_dir else None, **builder_kwargs)
  except Exception as e:  # TFDS/builders raise FileNotFoundError, ValueError, TypeError, ...
    return fail(f"cannot open dataset {args.dataset!r} split {args.split!r}: "
                f"{type(e).__name__}: {e}")

  summary = evaluate_generator(
      model, params, source, output_dir=args.output_dir, step=step, dataset=args.dataset,
      y_channel=args.y_channel, crop_border=args.crop_border, tile=args.tile,
      tile_overlap=args.tile_overlap, num_images=args.num_images, num_grids=args.num_grids,
      save_outputs=args.save_outputs, kohler_frame=args.kohler_frame,
      kohler_frames_dir=builder_kwargs.get("path") if args.kohler_best_frame else None,
      progress=not args.no_progress, self_ensemble=args.self_ensemble, local_stats=local_stats,
      extra_summary={**({"workdir": os.path.abspath(args.workdir)} if args.workdir is not None
                        else {"model": restored.model}), "weights": restored.weights,
                     "split": args.split, "path": builder_kwargs.get("path")})
  print(format_result(summary))
  print(f"results in {os.path.abspath(args.output_dir)} ({SUMMARY_FILE}"
        f"{', ' + CSV_FILE if summary['means'] else ''}, {GRID_DIR}/"
        f"{', ' + OUTPUT_DIR + '/' if summary['files']['outputs'] else ''})", file=sys.stderr)
  return 0


def run() -> None:
  """Console entry point `flax-gradnet-evaluate`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
