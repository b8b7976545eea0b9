"""Packs a run of experiments/gpu_train.py as a model the CLIs read (`--model`).

  python experiments/gpu_import.py OUT/s_ft.json --weights=raw --name=gpu_s_ft --root=MODELS
  FLAX_GRADNET_PRETRAINED_DIR=MODELS python -m flax_gradnet.evaluate --model=gpu_s_ft \\
      --dataset=synthetic_online --output_dir=EVAL

Reads `<run>.json` (the config it trained, steps, machine, command) and
`<run>_<weights>.msgpack` beside it, and writes the model folder with
`pretrained.pack_params` (checksums, reference output, metadata naming the run).
The default root is `$FLAX_GRADNET_PRETRAINED_DIR`, else the package's own folder
(where the shipped models are: pass --root to keep a trial out of the package).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flax_gradnet import cli  # noqa: E402


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python experiments/gpu_import.py", description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Example:\n  python experiments/gpu_import.py OUT/s_ft.json --name=gpu_s_ft "
      "--root=/tmp/models")
  parser.add_argument("run_json", help="the <run>.json that gpu_train.py wrote")
  parser.add_argument("--weights", choices=("raw", "ema"), default="raw")
  parser.add_argument("--name", required=True, help="the model's name (its folder's)")
  parser.add_argument("--root", default=None, help="where the model folder goes")
  cli.add_overwrite_flag(parser, "replace a model of that name")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  try:
    with open(args.run_json) as f:
      record = json.load(f)
    weights_path = os.path.join(os.path.dirname(os.path.abspath(args.run_json)),
                                f"{record['run']}_{args.weights}.msgpack")
    with open(weights_path, "rb") as f:
      params = serialization.msgpack_restore(f.read())
  except (OSError, ValueError, KeyError) as e:
    return cli.fail(f"{args.run_json}: not a run of experiments/gpu_train.py with its "
                    f"{args.weights} weights beside it ({type(e).__name__}: {e})")
  metadata = {"machine": record.get("machine"), "command": record.get("command"),
              "train_seconds": record.get("train_seconds")}
  folder = pretrained.pack_params(params, record["config"], args.name,
                                  source=os.path.abspath(args.run_json), step=record["steps"],
                                  weights=args.weights, root=args.root, metadata=metadata,
                                  overwrite=args.overwrite)
  print(f"packed {args.name}: {folder}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
