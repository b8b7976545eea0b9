"""Building blocks of GradientNet (Qi, 2022, Section 3.1.2).

All modules are NHWC `flax.linen` modules with a `dtype` field for the compute
precision; parameters are always created in `param_dtype` (float32 default).

Where the paper is vague the reading chosen here is stated in the docstring and
in README.md ("How the paper was read").
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax import lax

Dtype = Any
PaddingMode = str  # "reflect" | "zeros"


def pad_same(x: jax.Array, kernel_size: tuple[int, int], mode: PaddingMode) -> jax.Array:
  """Pads H and W of an NHWC array so a stride-1 VALID conv keeps the size.

  Reflect padding avoids the dark frame that zero padding leaves at image
  borders when a restoration net is applied to whole images.
  """
  if mode not in ("reflect", "zeros"):
    raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {mode!r}")
  pads = ((0, 0), *_same_pads(kernel_size), (0, 0))
  if mode == "reflect":
    return jnp.pad(x, pads, mode="reflect")
  return jnp.pad(x, pads)


def _same_pads(kernel_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
  kh, kw = kernel_size
  return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)


def _conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv2d_same(x: jax.Array, kernel: jax.Array, mode: PaddingMode) -> jax.Array:
  """A stride-1 "same" convolution (no bias) with reflect or zero padding.

  Equal to `VALID conv of pad_same(x, kernel_size, mode)`, computed faster on
  XLA CPU: a padded copy of the input before every convolution costs more than
  the convolution itself there (measured: 21-33 ms of a 3x3 64->64 conv's 32 ms
  at 320x180). Zero padding is left to the convolution. Reflect padding is the
  zero-padded convolution with its border rows and columns (as many as the
  padding is wide) recomputed exactly from small reflect-padded strips of the
  input; the corners come out right because each strip is padded on both axes.
  Images smaller than the kernel fall back to the padded copy.
  """
  if mode not in ("reflect", "zeros"):
    raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {mode!r}")
  kh, kw = kernel.shape[:2]
  (pt, pb), (pl, pr) = pads = _same_pads((kh, kw))
  out = _conv(x, kernel, pads)
  if mode == "zeros" or (kh == 1 and kw == 1):
    return out
  h, w = x.shape[1:3]
  # Strip depths: the kernel's reach (k - 1) and more than the padding (reflect).
  mh, mw = max(kh - 1, pt + 1, pb + 1), max(kw - 1, pl + 1, pr + 1)
  if h < mh or w < mw:
    return _conv(pad_same(x, (kh, kw), mode), kernel, "VALID")

  def strip(part, axis_pads):
    return _conv(jnp.pad(part, ((0, 0), *axis_pads, (0, 0)), mode="reflect"), kernel, "VALID")

  # Output row i < pt reads input rows i - pt .. i - pt + kh - 1 < mh: the top
  # mh input rows, reflect-padded by pt above, give rows 0..pt-1 first.
  if pt:
    out = out.at[:, :pt].set(strip(x[:, :mh], ((pt, 0), (pl, pr)))[:, :pt])
  if pb:
    out = out.at[:, h - pb:].set(strip(x[:, h - mh:], ((0, pb), (pl, pr)))[:, -pb:])
  if pl:
    out = out.at[:, :, :pl].set(strip(x[:, :, :mw], ((pt, pb), (pl, 0)))[:, :, :pl])
  if pr:
    out = out.at[:, :, w - pr:].set(strip(x[:, :, w - mw:], ((pt, pb), (0, pr)))[:, :, -pr:])
  return out


def conv_transpose_3x3_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME")` without bias.

  That layer convolves the input dilated by zeros (3 of every 4 taps multiply
  a zero). Computed here as its four output phases, each a small convolution
  of the undilated input, interleaved: per axis, output 2m+1 reads k[1] x[m]
  and output 2m reads k[0] x[m-1] + k[2] x[m] (x[-1] = 0), with lax's "SAME"
  transpose padding (2 before, 1 after the dilated input). Same sums, a
  quarter of the multiplications, no dilated copy (0.5 GB at 1280x720).
  """
  n, h, w, _ = x.shape
  rows = {0: (kernel[0::2], ((1, 0),)), 1: (kernel[1:2], ((0, 0),))}
  phases = []
  for r in (0, 1):
    k_r, pad_r = rows[r]
    cols = []
    for c in (0, 1):
      k_rc = k_r[:, 0::2] if c == 0 else k_r[:, 1:2]
      pad_c = (1, 0) if c == 0 else (0, 0)
      cols.append(_conv(x, k_rc, (pad_r[0], pad_c)))
    phases.append(jnp.stack(cols, axis=3))  # [N, H, W, 2 (col phase), C]
  y = jnp.stack(phases, axis=2)  # [N, H, 2 (row phase), W, 2, C]
  return y.reshape(n, 2 * h, 2 * w, kernel.shape[-1])


# Narrower parts are concatenated first: XLA CPU runs a conv of few input
# channels poorly (7x7 to 3 channels at 1280x720, zero padding: 16+16 channels
# split 205 ms, concatenated 105 ms; reflect, 32+32: split 86 ms, concatenated
# 220 ms; 64+64: 208 vs 499 ms; 2-core dev machine, experiments/bench_inference.py era).
SPLIT_MIN_CHANNELS = 32


class ConvWeights(nn.Module):
  """The parameters of `nn.Conv` (same names, shapes, initialisers and order),
  returned instead of applied, for layers that combine kernels before use."""

  features: int
  kernel_size: tuple[int, int]
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, in_features, self.features), self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
            if self.use_bias else None)
    return kernel, bias


class PaddedConv(nn.Module):
  """A stride-1 "same" convolution whose padding is reflect or zeros.

  Parameters {"conv": {"kernel", "bias"}}, as an `nn.Conv` named "conv" has
  them; `weights(in_features)` returns them without convolving.
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  padding_mode: PaddingMode = "reflect"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.conv = ConvWeights(self.features, tuple(self.kernel_size), use_bias=self.use_bias,
                            kernel_init=self.kernel_init, param_dtype=self.param_dtype)

  def weights(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    return self.conv(in_features)

  def __call__(self, x: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """Convolves `x`; a sequence of arrays is convolved as their channel concatenation.

    When every part has at least `SPLIT_MIN_CHANNELS` channels the
    concatenation is never built: the kernel is split along its input channels
    and the partial convolutions summed (the same linear map; at 1280x720 the
    paper U-Net's last skip concatenation alone is 0.47 GB of float32).
    """
    parts = [x] if isinstance(x, jax.Array) else list(x)
    kernel, bias = self.conv(sum(p.shape[-1] for p in parts))
    return conv_over_parts(
        parts, kernel, bias, self.dtype,
        lambda part, k: conv2d_same(part, k, self.padding_mode))


def conv_over_parts(parts: Sequence[jax.Array], kernel: jax.Array, bias: jax.Array | None,
                    dtype: Dtype, conv: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """`conv(concatenate(parts), kernel) + bias` in `dtype`, for any conv linear in its input.

  When every part has at least `SPLIT_MIN_CHANNELS` channels the concatenation
  is never built: the kernel is split along its input channels and the
  partial convolutions summed. Narrower parts are concatenated first.
  """
  parts = list(parts)
  if len(parts) > 1 and min(p.shape[-1] for p in parts) < SPLIT_MIN_CHANNELS:
    parts = [jnp.concatenate(parts, axis=-1)]
  splits = np.cumsum([p.shape[-1] for p in parts])[:-1].tolist()
  y = None
  for part, k in zip(parts, jnp.split(kernel, splits, axis=2)):
    part, k = promote_dtype(part, k, dtype=dtype)
    term = conv(part, k)
    y = term if y is None else y + term
  return y if bias is None else y + jnp.asarray(bias, y.dtype)


def conv_bias(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, mode: PaddingMode,
              dtype: Dtype) -> jax.Array:
  """`conv2d_same(x, kernel) + bias` computed in `dtype`, as `nn.Conv(dtype=dtype)` does."""
  x, kernel, bias = promote_dtype(x, kernel, bias, dtype=dtype)
  y = conv2d_same(x, kernel, mode)
  return y if bias is None else y + bias


# Presets named after the paper's kernels.
Conv3x3 = functools.partial(PaddedConv, kernel_size=(3, 3))
Conv1x3 = functools.partial(PaddedConv, kernel_size=(1, 3))  # horizontal gradient kernel
Conv3x1 = functools.partial(PaddedConv, kernel_size=(3, 1))  # vertical gradient kernel


def _window_means_1d(x: jax.Array, window: int, axis: int) -> jax.Array:
  """Means of every `window` consecutive entries along `axis` (valid positions
  only, `n - window + 1` of them), then edge-replicated back to length `n`.

  A running sum along one axis (not a 2-D integral image): its rounding error
  grows with the side length, not with the number of pixels.
  """
  n = x.shape[axis]
  window = min(window, n)
  zero = jnp.zeros_like(lax.slice_in_dim(x, 0, 1, axis=axis))
  csum = jnp.concatenate([zero, jnp.cumsum(x, axis=axis)], axis=axis)
  sums = (lax.slice_in_dim(csum, window, n + 1, axis=axis)
          - lax.slice_in_dim(csum, 0, n + 1 - window, axis=axis))
  before = (window - 1) // 2
  pads = [(0, 0)] * x.ndim
  pads[axis] = (before, window - 1 - before)
  return jnp.pad(sums / window, pads, mode="edge")


def local_mean(x: jax.Array, window: int) -> jax.Array:
  """Test-time local statistics (TLC, Chu et al. 2022, as in NAFNet): for every
  pixel of `x` [N, H, W, C], the mean over the `window` x `window` box around it.

  The box is clipped to the image (a side of `min(window, H)` by
  `min(window, W)`) and kept inside it: pixels nearer than half a window to a
  border take the box of the nearest pixel whose box fits (edge replication of
  the valid box means, NAFNet's choice). A window as large as the image gives
  the global mean at every pixel. Computed in float32 at least.
  """
  if window < 1:
    raise ValueError(f"local statistics window must be >= 1, got {window}")
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return _window_means_1d(_window_means_1d(x, window, 1), window, 2)


def spatial_mean(x: jax.Array, window: int = 0) -> jax.Array:
  """The mean over H and W of x [N, H, W, C] ([N, 1, 1, C]), or with `window`
  > 0 the local mean over a box of that side around each pixel ([N, H, W, C])."""
  if window > 0:
    return local_mean(x, window).astype(x.dtype)
  return jnp.mean(x, axis=(1, 2), keepdims=True)


class ChannelAttention(nn.Module):
  """Squeeze-and-excitation channel attention ("CA" in Fig. 2; SENet [20]).

  `y = x * sigmoid(W2 relu(W1 mean_hw(x)))`, with a bottleneck of
  `max(1, C // reduction)` units.

  Attributes:
    reduction: the SE reduction ratio r (16 in SENet).
    window: 0 (the paper's SE): the squeeze averages the whole feature map.
      > 0: test-time local statistics, the squeeze averages a `window` box
      around each pixel (`local_mean`), so a network trained on crops sees
      crop-sized statistics on a whole image. Parameters are the same.
  """

  reduction: int = 16
  window: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    c = x.shape[-1]
    hidden = max(1, c // self.reduction)
    s = spatial_mean(x, self.window)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    s = nn.relu(dense(hidden, name="squeeze")(s))
    s = nn.sigmoid(dense(c, name="excite")(s))
    return x * s


class LocalInstanceNorm(nn.Module):
  """Instance normalisation whose mean and variance are local (`local_mean`
  over a `window` box around each pixel), with `nn.InstanceNorm`'s parameter
  names ("scale", "bias") and formula, so a trained instance-norm generator
  runs with test-time local statistics unchanged. Variance as flax computes
  it: `max(0, E[x^2] - E[x]^2)`.
  """

  window: int
  epsilon: float = 1e-6
  use_scale: bool = True
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    mean = local_mean(x, self.window)
    mean2 = local_mean(jnp.square(x.astype(mean.dtype)), self.window)
    var = jnp.maximum(0.0, mean2 - jnp.square(mean))
    y = (x.astype(mean.dtype) - mean) * lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      y = y * self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    return jnp.asarray(y, self.dtype)


def residual_add(branch: jax.Array, skip: jax.Array) -> jax.Array:
  """`branch + skip` in float32 at least.

  With bfloat16 compute the convolutions run in bf16, but the residual stream
  (30 RGCL, 10 MBRB and the GradientNet adds in the paper's config) is kept in
  float32: a bf16 stream would round every block's small update against a
  large running sum (8 bits of mantissa). A no-op in float32.
  """
  dtype = jnp.promote_types(jnp.promote_types(branch.dtype, skip.dtype), jnp.float32)
  return branch.astype(dtype) + skip.astype(dtype)


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
    kernels: "gradient" (Eq. 7: the 1x3 + 3x1 pair) or "square" (one full 3x3
      conv in their place, everything else kept: the ablation that isolates
      the asymmetric gradient kernels).
  """

  num_recurrences: int = 3
  conv_kernel: tuple[int, int] = (3, 3)
  kernels: str = "gradient"
  negative_slope: float = 0.2
  ca_reduction: int = 16
  stats_window: int = 0  # ChannelAttention.window (test-time local statistics)
  padding_mode: PaddingMode = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_recurrences < 1:
      raise ValueError(f"num_recurrences must be >= 1, got {self.num_recurrences}")
    skip = x
    x = jnp.asarray(x, self.dtype)
    c = x.shape[-1]
    kw = dict(padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.kernels == "gradient":
      k_1x3, b_1x3 = Conv1x3(c, name="conv_1x3", **kw).weights(c)  # horizontal gradient kernel
      k_3x1, b_3x1 = Conv3x1(c, name="conv_3x1", **kw).weights(c)  # vertical gradient kernel
      # k_1x3 (x) z + k_3x1 (x) z is one 3x3 convolution whose kernel is their
      # cross (the 1x3 on the middle row, the 3x1 on the middle column), exactly,
      # for either padding: one convolution instead of two, and no sum.
      k_cross = jnp.zeros((3, 3, c, c), k_1x3.dtype).at[1].add(k_1x3[0]).at[:, 1].add(k_3x1[:, 0])
      b_cross = b_1x3 + b_3x1
    elif self.kernels == "square":
      k_cross, b_cross = Conv3x3(c, name="conv_3x3", **kw).weights(c)
    else:
      raise ValueError(f"RGCL kernels must be 'gradient' or 'square', got {self.kernels!r}")
    fuse = PaddedConv(c, kernel_size=self.conv_kernel, name="conv", **kw)

    def cell(z):  # Conv(LR(k_1x3 (x) z + k_3x1 (x) z))
      gradients = conv_bias(z, k_cross, b_cross, self.padding_mode, self.dtype)
      return fuse(nn.leaky_relu(gradients, self.negative_slope))

    h = cell(x)
    for _ in range(self.num_recurrences - 1):  # weights shared: same submodules
      h = cell(x + h)
    y = nn.sigmoid(h)
    y = ChannelAttention(self.ca_reduction, self.stats_window, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="ca")(y)
    return residual_add(y, skip)


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
    rgcl_kernels: the RGCLs' `kernels` ("square" = the ablation that keeps
      the RGCL and replaces only its 1x3 + 3x1 pair by a 3x3 conv).
  """

  num_paths: int = 3
  use_rgcl: bool = True
  rgcl_kernels: str = "gradient"
  num_recurrences: int = 3
  ca_reduction: int = 16
  stats_window: int = 0  # ChannelAttention.window of the block and its RGCLs
  padding_mode: PaddingMode = "reflect"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_paths < 1:
      raise ValueError(f"num_paths must be >= 1, got {self.num_paths}")
    skip = x
    x = jnp.asarray(x, self.dtype)
    c = x.shape[-1]
    common = dict(padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
    paths = []
    for i in range(self.num_paths):
      if self.use_rgcl:
        layer = RGCL(num_recurrences=self.num_recurrences, ca_reduction=self.ca_reduction,
                     stats_window=self.stats_window, kernels=self.rgcl_kernels,
                     name=f"rgcl_{i}", **common)
      else:
        layer = PlainPath(name=f"plain_{i}", **common)
      paths.append(layer(x))
    f = jnp.concatenate(paths, axis=-1) if len(paths) > 1 else paths[0]
    f = ChannelAttention(self.ca_reduction, self.stats_window, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="ca")(f)
    f = nn.relu(Conv3x3(c, name="fe3", **common)(f))
    f = Conv3x3(c, name="fe4", **common)(f)
    return residual_add(f, skip)
