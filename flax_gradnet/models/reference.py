"""The generator written the straightforward way: the paper's operations one by one.

A frozen copy of `layers.py` and `generator.py` as they were before the CPU
speed work (2026-11-25): a reflect-padded copy before every
convolution, the RGCL's 1x3 and 3x1 convolutions applied separately, the skip
concatenations built, `nn.ConvTranspose` as flax has it. Same parameter tree,
same function. Two uses:
  * the FLOP count of Table 3 (`cost.forward_cost`): the work the network
    asks for, not what an implementation's tricks add (the cross kernel's zero
    taps) or save (the transposed conv's zero-multiplications);
  * the oracle of tests/test_fast_generator.py, which checks that the modules of
    `flax_gradnet.models` equal these to 1e-5.
Not for training or inference: 3.6x slower on XLA CPU with the paper config.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_gradnet.models.ablations import GENERATOR_ABLATIONS

Dtype = Any
PaddingMode = str  # "reflect" | "zeros"


def pad_same(x: jax.Array, kernel_size: tuple[int, int], mode: PaddingMode) -> jax.Array:
  """Pads H and W of an NHWC array so a stride-1 VALID conv keeps the size.

  Reflect padding avoids the dark frame that zero padding leaves at image
  borders when a restoration net is applied to whole images.
  """
  kh, kw = kernel_size
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  pads = ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0))
  if mode == "reflect":
    return jnp.pad(x, pads, mode="reflect")
  if mode == "zeros":
    return jnp.pad(x, pads)
  raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {mode!r}")


class PaddedConv(nn.Module):
  """A stride-1 "same" convolution whose padding is reflect or zeros."""

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  padding_mode: PaddingMode = "reflect"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = pad_same(x, self.kernel_size, self.padding_mode)
    return nn.Conv(
        self.features,
        self.kernel_size,
        padding="VALID",
        use_bias=self.use_bias,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="conv",
    )(x)


# Presets named after the paper's kernels.
Conv3x3 = functools.partial(PaddedConv, kernel_size=(3, 3))
Conv1x3 = functools.partial(PaddedConv, kernel_size=(1, 3))  # horizontal gradient kernel
Conv3x1 = functools.partial(PaddedConv, kernel_size=(3, 1))  # vertical gradient kernel


class ChannelAttention(nn.Module):
  """Squeeze-and-excitation channel attention ("CA" in Fig. 2; SENet [20]).

  `y = x * sigmoid(W2 relu(W1 mean_hw(x)))`, with a bottleneck of
  `max(1, C // reduction)` units.

  Attributes:
    reduction: the SE reduction ratio r (16 in SENet).
  """

  reduction: int = 16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    c = x.shape[-1]
    hidden = max(1, c // self.reduction)
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    s = nn.relu(dense(hidden, name="squeeze")(s))
    s = nn.sigmoid(dense(c, name="excite")(s))
    return x * s


class RGCL(nn.Module):
  """Recurrent gradient convolutional layer, Eq. (7).

  `U = CA(Sigmoid(h_r)) + U_0` where the recurrent cell is

      F(z) = Conv(LeakyReLU(k_{1x3} (x) z + k_{3x1} (x) z))        (Eq. 7, inner)
      h_1 = F(U_0),   h_t = F(U_0 + h_{t-1})  for t = 2..r.

  Reading of the paper (which only writes `Conv(LR(...), r)`): the recurrence
  shares one set of weights (1x3, 3x1 and Conv kernels) across its r steps, and
  each step sees the layer input plus the previous step's output, as in the
  recurrent convolutional layer of R2U-Net. `r = num_recurrences = 3` (Sec.
  3.1.2). Channels are kept, so the residual `+ Input` needs no projection.

  Attributes:
    num_recurrences: r in Eq. (7).
    conv_kernel: kernel size of the Conv after the LeakyReLU (not given in the
      paper; 3x3 by default).
    negative_slope: slope of the LeakyReLU ("LR").
    ca_reduction: reduction ratio of the channel attention.
  """

  num_recurrences: int = 3
  conv_kernel: tuple[int, int] = (3, 3)
  kernels: str = "gradient"  # or "square": one 3x3 conv instead of the 1x3 + 3x1 pair
  negative_slope: float = 0.2
  ca_reduction: int = 16
  padding_mode: PaddingMode = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_recurrences < 1:
      raise ValueError(f"num_recurrences must be >= 1, got {self.num_recurrences}")
    x = jnp.asarray(x, self.dtype)
    c = x.shape[-1]
    kw = dict(padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.kernels == "gradient":
      horizontal = Conv1x3(c, name="conv_1x3", **kw)
      vertical = Conv3x1(c, name="conv_3x1", **kw)
      gradients = lambda z: horizontal(z) + vertical(z)
    else:
      gradients = Conv3x3(c, name="conv_3x3", **kw)
    fuse = PaddedConv(c, kernel_size=self.conv_kernel, name="conv", **kw)

    def cell(z):
      return fuse(nn.leaky_relu(gradients(z), self.negative_slope))

    h = cell(x)
    for _ in range(self.num_recurrences - 1):  # weights shared: same submodules
      h = cell(x + h)
    y = nn.sigmoid(h)
    y = ChannelAttention(self.ca_reduction, dtype=self.dtype, param_dtype=self.param_dtype, name="ca")(y)
    return y + x


class PlainPath(nn.Module):
  """The "w/o RGCL" ablation of Table 5: a 3x3 conv + LeakyReLU in place of an RGCL."""

  negative_slope: float = 0.2
  padding_mode: PaddingMode = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    y = Conv3x3(x.shape[-1], padding_mode=self.padding_mode, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    return nn.leaky_relu(y, self.negative_slope)


class MBRB(nn.Module):
  """Multi-branch reuse block, Eqs. (5)-(6).

      f = Concat(RGCL_1(U_0), RGCL_2(U_0), RGCL_3(U_0))          (Eq. 5)
      out = f_FE4(ReLU(f_FE3(CA(f)))) + U_0                       (Eq. 6)

  The three RGCLs have their own weights and all read the block input. f_FE3
  maps the concatenated `num_paths * C` channels back to C; both f_FE3 and
  f_FE4 are 3x3 convolutions (the paper gives no size).

  Attributes:
    num_paths: 3 in the paper; 1 is the "w/o MBRBs" ablation of Table 5
      (a single path instead of the multi-path reuse).
    use_rgcl: False is the "w/o RGCL" ablation (plain 3x3 convs in the paths).
  """

  num_paths: int = 3
  use_rgcl: bool = True
  rgcl_kernels: str = "gradient"
  num_recurrences: int = 3
  ca_reduction: int = 16
  padding_mode: PaddingMode = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_paths < 1:
      raise ValueError(f"num_paths must be >= 1, got {self.num_paths}")
    x = jnp.asarray(x, self.dtype)
    c = x.shape[-1]
    common = dict(padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
    paths = []
    for i in range(self.num_paths):
      if self.use_rgcl:
        layer = RGCL(num_recurrences=self.num_recurrences, ca_reduction=self.ca_reduction,
                     kernels=self.rgcl_kernels, name=f"rgcl_{i}", **common)
      else:
        layer = PlainPath(name=f"plain_{i}", **common)
      paths.append(layer(x))
    f = jnp.concatenate(paths, axis=-1) if len(paths) > 1 else paths[0]
    f = ChannelAttention(self.ca_reduction, dtype=self.dtype, param_dtype=self.param_dtype, name="ca")(f)
    f = nn.relu(Conv3x3(c, name="fe3", **common)(f))
    f = Conv3x3(c, name="fe4", **common)(f)
    return f + x




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
  """

  features: int = 64
  num_mbrbs: int = 10
  num_paths: int = 3
  use_rgcl: bool = True
  rgcl_kernels: str = "gradient"
  num_recurrences: int = 3
  ca_reduction: int = 16
  padding_mode: str = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    common = dict(padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
    u = Conv3x3(self.features, name="prftm_fe1", **common)(x)  # Eq. (2)
    u = Conv3x3(self.features, name="prftm_fe2", **common)(u)  # Eq. (3)
    for i in range(self.num_mbrbs):  # Eq. (4): cascaded MBRBs
      u = MBRB(num_paths=self.num_paths, use_rgcl=self.use_rgcl, rgcl_kernels=self.rgcl_kernels,
               num_recurrences=self.num_recurrences, ca_reduction=self.ca_reduction,
               name=f"mbrb_{i}", **common)(u)
    u = ChannelAttention(self.ca_reduction, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="mbru_ca")(u)
    u = Conv3x3(x.shape[-1], name="out_proj", **common)(u)
    return u + x


class Generator(nn.Module):
  """The U-Net generator of Fig. 2 with GradientNet at its bottleneck.

  Encoder: 7x7 conv (base), 3x3 stride-2 conv (2*base), 3x3 stride-2 conv
  (4*base), each followed by instance norm and ReLU. Bottleneck: GradientNet.
  Decoder: two x2 upsamplings (4*base -> 2*base -> base) with instance norm and
  ReLU, each concatenated with the encoder feature of the same size (U-Net skip
  connections), then a 7x7 conv to RGB and Tanh.

  With `residual=True` the blurry input is added to the Tanh output and the sum
  clipped to [-1, 1], as DeblurGAN's `learn_residual` does; the paper's Fig. 2
  shows no such connection, so the paper config keeps it off.

  Any H x W is accepted: the input is reflect-padded to a multiple of
  2**num_levels (the stride-2 convolutions) and the output cropped back.

  Attributes:
    base_features: channels of the first encoder stage (64).
    num_levels: stride-2 encoder stages, each with its decoder stage (2 in Fig. 2).
    gradientnet_features: channels inside GradientNet.
    use_gradientnet: False = "w/o GradientNet" ablation (identity bottleneck).
    norm: "instance" (the paper) or "none".
    upsample: "transpose" (3x3 stride-2 transposed conv, as Fig. 2) or
      "pixel_shuffle" (3x3 conv to 4x channels + depth-to-space; much cheaper
      to differentiate on XLA CPU).
    zero_init_output: initialise the last conv at zero; with `residual=True`
      the untrained net is then exactly the identity.
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
  num_levels: int = 2
  residual: bool = False
  zero_init_output: bool = False
  padding_mode: str = "reflect"
  channels: int = 3  # image channels in and out (3 = RGB, 1 = grayscale)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"Generator expects NHWC images with {self.channels} channel"
                       f"{'s' if self.channels != 1 else ''}, got shape {x.shape}")
    if self.norm not in ("instance", "none"):
      raise ValueError(f"norm must be 'instance' or 'none', got {self.norm!r}")
    if self.upsample not in ("transpose", "pixel_shuffle"):
      raise ValueError(f"upsample must be 'transpose' or 'pixel_shuffle', got {self.upsample!r}")
    inputs = jnp.asarray(x, self.dtype)
    h, w = x.shape[1:3]
    stride = 2 ** self.num_levels
    ph, pw = (-h) % stride, (-w) % stride
    mode = "reflect" if min(h, w) > 3 else "edge"
    x = jnp.pad(inputs, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)

    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    use_norm = self.norm == "instance"

    def norm_act(y, name):
      if use_norm:
        y = nn.InstanceNorm(epsilon=self.norm_epsilon, use_scale=self.norm_affine,
                            use_bias=self.norm_affine, name=name, **common)(y)
      return nn.relu(y)

    def down(y, features, name):
      y = pad_same(y, (3, 3), self.padding_mode)
      return nn.Conv(features, (3, 3), strides=(2, 2), padding="VALID", use_bias=not use_norm,
                     name=name, **common)(y)

    def up(y, features, name):
      if self.upsample == "transpose":
        return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME",
                                use_bias=not use_norm, name=name, **common)(y)
      y = PaddedConv(4 * features, (3, 3), padding_mode=self.padding_mode,
                     use_bias=not use_norm, name=name, **common)(y)
      return pixel_shuffle(y, 2)

    f = self.base_features
    enc = [norm_act(PaddedConv(f, (7, 7), padding_mode=self.padding_mode, use_bias=not use_norm,
                               name="enc_conv0", **common)(x), "enc_norm0")]
    for l in range(1, self.num_levels + 1):
      enc.append(norm_act(down(enc[-1], 2**l * f, f"enc_down{l}"), f"enc_norm{l}"))

    b = enc[-1]
    if self.use_gradientnet:
      b = GradientNet(features=self.gradientnet_features, num_mbrbs=self.num_mbrbs,
                      num_paths=self.num_paths, use_rgcl=self.use_rgcl,
                      rgcl_kernels=self.rgcl_kernels,
                      num_recurrences=self.num_recurrences, ca_reduction=self.ca_reduction,
                      padding_mode=self.padding_mode, name="gradientnet", **common)(b)

    d = b
    for l in range(self.num_levels - 1, -1, -1):
      d = norm_act(up(d, 2**l * f, f"dec_up{l}"), f"dec_norm{l}")
      d = jnp.concatenate([d, enc[l]], axis=-1)
    d0 = d
    kernel_init = nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
    y = PaddedConv(self.channels, (7, 7), padding_mode=self.padding_mode,
                   kernel_init=kernel_init, name="out_conv", **common)(d0)
    y = jnp.tanh(y)[:, :h, :w, :]
    if self.residual:
      y = jnp.clip(y + inputs, -1.0, 1.0)
    return y


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
