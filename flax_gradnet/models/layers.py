"""Building blocks of GradientNet (Qi, 2022, Section 3.1.2).

All modules are NHWC `flax.linen` modules with a `dtype` field for the compute
precision; parameters are always created in `param_dtype` (float32 default).

Where the paper is vague the reading chosen here is stated in the docstring and
in README.md ("How the paper was read").
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    horizontal = Conv1x3(c, name="conv_1x3", **kw)
    vertical = Conv3x1(c, name="conv_3x1", **kw)
    fuse = PaddedConv(c, kernel_size=self.conv_kernel, name="conv", **kw)

    def cell(z):
      return fuse(nn.leaky_relu(horizontal(z) + vertical(z), self.negative_slope))

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
                     name=f"rgcl_{i}", **common)
      else:
        layer = PlainPath(name=f"plain_{i}", **common)
      paths.append(layer(x))
    f = jnp.concatenate(paths, axis=-1) if len(paths) > 1 else paths[0]
    f = ChannelAttention(self.ca_reduction, dtype=self.dtype, param_dtype=self.param_dtype, name="ca")(f)
    f = nn.relu(Conv3x3(c, name="fe3", **common)(f))
    f = Conv3x3(c, name="fe4", **common)(f)
    return f + x
