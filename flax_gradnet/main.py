"""Trains and evaluates the GradientNet GAN.

  python -m flax_gradnet.main --config=configs/quickstart.py --workdir=workdirs/quick \
      [--config.num_train_steps=10 ...]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from flax_gradnet import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and config.json.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logging.info("Config:\n%s", FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
