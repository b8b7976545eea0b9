"""The workdir folder itself, shared by training and the inference tools.

    WORKDIR/.lock                 while a run trains in it: its host, pid and start
                                  time (`WorkdirLock`; a second run is refused)
    WORKDIR/config.json           the run's config (written once, by host 0)
    WORKDIR/checkpoints/<step>/   orbax checkpoints (their items, the writer and the
                                  reader: `flax_gradnet.checkpoints`)

This module holds the paths, config.json (`save_config`, `load_config`), the
folder checks (`check_folder`, `saved_steps`: the step folders, no checkpoint
opened) and the lock.

WORKDIR is a local folder or a URI that `etils.epath` and orbax read and write
(gs://BUCKET/run): every path below goes through `workdir_path` and
`epath.Path`, so a URI reaches orbax, config.json and the lock as given. On a
remote workdir the lock is best-effort (see `WorkdirLock`).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from typing import Any

import ml_collections
from etils import epath

from flax_gradnet import paths
from flax_gradnet.atomic import atomic_write_text

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
