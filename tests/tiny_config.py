"""The paper config shrunk to seconds on a CPU, as a config file.

Used by `conftest.tiny_train_config` (in-process tests) and, through
`--config=tests/tiny_config.py`, by the multi-process tests, which start
`python -m flax_gradnet.main` in subprocesses. `--config=tests/tiny_config.py:online`
trains on `synthetic_online` pairs made on the fly (no TFDS, nothing to prepare).
"""

import ml_collections

from configs import default

# Tiny synthetic data: one 48x48 pair per photograph and split.
TINY_SYNTHETIC = dict(train_pairs_per_image=1, test_pairs_per_image=1, size=48)
# Tiny on-the-fly pairs: 48x48 records made as they are read.
TINY_ONLINE = dict(size=48)


def get_config(data: str = "synthetic"):
  """The tiny config; `data`: "synthetic" (TFDS-prepared) or "online" (synthetic_online)."""
  if data not in ("synthetic", "online"):
    raise ValueError(f"tests/tiny_config.py:DATA takes 'synthetic' or 'online', got {data!r}")
  config = default.get_config()
  config.dataset = "synthetic" if data == "synthetic" else "synthetic_online"
  config.dataset_options = ml_collections.ConfigDict(
      dict(TINY_SYNTHETIC if data == "synthetic" else TINY_ONLINE))
  config.crop_size = 32
  m = config.model
  m.base_features, m.gradientnet_features, m.num_mbrbs, m.ca_reduction = 4, 4, 1, 4
  # Two RGCL paths of two recurrences (the paper: 3 and 3): the concatenation of
  # paths and the recurrence's shared weights are still run, and every training
  # test compiles a quarter less (the generator is most of a train step's graph).
  m.num_paths, m.num_recurrences = 2, 2
  config.critic_features, config.critic_layers = 4, 2
  config.content_loss = "pixel"
  config.batch_size = 2
  return config
