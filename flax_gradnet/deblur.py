"""Deblur image files with a trained generator, safely.

    python -m flax_gradnet.deblur --output_dir=out photos/ extra/*.jpg   # the shipped model
    python -m flax_gradnet.deblur --model=gradnet_s_synth --output_dir=out blurry.png
    python -m flax_gradnet.deblur --workdir=workdirs/paper --output_dir=out photos/ extra/*.jpg
    flax-gradnet-deblur --workdir=W --output_dir=out --tile=512 --tile_overlap=32 big.png

The generator comes from a training workdir (`--workdir`, `--step`, `--weights`)
or from a model shipped with the package (`--model`; the default): the restore
flags of `flax_gradnet.cli`, which `inference.restore` takes.

Inputs are files, folders (their image files, not recursive) and glob patterns.
Each result is written as PNG to `--output_dir/<input stem><--suffix>.png`. A
grayscale generator (`model.channels=1`) reads every input as grayscale (ITU-R
601 luma, as PIL's convert("L")) and writes grayscale PNGs.

Safety:
* an output that resolves to an input file is refused, even with --overwrite;
* an existing output is left alone (reported as a failure) unless --overwrite;
* two inputs that would write the same output are both refused;
* files are written atomically (temporary file + rename);
* an unreadable, corrupt or truncated input is reported by name, the others are
  still processed, and the exit status is 1 with a summary at the end;
* a missing or unreadable checkpoint or shipped model, no inputs, or bad flags
  (--workdir with --model, --step or --weights without --workdir), --weights=ema for a
  checkpoint without EMA weights, or --step=best without an evaluated checkpoint exit with
  status 2.

Flags and exit statuses follow `flax_gradnet.cli`.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings

from flax_gradnet import cli  # stdlib-only at import: --help stays instant


def _parser() -> argparse.ArgumentParser:
  p = cli.parser("python -m flax_gradnet.deblur",
                 "Deblur images with a generator restored from a training workdir or shipped "
                 "with the package.", __doc__)
  p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
  cli.add_restore_flags(p)
  cli.add_output_dir_flag(p, "folder for the results (created if missing)")
  cli.add_inference_flags(p)
  cli.add_dtype_flag(p)
  cli.add_overwrite_flag(p, "replace existing outputs (never inputs)")
  p.add_argument("--suffix", default="", help="appended to each output's file stem (default none)")
  return p


def expand_inputs(specs: list[str]) -> tuple[list[str], list[str]]:
  """Files named by `specs` (files, folders, globs) and the specs that matched nothing.

  A folder gives its files ending in one of `image_io.IMAGE_EXTENSIONS`.
  """
  from flax_gradnet import image_io  # numpy and Pillow: imported once the flags are checked
  files, unmatched = [], []
  for spec in specs:
    if os.path.isdir(spec):
      found = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                     if image_io.has_image_extension(n)
                     and os.path.isfile(os.path.join(spec, n)))
    elif os.path.lexists(spec):
      found = [spec]  # named explicitly: tried whatever its extension
    else:
      found = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
    if not found:
      unmatched.append(spec)
    files.extend(found)
  seen, unique = set(), []
  for f in files:  # the same file named twice is processed once
    key = os.path.realpath(f)
    if key not in seen:
      seen.add(key)
      unique.append(f)
  return unique, unmatched


def plan_outputs(inputs: list[str], output_dir: str, suffix: str,
                 overwrite: bool) -> tuple[list[tuple[str, str]], dict[str, str]]:
  """Pairs each input with its output path; returns (jobs, {input: reason refused})."""
  real_inputs = {os.path.realpath(f) for f in inputs}
  by_output: dict[str, list[str]] = {}
  for f in inputs:
    stem = os.path.splitext(os.path.basename(f))[0]
    out = os.path.join(output_dir, f"{stem}{suffix}.png")
    by_output.setdefault(out, []).append(f)
  jobs, refused = [], {}
  for out, srcs in by_output.items():
    if len(srcs) > 1:
      for s in srcs:
        refused[s] = f"output name {out} is shared by {len(srcs)} inputs: {', '.join(srcs)}"
      continue
    src = srcs[0]
    real_out = os.path.realpath(out)
    if real_out in real_inputs or (os.path.exists(out) and any(
        os.path.samefile(out, i) for i in inputs if os.path.exists(i))):
      refused[src] = f"output {out} is an input file; refusing to write over an input"
    elif os.path.lexists(out) and not overwrite:
      refused[src] = f"output {out} exists (pass --overwrite to replace it)"
    else:
      jobs.append((src, out))
  return jobs, refused


def _usage_error(args: argparse.Namespace) -> str | None:
  """What is wrong with the flags (the message after "error: "), or None."""
  if (problem := cli.inference_flags_error(args)) is not None:
    return problem
  if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
    return f"--output_dir {args.output_dir} is a file; give a folder (created if missing)"
  if os.sep in args.suffix or (os.altsep and os.altsep in args.suffix):
    return f"--suffix must not contain a path separator, got {args.suffix!r}"
  return cli.restore_flags_error(args)


def _make_deblur_fn(args: argparse.Namespace):
  """The deblurring function of the flags' generator, or None after printing why not."""
  import jax.numpy as jnp

  from flax_gradnet import inference

  try:
    dtype = None if args.dtype is None else jnp.dtype(args.dtype)
    model, params, restored = inference.restore(args.workdir, model=args.model, step=args.step,
                                                dtype=dtype, weights=args.weights)
  except (FileNotFoundError, ValueError) as e:
    cli.fail(f"cannot restore a generator from {cli.restore_source(args)}: {e}")
    return None
  print(f"restored generator from {restored} (compute dtype {jnp.dtype(model.dtype).name})",
        file=sys.stderr)
  warning = inference.low_freq_warning(restored, args.low_freq_sigma)
  if warning:
    print(warning, file=sys.stderr)
  try:
    local_stats = inference.local_stats_window(args.local_stats, restored)
  except ValueError as e:
    cli.fail(str(e))
    return None
  return inference.make_deblur_fn(model, params, ensemble=args.self_ensemble,
                                  local_stats=local_stats)


def _deblur_files(fn, jobs: list[tuple[str, str]], args: argparse.Namespace,
                  failures: dict[str, str]) -> int:
  """Deblurs each (input, output) job; records failures by input; returns the count written."""
  from tqdm import tqdm

  from flax_gradnet import image_io, inference

  written = 0
  bar = tqdm(jobs, unit="img", file=sys.stderr, disable=len(jobs) <= 1, dynamic_ncols=True)
  for src, out in bar:
    bar.set_postfix_str(os.path.basename(src), refresh=False)
    try:
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", image_io.ImageConversionWarning)
        image = image_io.read_image(src, fn.channels)  # grey for a grayscale model
      for w in caught:
        tqdm.write(f"warning: {w.message}", file=sys.stderr)
      result = inference.deblur_image(fn, image, tile=args.tile, tile_overlap=args.tile_overlap,
                                      low_freq_sigma=args.low_freq_sigma)
      image_io.write_image(out, result, overwrite=args.overwrite)
    except image_io.ImageReadError as e:
      failures[src] = e.reason
      tqdm.write(f"error: {e}", file=sys.stderr)
      continue
    except (OSError, ValueError) as e:  # write errors, an output appearing meanwhile, ...
      failures[src] = str(e)
      tqdm.write(f"error: {src}: {e}", file=sys.stderr)
      continue
    written += 1
  bar.close()
  return written


def _summarise(written: int, failures: dict[str, str], output_dir: str, elapsed: float) -> int:
  """Prints the closing summary; returns the exit status (1 if anything failed)."""
  print(f"{written} image(s) written to {output_dir} in {elapsed:.1f}s; "
        f"{len(failures)} failed", file=sys.stderr)
  if failures:
    print("failed:", file=sys.stderr)
    for src, why in failures.items():
      print(f"  {src}: {why}", file=sys.stderr)
    return cli.EXIT_SOME_FAILED
  return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 ok, 1 some files failed, 2 nothing could run)."""
  args = _parser().parse_args(argv)
  if (problem := _usage_error(args)) is not None:
    return cli.fail(problem)

  inputs, unmatched = expand_inputs(args.inputs)
  failures: dict[str, str] = {s: "no such file, or no image files matched" for s in unmatched}
  if not inputs:
    for s, why in failures.items():
      print(f"error: {s}: {why}", file=sys.stderr)
    return cli.fail("no input images")

  # Heavy imports (jax) after argument checks, so --help and usage errors are instant.
  fn = _make_deblur_fn(args)
  if fn is None:
    return cli.EXIT_NOTHING_RAN

  jobs, refused = plan_outputs(inputs, args.output_dir, args.suffix, args.overwrite)
  failures.update(refused)
  for src, why in refused.items():
    print(f"skipped {src}: {why}", file=sys.stderr)
  if jobs:  # the folder appears only when something is written into it
    os.makedirs(args.output_dir, exist_ok=True)

  start = time.time()
  written = _deblur_files(fn, jobs, args, failures)
  return _summarise(written, failures, args.output_dir, time.time() - start)


def run() -> None:
  """Console entry point `flax-gradnet-deblur`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
