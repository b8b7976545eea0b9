"""Data: synthetic blur, TFDS builders and the grain input pipeline.

Nothing here imports model code. The pipeline's names are imported when first
read (PEP 562), so the generators (`synthetic`, `procedural`, `online`,
`unseen`) import without grain or TFDS: on a machine that has neither (a lent
accelerator, `experiments/gpu_train.py`), `from flax_gradnet.data import online`
works.
"""

import importlib

__all__ = ["DATASETS", "TrainIterator", "create_train_iterator", "eval_iterator", "get_source",
           "make_builder"]


def __getattr__(name: str):
  if name in __all__:
    return getattr(importlib.import_module("flax_gradnet.data.pipeline"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
