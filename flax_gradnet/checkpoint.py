"""The workdir's on-disk layout, shared by training and the inference tools.

    WORKDIR/config.json           the run's config (written once, by host 0)
    WORKDIR/checkpoints/<step>/   orbax checkpoints with two items:
        state: {"generator": TrainState, "critic": TrainState}  (params, opt states, steps)
        data:  the training iterator's JSON state (resume sees the same data)

A checkpoint that trains is a checkpoint that deblurs: `restore_generator`
rebuilds the generator from config.json and reads only its parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import orbax.checkpoint as ocp

from flax_gradnet.atomic import atomic_write
from flax_gradnet.models import Generator

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def atomic_write_text(path: str, text: str) -> None:
  """Writes a text file atomically (see `flax_gradnet.atomic`)."""
  atomic_write(path, lambda f: f.write(text), binary=False)


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  atomic_write_text(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: {workdir!r} is not a flax_gradnet workdir (expected the "
        f"'{CONFIG_FILE}' and '{CHECKPOINT_DIR}/' that `python -m flax_gradnet.main` writes).")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e


def checkpoint_manager(workdir: str, *, max_to_keep: int | None = None,
                       save_interval_steps: int = 1) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         save_interval_steps=save_interval_steps,
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                               options=options, item_names=("state", "data", "iterator"))


def generator_from_config(config: ml_collections.ConfigDict, dtype: Any = None) -> Generator:
  """The generator a config describes (`config.model` holds Generator's fields)."""
  if dtype is None:
    dtype = jnp.dtype(config.get("compute_dtype", "float32"))
  fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.to_dict().items()}
  known = set(Generator.__dataclass_fields__)
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"config.model has fields Generator does not know: {unknown}")
  return Generator(**fields, dtype=dtype)


# Keys of the digests saved in each checkpoint's "data" item: the generator's
# and the critic's parameters (plain nested dicts, so the digest does not
# depend on whether a restore had a target tree). Optimizer states are not
# digested; a restore refuses them if they hold non-finite values.
PARAMS_DIGEST_KEY = "generator_params_sha256"
CRITIC_DIGEST_KEY = "critic_params_sha256"


def state_digest(tree: Any) -> str:
  """sha256 of a checkpointed tree: every leaf's path, dtype, shape and bytes.

  Saved beside each checkpoint (the "data" item) and compared on every
  restore, so bytes damaged on disk (which orbax restores without complaint)
  stop the run with an error naming the checkpoint instead of turning into
  garbage weights.
  """
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def verify_checkpoint(state: Any, data: dict | None, where: str) -> None:
  """Raises ValueError naming `where` if a restored checkpoint is damaged.

  `state` is the restored {"generator", "critic"} tree and `data` its "data"
  item. Each network's parameters must match the digest saved with them
  (checkpoints older than the digests have none), and no value may be
  non-finite.
  """
  for net, key in (("generator", PARAMS_DIGEST_KEY), ("critic", CRITIC_DIGEST_KEY)):
    expected = (data or {}).get(key)
    if expected is not None and net in state:
      got = state_digest(state[net]["params"])
      if got != expected:
        raise ValueError(f"checkpoint {where} is damaged: the {net}'s sha256 is {got[:16]}..., "
                         f"saved as {expected[:16]}...; restore an earlier step (--step) or "
                         "retrain")
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    a = np.asarray(leaf)
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
      raise ValueError(f"checkpoint {where} is damaged: non-finite values in "
                       f"{jax.tree_util.keystr(path)}")


class _UnretrievedFutureFilter(logging.Filter):
  """Drops asyncio's 'exception was never retrieved' reports."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).endswith("exception was never retrieved")


def quiet_failed_restore() -> None:
  """After orbax failed to read a damaged checkpoint, the reads it had started
  for the other arrays fail too, and asyncio reports each one (~90 lines of
  tracebacks at exit) after the one clear error. Call on that failure only."""
  logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _UnretrievedFutureFilter) for f in logger.filters):
    logger.addFilter(_UnretrievedFutureFilter())


def restore_generator(workdir: str, step: int | None = None, dtype: Any = None):
  """Restores `(generator_module, params, step)` from a training workdir.

  Args:
    workdir: a directory written by `python -m flax_gradnet.main`.
    step: the checkpoint step; None for the latest.
    dtype: compute dtype of the returned module (default: the config's).
  """
  config = load_config(workdir)
  model = generator_from_config(config, dtype)
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: has training saved one yet?")
  manager = checkpoint_manager(workdir)
  try:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: has training saved one yet?")
    if step is None:
      step = manager.latest_step()
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; saved steps: {steps}")
    where = os.path.join(ckpt_dir, str(step))
    try:
      items = {"state": ocp.args.StandardRestore()}
      if os.path.isdir(os.path.join(where, "data")):
        items["data"] = ocp.args.JsonRestore()
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types on damaged files
      quiet_failed_restore()
      raise ValueError(f"checkpoint {where} cannot be read: {e}") from e
  finally:
    manager.close()
  verify_checkpoint(restored.state, restored.get("data"), where)
  return model, restored.state["generator"]["params"], step
