"""Pack a training workdir's generator as a shipped model, or list the shipped models.

    python -m flax_gradnet.pretrained --workdir=workdirs/gradnet_s_synth --name=gradnet_s_synth
    python -m flax_gradnet.pretrained --workdir=W --name=N --step=20000 --overwrite \\
        --metadata note="2 h on 2 CPU cores"
    python -m flax_gradnet.pretrained --list

Models go to (and are listed from) `--root`, default $FLAX_GRADNET_PRETRAINED_DIR
or else the package's own `flax_gradnet/pretrained/` folder (see
`flax_gradnet.pretrained`). Exit status (`cli`): 0 done, 2 nothing done (message on
stderr). Console script: `flax-gradnet-pretrained`.
"""

from __future__ import annotations

import argparse
import os
import sys

from flax_gradnet import cli, pretrained  # stdlib-only at import: --help stays instant


def _parser() -> argparse.ArgumentParser:
  p = cli.parser(
      "python -m flax_gradnet.pretrained",
      "Pack the generator of a training workdir into a shipped model folder (config.json, "
      "params.msgpack, checksums, metadata, a reference input/output pair), or list the "
      "shipped models.", __doc__)
  p.add_argument("--list", action="store_true", help="list the models with size and metadata")
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


def list_models(root: str | None = None) -> str:
  """One line per model: name, folder size, step, source workdir, packing date, extras."""
  names = pretrained.available(root)
  where = pretrained._root(root)  # pylint: disable=protected-access
  if not names:
    return f"no models in {where}"
  lines = [f"{len(names)} model(s) in {where}:"]
  for name in names:
    path = pretrained.model_dir(name, root)
    try:
      meta = pretrained.read_metadata(name, root)
    except (OSError, ValueError) as e:
      meta = {"error": str(e)}
    line = f"  {name}  {_size(path) / 2**20:.2f} MiB"
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
    known = {"name", "source_workdir", "step", "weights", "packed_at", "num_params",
             "params_bytes", "compute_dtype", "reference_input", "reference_output", "versions"}
    extras = {k: v for k, v in meta.items() if k not in known}
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
    print(list_models(args.root))
    return cli.EXIT_OK
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
