"""Tests of the evaluation core (`evaluation.measure` and the means) on stand-in generators."""

import numpy as np
import pytest
from PIL import Image

from flax_gradnet import evaluation, inference, metrics
from flax_gradnet.data import builders


class _Scale:
  """A stand-in generator, y = a * x: no training, no compilation of a real network."""
  dtype = None

  def apply(self, variables, x):
    return x * variables["params"]["a"]


PARAMS = {"a": np.float32(0.9)}
FAMILIES = ["shake", "shake", "linear", "shake", "defocus", "linear", "defocus", "shake"]


def _source(with_family=True, with_sharp=True):
  """8 random pairs over 3 blur families, family order shake, linear, defocus."""
  rng = np.random.default_rng(3)
  source = []
  for i, family in enumerate(FAMILIES):
    sharp = rng.integers(0, 256, (24, 20, 3), np.uint8)
    blur = np.clip(sharp + rng.normal(0, 5 + 5 * i, sharp.shape), 0, 255).astype(np.uint8)
    ex = {"blur": blur, "name": f"photo{i % 2}/{family}{i}.png"}
    if with_sharp:
      ex["sharp"] = sharp
    if with_family:
      ex["family"] = family
    source.append(ex)
  return source


@pytest.mark.parametrize("crop_border,y_channel", [(0, False), (2, True)])
def test_rows_are_the_metrics_of_the_quantized_outputs(crop_border, y_channel):
  source = _source()
  seen = []
  measured = evaluation.measure(_Scale(), PARAMS, source, crop_border=crop_border,
                                y_channel=y_channel,
                                on_image=lambda ex, out, row: seen.append((ex, out, row)))
  assert measured.paired and len(measured.rows) == len(source) == len(measured.seconds)
  assert [r for _, _, r in seen] == measured.rows
  kw = dict(crop_border=crop_border, y_channel=y_channel)
  for ex, (seen_ex, out, row) in zip(source, seen):
    assert seen_ex is ex
    expected = inference.to_uint8(inference.to_float(ex["blur"]) * PARAMS["a"])
    np.testing.assert_array_equal(out, expected)
    assert list(row) == ["name", "family", "psnr", "ssim", "blurry_psnr", "blurry_ssim"]
    assert row["name"] == ex["name"] and row["family"] == ex["family"]
    assert row["psnr"] == pytest.approx(float(metrics.psnr(out, ex["sharp"], **kw)), abs=1e-4)
    assert row["ssim"] == pytest.approx(float(metrics.ssim(out, ex["sharp"], **kw)), abs=1e-6)
    assert row["blurry_psnr"] == pytest.approx(float(metrics.psnr(ex["blur"], ex["sharp"], **kw)),
                                               abs=1e-4)
  assert evaluation.metric_fns(crop_border, y_channel) is evaluation.metric_fns(crop_border,
                                                                               y_channel)


def test_grids_num_images_and_blur_only():
  source = _source()
  by_family = evaluation.measure(_Scale(), PARAMS, source, num_grids=2)
  # num_grids=2 but 3 families: each family's first image, in data order.
  assert [n for n, _ in by_family.grids] == ["photo0/shake0.png", "photo0/linear2.png",
                                             "photo0/defocus4.png"]
  assert by_family.grids[0][1].shape == (24, 60, 3)  # blurry | deblurred | sharp
  first = evaluation.measure(_Scale(), PARAMS, source, num_grids=2, family_grids=False)
  assert [n for n, _ in first.grids] == ["photo0/shake0.png", "photo1/shake1.png"]
  assert evaluation.measure(_Scale(), PARAMS, source, num_grids=0).grids == []

  short = evaluation.measure(_Scale(), PARAMS, source, num_images=3)
  assert short.rows == by_family.rows[:3]

  blur_only = evaluation.measure(_Scale(), PARAMS, _source(False, False), num_grids=1)
  assert blur_only.paired is False and blur_only.rows[0] == {"name": "photo0/shake0.png"}
  assert blur_only.grids[0][1].shape == (24, 40, 3)  # blurry | deblurred

  empty = evaluation.measure(_Scale(), PARAMS, [])
  assert empty.rows == [] and empty.paired is None


def test_mixed_examples_are_refused():
  with pytest.raises(ValueError, match="'family'"):
    evaluation.measure(_Scale(), PARAMS, _source(with_family=False) + _source()[:1])
  with pytest.raises(ValueError, match="'sharp'"):
    evaluation.measure(_Scale(), PARAMS, _source() + _source(with_sharp=False)[:1])


def test_choose_grids_covers_families_then_fills_in_order():
  cands = [(f"n{j}", f, j) for j, f in enumerate("aabac")]
  assert [g for _, g in evaluation.choose_grids(cands, 2)] == [0, 2, 4]  # every family once
  assert [g for _, g in evaluation.choose_grids(cands, 4)] == [0, 1, 2, 4]
  assert evaluation.choose_grids(cands, 0) == []
  plain = [(f"n{j}", None, j) for j in range(3)]
  assert [g for _, g in evaluation.choose_grids(plain, 2)] == [0, 1]


def test_family_and_group_means():
  rows = evaluation.measure(_Scale(), PARAMS, _source()).rows
  by_family = evaluation.family_means(rows)
  assert list(by_family) == ["shake", "linear", "defocus", evaluation.FAMILY_ALL]
  for family, m in by_family.items():
    rs = [r for r in rows if family in (r["family"], evaluation.FAMILY_ALL)]
    assert m == evaluation.group_means(rs)
    assert m["num_images"] == len(rs)
    for k in evaluation.METRIC_KEYS:
      assert m[k] == np.mean([r[k] for r in rs])
    gains = [r["psnr"] - r["blurry_psnr"] for r in rs]
    assert m["psnr_gain"] == pytest.approx(np.mean(gains), abs=1e-9)
    assert m["worst_psnr_gain"] == min(gains)
    assert m["worst_image"] == rs[int(np.argmin(gains))]["name"]


def test_training_evaluation_is_measure_plus_means():
  """evaluation.evaluate_source: the rows of `measure`, the means of `group_means`, a gain per family."""
  source = _source()
  means, grids = evaluation.evaluate_source(_Scale(), PARAMS, source, num_summaries=2)
  rows = evaluation.measure(_Scale(), PARAMS, source).rows
  overall = evaluation.group_means(rows)
  for k in ("psnr", "ssim", "blurry_psnr", "blurry_ssim", "psnr_gain"):
    assert means[k] == overall[k]
  assert means["worst_image_psnr_gain"] == overall["worst_psnr_gain"]
  for family, m in evaluation.family_means(rows).items():
    if family != evaluation.FAMILY_ALL:
      assert means[f"psnr_gain_{family}"] == m["psnr_gain"]
  assert len(grids) == 2 and grids[0].shape == (24, 60, 3)  # the first images only
  plain, _ = evaluation.evaluate_source(_Scale(), PARAMS, _source(with_family=False), num_images=3)
  assert sorted(plain) == ["blurry_psnr", "blurry_ssim", "psnr", "psnr_gain", "ssim"]
  # A run whose config records inference options is evaluated under them.
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  kept, _ = evaluation.evaluate_source(_Scale(), PARAMS, source,
                           options=inference.Options(low_freq_sigma=4.0))
  kept_rows = evaluation.measure(_Scale(), PARAMS, source, low_freq_sigma=4.0).rows
  assert kept["psnr"] == evaluation.group_means(kept_rows)["psnr"] != means["psnr"]


def test_kohler_best_frame_lookup(tmp_path):
  """The frames of the builder's layout; each image measured against its best-PSNR frame."""
  rng = np.random.default_rng(1)
  sharp = rng.integers(0, 256, (24, 28, 3)).astype(np.float64)
  (tmp_path / "Image1" / "Kernel1").mkdir(parents=True)
  frames = {}
  for k, noise in ((1, 40.0), (2, 5.0), (3, 60.0)):
    frames[k] = np.clip(sharp + rng.normal(0, noise, sharp.shape), 0, 255).astype(np.uint8)
    Image.fromarray(frames[k]).save(tmp_path / "Image1" / "Kernel1" / f"GroundTruth1_1_{k}.png")
  found = builders.kohler_ground_truth_frames(str(tmp_path))
  assert list(found) == [(1, 1)] and sorted(found[(1, 1)]) == [1, 2, 3]

  blur = np.clip(sharp + rng.normal(0, 20, sharp.shape), 0, 255).astype(np.uint8)
  ex = {"blur": blur, "sharp": frames[1], "name": "sub/Blurry1_1.png"}
  (row,) = evaluation.measure(_Scale(), PARAMS, [ex], kohler_frames_dir=str(tmp_path)).rows
  psnr, ssim = evaluation.metric_fns()
  scores = {k: float(psnr(blur, f)) for k, f in frames.items()}
  assert row["blurry_gt_frame"] == max(scores, key=scores.get) == 2
  assert row["blurry_psnr"] == scores[2] and row["blurry_ssim"] == float(ssim(blur, frames[2]))

  with pytest.raises(FileNotFoundError, match="no GroundTruth frames for 'Blurry2_1.png'"):
    evaluation.measure(_Scale(), PARAMS, [dict(ex, name="Blurry2_1.png")],
                       kohler_frames_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no GroundTruth"):
    builders.kohler_ground_truth_frames(str(tmp_path / "Image1" / "missing"))
