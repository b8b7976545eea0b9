"""A training workdir given as a URI (gs://BUCKET/run) stays that URI all the way.

No bucket is reachable from a test, so `fake_gcs` stores gs:// in a local folder
at the two places where a GCS path leaves Python: `etils.epath`'s file-system
backend (config.json, the lock, orbax's metadata and commit files, grain's
iterator states) and the TensorStore driver spec orbax builds for the arrays
(`gcs` -> `file`). Everything above those two stays as it runs on GCS: orbax
sees a gs:// path and takes its GCS code paths (commit_success.txt files rather
than atomic renames), and any path that went through `os.path.abspath` would
show up as a `gs:` folder in the current directory, which every test here
checks is absent.
"""

import json
import os
import shutil
import socket

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing
from orbax.checkpoint._src.path import gcs_utils

from flax_gradnet import checkpoints, config_checks, train, writers
from flax_gradnet import workdir as workdir_lib

URI = "gs://bucket/run"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """The local folder that holds gs:// (gs://B/x is <folder>/B/x); the test runs
  in another, empty folder, which must stay free of `gs:` folders."""
  root = tmp_path / "gcs"
  root.mkdir()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)

  def local(path):
    path = os.fspath(path)
    if path.startswith("gs://"):
      return str(root / path[len("gs://"):])
    assert not path.startswith("gs:"), f"a mangled URI reached the file system: {path}"
    return path

  def remote(path, like):
    path = os.fspath(path)
    if os.fspath(like).startswith("gs://") and path.startswith(str(root)):
      return "gs://" + os.path.relpath(path, root)
    return path

  def one(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  def two(original, path, dst, *args, **kwargs):
    return original(local(path), local(dst), *args, **kwargs)

  def glob(original, pattern):
    return [remote(p, pattern) for p in original(local(pattern))]

  def walk(original, top, **kwargs):
    for folder, folders, files in original(local(top), **kwargs):
      yield remote(folder, top), folders, files

  def open_(original, path, mode):
    if path_is_remote(path) and mode[0] in "wa":  # an object store has no folders to make
      os.makedirs(os.path.dirname(local(path)), exist_ok=True)
    return original(local(path), mode)

  def path_is_remote(path):
    return os.fspath(path).startswith("gs://")

  fns = {name: one for name in ("exists", "isdir", "listdir", "makedirs", "mkdir", "remove",
                                "rmtree", "stat")}
  fns.update(open=open_, copy=two, rename=two, replace=two, glob=glob, walk=walk)
  # TensorFlow's gfile would serve gs:// if installed; the fake backend must.
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs",
                      lambda path: {"driver": "file", "path": local(path)})
  monkeypatch.setattr(gcs_utils, "rmtree",
                      lambda path, missing_ok=False: shutil.rmtree(local(path),
                                                                   ignore_errors=missing_ok))
  with epath_testing.mock_epath(**fns):
    yield root
  assert not list(cwd.iterdir()), sorted(p.name for p in cwd.iterdir())


def test_workdir_path_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  for uri in ("gs://bucket/run", "s3://bucket/a/b", "gs://bucket/run/"):
    path = workdir_lib.workdir_path(uri)
    assert isinstance(path, epath.Path)
    assert str(path) == uri.rstrip("/")
    assert workdir_lib.is_remote(path) and workdir_lib.is_remote(uri)
  assert str(workdir_lib.workdir_path("runs/a")) == str(tmp_path / "runs" / "a")
  assert str(workdir_lib.workdir_path("~/runs")) == str(tmp_path / "home" / "runs")
  assert not workdir_lib.is_remote("runs/gs://x") and not workdir_lib.is_remote("/gs/x")
  assert str(workdir_lib.workdir_path(URI) / workdir_lib.CHECKPOINT_DIR) == URI + "/checkpoints"
  assert not (tmp_path / "gs:").exists()


def test_config_and_lock_go_through_the_uri(fake_gcs, tiny_train_config):
  config = tiny_train_config("unused")
  workdir_lib.save_config(URI, config)
  stored = fake_gcs / "bucket" / "run" / workdir_lib.CONFIG_FILE
  assert stored.is_file()
  # JSON holds the config's tuples (e.g. coarse_task.extent) as lists.
  assert (json.loads(workdir_lib.load_config(URI).to_json_best_effort())
          == json.loads(config.to_json_best_effort()))
  workdir_lib.check_folder(URI)
  with pytest.raises(ValueError, match="is a file"):
    workdir_lib.check_folder(URI + "/" + workdir_lib.CONFIG_FILE)

  lock = workdir_lib.WorkdirLock(URI)
  assert lock.remote and str(lock.path) == URI + "/.lock"
  assert lock.acquire() is None
  lock_file = fake_gcs / "bucket" / "run" / workdir_lib.LOCK_FILE
  assert '"pid": %d' % os.getpid() in lock_file.read_text()
  with pytest.raises(workdir_lib.WorkdirBusy, match="is in use by"):
    workdir_lib.WorkdirLock(URI).acquire()  # this process is alive: not stale
  lock.release()
  assert not lock_file.exists()
  with workdir_lib.WorkdirLock(URI + "/new") as second:  # a folder that did not exist
    assert (fake_gcs / "bucket" / "run" / "new" / workdir_lib.LOCK_FILE).is_file()
  assert second.takeover is None


def test_atomic_writes_to_a_uri_go_through_it(fake_gcs):
  """Output files the tools write atomically (evaluate's summary.json, export's
  artifact) reach a gs:// destination through epath, never a local gs: folder."""
  from flax_gradnet import atomic  # pylint: disable=g-import-not-at-top
  atomic.atomic_write_text(URI + "/eval/summary.json", '{"psnr": 1}')
  assert (fake_gcs / "bucket" / "run" / "eval" / "summary.json").read_text() == '{"psnr": 1}'
  atomic.atomic_write(URI + "/model.bin", lambda f: f.write(b"\x00\x01"), overwrite=False,
                      hint="--overwrite")
  assert (fake_gcs / "bucket" / "run" / "model.bin").read_bytes() == b"\x00\x01"
  with pytest.raises(FileExistsError, match=r"gs://bucket/run/model.bin exists .*--overwrite"):
    atomic.atomic_write(URI + "/model.bin", lambda f: f.write(b"x"), overwrite=False,
                        hint="--overwrite")
  assert (fake_gcs / "bucket" / "run" / "model.bin").read_bytes() == b"\x00\x01"


def test_remote_lock_that_another_run_wrote_in_between_is_not_taken(fake_gcs, monkeypatch):
  """The best-effort create: look, write, read back; a write that lands between
  ours and the read-back wins."""
  lock = workdir_lib.WorkdirLock(URI)
  path_cls = type(epath.Path(URI))
  real_write = path_cls.write_text
  host = json.dumps(socket.gethostname())

  def racing_write(path, text, *args, **kwargs):
    real_write(path, text, *args, **kwargs)
    if path.name == workdir_lib.LOCK_FILE:  # another run's lock lands just after ours
      real_write(path, text.replace(host, '"other-host"'))

  monkeypatch.setattr(path_cls, "write_text", racing_write)
  with pytest.raises(workdir_lib.WorkdirBusy, match="on another host"):
    lock.acquire()
  assert "other-host" in (fake_gcs / "bucket" / "run" / workdir_lib.LOCK_FILE).read_text()
  lock.release()  # not ours: left as it is
  assert (fake_gcs / "bucket" / "run" / workdir_lib.LOCK_FILE).exists()


def test_log_file_of_a_remote_workdir_goes_to_a_local_folder(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  calls = []

  class Handler:
    def use_absl_log_file(self, program_name, log_dir):
      calls.append((program_name, log_dir))

  monkeypatch.setattr(train.logging, "get_absl_handler", Handler)
  threshold = train.flags.FLAGS["stderrthreshold"]
  monkeypatch.setattr(threshold, "value", threshold.value)  # restored afterwards
  log_dir = train.log_to_workdir(URI, "train")
  assert calls == [("train", log_dir)] and os.path.isdir(log_dir)
  assert not log_dir.startswith("gs") and os.path.isabs(log_dir)
  os.rmdir(log_dir)
  assert train.log_to_workdir("local", "train") == str(tmp_path / "local")
  assert not (tmp_path / "gs:").exists()


def test_trains_resumes_and_restores_a_gs_workdir(fake_gcs, monkeypatch):
  logdirs = []

  def create_writer(logdir, **kwargs):
    logdirs.append(logdir)  # TensorFlow's own gs:// support is not faked: log only
    return writers.metric_writers().LoggingWriter()

  monkeypatch.setattr(writers, "create_writer", create_writer)
  import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config("online")
  config.num_train_steps, config.checkpoint_every_steps = 2, 1
  config.eval_every_steps, config.log_every_steps = 2, 1
  config.num_eval_images, config.num_image_summaries, config.critic_steps = 1, 0, 1
  metrics = train.train_and_evaluate(config, URI)
  assert np.isfinite(metrics["psnr"])  # evaluated at the last step
  assert logdirs == [URI]

  run = fake_gcs / "bucket" / "run"
  assert (run / workdir_lib.CONFIG_FILE).is_file()
  assert workdir_lib.saved_steps(URI) == [1, 2]
  step_dir = run / "checkpoints" / "2"
  # orbax took its GCS path (a commit file per item, no atomic rename)...
  assert (step_dir / "commit_success.txt").is_file()
  # ...and wrote the arrays and the iterator state there, nowhere else.
  assert list((step_dir / "state").glob("**/manifest.ocdbt"))
  assert (step_dir / "iterator" / "process_0-of-1.json").is_file()

  restored = checkpoints.restore_weights(URI)
  assert restored.step == 2

  config.num_train_steps = 3
  train.train_and_evaluate(config, URI)  # resumes from step 2 through the URI
  assert workdir_lib.saved_steps(URI) == [1, 2, 3]
  assert checkpoints.restore_weights(URI).step == 3
  assert config_checks.resume_conflicts(config, URI) == []
  config.crop_size = 16
  assert config_checks.resume_conflicts(config, URI) == ["crop_size: 32 -> 16"]
