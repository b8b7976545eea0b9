"""Input pipeline: TFDS array_record sources -> grain -> per-device batches.

    source = get_source("gopro", "train", data_dir=..., manual_dir=...)
    it = create_train_iterator(source, crop_size=256, per_device_batch_size=4,
                               num_local_devices=jax.local_device_count(),
                               seed=0)
    batch = next(it)          # {'blur','sharp': f32 [D, B, 256, 256, 3] in [-1, 1]}
    state = it.get_state()    # JSON-serialisable dict -> orbax JsonSave
    it.set_state(state)       # resume: the same following batches

Grayscale models (`config.model.channels=1`): the sources stay RGB (stored
datasets and on-the-fly pairs alike) and both iterators take `channels=1`,
which converts blur and sharp identically, after the augmentations, with
`image_io.to_channels` (ITU-R 601 luma exactly as PIL's `convert("L")`).

TFDS is imported only for the data sets it prepares (GOPRO, HIDE, RealBlur,
folders, `synthetic`): training on `synthetic_online` needs neither TFDS nor
TensorFlow, only grain.

grain reads the array_record files by random access (no TensorFlow), shuffles
with a per-epoch reshuffle from the seed, draws each example's augmentation
from (seed, record index) so the data do not depend on worker count or timing,
and its iterator state is a small index, which makes resuming exact.
No model code is imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain.experimental as grain_experimental
import grain.python as grain
import numpy as np
from PIL import Image

from flax_gradnet import image_io
from flax_gradnet.data import online

# How long the other processes wait for process 0 to prepare a TFDS data set.
_PREPARE_TIMEOUT_S = 6 * 3600

DATASETS = ("gopro", "gopro/blur_gamma", "hide", "realblur_j", "realblur_r",
            "paired_folder", "kohler", "blur_only", "synthetic", "synthetic_online",
            "synthetic_unseen", "synthetic_strong")
# The benchmarks read from the TFDS manual dir: name -> (builder class in
# data/builders.py, config).
MANUAL_DATASETS = {
    "gopro": ("Gopro", "blur"),
    "gopro/blur": ("Gopro", "blur"),
    "gopro/blur_gamma": ("Gopro", "blur_gamma"),
    "hide": ("Hide", None),
    "realblur_j": ("RealBlur", "j"),
    "realblur_r": ("RealBlur", "r"),
}


def make_builder(dataset: str, *, data_dir: str, **kwargs) -> Any:
  """The TFDS builder (file_format array_record) for a dataset name.

  Args:
    dataset: one of `DATASETS`.
    data_dir: where TFDS stores the prepared records.
    **kwargs: `path=` for "paired_folder", "kohler" (and `frame=`) and
      "blur_only"; `SyntheticConfig` fields for "synthetic" (e.g.
      `train_pairs_per_image=4, seed=1, image_dir=...`).
  """
  from flax_gradnet.data import builders  # pylint: disable=g-import-not-at-top  (TFDS)
  common = dict(data_dir=data_dir, file_format="array_record")
  if dataset in MANUAL_DATASETS:
    name, config = MANUAL_DATASETS[dataset]
    cls = getattr(builders, name)
    if kwargs:
      raise TypeError(f"{dataset} takes no options, got {sorted(kwargs)}")
    return cls(**({"config": config} if config else {}), **common)
  if dataset in ("paired_folder", "kohler", "blur_only"):
    if "path" not in kwargs:
      raise TypeError(f"{dataset} needs path=<folder>.")
    cls = {"paired_folder": builders.PairedFolder, "kohler": builders.Kohler,
           "blur_only": builders.BlurOnly}[dataset]
    return cls(**kwargs, **common)
  if dataset == "synthetic":
    return builders.Synthetic(**kwargs, **common)
  raise ValueError(f"Unknown dataset {dataset!r}; choose from {DATASETS}.")


def get_source(dataset: str, split: str, *, data_dir: str,
               manual_dir: str | None = None, **kwargs) -> Sequence[dict]:
  """Prepares a dataset if needed (never downloading) and opens one split.

  Args:
    dataset: one of `DATASETS`.
    split: a split name ("train", "test"), or a TFDS slice ("train[:10]").
    data_dir: where TFDS stores the prepared records.
    manual_dir: the TFDS manual dir (GOPRO: holds GOPRO_Large/ or the zip;
      HIDE: HIDE_dataset/ or the zip; RealBlur: the extracted RealBlur.tar.gz).
    **kwargs: builder options (see `make_builder`).

  Returns:
    A random-access source (`len`, `[i]`) of dicts of numpy arrays: `blur`
    (and `sharp`) uint8 [H, W, 3], `name` and `sequence` (bytes).
  """
  if dataset == "synthetic_online":
    # Made on the fly (data/online.py): nothing to prepare, nothing on disk.
    if split.startswith("train"):
      return online.OnlinePairs(**kwargs)
    if split.startswith("test"):
      heldout = {k: v for k, v in kwargs.items() if k in ("families", "noise")}
      return online.heldout_pairs(**heldout)
    raise ValueError(f"synthetic_online has splits 'train' and 'test', got {split!r}.")
  if dataset == "synthetic_unseen":
    # Evaluation only (data/unseen.py): blur kinds no training record is made with.
    if split.startswith("test"):
      from flax_gradnet.data import unseen  # pylint: disable=g-import-not-at-top
      return unseen.unseen_pairs(**{k: v for k, v in kwargs.items() if k == "noise"})
    raise ValueError(f"synthetic_unseen is a held-out set: its only split is 'test', got {split!r}.")
  if dataset == "synthetic_strong":
    # Evaluation only (data/strong.py): the paper's strong blur on held-out photographs.
    if split.startswith("test"):
      from flax_gradnet.data import strong  # pylint: disable=g-import-not-at-top
      return strong.strong_pairs(**{k: v for k, v in kwargs.items() if k == "noise"})
    raise ValueError(f"synthetic_strong is a held-out set: its only split is 'test', got {split!r}.")
  if dataset not in DATASETS and dataset not in MANUAL_DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}.")
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Several processes: process 0 prepares the records, the others wait for it
  # and then open what it wrote (all must see the same data_dir).
  if jax.process_index() == 0:
    builder = make_builder(dataset, data_dir=data_dir, **kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir,
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  if jax.process_count() > 1:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    # A coordination-service barrier (not a device collective): preparing
    # GOPRO takes long; a barrier name is used once per run and split.
    ocp.multihost.sync_global_processes(f"flax_gradnet prepared {dataset}/{split} in {data_dir}",
                                        timeout=_PREPARE_TIMEOUT_S)
    if jax.process_index() != 0:
      builder = make_builder(dataset, data_dir=data_dir, **kwargs)
      if not builder.is_prepared():
        raise FileNotFoundError(
            f"{dataset}: process 0 prepared it in {data_dir!r}, which process "
            f"{jax.process_index()} cannot read; give every process the same shared data_dir.")
  return builder.as_data_source(split=split)


# ----------------------------------------------------------------------------
# Training.


def _pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
  ph, pw = max(0, h - image.shape[0]), max(0, w - image.shape[1])
  if ph or pw:
    image = np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                           (0, 0)), mode="reflect")
  return image


class _CropAndAugment(grain.RandomMapTransform):
  """Identical random crop / rescale / flips / rot90 / colour for blur+sharp,
  then both as `channels` channels (`image_io.to_channels`)."""

  def __init__(self, crop_size: int, flips: bool, rot90: bool,
               color_jitter: float, scale_jitter: float, channels: int = 3):
    self.crop_size = crop_size
    self.flips = flips
    self.rot90 = rot90
    self.color_jitter = color_jitter
    self.scale_jitter = scale_jitter
    self.channels = channels

  def random_map(self, element: Mapping[str, Any],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    if "sharp" not in element:
      raise ValueError("Training needs blur/sharp pairs; this source has no "
                       "'sharp' images (a blur-only dataset?).")
    blur, sharp = element["blur"], element["sharp"]
    if blur.shape != sharp.shape:
      raise ValueError(f"blur {blur.shape} and sharp {sharp.shape} differ "
                       f"for {element.get('name')!r}.")
    size = self.crop_size
    scale = 1.0
    if self.scale_jitter > 0:
      scale = rng.uniform(1.0 - self.scale_jitter, 1.0 + self.scale_jitter)
    # Cut a region that becomes `size` after rescaling by `scale`.
    region = max(1, int(round(size / scale)))
    # Images smaller than the region are reflect-padded (centred) rather than
    # rejected, so small real photos and tiny test images still train.
    blur = _pad_to(blur, region, region)
    sharp = _pad_to(sharp, region, region)
    h, w = blur.shape[:2]
    top = int(rng.integers(0, h - region + 1))
    left = int(rng.integers(0, w - region + 1))
    out = [x[top:top + region, left:left + region] for x in (blur, sharp)]
    if region != size:
      out = [np.asarray(Image.fromarray(x).resize((size, size),
                                                  Image.BILINEAR))
             for x in out]
    if self.flips:
      if rng.uniform() < 0.5:
        out = [x[:, ::-1] for x in out]
      if rng.uniform() < 0.5:
        out = [x[::-1] for x in out]
    if self.rot90:
      k = int(rng.integers(4))
      out = [np.rot90(x, k) for x in out]
    if self.color_jitter > 0:
      c = self.color_jitter
      gain = (1.0 + rng.uniform(-c, c)) * (1.0 + rng.uniform(-c, c, size=3))
      out = [np.clip(x.astype(np.float32) * gain.astype(np.float32), 0, 255)
             .round().astype(np.uint8) for x in out]
    out = [image_io.to_channels(x, self.channels) for x in out]
    return {"blur": np.ascontiguousarray(out[0]),
            "sharp": np.ascontiguousarray(out[1])}


class _ToDeviceBatches(grain.MapTransform):
  """[N, H, W, C] uint8 -> [devices, N / devices, H, W, C] float32 in [-1, 1]."""

  def __init__(self, num_local_devices: int):
    self.num_local_devices = num_local_devices

  def map(self, batch):
    out = {}
    for k, v in batch.items():
      v = v.reshape((self.num_local_devices, -1) + v.shape[1:])
      out[k] = v.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)
    return out


class TrainIterator(Iterator[dict[str, np.ndarray]]):
  """Infinite batch iterator with a JSON-serialisable state.

  `get_state()` is the state after the last batch returned by `next`, so
  `set_state(get_state())` on a fresh iterator continues exactly where this
  one is. grain's `ThreadPrefetchDatasetIterator` keeps `_PREFETCH` batches
  ready in a background thread and pairs each with the loader's state after
  it; the state saved is the DataLoader's own (its JSON), as before.
  """

  _PREFETCH = 2

  def __init__(self, loader: grain.DataLoader):
    self._it = grain_experimental.ThreadPrefetchDatasetIterator(
        iter(loader), prefetch_buffer_size=self._PREFETCH)

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def get_state(self) -> dict:
    """The position after the last returned batch (a JSON-able dict)."""
    return json.loads(self._it.get_state().decode())

  def set_state(self, state: dict | str | bytes) -> None:
    """Continues from a `get_state()` (dict, or its JSON text)."""
    if isinstance(state, (str, bytes)):
      state = json.loads(state)
    self._it.set_state(json.dumps(state).encode())

  def close(self) -> None:
    self._it.close()


class GlobalBatchSliceSampler:
  """One process's slice of a single-process sampler's global batches.

  grain's DataLoader asks process `p` of `P` for sampler indices
  `k * P + p` (k = 0, 1, ...). This sampler maps the k-th example of process p
  to position `(k // b) * b * P + p * b + k % b` of the wrapped sampler's
  sequence (b = examples per process per step): global step s reads positions
  [s * b * P, (s + 1) * b * P), process p the p-th block of them. The record
  and its augmentation RNG are the wrapped sampler's at that position, so a
  run on P processes sees the batches of a one-process run, in the same
  device order.
  """

  def __init__(self, sampler: grain.IndexSampler, *, process_batch: int, shard_index: int,
               shard_count: int):
    self._sampler = sampler
    self._b = int(process_batch)
    self._p = int(shard_index)
    self._n = int(shard_count)

  def __len__(self) -> int:
    return len(self._sampler)

  def __repr__(self) -> str:
    # grain compares this with the checkpoint's: it names the slice, so a
    # process can only resume its own iterator state.
    return (f"GlobalBatchSliceSampler({self._sampler!r}, process_batch={self._b}, "
            f"shard_index={self._p}, shard_count={self._n})")

  def global_position(self, index: int) -> int:
    if index % self._n != self._p:
      raise ValueError(f"index {index} is not process {self._p}'s (of {self._n}).")
    k = index // self._n
    return (k // self._b) * self._b * self._n + self._p * self._b + k % self._b

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    meta = self._sampler[self.global_position(index)]
    return grain.RecordMetadata(index=index, record_key=meta.record_key, rng=meta.rng)


class IteratorCheckpoint:
  """A `TrainIterator` as grain's orbax handler expects it.

  `grain.checkpoint.CheckpointSave(IteratorCheckpoint(it))` in an orbax
  Composite writes one `process_<i>-of-<n>.json` per process, and
  `CheckpointRestore` gives each process back its own state (orbax's JSON
  handler writes on the primary process only).
  """

  def __init__(self, iterator: TrainIterator):
    self.iterator = iterator

  def get_state(self) -> bytes:
    return json.dumps(self.iterator.get_state(), indent=2).encode()

  def set_state(self, state: bytes) -> None:
    self.iterator.set_state(state)

  def start_prefetch(self) -> None:
    """Prefetching starts with the next batch asked for."""


def create_train_iterator(
    source: Sequence[Mapping[str, Any]],
    *,
    crop_size: int,
    per_device_batch_size: int,
    num_local_devices: int,
    seed: int,
    flips: bool = True,
    rot90: bool = False,
    color_jitter: float = 0.0,
    scale_jitter: float = 0.0,
    worker_count: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    channels: int = 3,
) -> TrainIterator:
  """Infinite, shuffled, augmented training batches for this host.

  Args:
    source: random-access source of {'blur', 'sharp'} uint8 images.
    crop_size: side of the square crops (same window for blur and sharp).
    per_device_batch_size: examples per device per step.
    num_local_devices: leading batch axis (`jax.local_device_count()`).
    seed: shuffling and augmentation seed; same seed, same batches.
    flips: random horizontal and vertical flips.
    rot90: random rotations by multiples of 90 degrees.
    color_jitter: c > 0 scales brightness by U(1-c, 1+c) and each channel
      by U(1-c, 1+c), identically for blur and sharp.
    scale_jitter: s > 0 rescales by U(1-s, 1+s) (bilinear) before cropping.
    worker_count: grain worker processes (0: in this process, with
      threaded reading and a prefetch thread).
    shard_index: this host's shard (default `jax.process_index()`).
    shard_count: number of shards (default `jax.process_count()`).
    channels: 3 (the sources' RGB) or 1: grayscale, converted after the
      augmentations (the model's `channels`).

  Returns:
    A `TrainIterator` of {'blur', 'sharp'}: float32 [num_local_devices,
    per_device_batch_size, crop_size, crop_size, channels] in [-1, 1].
  """
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count}).")
  n = len(source)
  if n // shard_count < 1:
    raise ValueError(f"{n} examples cannot feed {shard_count} shards.")
  shard_options = grain.ShardOptions(shard_index=shard_index,
                                     shard_count=shard_count,
                                     drop_remainder=True)
  process_batch = num_local_devices * per_device_batch_size
  # One process: grain's shuffled index sequence. Several: the same sequence,
  # each process reading its slice of every global batch, so the global batch
  # (and each example's augmentation) does not depend on the process count.
  sampler = grain.IndexSampler(num_records=n, shard_options=grain.ShardOptions(0, 1, True),
                               shuffle=True, num_epochs=None, seed=seed)
  if shard_count > 1:
    sampler = GlobalBatchSliceSampler(sampler, process_batch=process_batch,
                                      shard_index=shard_index, shard_count=shard_count)
  loader = grain.DataLoader(
      data_source=source,
      sampler=sampler,
      operations=[
          _CropAndAugment(crop_size, flips, rot90, color_jitter, scale_jitter, channels),
          grain.Batch(process_batch, drop_remainder=True),
          _ToDeviceBatches(num_local_devices),
      ],
      worker_count=worker_count,
      shard_options=shard_options,
      # Decoding full-size PNGs dominates: a few threads, a small buffer (the
      # default 500 decoded 720p pairs would take ~2.7 GB).
      read_options=grain.ReadOptions(
          num_threads=max(1, min(8, os.cpu_count() or 1)),
          prefetch_buffer_size=2 * process_batch),
  )
  return TrainIterator(loader)


# ----------------------------------------------------------------------------
# Evaluation.


def _text(x) -> str:
  if isinstance(x, np.ndarray):
    x = x.item()
  return x.decode() if isinstance(x, bytes) else str(x)


def eval_iterator(
    source: Sequence[Mapping[str, Any]],
    *,
    stop: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    channels: int = 3,
) -> Iterator[dict[str, Any]]:
  """Whole images in the source's fixed order (no crops, no shuffling).

  Args:
    source: random-access source from `get_source`.
    stop: only the first `stop` examples (default: all).
    shard_index, shard_count: yield only examples shard_index::shard_count
      (default: all), for evaluation spread over hosts.
    channels: 3 (the sources' RGB) or 1 (grayscale, `image_io.to_channels`).

  Yields:
    {'blur': uint8 [H, W, channels], 'sharp': uint8 [H, W, channels] (absent
     for blur-only sources), 'name': str}.
  """
  stop = len(source) if stop is None else min(stop, len(source))
  for i in range(shard_index, stop, shard_count):
    ex = source[i]
    out = {"blur": image_io.to_channels(np.asarray(ex["blur"], np.uint8), channels),
           "name": _text(ex["name"])}
    if "family" in ex:
      out["family"] = _text(ex["family"])
    if "sharp" in ex:
      out["sharp"] = image_io.to_channels(np.asarray(ex["sharp"], np.uint8), channels)
    yield out
