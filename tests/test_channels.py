"""Any channel count: `model.channels` through the generator,
losses, metrics, data, the CLIs and export; grayscale end to end through the CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.metrics
from PIL import Image

import tiny_config
from flax_gradnet import (deblur, evaluate, evaluation, export, image_io, inference, losses,
                          metrics, pretrained, vgg)
from flax_gradnet.data import pipeline
from flax_gradnet.models import Generator, PatchCritic, generator_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4)


@pytest.fixture
def make_model(random_params):
  """`make_model(channels)` -> (a tiny Generator of `channels`, random parameters)."""

  def make(channels=1):
    model = Generator(**TINY, channels=channels)
    return model, random_params(model, jnp.zeros((1, 16, 16, channels)))["params"]

  return make


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("channels", [1, 4])
def test_generator_keeps_the_channel_count(make_model, channels):
  model, params = make_model(channels)
  x = jax.ShapeDtypeStruct((2, 13, 18, channels), jnp.float32)
  assert jax.eval_shape(model.apply, {"params": params}, x).shape == (2, 13, 18, channels)
  assert params["enc_conv0"]["conv"]["kernel"].shape[2] == channels
  assert params["out_conv"]["conv"]["kernel"].shape[-1] == channels
  # The critic infers its input width.
  critic = PatchCritic(features=4, num_layers=2)
  scores, variables = jax.eval_shape(critic.init_with_output, jax.random.key(0), x)
  assert scores.shape[0] == 2 and variables["params"]["conv_0"]["kernel"].shape[2] == channels


def test_generator_refuses_another_channel_count(make_model):
  model, params = make_model(1)
  with pytest.raises(ValueError, match=r"with 1 channel \(model.channels\), got shape"):
    jax.eval_shape(model.apply, {"params": params}, jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match="3 channels"):  # the default, as old checkpoints
    jax.eval_shape(Generator(**TINY).init, jax.random.key(0), jnp.zeros((1, 16, 16, 1)))


def test_configs_without_the_field_build_rgb_models():
  config = tiny_config.get_config()
  assert config.model.channels == 3
  del config.model["channels"]  # a config.json written before the field existed
  assert generator_from_config(config).channels == 3
  config.model.channels = 1
  assert generator_from_config(config).channels == 1


# ---------------------------------------------------------------- losses and metrics


def test_vgg_content_loss_of_grey_equals_its_rgb_replication():
  rng = np.random.default_rng(0)
  params = {}
  for conv in vgg.convs_up_to("relu2_1"):
    cin, cout = vgg.CONV_IN_CHANNELS[conv], vgg.CONV_WIDTH[conv]
    params[conv] = {"kernel": rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)),
                    "bias": rng.normal(0, 0.1, cout)}
  variables = jax.tree.map(lambda a: np.asarray(a, np.float32), {"params": params})
  fn = vgg.make_feature_fn(variables, "relu2_1")
  pred, target = (jnp.asarray(rng.uniform(-1, 1, (2, 12, 12, 1)), jnp.float32) for _ in range(2))
  rgb = lambda x: jnp.repeat(x, 3, axis=-1)
  grey = losses.content_loss(fn, pred, target)
  np.testing.assert_allclose(grey, losses.content_loss(fn, rgb(pred), rgb(target)), rtol=1e-6)
  assert float(grey) > 0
  with pytest.raises(ValueError, match="RGB .3-channel. or grayscale"):
    losses.content_loss(fn, jnp.zeros((1, 8, 8, 2)), jnp.zeros((1, 8, 8, 2)))


def test_steps_refuse_the_vgg_loss_for_other_channel_counts():
  from flax_gradnet import steps  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  config.content_loss, config.model.channels = "vgg", 4
  with pytest.raises(ValueError, match="model.channels=4.*content_loss=pixel"):
    steps.check_content_loss(config)


def test_training_refuses_counts_the_datasets_cannot_feed(tmp_path):
  from flax_gradnet import config_checks  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  config.model.channels = 4
  with pytest.raises(ValueError, match="model.channels=4.*1 \\(grey\\) or 3"):
    config_checks.preflight(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
  config.model.channels = 1
  config_checks.preflight(config, str(tmp_path / "w"))  # grey: accepted


def test_psnr_ssim_of_grey_equal_scikit_image():
  rng = np.random.default_rng(0)
  a = skimage.data.camera()[100:160, 200:270]
  b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
  want_ssim = skimage.metrics.structural_similarity(
      a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
      channel_axis=None)
  want_psnr = skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)
  np.testing.assert_allclose(float(metrics.ssim(a[..., None], b[..., None])), want_ssim, atol=1e-4)
  np.testing.assert_allclose(float(metrics.psnr(a[..., None], b[..., None])), want_psnr, atol=1e-3)
  assert "grayscale" in metrics.protocol_string(False, 0, channels=1)


# ---------------------------------------------------------------- data and image files


def test_grey_conversion_equals_pil():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (37, 41, 3), np.uint8)
  grey = image_io.to_channels(rgb, 1)
  assert grey.shape == (37, 41, 1) and grey.dtype == np.uint8
  want = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
  assert np.abs(grey[..., 0].astype(int) - want).max() <= 1  # equal in fact (Pillow's L24)
  levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=-1)
  np.testing.assert_array_equal(image_io.to_channels(levels, 1)[..., 0], levels[..., 0])
  np.testing.assert_array_equal(image_io.to_channels(grey, 3), np.repeat(grey, 3, axis=-1))
  with pytest.raises(ValueError, match="cannot convert a 3-channel image to 2"):
    image_io.to_channels(rgb, 2)


def test_grey_files_read_and_write(tmp_path):
  rgb = skimage.data.chelsea()[:20, :30]
  Image.fromarray(rgb).save(tmp_path / "c.png")
  grey = image_io.read_image(tmp_path / "c.png", channels=1)
  np.testing.assert_array_equal(grey[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
  image_io.write_image(str(tmp_path / "g.png"), grey)
  with Image.open(tmp_path / "g.png") as im:
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), grey[..., 0])


def test_pipelines_emit_grey_pairs():
  rng = np.random.default_rng(0)
  source = [{"blur": rng.integers(0, 256, (24, 28, 3), np.uint8),
             "sharp": rng.integers(0, 256, (24, 28, 3), np.uint8),
             "name": f"{i}".encode()} for i in range(4)]
  it = pipeline.create_train_iterator(source, crop_size=16, per_device_batch_size=2,
                                      num_local_devices=1, seed=0, shard_index=0, shard_count=1,
                                      channels=1)
  batch = next(it)
  it.close()
  assert batch["blur"].shape == batch["sharp"].shape == (1, 2, 16, 16, 1)
  ex = next(pipeline.eval_iterator(source, channels=1))
  np.testing.assert_array_equal(ex["sharp"], image_io.to_channels(source[0]["sharp"], 1))


# ---------------------------------------------------------------- inference and export


def test_deblur_image_converts_to_the_model_channels(make_model):
  model, params = make_model(1)
  fn = inference.make_deblur_fn(model, params)
  assert fn.channels == 1
  rgb = skimage.data.chelsea()[:20, :24]
  out = inference.deblur_image(fn, rgb, tile=12, tile_overlap=4)  # one compile: 12x12 tiles
  assert out.shape == (20, 24, 1) and out.dtype == np.uint8
  grey = image_io.to_channels(rgb, 1)
  np.testing.assert_array_equal(out, inference.deblur_image(fn, grey, tile=12, tile_overlap=4))


def test_export_takes_the_model_channels(make_model, tmp_path):
  model, params = make_model(1)
  path = tmp_path / "g.jaxexport"
  path.write_bytes(export.export_generator(model, params, height=16, width=20, platforms=("cpu",)))
  fn = export.load_exported(str(path))
  assert fn.meta["channels"] == 1
  y = fn(jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 16, 20, 1)), jnp.float32))
  assert y.shape == (1, 16, 20, 1) and np.isfinite(np.asarray(y)).all()
  with pytest.raises(ValueError, match=r"\[N, H, W, 1\]"):
    fn(jnp.zeros((1, 16, 20, 3)))


# ---------------------------------------------------------------- end to end


def _pairs(folder, n=2, size=(48, 48)):
  """A paired folder (test/input, test/target) of RGB crops and their box blur."""
  photo = skimage.data.astronaut()
  for i in range(n):
    sharp = photo[60 * i:60 * i + size[0], 100:100 + size[1]]
    blur = sharp.astype(np.float32)
    blur = ((blur + np.roll(blur, 1, 1) + np.roll(blur, -1, 1)) / 3).round().astype(np.uint8)
    for sub, image in (("input", blur), ("target", sharp)):
      (folder / "test" / sub).mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(folder / "test" / sub / f"{i}.png")


def test_grayscale_end_to_end_through_the_cli(tmp_path, capsys):
  workdir, data_dir = tmp_path / "w", tmp_path / "tfds"
  steps = 2
  flags = [f"--workdir={workdir}", "--config=tests/tiny_config.py", f"--config.data_dir={data_dir}",
           "--config.model.channels=1", f"--config.num_train_steps={steps}",
           f"--config.eval_every_steps={steps}", f"--config.checkpoint_every_steps={steps}",
           f"--config.log_every_steps={steps}", "--config.num_eval_images=1",
           "--config.num_image_summaries=1", "--config.critic_steps=1"]
  # The session's compilation cache (conftest): deblur and evaluate below read the
  # generator that training's evaluation compiled for the 48x48 synthetic images.
  cache = dict(JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  r = subprocess.run([sys.executable, "-m", "flax_gradnet.main", *flags], cwd=ROOT,
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu", **cache))
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((workdir / "config.json").read_text())["model"]["channels"] == 1

  Image.fromarray(skimage.data.chelsea()[:48, :48]).save(tmp_path / "cat.png")  # RGB input
  # The shrunk ensemble and the input's low frequencies on one channel (given
  # explicitly: this workdir records no inference options).
  assert deblur.main([f"--workdir={workdir}", f"--output_dir={tmp_path / 'out'}",
                      "--self_ensemble=shrink", "--low_freq_sigma=32",
                      str(tmp_path / "cat.png")]) == 0
  with Image.open(tmp_path / "out" / "cat.png") as im:
    assert im.mode == "L" and im.size == (48, 48)

  _pairs(tmp_path / "pairs")
  capsys.readouterr()
  assert evaluate.main([f"--workdir={workdir}", "--dataset=paired_folder",
                        f"--path={tmp_path / 'pairs'}", f"--data_dir={data_dir}",
                        f"--output_dir={tmp_path / 'eval'}", "--no-progress"]) == 0
  assert "PSNR/SSIM on grayscale" in capsys.readouterr().out
  assert evaluate.main([f"--workdir={workdir}", "--dataset=paired_folder", "--y_channel",
                        f"--path={tmp_path / 'pairs'}", f"--output_dir={tmp_path / 'y'}"]) == 2
  assert "--y_channel measures the BT.601 luma of RGB" in capsys.readouterr().err
  summary = json.loads((tmp_path / "eval" / evaluation.SUMMARY_FILE).read_text())
  assert summary["num_images"] == 2 and np.isfinite(summary["means"]["psnr"])
  outputs = sorted((tmp_path / "eval" / evaluation.OUTPUT_DIR).rglob("*.png"))
  assert outputs
  with Image.open(outputs[0]) as im:
    assert im.mode == "L"

  # Packed as a shipped model: loads as grayscale, its reference output is grey.
  pretrained.pack(str(workdir), "grey", root=str(tmp_path / "models"))
  module, params = pretrained.load("grey", root=str(tmp_path / "models"))
  image, reference = pretrained.reference_pair("grey", root=str(tmp_path / "models"))
  assert module.channels == 1 and image.shape == (48, 64, 3) and reference.shape == (48, 64, 1)
  np.testing.assert_allclose(pretrained.reference_output(module, params, image), reference,
                             atol=1e-6)
