"""Whole-image and tiled inference; the blend weights; the restore path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.data

from flax_gradnet import inference
from flax_gradnet.models import Generator

TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)


@pytest.fixture(scope="module")
def tiny():
  model = Generator(**TINY)
  # rbg keys: the threefry init compiles ~5x slower on CPU.
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  return model, params


def _image(h=64, w=80):
  return skimage.data.astronaut()[100:100 + h, 150:150 + w].copy()


def _numpy_window(n, overlap, ramp_start, ramp_end):
  # Independent statement of the documented window: min(1, ramp from each flagged side).
  i = np.arange(n, dtype=np.float64)
  w = np.ones(n)
  if ramp_start:
    w = np.minimum(w, (i + 0.5) / overlap)
  if ramp_end:
    w = np.minimum(w, (n - 1 - i + 0.5) / overlap)
  return w


@pytest.mark.parametrize("h,w,tile,overlap", [(64, 80, 32, 16), (70, 45, 32, 8), (100, 100, 48, 12),
                                              (20, 90, 32, 4)])
def test_weight_sum_matches_numpy(h, w, tile, overlap):
  th, tw = min(tile, h), min(tile, w)
  ys = sorted(set(list(range(0, max(h - th, 0) + 1, tile - overlap)) + [h - th]))
  xs = sorted(set(list(range(0, max(w - tw, 0) + 1, tile - overlap)) + [w - tw]))
  assert inference.tile_starts(h, tile, overlap) == ys
  assert inference.tile_starts(w, tile, overlap) == xs
  expected = np.zeros((h, w))
  for y in ys:
    for x in xs:
      expected[y:y + th, x:x + tw] += np.outer(
          _numpy_window(th, overlap, y > 0, y + th < h), _numpy_window(tw, overlap, x > 0, x + tw < w))
  got = inference.weight_sum(h, w, tile, overlap)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  assert got.min() > 0  # every pixel is covered with positive weight


def test_blend_weights_sum_to_one():
  # A constant function: the blend returns the constant only if normalised weights sum to 1.
  const = lambda x: jnp.full_like(x, 0.25)
  out = inference.deblur_array(const, np.zeros((70, 45, 3), np.float32), tile=32, tile_overlap=8)
  np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_tiled_equals_whole_for_pointwise_fn():
  img = _image()
  x = inference.to_float(img)
  smooth = jax.jit(lambda x: jnp.tanh(3.0 * x) * 0.9)
  whole = inference.deblur_array(smooth, x)
  tiled = inference.deblur_array(smooth, x, tile=32, tile_overlap=16, tile_batch_size=3)
  np.testing.assert_allclose(tiled, whole, atol=1e-6)
  invert = jax.jit(lambda x: -x)
  np.testing.assert_array_equal(inference.deblur_image(invert, img, tile=32, tile_overlap=16),
                                255 - img)
  np.testing.assert_array_equal(inference.deblur_image(invert, img), 255 - img)


def test_tiles_compile_once():
  calls = []

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(x):
    calls.append(x.shape)
    return x

  out = inference.deblur_array(f, np.zeros((70, 45, 3), np.float32), tile=32, tile_overlap=8,
                               tile_batch_size=4)
  assert out.shape == (70, 45, 3)
  assert calls == [(4, 32, 32, 3)]


# Tiny random generator, 64x80 astronaut crop, tile 32, overlap 16: instance norms see
# per-tile statistics, so outputs differ (measured mean |diff| ~ 20 levels, max ~150;
# see docs/inference.md). Bound: mean < 30 levels, and tiled output still tracks the
# whole-image output (correlation > 0.5).
TINY_TILED_MEAN_ABS_BOUND = 30.0


def test_tiled_close_to_whole_with_generator(tiny):
  model, params = tiny
  fn = inference.make_deblur_fn(model, params)
  img = _image()
  whole = inference.deblur_image(fn, img)
  tiled = inference.deblur_image(fn, img, tile=32, tile_overlap=16)
  assert whole.shape == tiled.shape == img.shape and tiled.dtype == np.uint8
  diff = np.abs(whole.astype(np.float64) - tiled.astype(np.float64))
  assert 0 < diff.mean() < TINY_TILED_MEAN_ABS_BOUND
  assert np.corrcoef(whole.ravel(), tiled.ravel())[0, 1] > 0.5
  # Tile as large as the image: exactly the whole-image path.
  np.testing.assert_array_equal(inference.deblur_image(fn, img, tile=80, tile_overlap=16), whole)


def test_make_deblur_fn_matches_module(tiny):
  model, params = tiny
  x = np.random.default_rng(0).uniform(-1, 1, (2, 20, 28, 3)).astype(np.float32)
  np.testing.assert_allclose(inference.make_deblur_fn(model, params)(x),
                             model.apply({"params": params}, x), atol=1e-6)


def test_bad_arguments():
  f = lambda x: x
  x = np.zeros((64, 64, 3), np.float32)
  with pytest.raises(ValueError, match="multiple of 4"):
    inference.deblur_array(f, x, tile=30, tile_overlap=8)
  with pytest.raises(ValueError, match="tile_overlap"):
    inference.deblur_array(f, x, tile=32, tile_overlap=32)
  with pytest.raises(ValueError, match="tile_overlap must be smaller than tile=16"):
    inference.deblur_array(f, x, tile=16)  # the default overlap, 32, is not smaller
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    inference.deblur_array(f, np.zeros((64, 64), np.float32))
  with pytest.raises(ValueError, match="uint8"):
    inference.deblur_image(f, x)


def test_restore_from_a_workdir(tmp_path, tiny, generator_workdir):
  model, params = tiny
  generator_workdir(tmp_path, TINY, params, 3)
  m, p, restored = inference.restore(str(tmp_path))
  assert restored.step == 3 and restored.weights == "raw"
  x = np.zeros((1, 16, 16, 3), np.float32)
  np.testing.assert_allclose(m.apply({"params": p}, x), model.apply({"params": params}, x))


class _Fn:
  """A stand-in generator: `apply(variables, x) = f(x)`."""

  def __init__(self, f):
    self.f = f

  def apply(self, variables, x):
    del variables
    return self.f(x)


def _numpy_members(f, x):
  """The 8 self-ensemble members T^-1(f(T(x))) in numpy (rotations and flipped rotations)."""
  members = []
  for t in range(8):
    fwd = lambda a: np.rot90(a[:, :, ::-1] if t >= 4 else a, t % 4, axes=(1, 2))
    inv = lambda a: (lambda b: b[:, :, ::-1] if t >= 4 else b)(np.rot90(a, -(t % 4), axes=(1, 2)))
    members.append(inv(np.asarray(f(fwd(x)))))
  return np.stack(members)


@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (1, 5, 9, 3)])
def test_self_ensemble_of_identity_and_equivariant_models(shape):
  x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  identity = inference.make_deblur_fn(_Fn(lambda z: z), {}, ensemble=True)
  np.testing.assert_allclose(np.asarray(identity(x)), x, atol=1e-6)
  # A flip- and transpose-equivariant model (pointwise, or a symmetric 3x3
  # blur): the ensemble equals one pass.
  pointwise = lambda z: jnp.tanh(2 * z) * 0.9
  box = lambda z: jax.lax.reduce_window(z, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                        "SAME") / 9.0
  for f in (pointwise, box):
    one = inference.make_deblur_fn(_Fn(f), {})(x)
    ens = inference.make_deblur_fn(_Fn(f), {}, ensemble=True)(x)
    np.testing.assert_allclose(np.asarray(ens), np.asarray(one), atol=1e-6)
  # A model that is not equivariant (a shift right): the ensemble averages the
  # 8 transforms' answers, so it differs from one pass.
  shift = lambda z: jnp.roll(z, 1, axis=2)
  one = inference.make_deblur_fn(_Fn(shift), {})(x)
  ens = inference.make_deblur_fn(_Fn(shift), {}, ensemble=True)(x)
  assert np.abs(np.asarray(ens) - np.asarray(one)).max() > 1e-3
  # It is the numpy mean of T^-1(shift(T(x))) over the 8 rotations and
  # flipped rotations T of the square.
  want = _numpy_members(lambda a: np.roll(a, 1, axis=2), x).mean(0)
  np.testing.assert_allclose(np.asarray(ens), want, atol=1e-6)



@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 9, 11, 3), (1, 2, 3, 1)])  # (1, 2, 3): smaller than the box
def test_box_mean_equals_scipy_uniform_filter(window, shape):
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  want = scipy.ndimage.uniform_filter(x, (1, window, window, 1), mode="reflect")
  np.testing.assert_allclose(np.asarray(inference.box_mean(jnp.asarray(x), window)), want,
                             atol=1e-5)


@pytest.mark.parametrize("window", [0, 4, -3])
def test_box_mean_refuses_even_or_empty_windows(window):
  with pytest.raises(ValueError, match="positive odd"):
    inference.box_mean(jnp.zeros((1, 4, 4, 1)), window)


def test_shrunk_ensemble_equals_numpy_reference():
  """x + S/(S+V) * rbar, S and V the 5x5 box means of rbar**2 and of the 8
  members' variance, against numpy/scipy for a model that is not equivariant."""
  x = np.random.default_rng(2).uniform(-0.8, 0.8, (2, 10, 13, 3)).astype(np.float32)
  # Not equivariant: a shift right, a constant offset and a pointwise term.
  f = lambda z: 0.5 * jnp.roll(z, 1, axis=2) + 0.4 * z + 0.05 + 0.1 * jnp.tanh(z) ** 2
  got = np.asarray(inference.make_deblur_fn(_Fn(f), {}, ensemble="shrink")(x))
  members = _numpy_members(f, x).astype(np.float64)
  r = members - x[None]
  rbar, var = r.mean(0), r.var(0)
  signal = scipy.ndimage.uniform_filter(rbar ** 2, (1, 5, 5, 1), mode="reflect")
  noise = scipy.ndimage.uniform_filter(var, (1, 5, 5, 1), mode="reflect")
  want = x + signal / (signal + noise) * rbar
  np.testing.assert_allclose(got, want, atol=2e-5)
  # It lies between the input and the plain mean, strictly inside somewhere.
  mean = np.asarray(inference.make_deblur_fn(_Fn(f), {}, ensemble="mean")(x))
  np.testing.assert_allclose(mean, x + rbar, atol=1e-5)
  gain = (got - x) / np.where(np.abs(rbar) > 1e-3, rbar, np.nan)
  assert np.nanmin(gain) >= -1e-3 and np.nanmax(gain) <= 1 + 1e-3
  assert np.nanmin(gain) < 0.9


def test_shrunk_ensemble_limits():
  x = np.random.default_rng(3).uniform(-0.9, 0.9, (1, 8, 12, 3)).astype(np.float32)
  shrink = lambda f: np.asarray(inference.make_deblur_fn(_Fn(f), {}, ensemble="shrink")(x))
  one = lambda f: np.asarray(inference.make_deblur_fn(_Fn(f), {})(x))
  # Members that all agree (an equivariant model): the gain is 1, one pass.
  pointwise = lambda z: jnp.tanh(2 * z) * 0.9
  np.testing.assert_allclose(shrink(pointwise), one(pointwise), atol=1e-6)
  # The identity: no correction (0/0 gives the input, not NaN).
  np.testing.assert_array_equal(shrink(lambda z: z), x)
  # Members that cancel (a central difference across the width turns into
  # +-d/dx or +-d/dy under the 8 transforms): the input.
  central = lambda z: z + 0.3 * (jnp.roll(z, -1, axis=2) - jnp.roll(z, 1, axis=2))
  np.testing.assert_allclose(shrink(central), x, atol=1e-6)
  assert np.abs(one(central) - x).max() > 0.05


def test_ensemble_choices():
  assert [inference.ensemble_kind(e) for e in (False, None, True, "off", "mean", "shrink")] == [
      "off", "off", "mean", "off", "mean", "shrink"]
  assert inference.make_deblur_fn(_Fn(lambda z: z), {}, ensemble="shrink").ensemble == "shrink"
  assert inference.ENSEMBLES == ("off", "mean", "shrink")
  with pytest.raises(ValueError, match="ensemble must be one of"):
    inference.make_deblur_fn(_Fn(lambda z: z), {}, ensemble="median")


def _numpy_gaussian(a, sigma):
  """Independent statement of the documented filter: a sampled Gaussian, radius
  round(4 sigma), normalised, over axes 0 and 1, borders mirrored with the edge
  pixel repeated (numpy "symmetric" = scipy "reflect")."""
  r = int(4.0 * sigma + 0.5)
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  out = np.asarray(a, np.float64)
  for axis in (0, 1):
    pad = [(0, 0)] * out.ndim
    pad[axis] = (r, r)
    padded = np.pad(out, pad, mode="symmetric")
    out = sum(k[i] * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis)
              for i in range(2 * r + 1))
  return out


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_keep_input_low_frequencies_matches_numpy(sigma):
  rng = np.random.default_rng(0)
  out = rng.uniform(-0.9, 0.9, (40, 52, 3)).astype(np.float32)
  blurry = rng.uniform(-0.9, 0.9, (40, 52, 3)).astype(np.float32)
  want = np.clip(out - _numpy_gaussian(out, sigma) + _numpy_gaussian(blurry, sigma), -1, 1)
  got = inference.keep_input_low_frequencies(out, blurry, sigma)
  assert got.dtype == np.float32 and got.shape == out.shape
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert np.abs(got).max() <= 1.0


@pytest.mark.parametrize("shape,sigma", [((40, 52, 3), 3.0), ((9, 13, 1), 32.0), ((1, 5, 2), 2.0)])
def test_gaussian_through_the_dct_equals_scipys_reflect_filter(shape, sigma):
  # Including kernels larger than the image (mirrored again and again) and one row.
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(1).normal(size=shape)
  want = ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="reflect", truncate=4.0)
  np.testing.assert_allclose(inference._gaussian_reflect(x, sigma), want, atol=1e-12)  # pylint: disable=protected-access


def test_keep_input_low_frequencies_undoes_a_colour_shift_and_keeps_detail():
  no_clip = np.clip(inference.to_float(_image(64, 80)), -0.9, 0.9)
  # A shift that is constant over the image is undone exactly (the filter sums to one).
  shifted = no_clip + np.float32([-0.05, 0.02, 0.0])
  np.testing.assert_allclose(inference.keep_input_low_frequencies(shifted, no_clip, 8.0), no_clip,
                             atol=1e-5)
  # Detail finer than the Gaussian is kept: a +-0.1 checkerboard added to the
  # input comes back (away from the border, where mirroring breaks its pattern).
  checker = 0.1 * (-1.0) ** np.add.outer(np.arange(64), np.arange(80))[..., None]
  detailed = (no_clip + checker).astype(np.float32)
  kept = inference.keep_input_low_frequencies(detailed, no_clip, 8.0)
  np.testing.assert_allclose(kept[8:-8, 8:-8], detailed[8:-8, 8:-8], atol=1e-3)
  # sigma 0: the output as it is.
  np.testing.assert_array_equal(inference.keep_input_low_frequencies(shifted, no_clip, 0.0),
                                shifted)


def test_keep_input_low_frequencies_bad_arguments():
  x = np.zeros((8, 8, 3), np.float32)
  for bad in (-1.0, float("nan")):
    with pytest.raises(ValueError, match="low_freq_sigma must be >= 0"):
      inference.keep_input_low_frequencies(x, x, bad)
    with pytest.raises(ValueError, match="low_freq_sigma must be >= 0"):
      inference.deblur_array(lambda z: z, x, low_freq_sigma=bad)
  with pytest.raises(ValueError, match="one shape"):
    inference.keep_input_low_frequencies(x, np.zeros((8, 9, 3), np.float32), 2.0)


def test_deblur_array_keeps_the_input_low_frequencies_whole_and_tiled():
  # A "generator" that darkens red and sharpens (x + 0.5 (x - box3(x))): with
  # the input's low frequencies kept, the darkening is gone and the sharpening
  # stays; whole and tiled (the correction runs on the stitched image) agree.
  x = np.clip(inference.to_float(_image(64, 80)), -0.8, 0.8)
  box = lambda z: jax.lax.reduce_window(z, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                        "SAME") / 9.0
  fn = jax.jit(lambda z: z + 0.5 * (z - box(z)) + jnp.float32([-0.04, 0.0, 0.0]))
  raw = inference.deblur_array(fn, x)
  assert abs(float((raw - x)[..., 0].mean()) + 0.04) < 5e-3  # box3 pads with zeros
  for tile in (None, 32):
    kept = inference.deblur_array(fn, x, tile=tile, tile_overlap=16, low_freq_sigma=16.0)
    assert abs(float((kept - x)[..., 0].mean())) < 5e-3
    want = inference.keep_input_low_frequencies(
        inference.deblur_array(fn, x, tile=tile, tile_overlap=16), x, 16.0)
    np.testing.assert_allclose(kept, want, atol=1e-6)
    hp = lambda a: a - _numpy_gaussian(a, 16.0)
    np.testing.assert_allclose(hp(kept)[16:-16, 16:-16], hp(raw)[16:-16, 16:-16], atol=0.01)
  img = _image(64, 80)
  np.testing.assert_array_equal(
      inference.deblur_image(fn, img, low_freq_sigma=16.0),
      inference.to_uint8(inference.keep_input_low_frequencies(
          inference.deblur_array(fn, inference.to_float(img)), inference.to_float(img), 16.0)))


def test_scale_gate_takes_the_coarse_band_of_a_half_resolution_pass(monkeypatch):
  """`Options.scale_gate` against numpy: 2x2 block means of the even part, the
  generator's bilinear upsampling, the band swapped where r >= the threshold,
  the last odd row kept; uint8 and tiled inputs give the same."""
  from flax_gradnet.models.generator import upsample_bilinear  # pylint: disable=g-import-not-at-top
  img = _image(37, 50)  # an odd height: the last row keeps the full pass
  x = inference.to_float(img)
  box = lambda z: jax.lax.reduce_window(z, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                        "SAME") / 9.0
  fn = jax.jit(lambda z: z + 0.8 * (z - box(z)))
  run = lambda a: np.asarray(fn(jnp.asarray(a)[None]))[0]
  down = lambda a: a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, 3).mean(axis=(1, 3))
  up = lambda a: np.asarray(upsample_bilinear(jnp.asarray(a)[None], 2))[0]
  full = run(x)
  xh = down(x[:36])
  ch, c1 = run(xh) - xh, down(full[:36] - x[:36])
  rms = lambda a: np.sqrt(np.mean(a ** 2))
  r = rms(down(up(ch))) / (rms(c1) + 1e-6)
  assert np.isclose(inference.gate_half_scale(full.copy(), x, run, np.inf), r, rtol=1e-5)
  fused = full.copy()
  fused[:36] += up(down(up(ch)) - c1)
  assert np.abs(fused - full).max() > 0.01  # the swap changes the image
  for gate, want in ((r * 0.99, fused), (r * 1.01, full)):
    got = inference.deblur_array(fn, x, scale_gate=gate)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got[36], full[36])
    np.testing.assert_array_equal(inference.deblur_image(fn, img, scale_gate=gate),
                                  inference.to_uint8(got))
  # Tiles: a pointwise "generator" gives the same whole or tiled, both passes.
  scale = jax.jit(lambda z: z * 1.2)
  np.testing.assert_allclose(inference.deblur_array(scale, x, tile=16, tile_overlap=4,
                                                    scale_gate=0.01),
                             inference.deblur_array(scale, x, scale_gate=0.01), atol=1e-6)
  # Under a budget, the half pass gets what the full-size arrays and the gate's own
  # leave (and tiles under it); where nothing is left, the gate is skipped, said.
  def budgeted(z):
    return scale(z)
  budgeted.stride, budgeted.bytes_per_pixel, budgeted.param_bytes = 4, 40.0, 0
  planned = []
  real_plan = inference.plan_tile
  def spy(fn, height, width, **kwargs):
    planned.append((height, width, kwargs["max_memory"]))
    return real_plan(fn, height, width, **kwargs)
  monkeypatch.setattr(inference, "plan_tile", spy)
  gib = 140_000 / inference.GIB
  got = inference.deblur_array(budgeted, x, max_memory=gib, tile_overlap=4, scale_gate=0.01)
  held = (inference.host_bytes(37, 50) + inference.GATE_BYTES_PER_CHANNEL * 3 * 37 * 50)
  assert planned[0] == (37, 50, gib)
  assert len(planned) >= 2 and all(p[:2] == (18, 25) and np.isclose(
      p[2], gib - held / inference.GIB) for p in planned[1:]), planned
  # ... and the half pass ran in tiles under it.
  assert real_plan(budgeted, 18, 25, tile_overlap=4, max_memory=planned[1][2]) is not None
  np.testing.assert_allclose(got, inference.deblur_array(scale, x, scale_gate=0.01), atol=1e-6)
  with pytest.warns(UserWarning, match="scale_gate skipped for this 37x50 image"):
    got = inference.deblur_array(budgeted, x, max_memory=112_000 / inference.GIB, tile_overlap=4,
                                 scale_gate=0.01)
  np.testing.assert_allclose(got, inference.deblur_array(scale, x), atol=1e-6)
  # The helpers' row bands join without seams.
  d = np.random.default_rng(0).normal(size=(10, 7, 3)).astype(np.float32)
  acc = np.zeros((21, 15, 3), np.float32)
  inference._add_upsampled(acc, d, rows=3)  # pylint: disable=protected-access
  np.testing.assert_allclose(acc[:20, :14], up(d), atol=1e-6)
  assert not acc[20].any() and not acc[:, 14].any()
  np.testing.assert_allclose(inference._block_means(img[:36], rows=5),  # pylint: disable=protected-access
                             down(x[:36]), atol=1e-6)
  assert inference.Options(scale_gate=1.05).describe().startswith(
      "one generator pass; the coarse band from a half-resolution pass where it corrects >= 1.05x")
  assert not inference.Options(scale_gate=1.05).is_paper_protocol


# ---------------------------------------------------------------- memory budget


def _xla_pass_bytes(model, params, kind, h, w):
  """XLA's own account of one compiled pass (temp + argument + output bytes),
  built here from the module and the ensemble functions, not from make_deblur_fn."""
  combine = {"off": None, "shrink": inference.self_ensemble_shrunk}[kind]

  def apply(p, x):
    one = lambda z: jnp.asarray(model.apply({"params": p}, z), jnp.float32)
    return one(x) if combine is None else combine(one, x)

  x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  m = jax.jit(apply).lower(params, x).compile().memory_analysis()
  return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


@pytest.mark.parametrize("kind", ["off", "shrink"])
def test_pass_estimate_bounds_xla_memory_analysis(tiny, kind):
  model, params = tiny
  fn = inference.make_deblur_fn(model, params, ensemble=kind)
  measured = _xla_pass_bytes(model, params, kind, 48, 64)
  estimate = inference.pass_bytes(fn, 48, 64)
  # An upper bound, and not a vacuous one (the docstring's table: 2.7x / 4.1x here).
  assert measured <= estimate <= 8 * measured, (measured, estimate)


def test_pass_bytes_per_pixel_reads_the_model_fields():
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  # The documented formula, 4 bytes x members x (3 f + g / 4**levels + 48), by hand.
  assert inference.pass_bytes_per_pixel(Generator(**TINY)) == 4 * (3 * 4 + 4 / 16 + 48)
  assert inference.pass_bytes_per_pixel(Generator(**TINY), "mean") == 4 * 8 * (12 + 0.25 + 48)
  assert inference.pass_bytes_per_pixel(Generator(**TINY, num_levels=3), "shrink") == \
      4 * 8 * (12 + 4 / 64 + 48)
  # Test-time local statistics: 9 floats per base feature.
  assert inference.pass_bytes_per_pixel(Generator(**TINY, stats_window=16)) == 4 * (36 + 0.25 + 48)
  # A module (an old config) without num_levels: the paper's 2 levels.
  old = SimpleNamespace(base_features=4, gradientnet_features=4)
  assert inference.pass_bytes_per_pixel(old) == inference.pass_bytes_per_pixel(Generator(**TINY))
  assert inference.pass_bytes_per_pixel(_Fn(lambda z: z)) is None  # no estimate: never tiled
  fn = inference.make_deblur_fn(Generator(**TINY, num_levels=3), {})
  assert fn.stride == 8 and fn.param_bytes == 0


def _pointwise_fn(bytes_per_pixel, stride=4):
  """A pointwise 'generator' (tiling changes nothing) carrying a memory estimate."""
  jitted = jax.jit(lambda x: jnp.tanh(3.0 * x) * 0.9)
  fn = lambda x: jitted(x)
  fn.bytes_per_pixel, fn.param_bytes, fn.stride = bytes_per_pixel, 0, stride
  return fn


def _largest_tile(bpp, params, h, w, budget_bytes, stride=4):
  """Brute force: the largest multiple of `stride` whose padded tile fits."""
  pad = lambda n: -(-n // stride) * stride
  fits = [t for t in range(stride, max(h, w) + stride, stride)
          if bpp * pad(min(t, h)) * pad(min(t, w)) + params <= budget_bytes]
  return max(fits)


def test_small_budget_tiles_as_the_largest_fitting_tile():
  x = inference.to_float(_image(64, 80))
  fn = _pointwise_fn(1000.0)
  # The budget covers the pass and the image's host arrays (30 B/px for RGB).
  host = inference.host_bytes(64, 80, 3)
  assert host == 64 * 80 * 30
  budget = (1.1e6 + host) / inference.GIB  # 1000 B/px: a 32x32 tile fits, 36x36 does not
  assert _largest_tile(1000.0, 0, 64, 80, 1.1e6) == 32
  assert inference.plan_tile(fn, 64, 80, tile_overlap=16, max_memory=budget) == 32
  # Without room for the host arrays the tile shrinks (28x28 passes fit in 1.1e6 - host).
  assert inference.plan_tile(fn, 64, 80, tile_overlap=16, max_memory=1.1e6 / inference.GIB) == \
      _largest_tile(1000.0, 0, 64, 80, 1.1e6 - host) == 28
  assert inference.plan_tile(fn, 64, 80, tile_overlap=16, max_memory=1.0) is None  # fits whole
  calls = []
  tiled = inference.deblur_array(fn, x, tile_overlap=16, max_memory=budget,
                                 progress=lambda done, total: calls.append((done, total)))
  # Tiles at 0, 16, 32 down and 0, 16, 32, 48 across: 12 calls, the last (12, 12).
  assert calls == [(i, 12) for i in range(1, 13)]
  np.testing.assert_allclose(tiled, inference.deblur_array(fn, x), atol=1e-6)
  # The explicit tile wins over the budget; the whole image has no tile progress.
  calls.clear()
  inference.deblur_array(fn, x, tile=48, tile_overlap=16, max_memory=budget,
                         progress=lambda done, total: calls.append((done, total)))
  assert calls[-1] == (4, 4)
  calls.clear()
  inference.deblur_array(fn, x, max_memory=1.0, progress=lambda *a: calls.append(a))
  assert calls == []


def test_small_budget_with_generator_equals_its_tiles_and_is_close_to_whole(tiny):
  model, params = tiny
  fn = inference.make_deblur_fn(model, params)
  img = _image()
  whole = inference.deblur_image(fn, img)
  np.testing.assert_array_equal(inference.deblur_image(fn, img, max_memory=1.0), whole)
  need = inference.pass_bytes(fn, 64, 80)
  host = inference.host_bytes(64, 80, 3)
  budget = (0.6 * need + host) / inference.GIB
  want_tile = _largest_tile(fn.bytes_per_pixel, fn.param_bytes, 64, 80, 0.6 * need)
  assert 16 < want_tile < 80
  assert inference.plan_tile(fn, 64, 80, tile_overlap=16, max_memory=budget) == want_tile
  budgeted = inference.deblur_image(fn, img, tile_overlap=16, max_memory=budget)
  np.testing.assert_array_equal(
      budgeted, inference.deblur_image(fn, img, tile=want_tile, tile_overlap=16))
  # Tiling's documented tolerance (test_tiled_close_to_whole_with_generator).
  diff = np.abs(budgeted.astype(np.float64) - whole.astype(np.float64))
  assert 0 < diff.mean() < TINY_TILED_MEAN_ABS_BOUND
  assert np.corrcoef(whole.ravel(), budgeted.ravel())[0, 1] > 0.5


def test_budget_and_stride_errors():
  x = np.zeros((64, 64, 3), np.float32)
  fn = _pointwise_fn(1000.0)
  for bad in (0.0, -1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="max_memory must be a positive number of GiB"):
      inference.deblur_array(fn, x, max_memory=bad)
  # No tile larger than the overlap fits: the message says what the smallest needs.
  with pytest.raises(ValueError, match=r"too small.*36x36 tile.*overlap 32.*64x64 image's host"):
    inference.deblur_array(fn, x, tile_overlap=32, max_memory=1e6 / inference.GIB)
  # A budget the host arrays alone exceed: no tile fits either.
  with pytest.raises(ValueError, match="too small"):
    inference.deblur_array(fn, x, max_memory=0.9 * inference.host_bytes(64, 64) / inference.GIB)
  # Tiles are multiples of the generator's stride, not always 4.
  fn8 = _pointwise_fn(1000.0, stride=8)
  with pytest.raises(ValueError, match="multiple of 8"):
    inference.deblur_array(fn8, x, tile=36, tile_overlap=8)
  budget = 1.5e6 + inference.host_bytes(64, 64)
  tile = inference.plan_tile(fn8, 64, 64, tile_overlap=8, max_memory=budget / inference.GIB)
  assert tile == _largest_tile(1000.0, 0, 64, 64, 1.5e6, stride=8) == 32


# ---------------------------------------------------------------- host memory


def test_in_place_quantization_equals_metrics_quantize():
  rng = np.random.default_rng(3)
  x = rng.uniform(-1.1, 1.1, (37, 41, 3)).astype(np.float32)
  x[0, :8, 0] = (np.arange(8, dtype=np.float32) + 0.5) / np.float32(127.5) - 1  # exact halves
  want = inference.to_uint8(x)
  np.testing.assert_array_equal(inference._to_uint8_inplace(x.copy()), want)  # pylint: disable=protected-access


@pytest.mark.parametrize("tile,sigma", [(None, 0.0), (None, 8.0), (32, 0.0), (32, 8.0), (48, 16.0)])
def test_deblur_image_equals_deblur_array_of_the_float_image(tile, sigma):
  # deblur_image scales tiles from uint8 as it cuts them and quantizes in place:
  # the same bytes as the float path.
  img = _image(64, 80)
  fn = jax.jit(lambda z: jnp.tanh(2.0 * z) * 0.95 + 0.01)
  want = inference.to_uint8(inference.deblur_array(fn, inference.to_float(img), tile=tile,
                                                   tile_overlap=16, low_freq_sigma=sigma))
  np.testing.assert_array_equal(
      inference.deblur_image(fn, img, tile=tile, tile_overlap=16, low_freq_sigma=sigma), want)


def test_tiled_float32_accumulation_matches_float64_weight_sum():
  # The pre-normalised float32 windows equal the float64 blend (window / weight_sum).
  x = inference.to_float(_image(64, 80))
  fn = jax.jit(lambda z: jnp.sin(3.0 * z))
  got = inference.deblur_array(fn, x, tile=32, tile_overlap=12)
  acc = np.zeros((64, 80, 3))
  for y, xx, window in inference._tiles(64, 80, 32, 12):  # pylint: disable=protected-access
    acc[y:y + 32, xx:xx + 32] += np.asarray(fn(x[None, y:y + 32, xx:xx + 32]))[0] * window[..., None]
  want = acc / inference.weight_sum(64, 80, 32, 12)[..., None]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_low_frequencies_in_float32_match_scipy_on_a_large_image():
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  out = rng.uniform(-0.9, 0.9, (300, 420, 3)).astype(np.float32)
  blurry = np.clip(out + rng.normal(0, 0.05, out.shape), -0.9, 0.9).astype(np.float32) + 0.05
  g = lambda a: ndimage.gaussian_filter(np.float64(a), (32, 32, 0), mode="reflect", truncate=4.0)
  want = np.clip(out - g(out) + g(blurry), -1, 1)
  np.testing.assert_allclose(inference.keep_input_low_frequencies(out, blurry, 32.0), want,
                             atol=1e-5)
