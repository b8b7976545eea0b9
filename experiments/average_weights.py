"""Average the generator weights of several checkpoints into a new workdir
(checkpoint averaging / a uniform "model soup", Wortsman et al. 2022).

    python experiments/average_weights.py --output=workdirs/soup \
        --source=workdirs/run_a:4000 --source=workdirs/run_b:4000
    python experiments/average_weights.py --output=W2 --source=W:3500 --source=W:3750 --source=W:4000

Every source must describe the same generator (equal `model` in config.json);
it is meant for checkpoints of one run, or runs fine-tuned from one starting
point (weights in one basin): averaging unrelated networks gives noise. The
output is a workdir as training writes it (the first source's config.json, one
checkpoint holding the averaged generator, at the largest source step), so
`evaluate`, `deblur`, `export` and `python -m flax_gradnet.pretrained --workdir`
read it like any run. The output must not exist yet (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flax_gradnet import workdir as workdir_lib  # noqa: E402


def parse_source(text: str) -> tuple[str, int | None]:
  """"WORKDIR[:STEP]" -> (workdir, step or None = latest)."""
  workdir, sep, step = text.rpartition(":")
  if sep and step.isdigit():
    return workdir, int(step)
  return text, None


def average(sources: list[tuple[str, int | None]]) -> tuple[dict, int, dict]:
  """(averaged params, largest step, the first source's config as a dict)."""
  trees, steps, model_config, first_config = [], [], None, None
  for workdir, step in sources:
    config = workdir_lib.load_config(workdir)
    if model_config is None:
      model_config, first_config = config.model.to_dict(), config.to_dict()
    elif config.model.to_dict() != model_config:
      raise ValueError(f"{workdir}: its model config differs from {sources[0][0]}'s; "
                       "only checkpoints of one generator can be averaged")
    _, params, restored_step = workdir_lib.restore_generator(workdir, step)
    trees.append(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params))
    steps.append(int(restored_step))
    print(f"read {workdir} step {restored_step}", file=sys.stderr)
  mean = jax.tree_util.tree_map(lambda *xs: np.mean(np.stack(xs), axis=0).astype(np.float32),
                                *trees)
  return mean, max(steps), first_config


def write_workdir(output: str, params: dict, step: int, config: dict, sources: list) -> None:
  os.makedirs(output)
  config = dict(config)
  config["averaged_from"] = [f"{w}:{s}" if s is not None else w for w, s in sources]
  with open(os.path.join(output, workdir_lib.CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2)
  mngr = workdir_lib.checkpoint_manager(output)
  state = {"generator": {"params": jax.tree_util.tree_map(jnp.asarray, params)}}
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave({workdir_lib.PARAMS_DIGEST_KEY: workdir_lib.state_digest(
          state["generator"]["params"])})))
  mngr.wait_until_finished()
  mngr.close()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--output", required=True, help="new workdir (must not exist)")
  p.add_argument("--source", action="append", required=True, metavar="WORKDIR[:STEP]",
                 help="a checkpoint to average (repeat; at least two)")
  args = p.parse_args(argv)
  if os.path.exists(args.output):
    print(f"error: {args.output} exists; choose a new folder", file=sys.stderr)
    return 2
  sources = [parse_source(s) for s in args.source]
  if len(sources) < 2:
    print("error: give at least two --source checkpoints", file=sys.stderr)
    return 2
  try:
    params, step, config = average(sources)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  write_workdir(args.output, params, step, config, sources)
  print(f"averaged {len(sources)} checkpoints into {args.output} (step {step})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
