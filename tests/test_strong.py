"""Synthetic data v3 (strong camera shake, dynamic scenes, photo_dir), the
strong-blur held-out set (data/strong.py) and the generator's third stage."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from flax_gradnet import inference
from flax_gradnet.data import device_pairs, online, pipeline, strong, synthetic
from flax_gradnet.models import Generator


def _experiment(name, monkeypatch=None):
  """experiments/<name>.py loaded as a module (the folder is no package). With
  `monkeypatch`, registered in sys.modules while the test runs (a flax module
  defined there, a dataclass, looks itself up)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
  module = importlib.util.module_from_spec(spec)
  if monkeypatch is not None:
    monkeypatch.setitem(sys.modules, spec.name, module)
  spec.loader.exec_module(module)
  return module


def _texture(h=64, w=80, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _extent(psf):
  ys, xs = np.nonzero(psf > 1e-12)
  return max(ys.max() - ys.min(), xs.max() - xs.min())


def _centroid(psf):
  ys, xs = np.mgrid[:psf.shape[0], :psf.shape[1]]
  return (psf * ys).sum(), (psf * xs).sum()


@pytest.mark.parametrize("extent", [20.0, 45.0, 60.0])
def test_shake_psf_with_extent_spans_the_extent(extent):
  psf = synthetic.shake_psf_with_extent(np.random.default_rng(int(extent)), extent)
  assert psf.min() >= 0 and abs(psf.sum() - 1) < 1e-12
  half = psf.shape[0] // 2
  cy, cx = _centroid(psf)
  assert abs(cy - half) < 1e-9 and abs(cx - half) < 1e-9  # no shift of the image
  # Bilinear splatting adds at most one pixel to the path's bounding box.
  assert extent <= _extent(psf) <= extent + 1
  with pytest.raises(ValueError, match="extent"):
    synthetic.shake_psf_with_extent(np.random.default_rng(0), 0.0)


def test_tremor_psf_spans_the_extent_and_is_centred():
  psf = strong.tremor_psf(np.random.default_rng(1), 30.0)
  assert abs(psf.sum() - 1) < 1e-12 and 30 <= _extent(psf) <= 31
  half = psf.shape[0] // 2
  cy, cx = _centroid(psf)
  assert abs(cy - half) < 1e-9 and abs(cx - half) < 1e-9


@pytest.mark.parametrize("dy,dx", [(0.0, 0.0), (2.25, -4.5), (-7.75, 3.0), (0.0, 6.5)])
def test_shifter_equals_scipy_bilinear_shift(dy, dx):
  image = np.random.default_rng(2).uniform(size=(40, 50, 3))
  ours = synthetic._Shifter(image, 8.0)(dy, dx)  # pylint: disable=protected-access
  # scipy's "mirror" is numpy's "reflect"; compare away from the borders' handling.
  ref = ndimage.shift(image, (dy, dx, 0.0), order=1, mode="mirror")
  np.testing.assert_allclose(ours[9:-9, 9:-9], ref[9:-9, 9:-9], atol=1e-12)


def test_dynamic_scene_leaves_a_still_background_sharp():
  region = _texture(96, 96, seed=3)
  rng = np.random.default_rng(4)
  sharp, blurry = synthetic.dynamic_scene(region, rng, camera_extent=(0.0, 0.0),
                                          object_motion=(20.0, 20.0), max_objects=1)
  assert sharp.shape == blurry.shape == region.shape and sharp.dtype == np.uint8
  # Where neither the object nor its path ever was, every frame is the
  # background itself: blurry == sharp == region there.
  untouched = np.all(sharp == region, axis=-1)
  untouched = ndimage.binary_erosion(untouched, iterations=14)
  assert untouched.sum() > 500
  np.testing.assert_array_equal(blurry[untouched], region[untouched])
  # The object moved: the image differs somewhere else.
  assert np.abs(blurry.astype(int) - sharp).max() > 20


def test_dynamic_scene_is_deterministic_and_middle_frame_is_sharp():
  region = _texture(64, 64, seed=5)
  a = synthetic.dynamic_scene(region, np.random.default_rng(9))
  b = synthetic.dynamic_scene(region, np.random.default_rng(9))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  sharp, blurry = a
  # The averaged frames lose detail that the middle frame has.
  grad = lambda im: np.abs(np.diff(im.astype(float), axis=1)).mean()  # noqa: E731
  assert grad(blurry) < grad(sharp)


def test_strong_families_train_with_a_larger_margin_and_are_reproducible():
  kw = dict(size=32, seed=0, num_records=50, families=("strong_shake", "dynamic"))
  src = online.OnlinePairs(**kw)
  assert src.margin == 40 and online.OnlinePairs(size=32).margin == 24
  names = set()
  for i in range(6):
    rec = src[i]
    assert rec["blur"].shape == rec["sharp"].shape == (32, 32, 3)
    np.testing.assert_array_equal(rec["blur"], online.OnlinePairs(**kw)[i]["blur"])
    names.add(rec["name"].rsplit("_", 1)[-1])
  assert names <= {"shake", "dynamic", "none"}  # "strong_shake" ends in "_shake"
  with pytest.raises(ValueError, match="tremor"):
    online.OnlinePairs(families=("tremor",))  # a held-out kind is no training family


def test_photo_dir_adds_photographs_scaled_to_the_max_side(tmp_path):
  big = _texture(200, 2000, seed=6)
  Image.fromarray(big).save(tmp_path / "wide.png")
  Image.fromarray(_texture(50, 60, seed=7)).save(tmp_path / "small.png")
  photos = online.folder_photographs(str(tmp_path), max_side=500)
  assert sorted(photos) == ["dir:small.png", "dir:wide.png"]
  assert photos["dir:wide.png"].shape == (50, 500, 3)
  assert photos["dir:small.png"].shape == (50, 60, 3)  # never enlarged
  kw = dict(size=32, procedural_fraction=0.0, num_records=10)
  plain, more = online.OnlinePairs(**kw), online.OnlinePairs(photo_dir=str(tmp_path), **kw)
  assert repr(plain) != repr(more)  # the photographs enter the data's identity
  assert len(more._names) == len(plain._names) + 2  # pylint: disable=protected-access
  with pytest.raises(FileNotFoundError, match="nowhere"):
    online.OnlinePairs(photo_dir=str(tmp_path / "nowhere"))


def test_strong_pairs_layout_and_determinism():
  photos = {"a": _texture(64, 72, seed=8), "b": _texture(60, 64, seed=9)}
  src = strong.strong_pairs(photos=photos, draws=2)
  assert len(src) == 2 * len(strong.STRONG_KINDS) * 2
  assert [src[i]["name"] for i in range(3)] == ["a/strong_shake_0.png", "a/strong_shake_1.png",
                                                "a/dynamic_0.png"]
  again = strong.strong_pairs(photos=photos, draws=2)
  for i in range(len(src)):
    np.testing.assert_array_equal(src[i]["blur"], again[i]["blur"])
    np.testing.assert_array_equal(src[i]["sharp"], again[i]["sharp"])
    assert src[i]["family"] in strong.STRONG_KINDS
  # Kinds other than dynamic keep the photograph as the target.
  np.testing.assert_array_equal(src[0]["sharp"], photos["a"])
  # Adding a kind's draws changes no other pair.
  only = strong.strong_pairs(photos={"a": photos["a"]}, kinds=("tremor",), draws=1)
  np.testing.assert_array_equal(only[0]["blur"], src[4]["blur"])
  with pytest.raises(ValueError, match="Unknown strong"):
    strong.strong_pairs(photos=photos, kinds=("shake",))


def test_strong_set_is_harder_than_the_mild_one():
  """The frozen strong set's blur is strong: its blurry PSNR is far below the mild set's."""
  def mean_psnr(src):
    out = []
    for ex in src:
      mse = np.mean((ex["blur"].astype(float) - ex["sharp"]) ** 2)
      out.append(10 * np.log10(255.0 ** 2 / mse))
    return np.mean(out)
  photos = {"rocket": online.heldout_photographs()["rocket"]}
  hard = mean_psnr(strong.strong_pairs(photos=photos, draws=1))
  mild = mean_psnr(online.heldout_pairs(photos=photos))
  assert hard < mild - 3.0


def test_synthetic_strong_source_is_test_only():
  with pytest.raises(ValueError, match="only split is 'test'"):
    pipeline.get_source("synthetic_strong", "train", data_dir="/nonexistent")
  assert "synthetic_strong" in pipeline.DATASETS


@pytest.mark.parametrize("levels,hw", [(1, (10, 14)), (2, (13, 21)), (3, (37, 45))])
def test_generator_levels_accept_any_size_and_start_as_identity(levels, hw):
  g = Generator(base_features=4, gradientnet_features=8, num_mbrbs=1, ca_reduction=4,
                norm="none", residual=True, zero_init_output=True, num_levels=levels,
                upsample="pixel_shuffle")
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, *hw, 3)), jnp.float32)
  params = g.init(jax.random.PRNGKey(0), x)
  y = g.apply(params, x)
  assert y.shape == x.shape
  np.testing.assert_allclose(y, x, atol=1e-6)
  names = set(params["params"])
  assert {f"enc_down{l}" for l in range(1, levels + 1)} <= names
  assert {f"dec_up{l}" for l in range(levels)} <= names and f"dec_up{levels}" not in names


def test_generator_two_levels_keep_the_parameter_names_of_fig2():
  g = Generator(base_features=4, gradientnet_features=8, num_mbrbs=1, ca_reduction=4)
  params = g.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  assert {k for k in params if k.startswith(("enc_", "dec_"))} == {
      "enc_conv0", "enc_norm0", "enc_down1", "enc_norm1", "enc_down2", "enc_norm2",
      "dec_up1", "dec_norm1", "dec_up0", "dec_norm0"}
  with pytest.raises(ValueError, match="num_levels"):
    Generator(num_levels=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_wiener_band_low_pass_keeps_planes_and_removes_the_finest_checkerboard():
  """experiments/wiener_bound.py --band: block means then bilinear upsampling keep
  a linear ramp away from the edges (both are exact on planes) and average a
  pixel checkerboard to zero."""
  wb = _experiment("wiener_bound")
  yy, xx = np.mgrid[0:24, 0:40].astype(np.float64)
  ramp = np.stack([0.5 * yy - 0.25 * xx + 3.0, xx, -yy], axis=-1)
  for factor in (1, 2, 4):
    out = wb.low_pass(ramp, factor)
    assert out.shape == ramp.shape
    np.testing.assert_allclose(out[factor:-factor, factor:-factor],
                               ramp[factor:-factor, factor:-factor], atol=1e-9)
  checker = ((yy + xx) % 2 * 2 - 1)[..., None]
  np.testing.assert_allclose(wb.low_pass(checker, 2), 0.0, atol=1e-12)
  with pytest.raises(SystemExit):
    wb.main(["--band", "0"])


def test_scale_passes_splits_a_coarse_to_fine_model_into_its_chain():
  """experiments/scale_passes.py: the chain to 1/1 is the model's output, the chain
  to the coarsest scale is the blurry image plus that pass's upsampled correction
  (numpy: block means, then the generator's own bilinear upsampling), and the
  one-pass comparison is the same weights at scales=1. For a coarse pass of its
  own: that pass alone is the blurry image plus its upsampled correction, the
  full pass alone the net without it, and the model their corrections added."""
  sp = _experiment("scale_passes")
  from flax_gradnet.models.generator import upsample_bilinear  # pylint: disable=g-import-not-at-top
  model = Generator(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4,
                    num_paths=2, num_recurrences=2, residual=True, scales=2)
  x = np.random.default_rng(0).uniform(-1, 1, (16, 24, 3)).astype(np.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.asarray(x[None]))["params"]
  out = sp.pass_outputs(model, params, x)
  assert list(out) == ["chain to 1/2", "chain to 1/1", "full-res pass alone"]
  np.testing.assert_allclose(out["chain to 1/1"], np.asarray(model.apply({"params": params}, x[None]))[0],
                             atol=1e-5)
  np.testing.assert_allclose(out["full-res pass alone"], np.asarray(
      model.clone(scales=1).apply({"params": params}, x[None]))[0], atol=1e-5)
  small = x.reshape(8, 2, 12, 2, 3).mean(axis=(1, 3))[None]
  coarse = np.asarray(model.clone(scales=1).apply({"params": params}, jnp.asarray(small)))
  want = x + np.asarray(upsample_bilinear(jnp.asarray(coarse - small), 2))[0]
  np.testing.assert_allclose(out["chain to 1/2"], want, atol=1e-5)
  with pytest.raises(SystemExit):  # one pass has nothing to split
    sp.main(["--model=gradnet_s_lf", "--scales=1"])
  # A coarse pass of its own (coarse_down = 2): each pass alone, and both.
  two = Generator(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4,
                  num_paths=2, num_recurrences=2, residual=True, coarse_down=2)
  p2 = {"coarse": params, **jax.tree.map(lambda a: a * 1.1, dict(params))}
  out = sp.coarse_pass_outputs(two, p2, x)
  one = model.clone(scales=1)
  full = np.asarray(one.apply({"params": {k: v for k, v in p2.items() if k != "coarse"}}, x[None]))[0]
  np.testing.assert_allclose(out["coarse pass alone"], want, atol=1e-5)  # params at 1/2, as above
  np.testing.assert_allclose(out["full-res pass alone"], full, atol=1e-5)
  np.testing.assert_allclose(out["both (the model)"], np.clip(full + want - x, -1, 1), atol=1e-5)
  # PSNR of [-1, 1] images: an offset of 0.2 is 0.1 of the range -> 20 dB.
  np.testing.assert_allclose(sp.psnr(np.zeros((4, 4, 3)) + 0.2, np.zeros((4, 4, 3))), 20.0)
  # uint8 pairs as floats in [-1, 1] (0 -> -1, 255 -> 1), cropped to the stride.
  ex = {"blur": np.zeros((5, 9, 3), np.uint8), "sharp": np.full((5, 9, 3), 255, np.uint8)}
  [(got, blurry, sharp)] = list(sp.float_pairs([ex], 4))
  assert got is ex and blurry.shape == sharp.shape == (4, 8, 3)
  assert (blurry == -1).all() and (sharp == 1).all() and blurry.dtype == np.float32


def test_blind_probe_blurs_like_a_direct_convolution(monkeypatch):
  """experiments/blind_probe.py: its 'valid' blur is scipy.ndimage's correlation
  with the flipped PSF (a direct sum, not an FFT) cropped to the valid part; its
  downsampling and PSF pool are the package's (tests/test_device_pairs.py)."""
  bp = _experiment("blind_probe", monkeypatch)
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 1, (20, 23, 3))
  psf = rng.uniform(0, 1, (5, 5))
  psf /= psf.sum()
  out = bp.blur(image, psf)
  assert out.shape == (16, 19, 3)
  for c in range(3):
    want = ndimage.correlate(image[..., c], psf[::-1, ::-1], mode="constant")[2:-2, 2:-2]
    np.testing.assert_allclose(out[..., c], want, atol=1e-10)
  assert bp.psf_pool is device_pairs.shake_pool and bp.downsample is device_pairs.downsample


def test_band_fusion_takes_the_coarse_band_from_the_half_pass_and_picks_its_threshold():
  """experiments/band_fusion.py: "full" is the model's one pass; "half" is the blurry
  image plus the upsampled correction of a pass on its 2x2 block means (numpy); "fuse"
  swaps the band a half-resolution image holds (block means, upsampled) of the full
  pass's correction for the half pass's; r is the ratio of those bands' rms; the
  threshold is the cut on r whose images gain most in sum by taking "fuse"."""
  bf = _experiment("band_fusion")
  from flax_gradnet.models.generator import upsample_bilinear  # pylint: disable=g-import-not-at-top
  model = Generator(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4,
                    num_paths=2, num_recurrences=2, residual=True)
  x = np.random.default_rng(0).uniform(-1, 1, (16, 24, 3)).astype(np.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.asarray(x[None]))["params"]
  out, r = bf.outputs(model, params, x)

  def up(a):
    return np.asarray(upsample_bilinear(jnp.asarray(a[None]), 2))[0]

  def down(a):
    return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, 3).mean(axis=(1, 3))

  c1 = np.asarray(model.apply({"params": params}, x[None]))[0] - x
  small = down(x)
  c2 = up(np.asarray(model.apply({"params": params}, small[None]))[0] - small)
  np.testing.assert_allclose(out["full"], x + c1, atol=1e-5)
  np.testing.assert_allclose(out["half"], x + c2, atol=1e-5)
  np.testing.assert_allclose(out["fuse"], x + up(down(c2)) + c1 - up(down(c1)), atol=1e-5)
  # r at half resolution: the half pass's correction in the band (the block means of
  # its upsampled self) against the block means of the full pass's.
  rms = lambda a: np.sqrt(np.mean(a ** 2))
  ch = np.asarray(model.apply({"params": params}, small[None]))[0] - small
  np.testing.assert_allclose(r, rms(down(up(ch))) / (rms(down(c1)) + 1e-6), rtol=1e-4)
  # The library's in-place version (what `deblur --scale_gate` runs), in numpy:
  # "fuse" at any threshold up to r, "full" above it.
  half_pass = lambda xh: np.asarray(model.apply({"params": params}, xh[None]))[0]
  for threshold, want in ((r * 0.99, out["fuse"]), (r * 1.01, out["full"])):
    got = out["full"].copy()
    assert np.isclose(inference.gate_half_scale(got, x, half_pass, threshold), r, rtol=1e-4)
    np.testing.assert_allclose(got, want, atol=1e-5)
  # Sorted by r from the top, the sums of (fuse - full) are 1, 1.5, -0.5, -0.4: cut at 1.5.
  assert bf.best_threshold([(1.0, -2.0), (2.0, 1.0), (0.5, 0.1), (1.5, 0.5)]) == 1.5
  assert bf.best_threshold([(1.0, -0.1), (2.0, -1.0)]) == float("inf")
  assert bf._family_of("00000007_astronaut_jit_strong_shake") == "strong_shake"  # pylint: disable=protected-access
  assert bf._family_of("00000008_dead_leaves_shake") == "shake"  # pylint: disable=protected-access


def test_gpu_blind_trains_saves_and_evaluates(tmp_path, capsys):
  """A few steps of `train` (CPU, tiny) write log.jsonl (arguments first) and
  params.msgpack (the moving average and its snapshots), and `evaluate` reads them
  back and reports the held-out set's families through the coarse pass. Under a
  size cap, the snapshots go first, then the final state drops to float16."""
  gb = _experiment("gpu_blind")
  photos = {f"train/p{i}": np.random.default_rng(i).integers(0, 256, (64, 80, 3), np.uint8) for i in range(2)}
  photos["heldout/h"] = np.random.default_rng(9).integers(0, 256, (40, 48, 3), np.uint8)
  np.savez(tmp_path / "b.npz", **photos)
  out = tmp_path / "run"
  opts = json.dumps({"base_features": 4, "gradientnet_features": 4, "num_mbrbs": 1, "ca_reduction": 4,
                     "num_paths": 2, "num_recurrences": 1})

  def train(folder, *more):  # a tiny run at 1/2 on the photographs above
    gb.main(["train", f"--builtin={tmp_path / 'b.npz'}", f"--out={folder}", "--down=2",
             "--extent", "2", "3", "--kernel_size=7", "--pool=4", "--batch=2", "--crop=8",
             f"--model_options={opts}", *more])

  train(out, "--seconds=3", "--steps_per_call=2", "--eval_every=0.5")
  lines = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
  assert lines[0]["photos"] == 2 and lines[0]["params"] > 0
  assert lines[-1]["final"] and lines[-1]["step"] >= 2
  assert all(np.isfinite(l["loss"]) for l in lines[1:])
  assert lines[0]["args"]["down"] == 2
  capsys.readouterr()
  gb.main(["evaluate", f"--run={out}", "--dataset=synthetic_strong", "--snapshots"])
  recs = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert recs[0]["state"] == "final" and len(recs) == len(lines) - 1
  assert set(recs[0]) >= {"mean", "worst", "strong_shake", "tremor", "dynamic"}
  assert all(np.isfinite(r["mean"]) for r in recs)
  from flax import serialization  # pylint: disable=g-import-not-at-top
  state = serialization.msgpack_restore((out / "params.msgpack").read_bytes())
  leaf = jax.tree_util.tree_leaves(state["final"])[0]
  assert leaf.dtype == np.float32 and len(state["snapshots"]) == len(recs) - 1
  # --init starts from a run's final weights: with a zero learning rate they stay so.
  again = tmp_path / "again"
  train(again, "--seconds=0.5", "--lr=0", "--steps_per_call=2", f"--init={out}")
  restarted = serialization.msgpack_restore((again / "params.msgpack").read_bytes())
  for a, b in zip(jax.tree_util.tree_leaves(state["final"]), jax.tree_util.tree_leaves(restarted["final"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the average's own rounding
  # Beside a shipped model: an untrained run is the identity (its last conv starts at
  # zero), so its pass gains exactly nothing and the fused output is the model's
  # minus that model's coarse band.
  zero = tmp_path / "zero"
  train(zero, "--seconds=0.2", "--lr=0", "--steps_per_call=1")
  capsys.readouterr()
  gb.main(["evaluate", f"--run={zero}", "--dataset=synthetic_strong", "--fuse_with=gradnet_s_lf"])
  rec = json.loads(capsys.readouterr().out.splitlines()[-1])
  assert rec["coarse:all"] == 0.0 and rec["worst coarse:all"] == 0.0
  assert {"full:strong_shake", "fuse:tremor", "fuse:dynamic"} <= set(rec)
  assert rec["fuse:all"] != rec["full:all"]
  # Adding a zero correction, or running the model on an image nothing corrected, is
  # the model's own pass.
  for family in ("all", "strong_shake", "tremor", "dynamic"):
    assert rec[f"add:{family}"] == rec[f"full:{family}"] == rec[f"cascade:{family}"]
  small = tmp_path / "small"
  train(small, "--seconds=0.5", "--steps_per_call=2", "--eval_every=0.1", "--max_bytes=100")
  state = serialization.msgpack_restore((small / "params.msgpack").read_bytes())
  assert not state["snapshots"] and jax.tree_util.tree_leaves(state["final"])[0].dtype == np.float16
