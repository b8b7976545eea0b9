"""`gradnet_small`: the paper's generator at a CPU-trainable size, trained from
scratch on on-the-fly synthetic blur that includes the paper's task.

  bash experiments/fetch_photos.sh ~/flax_gradnet_photos     # optional: 27 more photographs
  python -m flax_gradnet.main --config=configs/gradnet_small.py --workdir=workdirs/small \
    --config.dataset_options.photo_dir=~/flax_gradnet_photos
  # on a GPU/TPU add: --config.coarse_task.blur=conv --config.coarse_task.batch=256

Resumable: run the same command again after a stop and it continues from the
last checkpoint (every 250 steps). The same config runs on an accelerator.

Architecture: the paper's (RGCL Eq. 7, MBRB Eqs. 5-6, GradientNet Eqs. 2-4 at
the bottleneck of a U-Net), at the size of the earlier small models
(16/32/64 channels, GradientNet at 1/4 resolution with 32 channels and 4
MBRBs), with
  - a coarse pass of its own (`model.coarse_down = 4`): a second U-Net of the
    same shape, its own weights, on the image at 1/4 of the resolution, its
    upsampled correction added to the full-resolution pass's output (Generator's
    docstring; 1/16 of a pass more). At 1/4 a 25-60 px shake is 6-15 px, within
    that net's reach; a Wiener filter given the true PSF keeps its gain on the
    strong-blur set when its correction is seen at 1/4 (`python
    experiments/wiener_bound.py --band 1 2 4 8`);
  - the coarse net's own task (`config.coarse_task`, data/device_pairs.py): each
    step also draws 32 pairs of 48 px at its scale *on the device* (crops of the
    training photographs at 1/3-1/6 under Boracchi-Foi shake of 0.5-15 px there,
    i.e. 2-60 px at full resolution; 15% unblurred; random rotations and flips)
    and adds their content loss. Earlier versions of this config (docs/models.md,
    runs 1-4) ran coarse passes with the full pass's weights, trained by the
    full-resolution loss alone: after 3,000 steps their coarse pass gained
    +0.02 dB. The coarse task alone (experiments/gpu_blind.py, 90 s on an H200
    then 25 min on the CPU over the whole extent range) gave a coarse net that,
    added to the shipped `gradnet_s_lf`, took `strong_shake` from +0.11 to
    +0.84 dB and left the mild held-out sets as they were;
  - a coarse warm-up (`coarse_task.warmup_steps = 8000`): the run's first 8,000
    steps train the coarse net alone on its task (`steps.coarse_warmup_step`:
    no training batch read, the rest of the generator held, its Adam and its
    cosine schedule starting after them), on shake of 5-15 px at 1/4 only
    (`coarse_task.warmup_extent`: the strong families' 20-60 px). Such a step
    costs a quarter of a whole one on the 2-core CPU (0.39 s against 1.7 s),
    and the coarse net carries the strong blur (docs/models.md, runs 6 and 7);
  - no instance norm, a residual output, a zero-initialised last conv (the
    untrained net is the identity: it starts at the blurry PSNR, and tiles see
    the same function as whole images), zero padding and pixel-shuffle
    upsampling (each about halves the step time on XLA CPU).
Data (`synthetic_online` v3): 256-px pairs; sharp images from dead-leaves
scenes (30%) and the training photographs (the built-in ones never held out,
plus `photo_dir`), photographs at 0.35-2x their scale, half of them given a
random look; blur from the six mild families and, half of the draws, the
paper's task (camera shake of 20-60 px extent, GOPRO-style dynamic scenes);
30% of sharp images softened first, 15% of records unblurred; sensor noise.
Losses (the lessons of docs/models.md's history): the per-image log-MSE
(alpha 0.1 dB, floor 1e-3) read through the low-frequency step of sigma 32 px
(what `deblur` returns with this model's recorded settings), no gradient
loss, no adversarial term. Adam 1e-3 (beta1 0.9), batch 4, 28,000 steps (the
warm-up, then 20,000 of the whole generator), cosine decays over each net's
steps (the coarse net's 28,000, the rest's 20,000); the generator shipped is
the moving average of its weights (decay 0.999). On the 2-core CPU a whole step takes about 2 s: the run is many
hours of background training, resumed where it stopped.
"""

from configs import default

# Half of the blurred records from the paper's task: the mild six once each,
# then strong shake and dynamic scenes three times each (one draw in twelve
# per mild family, three in twelve per strong one).
FAMILIES = ("shake", "linear", "frames", "defocus", "gaussian", "mix",
            "strong_shake", "strong_shake", "strong_shake", "dynamic", "dynamic", "dynamic")


def get_config():
  config = default.get_config()
  config.dataset = "synthetic_online"
  config.eval_dataset = "synthetic_strong"  # periodic evaluation: the strong-blur held-out set
  o = config.dataset_options
  o.size = 256  # generated pair side (= crop_size: no crop needed)
  o.seed = 0  # data seed: same seed, same pairs
  o.families = FAMILIES  # blur families, drawn uniformly from this tuple
  o.procedural_fraction = 0.3  # dead-leaves share of the sharp images
  o.p_unblurred = 0.15  # share of records with no blur (noise only)
  o.p_soft = 0.3  # share of sharp images softened first (soft targets)
  o.photo_scale = (0.35, 2.0)  # photographs' scale: down, own, enlarged to 2x
  o.photo_jitter = 0.5  # share of photograph records given a random look
  o.photo_dir = ""  # folder of more photographs (experiments/fetch_photos.sh); "" = built-in only
  config.crop_size = 256
  config.rot90 = True

  m = config.model
  m.base_features = 16
  m.num_levels = 2
  m.gradientnet_features = 32
  m.num_mbrbs = 4
  m.scales = 1  # one full-resolution pass ...
  m.coarse_down = 4  # ... plus a coarse net of its own at 1/4, its correction added
  m.norm = "none"
  m.upsample = "pixel_shuffle"
  m.residual = True
  m.zero_init_output = True
  m.padding_mode = "zeros"
  config.init_scheme = "lecun_normal"
  config.critic_features = 16  # unused while adversarial_weight = 0 (kept small)
  config.critic_conv_impl = "matmul"

  t = config.coarse_task  # the coarse net's own task: pairs drawn on the device
  t.weight = 1.0  # its content loss, as heavy as the output's
  t.batch = 32  # pairs a step at 1/4 (on an accelerator: 256, as the H200 runs)
  t.crop = 48  # px at 1/4 (192 px of the photograph)
  t.photo_scales = (3, 4, 5, 6)  # each photograph at four scales: more content at 1/4
  t.extent = (0.5, 15.0)  # shake of 2-60 px at full resolution, mild to strong
  t.kernel_size = 25  # PSF window at 1/4
  t.p_sharp = 0.15  # unblurred pairs: the net learns to leave sharp content alone
  t.augment = True  # random rotations and flips of each crop
  t.blur = "fft"  # FFTs: faster than a grouped convolution on XLA's CPU backend
  t.warmup_steps = 8000  # the coarse net alone first (a quarter of a whole step each) ...
  t.warmup_extent = (5.0, 15.0)  # ... on the strong families' shake (20-60 px at full scale)

  config.content_loss = "psnr"  # per-image log-MSE (losses.psnr_content_loss)
  config.content_weight = 0.1  # alpha, in dB
  config.psnr_loss_floor = 1e-3  # per-image MSE floor in [-1, 1] units: ~36 dB
  config.loss_low_freq_sigma = 32.0  # the losses read the output through the low-frequency step
  config.inference.low_freq_sigma = 32.0  # and inference applies the same step (one pass)
  config.gradient_weight = 0.0  # no L1 on gradients (Eq. 9 off)
  config.adversarial_weight = 0.0  # no GAN term
  config.learning_rate = 1e-3
  config.b1 = 0.9
  config.lr_schedule = "cosine"
  config.batch_size = 4
  config.num_train_steps = 28000  # the warm-up's 8,000, then 20,000 of the whole generator
  config.ema_decay = 0.999  # evaluate, ship and restore the moving average of the weights

  config.keep_best = False  # ship the last step: no choice made on the held-out set
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 250
  return config
