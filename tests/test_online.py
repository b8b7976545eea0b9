"""Tests of the on-the-fly synthetic pairs and the held-out evaluation (v2.0.0)."""

import json

import numpy as np
import pytest

from flax_gradnet.data import online, pipeline, synthetic


def _gradient_energy(image):
  x = image.astype(np.float64).mean(-1)
  return np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2)


@pytest.fixture(scope="module")
def small_heldout():
  """64 px crops of the held-out photographs, in `HELDOUT_PHOTOS` order."""
  photos = online.heldout_photographs()
  return {k: np.ascontiguousarray(photos[k][100:164, 100:164]) for k in online.HELDOUT_PHOTOS}


def _assert_pairs_equal(a, b):
  np.testing.assert_array_equal(a["blur"], b["blur"])
  np.testing.assert_array_equal(a["sharp"], b["sharp"])
  assert a["name"] == b["name"]


def test_version_and_heldout_photos():
  assert online.VERSION == "3.0.0"
  assert online.HELDOUT_VERSION == "2.2.0"  # frozen: held-out numbers stay comparable
  train = online.training_photographs()
  assert set(online.HELDOUT_PHOTOS) <= set(synthetic.builtin_photographs())
  assert not set(train) & set(online.HELDOUT_PHOTOS)
  assert set(train) | set(online.HELDOUT_PHOTOS) == set(synthetic.builtin_photographs())


def test_record_is_a_function_of_seed_and_index():
  src = online.OnlinePairs(size=32, seed=0)
  a = src[5]
  src[6], src[0]  # pylint: disable=pointless-statement  # reading others changes nothing
  _assert_pairs_equal(a, src[5])
  _assert_pairs_equal(a, online.OnlinePairs(size=32, seed=0)[5])
  assert not np.array_equal(a["blur"], src[6]["blur"])
  assert not np.array_equal(a["blur"], online.OnlinePairs(size=32, seed=1)[5]["blur"])
  for key in ("blur", "sharp"):
    assert a[key].dtype == np.uint8 and a[key].shape == (32, 32, 3)
  assert a["name"].startswith("00000005_")


def test_index_out_of_range():
  src = online.OnlinePairs(size=16, num_records=10, procedural_fraction=1.0, photos={})
  assert len(src) == 10
  src[9]  # pylint: disable=pointless-statement
  for i in (-1, 10, 1 << 30):
    with pytest.raises(IndexError):
      src[i]  # pylint: disable=pointless-statement
  assert len(online.OnlinePairs(size=16, photos={}, procedural_fraction=1.0)) == online.NUM_RECORDS


@pytest.mark.parametrize("kwargs, match", [
    (dict(families=("shake", "bogus")), "family"),
    (dict(families=()), "empty"),
    (dict(procedural_fraction=-0.1), "procedural_fraction"),
    (dict(procedural_fraction=1.5), "procedural_fraction"),
    (dict(size=7), "size"),
    (dict(procedural_fraction=0.5, photos={}), "photographs"),
])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    online.OnlinePairs(**kwargs)


def test_procedural_records_never_read_photographs():
  src = online.OnlinePairs(size=24, seed=3, procedural_fraction=1.0, photos={})
  for i in range(12):
    ex = src[i]
    assert "dead_leaves" in ex["name"] and ex["sequence"] == "dead_leaves"


def test_photograph_records_never_use_heldout_photographs():
  src = online.OnlinePairs(size=16, seed=0, procedural_fraction=0.0)
  train = set(online.training_photographs())
  sources = set()
  for i in range(40):
    ex = src[i]
    assert not any(h in ex["name"] for h in online.HELDOUT_PHOTOS), ex["name"]
    assert ex["sequence"] in train and ex["sequence"] in ex["name"]
    sources.add(ex["sequence"])
  assert len(sources) >= 5  # drawn across the photographs


def test_every_family_is_drawn_and_named():
  src = online.OnlinePairs(size=16, seed=0, procedural_fraction=1.0, photos={}, p_unblurred=0.0)
  for family in synthetic.BLUR_FAMILIES:
    one = online.OnlinePairs(size=16, seed=0, procedural_fraction=1.0, photos={},
                             families=(family,), p_unblurred=0.0)
    assert one[0]["name"].endswith(f"_{family}")
  seen = {src[i]["name"].rsplit("_", 1)[-1] for i in range(40)}
  assert seen == set(synthetic.BLUR_FAMILIES)
  # With the default p_unblurred = 0.1, "none" (noise only) joins the families.
  default = online.OnlinePairs(size=16, seed=0, procedural_fraction=1.0, photos={})
  seen = {default[i]["name"].rsplit("_", 1)[-1] for i in range(60)}
  assert seen == set(synthetic.BLUR_FAMILIES) | {"none"}


def test_blur_lowers_gradient_energy():
  src = online.OnlinePairs(size=48, seed=0, noise=False, p_unblurred=0.0)
  ratios = [_gradient_energy(ex["blur"]) / _gradient_energy(ex["sharp"])
            for ex in (src[i] for i in range(12))]
  assert np.mean(ratios) < 0.7, ratios


def test_heldout_pairs_order_names_and_sharp_targets(monkeypatch):
  # The whole photographs with a stand-in blur (the real blur of 24 whole
  # photographs takes seconds; it is tested on crops below).
  monkeypatch.setattr(synthetic, "blur_family", lambda region, family, rng: 255 - region)
  pairs = online.heldout_pairs()
  photos = synthetic.builtin_photographs()
  assert len(pairs) == len(online.HELDOUT_PHOTOS) * len(synthetic.BLUR_FAMILIES) == 24
  expected = [(p, f) for p in online.HELDOUT_PHOTOS for f in synthetic.BLUR_FAMILIES]
  for i, (photo, family) in enumerate(expected):  # photo-major
    ex = pairs[i]
    assert ex["name"] == f"{photo}/{family}.png"
    assert ex["sequence"] == photo and ex["family"] == family
    np.testing.assert_array_equal(ex["sharp"], photos[photo])
    assert ex["blur"].shape == photos[photo].shape and ex["blur"].dtype == np.uint8
    assert not np.array_equal(ex["blur"], ex["sharp"])


def test_heldout_pairs_are_deterministic_and_independent(small_heldout):
  full = online.heldout_pairs(photos=small_heldout)
  again = online.heldout_pairs(photos=small_heldout)
  assert len(full) == 24
  for i in range(len(full)):
    _assert_pairs_equal(full[i], again[i])
  by_name = {full[i]["name"]: full[i] for i in range(len(full))}
  # Fewer families, or fewer photographs: the remaining pairs do not change.
  subset = online.heldout_pairs(families=("shake", "defocus"), photos=small_heldout)
  assert [subset[i]["name"] for i in range(len(subset))] == [
      f"{p}/{f}.png" for p in online.HELDOUT_PHOTOS for f in ("shake", "defocus")]
  for i in range(len(subset)):
    _assert_pairs_equal(subset[i], by_name[subset[i]["name"]])
  one = online.heldout_pairs(photos={"rocket": small_heldout["rocket"]})
  for i in range(len(one)):
    _assert_pairs_equal(one[i], by_name[one[i]["name"]])
  other_seed = online.heldout_pairs(photos={"rocket": small_heldout["rocket"]}, seed=1)
  assert not np.array_equal(other_seed[0]["blur"], one[0]["blur"])
  with pytest.raises(ValueError, match="family"):
    online.heldout_pairs(families=("bogus",), photos=small_heldout)


def test_get_source_synthetic_online(tmp_path):
  train = pipeline.get_source("synthetic_online", "train", data_dir=str(tmp_path),
                              size=24, seed=2)
  assert isinstance(train, online.OnlinePairs)
  _assert_pairs_equal(train[3], online.OnlinePairs(size=24, seed=2)[3])
  test = pipeline.get_source("synthetic_online", "test", data_dir=str(tmp_path),
                             families=("gaussian",), noise=False)
  ref = online.heldout_pairs(families=("gaussian",), noise=False)
  assert len(test) == len(ref) == len(online.HELDOUT_PHOTOS)
  for i in range(len(ref)):
    _assert_pairs_equal(test[i], ref[i])
  assert not list(tmp_path.iterdir())  # nothing prepared on disk
  with pytest.raises(ValueError, match="split"):
    pipeline.get_source("synthetic_online", "validation", data_dir=str(tmp_path))


def test_eval_iterator_passes_the_family(small_heldout):
  source = online.heldout_pairs(families=("gaussian", "defocus"), photos=small_heldout)
  examples = list(pipeline.eval_iterator(source))
  assert [e["name"] for e in examples] == [source[i]["name"] for i in range(len(source))]
  assert [e["family"] for e in examples] == ["gaussian", "defocus"] * len(small_heldout)


def _iterator(seed=0):
  source = online.OnlinePairs(size=32, seed=seed, photos={}, procedural_fraction=1.0)
  return pipeline.create_train_iterator(
      source, crop_size=32, per_device_batch_size=2, num_local_devices=1, seed=0,
      shard_index=0, shard_count=1)


def test_train_iterator_resumes_exactly():
  it = _iterator()
  first = [next(it) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))  # what orbax JsonSave does
  expected = [next(it) for _ in range(2)]
  it.close()
  assert first[0]["blur"].shape == (1, 2, 32, 32, 3)
  fresh = _iterator()  # a new OnlinePairs object: only its data must match
  fresh.set_state(state)
  got = [next(fresh) for _ in range(2)]
  fresh.close()
  for x, y in zip(expected, got):
    np.testing.assert_array_equal(x["blur"], y["blur"])
    np.testing.assert_array_equal(x["sharp"], y["sharp"])
  assert not np.array_equal(first[0]["blur"], expected[0]["blur"])
  # Another data seed is another data set: its state does not restore.
  other = _iterator(seed=1)
  with pytest.raises(ValueError, match="DataSource"):
    other.set_state(state)
  other.close()


def test_repr_names_the_data_not_the_object(small_heldout):
  kw = dict(size=32, seed=0, photos=small_heldout)
  assert repr(online.OnlinePairs(**kw)) == repr(online.OnlinePairs(**kw))
  assert "0x" not in repr(online.OnlinePairs(**kw))
  changed = [dict(kw, seed=1), dict(kw, size=48), dict(kw, procedural_fraction=0.2),
             dict(kw, families=("shake",)), dict(kw, noise=False), dict(kw, num_records=5),
             dict(kw, p_soft=0.3),
             dict(kw, photos={**small_heldout, "rocket": small_heldout["rocket"][::-1]})]
  reprs = {repr(online.OnlinePairs(**k)) for k in [kw] + changed}
  assert len(reprs) == len(changed) + 1


def test_unblurred_records_are_the_sharp_image_plus_noise():
  src = online.OnlinePairs(size=32, seed=0, procedural_fraction=1.0, noise=False, p_unblurred=1.0,
                           num_records=100)
  for i in range(3):
    ex = src[i]
    np.testing.assert_array_equal(ex["blur"], ex["sharp"])
    assert ex["name"].endswith("_none")
  with pytest.raises(ValueError, match="p_unblurred"):
    online.OnlinePairs(size=32, p_unblurred=1.5)


def _high_frequency_energy(image):
  """Mean squared 4-neighbour Laplacian of the grey image (0 for a flat image)."""
  g = image.astype(np.float64).mean(-1)
  lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
  return float(np.mean(lap ** 2))


def test_soft_records_have_soft_targets(small_heldout):
  kw = dict(size=48, seed=0, noise=False, p_unblurred=1.0, num_records=100,
            photos=small_heldout, procedural_fraction=0.5)
  soft, crisp = online.OnlinePairs(p_soft=1.0, **kw), online.OnlinePairs(p_soft=0.0, **kw)
  soft_energy, crisp_energy = [], []
  for i in range(12):
    s, c = soft[i], crisp[i]
    assert "_soft_" in s["name"] and "_soft" not in c["name"]
    np.testing.assert_array_equal(s["blur"], s["sharp"])  # unblurred: the target is the soft image
    soft_energy.append(_high_frequency_energy(s["sharp"]))
    crisp_energy.append(_high_frequency_energy(c["sharp"]))
  # A Gaussian of sigma >= 0.5 px removes at least half of the Laplacian's
  # energy of a broadband image (its gain at the Nyquist corner is
  # exp(-pi^2 sigma^2) <= 0.085); the records differ, so compare the medians.
  assert np.median(soft_energy) < 0.5 * np.median(crisp_energy)
  with pytest.raises(ValueError, match="p_soft"):
    online.OnlinePairs(size=32, p_soft=-0.1)


def test_photo_scale_default_is_v23_and_enlarging_softens(small_heldout):
  kw = dict(size=48, seed=0, noise=False, p_unblurred=1.0, num_records=100,
            photos=small_heldout, procedural_fraction=0.0)
  default, explicit = online.OnlinePairs(**kw), online.OnlinePairs(photo_scale=(0.35, 1.0), **kw)
  assert repr(default) == repr(explicit) and "photo_scale" not in repr(default)  # v2.3 reprs
  for i in range(4):
    np.testing.assert_array_equal(default[i]["sharp"], explicit[i]["sharp"])
  small = online.OnlinePairs(photo_scale=(0.4, 0.4), **kw)
  large = online.OnlinePairs(photo_scale=(2.0, 2.0), **kw)
  assert "photo_scale=(2.0, 2.0)" in repr(large)
  # Downscaled by 0.4 (area average) vs enlarged 2x (bicubic): enlarging
  # halves every frequency, so the Laplacian energy drops by far more than half.
  e_small = [_high_frequency_energy(small[i]["sharp"]) for i in range(8)]
  e_large = [_high_frequency_energy(large[i]["sharp"]) for i in range(8)]
  assert np.median(e_large) < 0.5 * np.median(e_small)
  with pytest.raises(ValueError, match="photo_scale"):
    online.OnlinePairs(size=32, photo_scale=(1.0, 0.5))
  with pytest.raises(ValueError, match="photo_scale"):
    online.OnlinePairs(size=32, photo_scale=(0.0, 1.0))


def test_photo_jitter_off_is_v23_and_on_changes_only_the_look(small_heldout):
  kw = dict(size=48, seed=0, noise=False, p_unblurred=1.0, num_records=100,
            photos=small_heldout, procedural_fraction=0.0)
  default, off = online.OnlinePairs(**kw), online.OnlinePairs(photo_jitter=0.0, **kw)
  assert repr(default) == repr(off) and "photo_jitter" not in repr(default)
  for i in range(4):
    _assert_pairs_equal(default[i], off[i])
  on = online.OnlinePairs(photo_jitter=1.0, **kw)
  assert "photo_jitter=1.0" in repr(on)
  again = online.OnlinePairs(photo_jitter=1.0, **kw)
  for i in range(4):
    rec = on[i]
    _assert_pairs_equal(rec, again[i])
    assert "_jit_" in rec["name"]
    # Unblurred and noiseless: the jittered photograph is both input and target.
    np.testing.assert_array_equal(rec["blur"], rec["sharp"])
  with pytest.raises(ValueError, match="photo_jitter"):
    online.OnlinePairs(size=32, photo_jitter=1.5)


def test_jitter_colours_is_a_monotone_look_per_channel():
  ramp = np.repeat(np.linspace(0, 255, 64).round().astype(np.uint8)[None, :, None], 3, axis=-1)
  ramp = np.repeat(ramp, 4, axis=0)
  rng = np.random.default_rng(3)
  looks = [online.jitter_colours(ramp, rng) for _ in range(8)]
  for out in looks:
    assert out.dtype == np.uint8 and out.shape == ramp.shape
    # Gain, gamma and a positive contrast scale keep the order of grey levels.
    assert np.all(np.diff(out[0].astype(int), axis=0) >= 0)
  # ... but the channels no longer agree (a grey ramp gets a colour cast).
  assert any(np.abs(o[..., 0].astype(int) - o[..., 1]).max() > 5 for o in looks)


def test_strands_off_is_v23_and_on_is_deterministic():
  kw = dict(size=48, seed=0, noise=False, p_unblurred=1.0, num_records=100,
            procedural_fraction=1.0)
  default, off = online.OnlinePairs(**kw), online.OnlinePairs(strands=0.0, **kw)
  assert repr(default) == repr(off) and "strands" not in repr(default)
  for i in range(3):
    _assert_pairs_equal(default[i], off[i])
  on, again = online.OnlinePairs(strands=1.0, **kw), online.OnlinePairs(strands=1.0, **kw)
  assert "strands=1.0" in repr(on)
  assert any(not np.array_equal(on[i]["sharp"], default[i]["sharp"]) for i in range(3))
  for i in range(3):
    _assert_pairs_equal(on[i], again[i])
  with pytest.raises(ValueError, match="strands"):
    online.OnlinePairs(size=32, strands=-0.1)
