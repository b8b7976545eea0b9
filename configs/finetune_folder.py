"""Fine-tune the default shipped model on your own blurry/sharp pairs.

  python -m flax_gradnet.main --config=configs/finetune_folder.py:/data/my_pairs \
      --workdir=workdirs/mine

The folder holds `train/` and `test/`, each with `input/` (blurry) and
`target/` (sharp) images of the same file names (sub-folders allowed; the
`paired_folder` builder, docs/data.md). Training starts from the weights of
the default shipped model (`config.init_from`; its architecture and loss:
the per-image log-MSE read through the input's low frequencies, no gradient
loss, no adversarial term), trains on random 128x128 crops
of your pairs, flipped at random (each side of every image must be at least
128), evaluates on all of `test/` every 250 steps, and keeps the shipped
model's data scaling. Every
field can still be overridden on the command line (e.g.
`--config.num_train_steps=5000`).
"""

import ml_collections

from configs import gradnet_s_lf as base


def get_config(path: str = ""):
  if not path:
    raise ValueError("configs/finetune_folder.py needs the pairs' folder after a colon, e.g. "
                     "--config=configs/finetune_folder.py:/data/my_pairs")
  config = base.get_config()
  config.dataset = "paired_folder"
  config.dataset_options = ml_collections.ConfigDict({"path": path})  # train/ and test/ inside
  config.init_from = "gradnet_s_lf"  # the default shipped model's weights (and its loss)
  config.learning_rate = 2e-4  # a fine-tune: lower than the from-scratch 1e-3
  config.num_train_steps = 2000  # a few thousand steps of batch 8: tens of minutes on a CPU
  config.eval_every_steps = 250
  return config
