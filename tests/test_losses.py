"""Eqs. (8)-(11) against numpy/torch references and hand computations, through jax.jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import import_or_skip
from flax_gradnet import losses, vgg


def _rand(seed, shape, low=-1.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# --- Eq. (9) -------------------------------------------------------------------------------

def test_gradient_loss_matches_numpy():
  pred, target = _rand(0, (2, 7, 9, 3)), _rand(1, (2, 7, 9, 3))
  dx = lambda a: np.diff(a, axis=2)
  dy = lambda a: np.diff(a, axis=1)
  expected = np.abs(dx(pred) - dx(target)).mean() + np.abs(dy(pred) - dy(target)).mean()
  np.testing.assert_allclose(jax.jit(losses.gradient_loss)(pred, target), expected, rtol=1e-6)


def test_gradient_loss_horizontal_ramp():
  ramp = np.broadcast_to(0.1 * np.arange(6, dtype=np.float32)[None, None, :, None], (1, 4, 6, 3))
  zeros = np.zeros_like(ramp)
  # Horizontal differences are all 0.1, vertical ones all 0.
  np.testing.assert_allclose(losses.gradient_loss(ramp, zeros), 0.1, rtol=1e-6)
  np.testing.assert_allclose(losses.gradient_loss(ramp + 0.5, ramp), 0.0, atol=1e-7)
  np.testing.assert_allclose(losses.gradient_loss(ramp.transpose(0, 2, 1, 3), zeros.transpose(
      0, 2, 1, 3)), 0.1, rtol=1e-6)


def test_gradient_loss_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="one shape"):
    losses.gradient_loss(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3)))


# --- WGAN-GP (Eq. (10)) --------------------------------------------------------------------

def test_gradient_penalty_linear_critic_is_exact():
  w = _rand(2, (5, 6, 3))
  critic_fn = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  real, fake = _rand(3, (4, 5, 6, 3)), _rand(4, (4, 5, 6, 3))
  penalty = jax.jit(losses.gradient_penalty, static_argnums=0)(
      critic_fn, real, fake, jax.random.PRNGKey(0), 7.0)
  np.testing.assert_allclose(penalty, 7.0 * (np.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)


def test_gradient_penalty_interpolates_per_sample():
  # D(x)_b = ||x_b||^2 / 2 has gradient x_hat_b, so the penalty sees every sample's own eps.
  critic_fn = lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3))
  real, fake = _rand(5, (6, 3, 4, 2)), _rand(6, (6, 3, 4, 2))
  rng = jax.random.PRNGKey(3)
  eps = np.asarray(jax.random.uniform(rng, (6, 1, 1, 1)))  # the documented draw
  assert len(np.unique(eps)) == 6
  x_hat = eps * real + (1 - eps) * fake
  norms = np.sqrt((x_hat**2).sum(axis=(1, 2, 3)))
  expected = 10.0 * np.mean((norms - 1.0) ** 2)
  penalty = jax.jit(functools.partial(losses.gradient_penalty, critic_fn))(real, fake, rng)
  np.testing.assert_allclose(penalty, expected, rtol=1e-5)
  # With one shared eps the value would differ.
  shared = eps.mean() * real + (1 - eps.mean()) * fake
  assert abs(10.0 * np.mean((np.sqrt((shared**2).sum(axis=(1, 2, 3))) - 1) ** 2) - expected) > 1e-3


def test_gradient_penalty_is_safe_at_zero_gradient():
  real, fake = _rand(7, (3, 4, 4, 3)), _rand(8, (3, 4, 4, 3))

  def penalty(p, real, fake):
    critic_fn = lambda x: p * jnp.sum(x, axis=(1, 2, 3))  # p = 0: a constant critic
    return losses.gradient_penalty(critic_fn, real, fake, jax.random.PRNGKey(0), weight=10.0)

  p = jnp.float32(0.0)
  np.testing.assert_allclose(jax.jit(penalty)(p, real, fake), 10.0)
  grads = jax.jit(jax.grad(penalty, argnums=(0, 1, 2)))(p, real, fake)
  for g in grads:
    assert np.all(np.isfinite(g))


def test_gradient_penalty_needs_per_sample_scores():
  critic_fn = lambda x: x[..., :1]  # an unreduced score map
  with pytest.raises(ValueError, match="patch_scores"):
    losses.gradient_penalty(critic_fn, np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 3)),
                            jax.random.PRNGKey(0))


def test_patch_scores():
  score_map = _rand(9, (3, 5, 4, 1))
  np.testing.assert_allclose(jax.jit(losses.patch_scores)(score_map),
                             score_map.reshape(3, -1).mean(axis=1), rtol=1e-6)
  with pytest.raises(ValueError, match="score map"):
    losses.patch_scores(np.zeros((3, 5)))


def test_critic_and_generator_adversarial_losses():
  real, fake = np.array([1.0, 2.0, 6.0]), np.array([-1.0, 0.5, 3.5])  # means 3 and 1
  np.testing.assert_allclose(jax.jit(losses.critic_loss)(real, fake), 1.0 - 3.0)
  np.testing.assert_allclose(jax.jit(losses.wasserstein_estimate)(real, fake), 3.0 - 1.0)
  np.testing.assert_allclose(jax.jit(losses.generator_adversarial_loss)(fake), -1.0)


# --- Eq. (8) -------------------------------------------------------------------------------

def _tiny_vgg(layer="relu2_1", seed=0):
  """Random VGG19 variables up to `layer` and the same network in torch (NCHW)."""
  torch = import_or_skip("torch")
  nn = torch.nn
  rng = np.random.default_rng(seed)
  params, modules = {}, []
  for name in vgg.LAYERS[:vgg.TORCHVISION_INDEX[layer] + 1]:
    if name.startswith("conv"):
      cin, cout = vgg.CONV_IN_CHANNELS[name], vgg.CONV_WIDTH[name]
      kernel = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32)
      bias = rng.normal(0, 0.1, cout).astype(np.float32)
      params[name] = {"kernel": kernel, "bias": bias}
      conv = nn.Conv2d(cin, cout, 3, padding=1)
      conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
      conv.bias.data = torch.from_numpy(bias)
      modules.append(conv)
    elif name.startswith("relu"):
      modules.append(nn.ReLU())
    else:
      modules.append(nn.MaxPool2d(2, 2))
  return {"params": params}, nn.Sequential(*modules)


def _torch_phi(model, x_nhwc):
  torch = import_or_skip("torch")
  x01 = (x_nhwc + 1) / 2
  x = (x01 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225],
                                                                      np.float32)
  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def test_content_loss_matches_numpy_with_torch_features():
  variables, torch_model = _tiny_vgg()
  pred, target = _rand(10, (2, 12, 10, 3)), _rand(11, (2, 12, 10, 3))
  expected = np.mean((_torch_phi(torch_model, pred) - _torch_phi(torch_model, target)) ** 2)

  @jax.jit
  def loss(variables, pred, target):  # feature_fn built inside the step, as recommended
    return losses.content_loss(vgg.make_feature_fn(variables, "relu2_1"), pred, target)

  np.testing.assert_allclose(loss(variables, pred, target), expected, rtol=1e-4)


def test_content_loss_gradients_reach_pred_only():
  variables, _ = _tiny_vgg("relu1_2")
  feature_fn = vgg.make_feature_fn(variables, "relu1_2")
  pred, target = _rand(12, (1, 6, 6, 3)), _rand(13, (1, 6, 6, 3))
  g_pred, g_target = jax.jit(jax.grad(functools.partial(losses.content_loss, feature_fn),
                                      argnums=(0, 1)))(pred, target)
  assert np.any(g_pred) and np.all(np.isfinite(g_pred))
  assert not np.any(g_target)


def test_pixel_content_loss():
  pred, target = _rand(14, (2, 5, 4, 3)), _rand(15, (2, 5, 4, 3))
  np.testing.assert_allclose(jax.jit(losses.pixel_content_loss)(pred, target),
                             np.mean((pred - target) ** 2), rtol=1e-6)
  g_target = jax.grad(losses.pixel_content_loss, argnums=1)(pred, target)
  assert not np.any(g_target)


def test_psnr_content_loss_matches_numpy_per_image():
  pred = _rand(18, (3, 6, 5, 3))
  noise = np.random.default_rng(19).normal(size=pred.shape).astype(np.float32)
  target = pred + noise * np.array([0.3, 0.01, 0.0], np.float32)[:, None, None, None]
  mse = ((pred - target) ** 2).reshape(3, -1).mean(axis=1)
  expected = np.mean(10 * np.log10(mse + losses.PSNR_LOSS_FLOOR))
  np.testing.assert_allclose(jax.jit(losses.psnr_content_loss)(pred, target), expected, rtol=1e-5)
  # An exact crop is capped at the floor (50 dB on [0, 1]), not at -inf.
  np.testing.assert_allclose(losses.psnr_content_loss(pred[2:], target[2:]),
                             10 * np.log10(4e-5), rtol=1e-6)


def test_psnr_content_loss_weights_each_image_by_its_own_error():
  """d/dpred of the log-MSE is the pixel MSE's gradient times 10 / (ln10 (mse_i + floor))
  for image i (batch of B: the pixel loss here is each image's own MSE / B)."""
  pred, target = _rand(20, (2, 4, 4, 3)), _rand(21, (2, 4, 4, 3))
  target[1] = pred[1] + 0.01 * (target[1] - pred[1])  # a nearly exact second image
  g = jax.grad(losses.psnr_content_loss)(pred, target)
  n = pred[0].size
  for i in range(2):
    mse = np.mean((pred[i] - target[i]) ** 2)
    g_mse = 2 * (pred[i] - target[i]) / n / 2
    np.testing.assert_allclose(g[i], g_mse * 10 / (np.log(10) * (mse + losses.PSNR_LOSS_FLOOR)),
                               rtol=1e-4, atol=1e-9)
  assert np.abs(g[1]).max() > np.abs(g[0]).max()  # the nearly exact image pulls harder
  assert not np.any(jax.grad(losses.psnr_content_loss, argnums=1)(pred, target))


# --- Eq. (11) ------------------------------------------------------------------------------

def _raising_content_fn(pred, target):
  raise AssertionError("content_fn must not run when alpha is 0")


def test_generator_loss_combines_terms():
  pred, target = _rand(16, (2, 6, 5, 3)), _rand(17, (2, 6, 5, 3))
  fake = np.array([0.5, -2.5], np.float32)
  content_fn = losses.pixel_content_loss
  total, terms = jax.jit(functools.partial(losses.generator_loss, content_fn=content_fn,
                                           alpha=10.0, beta=1.0, gamma=2.0))(pred, target, fake)
  content = np.mean((pred - target) ** 2)
  gradient = (np.abs(np.diff(pred, axis=2) - np.diff(target, axis=2)).mean()
              + np.abs(np.diff(pred, axis=1) - np.diff(target, axis=1)).mean())
  adversarial = 1.0  # -mean([0.5, -2.5])
  np.testing.assert_allclose(terms["content"], content, rtol=1e-5)
  np.testing.assert_allclose(terms["gradient"], gradient, rtol=1e-5)
  np.testing.assert_allclose(terms["adversarial"], adversarial, rtol=1e-6)
  np.testing.assert_allclose(total, 10 * content + gradient + 2 * adversarial, rtol=1e-5)


def test_generator_loss_skips_zero_weights():
  pred, target = _rand(18, (1, 4, 4, 3)), _rand(19, (1, 4, 4, 3))
  fake = np.array([0.25], np.float32)
  # "w/o content": alpha = 0 never calls content_fn, also under jit.
  total, terms = jax.jit(functools.partial(losses.generator_loss, content_fn=_raising_content_fn,
                                           alpha=0.0))(pred, target, fake)
  assert float(terms["content"]) == 0.0
  np.testing.assert_allclose(total, terms["gradient"] - 0.25, rtol=1e-6)
  # "w/o gradient" and no critic (gamma = 0, no scores): only the content term is left.
  total, terms = losses.generator_loss(pred, target, None, content_fn=losses.pixel_content_loss,
                                       alpha=10.0, beta=0, gamma=0)
  assert float(terms["gradient"]) == 0.0 and float(terms["adversarial"]) == 0.0
  np.testing.assert_allclose(total, 10 * np.mean((pred - target) ** 2), rtol=1e-6)
  with pytest.raises(ValueError, match="fake_scores"):
    losses.generator_loss(pred, target, None, content_fn=losses.pixel_content_loss)


def test_generator_loss_traced_weight_computes_the_term():
  pred, target = _rand(20, (1, 4, 4, 3)), _rand(21, (1, 4, 4, 3))
  fake = np.zeros(1, np.float32)
  loss = jax.jit(lambda alpha: losses.generator_loss(
      pred, target, fake, content_fn=losses.pixel_content_loss, alpha=alpha)[0])
  np.testing.assert_allclose(loss(0.0), losses.gradient_loss(pred, target), rtol=1e-6)


# --- the blurry input's low frequencies (config.loss_low_freq_sigma) ----------------------

@pytest.mark.parametrize("sigma", [0.7, 3.0, 32.0])  # 32: the kernel outgrows the 20x33 image
def test_gaussian_blur_reflect_equals_scipy(sigma):
  ndimage = pytest.importorskip("scipy.ndimage")
  x = _rand(0, (2, 20, 33, 3))
  expected = np.stack([ndimage.gaussian_filter(xi.astype(np.float64), (sigma, sigma, 0),
                                               mode="reflect", truncate=4.0) for xi in x])
  got = jax.jit(losses.gaussian_blur_reflect, static_argnums=1)(x, sigma)
  np.testing.assert_allclose(got, expected, atol=2e-6)


def test_keep_low_frequencies_equals_inference_and_passes_no_gradient_to_the_input():
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  pred, blur = 0.5 * _rand(1, (1, 24, 30, 3)), 0.5 * _rand(2, (1, 24, 30, 3))  # no clipping
  got = losses.keep_low_frequencies(pred, blur, 4.0)
  np.testing.assert_allclose(got[0], inference.keep_input_low_frequencies(pred[0], blur[0], 4.0),
                             atol=2e-6)
  # A constant offset of the output is the input's low frequency: removed exactly.
  np.testing.assert_allclose(losses.keep_low_frequencies(blur + 0.2, blur, 4.0), blur, atol=2e-6)
  # The gradient reaches the output only: the blurry input is data.
  g_pred, g_blur = jax.grad(lambda p, b: jnp.sum(losses.keep_low_frequencies(p, b, 4.0) ** 2),
                            argnums=(0, 1))(pred, blur)
  assert np.abs(g_pred).max() > 0 and not np.any(g_blur)


def test_low_frequency_helpers_refuse_bad_input():
  x = _rand(0, (1, 8, 8, 3))
  with pytest.raises(ValueError, match="sigma must be > 0"):
    losses.gaussian_blur_reflect(x, 0.0)
  with pytest.raises(ValueError, match="NHWC"):
    losses.gaussian_blur_reflect(x[0], 2.0)
  with pytest.raises(ValueError, match="one shape"):
    losses.keep_low_frequencies(x, x[:, :4], 2.0)
