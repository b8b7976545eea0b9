"""The 70x70 PatchGAN critic (Sec. 3.1.3; pix2pix [40]) for WGAN-GP."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def conv_as_matmul(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """A zero-padded convolution written as patch extraction plus one matmul.

  Gives the same result as `lax.conv_general_dilated` with an HWIO kernel.
  WGAN-GP differentiates twice through the critic; on XLA CPU the second-order
  gradient of this form is several times cheaper than that of a native
  convolution (see experiments/bench_train_step.py), on GPU/TPU the native
  form is preferred.
  """
  kh, kw, cin, cout = kernel.shape
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  n, h, w, _ = x.shape
  oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
  cols = [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1)  # [N, oh, ow, kh*kw*cin], (kh, kw, cin) order
  return patches @ kernel.reshape(kh * kw * cin, cout)


class CriticConv(nn.Module):
  """4x4 convolution (padding 1) with parameters laid out as `nn.Conv`'s."""

  features: int
  stride: int
  conv_impl: str = "lax"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.normal(0.02), (4, 4, cin, self.features),
                        self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.conv_impl == "matmul":
      y = conv_as_matmul(x, kernel, self.stride, 1)
    elif self.conv_impl == "lax":
      y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      raise ValueError(f"conv_impl must be 'lax' or 'matmul', got {self.conv_impl!r}")
    return y + bias


class PatchCritic(nn.Module):
  """pix2pix's 70x70 PatchGAN (n_layers=3) as a WGAN critic.

  C64(s2) - C128(s2) - C256(s2) - C512(s1) - C1(s1), 4x4 kernels, padding 1,
  LeakyReLU(0.2). A 256x256 input gives a 30x30 map of unbounded scores, each
  seeing a 70x70 window. Differences from pix2pix, both required by WGAN-GP:
  no batch norm (the gradient penalty is per sample, and batch statistics would
  couple the samples), and no sigmoid (the paper's "probability in [0, 1]"
  belongs to a standard GAN; a Wasserstein critic outputs real scores).

  Attributes:
    features: channels of the first layer (64).
    num_layers: stride-2 layers (3 gives the 70x70 receptive field).
    conv_impl: "lax" or "matmul" (faster double-backward on XLA CPU).
  """

  features: int = 64
  num_layers: int = 3
  conv_impl: str = "lax"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Returns the [N, H', W', 1] patch score map."""
    if x.ndim != 4:
      raise ValueError(f"PatchCritic expects NHWC images, got shape {x.shape}")
    x = jnp.asarray(x, self.dtype)
    common = dict(conv_impl=self.conv_impl, dtype=self.dtype, param_dtype=self.param_dtype)
    widths = [self.features * min(2**i, 8) for i in range(self.num_layers + 1)]
    for i, width in enumerate(widths):
      stride = 2 if i < self.num_layers else 1
      x = nn.leaky_relu(CriticConv(width, stride, name=f"conv_{i}", **common)(x), 0.2)
    return CriticConv(1, 1, name="score", **common)(x)
