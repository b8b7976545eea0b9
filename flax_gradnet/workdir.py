"""The workdir's on-disk layout, shared by training and the inference tools.

    WORKDIR/.lock                 while a run trains in it: its host, pid and start
                                  time (`WorkdirLock`; a second run is refused)
    WORKDIR/config.json           the run's config (written once, by host 0)
    WORKDIR/checkpoints/<step>/   orbax checkpoints with the items:
        state:    {"generator": TrainState, "critic": TrainState}  (params, opt states,
                  steps); with config.ema_decay > 0 also "generator_ema": {"params"},
                  the exponential moving average of the generator's weights
        data:     JSON: the parameters' digests (see `verify_checkpoint`)
        iterator: each process's data-iterator state (resume sees the same data)
        metrics:  with config.keep_best, at the steps evaluated during training:
                  the held-out metrics the best checkpoint is chosen by (`best_step`)

A checkpoint that trains is a checkpoint that deblurs: `restore_generator`
rebuilds the generator from config.json (`models.generator_from_config`) and reads only its parameters (the EMA
weights when the checkpoint has them, unless `weights="raw"`).

WORKDIR is a local folder or a URI that `etils.epath` and orbax read and write
(gs://BUCKET/run): every path below goes through `workdir_path` and
`epath.Path`, so a URI reaches orbax, config.json and the lock as given. On a
remote workdir the lock is best-effort (see `WorkdirLock`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from flax_gradnet import paths
from flax_gradnet.atomic import atomic_write_text
from flax_gradnet.models import Generator, generator_from_config

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"

def is_remote(path: epath.PathLike) -> bool:
  """Whether `path` is a URI (gs://, s3://, ...) rather than a local path."""
  return paths.is_uri(path)


def workdir_path(workdir: epath.PathLike) -> epath.Path:
  """`workdir` as an `epath.Path`: a URI (gs://BUCKET/run) exactly as given, a
  local path with `~` expanded and made absolute (orbax wants absolute paths).

  A URI is never made "absolute" as a local path (gs://B/run would become ./gs:/B/run).
  """
  if is_remote(workdir):
    return epath.Path(workdir)
  return epath.Path(workdir).expanduser().resolve()


def save_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir`/config.json: atomically (a temporary file renamed) on a
  local disk; in one object write on a remote store."""
  text = config.to_json_best_effort(indent=2)
  path = workdir_path(workdir) / CONFIG_FILE
  if is_remote(path):
    path.write_text(text)
  else:
    atomic_write_text(os.fspath(path), text)


def load_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
  path = workdir_path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} not found: {str(workdir)!r} is not a flax_gradnet workdir (expected the "
        f"'{CONFIG_FILE}' and '{CHECKPOINT_DIR}/' that `python -m flax_gradnet.main` writes).")
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e


def check_folder(workdir: epath.PathLike) -> None:
  """Raises ValueError when `workdir` exists and is not a folder."""
  path = workdir_path(workdir)
  if path.exists() and not path.is_dir():
    raise ValueError(f"--workdir {path} is a file; give a folder (created if missing).")


def saved_steps(workdir: epath.PathLike) -> list[int]:
  """The step folders under `workdir`/checkpoints (read from the listing, no
  checkpoint is opened); [] when there are none."""
  ckpt_dir = workdir_path(workdir) / CHECKPOINT_DIR
  if not ckpt_dir.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


class WorkdirBusy(RuntimeError):
  """Another run holds the workdir's lock (the message names its host and pid)."""


def _pid_alive(pid: int) -> bool:
  """Whether process `pid` of this host exists (a zombie counts as existing)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  except (OverflowError, ValueError):  # no such pid can exist
    return False
  return True


class WorkdirLock:
  """The lock a training run holds on its workdir: the file `WORKDIR/.lock`.

  `acquire` creates the file with O_CREAT|O_EXCL (atomic: of two runs starting
  together, one gets it), holding JSON {host, pid, started, command}, before
  the run writes anything else in the workdir; `release` removes it, and the
  folders `acquire` created if they are still empty. A second run on the
  workdir is refused (`WorkdirBusy`, naming the holder) unless the lock is
  stale: written on this host by a process that no longer exists (killed with
  SIGKILL, a crashed machine), which `acquire` takes over. A lock of another
  host is never judged stale: its process cannot be checked from here.

  On a remote workdir (gs://..., `is_remote`) O_EXCL does not exist: the lock
  is created if absent through `epath` (look, write, read back), which is
  best-effort: two runs starting within the same second may both get it. It
  still refuses a run started while another one trains, as locally.

  Usable as a context manager; `takeover` is then the note `acquire` returned.
  """

  def __init__(self, workdir: epath.PathLike):
    self.workdir = workdir_path(workdir)
    self.path = self.workdir / LOCK_FILE
    self.remote = is_remote(self.workdir)
    self.takeover: str | None = None
    self._record: dict[str, Any] | None = None
    self._created: list[str] = []

  def acquire(self) -> str | None:
    """Takes the lock; returns a one-line note when it took over a stale one.

    Raises:
      WorkdirBusy: a live run holds the lock (or it cannot be read); nothing
        in the workdir was changed.
      ValueError: the workdir is a file.
    """
    check_folder(self.workdir)
    if not self.remote:  # object stores have no folders to remove again
      self._created = _missing_folders(os.fspath(self.workdir))
    self.workdir.mkdir(parents=True, exist_ok=True)
    note = None
    try:
      for _ in range(3):  # a lock that vanishes or goes stale in between: look again
        if self._create():
          return note
        holder, text = self._read()
        if holder is None:
          continue  # released since: try again
        if not self._stale(holder):
          raise WorkdirBusy(self._busy_message(holder))
        try:  # unchanged since read: no other run took it over
          if self.path.read_text() != text:
            continue
          self.path.unlink()
        except FileNotFoundError:  # another run removed it first
          continue
        note = (f"note: {self.path} was left by {_describe(holder)}, which is no longer "
                "running; taking it over")
      raise WorkdirBusy(f"{self.path} keeps changing: other runs are starting in "
                        f"{self.workdir}; start one run at a time")
    except BaseException:
      self._remove_created()
      raise

  def release(self) -> None:
    """Removes the lock (if it is still this run's) and the folders `acquire`
    created that are still empty."""
    if self._record is not None:
      try:
        text = self.path.read_text()
        # Ours, or our own write cut short: a lock is replaced only when its
        # process is gone or by hand, never while this one runs.
        mine = json.dumps(self._record).startswith(text)
      except OSError:
        mine = False
      if mine:
        self.path.unlink()
      self._record = None
    self._remove_created()

  def __enter__(self) -> "WorkdirLock":
    self.takeover = self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def _create(self) -> bool:
    """Creates the lock file with this run's record; False if it exists."""
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              "command": " ".join(sys.argv)}
    if self.remote:
      return self._create_remote(record)
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    self._record = record  # ours from here on, also if a signal stops the write
    with os.fdopen(fd, "w") as f:
      json.dump(record, f)
    return True

  def _create_remote(self, record: dict[str, Any]) -> bool:
    """Best-effort create-if-absent: look, write, read back (a run that wrote
    in between wins, and this one reads its record and is refused)."""
    if self.path.exists():
      return False
    text = json.dumps(record)
    self._record = record
    self.path.write_text(text)
    try:
      if self.path.read_text() == text:
        return True
    except FileNotFoundError:
      pass
    self._record = None
    return False

  def _read(self) -> tuple[dict[str, Any] | None, str]:
    """(the holder's record, the file's text); (None, "") once the file is gone.
    A record that does not parse is reread for a second (its writer may be
    between creating and writing it), then given as {"unreadable": ...}."""
    deadline = time.monotonic() + 1.0
    while True:
      try:
        text = self.path.read_text()
      except FileNotFoundError:
        return None, ""
      try:
        record = json.loads(text)
        if isinstance(record, dict) and isinstance(record.get("pid"), int):
          return record, text
        problem = "no pid in it"
      except ValueError as e:
        problem = str(e)
      if time.monotonic() > deadline:
        return {"unreadable": f"{problem}: {text[:80]!r}"}, text
      time.sleep(0.05)

  @staticmethod
  def _stale(holder: dict[str, Any]) -> bool:
    return ("unreadable" not in holder and holder.get("host") == socket.gethostname()
            and not _pid_alive(holder["pid"]))

  def _busy_message(self, holder: dict[str, Any]) -> str:
    if "unreadable" in holder:
      return (f"{self.workdir} has a lock file {self.path} that cannot be read "
              f"({holder['unreadable']}); if no run is training there, delete it")
    where = ("" if holder.get("host") == socket.gethostname() else
             f"; it is on another host: if that run is gone, delete {self.path}")
    return (f"{self.workdir} is in use by {_describe(holder)} ({self.path}): wait for it to "
            f"finish or stop it, or train in another --workdir{where}")

  def _remove_created(self) -> None:
    for folder in self._created:  # deepest first
      try:
        os.rmdir(folder)
      except OSError:  # not empty (the run wrote in it), or gone
        break
    self._created = []


def _describe(holder: dict[str, Any]) -> str:
  return (f"a training run on host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
          f"started {holder.get('started', '?')}")


def _missing_folders(path: str) -> list[str]:
  """`path` (local) and its ancestors that do not exist yet, deepest first."""
  missing = []
  while not os.path.exists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


# `--step best` (and `step="best"`): the checkpoint with the highest held-out PSNR.
BEST_STEP = "best"
# Which generator weights a restore returns: the exponential moving average
# (config.ema_decay > 0) or the raw trained weights.
WEIGHTS = ("ema", "raw")
EMA_KEY = "generator_ema"  # the state item's key of the EMA weights


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
    workdir: the training workdir (a local path or a URI: `workdir_path`).
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
  return ocp.CheckpointManager(workdir_path(workdir) / CHECKPOINT_DIR, options=options,
                               item_names=("state", "data", "iterator"))


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


# Keys of the digests saved in each checkpoint's "data" item: the generator's
# and the critic's parameters (plain nested dicts, so the digest does not
# depend on whether a restore had a target tree). Optimizer states are not
# digested; a restore refuses them if they hold non-finite values.
PARAMS_DIGEST_KEY = "generator_params_sha256"
CRITIC_DIGEST_KEY = "critic_params_sha256"
EMA_DIGEST_KEY = "generator_ema_params_sha256"


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
  for net, key in (("generator", PARAMS_DIGEST_KEY), ("critic", CRITIC_DIGEST_KEY),
                   (EMA_KEY, EMA_DIGEST_KEY)):
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


def has_ema(step_dir: epath.PathLike) -> bool:
  """Whether the checkpoint in `step_dir` (WORKDIR/checkpoints/<step>) holds EMA
  weights; read from its "state" item's tree metadata, no array is read."""
  metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state")
  return EMA_KEY in metadata.tree


class RestoredGenerator(NamedTuple):
  """What `restore_weights` restored."""

  model: Generator
  params: Any
  step: int
  weights: str  # "ema" or "raw": which of the checkpoint's generator weights `params` are
  has_ema: bool  # whether the checkpoint holds EMA weights
  metrics: dict | None  # the held-out metrics training saved with the step (keep_best)


def _resolve_step(manager: ocp.CheckpointManager, step: int | str | None,
                  ckpt_dir: epath.Path) -> int:
  """A saved step: `step` itself, the latest (None) or the best ("best")."""
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: has training saved one yet?")
  if step is None:
    return manager.latest_step()
  if step == BEST_STEP:
    return best_step(manager)[0]
  if isinstance(step, str) and not step.isdigit():
    raise ValueError(f"step must be a number or {BEST_STEP!r}, got {step!r}")
  if int(step) not in steps:
    raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; saved steps: {steps}")
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
  config = load_config(workdir)
  model = generator_from_config(config, dtype)
  ckpt_dir = workdir_path(workdir) / CHECKPOINT_DIR
  if not ckpt_dir.is_dir():
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: has training saved one yet?")
  if weights is not None and weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
  manager = checkpoint_manager(workdir)
  try:
    step = _resolve_step(manager, step, ckpt_dir)
    metrics = manager.metrics(step)
    where = ckpt_dir / str(step)
    try:
      items = {"state": ocp.args.StandardRestore()}
      if (where / "data").is_dir():
        items["data"] = ocp.args.JsonRestore()
      quiet_restore_failures()
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types on damaged files
      raise ValueError(f"checkpoint {where} cannot be read: {e}") from e
  finally:
    manager.close()
  verify_checkpoint(restored.state, restored.get("data"), where)
  params, weights = _select_weights(restored.state, weights, where)
  return RestoredGenerator(model, params, int(step), weights, EMA_KEY in restored.state,
                           dict(metrics) if metrics else None)


def restore_generator(workdir: epath.PathLike, step: int | str | None = None, dtype: Any = None, *,
                      weights: str | None = None):
  """Restores `(generator_module, params, step)` from a training workdir.

  The short form of `restore_weights` (see there for the arguments): the EMA
  weights when the checkpoint holds them, unless `weights="raw"`.
  """
  restored = restore_weights(workdir, step, dtype, weights=weights)
  return restored.model, restored.params, restored.step
