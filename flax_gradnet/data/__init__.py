"""Data: synthetic blur, TFDS builders and the grain input pipeline.

Nothing here imports model code.
"""

from flax_gradnet.data.pipeline import DATASETS
from flax_gradnet.data.pipeline import create_train_iterator
from flax_gradnet.data.pipeline import eval_iterator
from flax_gradnet.data.pipeline import get_source
from flax_gradnet.data.pipeline import make_builder
from flax_gradnet.data.pipeline import TrainIterator

__all__ = ["DATASETS", "TrainIterator", "create_train_iterator", "eval_iterator", "get_source",
           "make_builder"]
