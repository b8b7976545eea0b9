"""Tests of flax_gradnet/models/critic.py: PatchCritic, CriticConv, conv_as_matmul."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import import_or_skip
from flax_gradnet.models.critic import CriticConv, PatchCritic, conv_as_matmul

# pix2pix's n_layers=3 PatchGAN: (kernel, stride, padding) of each conv, input first.
PIX2PIX_LAYERS = [(4, 2, 1)] * 3 + [(4, 1, 1)] * 2


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, x):
  return model.apply(variables, x)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, size=shape), jnp.float32)


def _input_window(i, layers=PIX2PIX_LAYERS):
  """Input rows [lo, hi] (inclusive, before clipping to the image) that output row i sees.

  Walking back through a conv (k, s, p): output rows [a, b] read padded-input
  rows [a*s, b*s + k - 1], i.e. input rows [a*s - p, b*s - p + k - 1].
  """
  lo, hi = i, i
  for k, s, p in reversed(layers):
    lo, hi = lo * s - p, hi * s - p + k - 1
  return lo, hi


def test_receptive_field_arithmetic_is_70():
  for i in range(5):
    lo, hi = _input_window(i)
    assert (lo, hi) == (8 * i - 23, 8 * i + 46)
    assert hi - lo + 1 == 70


# --------------------------------------------------------------------------- shapes


def test_256_input_gives_30x30_map(random_params):
  model = PatchCritic(features=4)  # the width does not change the map size
  x = _images((2, 256, 256, 3))
  y = _apply(model, random_params(model, x), x)
  assert y.shape == (2, 30, 30, 1) and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))


def test_default_widths():
  p = jax.eval_shape(PatchCritic().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
  shapes = {k: v["kernel"].shape for k, v in p.items()}
  assert shapes == {"conv_0": (4, 4, 3, 64), "conv_1": (4, 4, 64, 128),
                    "conv_2": (4, 4, 128, 256), "conv_3": (4, 4, 256, 512),
                    "score": (4, 4, 512, 1)}


# --------------------------------------------------------------------------- receptive field


def test_receptive_field_is_exactly_the_70x70_window(random_params):
  model = PatchCritic(features=4)
  size = 128  # map is 14x14; score (7, 5) sees rows [33, 102], cols [17, 86]
  x = _images((1, size, size, 3))
  variables = random_params(model, x)
  i, j = 7, 5
  (r0, r1), (c0, c1) = _input_window(i), _input_window(j)
  assert (r0, r1, c0, c1) == (33, 102, 17, 86)
  rm, cm = (r0 + r1) // 2, (c0 + c1) // 2
  inside = [(r0, cm), (r1, cm), (rm, c0), (rm, c1), (r0, c0), (r0, c1), (r1, c0), (r1, c1)]
  outside = [(r0 - 1, cm), (r1 + 1, cm), (rm, c0 - 1), (rm, c1 + 1),
             (r0 - 1, c0 - 1), (r1 + 1, c1 + 1), (0, 0), (size - 1, size - 1)]
  # One perturbed copy of the image per pixel, all in one batch (no batch norm,
  # so samples are independent).
  batch = jnp.repeat(x, len(inside) + len(outside), axis=0)
  for n, (r, c) in enumerate(inside + outside):
    batch = batch.at[n, r, c, :].add(1.0)
  base = np.asarray(_apply(model, variables, x))[0, i, j, 0]
  scores = np.asarray(_apply(model, variables, batch))[:, i, j, 0]
  for (r, c), s in zip(inside, scores[:len(inside)]):
    assert s != base, f"pixel {(r, c)} inside the window did not move score {(i, j)}"
  for (r, c), s in zip(outside, scores[len(inside):]):
    assert s == base, f"pixel {(r, c)} outside the window moved score {(i, j)}"

  # The same window, everywhere at once: the support of d score(i, j) / d input.
  grad = jax.jit(jax.grad(lambda x: model.apply(variables, x)[0, i, j, 0]))(x)
  support = np.any(np.asarray(grad)[0] != 0, axis=-1)
  expected = np.zeros((size, size), bool)
  expected[r0:r1 + 1, c0:c1 + 1] = True
  np.testing.assert_array_equal(support, expected)


def test_receptive_field_is_clipped_at_the_border(random_params):
  model = PatchCritic(features=4)
  x = _images((1, 64, 64, 3))  # map 6x6; score (0, 0) sees rows/cols [-23, 46] -> [0, 46]
  variables = random_params(model, x)
  grad = jax.jit(jax.grad(lambda x: model.apply(variables, x)[0, 0, 0, 0]))(x)
  support = np.any(np.asarray(grad)[0] != 0, axis=-1)
  expected = np.zeros((64, 64), bool)
  expected[:47, :47] = True
  np.testing.assert_array_equal(support, expected)


# --------------------------------------------------------------------------- conv_impl


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_as_matmul_matches_torch(stride):
  torch = import_or_skip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 9, 10, 3)).astype(np.float32)
  kernel = rng.normal(size=(4, 4, 3, 5)).astype(np.float32)
  y = jax.jit(conv_as_matmul, static_argnums=(2, 3))(x, kernel, stride, 1)
  ref = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                 torch.from_numpy(kernel).permute(3, 2, 0, 1), stride=stride, padding=1)
  np.testing.assert_allclose(np.asarray(y), ref.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)


def _critics():
  return PatchCritic(features=8, conv_impl="lax"), PatchCritic(features=8, conv_impl="matmul")


def _close(a, b, rtol=1e-4):
  """Float32 agreement scaled to the size of the values compared."""
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 + rtol * float(np.max(np.abs(b))))


def test_matmul_and_lax_give_the_same_scores(random_params):
  lax_model, mm_model = _critics()
  x = _images((2, 40, 36, 3))
  variables = random_params(lax_model, x)
  mm_variables = random_params(mm_model, x, seed=1)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, mm_variables)
  y_lax = _apply(lax_model, variables, x)
  y_mm = _apply(mm_model, variables, x)
  assert y_lax.shape == y_mm.shape == (2, 3, 2, 1)
  np.testing.assert_allclose(np.asarray(y_mm), np.asarray(y_lax), atol=1e-5, rtol=0)


def test_matmul_and_lax_give_the_same_gradients(random_params):
  """Gradients of the scores, and of a WGAN-GP style penalty (||d D / d x|| - 1)^2
  (a grad of a grad), w.r.t. params and input."""
  lax_model, mm_model = _critics()
  real, fake = _images((2, 32, 32, 3)), _images((2, 32, 32, 3), seed=1)
  variables = random_params(lax_model, real)
  eps = jnp.asarray([0.3, 0.7]).reshape(2, 1, 1, 1)
  x_hat = eps * real + (1 - eps) * fake

  def all_grads(model):
    def score_loss(v, x):
      return jnp.mean(model.apply(v, x) ** 2)

    def penalty(v):
      g = jax.grad(lambda x: jnp.sum(model.apply(v, x)))(x_hat)
      norms = jnp.sqrt(jnp.sum(g**2, axis=(1, 2, 3)) + 1e-12)
      return jnp.mean((norms - 1.0) ** 2)

    @jax.jit
    def run(v):
      return jax.grad(score_loss, argnums=(0, 1))(v, fake), jax.value_and_grad(penalty)(v)

    return run(variables)

  ((gp_lax, gx_lax), (pen_lax, gpen_lax)) = all_grads(lax_model)
  ((gp_mm, gx_mm), (pen_mm, gpen_mm)) = all_grads(mm_model)
  jax.tree.map(_close, gp_mm, gp_lax)
  _close(gx_mm, gx_lax)
  assert float(jnp.max(jnp.abs(gx_lax))) > 0
  np.testing.assert_allclose(float(pen_mm), float(pen_lax), rtol=1e-5)
  jax.tree.map(_close, gpen_mm, gpen_lax)
  # LeakyReLU is piecewise linear, so d D / d x does not depend on the biases and
  # the penalty reaches the kernels only.
  for name, g in gpen_lax["params"].items():
    assert float(jnp.max(jnp.abs(g["kernel"]))) > 0, name
    assert not np.any(np.asarray(g["bias"])), name


# --------------------------------------------------------------------------- errors, dtype


def test_bad_conv_impl_raises():
  with pytest.raises(ValueError, match="conv_impl"):
    jax.eval_shape(PatchCritic(features=4, conv_impl="x").init, jax.random.key(0),
                   jnp.zeros((1, 32, 32, 3)))


def test_non_nhwc_input_raises():
  with pytest.raises(ValueError, match="NHWC"):
    jax.eval_shape(PatchCritic(features=4).init, jax.random.key(0), jnp.zeros((32, 32, 3)))


def test_critic_conv_params_are_laid_out_as_nn_conv():
  x = jnp.zeros((1, 8, 8, 3))
  # The module's own init (pix2pix: N(0, 0.02) kernels, zero biases); "rbg" keys
  # because threefry's init compiles slowly on XLA CPU.
  p = jax.jit(CriticConv(features=64, stride=2).init)(jax.random.key(0, impl="rbg"), x)["params"]
  assert p["kernel"].shape == (4, 4, 3, 64) and p["bias"].shape == (64,)
  assert p["kernel"].dtype == p["bias"].dtype == jnp.float32
  assert abs(float(jnp.std(p["kernel"])) - 0.02) < 0.002
  assert not np.any(np.asarray(p["bias"]))


def test_bfloat16_critic_keeps_float32_params(random_params):
  model = PatchCritic(features=4, dtype=jnp.bfloat16)
  x = _images((1, 32, 32, 3))
  variables = random_params(model, x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  y = _apply(model, variables, x)
  assert y.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(y)))
