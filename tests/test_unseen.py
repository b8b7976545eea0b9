"""The held-out set of blur kinds that training never draws (data/unseen.py)."""

import numpy as np
import pytest

from flax_gradnet.data import online, pipeline, synthetic, unseen


def _texture(h=64, w=80, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _centroid(psf):
  ys, xs = np.mgrid[:psf.shape[0], :psf.shape[1]]
  return (psf * ys).sum(), (psf * xs).sum()


def test_the_unseen_kinds_are_not_training_families():
  assert not set(unseen.UNSEEN_KINDS) & set(synthetic.BLUR_FAMILIES)
  with pytest.raises(ValueError, match="ellipse"):
    online.OnlinePairs(families=("ellipse",))


def test_anisotropic_gaussian_isotropic_case_equals_the_training_gaussian():
  np.testing.assert_allclose(unseen.anisotropic_gaussian_psf(1.3, 1.3, 0.7),
                             synthetic.gaussian_psf(1.3), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, np.pi / 6, np.pi / 2])
def test_anisotropic_gaussian_second_moments_follow_its_axes(angle):
  psf = unseen.anisotropic_gaussian_psf(2.0, 1.0, angle)
  assert psf.min() >= 0 and abs(psf.sum() - 1) < 1e-12
  half = psf.shape[0] // 2
  cy, cx = _centroid(psf)
  assert abs(cy - half) < 1e-9 and abs(cx - half) < 1e-9
  y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
  along = x * np.cos(angle) - y * np.sin(angle)  # rows grow downwards
  across = x * np.sin(angle) + y * np.cos(angle)
  # Truncation at 3 sigma keeps ~97 % of a Gaussian's variance.
  assert 0.95 * 4.0 < (psf * along ** 2).sum() < 4.0
  assert 0.95 * 1.0 < (psf * across ** 2).sum() < 1.0 + 1e-3


def test_accelerating_motion_is_centred_and_dense_where_it_starts():
  length = 20.0
  psf = unseen.accelerating_motion_psf(length, 0.0)  # moves towards +x
  assert abs(psf.sum() - 1) < 1e-12
  half = psf.shape[0] // 2
  cy, cx = _centroid(psf)
  assert abs(cy - half) < 1e-9 and abs(cx - half) < 1e-9
  cols = psf.sum(axis=0)
  support = np.nonzero(cols > 1e-9)[0]
  assert abs((support[-1] - support[0]) - length) <= 2
  # x = L t^2 spends t < 1/sqrt(2), i.e. 70.7 % of the exposure, on the first half of the path.
  start = support[0]
  x = np.arange(cols.size) - start
  first_half = cols[x < length / 2].sum() + 0.5 * cols[x == length / 2].sum()
  assert abs(first_half - 1 / np.sqrt(2)) < 0.05


@pytest.mark.parametrize("blur", [unseen.rotation_blur, unseen.zoom_blur])
def test_burst_blurs_are_identity_without_motion_and_fix_their_centre(blur):
  img = _texture()
  np.testing.assert_array_equal(blur(img, np.array([20.0, 30.0]), 0.0), img)
  out = blur(img, np.array([20.0, 30.0]), 12.0)
  np.testing.assert_array_equal(out[20, 30], img[20, 30])  # the centre does not move
  # Motion grows with the distance from the centre: near it the image barely changes.
  near = np.abs(out[17:24, 27:34].astype(int) - img[17:24, 27:34]).mean()
  far = np.abs(out[-8:, -8:].astype(int) - img[-8:, -8:]).mean()
  assert near < 0.5 * far


def test_moving_object_leaves_the_background_sharp():
  img = _texture(96, 96)
  psf = synthetic.linear_motion_psf(10.0, 0.0)
  r = psf.shape[0] // 2
  out = unseen.moving_object_blur(img, psf, np.array([48.0, 48.0]), (20.0, 20.0))
  yy, xx = np.mgrid[:96, :96]
  dist = np.hypot(yy - 48, xx - 48)
  outside = dist > 20 + r + 1
  np.testing.assert_array_equal(out[outside], img[outside])
  inside = dist < 20 - r - 1
  moved = synthetic.apply_psf(img, psf, linear_light=False)
  assert np.abs(out[inside].astype(int) - moved[inside]).max() <= 1


def test_unseen_pairs_are_deterministic_and_laid_out_like_the_heldout_set():
  photos = {"a": _texture(48, 64, 1), "b": _texture(40, 40, 2)}
  first = unseen.unseen_pairs(photos=photos)
  again = unseen.unseen_pairs(photos=photos)
  assert len(first) == 2 * len(unseen.UNSEEN_KINDS)
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x["blur"], y["blur"])
  names = [ex["name"] for ex in first]
  assert names[0] == "a/ellipse.png" and names[-1] == "b/object.png"
  ex = first[0]
  assert ex["family"] == "ellipse" and ex["sequence"] == "a"
  assert ex["blur"].dtype == np.uint8 and ex["blur"].shape == ex["sharp"].shape
  # Every kind blurs: no pair is its own target.
  assert all(not np.array_equal(e["blur"], e["sharp"]) for e in first)
  # A kind's pair does not depend on which other kinds are drawn.
  only = unseen.unseen_pairs(photos=photos, kinds=("zoom",))
  np.testing.assert_array_equal(only[0]["blur"], first[3]["blur"])


def test_unknown_kind_and_training_split_are_refused():
  with pytest.raises(ValueError, match="Unknown unseen blur kind 'shake'"):
    unseen.unseen_pairs(photos={"a": _texture()}, kinds=("shake",))
  with pytest.raises(ValueError, match="only split is 'test'"):
    pipeline.get_source("synthetic_unseen", "train", data_dir="/nonexistent")


def test_pipeline_opens_the_unseen_heldout_set():
  source = pipeline.get_source("synthetic_unseen", "test", data_dir="/nonexistent")
  assert len(source) == len(online.HELDOUT_PHOTOS) * len(unseen.UNSEEN_KINDS)
  assert {ex["sequence"] for ex in source} == set(online.HELDOUT_PHOTOS)
  assert {ex["family"] for ex in source} == set(unseen.UNSEEN_KINDS)
