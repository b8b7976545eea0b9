"""Trains and evaluates the GradientNet GAN.

  python -m flax_gradnet.main --config=configs/quickstart.py --workdir=workdirs/quick \\
      [--config.num_train_steps=10 ...]

Several processes (hosts), each started with the same flags and its own id:

  python -m flax_gradnet.main --config=... --workdir=SHARED_DIR \\
      --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   # and =1

absl flags, not argparse as in the other tools (`flax_gradnet.cli`): `--config`
is an ml_collections config file whose fields are overridden on the command
line (`--config.num_train_steps=10`), which ml_collections provides for absl
only. `--help` and the exit statuses follow `cli` all the same: a config that
does not load, an unknown `--config.` field, a bad flag or a workdir that
cannot be trained in print one `error:` line and exit 2 before anything is
written; a SIGTERM saves and exits 143 (`stopping.PREEMPTED_EXIT_STATUS`).
`--config=configs/<name>.py` names the installed config from any folder.

While it trains, the run holds `WORKDIR/.lock` (`workdir.WorkdirLock`: host,
pid, start time; process 0 holds it for all processes): a second run on the
same workdir exits 2 at once, naming the first, and writes nothing there. The
lock goes at exit (also after an error or SIGTERM); one left by a process that
died (SIGKILL) on the same host is taken over, with a line saying so.

`--workdir` may be a URI that etils.epath and orbax write (gs://BUCKET/run):
checkpoints, config.json and TensorBoard events go there, the lock is then
best-effort (`workdir.WorkdirLock`), and the library log file, which absl
writes locally only, goes to a local temporary folder named at the start.
Needs jax, flax, optax, orbax, grain, clu and numpy; without TensorFlow the
metrics go to the log file instead of TensorBoard event files (one line says
so), and `synthetic_online` data need no TFDS.
Console script: `flax-gradnet-train`.
"""

import functools
import os
import signal
import sys

# TensorFlow (imported by clu's writers, which only write summaries; optional:
# `flax_gradnet.writers`) logs C++ INFO lines to the terminal otherwise; its
# oneDNN kernels are never used here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags

from flax_gradnet import cli  # stdlib only: --help and flag errors stay instant

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and config.json.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process: host:port of process 0 (jax.distributed.initialize).")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's id, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])

_parse_flags = functools.partial(
    cli.parse_absl_flags, prog="python -m flax_gradnet.main", doc=__doc__,
    flag_names=("config", "workdir", "coordinator_address", "num_processes", "process_id"))


def main(argv):
  del argv  # `_parse_flags` refuses positional arguments
  # pylint: disable=g-import-not-at-top  (jax: after the flags)
  from flax_gradnet import stopping, train
  from flax_gradnet import workdir as workdir_lib
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # library INFO waits for the workdir's log file
  distributed = FLAGS.coordinator_address or FLAGS.num_processes is not None
  if distributed:
    train.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id)
  elif FLAGS.config.get("initialize_distributed", False):
    train.initialize_distributed()  # before any JAX work, preflight's included
    distributed = True
  if not distributed:  # with several processes JAX's preemption notifier owns SIGTERM
    signal.signal(signal.SIGTERM, functools.partial(_exit_on_sigterm, stopping.PREEMPTED_EXIT_STATUS))
  # One lock per run: process 0 holds it for all the processes sharing the workdir.
  # Taken before anything is written to the workdir.
  lock = workdir_lib.WorkdirLock(FLAGS.workdir) if _is_process_0(distributed) else None
  with cli.holding_lock(lock):
    _train(train)


def _is_process_0(distributed) -> bool:
  if not distributed:
    return True
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def _exit_on_sigterm(status, signum, frame):
  """SIGTERM outside the training loop (whose own handler saves a checkpoint
  first): exit with `status` through Python, so the workdir's lock is released."""
  del signum, frame
  from flax_gradnet import stopping  # pylint: disable=g-import-not-at-top
  stopping.note_early_sigterm()  # should start-up code swallow the exit below
  print("\nSIGTERM: stopped; the same command resumes from the latest checkpoint.",
        file=sys.stderr, flush=True)
  sys.exit(status)


def _train(train) -> None:
  """Checks, logs to the workdir and trains (the workdir's lock is held)."""
  from flax_gradnet import config_checks, stopping  # pylint: disable=g-import-not-at-top
  try:  # nothing is written to the workdir unless these pass
    config_checks.preflight(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    cli.exit_error(str(e))
  program = f"train_process{FLAGS.process_id}" if FLAGS.process_id else "train"
  log_dir = train.log_to_workdir(FLAGS.workdir, program)  # a local folder for a gs:// workdir
  logging.set_verbosity(logging.INFO)
  if not FLAGS.process_id:
    print(f"Training in {FLAGS.workdir}; library logs: {os.path.join(log_dir, program)}.INFO; "
          f"TensorBoard: tensorboard --logdir {FLAGS.workdir}", flush=True)
  logging.info("Config:\n%s", FLAGS.config)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, progress=True)
  except stopping.Preempted as e:
    print(f"\n{e}", file=sys.stderr, flush=True)
    sys.exit(stopping.PREEMPTED_EXIT_STATUS)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
