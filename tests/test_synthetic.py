"""Tests of the synthetic motion blur (numpy / scipy references)."""

import numpy as np
import pytest
from scipy import ndimage

from flax_gradnet.data import synthetic


def _gradient_energy(image):
  x = image.astype(np.float64).mean(-1)
  return np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2)


@pytest.fixture(scope="module")
def photo():
  return synthetic.builtin_photographs()["astronaut"][100:260, 150:310]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_psf_is_normalised_and_centred(seed):
  psf = synthetic.camera_shake_psf(np.random.default_rng(seed))
  assert psf.ndim == 2 and psf.shape[0] == psf.shape[1] and psf.shape[0] % 2
  assert (psf >= 0).all()
  np.testing.assert_allclose(psf.sum(), 1.0, atol=1e-12)
  ys, xs = np.mgrid[:psf.shape[0], :psf.shape[1]]
  centre = psf.shape[0] // 2
  np.testing.assert_allclose((psf * ys).sum(), centre, atol=1e-9)
  np.testing.assert_allclose((psf * xs).sum(), centre, atol=1e-9)


def test_straight_trajectory_gives_a_horizontal_bar():
  # A uniform horizontal sweep of 10 px: all mass on the centre row, spread
  # uniformly over 11 columns (bilinear ends), like a box filter.
  traj = np.linspace(0, 10, 10001) + 0j
  psf = synthetic.psf_from_trajectory(traj)
  c = psf.shape[0] // 2
  np.testing.assert_allclose(psf[c].sum(), 1.0, atol=1e-12)
  row = psf[c]
  inner = row[c - 4:c + 5]
  np.testing.assert_allclose(inner, 0.1, rtol=1e-3)
  np.testing.assert_allclose(row[c - 5] + row[c + 5], 0.1, rtol=1e-2)


def test_trajectory_length():
  traj = synthetic.motion_trajectory(np.random.default_rng(0), max_len=25.0)
  np.testing.assert_allclose(np.abs(np.diff(traj)).sum(), 25.0, rtol=1e-9)


def test_apply_psf_matches_scipy_convolution_in_linear_light(photo):
  psf = synthetic.camera_shake_psf(np.random.default_rng(5), max_len=15.0)
  got = synthetic.apply_psf(photo, psf)
  linear = (photo / 255.0) ** 2.2
  # np.pad "reflect" is ndimage's "mirror"; the PSF is flipped for convolve
  # vs. correlate conventions by ndimage.convolve itself.
  ref = np.stack([ndimage.convolve(linear[..., c], psf, mode="mirror")
                  for c in range(3)], -1)
  ref = np.round(np.clip(ref, 0, 1) ** (1 / 2.2) * 255).astype(int)
  assert np.abs(got.astype(int) - ref).max() <= 1


def test_delta_psf_is_identity(photo):
  psf = np.zeros((5, 5))
  psf[2, 2] = 1.0
  np.testing.assert_array_equal(synthetic.apply_psf(photo, psf), photo)


@pytest.mark.parametrize("kind", synthetic.BLUR_KINDS)
def test_blur_of_constant_image_is_constant(kind):
  image = np.full((80, 90, 3), (30, 128, 220), np.uint8)
  rng = np.random.default_rng(0)
  if kind == "shake":
    out = synthetic.apply_psf(image, synthetic.camera_shake_psf(rng))
  else:
    out = synthetic.frame_average_blur(image, rng)
  np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("kind", synthetic.BLUR_KINDS)
def test_pair_is_deterministic_and_blurrier(photo, kind):
  a = synthetic.make_pair(photo, np.random.default_rng(7), size=96,
                          kinds=[kind], noise=False)
  b = synthetic.make_pair(photo, np.random.default_rng(7), size=96,
                          kinds=[kind], noise=False)
  c = synthetic.make_pair(photo, np.random.default_rng(8), size=96,
                          kinds=[kind], noise=False)
  np.testing.assert_array_equal(a["blur"], b["blur"])
  np.testing.assert_array_equal(a["sharp"], b["sharp"])
  assert not np.array_equal(a["blur"], c["blur"])
  assert a["blur"].shape == a["sharp"].shape == (96, 96, 3)
  assert a["blur"].dtype == np.uint8 and a["kind"] == kind
  # The sharp target is an unmodified window of the photograph.
  found = [(y, x) for y in range(photo.shape[0] - 95)
           for x in range(photo.shape[1] - 95)
           if np.array_equal(photo[y:y + 96, x:x + 96], a["sharp"])]
  assert found
  assert _gradient_energy(a["blur"]) < 0.8 * _gradient_energy(a["sharp"])


def test_sensor_noise_is_mild_and_zero_mean():
  image = np.full((128, 128, 3), 128, np.uint8)
  noisy = synthetic.add_sensor_noise(image, np.random.default_rng(0))
  diff = noisy.astype(float) - image
  assert 0 < diff.std() < 8
  assert abs(diff.mean()) < 1.0


def test_generate_pairs_is_deterministic_per_photo(photo):
  other = photo[::-1].copy()
  one = dict(synthetic.generate_pairs({"a": photo}, pairs_per_image=2,
                                      seed=3, size=48))
  two = dict(synthetic.generate_pairs({"b": other, "a": photo},
                                      pairs_per_image=2, seed=3, size=48))
  assert set(one) == {"a/0000", "a/0001"}
  for k in one:
    np.testing.assert_array_equal(one[k]["blur"], two[k]["blur"])
    assert one[k]["sequence"] == "a"
  assert not np.array_equal(one["a/0000"]["blur"], one["a/0001"]["blur"])


def test_builtin_photographs_split_by_photograph():
  train = synthetic.builtin_photographs("train")
  test = synthetic.builtin_photographs("test")
  assert set(test) == set(synthetic.HELDOUT_PHOTOS)
  assert not set(train) & set(test)
  assert len(train) >= 8
  assert "clock_motion" not in train and "clock_motion" not in test
  for name, image in {**train, **test}.items():
    assert image.dtype == np.uint8 and image.ndim == 3, name
    assert image.shape[-1] == 3 and min(image.shape[:2]) >= 256, name


def test_load_image_dir_converts_and_names_bad_files(tmp_path):
  from PIL import Image
  Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "gray.png")
  (tmp_path / "bad.png").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="bad.png"):
    synthetic.load_image_dir(str(tmp_path))
  (tmp_path / "bad.png").unlink()
  images = synthetic.load_image_dir(str(tmp_path))
  assert images["gray.png"].shape == (4, 5, 3)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    synthetic.load_image_dir(str(tmp_path / "nope"))


def test_srgb_convolution_matches_scipy_and_keeps_the_mean(photo):
  psf = synthetic.camera_shake_psf(np.random.default_rng(3), max_len=15.0)
  got = synthetic.apply_psf(photo, psf, linear_light=False)
  ref = np.stack([ndimage.convolve(photo[..., c].astype(np.float64), psf, mode="mirror")
                  for c in range(3)], -1)
  assert np.abs(got.astype(int) - np.round(np.clip(ref, 0, 255)).astype(int)).max() <= 1
  # sRGB convolution keeps the mean (up to borders and rounding); linear light brightens.
  assert abs(got.mean() - photo.mean()) < 0.5
  assert synthetic.apply_psf(photo, psf).mean() > got.mean() + 0.5


# ----------------------------------------------------------------------------
# Parametric PSFs and the blur families of the on-the-fly data (v2.0.0).


def _assert_valid_centred_psf(psf):
  """Square, odd, non-negative, sums to 1, centroid exactly on the centre."""
  assert psf.ndim == 2 and psf.shape[0] == psf.shape[1] and psf.shape[0] % 2, psf.shape
  assert (psf >= 0).all()
  np.testing.assert_allclose(psf.sum(), 1.0, atol=1e-12)
  centre = psf.shape[0] // 2
  ys, xs = np.mgrid[:psf.shape[0], :psf.shape[1]]
  np.testing.assert_allclose((psf * ys).sum(), centre, atol=1e-9)
  np.testing.assert_allclose((psf * xs).sum(), centre, atol=1e-9)
  np.testing.assert_allclose(synthetic.psf_centroid(psf), (centre, centre), atol=1e-9)


@pytest.mark.parametrize("length", [1.0, 3.0, 6.4, 10.0, 25.0])
@pytest.mark.parametrize("angle", [0.0, 0.3, np.pi / 4, np.pi / 2, 2.0, np.pi])
def test_linear_motion_psf_is_valid_and_centred(length, angle):
  _assert_valid_centred_psf(synthetic.linear_motion_psf(length, angle))


@pytest.mark.parametrize("length", [3.0, 6.4, 7.0, 10.0, 25.0])
def test_horizontal_linear_motion_support_and_spread(length):
  psf = synthetic.linear_motion_psf(length, 0.0)
  c = psf.shape[0] // 2
  np.testing.assert_allclose(psf[c].sum(), 1.0, atol=1e-12)  # all on the centre row
  cols = np.nonzero(psf[c] > 1e-12)[0] - c
  # A segment [-L/2, L/2] splatted bilinearly covers columns floor(-L/2) ..
  # ceil(L/2): L + 1 columns for even L (the bilinear ends), L + 2 for odd L.
  half = int(np.ceil(length / 2))
  np.testing.assert_array_equal(cols, np.arange(-half, half + 1))
  if length % 2 == 0:
    assert len(cols) == length + 1
  # Spread: box of length L (variance L^2/12) convolved with the bilinear hat
  # (variance 1/6); dense samples so the box is continuous.
  dense = synthetic.linear_motion_psf(length, 0.0, samples_per_px=400)
  x = np.arange(dense.shape[1]) - dense.shape[1] // 2
  if float(length).is_integer():
    np.testing.assert_allclose((dense.sum(0) * x ** 2).sum(), length ** 2 / 12 + 1 / 6, rtol=1e-2)


@pytest.mark.parametrize("length", [3.0, 10.0, 25.0])
def test_vertical_linear_motion_is_on_the_centre_column(length):
  psf = synthetic.linear_motion_psf(length, np.pi / 2)
  c = psf.shape[0] // 2
  np.testing.assert_allclose(psf[:, c].sum(), 1.0, atol=1e-9)
  np.testing.assert_allclose(psf, synthetic.linear_motion_psf(length, 0.0).T, atol=1e-9)


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.5, 3.0, 5.0, 6.0])
def test_defocus_psf_is_valid_and_centred(radius):
  _assert_valid_centred_psf(synthetic.defocus_psf(radius))


@pytest.mark.parametrize("radius", [3.0, 5.0])
def test_defocus_support_is_a_disk_of_the_radius(radius):
  psf = synthetic.defocus_psf(radius)
  c = psf.shape[0] // 2
  yy, xx = np.mgrid[:psf.shape[0], :psf.shape[1]]
  dist = np.hypot(yy - c, xx - c)
  assert psf[dist > radius + 1].sum() == 0.0
  # Pixels at least half covered ~ the disk's area; a fully covered pixel
  # holds 1 / (disk area).
  area = np.pi * radius ** 2
  assert abs((psf >= 0.5 * psf.max()).sum() - area) <= 0.15 * area
  np.testing.assert_allclose(1.0 / psf.max(), area, rtol=0.02)
  # Radially symmetric: the same under transposition and flips.
  np.testing.assert_allclose(psf, psf.T, atol=1e-15)
  np.testing.assert_allclose(psf, psf[::-1, ::-1], atol=1e-15)


@pytest.mark.parametrize("sigma", [0.3, 0.6, 1.0, 1.7, 2.0])
def test_gaussian_psf_matches_the_analytic_gaussian(sigma):
  psf = synthetic.gaussian_psf(sigma)
  half = max(1, int(np.ceil(3 * sigma)))  # truncated at 3 sigma
  x = np.arange(-half, half + 1)
  ref = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))
  np.testing.assert_allclose(psf, ref / ref.sum(), rtol=1e-12, atol=1e-15)
  _assert_valid_centred_psf(psf)


def test_compose_psfs_is_the_normalised_full_convolution():
  from scipy import signal  # pylint: disable=g-import-not-at-top
  a = synthetic.linear_motion_psf(9.0, 0.7)
  b = synthetic.defocus_psf(2.5)
  g = synthetic.gaussian_psf(0.8)
  ref = signal.convolve2d(a, b)
  np.testing.assert_allclose(synthetic.compose_psfs(a, b), ref / ref.sum(), atol=1e-12)
  ref3 = signal.convolve2d(ref, g)
  np.testing.assert_allclose(synthetic.compose_psfs(a, b, g), ref3 / ref3.sum(), atol=1e-12)
  _assert_valid_centred_psf(synthetic.compose_psfs(a, b, g))
  np.testing.assert_allclose(synthetic.compose_psfs(a), a, atol=1e-15)


def test_zero_extent_gives_the_identity():
  for psf in (synthetic.linear_motion_psf(0.0, 0.0), synthetic.linear_motion_psf(0, 1.2),
              synthetic.defocus_psf(0.0)):
    np.testing.assert_array_equal(psf, np.ones((1, 1)))
  # A radius far below a pixel is a (3x3) delta, not 0/0.
  delta = np.zeros((3, 3))
  delta[1, 1] = 1.0
  np.testing.assert_array_equal(synthetic.defocus_psf(0.05), delta)


def test_bad_psf_parameters_raise():
  with pytest.raises(ValueError, match="length"):
    synthetic.linear_motion_psf(-1.0, 0.0)
  with pytest.raises(ValueError, match="radius"):
    synthetic.defocus_psf(-0.5)
  for sigma in (0.0, -1.0):
    with pytest.raises(ValueError, match="sigma"):
      synthetic.gaussian_psf(sigma)


@pytest.mark.parametrize("family", [f for f in synthetic.BLUR_FAMILIES if f != "frames"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_psf_of_every_family_is_valid_and_centred(family, seed):
  psf = synthetic.random_psf(family, np.random.default_rng(seed))
  _assert_valid_centred_psf(psf)
  np.testing.assert_array_equal(psf, synthetic.random_psf(family, np.random.default_rng(seed)))


def test_unknown_family_raises():
  rng = np.random.default_rng(0)
  for family in ("frames", "bogus"):  # "frames" has no PSF
    with pytest.raises(ValueError, match="family"):
      synthetic.random_psf(family, rng)
  with pytest.raises(ValueError, match="family"):
    synthetic.blur_family(np.zeros((8, 8, 3), np.uint8), "bogus", rng)


@pytest.mark.parametrize("family", synthetic.BLUR_FAMILIES)
def test_blur_family_keeps_a_constant_image(family):
  image = np.full((40, 40, 3), (30, 128, 220), np.uint8)
  out = synthetic.blur_family(image, family, np.random.default_rng(0))
  np.testing.assert_array_equal(out, image)


def test_random_sensor_noise_clean_and_noisy(photo):
  image = photo[:48, :48]
  same, sigma = synthetic.random_sensor_noise(image, np.random.default_rng(0), p_clean=1.0)
  np.testing.assert_array_equal(same, image)
  assert sigma == 0.0
  a, sa = synthetic.random_sensor_noise(image, np.random.default_rng(1), p_clean=0.0)
  b, sb = synthetic.random_sensor_noise(image, np.random.default_rng(1), p_clean=0.0)
  c, _ = synthetic.random_sensor_noise(image, np.random.default_rng(2), p_clean=0.0)
  assert a.dtype == np.uint8 and a.shape == image.shape
  assert not np.array_equal(a, image)
  np.testing.assert_array_equal(a, b)
  assert sa == sb and 0.0 <= sa <= 0.006
  assert not np.array_equal(a, c)


def test_srgb_frame_average_of_a_constant_is_that_constant():
  image = np.full((48, 56, 3), (30, 128, 220), np.uint8)
  out = synthetic.frame_average_blur(image, np.random.default_rng(3), linear_light=False)
  np.testing.assert_array_equal(out, image)
