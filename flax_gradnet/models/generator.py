"""GradientNet (Eqs. 2-4) and the U-Net generator of Fig. 2 (Qi, 2022)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_gradnet.models.ablations import GENERATOR_ABLATIONS
from flax_gradnet.models.layers import (MBRB, ChannelAttention, Conv3x3, ConvWeights,
                                        LocalInstanceNorm, PaddedConv,
                                        conv_over_parts, conv_transpose_3x3_s2, pad_same,
                                        residual_add)

Dtype = Any


class GradientNet(nn.Module):
  """PRFTM + MBRU at the generator's bottleneck (Sec. 3.1.2).

      U_{-1} = f_FE1(U_{n-1}),  U_0 = f_FE2(U_{-1})             (Eqs. 2-3, PRFTM)
      U_n = CA(MBRB_n(... MBRB_1(U_0)))                           (Eq. 4, MBRU)

  The paper does not say how the MBRU's output returns to the encoder's width.
  Here a 3x3 conv (`out_proj`) maps it back and the GradientNet input is added
  (a global residual, as in EDSR/RCAN-style residual-in-residual bodies), so a
  GradientNet whose last conv is near zero starts close to the identity.

  Attributes:
    features: channels inside GradientNet (PRFTM output, MBRB width).
    num_mbrbs: cascaded MBRBs (10 in the paper).
    num_paths: RGCL paths per MBRB (3; 1 = "w/o MBRBs" ablation).
    use_rgcl: False = "w/o RGCL" ablation (plain 3x3 convs in the paths).
    rgcl_kernels: "gradient" (Eq. 7) or "square" (RGCLs with a 3x3 conv in
      place of the 1x3 + 3x1 pair).
    stats_window: 0 = the paper's global channel-attention pooling; > 0 = the
      side (in GradientNet's own pixels) of the local pooling window of every
      channel attention inside (test-time local statistics, layers.local_mean).
  """

  features: int = 64
  num_mbrbs: int = 10
  num_paths: int = 3
  use_rgcl: bool = True
  rgcl_kernels: str = "gradient"
  num_recurrences: int = 3
  ca_reduction: int = 16
  stats_window: int = 0
  padding_mode: str = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    skip = x
    x = jnp.asarray(x, self.dtype)
    common = dict(padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
    u = Conv3x3(self.features, name="prftm_fe1", **common)(x)  # Eq. (2)
    u = Conv3x3(self.features, name="prftm_fe2", **common)(u)  # Eq. (3)
    # The MBRB residual stream in float32 even with bf16 compute (residual_add).
    u = u.astype(jnp.promote_types(u.dtype, jnp.float32))
    for i in range(self.num_mbrbs):  # Eq. (4): cascaded MBRBs
      u = MBRB(num_paths=self.num_paths, use_rgcl=self.use_rgcl, rgcl_kernels=self.rgcl_kernels,
               num_recurrences=self.num_recurrences, ca_reduction=self.ca_reduction,
               stats_window=self.stats_window, name=f"mbrb_{i}", **common)(u)
    u = ChannelAttention(self.ca_reduction, self.stats_window, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="mbru_ca")(u)
    u = Conv3x3(x.shape[-1], name="out_proj", **common)(u)
    return residual_add(u, skip)


class Generator(nn.Module):
  """The U-Net generator of Fig. 2 with GradientNet at its bottleneck.

  Encoder: 7x7 conv (base), 3x3 stride-2 conv (2*base), 3x3 stride-2 conv
  (4*base), each followed by instance norm and ReLU. Bottleneck: GradientNet.
  Decoder: two x2 upsamplings (4*base -> 2*base -> base) with instance norm and
  ReLU, each concatenated with the encoder feature of the same size (U-Net skip
  connections), then a 7x7 conv to `channels` channels (RGB) and Tanh.

  With `residual=True` the blurry input is added to the Tanh output and the sum
  clipped to [-1, 1], as DeblurGAN's `learn_residual` does; the paper's Fig. 2
  shows no such connection, so the paper config keeps it off.

  `num_levels` (not in the paper, which has 2) sets the number of stride-2
  encoder stages: stage l has 2**l * base channels and a decoder stage of the
  same width; GradientNet sits at 1/2**num_levels resolution. A third stage
  multiplies the bottleneck's receptive field by two for a small cost (the
  added convolutions run on an eighth of the pixels), so the 25-60 px blurs of
  dynamic scenes fall inside it.

  Any H x W is accepted: the input is reflect-padded to a multiple of
  2**num_levels (the stride-2 convolutions) and the output cropped back.

  `scales` > 1 (not in the paper) runs the same U-Net, one set of weights,
  coarse to fine, as scale-recurrent deblurring nets do (Nah et al. 2017, Tao
  et al. 2018): first on the image area-downsampled by 2**(scales-1), then at
  each finer scale on the blurry image at that scale plus the bilinearly
  upsampled correction (output - input) of the pass below. A 40-px shake is 10
  px at 1/4 scale, where the same net removes it as mild blur, and a Wiener
  filter given the true PSF keeps its gain when its correction is low-passed to
  1/4 of the resolution (experiments/wiener_bound.py --band): what strong blur
  leaves recoverable lies at low frequencies. Cost: 1 + 1/4 + 1/16 + ... passes.

  `coarse_down` = f >= 2 (not in the paper) adds a coarse pass with *its own*
  weights: a second U-Net of the same fields (submodule "coarse") on the image
  area-downsampled by f, whose correction, bilinearly upsampled, is added to
  the full-resolution output: y = G(x) + up(G_c(down x) - down x), clipped to
  [-1, 1]. Where `scales` shares one set of weights between the scales (and its
  coarse passes learnt almost nothing from the full-resolution loss alone,
  docs/models.md), this pass can be trained at its own scale on pairs made
  there (`data.device_pairs`, config.coarse_task), and added it does not
  disturb the full pass where it has nothing to correct (the H200 runs of
  docs/models.md: strong shake +0.11 -> +0.84 dB, mild blur unchanged).
  `__call__(x, coarse_only=True)` runs the coarse net alone on `x` (its own
  scale). Cost: 1/f**2 of a pass more.

  Attributes:
    base_features: channels of the first encoder stage (64).
    gradientnet_features: channels inside GradientNet.
    use_gradientnet: False = "w/o GradientNet" ablation (identity bottleneck).
    norm: "instance" (the paper) or "none".
    norm_affine, norm_epsilon: InstanceNorm's learned scale/bias and epsilon.
    upsample: "transpose" (3x3 stride-2 transposed conv, as Fig. 2) or
      "pixel_shuffle" (3x3 conv to 4x channels + depth-to-space; much cheaper
      to differentiate on XLA CPU).
    zero_init_output: initialise the last conv at zero; with `residual=True`
      the untrained net is then exactly the identity.
    channels: image channels in and out (3 = RGB, 1 = grayscale; NAFNet's
      `img_channel`). Only the first and the last conv depend on it.
  """

  base_features: int = 64
  gradientnet_features: int = 64
  num_mbrbs: int = 10
  num_paths: int = 3
  use_rgcl: bool = True
  rgcl_kernels: str = "gradient"
  use_gradientnet: bool = True
  num_recurrences: int = 3
  ca_reduction: int = 16
  norm: str = "instance"
  # InstanceNorm's affine scale/bias and epsilon. These defaults are flax's (and
  # what checkpoints written before the fields existed used); the paper config
  # sets PyTorch's InstanceNorm2d defaults (no affine, eps 1e-5).
  norm_affine: bool = True
  norm_epsilon: float = 1e-6
  upsample: str = "transpose"
  # Stride-2 encoder stages (and decoder stages): 2 in Fig. 2; total stride 2**num_levels.
  num_levels: int = 2
  residual: bool = False
  zero_init_output: bool = False
  padding_mode: str = "reflect"
  # Test-time local statistics (TLC; inference.with_local_stats): 0 = the
  # paper's global statistics; > 0 = instance norm and channel attention average
  # over a box of this side in input pixels (halved at each downsampling), e.g.
  # the training crop size, so a net trained on crops sees crop-sized statistics
  # on a whole image. No parameters depend on it.
  stats_window: int = 0
  # Image channels in and out: 3 = RGB (the paper; what checkpoints written
  # before the field existed hold), 1 = grayscale, or any other count.
  channels: int = 3
  # Coarse-to-fine passes of the one U-Net (not in the paper; 1 = the paper's single
  # pass). See the class docstring.
  scales: int = 1
  # > 1: a coarse pass with its own weights at 1/coarse_down of the resolution, its
  # correction added (class docstring); 0 = none (the paper).
  coarse_down: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, all_scales: bool = False, coarse_only: bool = False):
    """The deblurred image [N, H, W, C]; with `all_scales=True` a tuple of every
    pass's output, coarse to fine (`scales` of them), for multi-scale losses: the
    coarse pass k (1/2**k resolution) at the image's size padded to a multiple
    of 2**(scales - 1), divided by 2**k (`scale_targets` makes its targets), the
    last one the deblurred image itself (with `coarse_down`, the sum).
    `coarse_only=True` (needs `coarse_down`): the coarse net's output on `x`."""
    if self.channels < 1:
      raise ValueError(f"channels must be >= 1, got {self.channels}")
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"Generator expects NHWC images with {self.channels} channel"
                       f"{'s' if self.channels != 1 else ''} (model.channels), got shape "
                       f"{x.shape}")
    if self.norm not in ("instance", "none"):
      raise ValueError(f"norm must be 'instance' or 'none', got {self.norm!r}")
    if self.upsample not in ("transpose", "pixel_shuffle"):
      raise ValueError(f"upsample must be 'transpose' or 'pixel_shuffle', got {self.upsample!r}")
    if self.num_levels < 1:
      raise ValueError(f"num_levels must be >= 1, got {self.num_levels}")
    if self.scales < 1:
      raise ValueError(f"scales must be >= 1, got {self.scales}")
    if self.scales > 1 and self.stats_window > 0:
      raise ValueError("Test-time local statistics (stats_window > 0) are not available with "
                       f"scales = {self.scales} > 1 (each scale would need its own window).")
    if self.coarse_down == 1 or self.coarse_down < 0:
      raise ValueError(f"coarse_down must be 0 (no coarse pass) or >= 2, got {self.coarse_down}")
    if self.coarse_down and self.stats_window > 0:
      raise ValueError("Test-time local statistics (stats_window > 0) are not available with "
                       f"a coarse pass (coarse_down = {self.coarse_down}).")
    if coarse_only and not self.coarse_down:
      raise ValueError("coarse_only=True needs a generator with a coarse pass (coarse_down >= 2)")
    coarse = None
    if self.coarse_down:
      # The same fields, one pass, no coarse pass of its own; its own weights.
      coarse = self.clone(parent=self, name="coarse", coarse_down=0, scales=1)
      if coarse_only:
        return coarse(x)
    inputs = jnp.asarray(x, self.dtype)
    # Every submodule is made once, by name, and called at each scale (one set of weights).
    made = {}

    def make(name, build):
      if name not in made:
        made[name] = build(name)
      return made[name]

    if self.scales == 1:
      outputs = [self._unet(inputs, make)]
    else:
      # Coarse to fine (`scales`): pad to a multiple of 2**(scales - 1), then from the
      # coarsest scale up, each pass reads the blurry image at its scale plus the
      # upsampled correction (output - input) of the pass below it.
      h, w = x.shape[1:3]
      pyramid = scale_targets(inputs, self.scales)
      previous, outputs = None, []
      for xs in pyramid:
        if previous is not None:
          xs = jnp.clip(xs + upsample_bilinear(previous[1] - previous[0], 2), -1.0, 1.0)
        previous = (xs, self._unet(xs, make))
        outputs.append(previous[1])
      outputs[-1] = outputs[-1][:, :h, :w, :]
    if coarse is not None:
      outputs[-1] = jnp.clip(outputs[-1] + coarse_correction(coarse, inputs, self.coarse_down),
                             -1.0, 1.0)
    return tuple(outputs) if all_scales else outputs[-1]

  def _unet(self, inputs: jax.Array, make) -> jax.Array:
    """One pass of the U-Net on `inputs` (the image, or one scale of it)."""
    h, w = inputs.shape[1:3]
    stride = 2 ** self.num_levels
    ph, pw = (-h) % stride, (-w) % stride
    mode = "reflect" if min(h, w) > 3 else "edge"
    x = jnp.pad(inputs, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)

    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    use_norm = self.norm == "instance"

    def window(level):  # the stats window at 1/2**level resolution (0 = global)
      return max(1, self.stats_window >> level) if self.stats_window > 0 else 0

    def norm_act(y, name, level):
      if use_norm:
        norm = dict(epsilon=self.norm_epsilon, use_scale=self.norm_affine,
                    use_bias=self.norm_affine, **common)
        if self.stats_window > 0:
          y = make(name, lambda n: LocalInstanceNorm(window(level), name=n, **norm))(y)
        else:
          y = make(name, lambda n: nn.InstanceNorm(name=n, **norm))(y)
      return nn.relu(y)

    def down(y, features, name):
      y = pad_same(y, (3, 3), self.padding_mode)
      return make(name, lambda n: nn.Conv(features, (3, 3), strides=(2, 2), padding="VALID",
                                          use_bias=not use_norm, name=n, **common))(y)

    def up(y, features, name):
      if self.upsample == "transpose":
        # nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME"):
        # its parameters, computed phase by phase (layers.conv_transpose_3x3_s2).
        parts = list(y) if isinstance(y, (list, tuple)) else [y]
        kernel, bias = make(name, lambda n: ConvWeights(
            features, (3, 3), use_bias=not use_norm, param_dtype=self.param_dtype,
            name=n))(sum(p.shape[-1] for p in parts))
        return conv_over_parts(parts, kernel, bias, self.dtype, conv_transpose_3x3_s2)
      y = make(name, lambda n: PaddedConv(4 * features, (3, 3), padding_mode=self.padding_mode,
                                          use_bias=not use_norm, name=n, **common))(y)
      return pixel_shuffle(y, 2)  # y may be [d, skip]

    f = self.base_features
    levels = self.num_levels
    enc = [norm_act(make("enc_conv0", lambda n: PaddedConv(
        f, (7, 7), padding_mode=self.padding_mode, use_bias=not use_norm, name=n,
        **common))(x), "enc_norm0", 0)]
    for l in range(1, levels + 1):
      enc.append(norm_act(down(enc[-1], 2**l * f, f"enc_down{l}"), f"enc_norm{l}", l))

    b = enc[-1]
    if self.use_gradientnet:
      b = make("gradientnet", lambda n: GradientNet(
                   features=self.gradientnet_features, num_mbrbs=self.num_mbrbs,
                   num_paths=self.num_paths, use_rgcl=self.use_rgcl,
                   rgcl_kernels=self.rgcl_kernels, num_recurrences=self.num_recurrences,
                   ca_reduction=self.ca_reduction, stats_window=window(levels),
                   padding_mode=self.padding_mode, name="gradientnet", **common))(b)

    # Skip connections: each decoder stage reads [upsampled, encoder feature]
    # concatenated on channels; the convolutions take the pair and never build
    # the concatenation (PaddedConv), which saves memory at full resolution.
    # The deepest stage reads GradientNet's output alone (it holds its input).
    d = b
    for l in range(levels - 1, -1, -1):
      d = norm_act(up(d if l == levels - 1 else [d, enc[l + 1]], 2**l * f, f"dec_up{l}"),
                   f"dec_norm{l}", l)
    d0, e0 = d, enc[0]
    kernel_init = nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
    y = make("out_conv", lambda n: PaddedConv(self.channels, (7, 7), padding_mode=self.padding_mode,
                                              kernel_init=kernel_init, name=n, **common))([d0, e0])
    y = jnp.tanh(y)[:, :h, :w, :]
    if self.residual:
      y = jnp.clip(y + inputs, -1.0, 1.0)
    return y


def coarse_correction(coarse_net, x: jax.Array, factor: int) -> jax.Array:
  """up(G_c(down x) - down x) at `x`'s size: the correction a net run on `x`
  area-downsampled by `factor` (after edge padding to a multiple of it) makes,
  bilinearly upsampled and cropped back."""
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (0, (-h) % factor), (0, (-w) % factor), (0, 0)), mode="edge")
  small = area_downsample(padded, factor)
  return upsample_bilinear(coarse_net(small) - small, factor)[:, :h, :w, :]


def scale_targets(x: jax.Array, scales: int) -> list[jax.Array]:
  """`x` [N, H, W, C] at the resolutions of the coarse-to-fine passes, coarse to
  fine: padded (reflect; edge below 4 px) to a multiple of 2**(scales - 1), then
  area-downsampled by 2**(scales - 1), ..., 2, 1 (the last is the padded `x`).
  What each pass of `Generator` reads of the blurry image, and, applied to the
  sharp image, the target of each pass in a multi-scale loss."""
  h, w = x.shape[1:3]
  f = 2 ** (scales - 1)
  mode = "reflect" if min(h, w) > 3 else "edge"
  padded = jnp.pad(x, ((0, 0), (0, (-h) % f), (0, (-w) % f), (0, 0)), mode=mode)
  return [area_downsample(padded, 2**k) for k in range(scales - 1, -1, -1)]


def area_downsample(x: jax.Array, factor: int) -> jax.Array:
  """[N, H, W, C] -> [N, H/f, W/f, C], the mean of each f x f block (H, W multiples of f)."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
  """Bilinear x`factor` upsampling with half-pixel centres: the inverse placement of
  `area_downsample`'s blocks."""
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, h * factor, w * factor, c), "linear")


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """Depth-to-space: [N, H, W, C*f*f] -> [N, H*f, W*f, C] (PyTorch's channel order)."""
  n, h, w, c = x.shape
  oc = c // (factor * factor)
  x = x.reshape(n, h, w, oc, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * factor, w * factor, oc)


# Table 5 ablations (models/ablations.py), as presets of the same module.
GeneratorWithoutRGCL = functools.partial(Generator, **GENERATOR_ABLATIONS["wo_rgcl"].fields)
GeneratorWithoutMBRBs = functools.partial(Generator, **GENERATOR_ABLATIONS["wo_mbrbs"].fields)
GeneratorWithoutGradientNet = functools.partial(Generator,
                                                **GENERATOR_ABLATIONS["wo_gradientnet"].fields)
