"""End-to-end tests of the training loop on tiny synthetic data (CPU)."""

import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import types

import jax
import numpy as np
import optax
import pytest

import configs
from flax_gradnet import workdir as workdir_lib
from flax_gradnet import deblur, evaluate, evaluation, export, image_io, inference, pretrained, train
from flax_gradnet import checkpoints, config_checks, stopping
from flax_gradnet.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, arg=None):
  return configs.load(name if arg is None else f"{name}:{arg}")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny(tiny_train_config, data_dir):
  return tiny_train_config(data_dir, num_train_steps=4, log_every_steps=2, eval_every_steps=4,
                           checkpoint_every_steps=2, num_eval_images=2, num_image_summaries=1)


@pytest.fixture
def tiny_config(tiny_train_config):
  """4 steps, checkpoints every 2, evaluation at the end on 2 held-out images."""
  return lambda data_dir: _tiny(tiny_train_config, data_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_train_config, data_dir):
  """`trained(steps)`: (workdir, metrics) of `tiny_config` run for `steps` steps in a
  new workdir, as `train.train_and_evaluate(config, workdir)` leaves it. Trained
  once per module for the tests that start from such a run: read it, or copy it
  (`copy_run`) to train on or change it."""
  runs = {}

  def get(steps):
    if steps not in runs:
      config = _tiny(tiny_train_config, data_dir)
      config.num_train_steps = steps
      workdir = str(tmp_path_factory.mktemp(f"trained_{steps}_steps") / "run")
      runs[steps] = (workdir, train.train_and_evaluate(config, workdir))
    return runs[steps]

  return get


def copy_run(source, workdir):
  """A copy of the workdir `source` at `workdir` (a str)."""
  shutil.copytree(source, workdir, symlinks=True)
  return str(workdir)


def restored_state(workdir):
  manager = checkpoints.checkpoint_manager(workdir)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return step, state


def assert_trees_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resumed_run_equals_uninterrupted(tmp_path, data_dir, tiny_config, trained):
  config = tiny_config(data_dir)
  full, metrics = trained(4)
  assert {"psnr", "ssim", "blurry_psnr", "blurry_ssim"} <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert os.path.isfile(os.path.join(full, "config.json"))
  assert glob.glob(os.path.join(full, "events.out.tfevents.*")), "no TensorBoard events"

  resumed = copy_run(trained(2)[0], tmp_path / "resumed")  # `config` run for 2 steps
  assert restored_state(resumed)[0] == 2
  with config.unlocked():
    config.num_train_steps = 4
  train.train_and_evaluate(config, resumed)  # picks up at step 2

  step_a, state_a = restored_state(full)
  step_b, state_b = restored_state(resumed)
  assert step_a == step_b == 4
  assert int(state_a["critic"]["step"]) == 20  # 5 critic updates per generator update
  assert_trees_equal(state_a, state_b)

  # The inference tools restore the same generator from the workdir.
  model, params, restored = inference.restore(full)
  assert restored.step == 4 and model.base_features == 4
  assert_trees_equal(params, state_a["generator"]["params"])


def test_nonfinite_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, tiny_config, trained):
  config = tiny_config(data_dir)
  workdir = copy_run(trained(2)[0], tmp_path / "nan")  # `config` run for 2 steps
  _, good = restored_state(workdir)
  with config.unlocked():
    config.num_train_steps = 4
    config.learning_rate = float("nan")
  with pytest.raises(stopping.NonFiniteError, match="step 3"):
    train.train_and_evaluate(config, workdir)
  step, after = restored_state(workdir)
  assert step == 2
  assert_trees_equal(good, after)


def test_sigterm_saves_checkpoint_and_exits(tmp_path, data_dir, monkeypatch, tiny_config):
  config = tiny_config(data_dir)
  with config.unlocked():
    config.num_train_steps = 6
    config.checkpoint_every_steps = 100
    config.eval_every_steps = 100
  real = pipeline.create_train_iterator

  class Interrupting:
    def __init__(self, it):
      self.it, self.calls = it, 0

    def __next__(self):
      self.calls += 1
      if self.calls == 2:  # preempted while step 2 runs
        os.kill(os.getpid(), signal.SIGTERM)
      return next(self.it)

    def __getattr__(self, name):
      return getattr(self.it, name)

  monkeypatch.setattr(pipeline, "create_train_iterator",
                      lambda *a, **k: Interrupting(real(*a, **k)))
  workdir = str(tmp_path / "preempted")
  with pytest.raises(stopping.Preempted, match="step 2.*not finished") as info:
    train.train_and_evaluate(config, workdir)
  assert info.value.step == 2
  assert restored_state(workdir)[0] == 2
  assert stopping.PREEMPTED_EXIT_STATUS == 143  # documented in the README (128 + SIGTERM)


def test_a_sigterm_swallowed_during_start_up_stops_the_loop_at_its_first_step(tmp_path):
  """main's early SIGTERM handler exits at once; should start-up code catch that
  exit, the loop still stops at step 1, saved, as after any SIGTERM, and the
  record is consumed (the next run trains)."""
  config = tiny_online_config(num_train_steps=3, checkpoint_every_steps=100,
                              eval_every_steps=100)
  workdir = str(tmp_path / "run")
  stopping.note_early_sigterm()
  with pytest.raises(stopping.Preempted) as info:
    train.train_and_evaluate(config, workdir)
  assert info.value.step == 1 and restored_state(workdir)[0] == 1
  train.train_and_evaluate(config, workdir)
  assert restored_state(workdir)[0] == 3


def tiny_online_config(**overrides):
  """tests/tiny_config.py on `synthetic_online` (nothing to prepare), one critic update."""
  import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config("online")
  config.critic_steps, config.num_eval_images, config.num_image_summaries = 1, 1, 0
  for key, value in overrides.items():
    config[key] = value
  return config


def test_train_seconds_stops_early_and_leaves_a_restorable_checkpoint(tmp_path, caplog):
  """A budget that every step exceeds: one step, then the last step's evaluation
  and checkpoint; the schedule keeps num_train_steps' length; the rerun resumes."""
  config = tiny_online_config(num_train_steps=4, checkpoint_every_steps=100,
                              eval_every_steps=100, log_every_steps=100,
                              lr_schedule="cosine", train_seconds=1e-9)
  workdir = str(tmp_path / "budget")
  with caplog.at_level("WARNING"):
    metrics = train.train_and_evaluate(config, workdir)
  assert np.isfinite(metrics["psnr"])  # the final evaluation ran
  assert workdir_lib.saved_steps(workdir) == [1]
  assert checkpoints.restore_weights(workdir).step == 1
  assert workdir_lib.load_config(workdir).train_seconds == 1e-9
  assert "config.train_seconds=1e-09 reached" in caplog.text
  assert "stopped at step 1 of 4" in caplog.text
  # Cosine over 4 steps at step 1 (index 0): the base rate, as without a budget.
  assert "learning rate at 0.0001 of 0.0001" in caplog.text
  assert "this run made 1 steps" in caplog.text

  config.train_seconds = 0.0  # the same workdir without a budget: resumes to the end
  config.num_train_steps = 2
  train.train_and_evaluate(config, workdir)
  assert workdir_lib.saved_steps(workdir) == [1, 2]
  step, state = restored_state(workdir)
  assert step == 2 and int(state["generator"]["step"]) == 2


def test_time_budget_reads_the_clock_and_agrees_across_processes(monkeypatch):
  times = iter([100.0, 104.0, 109.9, 110.0, 111.0])
  budget = stopping.TimeBudget(10, clock=lambda: next(times))  # starts at 100
  assert [budget.spent(s) for s in (1, 2, 3)] == [False, False, True]
  assert budget.elapsed() == 11.0
  assert not stopping.TimeBudget(0, clock=lambda: 1e9).spent(1)  # 0 = no limit

  # Several processes: process 0's verdict, broadcast, every `every` steps only.
  monkeypatch.setattr(stopping.jax, "process_count", lambda: 2)
  asked = []

  def broadcast(value):
    asked.append(int(value))
    return value

  monkeypatch.setattr(stopping.multihost_utils, "broadcast_one_to_all", broadcast)
  clock = iter([0.0] + [50.0] * 10)
  budget = stopping.TimeBudget(30, every=4, clock=lambda: next(clock))
  assert [budget.spent(s) for s in range(1, 9)] == [False] * 3 + [True] + [False] * 3 + [True]
  assert asked == [1, 1]


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_bad_train_seconds_is_refused(tmp_path, value):
  config = tiny_online_config(train_seconds=value)
  with pytest.raises(ValueError, match=r"config.train_seconds must be a number of seconds >= 0"):
    config_checks.preflight(config, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


def test_main_trains_without_tensorflow_or_tfds(tmp_path):
  """`python -m flax_gradnet.main` with `tensorflow` and `tensorflow_datasets`
  blocked from import (as where they are not installed): it trains on
  synthetic_online, writes the metrics to the log, and leaves config.json and a
  checkpoint that restores. The model has a coarse pass trained by its own task
  (`--config.model.coarse_down`, `--config.coarse_task.*`: pairs drawn in the
  step, data/device_pairs.py), alone in step 1 (its warm-up), whose loss term
  reaches the log."""
  workdir = tmp_path / "no_tf"
  loaded = tmp_path / "loaded.txt"
  code = (
      "import atexit, sys\n"
      "sys.modules['tensorflow'] = None\n"
      "sys.modules['tensorflow_datasets'] = None\n"
      "def report():\n"
      "  names = [m for m, v in sys.modules.items() if v is not None and\n"
      "           m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]\n"
      f"  open({str(loaded)!r}, 'w').write(repr(names))\n"
      "atexit.register(report)\n"
      "from flax_gradnet import main\n"
      "main.run()\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  proc = subprocess.run(
      [sys.executable, "-c", code, "--config=tests/tiny_config.py:online",
       f"--workdir={workdir}", "--config.num_train_steps=2", "--config.eval_every_steps=2",
       "--config.log_every_steps=1", "--config.num_eval_images=1",
       "--config.num_image_summaries=0", "--config.critic_steps=1",
       "--config.model.coarse_down=2", "--config.coarse_task.weight=1.0",
       "--config.coarse_task.batch=2", "--config.coarse_task.crop=8",
       "--config.coarse_task.kernel_size=9", "--config.coarse_task.pool=2",
       "--config.coarse_task.extent=(1.0, 3.0)", "--config.coarse_task.photo_scales=(8,)",
       "--config.coarse_task.warmup_steps=1"],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert loaded.read_text() == "[]"  # nothing of either was imported
  assert "tensorflow is not installed: metrics go to the log file" in proc.stderr
  assert (workdir / "config.json").is_file()
  assert workdir_lib.saved_steps(str(workdir)) == [2]
  assert checkpoints.restore_weights(str(workdir)).step == 2
  log = (workdir / "train.INFO").read_text()
  assert "train/generator_loss=" in log and "train/generator_coarse_task=" in log
  assert checkpoints.restore_weights(str(workdir)).params["coarse"]
  assert not list(workdir.glob("events.out.tfevents*"))


def test_paper_config_without_vgg_weights_fails_with_instructions(tmp_path):
  config = load_config("default")
  with pytest.raises(FileNotFoundError, match="convert_vgg19"):
    train.train_and_evaluate(config, str(tmp_path / "paper"))


@pytest.mark.parametrize("name", ["wo_content", "wo_gradient", "wo_rgcl", "wo_mbrbs",
                                  "wo_gradientnet"])
def test_ablation_configs(name):
  config = load_config("ablations", name)
  default = load_config("default")
  diff = {k for k in ("content_weight", "gradient_weight") if config[k] != default[k]}
  diff |= {f"model.{k}" for k in default.model if config.model[k] != default.model[k]}
  assert len(diff) == 1, diff


def test_ablation_config_needs_a_name():
  with pytest.raises(ValueError, match="wo_content"):
    load_config("ablations", "")


def test_every_config_field_is_read():
  """Each field of the paper config is referenced by the library's code."""
  package = pathlib.Path(train.__file__).parent
  source = "\n".join(p.read_text() for p in package.rglob("*.py"))
  config = load_config("default")
  for key in config:
    if key == "model":
      continue  # Generator's own fields, passed as keyword arguments
    assert f"config.{key}" in source, f"config.{key} is never read"


def test_periodic_evaluation_equals_evaluate_under_the_recorded_inference(tmp_path):
  """The last periodic evaluation is `evaluate --workdir`'s default on the same
  checkpoint and held-out images: both deblur under config.inference."""
  config = tiny_online_config(num_train_steps=2, checkpoint_every_steps=100,
                              eval_every_steps=100, log_every_steps=100, num_eval_images=2)
  config.inference.self_ensemble = "mean"
  config.inference.low_freq_sigma = 8.0
  workdir = str(tmp_path / "run")
  metrics = train.train_and_evaluate(config, workdir)
  restored = inference.restore(workdir)[2]
  assert restored.options_recorded
  assert restored.options.self_ensemble == "mean" and restored.options.low_freq_sigma == 8.0
  source = train._source(config, "test", for_eval=True)  # pylint: disable=protected-access
  summary = evaluation.evaluate_workdir(workdir, source, output_dir=str(tmp_path / "eval"),
                                        num_images=2, num_grids=0, save_outputs=False,
                                        progress=False)
  assert summary["inference"]["self_ensemble"] == "mean"
  assert summary["inference"]["low_freq_sigma"] == 8.0
  assert summary["num_images"] == 2
  for key in ("psnr", "blurry_psnr"):
    assert abs(metrics[key] - summary["means"][key]) < 1e-4, (key, metrics, summary["means"])
  # The paper's protocol gives other numbers: the recorded settings were applied.
  paper = evaluation.evaluate_workdir(workdir, source, output_dir=str(tmp_path / "paper"),
                                      options=inference.PAPER_PROTOCOL, num_images=2,
                                      num_grids=0, save_outputs=False, progress=False)
  assert abs(metrics["psnr"] - paper["means"]["psnr"]) > 1e-4


def test_missing_photo_dir_is_refused_before_training(tmp_path):
  config = tiny_online_config()
  config.dataset_options.photo_dir = str(tmp_path / "no_photos")
  with pytest.raises(FileNotFoundError, match=r"config.dataset_options.photo_dir=.*no_photos.* is "
                     r"not a folder: fill one with experiments/fetch_photos.sh"):
    config_checks.preflight(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_invalid_recorded_inference_is_refused_before_training(tmp_path):
  config = tiny_online_config()
  config.inference.self_ensemble = "twice"
  with pytest.raises(ValueError, match="config.inference"):
    config_checks.preflight(config, str(tmp_path / "w"))


@pytest.mark.parametrize("lr_schedule, warmup", [("cosine", 20), ("cosine", 0),
                                                 ("constant", 20), ("constant", 0)])
def test_critic_schedule_follows_the_generator_step(lr_schedule, warmup):
  config = load_config("default")
  config.lr_schedule = lr_schedule
  config.critic_steps = 5
  config.adversarial_warmup_steps = warmup
  config.learning_rate = 1e-4
  config.critic_learning_rate = 3e-4
  num_steps = 100
  critic = train.critic_schedule(config, num_steps)
  base = train.make_schedule(config, config.critic_learning_rate, num_steps)
  counts = np.arange(400)
  gen_steps = warmup + counts // 5  # the generator step of each critic update
  got = np.asarray(critic(counts))
  np.testing.assert_allclose(got, np.asarray(base(gen_steps)), rtol=1e-6)
  # Independent reference: optax's cosine decay to 0 at num_steps, or constant.
  if lr_schedule == "cosine":
    ref = 3e-4 * 0.5 * (1 + np.cos(np.pi * np.minimum(gen_steps, num_steps) / num_steps))
  else:
    ref = np.full(counts.shape, 3e-4)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-9)  # float32
  for c in (0, 4, 5, 123, 399):  # scalar counts, as optax's Adam passes them
    np.testing.assert_allclose(float(critic(c)), ref[c], rtol=1e-5, atol=1e-9)


def _fresh_generator_params(config):
  generator, _ = train.steps.build_models(config)
  x = np.zeros((1, config.crop_size, config.crop_size, 3), np.float32)
  return jax.jit(generator.init)(jax.random.key(1), x)["params"]  # one compile, not one per op


def test_init_from_a_shipped_model_loads_every_weight():
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  config = load_config("gradnet_s_synth")
  fresh = _fresh_generator_params(config)
  loaded, description = checkpoints.load_init_params(pretrained.DEFAULT_MODEL, fresh)
  _, reference = pretrained.load(pretrained.DEFAULT_MODEL)
  assert_trees_equal(loaded, reference)
  n = len(jax.tree_util.tree_leaves(fresh))
  assert f"{n}/{n} weights loaded" in description


def test_init_from_a_workdir_then_fine_tunes(tmp_path, data_dir, tiny_config, trained):
  source = trained(4)[0]  # tiny_config(data_dir)'s run
  _, source_state = restored_state(source)
  # Fine-tune at learning rate 0 from step 2 of the source: the new run's
  # generator starts (and, at rate 0, stays) at those weights; its step and
  # critic are its own.
  config = tiny_config(data_dir)
  config.init_from = f"{source}@2"
  config.learning_rate = 0.0
  config.critic_learning_rate = 0.0
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  tuned = str(tmp_path / "tuned")
  train.train_and_evaluate(config, tuned)
  step, tuned_state = restored_state(tuned)
  assert step == 2
  manager = checkpoints.checkpoint_manager(source)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  at2 = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  assert_trees_equal(tuned_state["generator"]["params"], at2["generator"]["params"])
  assert not np.array_equal(  # step 2 and step 4 of the source differ, so @2 was honoured
      np.asarray(jax.tree_util.tree_leaves(at2["generator"]["params"])[0]),
      np.asarray(jax.tree_util.tree_leaves(source_state["generator"]["params"])[0]))


def test_init_from_refuses_a_different_model_unless_not_strict(tiny_train_config, data_dir):
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  config = tiny_train_config(data_dir)  # widths 4: every conv differs from the shipped model
  fresh = _fresh_generator_params(config)
  with pytest.raises(ValueError, match="(?s)does not fit the generator.*shape.*init_strict=False"):
    checkpoints.load_init_params(pretrained.DEFAULT_MODEL, fresh)
  loaded, description = checkpoints.load_init_params(pretrained.DEFAULT_MODEL, fresh, strict=False)
  flat_fresh = jax.tree_util.tree_leaves_with_path(fresh)
  flat_loaded = dict(jax.tree_util.tree_leaves_with_path(loaded))
  _, shipped = pretrained.load(pretrained.DEFAULT_MODEL)
  flat_shipped = dict(jax.tree_util.tree_leaves_with_path(shipped))
  n_taken = 0
  for path, value in flat_fresh:  # every weight: either the source's (same shape) or kept
    src = flat_shipped.get(path)
    if src is not None and np.shape(src) == value.shape:
      np.testing.assert_array_equal(np.asarray(flat_loaded[path]), np.asarray(src))
      n_taken += 1
    else:
      np.testing.assert_array_equal(np.asarray(flat_loaded[path]), np.asarray(value))
  assert f"{n_taken}/{len(flat_fresh)} weights loaded" in description


@pytest.mark.parametrize("init_from", ["no_such_model", "/no/such/workdir@3"])
def test_init_from_unknown_source_names_it(init_from):
  with pytest.raises(FileNotFoundError, match="(?s)neither a training workdir.*available"):
    checkpoints.load_init_params(init_from, {})


def test_batch_is_global_and_must_divide_over_devices():
  assert config_checks.batch_shares(4, num_devices=1, num_processes=1) == (4, 4)  # the paper's batch
  assert config_checks.batch_shares(8, num_devices=4, num_processes=2) == (4, 2)
  for bad in (6, 0):
    with pytest.raises(ValueError, match=rf"config.batch_size={bad} .*global.*4 device"):
      config_checks.batch_shares(bad, num_devices=4, num_processes=2)


def _damage_array_files(workdir, step):
  """Flips 64 bytes in the middle of every array file of a checkpoint (orbax
  groups arrays into files in an order that varies, so every file is hit to
  be sure the parameters are)."""
  files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d",
                                             "*"), recursive=True) if os.path.isfile(f)]
  assert files
  for target in files:
    size = os.path.getsize(target)
    with open(target, "r+b") as f:
      f.seek(size // 2)
      chunk = f.read(64)
      f.seek(size // 2)
      f.write(bytes(b ^ 0xFF for b in chunk))


def test_damaged_checkpoint_is_refused_everywhere(tmp_path, data_dir, tiny_config, trained):
  """Bytes flipped in a checkpoint's array file (sizes and metadata intact): resume,
  inference restore and the CLIs fail naming the checkpoint, never load garbage."""
  from flax_gradnet import export, inference  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir)
  workdir = copy_run(trained(4)[0], tmp_path / "run")  # `config`'s run
  inference.restore(workdir)  # intact: restores
  _damage_array_files(workdir, 4)
  problem = "(?s)checkpoint .*checkpoints/4.* (is damaged|cannot be read)"
  with pytest.raises(ValueError, match=problem):
    inference.restore(workdir)
  with pytest.raises(ValueError, match=problem):
    train.train_and_evaluate(config, workdir)  # resume refuses too
  assert export.main([f"--workdir={workdir}", f"--output={tmp_path / 'x.jaxexport'}"]) == 2
  assert not os.path.exists(tmp_path / "x.jaxexport")
  _, params, _ = inference.restore(workdir, step=2)  # the earlier step is intact
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(params))


def test_quiet_restore_failures_drops_only_closed_loop_reports(monkeypatch):
  """The unraisable reports of orbax's reads that end after a failed restore
  ("Event loop is closed") are dropped; every other report still goes through."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  checkpoints.quiet_restore_failures()
  checkpoints.quiet_restore_failures()  # installs one filter, however often called
  report = lambda e: types.SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=None,
                                           err_msg=None, object=None)
  sys.unraisablehook(report(RuntimeError("Event loop is closed")))
  other = report(RuntimeError("something else"))
  sys.unraisablehook(other)
  sys.unraisablehook(report(ValueError("Event loop is closed")))
  assert [r.exc_value.args for r in seen] == [("something else",), ("Event loop is closed",)]
  assert seen[0] is other


def test_a_refused_resume_closes_the_checkpoint_manager(tmp_path, data_dir, tiny_config,
                                                         monkeypatch, trained):
  """A checkpoint refused after it was read (digest mismatch) closes its manager
  before the error propagates; left to the garbage collector, orbax's async
  machinery warned "Event loop is closed" in a later test."""
  config = tiny_config(data_dir)
  with config.unlocked():
    config.num_train_steps = 2
  workdir = copy_run(trained(2)[0], tmp_path / "run")  # `config`'s run
  closed, filtered = [], []
  real = checkpoints.checkpoint_manager

  def spy(*args, **kwargs):
    manager = real(*args, **kwargs)
    close, restore = manager.close, manager.restore
    manager.close = lambda: (closed.append(True), close())[1]

    def spied_restore(*a, **k):
      # The late reports of a failing restore can come before it returns: the
      # filter must be in place already (checkpoints.quiet_restore_failures).
      filtered.append(getattr(sys.unraisablehook, "drops_closed_loop_reports", False))
      return restore(*a, **k)

    manager.restore = spied_restore
    return manager

  def refuse(state, data, where):
    raise ValueError(f"checkpoint {where} is damaged (test)")

  monkeypatch.setattr(checkpoints, "checkpoint_manager", spy)
  monkeypatch.setattr(checkpoints, "verify_checkpoint", refuse)
  # Python's own hook (no filter yet), restored after the test.
  monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
  with pytest.raises(ValueError, match="is damaged"):
    train.train_and_evaluate(config, workdir)
  assert closed == [True]
  assert filtered == [True]


def test_restart_with_a_changed_model_is_refused_and_keeps_the_workdir(tmp_path, data_dir,
                                                                       tiny_config, trained):
  workdir = copy_run(trained(2)[0], tmp_path / "run")  # tiny_config(data_dir) run for 2 steps
  stored = open(os.path.join(workdir, "config.json")).read()
  changed = tiny_config(data_dir)
  with changed.unlocked():
    changed.num_train_steps = 4  # run length may change ...
    changed.model.base_features = 8  # ... the saved state's shapes may not
    changed.b1 = 0.9
    changed.coarse_task.warmup_steps = 5  # ... nor the optimizer's shape
  with pytest.raises(ValueError, match=r"\(b1: 0.5 -> 0.9; coarse_task.warmup_steps: 0 -> 5; "
                                       r"model.base_features: 4 -> 8\)"):
    train.train_and_evaluate(changed, workdir)
  assert open(os.path.join(workdir, "config.json")).read() == stored
  # A config.json from before the field: no warm-up then.
  older = json.loads(stored)
  del older["coarse_task"]["warmup_steps"]
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(older, f)
  assert "coarse_task.warmup_steps: absent (0) -> 5" in config_checks.resume_conflicts(
      changed, workdir)
  # Its length may change, like the run's; not from some to none.
  older["coarse_task"]["warmup_steps"] = 3
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(older, f)
  assert not any("warmup" in c for c in config_checks.resume_conflicts(changed, workdir))
  with changed.unlocked():
    changed.coarse_task.warmup_steps = 0
  assert "coarse_task.warmup_steps: 3 -> 0" in config_checks.resume_conflicts(changed, workdir)
  model, _, restored = inference.restore(workdir)  # still deblurs
  assert restored.step == 2 and model.base_features == 4
  assert config_checks.resume_conflicts(changed, str(tmp_path / "empty")) == []  # nothing to resume


MAIN = [sys.executable, "-m", "flax_gradnet.main"]


@pytest.mark.parametrize("args, message", [
    (["--config=configs/quickstart.py", "--config.num_train_stepz=3"],
     "unknown config field in the command line: 'num_train_stepz'"),
    (["--config=configs/no_such_config.py"], "--config could not be loaded"),
    (["--config=configs/default.py"], "config.vgg_weights=''"),
    (["--config=configs/quickstart.py", "--workdir_is_a_file"], "is a file"),
])
def test_main_reports_bad_input_in_one_line_and_writes_nothing(tmp_path, args, message):
  workdir = tmp_path / "w"
  if "--workdir_is_a_file" in args:
    args = [a for a in args if a != "--workdir_is_a_file"]
    workdir.write_text("not a folder")
  proc = subprocess.run(MAIN + args + [f"--workdir={workdir}"], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
  assert not workdir.exists() or workdir.is_file()


def test_fresh_critic_batches_read_critic_steps_plus_one_batches(tmp_path, data_dir, tiny_config,
                                                                 monkeypatch):
  config = tiny_config(data_dir)
  with config.unlocked():
    config.num_train_steps = 2
    config.critic_steps = 2
    config.critic_batches = "fresh"
  real = pipeline.create_train_iterator
  counts = []

  class Counting:
    def __init__(self, it):
      self.it = it
      counts.append(0)

    def __next__(self):
      counts[-1] += 1
      return next(self.it)

    def __getattr__(self, name):
      return getattr(self.it, name)

  monkeypatch.setattr(pipeline, "create_train_iterator",
                      lambda *a, **k: Counting(real(*a, **k)))
  metrics = train.train_and_evaluate(config, str(tmp_path / "fresh"))
  assert np.isfinite(metrics["psnr"])
  assert counts == [2 * (2 + 1)]  # per step: one batch per critic update + the generator's
  with config.unlocked():
    config.critic_batches = "new"
  with pytest.raises(ValueError, match="critic_batches"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))


def test_profile_steps_write_a_trace(tmp_path, data_dir, tiny_config):
  config = tiny_config(data_dir)
  with config.unlocked():
    config.num_train_steps = 13
    config.checkpoint_every_steps = 13
    config.eval_every_steps = 13
    config.profile_steps = 2
  workdir = tmp_path / "profiled"
  train.train_and_evaluate(config, str(workdir))
  traces = list(workdir.glob("plugins/profile/*/*.xplane.pb"))
  assert traces, sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))


def test_finetune_folder_config_trains_on_a_paired_tree(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, n in (("train", 3), ("test", 2)):
    for i in range(n):
      for sub in ("input", "target"):
        folder = tmp_path / "pairs" / split / sub
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), np.uint8)).save(folder / f"{i}.png")
  config = load_config("finetune_folder", str(tmp_path / "pairs"))
  assert config.init_from == pretrained.DEFAULT_MODEL
  with config.unlocked():
    config.data_dir = str(tmp_path / "tfds")
    config.num_train_steps, config.batch_size, config.crop_size = 1, 2, 32
  metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(metrics["psnr"]) and metrics["blurry_psnr"] > 0
  with pytest.raises(ValueError, match="needs the pairs' folder"):
    load_config("finetune_folder", "")


# ---------------------------------------------------------------- EMA of the generator's weights


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def _assert_ema(ema, previous_ema, params, decay):
  """ema == decay * previous_ema + (1 - decay) * params, leaf by leaf (float32)."""
  for e, p0, p in zip(_leaves(ema), _leaves(previous_ema), _leaves(params), strict=True):
    np.testing.assert_allclose(e, decay * p0 + (1 - decay) * p, rtol=1e-6, atol=1e-7)


def test_ema_update_rule_matches_a_numpy_recurrence(tiny_train_config, data_dir):
  import functools  # pylint: disable=g-import-not-at-top
  config = tiny_train_config(data_dir, ema_decay=0.9)
  generator, critic = train.steps.build_models(config)
  tx = optax.adam(1e-2, b1=config.b1, b2=config.b2)
  state = train.steps.create_state(jax.random.key(0), generator, critic, image_size=32,
                                   generator_tx=tx, critic_tx=tx)
  state = state.replace(ema_params=train._host_copy(state.generator.params))
  step = jax.jit(functools.partial(
      train.steps.train_step, generator_apply=generator.apply, critic_apply=critic.apply,
      cfg=train.steps.StepConfig.from_config(config), adversarial=False))
  rng = np.random.default_rng(0)
  batch = {k: rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32) for k in ("blur", "sharp")}
  content_fn = jax.tree_util.Partial(train.steps.losses.pixel_content_loss)
  expected = _leaves(state.generator.params)  # the average starts at the initial weights
  for _ in range(3):
    state, _ = step(state, batch, jax.random.key(1), content_fn)
    expected = [0.9 * e + 0.1 * p for e, p in zip(expected, _leaves(state.generator.params))]
    for got, want in zip(_leaves(state.ema_params), expected, strict=True):
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert not np.allclose(_leaves(state.ema_params)[0], _leaves(state.generator.params)[0])


def _checkpoint_state(workdir, step):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = checkpoints.checkpoint_manager(workdir)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return state


def test_ema_resumes_from_a_checkpoint_without_it_and_is_restored(tmp_path, data_dir, tiny_config,
                                                                  caplog, trained):
  """A run without EMA (checkpoints as older versions wrote them) resumed with
  EMA on: the average starts from the step-2 weights, follows the recurrence,
  is checkpointed and restored, and is what the inference tools load; a
  restart with EMA off drops it."""
  workdir = copy_run(trained(2)[0], tmp_path / "run")  # `config` run for 2 steps
  config = tiny_config(data_dir)
  config.num_train_steps = 2
  assert checkpoints.EMA_KEY not in _checkpoint_state(workdir, 2)

  # --weights=ema of a checkpoint without EMA: exit 2 with the reason, in every tool.
  image = tmp_path / "a.png"
  image_io.write_image(str(image), np.full((16, 20, 3), 128, np.uint8))
  out = ["--output_dir", str(tmp_path / "out")]
  assert deblur.main([str(image), "--workdir", workdir, "--weights", "ema"] + out) == 2
  assert evaluate.main(["--workdir", workdir, "--weights", "ema", "--dataset", "synthetic",
                        "--data_dir", data_dir] + out) == 2
  assert export.main(["--workdir", workdir, "--weights", "ema",
                      "--output", str(tmp_path / "x.jaxexport")]) == 2
  assert deblur.main([str(image), "--model", "gradnet_s_native", "--weights", "raw"] + out) == 2
  with pytest.raises(ValueError, match="holds no EMA weights.*--weights raw"):
    inference.restore(workdir, weights="ema")
  assert not (tmp_path / "out").exists() and not (tmp_path / "x.jaxexport").exists()

  config.num_train_steps, config.checkpoint_every_steps, config.ema_decay = 4, 1, 0.5
  with caplog.at_level("WARNING"):
    metrics = train.train_and_evaluate(config, workdir)
  assert "holds no EMA weights: the EMA starts from the generator's weights at step 2" in (
      caplog.text)
  assert {"psnr", "ema_psnr", "ema_ssim", "ema_psnr_gain"} <= set(metrics)
  events = b"".join(open(f, "rb").read() for f in glob.glob(f"{workdir}/events.out.tfevents.*"))
  assert b"eval_ema/psnr" in events and b"eval/psnr" in events
  s2, s3, s4 = (_checkpoint_state(workdir, s) for s in (2, 3, 4))
  _assert_ema(s3[checkpoints.EMA_KEY]["params"], s2["generator"]["params"],
              s3["generator"]["params"], 0.5)
  _assert_ema(s4[checkpoints.EMA_KEY]["params"], s3[checkpoints.EMA_KEY]["params"],
              s4["generator"]["params"], 0.5)

  # The tools load the EMA by default, the raw weights on request.
  model, params, desc = inference.restore(workdir)
  assert desc.weights == "ema" and "(EMA weights)" in desc and desc.step == 4
  assert_trees_equal(params, s4[checkpoints.EMA_KEY]["params"])
  _, raw, _ = inference.restore(workdir, weights="raw")
  assert_trees_equal(raw, s4["generator"]["params"])
  root = str(tmp_path / "models")
  pretrained.pack(workdir, "ema_tiny", root=root)
  assert pretrained.read_metadata("ema_tiny", root)["weights"] == "ema"
  assert_trees_equal(pretrained.load("ema_tiny", root=root)[1], params)

  # Resumed with EMA: the average continues from the checkpoint's (not from step 4's weights).
  config.num_train_steps = 5
  train.train_and_evaluate(config, workdir)
  s5 = _checkpoint_state(workdir, 5)
  _assert_ema(s5[checkpoints.EMA_KEY]["params"], s4[checkpoints.EMA_KEY]["params"],
              s5["generator"]["params"], 0.5)
  # Resumed with EMA off: dropped, and said so.
  config.num_train_steps, config.ema_decay = 6, 0.0
  caplog.clear()
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(config, workdir)
  assert "EMA weights of checkpoint" in caplog.text and "are dropped" in caplog.text
  assert checkpoints.EMA_KEY not in _checkpoint_state(workdir, 6)
  assert inference.restore(workdir)[2].weights == "raw"


def test_ema_decay_out_of_range_is_refused(tmp_path, data_dir, tiny_config):
  config = tiny_config(data_dir)
  config.ema_decay = 1.0
  with pytest.raises(ValueError, match=r"config.ema_decay must be in \[0, 1\)"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


def test_negative_loss_low_freq_sigma_is_refused(tmp_path, data_dir, tiny_config):
  config = tiny_config(data_dir)
  config.loss_low_freq_sigma = -1.0
  with pytest.raises(ValueError, match=r"config.loss_low_freq_sigma must be a number >= 0"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("weight,scales,match", [
    (-1.0, 3, r"config.scale_loss_weight must be a number >= 0"),
    (0.5, 1, r"config.scale_loss_weight=0.5 weighs the coarse passes' losses, but "
             r"config.model.scales=1 has none"),
])
def test_bad_scale_loss_weight_is_refused(tmp_path, data_dir, tiny_config, weight, scales, match):
  config = tiny_config(data_dir)
  config.scale_loss_weight = weight
  config.model.scales = scales
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- the best checkpoint


def test_best_step_selection_and_rotation_over_fake_metrics(tmp_path):
  """Latest N plus the best (later step on ties; NaN and missing metrics never best)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path)
  psnr = {1: 20.0, 2: 30.0, 3: float("nan"), 4: None, 5: 30.0, 6: 25.0, 7: None, 8: None}
  kept = {1: [1], 2: [1, 2], 3: [2, 3], 4: [2, 3, 4], 5: [4, 5], 6: [5, 6], 7: [5, 6, 7],
          8: [5, 7, 8]}
  for step, value in psnr.items():
    manager = checkpoints.checkpoint_manager(workdir, max_to_keep=2, keep_best=True)
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"generator": {"params": {"w": np.full(2, step, np.float32)}}}),
        data=ocp.args.JsonSave({})), metrics=None if value is None else {"psnr": value})
    manager.wait_until_finished()
    manager.close()  # a new manager per step: what it keeps is read back from disk
    reader = checkpoints.checkpoint_manager(workdir)
    assert list(reader.all_steps()) == kept[step], step
    if step >= 2:
      assert checkpoints.best_step(reader)[0] == (2 if step < 5 else 5)
    reader.close()
  assert checkpoints.eval_rank({"psnr": float("nan")}) == checkpoints.eval_rank(None) == -np.inf


def _saved_steps(workdir):
  manager = checkpoints.checkpoint_manager(workdir)
  steps = list(manager.all_steps())
  manager.close()
  return steps


def test_keep_best_keeps_and_resolves_the_best_step(tmp_path, data_dir, tiny_config, monkeypatch,
                                                    generator_workdir, capsys):
  """A real run whose held-out PSNRs are set by a stand-in for `evaluation.evaluate_source`: the
  best evaluated step survives max_to_keep=1 (also across a resume) and
  `--step best` restores it."""
  psnr = {1: 20.0, 2: 30.0, 3: 25.0, 4: 22.0, 5: 21.0, 6: 29.0, 7: 31.0}
  step_of_call = []

  def fake_evaluate(generator, params, source, **kwargs):
    del generator, params, source, kwargs
    step = len(step_of_call) + 1
    step_of_call.append(step)
    return {"psnr": psnr[step], "ssim": 0.5, "blurry_psnr": 20.0, "blurry_ssim": 0.4,
            "psnr_gain": psnr[step] - 20.0}, []

  monkeypatch.setattr(evaluation, "evaluate_source", fake_evaluate)
  config = tiny_config(data_dir)
  config.eval_every_steps, config.checkpoint_every_steps = 1, 100
  config.max_checkpoints_to_keep = 1
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)  # steps 1-4
  assert _saved_steps(workdir) == [2, 4]
  manager = checkpoints.checkpoint_manager(workdir)
  assert manager.metrics(2) == {"psnr": 30.0, "ssim": 0.5, "psnr_gain": 10.0, "ema": 0.0}
  manager.close()
  _, params, desc = inference.restore(workdir, step="best")
  assert desc.step == 2 and "best held-out PSNR 30.00 dB" in desc
  assert_trees_equal(params, _checkpoint_state(workdir, 2)["generator"]["params"])

  image = tmp_path / "a.png"
  image_io.write_image(str(image), np.full((16, 20, 3), 128, np.uint8))
  assert deblur.main([str(image), "--workdir", workdir, "--step", "best",
                      "--output_dir", str(tmp_path / "out")]) == 0
  assert "at step 2 (best held-out PSNR 30.00 dB)" in capsys.readouterr().err
  assert export.main(["--workdir", workdir, "--step", "best", "--height", "16", "--width", "20",
                      "--platforms", "cpu", "--output", str(tmp_path / "x.jaxexport")]) == 0
  assert "step 2 (raw weights)" in capsys.readouterr().out

  config.num_train_steps = 6  # resumed: 5 and 6 are worse than 2, which stays
  train.train_and_evaluate(config, workdir)
  assert inference.restore(workdir, step="best")[2].step == 2
  assert _saved_steps(workdir) == [2, 6]
  config.num_train_steps = 7  # a new best replaces it
  train.train_and_evaluate(config, workdir)
  assert _saved_steps(workdir) == [7]
  assert inference.restore(workdir, step="best")[2].step == 7

  # No evaluated checkpoint (keep_best off, or written before it existed): a clear error.
  plain = str(tmp_path / "plain")
  generator_workdir(plain, config.model.to_dict(), params, 3)
  assert deblur.main([str(image), "--workdir", plain, "--step", "best",
                      "--output_dir", str(tmp_path / "out2")]) == 2
  assert "no evaluated checkpoint" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    deblur.main([str(image), "--workdir", plain, "--step", "latest",
                 "--output_dir", str(tmp_path / "out2")])
  assert "expected a checkpoint step or 'best'" in capsys.readouterr().err
