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
`--local_stats`, `--tile`, `--tile_overlap` and `--scale_gate` default to what the model
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
for HIDE and RealBlur-J/R their published protocols, see
`evaluation.dataset_protocol`: RealBlur numbers here are WITHOUT the authors'
ECC alignment). Metrics are measured on the uint8 outputs exactly as written to
`deblurred/`, by `evaluation.evaluate_examples` (`evaluation.measure` under one
`inference.Options`: the core training's periodic evaluation and the demo
share). The measuring and the report files are the library's
(`evaluation.evaluate_generator`, `evaluation.evaluate_workdir`); this module
is the CLI: flags, restoring the model, opening the dataset, printing.

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
import dataclasses
import os
import sys
from typing import Any

# stdlib(+numpy)-only at import: --help stays instant.
from flax_gradnet import cli, evaluation, paths


def _parser() -> argparse.ArgumentParser:
  p = cli.parser(
      "python -m flax_gradnet.evaluate",
      "Evaluate a trained generator on a dataset: per-image CSV, mean PSNR/SSIM with the "
      "protocol, image grids, clu events, deblurred outputs.", __doc__,
      notes="Benchmark protocols. " + " ".join(
          f"{d}: {evaluation.dataset_protocol(d)}." for d in ("hide", "realblur_j"))
            + " realblur_r: the same for RealBlur-R.")
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
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
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

  summary = evaluation.evaluate_generator(
      model, params, source, output_dir=args.output_dir, options=options,
      step=restored.step or 0, dataset=args.dataset, y_channel=args.y_channel,
      crop_border=args.crop_border, num_images=args.num_images,
      num_grids=args.num_grids, save_outputs=args.save_outputs, kohler_frame=args.kohler_frame,
      kohler_frames_dir=builder_kwargs.get("path") if args.kohler_best_frame else None,
      progress=args.progress,
      extra_summary={**({"workdir": evaluation.workdir_name(args.workdir)}
                        if args.workdir is not None else {"model": restored.model}),
                     "weights": restored.weights,
                     "split": args.split, "path": builder_kwargs.get("path")})
  print(evaluation.format_result(summary))
  print(f"results in {evaluation.local_output_dir(args.output_dir)} ({evaluation.SUMMARY_FILE}"
        f"{', ' + evaluation.CSV_FILE if summary['means'] else ''}, {evaluation.GRID_DIR}/"
        f"{', ' + evaluation.OUTPUT_DIR + '/' if summary['files']['outputs'] else ''})",
        file=sys.stderr)
  return cli.EXIT_OK


def run() -> None:
  """Console entry point `flax-gradnet-evaluate`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
