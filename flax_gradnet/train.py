"""The training loop: states, jitted steps over a device mesh, writers, evaluation.

`train_and_evaluate(config, workdir)` is the whole job; `main.py` only parses
flags. The config is checked first (`config_checks.preflight`). A run started
again on the same workdir resumes from its latest checkpoint (networks,
optimizers, step and data iterator: `checkpoints.resume`), so after N steps its
parameters equal those of an uninterrupted N-step run (`checkpoints.save`
writes them; `checkpoints.load_init_params` loads config.init_from). The
workdir may be a local folder or a URI (gs://BUCKET/run): it stays an
`epath.Path` from the flag to orbax, config.json and the metric writer
(`workdir.workdir_path`). Early stops (SIGTERM, config.train_seconds, NaN)
are `stopping`'s; the held-out evaluation is `evaluation.evaluate_source`.

Needs jax, flax, optax, orbax, grain, clu and numpy; TensorFlow only for
TensorBoard event files (`writers`: without it metrics go to the log) and TFDS
only for the data sets it prepares (`synthetic_online` needs neither).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import flags, logging
from etils import epath
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

from flax_gradnet import workdir as workdir_lib
from flax_gradnet import checkpoints, config_checks, evaluation, steps, stopping, writers
from flax_gradnet.data import device_pairs, pipeline

# clu.metric_writers (which periodic_actions imports) needs TensorFlow unless
# `writers` has stood in for its TensorBoard writer first.
metric_writers = writers.metric_writers()
# pylint: disable-next=g-import-not-at-top,wrong-import-position,wrong-import-order
from clu import parameter_overview, periodic_actions


def make_schedule(config, base_lr: float, num_steps: int) -> optax.Schedule:
  if config.lr_schedule == "constant":
    return optax.constant_schedule(base_lr)
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(base_lr, max(1, num_steps))
  raise ValueError(f"config.lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")


def critic_schedule(config, num_steps: int) -> optax.Schedule:
  """The critic's learning rate, indexed by *generator* step.

  The critic's Adam counts its own updates: `critic_steps` per generator step,
  and none during the adversarial warm-up. Its schedule therefore maps update
  count c to generator step `warmup + c // critic_steps`, so at every
  generator step both networks follow the same curve (with a cosine schedule
  the critic's rate would otherwise reach 0 after 1/critic_steps of the run).
  """
  base = make_schedule(config, config.critic_learning_rate, num_steps)
  warmup = max(0, int(config.adversarial_warmup_steps))
  per_step = max(1, int(config.critic_steps))
  return lambda count: base(warmup + count // per_step)


def num_train_steps(config, train_size: int) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(np.ceil(config.num_epochs * train_size / config.batch_size))


def _source(config, split: str, *, for_eval: bool = False):
  dataset, options = config.dataset, config.dataset_options
  if for_eval and config.eval_dataset:
    dataset, options = config.eval_dataset, config.eval_dataset_options
  return pipeline.get_source(dataset, split, data_dir=os.path.expanduser(config.data_dir),
                             manual_dir=os.path.expanduser(config.manual_dir) or None,
                             **options.to_dict())


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize` for a multi-process run (call before any JAX work).

  With no arguments JAX detects the cluster (SLURM, Open MPI, Cloud TPU, ...);
  otherwise every process is given the same coordinator address ("host:port",
  served by process 0) and process count, and its own id. On CPU the
  cross-process collectives go through gloo.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def log_to_workdir(workdir: epath.PathLike, program: str) -> str:
  """Sends library INFO logs (orbax, TFDS, clu, absl) to files in the workdir.

  absl writes `<program>.INFO` (a link to the newest log) in `workdir`; the
  terminal keeps warnings and errors only. absl's log file can only be local:
  for a remote workdir (gs://...) the logs go to a new local temporary folder
  instead. Call it from a program's main, after absl has parsed its flags.

  Returns:
    The folder the log files are in.
  """
  if workdir_lib.is_remote(workdir):
    log_dir = tempfile.mkdtemp(prefix=f"flax_gradnet_{program}_logs_")
  else:
    log_dir = os.fspath(workdir_lib.workdir_path(workdir))
    os.makedirs(log_dir, exist_ok=True)
  logging.get_absl_handler().use_absl_log_file(program_name=program, log_dir=log_dir)
  flags.FLAGS.stderrthreshold = "warning"
  return log_dir


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: epath.PathLike, *,
                       progress: bool = False) -> dict[str, float]:
  """Trains the GAN of the config in `workdir`; returns the last evaluation's metrics
  (with config.ema_decay > 0 also the EMA weights', as `ema_<name>`).

  Raises:
    Preempted: after a SIGTERM, once the checkpoint of the current step is saved.
    NonFiniteError: on NaN or Inf, before any checkpoint of that state.

  Args:
    config: the training configuration (see configs/default.py).
    workdir: checkpoints, config.json and TensorBoard logs; resumed if it holds
      a checkpoint. A local path or a URI (gs://BUCKET/run).
    progress: show a progress bar on stderr (steps, generator loss, last
      held-out PSNR gain).
  """
  if config.initialize_distributed and not jax.distributed.is_initialized():
    initialize_distributed()
  workdir = workdir_lib.workdir_path(workdir)
  config_checks.preflight(config, workdir)  # nothing is written before these checks pass
  _, per_device = config_checks.batch_shares(config.batch_size)
  content_fn = steps.make_content_fn(config)
  coarse_task = device_pairs.coarse_task_from_config(config)  # None unless config.coarse_task
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  writer = writers.create_writer(os.fspath(workdir), just_logging=not is_chief)
  if is_chief:
    workdir_lib.save_config(workdir, config)

  train_source = _source(config, "train")
  eval_source = _source(config, "test", for_eval=True)
  total_steps = num_train_steps(config, len(train_source))
  generator, critic = steps.build_models(config)
  schedules = (make_schedule(config, config.learning_rate, total_steps),
               critic_schedule(config, total_steps))
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  state = steps.create_state(init_rng, generator, critic, image_size=config.crop_size,
                             generator_tx=_generator_tx(config, schedules[0], total_steps),
                             critic_tx=optax.adam(schedules[1], b1=config.b1, b2=config.b2),
                             init_scheme=config.init_scheme)
  train_iter = pipeline.create_train_iterator(
      train_source, crop_size=config.crop_size, per_device_batch_size=per_device,
      num_local_devices=jax.local_device_count(), seed=config.seed, flips=config.flips,
      rot90=config.rot90, color_jitter=config.color_jitter, scale_jitter=config.scale_jitter,
      worker_count=config.worker_count, channels=generator.channels)
  manager = checkpoints.checkpoint_manager(workdir, max_to_keep=config.max_checkpoints_to_keep,
                                          keep_best=config.keep_best)
  try:
    state = _initial_state(config, manager, state, train_iter)
  except BaseException:
    # A refused checkpoint (unreadable, damaged, iterator state) or init_from:
    # close the manager here, or its async machinery is torn down by the
    # garbage collector later ("Event loop is closed").
    manager.close()
    raise
  initial_step = int(state.step)
  if is_chief and initial_step == 0:
    _log_models(config, state, writer)

  step_fn, replicated = _make_step_fn(config, generator, critic, train_iter)
  state, content_fn, coarse_task, step_rng = _replicate(
      (state, content_fn, coarse_task, step_rng), replicated)
  run = _Run(config=config, workdir=workdir, writer=writer, manager=manager,
             train_iter=train_iter, eval_source=eval_source, generator=generator,
             schedules=schedules, total_steps=total_steps, is_chief=is_chief)
  return _train_loop(run, state, initial_step,
                     functools.partial(step_fn, rng=step_rng, content_fn=content_fn,
                                       coarse_task=coarse_task),
                     progress=progress)


def _generator_tx(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                  total_steps: int) -> optax.GradientTransformation:
  """Adam on `schedule`; with config.coarse_task.warmup_steps = K > 0, Adam per
  group (`steps.grouped_adam`): the coarse net on `schedule` over all the steps,
  the rest on the same kind of schedule over the `total_steps - K` steps after
  the warm-up, which start its count."""
  warmup = device_pairs.warmup_steps(config)
  device_pairs.check_warmup_fits(warmup, total_steps)  # a length from epochs: known only here
  if not warmup:
    return optax.adam(schedule, b1=config.b1, b2=config.b2)
  rest = make_schedule(config, config.learning_rate, total_steps - warmup)
  return steps.grouped_adam(schedule, rest, b1=config.b1, b2=config.b2)


def _initial_state(config: ml_collections.ConfigDict, manager: ocp.CheckpointManager,
                   state: steps.GANState, train_iter: pipeline.TrainIterator) -> steps.GANState:
  """The state training starts from: the manager's latest checkpoint (the data
  iterator restored with it), else the fresh `state` with the generator of
  `config.init_from` when set, and with an EMA (config.ema_decay > 0) that
  starts at the initial weights (as BasicSR's)."""
  if manager.latest_step() is not None:
    return _resume(manager, state, train_iter, ema=config.ema_decay > 0)
  if config.init_from:
    params, description = checkpoints.load_init_params(
        config.init_from, state.generator.params, strict=config.init_strict)
    state = state.replace(generator=state.generator.replace(params=params))
    logging.info("Generator initialised from %s.", description)
  if config.ema_decay > 0:
    state = state.replace(ema_params=_host_copy(state.generator.params))
  return state


def _log_models(config: ml_collections.ConfigDict, state: steps.GANState, writer) -> None:
  """A fresh run's parameter tables (the log) and hyperparameters (TensorBoard)."""
  logging.info("Generator:\n%s", parameter_overview.get_parameter_overview(
      state.generator.params))
  logging.info("Critic:\n%s", parameter_overview.get_parameter_overview(state.critic.params))
  writer.write_hparams(traverse_util.flatten_dict(config.to_dict(), sep="."))


def _make_step_fn(config: ml_collections.ConfigDict, generator, critic,
                  train_iter: pipeline.TrainIterator) -> tuple[Callable, NamedSharding]:
  """(`step_fn(state, step, *, rng, content_fn, coarse_task) -> (state, metrics)`, the
  replicated sharding).

  `step_fn` runs the compiled coarse warm-up step (steps up to
  config.coarse_task.warmup_steps; no batch), or draws the step's global batch
  and runs the compiled warm-up step (steps up to
  config.adversarial_warmup_steps) or the GAN step on it.
  One program for all devices (jit over a 1-D mesh, axis "data"): the batch
  is split across devices, parameters and optimizer states are replicated,
  and XLA inserts the gradient all-reduce that averaging over the global
  batch implies.
  """
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  # critic_batches="fresh": each critic update reads its own batch, drawn from
  # the same stream before the generator's ([critic_steps, batch, ...]).
  fresh = config.critic_batches == "fresh" and config.adversarial_weight != 0
  train_step = _compile_step(config, generator, critic, mesh, adversarial=True, fresh=fresh)
  warmup_step = _compile_step(config, generator, critic, mesh, adversarial=False, fresh=fresh)
  next_batch = _batch_reader(config, train_iter, mesh, fresh=fresh)
  coarse_warmup = device_pairs.warmup_steps(config)
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  # Steps 1..coarse_warmup: the coarse net alone on its task; no batch is read, so
  # the data stream after the warm-up is the one a run without it reads.
  coarse_step = jax.jit(
      functools.partial(steps.coarse_warmup_step, generator_apply=generator.apply,
                        cfg=steps.StepConfig.from_config(config), coarse_sharding=data),
      in_shardings=(replicated,) * 4, out_shardings=replicated, donate_argnums=(0,))

  def step_fn(state, step, *, rng, content_fn, coarse_task=None):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      if step <= coarse_warmup:
        return coarse_step(state, rng, content_fn, coarse_task)
      warm = step <= config.adversarial_warmup_steps
      batch = next_batch(adversarial=not warm)
      return (warmup_step if warm else train_step)(state, batch, rng, content_fn, coarse_task)

  return step_fn, NamedSharding(mesh, P())


def _compile_step(config: ml_collections.ConfigDict, generator, critic, mesh: jax.sharding.Mesh,
                  *, adversarial: bool, fresh: bool) -> Callable:
  """`steps.train_step` jitted over `mesh`: state, rng, content_fn and the coarse
  task replicated (content_fn and the coarse task are arguments, so the VGG19
  weights and the coarse task's photographs are replicated once rather than
  baked into the compiled step), the batch sharded on "data"; the state is
  donated. The coarse task's pairs, drawn from the replicated key, are
  constrained to the "data" axis, so XLA splits their drawing and the coarse
  net's work over the devices (config.coarse_task.batch divides over them)."""
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  fn = functools.partial(steps.train_step, generator_apply=generator.apply,
                         critic_apply=critic.apply, cfg=steps.StepConfig.from_config(config),
                         adversarial=adversarial, axis_name=None, coarse_sharding=data)
  batch_sharding = {"blur": data, "sharp": data}
  if fresh and adversarial:
    critic_data = NamedSharding(mesh, P(None, "data"))
    batch_sharding.update(critic_blur=critic_data, critic_sharp=critic_data)
  return jax.jit(fn, in_shardings=(replicated, batch_sharding, replicated, replicated,
                                   replicated),
                 out_shardings=replicated, donate_argnums=(0,))


def _batch_reader(config: ml_collections.ConfigDict, train_iter: pipeline.TrainIterator,
                  mesh: jax.sharding.Mesh, *, fresh: bool) -> Callable[..., dict[str, jax.Array]]:
  """`next_batch(adversarial)`: the next global batch, with `critic_steps` more
  batches for the critic ("critic_blur", "critic_sharp") when `fresh`."""
  data_sharding = NamedSharding(mesh, P("data"))
  critic_data_sharding = NamedSharding(mesh, P(None, "data"))

  def global_batch(local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    # The pipeline yields [local devices, per device, ...]; this process's rows
    # of the global batch, assembled into one array sharded over all devices.
    return {k: jax.make_array_from_process_local_data(
        data_sharding, v.reshape((-1,) + v.shape[2:])) for k, v in local.items()}

  def next_batch(adversarial: bool) -> dict[str, jax.Array]:
    if not (fresh and adversarial):
      return global_batch(next(train_iter))
    drawn = [next(train_iter) for _ in range(config.critic_steps)]
    batch = global_batch(next(train_iter))
    for k in ("blur", "sharp"):
      local = np.stack([d[k].reshape((-1,) + d[k].shape[2:]) for d in drawn])
      batch[f"critic_{k}"] = jax.make_array_from_process_local_data(critic_data_sharding, local)
    return batch

  return next_batch


@dataclasses.dataclass
class _Run:
  """The parts of one training run that the loop uses (built by `train_and_evaluate`)."""

  config: ml_collections.ConfigDict
  workdir: epath.Path
  writer: metric_writers.MetricWriter
  manager: ocp.CheckpointManager
  train_iter: pipeline.TrainIterator
  eval_source: Any
  generator: Any
  schedules: tuple[optax.Schedule, optax.Schedule]  # the generator's and the critic's
  total_steps: int
  is_chief: bool


def _train_loop(run: _Run, state: steps.GANState, initial_step: int, step_fn: Callable, *,
                progress: bool) -> dict[str, float]:
  """Steps from `initial_step` to `run.total_steps`, logging, evaluating and
  checkpointing as the config says; returns the last evaluation's metrics.

  Raises:
    Preempted, NonFiniteError: see `train_and_evaluate`.
  """
  config = run.config
  report_progress, hooks = _hooks(run, initial_step)
  history: list[dict[str, Any]] = []
  history_start = initial_step + 1
  eval_metrics: dict[str, float] = {}
  budget = stopping.TimeBudget(config.get("train_seconds", 0.0), every=config.log_every_steps)
  logging.info("Training from step %d to %d%s.", initial_step, run.total_steps,
               f", or for {budget.seconds:g} s (config.train_seconds)" if budget.seconds else "")
  bar = None
  if progress and run.is_chief:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=run.total_steps, initial=initial_step, desc="training", unit="step",
               dynamic_ncols=True)
  with stopping.Preemption(run.manager) as preemption, metric_writers.ensure_flushes(run.writer):
    step = initial_step
    while step < run.total_steps:
      step += 1
      state, m = step_fn(state, step)
      history.append(m)
      for hook in hooks:
        hook(step)
      if bar is not None:
        bar.update(1)

      out_of_time = budget.spent(step)
      last = step == run.total_steps or out_of_time
      if step % config.log_every_steps == 0 or last:
        scalars = _write_train_scalars(run, history, history_start, step)
        history, history_start = [], step + 1
        if bar is not None:
          bar.set_postfix(loss=f"{scalars['generator_loss']:.4g}", refresh=False)

      best_metrics = None  # the metrics this step's checkpoint is ranked by (keep_best)
      if step % config.eval_every_steps == 0 or last:
        with report_progress.timed("eval"):
          eval_metrics, best_metrics = _periodic_eval(config, run.generator, state,
                                                      run.eval_source, run.writer, step)
        if bar is not None:
          bar.set_postfix(heldout_gain_dB=f"{best_metrics['psnr_gain']:+.2f}", refresh=False)

      # Every process asks at every step (the agreement needs each step's call).
      stop = preemption.check(step)
      # With keep_best every evaluated step is saved too: it may be the best.
      if (step % config.checkpoint_every_steps == 0 or last or stop or
          (config.keep_best and best_metrics is not None)):
        stopping.check_finite(history, history_start)  # never checkpoint a diverged state
        with report_progress.timed("checkpoint"):
          # `best_metrics` rank the checkpoint when config.keep_best.
          checkpoints.save(run.manager, step, state, run.train_iter,
                           metrics=best_metrics if config.keep_best else None)
        if preemption.requested:
          logging.warning("Checkpoint saved at step %d; exiting on SIGTERM.", step)
          break
      if out_of_time:
        _log_time_stop(run, budget, initial_step, step)
        break
  if bar is not None:
    bar.close()
  run.manager.wait_until_finished()
  run.manager.close()
  if preemption.requested:
    raise stopping.Preempted(step, run.workdir)
  return eval_metrics


def _log_time_stop(run: _Run, budget: stopping.TimeBudget, initial_step: int, step: int) -> None:
  """The warning of a stop by config.train_seconds: where the run and its
  learning-rate schedule stood, and how to make the schedule fit the budget."""
  lr = float(run.schedules[0](step - 1))
  hint = ""
  if run.config.lr_schedule != "constant":
    hint = (f"; this run made {step - initial_step} steps in its budget: set "
            "config.num_train_steps to the steps a budget allows for the schedule to end "
            "with it")
  logging.warning("config.train_seconds=%g reached after %.0f s: stopped at step %d of %d "
                  "(checkpoint saved), with the generator's learning rate at %.3g of %.3g "
                  "(config.lr_schedule=%r)%s. The same command resumes and trains for "
                  "another train_seconds.", budget.seconds, budget.elapsed(), step,
                  run.total_steps, lr, run.config.learning_rate, run.config.lr_schedule, hint)


def _hooks(run: _Run, initial_step: int) -> tuple[periodic_actions.ReportProgress, list]:
  """(clu's ReportProgress, the per-step hooks of this process).

  ReportProgress also times the evaluations and checkpoints (every process);
  on the chief it is a hook that logs steps/s and the ETA and writes
  `steps_per_sec` and `uptime`. With config.profile_steps, one trace of that
  many steps after the first 10 (compilation and warm-up done), written under
  the workdir for TensorBoard's profile tab.
  """
  report_progress = periodic_actions.ReportProgress(num_train_steps=run.total_steps,
                                                    writer=run.writer)
  hooks = [report_progress] if run.is_chief else []
  if run.is_chief and run.config.profile_steps > 0:
    hooks.append(periodic_actions.Profile(
        logdir=os.fspath(run.workdir), num_profile_steps=run.config.profile_steps,
        profile_duration_ms=None, first_profile=initial_step + 10, every_steps=None,
        every_secs=None))
  return report_progress, hooks


def _write_train_scalars(run: _Run, history: list[dict[str, Any]], first_step: int,
                         step: int) -> dict[str, float]:
  """Writes `train/<name>`: the mean of each metric over the steps since the
  last log (checked finite first) and both learning rates at `step`."""
  config = run.config
  host = stopping.check_finite(history, first_step)
  scalars = {k: float(np.mean([h[k] for h in host if k in h])) for k in host[-1]}
  g_schedule, c_schedule = run.schedules
  scalars["learning_rate"] = float(g_schedule(step - 1))
  scalars["critic_learning_rate"] = float(
      c_schedule(max(0, step - 1 - config.adversarial_warmup_steps) * config.critic_steps))
  run.writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
  return scalars


def _periodic_eval(config: ml_collections.ConfigDict, generator, state: steps.GANState,
                   eval_source, writer, step: int) -> tuple[dict[str, float], dict[str, float]]:
  """The periodic evaluation: the generator's weights (`eval/...`) and, with an
  EMA, the EMA weights too (`eval_ema/...`), written as scalars and image grids.

  Returns:
    (the raw weights' metrics, plus the EMA's as `ema_<name>`;
     the metrics of the weights the inference tools pick by default
     (config.inference.weights, else the EMA when there is one), which
     `keep_best` ranks checkpoints by).

  Both are measured under the config's recorded inference settings
  (`inference.Options.from_config`), as `evaluate --workdir` measures a
  checkpoint by default.
  """
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  # The model's recorded inference settings: the ones `evaluate --workdir` (and
  # `deblur`) use by default on this checkpoint.
  options = inference.Options.from_config(config)
  weights = {"eval": state.generator.params}
  if state.ema_params is not None:
    weights["eval_ema"] = state.ema_params
  results = {}
  for tag, params in weights.items():
    metrics, grids = evaluation.evaluate_source(generator, jax.device_get(params), eval_source,
                              num_images=config.num_eval_images,
                              crop_border=config.eval_crop_border,
                              num_summaries=config.num_image_summaries, options=options)
    writer.write_scalars(step, {f"{tag}/{k}": v for k, v in metrics.items()})
    if grids:
      writer.write_images(step, {f"{tag}/blurry|deblurred|sharp_{i}": g[None]
                                 for i, g in enumerate(grids)})
    logging.info("step %d %s: %s", step, tag, metrics)
    results[tag] = metrics
  combined = dict(results["eval"])
  combined.update({f"ema_{k}": v for k, v in results.get("eval_ema", {}).items()})
  # The weights the tools restore by default (config.inference.weights, else the EMA).
  tag = "eval" if options.weights == "raw" else ("eval_ema" if "eval_ema" in results else "eval")
  ranked = {k: float(results[tag][k]) for k in ("psnr", "ssim", "psnr_gain")}
  ranked["ema"] = float(tag == "eval_ema")
  return combined, ranked


def _resume(manager: ocp.CheckpointManager, state: steps.GANState,
            train_iter: pipeline.TrainIterator, *, ema: bool) -> steps.GANState:
  """`checkpoints.resume`, with the EMA as the config says (`ema`): a checkpoint
  without one (EMA off, or written before EMA existed) starts it from the
  restored generator weights; one with an EMA resumed with ema_decay = 0
  drops it. Both are logged."""
  latest = manager.latest_step()
  where = checkpoints.step_dir(manager, latest)
  state = checkpoints.resume(manager, state, train_iter)
  if ema and state.ema_params is None:
    logging.warning("config.ema_decay > 0 but checkpoint %s holds no EMA weights: the EMA "
                    "starts from the generator's weights at step %d.", where, latest)
    state = state.replace(ema_params=_host_copy(state.generator.params))
  elif state.ema_params is not None and not ema:
    logging.warning("config.ema_decay = 0: the EMA weights of checkpoint %s are dropped; later "
                    "checkpoints hold none.", where)
    state = state.replace(ema_params=None)
  return state


def _host_copy(tree: Any) -> Any:
  """A host (numpy) copy of `tree`: its own buffers once placed on the devices,
  so donating the state never donates one buffer twice."""
  return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


def _replicate(tree: Any, sharding: NamedSharding) -> Any:
  """Places host copies of `tree`'s arrays on every device of `sharding`.

  From host values, so it also holds for arrays that live on one local device
  (a restored checkpoint): with several processes, `jax.device_put` of those
  would be a cross-host transfer, which the CPU backend refuses.
  """
  def put(x):
    if isinstance(x, jax.Array) and x.committed:
      x = np.asarray(jax.device_get(x))
    # Uncommitted arrays and Python scalars keep their (weak) types, so the
    # first step's outputs match its inputs and the step compiles once.
    return jax.device_put(x, sharding)

  return jax.tree.map(put, tree)
