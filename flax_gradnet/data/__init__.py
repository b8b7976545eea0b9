"""Data: synthetic blur, TFDS builders and the grain input pipeline.

Nothing here imports model code. Importing the package registers its TFDS
builders (`gopro`, `hide`, `real_blur`, `paired_folder`, `kohler`,
`blur_only`, `synthetic`: data/builders.py) with TFDS when
tensorflow-datasets is installed, so `tfds.builder("gopro", ...)` finds them;
without it the package still imports, and so do the generators (`synthetic`,
`procedural`, `online`, `unseen`, `strong`) and the on-the-fly data that
training reads from them. The pipeline's names (grain) are imported when first
read (PEP 562).
"""

import importlib
import importlib.util

__all__ = ["DATASETS", "TrainIterator", "create_train_iterator", "eval_iterator", "get_source",
           "make_builder"]


def _tfds_installed() -> bool:
  import sys  # pylint: disable=g-import-not-at-top
  if "tensorflow_datasets" in sys.modules:
    return sys.modules["tensorflow_datasets"] is not None
  return importlib.util.find_spec("tensorflow_datasets") is not None


if _tfds_installed():
  from flax_gradnet.data import builders  # noqa: F401  (registers the builders with TFDS)


def __getattr__(name: str):
  if name in __all__:
    return getattr(importlib.import_module("flax_gradnet.data.pipeline"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
