"""Fine-tune the default shipped model on your own blurry/sharp pairs.

  python -m flax_gradnet.main --config=configs/finetune_folder.py:/data/my_pairs \
      --workdir=workdirs/mine

The folder holds `train/` and `test/`, each with `input/` (blurry) and
`target/` (sharp) images of the same file names (sub-folders allowed; the
`paired_folder` builder, docs/data.md). Training starts from the weights of
the default shipped model (`config.init_from`; its architecture and loss, no
adversarial term), evaluates on `test/` every 250 steps, and keeps the
shipped model's data scaling. Every field can still be overridden on the
command line (e.g. `--config.num_train_steps=5000`).
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "flax_gradnet_configs_gradnet_s_synth", pathlib.Path(__file__).with_name("gradnet_s_synth.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)

import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(path: str = ""):
  if not path:
    raise ValueError("configs/finetune_folder.py needs the pairs' folder after a colon, e.g. "
                     "--config=configs/finetune_folder.py:/data/my_pairs")
  config = base.get_config()
  config.dataset = "paired_folder"
  config.dataset_options = ml_collections.ConfigDict({"path": path})  # train/ and test/ inside
  config.crop_size = 128  # random crops of your images (each side must be >= 128)
  config.flips = True
  config.init_from = "gradnet_s_native"  # the default shipped model's weights
  config.learning_rate = 2e-4  # a fine-tune: lower than the from-scratch 1e-3
  config.num_train_steps = 2000  # a few thousand steps of batch 8: tens of minutes on a CPU
  config.eval_every_steps = 250
  config.num_eval_images = 0  # all of test/
  return config
