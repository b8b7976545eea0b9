r"""Input-pipeline throughput: 256x256 crops from 1280x720 PNG pairs.

Writes `--num_pairs` random-texture 1280x720 PNG pairs (GOPRO's frame size) to
a temporary paired folder, builds it with the `paired_folder` TFDS builder
(array_record), and times `create_train_iterator` (batch 4, flips) after a
warm-up. Not a test.

  .venv/bin/python experiments/bench_pipeline.py --num_pairs=32 --batches=100
"""

import os
import tempfile
import time

import numpy as np
from absl import app
from absl import flags
from PIL import Image

from flax_gradnet.data import pipeline

_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 32, "PNG pairs to write.")
_BATCHES = flags.DEFINE_integer("batches", 100, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batches first.")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Pairs per batch.")
_CROP = flags.DEFINE_integer("crop_size", 256, "Crop side.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes.")


def _write_pairs(root: str, n: int) -> None:
  rng = np.random.default_rng(0)
  for d in ("input", "target"):
    os.makedirs(os.path.join(root, "train", d))
  for i in range(n):
    # Smooth noise compresses like a photo more than white noise does.
    small = rng.integers(0, 256, (90, 160, 3), np.uint8)
    sharp = Image.fromarray(small).resize((1280, 720), Image.BICUBIC)
    blur = sharp.resize((640, 360), Image.BILINEAR).resize((1280, 720))
    sharp.save(os.path.join(root, "train", "target", f"{i:04d}.png"))
    blur.save(os.path.join(root, "train", "input", f"{i:04d}.png"))


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, "pairs")
    t0 = time.perf_counter()
    _write_pairs(folder, _NUM_PAIRS.value)
    t1 = time.perf_counter()
    source = pipeline.get_source("paired_folder", "train",
                                 data_dir=os.path.join(tmp, "tfds"),
                                 path=folder)
    t2 = time.perf_counter()
    it = pipeline.create_train_iterator(
        source, crop_size=_CROP.value, per_device_batch_size=_BATCH.value,
        num_local_devices=1, seed=0, worker_count=_WORKERS.value,
        shard_index=0, shard_count=1)
    for _ in range(_WARMUP.value):
      next(it)
    t3 = time.perf_counter()
    for _ in range(_BATCHES.value):
      batch = next(it)
    t4 = time.perf_counter()
    it.close()
    assert batch["blur"].shape == (1, _BATCH.value, _CROP.value, _CROP.value,
                                   3)
    pairs = _BATCHES.value * _BATCH.value
    print(f"cpus={os.cpu_count()} pairs={_NUM_PAIRS.value} "
          f"write_png={t1 - t0:.1f}s build_tfds={t2 - t1:.1f}s")
    print(f"{pairs / (t4 - t3):.1f} pairs/s ({(t4 - t3) / _BATCHES.value * 1e3:.1f}"
          f" ms/batch of {_BATCH.value} {_CROP.value}x{_CROP.value} crops, "
          f"worker_count={_WORKERS.value})")


if __name__ == "__main__":
  app.run(main)
