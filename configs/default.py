"""The paper's setting (Qi, 2022, Sec. 4.2): GradientNet GAN on GOPRO.

Launch (needs GOPRO and converted VGG19 weights, see README):

  python -m flax_gradnet.main --config=configs/default.py --workdir=workdirs/paper \
    --config.data_dir=$HOME/tensorflow_datasets --config.manual_dir=/data/gopro \
    --config.vgg_weights=vgg19_relu4_3.npz
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
  """Generator fields; names equal `flax_gradnet.models.Generator`'s fields."""
  m = ml_collections.ConfigDict()
  m.base_features = 64  # first encoder stage width (Fig. 2: n64)
  m.gradientnet_features = 64  # width inside GradientNet: not in the paper; chosen to fit Table 3's cost
  m.num_mbrbs = 10  # cascaded MBRBs in the MBRU (Sec. 3.1.2)
  m.num_paths = 3  # RGCL paths per MBRB (1 = Table 5 "w/o MBRBs")
  m.use_rgcl = True  # False = Table 5 "w/o RGCL" (a 3x3 conv + LeakyReLU per path)
  m.rgcl_kernels = "gradient"  # "gradient" (Eq. 7: 1x3 + 3x1) or "square" (a 3x3 in the RGCL)
  m.use_gradientnet = True  # False = Table 5 "w/o GradientNet"
  m.num_recurrences = 3  # r in Eq. (7)
  m.ca_reduction = 16  # squeeze-and-excitation ratio
  m.norm = "instance"  # "instance" (Fig. 2) or "none"
  # PyTorch's InstanceNorm2d defaults (the paper's framework; pix2pix/DeblurGAN
  # use them too): no learned scale/bias, eps 1e-5. flax's would be True, 1e-6.
  m.norm_affine = False  # learned per-channel scale and bias in the instance norm
  m.norm_epsilon = 1e-5  # added to the variance in the instance norm
  m.upsample = "transpose"  # "transpose" (Fig. 2) or "pixel_shuffle"
  m.num_levels = 2  # stride-2 encoder/decoder stages (Fig. 2: 2); GradientNet at 1/2**num_levels
  m.residual = False  # add the blurry input to the Tanh output (DeblurGAN); not in Fig. 2
  m.zero_init_output = False  # last conv at zero (identity start when residual=True)
  m.padding_mode = "reflect"  # "reflect" or "zeros" for stride-1 convs
  # Image channels in and out: 3 = RGB (the paper), 1 = grayscale (microscopy,
  # documents; NAFNet's img_channel). RGB data are converted to grayscale (ITU-R
  # 601 luma, as PIL's convert("L")) as they are read; the VGG19 content loss
  # repeats a grey channel three times (other counts need content_loss="pixel").
  m.channels = 3
  # Coarse-to-fine passes of the one U-Net (1 = Fig. 2's single pass; 3 = at 1/4, 1/2, 1).
  m.scales = 1
  # > 1: a coarse pass with its own weights at 1/coarse_down of the resolution, its
  # upsampled correction added to the output (Generator's docstring); 0 = none (Fig. 2).
  m.coarse_down = 0
  return m


def get_config() -> ml_collections.ConfigDict:
  """The paper's configuration."""
  config = ml_collections.ConfigDict()

  # Data.
  config.dataset = "gopro"  # gopro | gopro/blur_gamma | paired_folder | kohler | synthetic
  config.eval_dataset = ""  # dataset for periodic evaluation; "" = same as `dataset`
  # Builder options: path= for paired_folder/kohler/blur_only folders; for synthetic,
  # train_pairs_per_image, test_pairs_per_image, size, seed, image_dir (see data/builders.py).
  config.dataset_options = ml_collections.ConfigDict()
  config.eval_dataset_options = ml_collections.ConfigDict()  # the same, for eval_dataset
  config.data_dir = "~/tensorflow_datasets"  # where TFDS writes the prepared array_record files
  config.manual_dir = ""  # the user's raw data (e.g. the folder holding GOPRO_Large)
  config.crop_size = 256  # random training crops (Sec. 4.2)
  config.flips = True  # random horizontal/vertical flips (not stated in the paper; standard)
  config.rot90 = False  # random 90-degree rotations
  config.color_jitter = 0.0  # strength of a shared brightness/contrast jitter (0 = off)
  config.scale_jitter = 0.0  # random rescale range (0 = off)
  config.worker_count = 0  # grain decoding worker processes (0 = in the main process)
  config.num_eval_images = 0  # held-out images per periodic evaluation (0 = all)

  # Model.
  config.model = get_model_config()  # the generator (fields above)
  config.critic_features = 64  # PatchGAN first-layer width (pix2pix: 64)
  config.critic_layers = 3  # stride-2 layers: 3 gives 70x70 patches
  config.critic_conv_impl = "lax"  # "lax" (GPU/TPU) or "matmul" (faster WGAN-GP on XLA CPU)
  # Initial weights: "torch" = PyTorch's Conv/Linear default (kaiming_uniform with
  # a = sqrt(5): weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), a third of
  # lecun_normal's variance; the paper's framework), "lecun_normal" = flax's
  # default (biases 0), "normal_0.02" = pix2pix/DeblurGAN's N(0, 0.02), biases 0.
  # All-zero kernels (model.zero_init_output) stay zero.
  config.init_scheme = "torch"
  config.compute_dtype = "float32"  # "float32" or "bfloat16" activations; params stay float32

  # Losses, Eq. (11).
  config.content_weight = 10.0  # alpha
  config.gradient_weight = 1.0  # beta
  config.adversarial_weight = 1.0  # gamma
  config.gp_weight = 10.0  # lambda of WGAN-GP
  # "vgg" (Eq. 8), or a stand-in when no weights exist: "pixel" (MSE) or "psnr"
  # (per-image log-MSE, losses.psnr_content_loss; alpha then scales dB: 0.02-0.1).
  config.content_loss = "vgg"
  # With content_loss="psnr": added to each image's MSE (in [-1, 1] units) before the
  # log; 4e-5 caps an image at 50 dB, a larger floor (1e-3 ~ 36 dB) moves the loss
  # toward the pixel MSE and stops near-exact crops from dominating the batch.
  config.psnr_loss_floor = 4e-5
  # > 0: the losses read the output with its content below a Gaussian of this sigma
  # (pixels) taken from the blurry input (losses.keep_low_frequencies), as inference
  # applies it with inference.low_freq_sigma (set both: the periodic evaluation and
  # the tools follow config.inference). 0 = the generator's output as it is (the paper).
  config.loss_low_freq_sigma = 0.0
  # > 0 with model.scales > 1: each coarse pass's content loss against the sharp image
  # at its scale is added, times this and content_weight (SRN/MIMO-UNet's multi-scale
  # loss; steps._generator_loss). 0 = the final output alone (the paper: one scale).
  config.scale_loss_weight = 0.0
  # The coarse pass's own task (model.coarse_down > 1; data/device_pairs.py; not in
  # the paper): each generator step also draws `batch` pairs on the device, crops of
  # the training photographs (built-in ones never held out, plus
  # dataset_options.photo_dir) at 1/f for each f of `photo_scales`, under camera
  # shake of `extent` px at that scale, and adds weight * content_weight * the
  # content loss of the coarse net alone on them. weight 0 = off.
  config.coarse_task = ml_collections.ConfigDict()
  config.coarse_task.weight = 0.0  # 0 = off
  config.coarse_task.batch = 32  # pairs per generator step, split over the devices (a multiple)
  config.coarse_task.crop = 48  # their side, at the coarse scale
  config.coarse_task.photo_scales = (3, 4, 5, 6)  # each photograph area-downsampled by each
  config.coarse_task.extent = (0.5, 15.0)  # shake extent range, px at the coarse scale
  config.coarse_task.kernel_size = 25  # PSF window; >= the largest extent's support
  config.coarse_task.pool = 2000  # shakes drawn once (x8 rotations and flips)
  config.coarse_task.seed = 0  # of the shake pool (the pairs follow config.seed and the step)
  config.coarse_task.noise = 0.005  # Gaussian noise std up to this (fraction of full scale)
  config.coarse_task.p_sharp = 0.15  # share of pairs left unblurred (noise only)
  config.coarse_task.p_dynamic = 0.0  # share of pairs with a moving object (blur varies)
  config.coarse_task.object_motion = (2.0, 15.0)  # its straight motion, px at the coarse scale
  config.coarse_task.augment = True  # each crop turned by a random rotation or flip
  config.coarse_task.blur = "conv"  # "conv" (one grouped convolution; GPU/TPU) or "fft" (CPU)
  # The first steps train the coarse net alone on its task (no batch read, the rest of
  # the generator held, its Adam and schedule starting after them); part of
  # num_train_steps. 0 = none; a resumed run may change it, but not to or from 0.
  config.coarse_task.warmup_steps = 0
  # Shake extent range (px at the coarse scale) of the warm-up's pairs; () = `extent`.
  config.coarse_task.warmup_extent = ()
  config.vgg_weights = ""  # converted VGG19 file (python -m flax_gradnet.convert_vgg19)
  config.vgg_layer = "relu4_3"  # feature layer of Eq. (8)
  config.adversarial_warmup_steps = 0  # generator steps with gamma = 0 before the GAN starts

  # Optimisation (Sec. 4.2).
  config.critic_steps = 5  # critic updates per generator update
  # What the critic updates read: "same" = the generator's batch and one fake
  # batch for all of them (DeblurGAN's trainer, which the paper's setup follows;
  # the paper does not say); "fresh" = a new real batch and new fakes per
  # critic update (WGAN-GP's Algorithm 1). Epochs and num_train_steps count
  # generator updates either way; "fresh" reads critic_steps + 1 batches per step.
  config.critic_batches = "same"
  config.critic_unroll = True  # unroll the 5 critic updates in the compiled step (faster on CPU)
  config.learning_rate = 1e-4  # both networks
  config.critic_learning_rate = 1e-4  # the critic's; same schedule, per generator step
  config.lr_schedule = "constant"  # "constant" or "cosine" (decays to 0 at num_train_steps)
  config.b1 = 0.5  # Adam's beta1, both networks (the paper's GAN setting)
  config.b2 = 0.999  # Adam's beta2, both networks
  # The global batch: all devices of all processes together (the paper: 4, on
  # one GPU). Split evenly over the devices (an error names the numbers if it
  # does not divide); scale learning_rate with it when you change it.
  config.batch_size = 4
  # 150 epochs of 2103 GOPRO pairs at batch 4 (per generator update).
  config.num_epochs = 150
  config.num_train_steps = -1  # -1: derive from num_epochs and the train split's size
  # > 0: also stop (checkpoint and evaluate as at the last step) once training has run
  # this many seconds, counted from this command's first step (compilation included); a
  # resumed run gets the budget again. The learning-rate schedule stays a function of
  # the step over num_train_steps (compiled steps cannot read a clock; resuming stays
  # exact): for a cosine schedule to end with the budget, set num_train_steps to the
  # steps it allows (the stop's warning says how many were made). 0 = no time limit.
  config.train_seconds = 0.0

  # Loop.
  config.seed = 0  # initial weights and the order, crops and flips of the training data
  config.log_every_steps = 100  # write the mean training losses every this many steps
  config.eval_every_steps = 5000  # held-out PSNR/SSIM and image grids; also at the last step
  config.checkpoint_every_steps = 2000  # also saved at the last step and on SIGTERM
  config.max_checkpoints_to_keep = 3  # the newest are kept, older ones deleted
  # Also keep the checkpoint with the best held-out PSNR of the periodic evaluation
  # (of the EMA weights when ema_decay > 0), whatever max_checkpoints_to_keep; every
  # evaluated step is then checkpointed too. The inference tools take it with --step=best.
  config.keep_best = True
  # Moving average of the generator's weights (BasicSR's ema_decay, e.g. 0.999): after
  # every generator update ema = decay * ema + (1 - decay) * weights. Checkpointed,
  # evaluated beside the raw weights (eval_ema/ in TensorBoard), and what evaluate,
  # deblur, export and pretrained load unless --weights=raw. 0 = off (not in the paper).
  config.ema_decay = 0.0
  config.num_image_summaries = 3  # blurry | deblurred | sharp grids written per evaluation
  config.eval_crop_border = 0  # pixels ignored at the border by PSNR/SSIM
  config.profile_steps = 0  # > 0: trace this many steps after the first 10 (TensorBoard profile)
  config.initialize_distributed = False  # call jax.distributed.initialize() (multi-host)

  # Fine-tuning: start the generator from trained weights instead of at random.
  # A training workdir ("path/to/workdir", or "path/to/workdir@STEP"), or the
  # name of a shipped model (flax_gradnet.pretrained.available()); "" = random
  # init. Only the generator's weights are taken (fresh optimizer, step 0, new
  # critic); a workdir that already holds a checkpoint resumes that instead.
  config.init_from = ""
  config.init_strict = True  # refuse missing, unexpected or reshaped weights (else keep init for those)

  # Inference: how this model deblurs (`inference.Options`), recorded in the
  # workdir's config.json. `deblur`, `evaluate`, `export` and the demo read it
  # (`inference.restore`; their flags override it), and so does the periodic
  # evaluation, so its last numbers are `evaluate --workdir`'s default ones.
  # These are the paper's protocol: one pass over the whole image, the output as
  # it is. Tiles and memory budgets are the machine's, not the model's: not here.
  config.inference = ml_collections.ConfigDict()
  config.inference.self_ensemble = "off"  # "off" (one pass), "mean" (x8 flips/transposes) or "shrink"
  # > 0: keep the input's frequencies below a Gaussian of this sigma (pixels):
  # the step a config trained with loss_low_freq_sigma was trained through.
  config.inference.low_freq_sigma = 0.0
  config.inference.local_stats = 0  # test-time local statistics over WxW boxes (0 = off; -1 = crop_size)
  # > 0: the coarse band from a pass at half resolution where it corrects this many
  # times more than the full one (inference.gate_half_scale; not in the paper). 0 = off.
  config.inference.scale_gate = 0.0
  return config
