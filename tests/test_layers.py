"""Tests of flax_gradnet/models/layers.py: PaddedConv, ChannelAttention, RGCL, MBRB.

References are computed independently with numpy and torch (reflect padding via
`torch.nn.functional.pad(mode="reflect")`, convolutions via `F.conv2d`), from
the same weights; the Flax modules are run through `jax.jit`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import import_or_skip
from flax_gradnet.models.layers import MBRB, RGCL, ChannelAttention, PaddedConv, PlainPath

torch = import_or_skip("torch")  # the reference of most tests here
F = torch.nn.functional


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _torch_same_conv(x, kernel, bias):
  """Reflect-padded stride-1 "same" conv. x: NCHW float64 tensor; kernel: HWIO numpy."""
  kh, kw = kernel.shape[:2]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  x = F.pad(x, (pw, kw - 1 - pw, ph, kh - 1 - ph), mode="reflect")
  w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
  return F.conv2d(x, w, torch.from_numpy(bias))


def _np_channel_attention(x, p):
  """SE block on NHWC numpy: x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)."""
  s = x.mean(axis=(1, 2))  # [N, C]
  s = np.maximum(s @ p["squeeze"]["kernel"] + p["squeeze"]["bias"], 0.0)
  s = s @ p["excite"]["kernel"] + p["excite"]["bias"]
  s = 1.0 / (1.0 + np.exp(-s))
  return x * s[:, None, None, :]


def _torch_rgcl(x_nhwc, p, num_recurrences, negative_slope=0.2):
  """Eq. (7) as the RGCL docstring reads it, written independently in torch/numpy.

  F(z) = Conv(LReLU(k_1x3 * z + k_3x1 * z)); h_1 = F(U_0), h_t = F(U_0 + h_{t-1});
  U = CA(sigmoid(h_r)) + U_0.
  """
  u0 = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())

  def cell(z):
    g = (_torch_same_conv(z, p["conv_1x3"]["conv"]["kernel"], p["conv_1x3"]["conv"]["bias"])
         + _torch_same_conv(z, p["conv_3x1"]["conv"]["kernel"], p["conv_3x1"]["conv"]["bias"]))
    g = F.leaky_relu(g, negative_slope)
    return _torch_same_conv(g, p["conv"]["conv"]["kernel"], p["conv"]["conv"]["bias"])

  h = cell(u0)
  for _ in range(num_recurrences - 1):
    h = cell(u0 + h)
  y = torch.sigmoid(h).numpy().transpose(0, 2, 3, 1)
  return _np_channel_attention(y, p["ca"]) + x_nhwc


def _key(seed):
  # "rbg" keys where the module's own init is under test: threefry's init
  # compiles slowly on XLA CPU.
  return jax.random.key(seed, impl="rbg")


def _shapes(tree):
  return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


# --------------------------------------------------------------------------- PaddedConv


@pytest.mark.parametrize("kernel_size", [(3, 3), (1, 3), (3, 1), (7, 7)])
def test_padded_conv_matches_torch_reflect_conv(kernel_size, random_params):
  x = np.random.default_rng(0).normal(size=(2, 9, 11, 3)).astype(np.float32)
  model = PaddedConv(features=5, kernel_size=kernel_size)
  variables = random_params(model, x)
  y = jax.jit(model.apply)(variables, x)
  p = _np(variables["params"]["conv"])
  ref = _torch_same_conv(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)),
                         p["kernel"], p["bias"]).numpy().transpose(0, 2, 3, 1)
  assert y.shape == (2, 9, 11, 5)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5, rtol=0)


def test_padded_conv_zeros_mode_and_bad_mode():
  x = np.ones((1, 4, 4, 1), np.float32)
  model = PaddedConv(features=1, kernel_size=(3, 3), padding_mode="zeros", use_bias=False,
                     kernel_init=jax.nn.initializers.ones)
  y = jax.jit(model.apply)(jax.jit(model.init)(_key(0), x), x)  # the ones init
  # A ones kernel over a ones image counts the in-image neighbours: 4 at corners, 9 inside.
  assert float(y[0, 0, 0, 0]) == 4.0 and float(y[0, 1, 1, 0]) == 9.0
  with pytest.raises(ValueError, match="padding_mode"):
    PaddedConv(features=1, padding_mode="circular").init(jax.random.key(0), x)


# --------------------------------------------------------------------------- ChannelAttention


@pytest.mark.parametrize("channels,reduction,hidden", [(32, 16, 2), (8, 16, 1), (12, 4, 3)])
def test_channel_attention_matches_numpy(channels, reduction, hidden, random_params):
  x = np.random.default_rng(1).normal(size=(3, 5, 6, channels)).astype(np.float32)
  model = ChannelAttention(reduction=reduction)
  params = random_params(model, x)["params"]
  assert params["squeeze"]["kernel"].shape == (channels, hidden)
  assert params["excite"]["kernel"].shape == (hidden, channels)
  y = jax.jit(model.apply)({"params": params}, x)
  ref = _np_channel_attention(x.astype(np.float64), _np(params))
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- RGCL


def test_rgcl_kernels_are_1x3_and_3x1():
  c = 8
  variables = jax.eval_shape(RGCL().init, jax.random.key(0), jnp.zeros((1, 6, 6, c)))
  p = variables["params"]
  assert p["conv_1x3"]["conv"]["kernel"].shape == (1, 3, c, c)  # horizontal gradients
  assert p["conv_3x1"]["conv"]["kernel"].shape == (3, 1, c, c)  # vertical gradients
  assert p["conv"]["conv"]["kernel"].shape == (3, 3, c, c)
  assert set(p) == {"conv_1x3", "conv_3x1", "conv", "ca"}


def test_rgcl_recurrence_shares_weights():
  x = jnp.zeros((1, 6, 6, 8))
  one = jax.eval_shape(RGCL(num_recurrences=1).init, jax.random.key(0), x)
  three = jax.eval_shape(RGCL(num_recurrences=3).init, jax.random.key(0), x)
  # Same tree, same shapes: the r steps reuse one set of weights (and the
  # torch reference below runs r = 3 from those weights alone).
  assert _shapes(one) == _shapes(three)


@pytest.mark.parametrize("num_recurrences", [1, 3])
def test_rgcl_matches_torch_reference_of_eq7(num_recurrences, random_params):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 7, 9, 8)).astype(np.float32)
  model = RGCL(num_recurrences=num_recurrences, ca_reduction=4)
  params = random_params(model, x)["params"]  # non-zero biases too
  y = jax.jit(model.apply)({"params": params}, x)
  ref = _torch_rgcl(x.astype(np.float64), _np(params), num_recurrences)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5, rtol=0)


def test_rgcl_more_recurrences_change_the_output(random_params):
  x = np.random.default_rng(3).normal(size=(1, 6, 6, 4)).astype(np.float32)
  variables = random_params(RGCL(num_recurrences=1), x)
  y1 = jax.jit(RGCL(num_recurrences=1).apply)(variables, x)
  y3 = jax.jit(RGCL(num_recurrences=3).apply)(variables, x)  # same weights, r = 3
  assert not np.allclose(np.asarray(y1), np.asarray(y3))


def test_rgcl_square_kernel_holding_the_cross_equals_the_gradient_pair(random_params):
  """kernels="square" keeps everything of Eq. (7) but the 1x3 + 3x1 pair: with
  its 3x3 kernel set to their cross (1x3 on the middle row, 3x1 on the middle
  column, biases summed) it computes the gradient RGCL exactly."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 11, 4)), jnp.float32)
  pair = RGCL(ca_reduction=2)
  variables = random_params(pair, x)
  p = variables["params"]
  k13, k31 = np.asarray(p["conv_1x3"]["conv"]["kernel"]), np.asarray(p["conv_3x1"]["conv"]["kernel"])
  cross = np.zeros((3, 3, 4, 4), np.float32)
  cross[1] += k13[0]
  cross[:, 1] += k31[:, 0]
  square = {k: v for k, v in p.items() if k not in ("conv_1x3", "conv_3x1")}
  square["conv_3x3"] = {"conv": {"kernel": jnp.asarray(cross),
                                 "bias": p["conv_1x3"]["conv"]["bias"] + p["conv_3x1"]["conv"]["bias"]}}
  model = RGCL(ca_reduction=2, kernels="square")
  assert jax.tree.structure(jax.eval_shape(model.init, jax.random.key(0), x)["params"]) == \
      jax.tree.structure(square)
  np.testing.assert_allclose(np.asarray(model.apply({"params": square}, x)),
                             np.asarray(pair.apply(variables, x)), atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="kernels"):
    RGCL(kernels="round").init(jax.random.key(0), x)


def test_rgcl_rejects_zero_recurrences():
  with pytest.raises(ValueError, match="num_recurrences"):
    RGCL(num_recurrences=0).init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))


# --------------------------------------------------------------------------- PlainPath / MBRB


def test_plain_path_matches_torch(random_params):
  x = np.random.default_rng(4).normal(size=(1, 5, 6, 4)).astype(np.float32)
  model = PlainPath()
  variables = random_params(model, x)
  y = jax.jit(model.apply)(variables, x)
  p = _np(variables["params"]["conv"]["conv"])
  ref = F.leaky_relu(_torch_same_conv(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)),
                                      p["kernel"], p["bias"]), 0.2).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5, rtol=0)


def test_mbrb_param_tree():
  x = jnp.zeros((1, 6, 6, 8))
  p = jax.eval_shape(MBRB().init, jax.random.key(0), x)["params"]
  # Three RGCLs with their own weights (Eq. 5), CA, f_FE3 and f_FE4 (Eq. 6).
  assert set(p) == {"rgcl_0", "rgcl_1", "rgcl_2", "ca", "fe3", "fe4"}
  assert p["fe3"]["conv"]["kernel"].shape == (3, 3, 3 * 8, 8)  # concat of 3 paths -> C
  assert p["fe4"]["conv"]["kernel"].shape == (3, 3, 8, 8)
  assert p["ca"]["excite"]["kernel"].shape[-1] == 3 * 8
  plain = jax.eval_shape(MBRB(use_rgcl=False, num_paths=2).init, jax.random.key(0), x)["params"]
  assert set(plain) == {"plain_0", "plain_1", "ca", "fe3", "fe4"}


@pytest.mark.parametrize("use_rgcl", [True, False])
def test_mbrb_residual_is_exact_when_fe4_is_zero(use_rgcl, random_params):
  x = np.random.default_rng(5).normal(size=(2, 6, 7, 4)).astype(np.float32)
  model = MBRB(use_rgcl=use_rgcl, ca_reduction=2)
  full = random_params(model, x)["params"]
  params = dict(full, fe4={"conv": jax.tree.map(jnp.zeros_like, full["fe4"]["conv"])})
  y = jax.jit(model.apply)({"params": params}, x)
  np.testing.assert_array_equal(np.asarray(y), x)
  # And a non-zero fe4 does move the output (the residual is not the whole block).
  y_full = jax.jit(model.apply)({"params": full}, x)
  assert not np.allclose(np.asarray(y_full), x)


def test_mbrb_rejects_zero_paths():
  with pytest.raises(ValueError, match="num_paths"):
    MBRB(num_paths=0).init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))
