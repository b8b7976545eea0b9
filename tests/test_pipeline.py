"""Tests of the grain input pipeline (numpy references)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from flax_gradnet.data import pipeline


def _pattern(h, w, ident=0):
  """Every pixel encodes its (y, x) and the example id: crops are traceable."""
  y, x = np.mgrid[:h, :w]
  return np.stack([y, x, np.full_like(y, ident)], -1).astype(np.uint8)


def _to_uint8(x):
  return np.round((np.asarray(x) + 1.0) * 127.5).astype(np.uint8)


class _ListSource:
  def __init__(self, examples):
    self._examples = examples

  def __len__(self):
    return len(self._examples)

  def __getitem__(self, i):
    return self._examples[i]

  def __repr__(self):  # grain checks a restored state against repr(source).
    return f"_ListSource(n={len(self)})"


def _source(n=8, h=40, w=50, invert_sharp=True):
  exs = []
  for i in range(n):
    blur = _pattern(h, w, i)
    sharp = 255 - blur if invert_sharp else blur.copy()
    exs.append({"blur": blur, "sharp": sharp, "name": f"{i}.png".encode()})
  return _ListSource(exs)


def _iterator(source, **kw):
  args = dict(crop_size=16, per_device_batch_size=2, num_local_devices=1,
              seed=0, shard_index=0, shard_count=1)
  args.update(kw)
  return pipeline.create_train_iterator(source, **args)


def _take(it, k):
  return [next(it) for _ in range(k)]


def test_shapes_range_and_crops_are_windows():
  src = _source()
  it = _iterator(src, num_local_devices=2, per_device_batch_size=3,
                 flips=False)
  batch = next(it)
  for k in ("blur", "sharp"):
    assert batch[k].shape == (2, 3, 16, 16, 3)
    assert batch[k].dtype == np.float32
    assert -1.0 <= batch[k].min() and batch[k].max() <= 1.0
  blur = _to_uint8(batch["blur"]).reshape(6, 16, 16, 3)
  sharp = _to_uint8(batch["sharp"]).reshape(6, 16, 16, 3)
  np.testing.assert_allclose(batch["blur"].reshape(6, 16, 16, 3),
                             blur / 127.5 - 1.0, atol=1e-6)
  for b, s in zip(blur, sharp):
    y0, x0, ident = b[0, 0]
    ref = src[int(ident)]["blur"][y0:y0 + 16, x0:x0 + 16]
    np.testing.assert_array_equal(b, ref)
    np.testing.assert_array_equal(s, 255 - ref)  # Same window in sharp.
  it.close()


def test_flips_and_rot90_keep_blur_and_sharp_aligned():
  it = _iterator(_source(), rot90=True, per_device_batch_size=4)
  seen_orientations = set()
  for batch in _take(it, 6):
    blur = _to_uint8(batch["blur"][0])
    sharp = _to_uint8(batch["sharp"][0])
    np.testing.assert_array_equal(sharp, 255 - blur)
    for b in blur:
      # Which way do y (channel 0) and x (channel 1) grow along rows/cols?
      seen_orientations.add(tuple(np.sign(
          [int(b[1, 0, 0]) - int(b[0, 0, 0]), int(b[0, 1, 0]) - int(b[0, 0, 0]),
           int(b[1, 0, 1]) - int(b[0, 0, 1])])))
  assert len(seen_orientations) > 2  # Flips and rotations did happen.
  it.close()


def test_color_and_scale_jitter_identical_for_blur_and_sharp():
  it = _iterator(_source(invert_sharp=False), color_jitter=0.3,
                 scale_jitter=0.3, rot90=True)
  for batch in _take(it, 4):
    np.testing.assert_array_equal(batch["blur"], batch["sharp"])
  it.close()


def test_small_images_are_reflect_padded():
  src = _source(n=2, h=10, w=12)
  it = _iterator(src, flips=False)
  blur = _to_uint8(next(it)["blur"][0, 0])
  ident = int(blur[0, 0, 2])
  full = np.pad(src[ident]["blur"], ((3, 3), (2, 2), (0, 0)), mode="reflect")
  np.testing.assert_array_equal(blur, full)
  it.close()


def test_same_seed_same_batches_other_seed_differs():
  a = _take(_iterator(_source(), seed=3, rot90=True, color_jitter=0.1), 5)
  b = _take(_iterator(_source(), seed=3, rot90=True, color_jitter=0.1), 5)
  c = _take(_iterator(_source(), seed=4, rot90=True, color_jitter=0.1), 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["blur"], y["blur"])
    np.testing.assert_array_equal(x["sharp"], y["sharp"])
  assert any(not np.array_equal(x["blur"], z["blur"]) for x, z in zip(a, c))


def _ids(batches):
  return [int(i) for b in batches
          for i in _to_uint8(b["blur"])[..., 0, 0, 2].reshape(-1)]


def test_epochs_cover_everything_and_reshuffle():
  it = _iterator(_source(n=8), per_device_batch_size=4)
  ids = _ids(_take(it, 6))  # 3 epochs of 8.
  epochs = [ids[i:i + 8] for i in range(0, 24, 8)]
  for e in epochs:
    assert sorted(e) == list(range(8))
  assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
  it.close()


def test_processes_read_slices_of_the_one_process_batches():
  """P processes together read exactly the global batches (and augmentations)
  of one process, each its block of every batch, across epochs (n=7 is not a
  multiple of the batch)."""
  src = _source(n=7)
  kw = dict(per_device_batch_size=2, flips=True, rot90=True, seed=5)
  one = _iterator(src, num_local_devices=4, **kw)
  parts = [_iterator(src, num_local_devices=2, shard_index=p, shard_count=2, **kw)
           for p in (0, 1)]
  for _ in range(6):  # 6 x 8 examples: 7 epochs of 7
    whole = next(one)["blur"].reshape(8, 16, 16, 3)
    sliced = np.concatenate([next(it)["blur"].reshape(4, 16, 16, 3) for it in parts])
    np.testing.assert_array_equal(whole, sliced)
  for it in (one, *parts):
    it.close()


def test_global_batch_slice_positions():
  sampler = pipeline.GlobalBatchSliceSampler(
      pipeline.grain.IndexSampler(num_records=10, shuffle=True, num_epochs=None, seed=1),
      process_batch=3, shard_index=1, shard_count=2)
  # Process 1 of 2 is asked for indices 1, 3, 5, ...: its k-th example is
  # position (k // 3) * 6 + 3 + k % 3 of the one-process sequence.
  assert [sampler.global_position(k * 2 + 1) for k in range(7)] == [3, 4, 5, 9, 10, 11, 15]
  with pytest.raises(ValueError, match="not process 1"):
    sampler.global_position(2)


def test_a_process_refuses_another_process_iterator_state():
  src = _source(n=8)
  p0 = _iterator(src, shard_index=0, shard_count=2)
  p1 = _iterator(src, shard_index=1, shard_count=2)
  _take(p0, 2)
  with pytest.raises(ValueError, match="[Ss]ampler"):
    p1.set_state(p0.get_state())
  p0.close()
  p1.close()


def test_save_and_restore_gives_the_same_following_batches():
  it = _iterator(_source(), rot90=True, scale_jitter=0.2)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # What orbax JsonSave does.
  expected = _take(it, 4)
  it.close()
  fresh = _iterator(_source(), rot90=True, scale_jitter=0.2)
  next(fresh)  # Its own position does not matter once restored.
  fresh.set_state(state)
  for x, y in zip(expected, _take(fresh, 4)):
    np.testing.assert_array_equal(x["blur"], y["blur"])
    np.testing.assert_array_equal(x["sharp"], y["sharp"])
  fresh.close()


class _FailingSource(_ListSource):
  def __getitem__(self, i):
    if i == 5:
      raise OSError("record 5 is unreadable")
    return super().__getitem__(i)


def test_a_failing_record_raises_in_the_caller_and_the_state_stays_at_the_last_batch():
  """The prefetch thread's error reaches `next`, not a log line; no batch is skipped."""
  src = _source()
  it = _iterator(_FailingSource(src._examples))
  seen = 0
  with pytest.raises(OSError, match="record 5"):
    for _ in range(8):  # one epoch is 4 batches of 2; record 5 comes within two epochs
      next(it)
      seen += 1
  state = it.get_state()
  it.close()
  ref = _iterator(src)
  _take(ref, seen)
  assert state == ref.get_state()
  ref.close()


def test_blur_only_source_is_rejected_for_training():
  src = _ListSource([{"blur": _pattern(20, 20), "name": b"a.png"}] * 4)
  it = _iterator(src)
  with pytest.raises(ValueError, match="no 'sharp'"):
    next(it)


def test_bad_shard_arguments():
  with pytest.raises(ValueError, match="shard_index"):
    _iterator(_source(), shard_index=2, shard_count=2)


def test_eval_iterator_whole_images_in_order():
  src = _source(n=5)
  out = list(pipeline.eval_iterator(src))
  assert [e["name"] for e in out] == [f"{i}.png" for i in range(5)]
  for i, e in enumerate(out):
    np.testing.assert_array_equal(e["blur"], src[i]["blur"])
    np.testing.assert_array_equal(e["sharp"], src[i]["sharp"])
  part = list(pipeline.eval_iterator(src, shard_index=1, shard_count=2))
  assert [e["name"] for e in part] == ["1.png", "3.png"]
  blur_only = _ListSource([{"blur": _pattern(4, 4), "name": b"x.png"}])
  (e,) = pipeline.eval_iterator(blur_only)
  assert "sharp" not in e and e["name"] == "x.png"


def test_end_to_end_with_array_record_source(tmp_path):
  root = tmp_path / "pairs" / "train"
  for i in range(4):
    for d in ("input", "target"):
      os.makedirs(root / d, exist_ok=True)
      Image.fromarray(_pattern(30, 40, i)).save(root / d / f"{i}.png")
  src = pipeline.get_source("paired_folder", "train",
                            data_dir=str(tmp_path / "data"),
                            path=str(tmp_path / "pairs"))
  it = _iterator(src, crop_size=24, per_device_batch_size=2, flips=False)
  batches = _take(it, 2)
  state = it.get_state()
  nxt = next(it)
  it.close()
  for b in batches:
    blur = _to_uint8(b["blur"][0])
    np.testing.assert_array_equal(blur, _to_uint8(b["sharp"][0]))
    for crop in blur:
      y0, x0, ident = crop[0, 0]
      np.testing.assert_array_equal(
          crop, _pattern(30, 40, ident)[y0:y0 + 24, x0:x0 + 24])
  it2 = _iterator(src, crop_size=24, per_device_batch_size=2, flips=False)
  it2.set_state(json.dumps(state))
  np.testing.assert_array_equal(next(it2)["blur"], nxt["blur"])
  it2.close()
  names = [e["name"] for e in pipeline.eval_iterator(src)]
  assert sorted(names) == ["0.png", "1.png", "2.png", "3.png"]
