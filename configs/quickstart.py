"""A few minutes on 2 CPU cores: the built-in synthetic motion-blur data.

  python -m flax_gradnet.main --config=configs/quickstart.py --workdir=workdirs/quick

Departures from the paper (configs/default.py), each for a reason measured on a
2-core CPU (README, "The quickstart recipe and make demo"):
  - data: synthetic blur over the 11 training photographs scikit-image and
    scikit-learn ship (3 others held out), since GOPRO cannot be downloaded
    here; flips, 90-degree rotations, colour and scale jitter;
  - a narrow network (16/32 channels, 2 MBRBs), 128x128 crops, batch 8;
  - no instance norm and an identity start (residual output, last conv at
    zero): the untrained net returns its input, i.e. starts at the blurry PSNR
    (with instance norm the same recipe stayed below the blurry input);
  - pixel-shuffle upsampling and a matmul critic: cheaper to differentiate on
    XLA CPU;
  - content loss: the pixel-MSE stand-in (no VGG19 weights can be downloaded),
    weighted 100 instead of 10: MSE of [-1, 1] pixels is ~10x smaller than
    VGG feature MSE, and at weight 10 the L1 gradient term dominated and
    held-out PSNR fell (README);
  - 300 steps, lr 2e-4 with cosine decay: on ~11 photographs held-out PSNR
    peaks after a few hundred steps and then falls as the net learns
    training textures;
  - the WGAN-GP term (5 critic updates per step, as the paper) only in the
    last 50 steps, with weight 0.01, after a content/gradient warm-up as
    ESRGAN-style trainers do.
"""

import importlib.util
import pathlib

# Loaded by path, so the config works from any working directory and script.
_spec = importlib.util.spec_from_file_location(
    "flax_gradnet_configs_default", pathlib.Path(__file__).with_name("default.py"))
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)


def get_config():
  config = default.get_config()
  config.dataset = "synthetic"
  config.data_dir = "~/tensorflow_datasets"
  config.crop_size = 128
  config.rot90 = True
  config.color_jitter = 0.1
  config.scale_jitter = 0.25

  m = config.model
  m.base_features = 16
  m.gradientnet_features = 32
  m.num_mbrbs = 2
  m.norm = "none"
  m.upsample = "pixel_shuffle"
  m.residual = True
  m.zero_init_output = True
  config.critic_features = 16
  config.critic_conv_impl = "matmul"

  config.content_loss = "pixel"
  config.content_weight = 100.0
  config.adversarial_weight = 0.01
  config.adversarial_warmup_steps = 250
  config.learning_rate = 2e-4
  config.critic_learning_rate = 2e-4
  config.lr_schedule = "cosine"
  config.per_device_batch_size = 8
  config.num_train_steps = 300

  config.log_every_steps = 25
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.num_image_summaries = 3
  return config
