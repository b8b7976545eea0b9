"""Pack a training workdir's generator as a shipped model, or list the shipped models.

    python -m flax_gradnet.pretrained --workdir=workdirs/gradnet_s_synth --name=gradnet_s_synth
    python -m flax_gradnet.pretrained --workdir=W --name=N --step=20000 --overwrite \\
        --metadata note="2 h on 2 CPU cores"
    python -m flax_gradnet.pretrained --list
    python -m flax_gradnet.pretrained --list --verbose   # with every metadata entry

Models go to (and are listed from) `--root`, default $FLAX_GRADNET_PRETRAINED_DIR
or else the package's own `flax_gradnet/pretrained/` folder (see
`flax_gradnet.pretrained`). Exit status (`cli`): 0 done, 2 nothing done (message on
stderr). Console script: `flax-gradnet-pretrained`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from flax_gradnet import cli, pretrained  # stdlib-only at import: --help stays instant


def _parser() -> argparse.ArgumentParser:
  p = cli.parser(
      "python -m flax_gradnet.pretrained",
      "Pack the generator of a training workdir into a shipped model folder (config.json, "
      "params.msgpack, checksums, metadata, a reference input/output pair), or list the "
      "shipped models.", __doc__)
  p.add_argument("--list", action="store_true",
                 help="list the models: name, parameters, size, step, a summary")
  cli.add_switch(p, "--verbose", "with --list: every metadata entry of each model")
  cli.add_restore_flags(p, shipped=False,
                        workdir_help="training workdir to pack (config.json + checkpoints/)")
  p.add_argument("--name", default=None, help="the model's name (its folder's name)")
  cli.add_overwrite_flag(p, "replace an existing model of that name")
  p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                 help="extra metadata.json entry (repeatable; VALUE is a string)")
  p.add_argument("--root", default=None,
                 help="models folder (default: $FLAX_GRADNET_PRETRAINED_DIR, else the package's)")
  return p


def _size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
             if os.path.isfile(os.path.join(path, f)))


LIST_WIDTH = 100  # the longest line of `--list` (without --verbose)
# metadata.json entries `--list --verbose` shows in their own columns, or not at all.
_SHOWN = {"name", "source_workdir", "step", "weights", "packed_at", "num_params", "params_bytes",
          "compute_dtype", "reference_input", "reference_output", "versions"}


def _read(name: str, root: str | None) -> dict:
  try:
    return pretrained.read_metadata(name, root)
  except (OSError, ValueError) as e:
    return {"error": str(e)}


def summary(meta: dict) -> str:
  """One line on a model: its metadata's `summary`, else the training data
  (`data` up to its first parenthesis or comma) and the model it was
  fine-tuned from (`config.init_from = the shipped X` in `command`)."""
  if "error" in meta:
    return f"unreadable metadata: {meta['error']}"
  if meta.get("summary"):
    return " ".join(str(meta["summary"]).split())
  parts = []
  if meta.get("data"):
    parts.append(re.split(r" \(|,", str(meta["data"]), maxsplit=1)[0].strip())
  found = re.search(r"init_from\s*=\s*(?:the shipped\s+)?([\w./-]+)", str(meta.get("command", "")))
  if found:
    parts.append(f"tuned from {found.group(1)}")
  return ", ".join(parts) or "-"


def _clip(line: str, width: int = LIST_WIDTH) -> str:
  return line if len(line) <= width else line[:width - 3] + "..."


def list_models(root: str | None = None, verbose: bool = False) -> str:
  """The shipped models of `root`.

  A table of lines of at most `LIST_WIDTH` characters: name (`*` marks
  `pretrained.DEFAULT_MODEL`), parameter count, folder size, training step and
  a one-line `summary`. With `verbose`, one line per model instead with every
  metadata entry: size, step, source workdir, packing date and the rest.
  """
  names = pretrained.available(root)
  where = pretrained._root(root)  # pylint: disable=protected-access
  if not names:
    return f"no models in {where}"
  if verbose:
    return _list_verbose(names, root, where)
  metas = {name: _read(name, root) for name in names}
  width = max(len("name"), *map(len, names))
  lines = [f"{len(names)} model(s) in {where}",
           f"  {'name':<{width}}  {'params':>9}  {'MiB':>5}  {'step':>5}  summary"]
  for name in names:
    meta = metas[name]
    params = f"{meta['num_params']:,}" if "num_params" in meta else "?"
    mark = "*" if name == pretrained.DEFAULT_MODEL else " "
    lines.append(_clip(f"{mark} {name:<{width}}  {params:>9}  "
                       f"{_size(pretrained.model_dir(name, root)) / 2**20:>5.2f}  "
                       f"{meta.get('step', '?'):>5}  {summary(meta)}"))
  if pretrained.DEFAULT_MODEL in names:
    lines.append("* the default model of deblur and evaluate")
  lines.append("--verbose lists every metadata entry")
  return "\n".join(lines)


def _list_verbose(names: list[str], root: str | None, where: str) -> str:
  lines = [f"{len(names)} model(s) in {where}:"]
  for name in names:
    meta = _read(name, root)
    line = f"  {name}  {_size(pretrained.model_dir(name, root)) / 2**20:.2f} MiB"
    if "num_params" in meta:
      line += f"  {meta['num_params']:,} params"
    if "step" in meta:
      line += f"  step {meta['step']}"
    if "weights" in meta:
      line += f" ({meta['weights']} weights)"
    if "source_workdir" in meta:
      line += f"  from {meta['source_workdir']}"
    if "packed_at" in meta:
      line += f"  packed {meta['packed_at']}"
    extras = {k: v for k, v in meta.items() if k not in _SHOWN}
    if extras:
      line += "  " + ", ".join(f"{k}={v}" for k, v in sorted(extras.items()))
    lines.append(line)
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 done, 2 nothing done)."""
  args = _parser().parse_args(argv)
  if args.list:
    if (args.workdir or args.name or args.step is not None or args.metadata or args.overwrite
        or args.weights):
      return cli.fail("--list takes no --workdir, --name, --step, --weights, --metadata or "
                  "--overwrite")
    print(list_models(args.root, verbose=args.verbose))
    return cli.EXIT_OK
  if args.verbose:
    return cli.fail("--verbose is for --list")
  if not args.workdir or not args.name:
    return cli.fail("pass --workdir and --name to pack a model, or --list to list them")
  metadata = {}
  for item in args.metadata:
    key, sep, value = item.partition("=")
    if not sep or not key:
      return cli.fail(f"--metadata takes KEY=VALUE, got {item!r}")
    metadata[key] = value

  try:
    path = pretrained.pack(args.workdir, args.name, step=args.step, root=args.root,
                           metadata=metadata, overwrite=args.overwrite, weights=args.weights)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    return cli.fail(f"cannot pack {args.workdir!r} as {args.name!r}: {e}")
  meta = pretrained.read_metadata(args.name, args.root)
  print(f"packed {args.workdir} at step {meta['step']} ({meta['weights']} weights) as "
        f"{args.name!r} in {path} "
        f"({meta['params_bytes'] / 2**20:.2f} MiB of parameters)")
  return cli.EXIT_OK


def run() -> None:
  """Console entry point `flax-gradnet-pretrained`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
