"""The command-line convention every flax_gradnet tool follows.

The argparse tools (`evaluate`, `deblur`, `export`, `convert_vgg19`, `cost`,
`python -m flax_gradnet.pretrained`) build their parsers with `parser` and take
their shared flags from here, so a flag has one name and one meaning in every
tool:

    --workdir       a training workdir (config.json + checkpoints/)
    --model         a model shipped with the package (`pretrained`)
    --step          a checkpoint step of --workdir, or `best`
    --weights       ema | raw: which generator weights of --workdir's checkpoint
    --dtype         the compute dtype
    --output_dir    a folder of results        --output   one output file
    --data_dir, --manual_dir, --path   where data lives: TFDS's prepared records,
                    TFDS's manual dir, a folder of images
    --overwrite     replace existing outputs (never inputs)
    --tile, --tile_overlap, --self_ensemble, --local_stats, --low_freq_sigma,
    --scale_gate,
    --max_memory    inference options: each overrides the model's recorded
                    setting (`inference.Options`); not given, the model's
                    (the paper's protocol when it records none)
    --progress      a progress bar on stderr (`--no-progress` hides it)

On/off flags are `--x` / `--no-x` (argparse.BooleanOptionalAction). Flags
are spelled out in full (no abbreviations: `--output` is never taken for
`--output_dir`), and `--help` shows every flag's default. A tool names itself
as it was started: `flax-gradnet-<tool>` from its console script, else
`python -m flax_gradnet.<tool>` (`prog_name`). Exit
status: `EXIT_OK` (0) all done; `EXIT_SOME_FAILED` (1) some inputs failed, the
others are done; `EXIT_NOTHING_RAN` (2) nothing ran: bad arguments (argparse's
own usage errors exit 2 too), missing files. Each tool's `--help` ends with
"Examples:", the command lines of its module docstring (`examples`).

The training tools (`main`, `demo`) keep absl flags: their `--config` is an
ml_collections config file whose fields are overridden on the command line
(`--config.num_train_steps=10`), which only absl's flags provide.
`parse_absl_flags` gives them the same `--help` (exit 0, with examples) and the
same exit status 2 for a bad `--config` or argument.

Only the standard library is imported here, so `--help` and usage errors stay
instant; absl is imported by `parse_absl_flags` itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from typing import Any, Iterator, NoReturn, Sequence

EXIT_OK = 0  # everything asked for was done
EXIT_SOME_FAILED = 1  # some inputs failed (each reported); the others were done
EXIT_NOTHING_RAN = 2  # nothing ran: bad arguments, missing files or models

BEST_STEP = "best"  # `checkpoints.BEST_STEP` (this module imports no jax)
WEIGHTS = ("ema", "raw")  # `checkpoints.WEIGHTS`
DTYPES = ("float32", "bfloat16")
# The inference flags (`add_inference_flags`) default to None: "the model's
# recorded setting" (`inference.Options`, `inference.resolve_options`; the
# paper's protocol, one pass and the generator's output as it is, for a model
# that records none). These mirror `inference`'s names, which this module
# cannot import (tested equal):
TILE_OVERLAP_DEFAULT = 32  # `inference.TILE_OVERLAP`: the overlap no model overrides
# `--self_ensemble` (`inference.ENSEMBLES`): "off" one pass; "mean" the x8
# flips-and-transposes mean; "shrink" the same 8 passes moved back toward the
# input where they disagree (`inference.self_ensemble_shrunk`).
ENSEMBLES = ("off", "mean", "shrink")
# `--max_memory` (GiB; `inference.deblur_image(max_memory=)`): the memory one
# image's inference may take, the generator's pass (`inference.pass_bytes`)
# plus the image's host arrays (`inference.host_bytes`: 6C + 12 bytes a pixel,
# 30 for RGB, 1.34 GiB at 48 megapixels); an image whose whole-image inference
# would need more is deblurred in tiles that inference chooses. The process's
# baseline (Python, jax, the compiled generator: ~0.5-1 GiB) comes on top. The
# tools' budget when neither the flag nor the model (`Options.max_memory`) sets
# one: a budget is a property of the machine. At 3 GiB an 8000x6000 (48
# megapixel) JPEG peaked at 2.7 GiB of resident memory in all, process
# included (the shipped model, one pass and the low-frequency step, 2128x2128
# tiles; /usr/bin/time -v, XLA:CPU): under 4 GiB. The x8 self-ensemble's
# estimate is 8x one pass's, so its tiles are smaller (752x752) and its
# measured pass a smaller fraction of the estimate.
MAX_MEMORY_DEFAULT_GIB = 3.0
# The help's words for a default of None.
MODEL_DEFAULT = "default: the model's recorded setting (the paper's protocol when none)"
SCRIPT_PREFIX = "flax-gradnet-"  # the console scripts' names (setup.cfg)
_WIDTH = 79  # of the description and the epilog, which argparse does not wrap here
_EXAMPLE_STARTS = ("python -m flax_gradnet", SCRIPT_PREFIX)


# ----------------------------------------------------------------------------
# Parsers, help and errors.


def examples(doc: str) -> str:
  """The "Examples:" section of a tool's --help: the command lines of its
  module docstring (lines starting with `python -m flax_gradnet` or
  `flax-gradnet-`, with their backslash continuations).

  Raises:
    ValueError: `doc` holds no command line.
  """
  found, indent, continued = [], 0, False
  for line in doc.splitlines():
    text = line.strip()
    if continued:
      found.append("  " + line[indent:].rstrip())
    elif text.startswith(_EXAMPLE_STARTS):
      indent = len(line) - len(line.lstrip())
      found.append("  " + text)
    else:
      continue
    continued = text.endswith("\\")
  if not found:
    raise ValueError("the docstring has no example command line")
  return "Examples:\n" + "\n".join(found)


def _fill(text: str) -> str:
  return "\n\n".join(textwrap.fill(" ".join(p.split()), _WIDTH) for p in text.split("\n\n"))


def prog_name(prog: str) -> str:
  """How a tool names itself in usage lines and errors: the console script's
  name (`flax-gradnet-<tool>`) when it was started as one, else `prog`
  (`python -m flax_gradnet.<tool>`)."""
  name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
  for suffix in (".exe", "-script.py"):  # the launchers pip writes on Windows
    name = name.removesuffix(suffix)
  return name if name.startswith(SCRIPT_PREFIX) else prog


def format_default(value: object) -> str:
  """A default as --help shows it: `on`/`off` for a switch, else its str."""
  if isinstance(value, bool):
    return "on" if value else "off"
  return str(value)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """The description and epilog as written; each option's help ends with its
  default, unless the help already speaks of it ("default ..."; a default of
  None means "not given", which the help explains where it matters)."""

  def _get_help_string(self, action: argparse.Action) -> str:
    text = action.help or ""
    default = action.default
    if (not action.option_strings or action.required or default is None
        or default is argparse.SUPPRESS or default == [] or "default" in text.lower()):
      return text
    return f"{text} (default: {format_default(default).replace('%', '%%')})"


def parser(prog: str, description: str, doc: str,
           notes: str | None = None) -> argparse.ArgumentParser:
  """An ArgumentParser whose --help shows every default and ends with `notes`
  and the examples of `doc`. Flags are never abbreviated (`allow_abbrev=False`:
  `--output` must not silently mean `--output_dir`).

  Args:
    prog: how the tool is run (`python -m flax_gradnet.<tool>`); a console
      script shows its own name instead (`prog_name`).
    description: what the tool does (wrapped).
    doc: the tool's module docstring, holding its example command lines.
    notes: more text for the end of --help, before the examples (wrapped).
  """
  epilog = (_fill(notes) + "\n\n" if notes else "") + examples(doc)
  return argparse.ArgumentParser(prog=prog_name(prog), description=_fill(description),
                                 epilog=epilog, formatter_class=_HelpFormatter,
                                 allow_abbrev=False)


def add_switch(p: argparse.ArgumentParser, flag: str, help: str,  # pylint: disable=redefined-builtin
               default: bool = False, old_negation: str | None = None) -> None:
  """An on/off flag `--x` / `--no-x`. `old_negation`: an earlier spelling of
  `--no-x` (e.g. `--no_x`), still accepted but not listed in --help."""
  p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
  if old_negation:
    p.add_argument(old_negation, dest=flag.lstrip("-"), action="store_false",
                   help=argparse.SUPPRESS)


def add_progress_flag(p: argparse.ArgumentParser, old_negation: str | None = None) -> None:
  """`--progress` / `--no-progress`: a progress bar on stderr (default on).
  Adding it twice is a no-op (`add_inference_flags` adds it, so every tool
  that deblurs has it)."""
  try:
    add_switch(p, "--progress", "a progress bar on stderr", default=True,
               old_negation=old_negation)
  except argparse.ArgumentError:  # --progress is there already (and is checked first)
    pass


def fail(message: str) -> int:
  """Prints `error: message` on stderr; returns `EXIT_NOTHING_RAN`."""
  print(f"error: {message}", file=sys.stderr)
  return EXIT_NOTHING_RAN


# ----------------------------------------------------------------------------
# The shared flags.


def parse_step(text: str) -> int | str:
  """The value of a `--step` flag: a checkpoint step, or "best" (the highest
  held-out PSNR that training recorded, config.keep_best)."""
  if text == BEST_STEP:
    return text
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected a checkpoint step or '{BEST_STEP}', got {text!r}") from None


STEP_HELP = ("checkpoint step of --workdir (default: latest), or 'best': the highest held-out "
             "PSNR of training's periodic evaluation (config.keep_best)")
WEIGHTS_HELP = ("which generator weights of --workdir's checkpoint: 'ema' (the moving average "
                "kept with config.ema_decay > 0) or 'raw' (default: ema when the checkpoint "
                "has it, else raw)")


def add_restore_flags(p: argparse.ArgumentParser, *, shipped: bool = True,
                      workdir_help: str | None = None) -> None:
  """`--workdir`, `--step`, `--weights` and (with `shipped`) `--model`: where a
  generator comes from (`inference.restore` takes their values; with `shipped`,
  check them with `restore_flags_error`).

  A training workdir (`--workdir`, optionally `--step`: a step or `best`, the
  highest held-out PSNR training recorded; and `--weights ema|raw`, default the
  EMA when the checkpoint has one), or a model shipped with the package
  (`--model`, see `python -m flax_gradnet.pretrained --list`); with neither, the
  shipped `pretrained.DEFAULT_MODEL`.
  """
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top  (stdlib only)
  p.add_argument("--workdir", default=None, help=workdir_help or (
      "training workdir (config.json + checkpoints/)"
      + ("; default: the shipped model, see --model" if shipped else "")))
  if shipped:
    p.add_argument("--model", default=None,
                   help="name of a model shipped with the package (python -m "
                        "flax_gradnet.pretrained --list); the default when --workdir is "
                        f"absent: {pretrained.DEFAULT_MODEL}")
  p.add_argument("--step", type=parse_step, default=None, help=STEP_HELP)
  p.add_argument("--weights", choices=WEIGHTS, default=None, help=WEIGHTS_HELP)


def restore_flags_error(args: argparse.Namespace) -> str | None:
  """What is wrong with the flags of `add_restore_flags`, or None."""
  if args.workdir is not None and args.model is not None:
    return "pass --workdir (a training workdir) or --model (a shipped model), not both"
  if args.step is not None and args.workdir is None:
    return ("--step selects a checkpoint of --workdir; a shipped model (--model) has one "
            "set of weights")
  if args.weights is not None and args.workdir is None:
    return ("--weights selects the weights of --workdir's checkpoint; a shipped model "
            "(--model) has one set of weights")
  return None


def restore_source(args: argparse.Namespace) -> str:
  """Where the flags of `add_restore_flags` restore from, for messages."""
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top  (stdlib only)
  if args.workdir is not None:
    return f"workdir {args.workdir!r}"
  return f"shipped model {getattr(args, 'model', None) or pretrained.DEFAULT_MODEL!r}"


def add_dtype_flag(p: argparse.ArgumentParser) -> None:
  p.add_argument("--dtype", choices=DTYPES, default=None,
                 help="compute dtype (default: the training config's compute_dtype)")


def add_output_dir_flag(p: argparse.ArgumentParser, help: str) -> None:  # pylint: disable=redefined-builtin
  p.add_argument("--output_dir", required=True, help=help)


def add_output_flag(p: argparse.ArgumentParser, help: str) -> None:  # pylint: disable=redefined-builtin
  p.add_argument("--output", required=True, help=help)


def add_overwrite_flag(p: argparse.ArgumentParser, help: str) -> None:  # pylint: disable=redefined-builtin
  add_switch(p, "--overwrite", help)


def add_data_flags(p: argparse.ArgumentParser) -> None:
  """`--data_dir`, `--manual_dir`, `--path`: where a data set lives (training
  takes the first two as `--config.data_dir` / `--config.manual_dir`)."""
  p.add_argument("--data_dir", default="~/tensorflow_datasets",
                 help="where TFDS keeps the prepared records")
  p.add_argument("--manual_dir", default=None,
                 help="TFDS manual dir holding GOPRO_Large/, HIDE_dataset/ (or their zips) and/or "
                      "the extracted RealBlur.tar.gz (directly or in RealBlur/)")
  p.add_argument("--path", default=None, help="the folder of paired_folder / kohler / blur_only")


def add_inference_flags(p: argparse.ArgumentParser, *, max_memory: bool = True) -> None:
  """`--tile`, `--tile_overlap`, `--self_ensemble`, `--local_stats`,
  `--low_freq_sigma`, `--scale_gate`, `--max_memory` (unless `max_memory=False`, for a tool
  whose inference takes no memory budget) and `--progress` (check them with
  `inference_flags_error`).

  Every inference flag defaults to None, "the model's recorded setting": the
  tools resolve `inference.resolve_options(restored, **inference_overrides(args))`
  (a flag given > the model's recorded setting > the paper's protocol).
  """
  p.add_argument("--tile", type=int, default=None,
                 help="tile side in pixels, a multiple of the generator's stride (4 for the "
                      "paper's generator; default: the model's recorded setting, else whole "
                      "images)")
  p.add_argument("--tile_overlap", type=int, default=None,
                 help="overlap of neighbouring tiles, for --tile, the model's tiles or those "
                      "of --max_memory (default: the model's recorded setting, else "
                      f"{TILE_OVERLAP_DEFAULT})")
  p.add_argument("--self_ensemble", choices=ENSEMBLES, nargs="?", const="mean", default=None,
                 help="x8 geometric self-ensemble over flips and transposes (8x the time of "
                      "'off'): 'mean' averages the 8 outputs (also the bare flag), 'shrink' "
                      "moves the mean back toward the input where the 8 disagree; 'off' (or "
                      f"--no-self_ensemble) = one pass ({MODEL_DEFAULT})")
  # The on/off spelling the flag had before it took a value: a hidden alias.
  p.add_argument("--no-self_ensemble", dest="self_ensemble", action="store_const", const="off",
                 help=argparse.SUPPRESS)
  p.add_argument("--local_stats", type=int, nargs="?", const=-1, default=None, metavar="WINDOW",
                 help="test-time local statistics: instance norm and channel attention average "
                      "over WINDOW x WINDOW boxes (alone: the training crop size; 0 = whole "
                      f"image, as trained; {MODEL_DEFAULT})")
  p.add_argument("--low_freq_sigma", type=float, default=None, metavar="PIXELS",
                 help="keep the input's frequencies below a Gaussian of this standard deviation "
                      "(a blur leaves them, the generator may shift them; "
                      "inference.keep_input_low_frequencies; 0 = the generator's output as it "
                      f"is; {MODEL_DEFAULT})")
  p.add_argument("--scale_gate", type=float, default=None, metavar="RATIO",
                 help="> 0: also deblur the image at half resolution and, where that pass "
                      "corrects at least RATIO times as much as the full-resolution one in the "
                      "coarse band, take that band from it: for strong camera shake (25-50 px) "
                      "that a net sees only at half resolution; one choice per image, 1/4 more "
                      "passes (inference.gate_half_scale; the shipped default records 1.05, "
                      f"docs/inference.md; 0 = off; {MODEL_DEFAULT})")
  if max_memory:
    p.add_argument("--max_memory", type=float, default=None, metavar="GIB",
                   help="memory budget of one image's inference, in GiB: the generator's pass "
                        "plus the image's host arrays (6C+12 bytes a pixel: 30 for RGB, 1.34 "
                        "GiB at 48 megapixels); an image whose whole-image inference would "
                        "need more is deblurred in tiles that inference chooses (--tile sets "
                        "the tiles itself). The process's own ~0.5-1 GiB comes on top "
                        "(default: the model's recorded budget, else "
                        f"{MAX_MEMORY_DEFAULT_GIB:g})")
  add_progress_flag(p)


# The `inference.Options` fields the flags of `add_inference_flags` set.
INFERENCE_FLAGS = ("self_ensemble", "low_freq_sigma", "local_stats", "tile", "tile_overlap",
                   "scale_gate", "max_memory")


def inference_flags_error(args: argparse.Namespace) -> str | None:
  """What is wrong with the flags of `add_inference_flags` that were given, or
  None. (A tile's multiple of the generator's stride is checked once the
  generator is known; the model's recorded settings when they are resolved.)"""
  if args.tile is not None and args.tile <= 0:
    return f"--tile must be a positive number of pixels, got {args.tile}"
  if args.tile_overlap is not None and args.tile_overlap < 0:
    return f"--tile_overlap must be >= 0 pixels, got {args.tile_overlap}"
  if args.tile is not None and args.tile_overlap is not None and args.tile_overlap >= args.tile:
    return f"need 0 <= --tile_overlap < --tile, got {args.tile_overlap}"
  if args.low_freq_sigma is not None and not 0 <= args.low_freq_sigma < float("inf"):
    return f"--low_freq_sigma must be >= 0 pixels (0 = off), got {args.low_freq_sigma}"
  if args.scale_gate is not None and not 0 <= args.scale_gate < float("inf"):
    return f"--scale_gate must be >= 0 (0 = off), got {args.scale_gate}"
  if args.local_stats is not None and args.local_stats < -1:
    return f"--local_stats must be >= 0 (0 = off), got {args.local_stats}"
  max_memory = getattr(args, "max_memory", None)
  if max_memory is not None and not 0 < max_memory < float("inf"):  # also NaN
    return f"--max_memory must be a positive number of GiB, got {max_memory}"
  return None


def options_source(args: argparse.Namespace, recorded: bool) -> str:
  """Where a tool's inference options come from, for its log line: the flags
  given (named) over the model's recorded options (`recorded`: the model's
  config.json has an `inference` field) or over the paper's protocol."""
  base = ("the model's recorded options" if recorded
          else "the paper's protocol: the model records no options")
  given = [f"--{name}" for name, v in inference_overrides(args).items() if v is not None]
  return f"{', '.join(given)} over {base}" if given else base


def inference_overrides(args: argparse.Namespace) -> dict[str, object]:
  """{`inference.Options` field: flag value} of the inference flags (None: not
  given), for `inference.resolve_options(restored, **inference_overrides(args))`."""
  return {name: getattr(args, name, None) for name in INFERENCE_FLAGS}


# ----------------------------------------------------------------------------
# The absl tools (main, demo).

_HELP_FLAGS = ("-h", "--help", "-?", "--helpshort")


@contextlib.contextmanager
def holding_lock(lock: Any) -> Iterator[None]:
  """For the training tools: holds a `workdir.WorkdirLock` (None: no lock, e.g.
  processes other than 0) while the block runs. Its note (a stale lock taken
  over) goes to stderr; a refusal (the workdir is busy or unusable:
  `WorkdirBusy` is a RuntimeError) is one `error:` line and exit 2."""
  if lock is not None:
    try:
      note = lock.acquire()
    except (ValueError, RuntimeError) as e:
      exit_error(str(e))
    if note:
      print(note, file=sys.stderr, flush=True)
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def exit_error(message: str) -> NoReturn:
  """For the absl tools: prints one `error:` line, exits with `EXIT_NOTHING_RAN`."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(EXIT_NOTHING_RAN)


def absl_help(prog: str, doc: str, flag_names: Sequence[str]) -> str:
  """--help of an absl tool: the docstring's first line, its flags, its examples."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  lines = [f"usage: {prog} [--flag=value ...]", "", doc.strip().splitlines()[0], "", "flags:"]
  for name in flag_names:
    flag = flags.FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    lines.append(f"  --{name}: {flag.help}{default}")
    if name == "config":
      lines.append("  --config.<field>=value: overrides one field of the config")
  lines += ["", f"{prog} --helpfull also lists absl's own flags.", "", examples(doc)]
  return "\n".join(lines)


def _resolve_config(argv: Sequence[str]) -> list[str]:
  """`argv` with its `--config` value (`--config=X` or `--config X`) replaced by
  the file it means (`configs.resolve`: `configs/<name>.py` works from any
  folder); one `error:` line naming what was tried, exit 2, when it means none."""
  import configs  # pylint: disable=g-import-not-at-top  (the package's configs)
  argv = list(argv)
  for i, arg in enumerate(argv[1:], start=1):
    if arg == "--":
      break
    if arg.startswith("--config="):
      at, value = i, arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      at, value = i + 1, argv[i + 1]
    else:
      continue
    try:
      resolved = configs.resolve(value)
    except ValueError as e:
      exit_error(f"--config could not be loaded: {e}")
    argv[at] = f"--config={resolved}" if at == i else resolved
  return argv


def parse_absl_flags(argv: Sequence[str], *, prog: str, doc: str,
                     flag_names: Sequence[str]) -> list[str]:
  """absl's parsing (for `app.run(flags_parser=...)`), in this module's convention:
  `--help` prints `absl_help` and exits 0 (absl's would exit 1); `--config`
  names a file or a config of the `configs` package (`configs.resolve`); a
  config that does not load, an override of a field the config lacks, a bad
  flag or a positional argument print one `error:` line and exit 2. `prog` is
  shown as `prog_name` shows it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  prog = prog_name(prog)
  if any(a in _HELP_FLAGS for a in argv[1:]):
    print(absl_help(prog, doc, flag_names))
    sys.exit(EXIT_OK)
  if "config" in flag_names:
    argv = _resolve_config(argv)
  try:
    rest = flags.FLAGS(argv)
    flags.FLAGS.config.to_dict()  # config_flags defers load errors to the first use
  except flags.Error as e:
    exit_error(f"{e} ({prog} --help lists the flags)")
  except (AttributeError, KeyError) as e:  # --config.<field> that the config lacks
    message = e
    while isinstance(message, BaseException) and message.args:
      message = message.args[0]
    exit_error(f"unknown config field in the command line: {message}")
  except (OSError, ImportError, SyntaxError, TypeError, ValueError) as e:
    exit_error(f"--config could not be loaded: {e}")
  if len(rest) > 1:
    exit_error(f"unexpected arguments {rest[1:]}: {prog} takes flags only")
  return rest
