"""A training workdir's checkpoints: their layout, the one writer and the one reader.

    WORKDIR/checkpoints/<step>/   orbax checkpoints (`checkpoint_manager`) with the items:
        state:    {"generator": TrainState, "critic": TrainState}  (params, opt states,
                  steps); with config.ema_decay > 0 also "generator_ema": {"params"},
                  the exponential moving average of the generator's weights
                  (`state_tree` / `state_from_tree`)
        data:     JSON: the parameters' digests (see `verify_checkpoint`)
        iterator: each process's data-iterator state (resume sees the same data)
        metrics:  with config.keep_best, at the steps evaluated during training:
                  the held-out metrics the best checkpoint is chosen by (`best_step`)

`save` is the one writer (training). `read` is the one reader: it restores the
state and digests of a step and refuses a damaged one; `resume` (training:
the whole state and the data iterator) and `restore_weights` (the inference
tools: one set of generator weights) both go through it. A checkpoint that
trains is a checkpoint that deblurs: `restore_weights` rebuilds the generator
from config.json (`models.generator_from_config`) and returns only its
parameters (the EMA weights when the checkpoint has them, unless
`weights="raw"`). Users get a generator through `inference.restore`.

Also here: `diff_params`, the one check of a parameter tree against the tree a
module builds (shipped models, `pretrained.load`; fine-tuning, `load_init_params`),
and `load_init_params`, the generator weights of `config.init_from`.

The training-only parts (grain, the input pipeline, the train state) are
imported where they are used, so the inference tools do not load them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath
from flax import serialization, traverse_util

from flax_gradnet import workdir as workdir_lib
from flax_gradnet.models import Generator, generator_from_config

if TYPE_CHECKING:
  from flax_gradnet import steps
  from flax_gradnet.data import pipeline

# `--step best` (and `step="best"`): the checkpoint with the highest held-out PSNR.
BEST_STEP = "best"
# Which generator weights a restore returns: the exponential moving average
# (config.ema_decay > 0) or the raw trained weights.
WEIGHTS = ("ema", "raw")
EMA_KEY = "generator_ema"  # the state item's key of the EMA weights

# Keys of the digests saved in each checkpoint's "data" item: the generator's
# and the critic's parameters (plain nested dicts, so the digest does not
# depend on whether a restore had a target tree). Optimizer states are not
# digested; a restore refuses them if they hold non-finite values.
PARAMS_DIGEST_KEY = "generator_params_sha256"
CRITIC_DIGEST_KEY = "critic_params_sha256"
EMA_DIGEST_KEY = "generator_ema_params_sha256"
_DIGESTED = (("generator", PARAMS_DIGEST_KEY), ("critic", CRITIC_DIGEST_KEY),
             (EMA_KEY, EMA_DIGEST_KEY))


# ----------------------------------------------------------------------------
# The state item's tree.


def state_tree(state: steps.GANState) -> dict[str, Any]:
  """The checkpointed "state" tree of a train state: plain dicts, no callables.

  Not `flax.serialization.to_state_dict`: that writes the optimizer states'
  tuples as {"0": ..., "1": ...} dicts and the EMA as "ema_params", a layout
  into which orbax refuses to restore the checkpoints this code has written.
  """
  def net(s):
    return {"step": s.step, "params": s.params, "opt_state": s.opt_state}
  tree = {"generator": net(state.generator), "critic": net(state.critic)}
  if state.ema_params is not None:
    tree[EMA_KEY] = {"params": state.ema_params}
  return tree


def state_from_tree(state: steps.GANState, tree: dict[str, Any]) -> steps.GANState:
  """`state` (for its modules and optimizers) holding the values of a restored
  `state_tree`; its EMA is the tree's (None when the tree has none)."""
  from flax_gradnet import steps  # pylint: disable=g-import-not-at-top,redefined-outer-name

  def net(s, t):
    return s.replace(step=t["step"], params=t["params"], opt_state=t["opt_state"])
  ema = tree.get(EMA_KEY)
  return steps.GANState(generator=net(state.generator, tree["generator"]),
                        critic=net(state.critic, tree["critic"]),
                        ema_params=None if ema is None else ema["params"])


# ----------------------------------------------------------------------------
# Digests.


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
  item. Each network's parameters (and the generator's EMA) must match the
  digest saved with them (checkpoints older than the digests have none), and
  no value may be non-finite.
  """
  for net, key in _DIGESTED:
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


# ----------------------------------------------------------------------------
# The manager and the best step.


def eval_rank(metrics: dict | None) -> float:
  """The number checkpoints are ranked by: the held-out PSNR that training
  saved with them (of the EMA weights when it kept an EMA); -inf without one."""
  value = (metrics or {}).get("psnr")
  if value is None or math.isnan(float(value)):
    return -math.inf
  return float(value)


class _UntrackedMetricsFilter(logging.Filter):
  """Drops orbax's warning for a save without metrics: with `keep_best` only
  the evaluated steps have them, by design."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in str(record.msg)


def checkpoint_manager(workdir: epath.PathLike, *, max_to_keep: int | None = None,
                       save_interval_steps: int = 1,
                       keep_best: bool = False) -> ocp.CheckpointManager:
  """The orbax manager of `workdir`'s checkpoints.

  Args:
    workdir: the training workdir (a local path or a URI: `workdir.workdir_path`).
    max_to_keep: keep the latest N checkpoints (None = all).
    save_interval_steps: orbax's save interval (saves with force=True ignore it).
    keep_best: also keep the checkpoint with the highest `eval_rank` of the
      metrics passed to `save(..., metrics=)`, which orbax then writes as each
      checkpoint's "metrics" item (read back by `best_step`).
  """
  if not keep_best:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           save_interval_steps=save_interval_steps,
                                           create=True)
  else:
    policies = ocp.checkpoint_managers
    # Latest N, plus the best one: orbax's `best_fn` + `max_to_keep` alone would
    # keep the N best instead, and drop the latest if it is not among them.
    keep = policies.AnyPreservationPolicy([
        policies.LatestN(n=max_to_keep),
        policies.BestN(get_metric_fn=eval_rank, reverse=False, n=1,
                       keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(save_interval_steps=save_interval_steps,
                                           best_fn=eval_rank, best_mode="max",
                                           preservation_policy=keep, create=True)
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _UntrackedMetricsFilter) for f in absl_logger.filters):
      absl_logger.addFilter(_UntrackedMetricsFilter())
  return ocp.CheckpointManager(
      workdir_lib.workdir_path(workdir) / workdir_lib.CHECKPOINT_DIR, options=options,
      item_names=("state", "data", "iterator"))


def step_dir(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """The folder of checkpoint `step` (WORKDIR/checkpoints/<step>)."""
  return epath.Path(manager.directory) / str(step)


def best_step(manager: ocp.CheckpointManager) -> tuple[int, dict]:
  """(step, metrics) of the saved checkpoint with the highest held-out PSNR.

  Ties go to the later step (as orbax's best-checkpoint policy keeps it).

  Raises:
    FileNotFoundError: no saved checkpoint carries evaluation metrics.
  """
  scored = []
  for step in manager.all_steps():
    metrics = manager.metrics(step)
    if eval_rank(metrics) > -math.inf:
      scored.append((eval_rank(metrics), step, dict(metrics)))
  if not scored:
    raise FileNotFoundError(
        f"no evaluated checkpoint in {manager.directory} for --step {BEST_STEP} (saved steps: "
        f"{list(manager.all_steps())}): only runs with config.keep_best=True record the "
        "held-out PSNR of the steps they evaluate; give a step number instead")
  _, step, metrics = max(scored, key=lambda t: (t[0], t[1]))
  return step, metrics


def has_ema(where: epath.PathLike) -> bool:
  """Whether the checkpoint in `where` (WORKDIR/checkpoints/<step>) holds EMA
  weights; read from its "state" item's tree metadata, no array is read."""
  metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(where) / "state")
  return EMA_KEY in metadata.tree


# ----------------------------------------------------------------------------
# Quiet failures of a restore.


class _UnretrievedFutureFilter(logging.Filter):
  """Drops asyncio's 'exception was never retrieved' reports."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).endswith("exception was never retrieved")


def _is_closed_loop_report(unraisable: Any) -> bool:
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed")


def _drop_closed_loop_reports(previous: Any) -> Any:
  """A `sys.unraisablehook` that drops "Event loop is closed" and hands the rest
  to `previous`."""

  def hook(unraisable: Any) -> None:
    if not _is_closed_loop_report(unraisable):
      previous(unraisable)

  hook.drops_closed_loop_reports = True
  return hook


def quiet_restore_failures() -> None:
  """Call before orbax restores a checkpoint (idempotent). If the restore fails
  on a damaged file, the reads orbax had started for the other arrays fail
  too: asyncio logs each one ("exception was never retrieved", ~90 lines of
  tracebacks at exit), and reads that finish after orbax closed its event loop
  raise "Event loop is closed" in TensorStore's threads, which Python prints as
  unraisable, some of them before the restore call has even returned. After
  the one clear error this library raises, both are noise: this filters those
  two kinds of report, process-wide, and nothing else."""
  logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _UnretrievedFutureFilter) for f in logger.filters):
    logger.addFilter(_UnretrievedFutureFilter())
  if not getattr(sys.unraisablehook, "drops_closed_loop_reports", False):
    sys.unraisablehook = _drop_closed_loop_reports(sys.unraisablehook)


# ----------------------------------------------------------------------------
# The writer.


def save(manager: ocp.CheckpointManager, step: int, state: steps.GANState,
         train_iter: pipeline.TrainIterator, *, metrics: dict[str, float] | None = None) -> None:
  """Checkpoints `step`: the state (`state_tree`, with its weights' digests) and
  every process's data-iterator state; `metrics` (None: none) rank it when the
  manager keeps the best checkpoint."""
  import grain.checkpoint as grain_ckpt  # pylint: disable=g-import-not-at-top
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top,redefined-outer-name
  host_state = state_tree(jax.device_get(state))
  digests = {key: state_digest(host_state[net]["params"])
             for net, key in _DIGESTED if net in host_state}
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(host_state),
      # One data-iterator state per process (grain's handler writes
      # process_<i>-of-<n>.json); orbax's JSON item is written by process 0 only.
      iterator=grain_ckpt.CheckpointSave(pipeline.IteratorCheckpoint(train_iter)),
      data=ocp.args.JsonSave(digests)),
               metrics=metrics, force=True)


# ----------------------------------------------------------------------------
# The reader.


class Checkpoint(NamedTuple):
  """What `read` restored of one step."""

  step: int
  where: epath.Path  # its folder
  state: dict[str, Any]  # the "state" item (`state_tree`'s layout), verified
  data: dict  # the "data" item (digests; an old run's iterator state); {} when absent


def read(manager: ocp.CheckpointManager, step: int, *,
         like: steps.GANState | None = None) -> Checkpoint:
  """Restores the state and the digests of checkpoint `step` and verifies them.

  Args:
    manager: the workdir's `checkpoint_manager`.
    step: a saved step.
    like: a train state whose tree the state is restored into (optimizer
      states as their types; with an EMA when the checkpoint has one), for
      resuming: the "data" item is then required; None: plain nested dicts
      of arrays, and the "data" item only if the checkpoint has one.

  Raises:
    ValueError: naming the checkpoint, when its files cannot be read or it is
      damaged (`verify_checkpoint`).
  """
  where = step_dir(manager, step)
  try:
    target = None
    if like is not None:
      saved_ema = has_ema(where)
      target = state_tree(like.replace(ema_params=like.generator.params if saved_ema else None))
    items = {"state": ocp.args.StandardRestore(target)}
    # Resuming needs the digests (and an old run's iterator state) that every
    # training checkpoint holds; a generator's weights are read without them too.
    if like is not None or (where / "data").is_dir():
      items["data"] = ocp.args.JsonRestore()
    quiet_restore_failures()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # orbax raises many types on damaged files
    raise ValueError(f"checkpoint {where} cannot be read: {e}") from e
  data = restored.get("data") or {}
  verify_checkpoint(restored.state, data, where)
  return Checkpoint(int(step), where, restored.state, data)


def resume(manager: ocp.CheckpointManager, state: steps.GANState,
           train_iter: pipeline.TrainIterator) -> steps.GANState:
  """`state` (the fresh one, for the tree's structure) restored from the
  manager's latest checkpoint, with an EMA exactly when the checkpoint has
  one; this process's data iterator is restored with it."""
  ckpt = read(manager, manager.latest_step(), like=state)
  state = state_from_tree(state, ckpt.state)
  _restore_iterator(manager, ckpt, train_iter)
  absl_logging.info("Resumed from %s at step %d.", manager.directory, ckpt.step)
  return state


def _restore_iterator(manager: ocp.CheckpointManager, ckpt: Checkpoint,
                      train_iter: pipeline.TrainIterator) -> None:
  """Gives this process its own data-iterator state of checkpoint `ckpt`."""
  import grain.checkpoint as grain_ckpt  # pylint: disable=g-import-not-at-top
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top,redefined-outer-name
  where = ckpt.where
  if (where / "iterator").is_dir():
    mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if not (where / "iterator" / mine).exists():
      saved = sorted(p.name for p in (where / "iterator").iterdir())
      raise ValueError(f"checkpoint {where} holds the data-iterator states {saved}, none for "
                       f"this process ({mine}): resume with the process count that wrote it.")
    quiet_restore_failures()
    manager.restore(ckpt.step, args=ocp.args.Composite(
        iterator=grain_ckpt.CheckpointRestore(pipeline.IteratorCheckpoint(train_iter))))
  elif "iterator" in ckpt.data and jax.process_count() == 1:
    train_iter.set_state(ckpt.data["iterator"])  # checkpoints written before 2026-11-27
  else:
    raise ValueError(f"checkpoint {where} holds no data-iterator state for process "
                     f"{jax.process_index()} of {jax.process_count()}; it was written by a "
                     "single-process run of an earlier version: resume it on one process.")


class RestoredGenerator(NamedTuple):
  """What `restore_weights` restored."""

  model: Generator
  params: Any
  step: int
  weights: str  # "ema" or "raw": which of the checkpoint's generator weights `params` are
  has_ema: bool  # whether the checkpoint holds EMA weights
  metrics: dict | None  # the held-out metrics training saved with the step (keep_best)


def resolve_step(manager: ocp.CheckpointManager, step: int | str | None) -> int:
  """A saved step: `step` itself, the latest (None) or the best ("best")."""
  ckpt_dir = manager.directory
  saved = manager.all_steps()
  if not saved:
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: has training saved one yet?")
  if step is None:
    return manager.latest_step()
  if step == BEST_STEP:
    return best_step(manager)[0]
  if isinstance(step, str) and not step.isdigit():
    raise ValueError(f"step must be a number or {BEST_STEP!r}, got {step!r}")
  if int(step) not in saved:
    raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; saved steps: {saved}")
  return int(step)


def _select_weights(state: dict, weights: str | None, where: str) -> tuple[Any, str]:
  """(params, "ema" | "raw") of a restored state tree; default: EMA when present."""
  if weights is None:
    weights = "ema" if EMA_KEY in state else "raw"
  if weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
  if weights == "raw":
    return state["generator"]["params"], weights
  if EMA_KEY not in state:
    raise ValueError(f"checkpoint {where} holds no EMA weights (it was trained with "
                     "config.ema_decay=0); ask for the raw weights (--weights raw)")
  return state[EMA_KEY]["params"], weights


def restore_weights(workdir: epath.PathLike, step: int | str | None = None, dtype: Any = None, *,
                    weights: str | None = None) -> RestoredGenerator:
  """Restores a generator and one set of its weights from a training workdir.

  The building block of `inference.restore` (and of `pretrained.pack`); users
  call `inference.restore`, which also returns the model's recorded inference
  options.

  Args:
    workdir: a directory written by `python -m flax_gradnet.main`.
    step: the checkpoint step; None for the latest; "best" for the highest
      held-out PSNR (`best_step`).
    dtype: compute dtype of the returned module (default: the config's).
    weights: "ema" (the moving average training kept with config.ema_decay > 0),
      "raw" (the trained weights), or None: EMA when the checkpoint has it.

  Raises:
    FileNotFoundError: no workdir, config.json, checkpoint, or (for "best") no
      evaluated checkpoint.
    ValueError: a damaged checkpoint, or "ema" from a checkpoint without EMA.
  """
  config = workdir_lib.load_config(workdir)
  model = generator_from_config(config, dtype)
  ckpt_dir = workdir_lib.workdir_path(workdir) / workdir_lib.CHECKPOINT_DIR
  if not ckpt_dir.is_dir():
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: has training saved one yet?")
  if weights is not None and weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
  manager = checkpoint_manager(workdir)
  try:
    step = resolve_step(manager, step)
    metrics = manager.metrics(step)
    ckpt = read(manager, step)
  finally:
    manager.close()
  params, weights = _select_weights(ckpt.state, weights, ckpt.where)
  return RestoredGenerator(model, params, ckpt.step, weights, EMA_KEY in ckpt.state,
                           dict(metrics) if metrics else None)


# ----------------------------------------------------------------------------
# Parameter trees: the check, and fine-tuning's loading.


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def flat_params(tree: Any) -> dict[str, Any]:
  """{"path/to/kernel": leaf} of a parameter tree (dicts or FrozenDicts)."""
  if not isinstance(tree, Mapping):
    raise ValueError(f"expected a dict of parameters, got {type(tree).__name__}")
  tree = serialization.to_state_dict(tree)
  return {"/".join(map(str, k)): v for k, v in traverse_util.flatten_dict(tree).items()}


class ParamsDiff(NamedTuple):
  """Where a parameter tree differs from the tree a module expects (`diff_params`).

  `entries` are (path, kind, expected shape, got shape), sorted by path; kind
  is "missing" (expected only: got shape None), "unexpected" (got only:
  expected shape None) or "shape" (both, other shapes).
  """

  entries: list[tuple[str, str, tuple | None, tuple | None]]

  def __bool__(self) -> bool:
    return bool(self.entries)

  def paths(self, kind: str) -> list[str]:
    return [e[0] for e in self.entries if e[1] == kind]

  def summary(self, limit: int = 20) -> str:
    """"missing keys (N): a, b; unexpected keys (N): ...; mis-shaped keys (N):
    path: got (expected want)", at most `limit` paths a kind."""
    parts = []
    for label, kind in (("missing", "missing"), ("unexpected", "unexpected"),
                        ("mis-shaped", "shape")):
      keys = [p if kind != "shape" else f"{p}: {got} (expected {want})"
              for p, k, want, got in self.entries if k == kind]
      if keys:
        shown = keys[:limit] + ([f"... ({len(keys) - limit} more)"] if len(keys) > limit else [])
        parts.append(f"{label} keys ({len(keys)}): " + ", ".join(shown))
    return "; ".join(parts)

  def table(self, expected: str = "expected", got: str = "got", limit: int = 60) -> str:
    """One line a path: path, kind, the `expected` and the `got` shape (at most `limit`)."""
    text = lambda shape: "-" if shape is None else str(shape)
    rows = [f"  {p:60s} {kind:10s} {expected} {text(want):18s} {got} {text(have)}"
            for p, kind, want, have in self.entries]
    if len(rows) > limit:
      rows = rows[:limit] + [f"  ... and {len(rows) - limit} more"]
    return "\n".join(rows)


def diff_params(params: Any, expected: Any) -> ParamsDiff:
  """The paths of `params` missing from, unexpected in or shaped otherwise than
  in `expected` (the tree a module builds: arrays or `jax.ShapeDtypeStruct`s).

  Raises:
    ValueError: either tree is not a dict of parameters.
  """
  got, want = flat_params(params), flat_params(expected)
  entries = []
  for key in sorted(set(got) | set(want)):
    if key not in got:
      entries.append((key, "missing", _shape(want[key]), None))
    elif key not in want:
      entries.append((key, "unexpected", None, _shape(got[key])))
    elif _shape(got[key]) != _shape(want[key]):
      entries.append((key, "shape", _shape(want[key]), _shape(got[key])))
  return ParamsDiff(entries)


def _split_init_from(init_from: str) -> tuple[str | None, str | None, int | None]:
  """"workdir[@step]" or a shipped model's name -> (workdir, model, step)."""
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  path, step = init_from, None
  head, sep, tail = init_from.rpartition("@")
  if sep and tail.isdigit():
    path, step = head, int(tail)
  if workdir_lib.workdir_path(path).is_dir():
    return str(workdir_lib.workdir_path(path)), None, step
  if step is None and init_from in pretrained.available():
    return None, init_from, None
  raise FileNotFoundError(
      f"config.init_from={init_from!r} is neither a training workdir (optionally "
      f"'@STEP') nor a shipped model (available: {pretrained.available()})")


def load_init_params(init_from: str, params: Any, *, strict: bool = True) -> tuple[Any, str]:
  """The generator weights of `config.init_from`, fitted onto `params` (the fresh init).

  Every weight of `params` is looked up by its path in the source
  (`diff_params`). Paths only in `params` (missing), only in the source
  (unexpected), or present in both with other shapes (mismatched) are listed
  in one table; with `strict` any of them raises, otherwise those keep their
  fresh initial values.

  Returns:
    (params, a one-line description of the source and of what was loaded).
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  workdir, model, step = _split_init_from(init_from)
  _, source, restored = inference.restore(workdir, model=model, step=step)
  diff = diff_params(source, params)
  target_flat, source_flat = flat_params(params), flat_params(source)
  if diff:
    message = (f"config.init_from={init_from!r} ({restored}) does not fit the "
               f"generator of this config: {len(diff.entries)} weight(s)\n"
               f"{diff.table(expected='model', got='source')}")
    if strict:
      raise ValueError(message + "\nSet config.init_strict=False to load the matching weights "
                       "and keep the initial values of the others.")
    absl_logging.warning("%s\nLoading the %d matching weight(s) only (init_strict=False).",
                         message,
                         len(target_flat) - sum(e[1] != "unexpected" for e in diff.entries))
  bad = {e[0] for e in diff.entries}
  merged = {k: (jnp.asarray(source_flat[k], v.dtype) if k not in bad else v)
            for k, v in target_flat.items()}
  loaded = serialization.from_state_dict(
      params, traverse_util.unflatten_dict(merged, sep="/"))
  n_loaded = sum(k not in bad for k in target_flat)
  return loaded, f"{restored}: {n_loaded}/{len(target_flat)} weights loaded"
