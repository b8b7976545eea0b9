"""Deblur image files with a trained generator, safely.

    python -m flax_gradnet.deblur --output_dir=out photos/ extra/*.jpg   # the shipped model
    python -m flax_gradnet.deblur --model=gradnet_s_synth --output_dir=out blurry.png
    python -m flax_gradnet.deblur --workdir=workdirs/paper --output_dir=out photos/ extra/*.jpg
    flax-gradnet-deblur --workdir=W --output_dir=out --tile=512 --tile_overlap=32 big.png
    flax-gradnet-deblur --output_dir=out --max_memory=8 --no-progress phone_photos/

The generator comes from a training workdir (`--workdir`, `--step`, `--weights`)
or from a model shipped with the package (`--model`; the default): the restore
flags of `flax_gradnet.cli`, which `inference.restore` takes.

Inference options are the model's: `--self_ensemble`, `--low_freq_sigma`,
`--local_stats`, `--tile`, `--tile_overlap`, `--scale_gate` and `--max_memory` default to the
settings the model records in its config.json (`inference.Options`; the
paper's protocol, one pass and the generator's output as it is, for a model
that records none), and each flag given overrides its setting. The memory
budget is `cli.MAX_MEMORY_DEFAULT_GIB` (3 GiB) when neither the flag nor the
model sets one. The options used are printed on stderr before the first image.

Inputs are files, folders (their image files, not recursive) and glob patterns.
Each result is written as PNG to `--output_dir/<input stem><--suffix>.png`. A
grayscale generator (`model.channels=1`) reads every input as grayscale (ITU-R
601 luma, as PIL's convert("L")) and writes grayscale PNGs.

Safety:
* an output that resolves to an input file is refused, even with --overwrite;
* an input whose output exists is skipped (counted as skipped, not as a failure)
  unless --overwrite, so running an interrupted command again does the rest;
* two inputs that would write the same output are both refused;
* the output folder is created and tested for writing before the generator is
  loaded: one that cannot be created or written to is named in one `error:`
  line, exit status 2 (a folder created for a run that wrote nothing is removed);
* files are written atomically (temporary file + rename; the temporary file is
  removed on any failure or Ctrl-C), and write errors name the output file;
* a failure on one input, whatever it raises (an unreadable, corrupt or
  truncated file, the generator running out of memory, a write error), is
  reported by input name in one line, the others are still processed, and the
  exit status is 1 with a summary at the end;
* an image whose whole-image inference would need more than --max_memory GiB
  (`inference.plan_tile`) is deblurred in the largest tiles that fit (--tile
  chooses them itself), with a progress bar over its tiles (--no-progress hides
  the bars);
* Ctrl-C stops with one line, "interrupted after N of M written; run again to
  continue", and exit status 130: no traceback, no partial file;
* a missing or unreadable checkpoint or shipped model, no inputs, or bad flags
  (--workdir with --model, --step or --weights without --workdir, a --tile that
  is not a multiple of the generator's stride), --weights=ema for a checkpoint
  without EMA weights, or --step=best without an evaluated checkpoint exit with
  status 2.

Flags and exit statuses follow `flax_gradnet.cli`.
"""

from __future__ import annotations

import argparse
import pathlib
import glob
import os
import sys
import tempfile
import time
import warnings

from flax_gradnet import cli, paths  # stdlib-only at import: --help stays instant

# 128 + SIGINT: the status a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


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


def plan_outputs(inputs: list[str], output_dir: str, suffix: str, overwrite: bool
                 ) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
  """Pairs each input with its output path.

  Returns:
    (jobs, refused, existing): the (input, output) pairs to compute;
    {input: why refused} (an output that is an input, or shared by several
    inputs: failures); {input: output} of the outputs that exist already
    (skipped without `overwrite`; with it they are jobs).
  """
  real_inputs = {os.path.realpath(f) for f in inputs}
  by_output: dict[str, list[str]] = {}
  for f in inputs:
    stem = os.path.splitext(os.path.basename(f))[0]
    out = os.path.join(output_dir, f"{stem}{suffix}.png")
    by_output.setdefault(out, []).append(f)
  jobs, refused, existing = [], {}, {}
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
      existing[src] = out
    else:
      jobs.append((src, out))
  return jobs, refused, existing


def _usage_error(args: argparse.Namespace) -> str | None:
  """What is wrong with the flags (the message after "error: "), or None."""
  if (problem := cli.inference_flags_error(args)) is not None:
    return problem
  if paths.is_uri(args.output_dir):
    return (f"--output_dir {args.output_dir} is a URI; deblur writes local files: give a "
            "local folder")
  if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
    return f"--output_dir {args.output_dir} is a file; give a folder (created if missing)"
  if os.sep in args.suffix or (os.altsep and os.altsep in args.suffix):
    return f"--suffix must not contain a path separator, got {args.suffix!r}"
  return cli.restore_flags_error(args)


def _local(folder: str) -> str:
  """A local folder's absolute path (symlinks resolved)."""
  return str(pathlib.Path(folder).expanduser().resolve())


def prepare_output_dir(folder: str) -> tuple[str | None, str | None]:
  """Creates `folder` (with its parents) and tests that a file can be created
  in it (a probe file, removed at once).

  Returns:
    (created, problem): the top-most folder this call created (None if
    `folder` existed), for `remove_if_empty`; and what is wrong (the message
    after "error: "), or None.
  """
  created, d = None, _local(folder)
  while not os.path.lexists(d):
    created, parent = d, os.path.dirname(d)
    if parent == d:
      break
    d = parent
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    remove_if_empty(folder, created)
    return None, f"cannot create --output_dir {folder}: {e.strerror or e}"
  try:
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-probe-")
  except OSError as e:
    remove_if_empty(folder, created)
    return None, f"cannot write into --output_dir {folder}: {e.strerror or e}"
  os.close(fd)
  os.remove(probe)
  return created, None


def remove_if_empty(folder: str, created: str | None) -> None:
  """Removes `folder` and its parents up to `created` while they are empty
  (what `prepare_output_dir` created for a run that wrote nothing)."""
  if created is None:
    return
  d = _local(folder)
  while True:
    try:
      os.rmdir(d)  # only an empty folder
    except OSError:
      return
    if d == created or os.path.dirname(d) == d:
      return
    d = os.path.dirname(d)


def resolve_options(restored, args: argparse.Namespace):
  """The `inference.Options` this run deblurs with: the flags given over the
  model's recorded options (`inference.resolve_options`), and
  `cli.MAX_MEMORY_DEFAULT_GIB` as the budget when neither sets one.

  Raises:
    ValueError: options that do not fit together or this model (the message
      names the option).
  """
  from flax_gradnet import inference
  options = inference.resolve_options(restored, **cli.inference_overrides(args))
  if options.max_memory is None:
    options = options.overridden(max_memory=cli.MAX_MEMORY_DEFAULT_GIB)
  return options


def _make_deblur_fn(args: argparse.Namespace):
  """The deblurring function of the flags' generator (`fn.options`: the
  resolved options), or None after printing why not."""
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
  try:
    options = resolve_options(restored, args)
  except ValueError as e:
    cli.fail(str(e))
    return None
  print(f"inference: {options.describe()}; memory budget {options.max_memory:g} GiB "
        f"({cli.options_source(args, restored.options_recorded)})", file=sys.stderr)
  warning = inference.low_freq_warning(restored, options.low_freq_sigma)
  if warning:
    print(warning, file=sys.stderr)
  try:
    fn = inference.deblur_fn_for(model, params, options)
  except ValueError as e:
    which = "--tile" if args.tile is not None else "the model's recorded tile"
    cli.fail(str(e).replace("tile must", f"{which} must", 1))
    return None
  return fn


def failure_reason(e: BaseException) -> str:
  """One line saying why an image failed: the first line of the error, with
  its type unless it is an OSError or ValueError (whose messages say it); an
  out-of-memory error (jax's RESOURCE_EXHAUSTED, MemoryError) says what to do."""
  text = str(e).strip()
  first = text.splitlines()[0].strip() if text else type(e).__name__
  if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text:
    return f"out of memory ({first}); lower --max_memory or give a smaller --tile"
  if isinstance(e, (OSError, ValueError)):
    return first
  return f"{type(e).__name__}: {first}"


def _identity(path: str) -> tuple[int, ...] | None:
  """What tells one file at `path` from its replacement (None: no file)."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class _Counts:
  """How far a run got, for Ctrl-C's line: `total` outputs to write, and
  `written()`, read from the folder (the outputs that appeared or were replaced
  since `start`), so an interrupt that lands between a file's rename and the
  loop's count still counts it."""

  def __init__(self):
    self.total = 0
    self._before: dict[str, tuple[int, ...] | None] = {}

  def start(self, outputs: list[str]) -> None:
    self.total = len(outputs)
    self._before = {out: _identity(out) for out in outputs}

  def written(self) -> int:
    return sum(1 for out, before in self._before.items()
               if (now := _identity(out)) is not None and now != before)


class _TileBar:
  """`progress=` of `inference.deblur_image`: a tqdm bar over one image's tiles,
  shown from its first tile (never for a whole image) and removed when closed."""

  def __init__(self, enabled: bool, name: str):
    self.enabled, self.name, self.bar = enabled, name, None

  def __call__(self, done: int, total: int) -> None:
    if not self.enabled:
      return
    if self.bar is None:
      from tqdm import tqdm
      self.bar = tqdm(total=total, unit="tile", desc=self.name, leave=False, file=sys.stderr,
                      dynamic_ncols=True)
    self.bar.update(done - self.bar.n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _deblur_files(fn, jobs: list[tuple[str, str]], args: argparse.Namespace,
                  failures: dict[str, str]) -> int:
  """Deblurs each (input, output) job with `fn` and its options (`fn.options`,
  `_make_deblur_fn`); records failures by input (whatever an image raises: one
  line each, the rest run); returns the count written."""
  from tqdm import tqdm

  from flax_gradnet import image_io, inference

  show = getattr(args, "progress", True)
  options = fn.options  # the flags over the model's recorded options (`resolve_options`)
  noted_sizes, written = set(), 0
  bar = tqdm(jobs, unit="img", file=sys.stderr, disable=not show or len(jobs) <= 1,
             dynamic_ncols=True)
  try:
    for src, out in bar:
      bar.set_postfix_str(os.path.basename(src), refresh=False)
      tiles = _TileBar(show, os.path.basename(src))
      try:
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always", image_io.ImageConversionWarning)
          image = image_io.read_image(src, fn.channels)  # grey for a grayscale model
        for w in caught:
          tqdm.write(f"warning: {w.message}", file=sys.stderr)
        h, w = image.shape[:2]
        tile = inference.plan_tile(fn, h, w, tile=options.tile,
                                   tile_overlap=options.tile_overlap,
                                   max_memory=options.max_memory)
        if options.tile is None and tile is not None and (h, w) not in noted_sizes:
          noted_sizes.add((h, w))
          need = (inference.pass_bytes(fn, h, w)  # the pass and the host's arrays
                  + inference.host_bytes(h, w, fn.channels)) / inference.GIB
          tqdm.write(f"{w}x{h} image(s): ~{need:.3g} GiB whole, over --max_memory "
                     f"{options.max_memory:g}; deblurred in {tile}x{tile} tiles",
                     file=sys.stderr)
        result = inference.deblur_image(fn, image, options, tile=tile, progress=tiles)
        image_io.write_image(out, result, overwrite=args.overwrite)
      except image_io.ImageReadError as e:
        failures[src] = e.reason
        tqdm.write(f"error: {e}", file=sys.stderr)
      except Exception as e:  # pylint: disable=broad-except  (one image's failure, any kind)
        failures[src] = failure_reason(e)
        tqdm.write(f"error: {src}: {failures[src]}", file=sys.stderr)
      else:
        written += 1
      finally:
        tiles.close()
  finally:
    bar.close()
  return written


def _summarise(written: int, skipped: int, failures: dict[str, str], output_dir: str,
               elapsed: float) -> int:
  """Prints the closing summary; returns the exit status (1 if anything failed)."""
  print(f"{written} image(s) written to {output_dir} in {elapsed:.1f}s; {skipped} skipped "
        f"(output exists); {len(failures)} failed", file=sys.stderr)
  if failures:
    print("failed:", file=sys.stderr)
    for src, why in failures.items():
      print(f"  {src}: {why}", file=sys.stderr)
    return cli.EXIT_SOME_FAILED
  return cli.EXIT_OK


def _run(args: argparse.Namespace, counts: _Counts) -> int:
  """The tool after its flags were checked; returns the exit status."""
  inputs, unmatched = expand_inputs(args.inputs)
  failures: dict[str, str] = {s: "no such file, or no image files matched" for s in unmatched}
  if not inputs:
    for s, why in failures.items():
      print(f"error: {s}: {why}", file=sys.stderr)
    return cli.fail("no input images")

  jobs, refused, existing = plan_outputs(inputs, args.output_dir, args.suffix, args.overwrite)
  for src, why in refused.items():
    print(f"error: {src}: {why}", file=sys.stderr)
  failures.update(refused)
  if existing:
    print(f"skipping {len(existing)} input(s) whose output exists in {args.output_dir} "
          "(--overwrite recomputes them)", file=sys.stderr)
  counts.start([out for _, out in jobs])
  start, written = time.time(), 0
  if jobs:
    # The folder is checked before the generator loads (seconds to minutes).
    created, problem = prepare_output_dir(args.output_dir)
    if problem is not None:
      return cli.fail(problem)
    try:
      # Heavy imports (jax) after argument checks, so --help and usage errors are instant.
      fn = _make_deblur_fn(args)
      if fn is None:
        return cli.EXIT_NOTHING_RAN
      start = time.time()
      written = _deblur_files(fn, jobs, args, failures)
    finally:
      remove_if_empty(args.output_dir, created)  # a run that wrote nothing leaves no folder
  return _summarise(written, len(existing), failures, args.output_dir, time.time() - start)


def main(argv: list[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 ok, 1 some files failed, 2 nothing
  could run, 130 interrupted by Ctrl-C)."""
  args = _parser().parse_args(argv)
  if (problem := _usage_error(args)) is not None:
    return cli.fail(problem)
  counts = _Counts()
  try:
    return _run(args, counts)
  except KeyboardInterrupt:
    print(f"interrupted after {counts.written()} of {counts.total} written; run again to "
          "continue", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def run() -> None:
  """Console entry point `flax-gradnet-deblur`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
