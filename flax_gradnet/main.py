"""Trains and evaluates the GradientNet GAN.

  python -m flax_gradnet.main --config=configs/quickstart.py --workdir=workdirs/quick \
      [--config.num_train_steps=10 ...]

Several processes (hosts), each started with the same flags and its own id:

  python -m flax_gradnet.main --config=... --workdir=SHARED_DIR \
      --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   # and =1
"""

import os
import sys

# TensorFlow (imported by clu's writers, which only write summaries) logs C++
# INFO lines to the terminal otherwise; its oneDNN kernels are never used here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags

from flax_gradnet import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and config.json.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process: host:port of process 0 (jax.distributed.initialize).")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's id, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv):
  """absl's parsing, with one error line (exit 2) for a config that does not
  load or an override naming a field that does not exist."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.to_dict()  # config_flags defers load errors to the first use
    return rest
  except flags.Error as e:
    _fail(f"{e} (python -m flax_gradnet.main --help lists the flags)")
  except (AttributeError, KeyError) as e:  # --config.<field> that the config lacks
    message = e
    while isinstance(message, BaseException) and message.args:
      message = message.args[0]
    _fail(f"unknown config field in the command line: {message}")
  except (OSError, ImportError, SyntaxError, TypeError, ValueError) as e:
    _fail(f"--config could not be loaded: {e}")
  return None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # library INFO waits for the workdir's log file
  if FLAGS.coordinator_address or FLAGS.num_processes is not None:
    train.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id)
  try:  # nothing is written to the workdir unless these pass
    train.preflight(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    _fail(str(e))
  program = f"train_process{FLAGS.process_id}" if FLAGS.process_id else "train"
  train.log_to_workdir(FLAGS.workdir, program)
  logging.set_verbosity(logging.INFO)
  if not FLAGS.process_id:
    print(f"Training in {FLAGS.workdir}; library logs: {FLAGS.workdir}/{program}.INFO; "
          f"TensorBoard: tensorboard --logdir {FLAGS.workdir}", flush=True)
  logging.info("Config:\n%s", FLAGS.config)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, progress=True)
  except train.Preempted as e:
    print(f"\n{e}", file=sys.stderr, flush=True)
    sys.exit(train.PREEMPTED_EXIT_STATUS)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
