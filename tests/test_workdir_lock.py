"""One training run per workdir (`workdir.WorkdirLock`, held by `python -m
flax_gradnet.main`): a second run is refused before it writes anything, a lock
left by a dead process is taken over, and the lock goes when the run ends."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest

from flax_gradnet import cli
from flax_gradnet import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = socket.gethostname()


def _dead_pid() -> int:
  """The pid of a process that has exited and been reaped."""
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


@pytest.fixture
def live_pid():
  """The pid of a running process of this host (killed after the test)."""
  child = subprocess.Popen(["sleep", "300"])
  yield child.pid
  child.kill()
  child.wait()


def _write_lock(workdir, pid, host=HOST, started="2020-01-02T03:04:05+00:00"):
  workdir.mkdir(parents=True, exist_ok=True)
  text = json.dumps({"host": host, "pid": pid, "started": started, "command": "an earlier run"})
  (workdir / workdir_lib.LOCK_FILE).write_text(text)
  return text


def _snapshot(folder):
  """{relative path: (size, mtime_ns)} of everything under `folder`, and the folder's mtime."""
  files = {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
           for p in folder.rglob("*")}
  return files, folder.stat().st_mtime_ns


# ----------------------------------------------------------------------------
# The lock itself.


def test_lock_holds_host_pid_and_start_and_goes_on_release(tmp_path):
  workdir = tmp_path / "runs" / "w"  # neither folder exists yet
  lock = workdir_lib.WorkdirLock(str(workdir))
  assert lock.acquire() is None
  record = json.loads((workdir / ".lock").read_text())
  assert record["host"] == HOST and record["pid"] == os.getpid()
  assert abs(time.time() - _iso_seconds(record["started"])) < 60
  with pytest.raises(workdir_lib.WorkdirBusy) as info:  # this process is alive
    workdir_lib.WorkdirLock(str(workdir)).acquire()
  assert f"pid {os.getpid()}" in str(info.value) and HOST in str(info.value)
  (workdir / "checkpoints").mkdir()  # the run wrote something: the workdir stays
  lock.release()
  assert sorted(os.listdir(workdir)) == ["checkpoints"]


def _iso_seconds(text):
  import datetime  # pylint: disable=g-import-not-at-top
  return datetime.datetime.fromisoformat(text).timestamp()


def test_a_refused_or_empty_run_leaves_no_folder_behind(tmp_path):
  workdir = tmp_path / "a" / "b"
  with workdir_lib.WorkdirLock(str(workdir)) as lock:
    assert lock.takeover is None and (workdir / ".lock").is_file()
  assert not (tmp_path / "a").exists()  # both folders it created, empty again
  with pytest.raises(RuntimeError):  # released on an exception too
    with workdir_lib.WorkdirLock(str(workdir)):
      raise RuntimeError("training failed")
  assert not (tmp_path / "a").exists()
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="is a file"):
    workdir_lib.WorkdirLock(str(tmp_path / "file")).acquire()


def test_a_live_lock_is_refused_and_left_as_it_is(tmp_path, live_pid):
  workdir = tmp_path / "w"
  text = _write_lock(workdir, live_pid)
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.WorkdirBusy) as info:
    workdir_lib.WorkdirLock(str(workdir)).acquire()
  message = str(info.value)
  assert f"pid {live_pid}" in message and f"host {HOST}" in message
  assert "2020-01-02T03:04:05" in message and "\n" not in message
  assert (workdir / ".lock").read_text() == text and _snapshot(workdir) == before


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
  workdir = tmp_path / "w"
  dead = _dead_pid()
  _write_lock(workdir, dead)
  lock = workdir_lib.WorkdirLock(str(workdir))
  note = lock.acquire()
  assert note is not None and "\n" not in note
  assert f"pid {dead}" in note and "no longer running" in note
  assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
  lock.release()
  assert not (workdir / ".lock").exists()


def test_locks_of_other_hosts_and_unreadable_locks_are_refused(tmp_path):
  workdir = tmp_path / "w"
  # A dead pid, but on another host: that process cannot be checked from here.
  _write_lock(workdir, _dead_pid(), host="elsewhere.example")
  with pytest.raises(workdir_lib.WorkdirBusy, match="another host.*delete"):
    workdir_lib.WorkdirLock(str(workdir)).acquire()
  (workdir / ".lock").write_text("{not json")
  with pytest.raises(workdir_lib.WorkdirBusy, match="cannot be read"):
    workdir_lib.WorkdirLock(str(workdir)).acquire()
  assert (workdir / ".lock").read_text() == "{not json"


def test_release_leaves_a_lock_that_is_not_its_own(tmp_path, live_pid):
  workdir = tmp_path / "w"
  lock = workdir_lib.WorkdirLock(str(workdir))
  lock.acquire()
  text = _write_lock(workdir, live_pid)  # replaced by hand while it ran
  lock.release()
  assert (workdir / ".lock").read_text() == text


# ----------------------------------------------------------------------------
# Through `python -m flax_gradnet.main`.

ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _cached_env():
  """ENV with the session's compilation cache (conftest), which other training
  tests fill with the tiny config's steps."""
  return dict(ENV, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")


def _main(workdir, *extra):
  return [sys.executable, "-m", "flax_gradnet.main", "--config=tests/tiny_config.py",
          f"--workdir={workdir}", *extra]


def test_main_on_a_busy_workdir_exits_2_at_once_touching_nothing(tmp_path, live_pid):
  workdir = tmp_path / "w"
  text = _write_lock(workdir, live_pid)
  (workdir / "config.json").write_text("{}")  # what the first run wrote
  before = _snapshot(workdir)
  r = subprocess.run(_main(workdir), cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env=ENV)
  assert r.returncode == cli.EXIT_NOTHING_RAN, r.stderr[-3000:]
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
  assert f"pid {live_pid}" in lines[0] and f"host {HOST}" in lines[0]
  assert _snapshot(workdir) == before and (workdir / ".lock").read_text() == text


def test_main_takes_over_a_stale_lock_trains_and_releases_it(tmp_path):
  workdir, data_dir = tmp_path / "w", tmp_path / "tfds"
  dead = _dead_pid()
  _write_lock(workdir, dead)
  r = subprocess.run(_main(workdir, f"--config.data_dir={data_dir}", "--config.num_train_steps=1",
                           "--config.eval_every_steps=1", "--config.checkpoint_every_steps=1",
                           "--config.log_every_steps=1", "--config.num_eval_images=1",
                           "--config.num_image_summaries=0", "--config.critic_steps=1"),
                     cwd=ROOT, capture_output=True, text=True, timeout=600, env=_cached_env())
  assert r.returncode == 0, r.stderr[-3000:]
  notes = [l for l in r.stderr.splitlines() if "no longer running" in l]
  assert len(notes) == 1 and f"pid {dead}" in notes[0], r.stderr[-3000:]
  assert not (workdir / ".lock").exists()
  assert (workdir / "checkpoints" / "1").is_dir() and (workdir / "config.json").is_file()


def test_main_releases_the_lock_on_sigterm(tmp_path):
  workdir = tmp_path / "w"
  proc = subprocess.Popen(_main(workdir, f"--config.data_dir={tmp_path / 'tfds'}"), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
  try:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
      try:  # held, and its record written
        if json.loads((workdir / ".lock").read_text())["pid"] == proc.pid:
          break
      except (OSError, ValueError):
        pass
      time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err[-3000:])
  assert not (workdir / ".lock").exists()
